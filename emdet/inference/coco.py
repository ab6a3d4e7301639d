"""Detections <-> COCO annotations (RLE masks, ``rbox`` for rotated boxes, ``score``).

Conventions are those of ``datasets/README.md``: continuous pixel coordinates, ``bbox`` =
``[x, y, w, h]``, ``rbox`` = ``[cx, cy, w, h, angle_deg]`` normalised to ``w >= h`` and an angle
in ``[-90, 90)``. Prediction annotations also carry ``score`` and ``border`` (the object reaches
the image border, so it may be incomplete and its size is a lower bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emdet.data.rle import MaskCrop, crop_to_rle, rle_area, segmentation_to_crop
from emdet.inference.tiling import Detections

__all__ = ["annotations_to_detections", "detections_to_annotations"]


def _r(values, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in values]


def detections_to_annotations(
    det: Detections, height: int, width: int, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO annotations (without ``id`` and ``image_id``) of one image's detections.

    Parameters
    ----------
    det : Detections
    height, width : int
        Image size.
    category_ids : sequence of int
        COCO category id of each contiguous class index.

    Returns
    -------
    list of dict
        ``category_id, score, bbox, area, iscrowd, border`` plus ``segmentation`` (compressed
        RLE) for masks and rotated boxes, and ``rbox`` for rotated boxes. ``area`` is the mask's
        pixel count, the rotated box's rasterised pixel count, or ``w * h`` of a plain box.
    """
    from pycocotools import mask as mask_util

    from emdet.data.geometry import normalize_rbox, rbox_to_polygon, rbox_to_xywh

    out = []
    for k in range(len(det)):
        box = det.boxes[k]
        ann: dict[str, Any] = {
            "category_id": int(category_ids[int(det.classes[k])]),
            "score": round(float(det.scores[k]), 5),
            "iscrowd": 0,
        }
        if det.rotated:
            rbox = normalize_rbox(box)
            ann["rbox"] = _r(rbox)
            x, y, w, h = rbox_to_xywh(rbox)
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(width), x + w), min(float(height), y + h)
            ann["bbox"] = _r([x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)])
        else:
            ann["bbox"] = _r([box[0], box[1], box[2] - box[0], box[3] - box[1]])
        if det.masks is not None:
            crop = det.masks[k]
            ann["segmentation"] = crop_to_rle(crop, height, width)
            ann["area"] = crop.area
        elif det.rotated:
            poly = rbox_to_polygon(box).reshape(-1).tolist()
            rle = mask_util.merge(mask_util.frPyObjects([poly], height, width))
            counts = rle["counts"]
            ann["segmentation"] = {
                "size": [int(height), int(width)],
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
            }
            ann["area"] = rle_area(ann["segmentation"])
        else:
            ann["area"] = round(float(ann["bbox"][2] * ann["bbox"][3]), 2)
        if det.border is not None:
            ann["border"] = bool(det.border[k])
        out.append(ann)
    return out


def annotations_to_detections(
    annotations: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    category_index: Mapping[int, int],
) -> Detections:
    """:class:`Detections` of one image's COCO annotations (predicted or ground truth).

    Annotations without ``score`` get 1. Masks are decoded (RLE or polygons) when every
    annotation has a ``segmentation``; boxes are rotated when any annotation has an ``rbox``
    (the others become rotated boxes at angle 0).
    """
    anns = list(annotations)
    rotated = any("rbox" in a for a in anns)
    boxes = []
    for a in anns:
        if rotated:
            if "rbox" in a:
                boxes.append([float(v) for v in a["rbox"]])
            else:
                x, y, w, h = (float(v) for v in a["bbox"])
                boxes.append([x + w / 2, y + h / 2, w, h, 0.0])
        else:
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes.append([x, y, x + w, y + h])
    masks: list[MaskCrop] | None = None
    if anns and all(a.get("segmentation") for a in anns):
        masks = [segmentation_to_crop(a["segmentation"], height, width) for a in anns]
    return Detections(
        np.array(boxes, dtype=np.float64).reshape(-1, 5 if rotated else 4),
        [float(a.get("score", 1.0)) for a in anns],
        [int(category_index[a["category_id"]]) for a in anns],
        masks,
    )
