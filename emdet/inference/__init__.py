"""Prediction on EM images of any size: tiling, merging across seams, batches, COCO output.

* :class:`EMPredictor` (:mod:`.predictor`): one image as stored -> :class:`Detections`; large
  images are tiled and the tiles' detections merged (:func:`merge_tiles`, :mod:`.tiling`).
* :func:`predict_batch` (:mod:`.batch`): files, folders, globs and stacks -> ``predictions.json``
  (COCO with RLE masks), ``failures.csv``, overlays and labelme files; resumable, streaming, and
  shared between the processes of ``detectron2.engine.launch``. ``tools/predict.py`` runs it.
* masks as crops (:class:`MaskCrop`) and COCO RLE without full-image arrays live in
  :mod:`emdet.data.rle` (shared with the converters, evaluation and statistics).
* :mod:`.coco`, :mod:`.overlay`: detections <-> COCO annotations, overlay pictures.
"""

from emdet.data.rle import MaskCrop, crop_to_rle, rle_area, rle_to_crop, segmentation_to_crop
from emdet.inference.batch import PredictError, PredictOptions, PredictResult, predict_batch
from emdet.inference.coco import annotations_to_detections, detections_to_annotations
from emdet.inference.overlay import class_colour, draw_overlay, write_png
from emdet.inference.predictor import EMPredictor, instances_to_detections, prepare_image
from emdet.inference.tiling import Detections, merge_tiles

__all__ = [
    "Detections",
    "EMPredictor",
    "MaskCrop",
    "PredictError",
    "PredictOptions",
    "PredictResult",
    "annotations_to_detections",
    "class_colour",
    "crop_to_rle",
    "detections_to_annotations",
    "draw_overlay",
    "instances_to_detections",
    "merge_tiles",
    "predict_batch",
    "prepare_image",
    "rle_area",
    "rle_to_crop",
    "segmentation_to_crop",
    "write_png",
]
