"""The figures a microscopist publishes for instance masks, from any COCO predictions.

:func:`score_instances` compares predictions with annotations the same way for a learned model
(``tools/predict.py``'s ``predictions.json``, ``--eval-only``'s ``coco_instances_results.json``)
and for a classical pipeline (:mod:`emdet.classical`), so their rows can stand side by side:

- mask AP and AP50 by pycocotools' ``COCOeval`` (``segm``), over all predictions;
- at a score threshold: precision, recall and F1 of objects matched one-to-one at mask IoU
  >= 0.5 (highest score first, :func:`emdet.evaluation.threshold.match_by_score`);
- count error: the mean over images of ``|found - annotated| / annotated``, and of the whole
  set (``count_error_total``);
- median equivalent-diameter error (diameters ``sqrt(4 area / pi)``, in pixels): per image
  ``|median found - median annotated| / median annotated`` averaged over the annotated images
  (1 where nothing was found; ``median_diameter_error_per_image``, the figure for a set of
  different samples), and the same of the pooled objects of the whole set
  (``median_diameter_error``, meaningful when all images show one sample).

Predicted images are paired with annotated ones by ``file_name`` (or its base name when the
paths differ) and ``frame`` for the frames of a stack, never by id: predict numbers its images
in its own order. Predicted images
without annotations are left out (predict may have run on the whole folder); annotated images
without predictions count as found nothing.

Examples
--------
>>> figures = score_instances("datasets/emps/annotations/fewshot_test.json",
...                           "output/predict/predictions.json", score_threshold=0.4)
... # doctest: +SKIP
>>> figures["f1"], figures["ap"]  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from emdet.evaluation.threshold import match_by_score

__all__ = ["InstanceScoreError", "aligned_results", "score_instances"]


class InstanceScoreError(ValueError):
    """Predictions that cannot be scored against the annotations (the message says why)."""


def _load(coco: Any, what: str) -> tuple[Any, str]:
    """A COCO set (checked) or a COCO results list, from a path or as given."""
    from emdet.data.cocofile import check_coco, read_coco
    from emdet.utils import strictjson

    if isinstance(coco, Mapping):
        return check_coco(dict(coco), what), what
    if isinstance(coco, Sequence) and not isinstance(coco, str | bytes):
        return [dict(a) for a in coco], what
    path = Path(coco)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = strictjson.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return read_coco(path), str(path)  # its message names the line, column or value
    if isinstance(data, list):
        return data, str(path)
    return check_coco(data, path), str(path)


def _image_pairs(gt: Mapping, pred: Mapping, pred_name: str) -> dict[Any, Any]:
    """Predicted image id -> annotated image id, by file name, then by base name.

    Predicted images that are not annotated (predict ran on a whole folder, the annotations
    are its test split) are left out; a base name shared by several annotated images, or no
    pair at all, is an error.
    """
    from emdet.data.cocofile import image_frame, image_key

    by_name = {image_key(im): im["id"] for im in gt["images"]}
    by_base: dict[tuple[str, int], list] = {}
    for im in gt["images"]:
        by_base.setdefault((PurePosixPath(im["file_name"]).name, image_frame(im)),
                           []).append(im["id"])
    pairs = {}
    for im in pred.get("images", []):
        name, frame = image_key(im)
        if (name, frame) in by_name:
            pairs[im["id"]] = by_name[name, frame]
            continue
        base = by_base.get((PurePosixPath(name.replace("\\", "/")).name, frame), [])
        if len(base) > 1:
            raise InstanceScoreError(
                f"{pred_name}: image {name!r} (frame {frame}) matches {len(base)} annotated "
                "images by its base name; give predictions whose file_name is the annotations' "
                "own."
            )
        if base:
            pairs[im["id"]] = base[0]
    if pred.get("images") and not pairs:
        raise InstanceScoreError(
            f"{pred_name}: none of its {len(pred['images'])} images (e.g. "
            f"{pred['images'][0].get('file_name')!r}) is among the annotated images (paired by "
            "file_name or its base name); score predictions of the annotated images."
        )
    return pairs


def _rles(anns: Sequence[Mapping], height: int, width: int) -> list[dict]:
    from emdet.data.rle import segmentation_to_rle

    return [segmentation_to_rle(a["segmentation"], height, width) for a in anns]


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return 100 * float(valid.mean()) if valid.size else 0.0


def aligned_results(
    gt: str | os.PathLike | Mapping[str, Any],
    pred: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Predictions as a COCO results list in the annotations' own image ids.

    predict numbers its images in its own order, so pycocotools cannot set its
    ``predictions.json`` beside an annotated set; this list can:
    ``COCO(gt).loadRes(aligned_results(gt, pred))``. Images pair by :func:`_image_pairs`
    (file name and frame); predictions of images that are not annotated are left out.

    Raises
    ------
    InstanceScoreError
        ``gt`` is a results list, a prediction has no ``score`` or no mask, an image id of a
        results list is not in ``gt``, or no predicted image is annotated.
    """
    gt, gt_name = _load(gt, "annotations")
    if not isinstance(gt, Mapping):
        raise InstanceScoreError(f"{gt_name}: a results list; give the annotated COCO set")
    pred_set, pred_name = _load(pred, "predictions")
    if isinstance(pred_set, list):
        results = pred_set
    else:
        pairs = _image_pairs(gt, pred_set, pred_name)
        results = []
        for a in pred_set.get("annotations", []):
            if "score" not in a:
                raise InstanceScoreError(
                    f"{pred_name}: annotation {a.get('id')!r} has no 'score'; these look like "
                    "annotations, not predictions."
                )
            if a["image_id"] in pairs:
                results.append(dict(a) | {"image_id": pairs[a["image_id"]]})
    images = {im["id"] for im in gt["images"]}
    for r in results:
        if r["image_id"] not in images:
            raise InstanceScoreError(f"prediction for image id {r['image_id']!r}, not in {gt_name}")
        if "segmentation" not in r:
            raise InstanceScoreError(f"prediction {r.get('id')!r} has no mask ('segmentation')")
    return results


