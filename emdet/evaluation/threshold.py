"""A score threshold calibrated on the validation set, for counts that match the annotations.

detectron2 keeps every detection scoring at least ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` (0.05),
which suits AP but not counts: on real particles 255 objects were counted where 163 were
annotated. :class:`ScoreThresholdEvaluator` runs beside the COCO evaluator on the test/val sets
of ``tools/train_net.py``. It matches predictions to annotations one-to-one at mask IoU >= 0.5
(box IoU for models without masks), highest score first as COCO does, and picks the threshold
of best F1 of matched objects (the middle of those within one standard error of the best,
:func:`best_threshold`). It reports that threshold with its precision, recall and
count ratio, and writes it to ``OUTPUT_DIR/score_threshold.json``. ``tools/predict.py`` uses
the file beside ``MODEL.WEIGHTS`` as its default ``--score-threshold``.

Examples
--------
>>> curve = f1_curve([(np.array([[0.9, 0.1]]), np.array([0.8, 0.3]))])  # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from detectron2.evaluation import DatasetEvaluator

from emdet.utils.atomic import atomic_write

__all__ = ["THRESHOLD_FILE", "ScoreThresholdEvaluator", "best_threshold", "f1_curve",
           "match_by_score", "read_threshold"]

logger = logging.getLogger(__name__)

#: Written to OUTPUT_DIR by the evaluator; read from beside MODEL.WEIGHTS by predict.
THRESHOLD_FILE = "score_threshold.json"


def match_by_score(iou: np.ndarray, scores: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """Which predictions are true positives, matching one-to-one in descending score order.

    Parameters
    ----------
    iou : ndarray, shape (P, G)
        IoU of each prediction with each annotation.
    scores : ndarray, shape (P,)
    min_iou : float

    Returns
    -------
    ndarray of bool, shape (P,)
        Each prediction, taken highest score first, takes the unmatched annotation it overlaps
        most if that IoU is at least ``min_iou`` (the COCO rule).
    """
    matched = np.zeros(len(scores), bool)
    if iou.size == 0:
        return matched
    taken = np.zeros(iou.shape[1], bool)
    for p in np.argsort(-scores, kind="stable"):
        row = np.where(taken, -1.0, iou[p])
        g = int(np.argmax(row))
        if row[g] >= min_iou:
            taken[g] = True
            matched[p] = True
    return matched


def f1_curve(images: Iterable[tuple[np.ndarray, np.ndarray, int]]) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and count ratio as functions of the score threshold.

    ``images`` yields ``(scores, matched, n_annotations)`` per image (``matched`` from
    :func:`match_by_score`). Because matching goes in score order, the matches of the
    predictions above any threshold are the same as when the lower ones are absent, so one
    matching gives the whole curve. Thresholds are the distinct scores.
    """
    all_scores, all_matched, n_gt = [], [], 0
    for scores, matched, gt in images:
        all_scores.append(np.asarray(scores, float))
        all_matched.append(np.asarray(matched, bool))
        n_gt += int(gt)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    matched = np.concatenate(all_matched) if all_matched else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    scores, matched = scores[order], matched[order]
    tp = np.cumsum(matched)
    kept = np.arange(1, len(scores) + 1)
    last = np.r_[scores[1:] != scores[:-1], True] if len(scores) else np.zeros(0, bool)
    tp, kept, thresholds = tp[last], kept[last], scores[last]
    fp, fn = kept - tp, n_gt - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(kept > 0, tp / kept, 0.0)
        recall = tp / n_gt if n_gt else np.zeros(len(tp))
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        count_ratio = kept / n_gt if n_gt else np.full(len(tp), np.nan)
    return {"threshold": thresholds, "precision": precision, "recall": recall, "f1": f1,
            "count_ratio": count_ratio, "n_annotations": n_gt}


