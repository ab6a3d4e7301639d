"""COCO-style AP of rotated boxes, by rotated IoU, without detectron2's compiled ops.

:class:`RotatedCOCOEvaluator` is a detectron2 ``DatasetEvaluator`` (``EMTrainer`` uses it for
data sets whose metadata say ``evaluator_type: rotated``). It differs from detectron2's
``RotatedCOCOEvaluator`` in three ways:

* the ground truth comes from the data set dicts' 5-value rotated boxes (emdet loads ``rbox``
  as ``bbox`` with ``BoxMode.XYWHA_ABS``), not from the json's 4-value axis-aligned ``bbox``;
* IoU is :func:`emdet.ops.box_iou_rotated` (pure PyTorch), and axis-aligned predictions are
  evaluated as angle-0 rotated boxes, so an axis-aligned detector can be compared on the same
  footing;
* it reports AP, AP50 and AP75 for every class, with up to ``max_dets_per_image`` (default 1000,
  not COCO's 100: a nanorod image can hold more than 100 rods) detections per image, and the
  recall at IoU 0.5 on ground-truth boxes that overlap another one (``R50_overlap``, see
  :func:`overlap_recall`).

Predictions are written to ``coco_instances_results.json`` with ``rbox`` ``[cx, cy, w, h,
angle_deg]`` (canonical: ``w >= h``, angle in ``[-90, 90)``), the 4-corner polygon as
``segmentation`` and the enclosing ``bbox`` ``[x, y, w, h]`` (:func:`instances_to_rotated_json`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from emdet.data.geometry import normalize_rbox, rbox_to_polygon, rbox_to_xywh
from emdet.utils.atomic import atomic_write

__all__ = [
    "RotatedCOCOEvaluator",
    "RotatedCOCOeval",
    "dataset_dicts_to_rotated_coco",
    "instances_to_rotated_json",
    "overlap_recall",
    "rotated_iou",
]

logger = logging.getLogger(__name__)

#: The metrics of COCOeval.stats[:6], in order.
_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def rotated_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of ``(N, 5)`` and ``(M, 5)`` rotated boxes (float64 out)."""
    from emdet import ops

    b1 = torch.as_tensor(np.asarray(boxes1, dtype=np.float32).reshape(-1, 5))
    b2 = torch.as_tensor(np.asarray(boxes2, dtype=np.float32).reshape(-1, 5))
    if len(b1) == 0 or len(b2) == 0:
        return np.zeros((len(b1), len(b2)))
    return ops.box_iou_rotated(b1, b2).double().numpy()


