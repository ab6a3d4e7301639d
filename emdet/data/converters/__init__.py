"""Annotation converters: labelme, LabelImg (VOC, YOLO, KITTI-rotation) and roLabelImg -> COCO, and
COCO (e.g. predictions) -> labelme for correction.

Command line: ``tools/convert_annotations.py``. In Python::

    from emdet.data.converters import convert_annotations, coco_to_labelme
    convert_annotations("labels/", "datasets/rods/annotations/all.json", "rolabelimg",
                        images_dir="datasets/rods/images", split="train=0.8,val=0.2")
    coco_to_labelme("output/predictions.json", "to_correct/", images_dir="images/")

Rotated boxes are written as ``rbox = [cx, cy, w, h, angle]`` in detectron2's convention (degrees,
counter-clockwise on screen), canonical with ``w >= h`` and angle in ``[-90, 90)``; a roLabelImg
angle ``a`` (radians, clockwise on screen) becomes ``-degrees(a)`` before that normalisation. See
:mod:`.coco` for the output conventions and the handling of bad input.
"""

from ._common import (
    EDGE_TOLERANCE_PX,
    AnnotationError,
    ConversionError,
    Skipped,
    read_classes,
)
from ._geometry import CIRCLE_VERTICES
from .coco import (
    FORMATS,
    Conversion,
    ConversionReport,
    convert_annotations,
    parse_split,
    split_coco,
    to_coco,
)
from .labelme import coco_to_labelme

__all__ = [
    "CIRCLE_VERTICES",
    "EDGE_TOLERANCE_PX",
    "FORMATS",
    "AnnotationError",
    "Conversion",
    "ConversionError",
    "ConversionReport",
    "Skipped",
    "coco_to_labelme",
    "convert_annotations",
    "parse_split",
    "read_classes",
    "split_coco",
    "to_coco",
]
