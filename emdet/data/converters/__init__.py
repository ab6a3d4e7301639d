"""Annotation converters: labelme, LabelImg (VOC, YOLO, KITTI-rotation), roLabelImg and label
images (instance-ID maps, binary and colour masks) -> COCO, and COCO (e.g. predictions) -> labelme
for correction or -> 16-bit instance-ID PNGs for Fiji and napari.

Command line: ``tools/convert_annotations.py``. In Python::

    from emdet.data.converters import convert_annotations, coco_to_labelme
    convert_annotations("labels/", "datasets/rods/annotations/all.json", "rolabelimg",
                        images_dir="datasets/rods/images", split="train=0.8,val=0.2")
    coco_to_labelme("output/predictions.json", "to_correct/", images_dir="images/")
    convert_annotations("segmaps/", "emps/all.json", "masks", images_dir="images/",
                        mask_class_name="particle")
    coco_to_masks("output/predictions.json", "label_images/", min_score=0.5)

Rotated boxes are written as ``rbox = [cx, cy, w, h, angle]`` in detectron2's convention (degrees,
counter-clockwise on screen), canonical with ``w >= h`` and angle in ``[-90, 90)``; a roLabelImg
angle ``a`` (radians, clockwise on screen) becomes ``-degrees(a)`` before that normalisation. See
:mod:`.coco` for the output conventions and the handling of bad input, :mod:`.masks` for label
images.
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
    split_counts,
    to_coco,
)
from .labelme import coco_to_labelme
from .masks import MASK_KINDS, coco_to_masks, parse_mask_classes

__all__ = [
    "CIRCLE_VERTICES",
    "EDGE_TOLERANCE_PX",
    "FORMATS",
    "MASK_KINDS",
    "AnnotationError",
    "Conversion",
    "ConversionError",
    "ConversionReport",
    "Skipped",
    "coco_to_labelme",
    "coco_to_masks",
    "convert_annotations",
    "parse_mask_classes",
    "parse_split",
    "read_classes",
    "split_coco",
    "split_counts",
    "to_coco",
]