def best_threshold(curve: dict) -> dict[str, float] | None:
    """The calibrated threshold: the middle one of those whose F1 is within one standard error
    of the best; None if there is no detection.

    The thresholds whose F1 lies within ``sqrt(F1 (1 - F1) / n_annotations)`` of the highest
    are equally good on the evidence of the validation set, and the one in the middle of them
    (by rank) is returned. With many annotations that is the argmax; with few it is the
    middle of the near-optimal plateau rather than its noisy edge: on the 10 EMPS validation
    images (132 particles) thresholds from 0.70 to 0.94 gave F1 0.93 to 0.944, differing by
    one or two particles, and the plain argmax picked 0.905, an edge of that plateau.
    """
    if len(curve["threshold"]) == 0:
        return None
    f1 = np.asarray(curve["f1"], float)
    top = float(f1.max())
    n = int(curve.get("n_annotations") or 0)
    se = float(np.sqrt(top * (1 - top) / n)) if n else 0.0
    near = np.flatnonzero(f1 >= top - se - 1e-12)  # thresholds in decreasing order
    best = int(near[len(near) // 2])
    return {k: float(curve[k][best]) for k in ("threshold", "precision", "recall", "f1",
                                               "count_ratio")}


def read_threshold(weights: str | os.PathLike) -> float | None:
    """The calibrated threshold of a weights file, or None.

    A ``score_threshold`` stored in the checkpoint itself (``model_best.pth``, the shipped
    weights) comes first; else :data:`THRESHOLD_FILE` beside the file (written by the last
    evaluation of the run, the one of ``model_final.pth``).
    """
    from emdet.engine.weights import (
        EMDET_PREFIX,
        WeightsError,
        resolve_weights,
        stored_score_threshold,
    )

    if str(weights).startswith(EMDET_PREFIX):
        try:
            weights = resolve_weights(str(weights))
        except WeightsError:
            return None  # loading the model reports it
        return stored_score_threshold(weights)
    path = Path(weights)
    if path.is_file():
        stored = stored_score_threshold(path)
        if stored is not None:
            return stored
    path = path.parent / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        value = float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning("%s is unreadable (%s); not using it", path, e)
        return None
    return value if 0 <= value <= 1 else None


class ScoreThresholdEvaluator(DatasetEvaluator):
    """Calibrate the score threshold on a registered data set (see the module docstring)."""

    def __init__(self, dataset_name: str, output_dir: str | None = None,
                 use_masks: bool = True, min_iou: float = 0.5):
        from detectron2.data import DatasetCatalog

        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.use_masks = use_masks
        self.min_iou = float(min_iou)
        self._gt = {r["image_id"]: r for r in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self) -> None:
        self._images: list[tuple[np.ndarray, np.ndarray, int]] = []

    def _gt_objects(self, record: dict) -> tuple[list, np.ndarray]:
        from emdet.data.rle import segmentation_to_rle

        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        h, w = record["height"], record["width"]
        boxes = np.array([_xyxy(a) for a in anns], float).reshape(-1, 4)
        if not self.use_masks:
            return [], boxes
        # a box-only annotation: its box as the mask
        rles = [segmentation_to_rle(a.get("segmentation") or [_box_polygon(a)], h, w)
                for a in anns]
        return rles, boxes

    def process(self, inputs: Sequence[dict], outputs: Sequence[dict]) -> None:
        from pycocotools import mask as mask_util

        for inp, out in zip(inputs, outputs, strict=True):
            record = self._gt.get(inp["image_id"])
            if record is None:
                continue
            inst = out["instances"].to("cpu")
            scores = inst.scores.numpy().astype(float)
            gt_rles, gt_boxes = self._gt_objects(record)
            n_gt = len(gt_boxes)
            if len(scores) == 0 or n_gt == 0:
                self._images.append((scores, np.zeros(len(scores), bool), n_gt))
                continue
            if self.use_masks and inst.has("pred_masks"):
                masks = inst.pred_masks.numpy().astype(np.uint8)
                pred = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
                iou = mask_util.iou(pred, gt_rles, [0] * n_gt)
            else:
                iou = mask_util.iou(_xywh(inst.pred_boxes.tensor.numpy()),
                                    _xywh(gt_boxes), [0] * n_gt)
            iou = np.asarray(iou, float).reshape(len(scores), n_gt)
            self._images.append((scores, match_by_score(iou, scores, self.min_iou), n_gt))

    def evaluate(self):
        from detectron2.utils import comm

        images = comm.gather(self._images, dst=0)
        if not comm.is_main_process():
            return {}
        best = best_threshold(f1_curve([im for part in images for im in part]))
        if best is None:
            logger.warning("%s: no detections; the score threshold is not calibrated",
                           self.dataset_name)
            return {}
        logger.info(
            "%s: calibrated score threshold %.3f (F1 %.3f, precision %.3f, recall %.3f, "
            "%.2f detections per annotation at mask IoU >= %.2f)", self.dataset_name,
            best["threshold"], best["f1"], best["precision"], best["recall"],
            best["count_ratio"], self.min_iou)
        if self.output_dir:
            atomic_write(Path(self.output_dir) / THRESHOLD_FILE, json.dumps(
                {**best, "dataset": self.dataset_name, "min_iou": self.min_iou,
                 "matched_by": "mask" if self.use_masks else "box"}, indent=2) + "\n")
        return OrderedDict(score_threshold={k: 100 * v if k in ("precision", "recall", "f1")
                                            else v for k, v in best.items()})


def _xyxy(ann: dict) -> list[float]:
    from detectron2.structures import BoxMode

    return BoxMode.convert(list(ann["bbox"]), ann.get("bbox_mode", BoxMode.XYWH_ABS),
                           BoxMode.XYXY_ABS)


def _box_polygon(ann: dict) -> list[float]:
    x0, y0, x1, y1 = _xyxy(ann)
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(boxes, float).reshape(-1, 4).copy()
    out[:, 2:] -= out[:, :2]
    return out