def _as_rboxes(boxes: np.ndarray) -> np.ndarray:
    """``(N, 5)`` canonical rotated boxes from ``(N, 5)`` rotated or ``(N, 4)`` XYXY boxes."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 5))
    if boxes.shape[1] == 4:
        x0, y0, x1, y1 = boxes.T
        boxes = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0 * x0], axis=1)
    return normalize_rbox(boxes).reshape(-1, 5)


def instances_to_rotated_json(instances, img_id: int, *, id_map: dict | None = None) -> list[dict]:
    """COCO result dicts of detectron2 ``Instances`` (``pred_boxes`` rotated or axis-aligned).

    Parameters
    ----------
    instances : detectron2.structures.Instances
        With ``pred_boxes`` (``RotatedBoxes`` or ``Boxes``, the latter taken as angle 0),
        ``scores``, ``pred_classes``.
    img_id : int
    id_map : dict, optional
        Contiguous class index -> data set category id (default: the index).

    Returns
    -------
    list of dict
        ``image_id``, ``category_id``, ``score``, ``rbox`` ``[cx, cy, w, h, angle_deg]``
        (canonical), ``segmentation`` ``[[x0, y0, ..., x3, y3]]`` (corners in
        :func:`emdet.data.geometry.rbox_to_polygon` order), ``bbox`` ``[x, y, w, h]`` (enclosing)
        and ``area`` (``w * h``).
    """
    if len(instances) == 0:
        return []
    rboxes = _as_rboxes(instances.pred_boxes.tensor.detach().cpu().numpy())
    corners = rbox_to_polygon(rboxes).reshape(-1, 8)
    enclosing = rbox_to_xywh(rboxes).reshape(-1, 4)
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    out = []
    for k in range(len(rboxes)):
        cls = int(classes[k])
        out.append(
            {
                "image_id": img_id,
                "category_id": id_map[cls] if id_map else cls,
                "score": float(scores[k]),
                "rbox": [round(float(v), 3) for v in rboxes[k]],
                "segmentation": [[round(float(v), 2) for v in corners[k]]],
                "bbox": [round(float(v), 2) for v in enclosing[k]],
                "area": round(float(rboxes[k, 2] * rboxes[k, 3]), 2),
            }
        )
    return out


def dataset_dicts_to_rotated_coco(
    dataset_dicts: Sequence[dict], class_names: Sequence[str]
) -> dict[str, Any]:
    """COCO ground truth with 5-value rotated ``bbox`` from detectron2 dataset dicts.

    Annotations in ``XYWHA_ABS`` keep their rotated box; axis-aligned ones become angle-0
    rotated boxes. Category ids are the contiguous class indices of the dicts. Crowd
    annotations and boxes with a zero side are left out (logged).

    Returns
    -------
    dict
        ``images``, ``annotations`` (``bbox`` = canonical ``[cx, cy, w, h, angle]``, ``area`` =
        ``w * h``, ``iscrowd`` 0) and ``categories``.
    """
    images, anns = [], []
    dropped = 0
    for d in dataset_dicts:
        images.append(
            {"id": d["image_id"], "height": d.get("height"), "width": d.get("width"),
             "file_name": d.get("file_name")}
        )
        for a in d.get("annotations", []):
            if a.get("iscrowd", 0):
                dropped += 1
                continue
            if a["bbox_mode"] == BoxMode.XYWHA_ABS:
                box = np.asarray(a["bbox"], dtype=np.float64)
            else:
                x, y, w, h = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
                box = np.array([x + w / 2, y + h / 2, w, h, 0.0])
            if not (box[2] > 0 and box[3] > 0):
                dropped += 1
                continue
            box = normalize_rbox(box)
            anns.append(
                {"id": len(anns) + 1, "image_id": d["image_id"], "category_id": a["category_id"],
                 "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0}
            )
    if dropped:
        logger.info("rotated ground truth: left out %d crowd or zero-size annotation(s)", dropped)
    cats = [{"id": i, "name": n} for i, n in enumerate(class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def _coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class RotatedCOCOeval(COCOeval):
    """pycocotools' COCOeval with ``bbox`` = rotated boxes ``[cx, cy, w, h, angle]``.

    Only :meth:`computeIoU` differs (rotated IoU by :func:`rotated_iou`); crowd ground truth
    is not supported (leave it out of the ground truth).
    """

    def computeIoU(self, imgId, catId):  # noqa: N802  (pycocotools' name)
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        return rotated_iou(
            np.array([d["bbox"] for d in dt]).reshape(-1, 5),
            np.array([g["bbox"] for g in gt]).reshape(-1, 5),
        )


def evaluate_rotated(
    coco_gt: dict[str, Any], results: Sequence[dict], *, max_dets: int = 1000
) -> RotatedCOCOeval | None:
    """Run :class:`RotatedCOCOeval` on COCO-style ground truth and ``rbox`` results.

    ``results`` use the ground truth's category ids; returns None when there are none.
    """
    if not results:
        return None
    gt = _coco(coco_gt)
    dts = [
        {"id": i + 1, "image_id": r["image_id"], "category_id": r["category_id"],
         "bbox": list(r["rbox"]), "score": r["score"],
         "area": float(r["rbox"][2] * r["rbox"][3])}
        for i, r in enumerate(results)
    ]
    dt = _coco({"images": coco_gt["images"], "annotations": dts,
                "categories": coco_gt["categories"]})
    ev = RotatedCOCOeval(gt, dt, iouType="bbox")
    ev.params.maxDets = [1, 10, int(max_dets)]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    ev.stats = _summary(ev)
    return ev


def _summary(ev: COCOeval) -> np.ndarray:
    """COCOeval.stats[:6] (AP, AP50, AP75, APs, APm, APl) at ``maxDets[-1]`` detections.

    pycocotools' ``summarize`` hard-codes 100 detections for AP, so it returns -1 for any
    other ``maxDets``; -1 here too where nothing can be computed.
    """
    precision = ev.eval["precision"][..., -1]  # (T, R, K, A)
    ious = ev.params.iouThrs
    areas = ev.params.areaRngLbl
    stats = []
    for t, area in ((slice(None), "all"), (np.isclose(ious, 0.5), "all"),
                    (np.isclose(ious, 0.75), "all"), (slice(None), "small"),
                    (slice(None), "medium"), (slice(None), "large")):
        p = precision[t, :, :, areas.index(area)]
        p = p[p > -1]
        stats.append(float(np.mean(p)) if p.size else -1.0)
    return np.array(stats)


def per_class_ap(ev: RotatedCOCOeval, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{class: {"AP", "AP50", "AP75"}}`` in percent (NaN where a class has no ground truth)."""
    precision = ev.eval["precision"]  # (T iou, R recall, K class, A area, M maxdets)
    ious = ev.params.iouThrs
    out = {}
    for k, name in enumerate(class_names):
        vals = {}
        for metric, t in (("AP", slice(None)), ("AP50", np.isclose(ious, 0.5)),
                          ("AP75", np.isclose(ious, 0.75))):
            p = precision[t, :, k, 0, -1]
            p = p[p > -1]
            vals[metric] = float(np.mean(p) * 100) if p.size else float("nan")
        out[name] = vals
    return out