def score_instances(
    gt: str | os.PathLike | Mapping[str, Any],
    pred: str | os.PathLike | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    score_threshold: float = 0.0,
    min_iou: float = 0.5,
    max_dets: int = 1000,
) -> dict[str, Any]:
    """Mask AP, matched-object F1, count and median-size errors of predictions.

    Parameters
    ----------
    gt : path or dict
        Annotated COCO set (polygons or RLE), e.g. ``annotations/test.json``.
    pred : path, dict or list of dict
        A COCO set whose annotations carry ``score`` (predict's ``predictions.json``), or a
        COCO results list (``coco_instances_results.json``, image ids those of ``gt``).
    score_threshold : float, default 0
        Objects scoring below it are left out of F1, counts and sizes (not out of AP).
    min_iou : float, default 0.5
        Mask IoU at which a prediction matches an annotation.
    max_dets : int, default 1000
        Predictions per image that AP considers (COCO's ``maxDets``; its 100 would cut off
        the crowded micrographs of particles).

    Returns
    -------
    dict
        ``ap, ap50`` (percent), ``precision, recall, f1``, ``n_found, n_annotated``,
        ``count_error`` (mean relative per-image error, fraction), ``count_error_total``,
        ``median_diameter_found``, ``median_diameter_annotated`` (px, pooled),
        ``median_diameter_error`` (pooled), ``median_diameter_error_per_image`` (fractions),
        ``score_threshold``, ``n_images``.
    """
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, _ = _load(gt, "annotations")
    results = aligned_results(gt, pred)
    images = {im["id"]: im for im in gt["images"]}

    figures: dict[str, Any] = {"n_images": len(images), "score_threshold": float(score_threshold)}
    gt_api = COCO()
    gt_api.dataset = {
        "images": list(gt["images"]),
        "annotations": [dict(a) | {"id": i + 1} for i, a in enumerate(gt["annotations"])],
        "categories": list(gt["categories"]),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt_api.createIndex()
        if results:
            dt_api = gt_api.loadRes([dict(r) | {"bbox": list(r.get("bbox", [0, 0, 0, 0]))}
                                     for r in results])
            ev = COCOeval(gt_api, dt_api, "segm")
            ev.params.maxDets = [1, 10, int(max_dets)]
            ev.evaluate()
            ev.accumulate()
            # AP over IoU 0.5:0.95 and at 0.5, area "all", the last maxDets, from the precision
            # table: pycocotools' summarize() asks for maxDets=100 whatever params say
            # (-1 for any other list), which detectron2 also works around
            precision = ev.eval["precision"][:, :, :, 0, -1]
            figures["ap"] = _mean_valid(precision)
            figures["ap50"] = _mean_valid(precision[ev.params.iouThrs == 0.5])
        else:
            figures["ap"] = figures["ap50"] = 0.0

    by_image: dict[Any, list] = {i: [] for i in images}
    for r in results:
        if r["score"] >= score_threshold:
            by_image[r["image_id"]].append(r)
    gt_by_image: dict[Any, list] = {i: [] for i in images}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            gt_by_image[a["image_id"]].append(a)
    tp = n_found = n_gt = 0
    count_errors, size_errors, d_found, d_gt = [], [], [], []
    for image_id, im in images.items():
        h, w = int(im["height"]), int(im["width"])
        dets, anns = by_image[image_id], gt_by_image[image_id]
        dt_rle, gt_rle = _rles(dets, h, w), _rles(anns, h, w)
        if dets and anns:
            iou = np.asarray(mask_util.iou(dt_rle, gt_rle, [0] * len(gt_rle)), float)
            iou = iou.reshape(len(dets), len(anns))
        else:
            iou = np.zeros((len(dets), len(anns)))
        tp += int(match_by_score(iou, np.array([d["score"] for d in dets]), min_iou).sum())
        n_found, n_gt = n_found + len(dets), n_gt + len(anns)
        found = [np.sqrt(4 * a / np.pi) for a in mask_util.area(dt_rle)] if dt_rle else []
        annotated = [np.sqrt(4 * a / np.pi) for a in mask_util.area(gt_rle)] if gt_rle else []
        if anns:
            count_errors.append(abs(len(dets) - len(anns)) / len(anns))
            size_errors.append(abs(np.median(found) - np.median(annotated)) / np.median(annotated)
                               if found else 1.0)
        d_found += found
        d_gt += annotated
    fp, fn = n_found - tp, n_gt - tp
    figures |= {
        "n_found": n_found,
        "n_annotated": n_gt,
        "precision": tp / n_found if n_found else 0.0,
        "recall": tp / n_gt if n_gt else 0.0,
        "f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0,
        "count_error": float(np.mean(count_errors)) if count_errors else float("nan"),
        "count_error_total": abs(n_found - n_gt) / n_gt if n_gt else float("nan"),
        "median_diameter_error_per_image": (float(np.mean(size_errors)) if size_errors
                                            else float("nan")),
        "median_diameter_found": float(np.median(d_found)) if d_found else float("nan"),
        "median_diameter_annotated": float(np.median(d_gt)) if d_gt else float("nan"),
    }
    figures["median_diameter_error"] = (
        abs(figures["median_diameter_found"] - figures["median_diameter_annotated"])
        / figures["median_diameter_annotated"] if d_found and d_gt else float("nan")
    )
    return figures