def overlap_recall(
    gt_boxes: np.ndarray,
    pred_boxes: np.ndarray,
    scores: np.ndarray,
    *,
    overlap_iou: float = 0.1,
    match_iou: float = 0.5,
    score_thresh: float = 0.5,
    enclosing: bool = False,
) -> tuple[int, int]:
    """Overlapping ground-truth rods found by the predictions of one image.

    A ground-truth box is *overlapping* when its rotated IoU with another ground-truth box
    exceeds ``overlap_iou``. Predictions with ``score >= score_thresh`` are matched greedily,
    best score first, one-to-one, to the unmatched ground truth of highest IoU
    ``>= match_iou`` (as COCO does).

    Parameters
    ----------
    gt_boxes : ndarray, shape (G, 5)
    pred_boxes : ndarray, shape (D, 5) or (D, 4)
        Rotated, or axis-aligned XYXY (taken as angle 0).
    scores : ndarray, shape (D,)
    enclosing : bool
        Match by the IoU of the enclosing axis-aligned boxes of both instead of rotated IoU
        (how well an axis-aligned detector separates rods, in its own terms).

    Returns
    -------
    found, total : int
        Overlapping ground-truth boxes matched, and overlapping ground-truth boxes.
    """
    gt = _as_rboxes(gt_boxes)
    pred = _as_rboxes(pred_boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    gt_iou = rotated_iou(gt, gt)
    np.fill_diagonal(gt_iou, 0.0)
    overlapping = (gt_iou > overlap_iou).any(axis=1) if len(gt) else np.zeros(0, dtype=bool)
    total = int(overlapping.sum())
    if total == 0:
        return 0, 0
    keep = scores >= score_thresh
    pred, scores = pred[keep], scores[keep]
    if enclosing:
        gt_e, pred_e = rbox_to_xywh(gt).reshape(-1, 4), rbox_to_xywh(pred).reshape(-1, 4)
        gt = np.c_[gt_e[:, :2] + gt_e[:, 2:] / 2, gt_e[:, 2:], np.zeros(len(gt_e))]
        pred = np.c_[pred_e[:, :2] + pred_e[:, 2:] / 2, pred_e[:, 2:], np.zeros(len(pred_e))]
    iou = rotated_iou(pred, gt)  # (D, G)
    matched = np.zeros(len(gt), dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        cand = np.where(matched, -1.0, iou[d])
        g = int(np.argmax(cand)) if len(cand) else -1
        if g >= 0 and cand[g] >= match_iou:
            matched[g] = True
    return int((matched & overlapping).sum()), total


class RotatedCOCOEvaluator(DatasetEvaluator):
    """AP of rotated boxes by rotated IoU; see the module docstring.

    Parameters
    ----------
    dataset_name : str
        A registered data set (its dicts give the ground truth).
    output_dir : str, optional
        Where ``coco_instances_results.json`` is written.
    distributed : bool
        Gather predictions from all workers and evaluate on the main one.
    max_dets_per_image : int
        Detections per image counted for AP (COCO's 100 is too few for crowded rods).
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        distributed: bool = True,
        max_dets_per_image: int = 1000,
    ):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._max_dets = int(max_dets_per_image)
        self._metadata = MetadataCatalog.get(dataset_name)
        dicts = DatasetCatalog.get(dataset_name)
        self._class_names = list(self._metadata.get("thing_classes", []))
        if not self._class_names:
            n = 1 + max((a["category_id"] for d in dicts for a in d.get("annotations", [])),
                        default=0)
            self._class_names = [str(i) for i in range(n)]
        self._coco_gt = dataset_dicts_to_rotated_coco(dicts, self._class_names)
        self._gt_by_image: dict[Any, np.ndarray] = {img["id"]: np.zeros((0, 5))
                                                    for img in self._coco_gt["images"]}
        for a in self._coco_gt["annotations"]:
            self._gt_by_image[a["image_id"]] = np.vstack([self._gt_by_image[a["image_id"]],
                                                          a["bbox"]])
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        self._id_map = {v: k for k, v in id_map.items()} if id_map else None
        self.reset()

    def reset(self) -> None:
        self._predictions: list[dict] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs, strict=True):
            if "instances" not in out:
                continue
            inst = out["instances"].to("cpu")
            self._predictions.append(
                {"image_id": inp["image_id"], "instances": instances_to_rotated_json(
                    inst, inp["image_id"])}
            )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        results = list(itertools.chain(*(p["instances"] for p in predictions)))
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            out = copy.deepcopy(results)
            if self._id_map:
                for r in out:
                    r["category_id"] = self._id_map[r["category_id"]]
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            atomic_write(path, json.dumps(out))
            logger.info("Saved %d rotated predictions to %s", len(out), path)
        ev = evaluate_rotated(self._coco_gt, results, max_dets=self._max_dets)
        if ev is None:
            logger.warning("No predictions from the model on %s!", self._dataset_name)
            return {"rbox": {m: float("nan") for m in _METRICS}}
        res: dict[str, float] = OrderedDict(
            (m, float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan"))
            for i, m in enumerate(_METRICS)
        )
        per_class = per_class_ap(ev, self._class_names)
        for name, vals in per_class.items():
            for metric, v in vals.items():
                res[f"{metric}-{name}"] = v
        found = total = 0
        by_image: dict[Any, list[dict]] = {}
        for r in results:
            by_image.setdefault(r["image_id"], []).append(r)
        for img_id, gt in self._gt_by_image.items():
            dets = by_image.get(img_id, [])
            f, t = overlap_recall(gt, np.array([d["rbox"] for d in dets]).reshape(-1, 5),
                                  np.array([d["score"] for d in dets]))
            found, total = found + f, total + t
        res["R50_overlap"] = 100.0 * found / total if total else float("nan")
        logger.info(
            "Evaluation results for rbox (rotated IoU, up to %d detections per image):\n%s",
            self._max_dets, create_small_table({m: res[m] for m in _METRICS}),
        )
        table = tabulate(
            [(n, v["AP"], v["AP50"], v["AP75"]) for n, v in per_class.items()],
            headers=["category", "AP", "AP50", "AP75"], tablefmt="pipe", floatfmt=".3f",
            numalign="left",
        )
        logger.info("Per-category rbox AP:\n%s", table)
        logger.info(
            "Overlapping rods (rotated IoU > 0.1 with another) found at IoU 0.5, score >= 0.5: "
            "%d of %d (R50_overlap %.1f)", found, total, res["R50_overlap"],
        )
        return {"rbox": res}
