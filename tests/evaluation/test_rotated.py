"""Rotated-box AP: known values, axis-aligned predictions, output format, no compiled ops."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import emdet  # noqa: F401

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances, RotatedBoxes

from emdet.data.geometry import rbox_to_polygon
from emdet.evaluation.rotated import (
    RotatedCOCOEvaluator,
    dataset_dicts_to_rotated_coco,
    instances_to_rotated_json,
    overlap_recall,
    rotated_iou,
)

CLASSES = ["rod", "plate"]
# image 1: two crossing rods (rotated IoU 0.3) and a plate; image 2: one rod (some gt given in
# non-canonical forms on purpose)
GT = {
    1: [([40.0, 50.0, 40.0, 10.0, 20.0], 0), ([40.0, 50.0, 8.0, 36.0, -100.0], 0),
        ([50.0, 20.0, 20.0, 16.0, -10.0], 1)],
    2: [([40.0, 40.0, 30.0, 6.0, 200.0], 0)],
}


@pytest.fixture()
def dataset():
    name = "test_rotated_eval"
    dicts = [
        {"file_name": f"img{i}.png", "image_id": i, "height": 100, "width": 100,
         "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYWHA_ABS, "category_id": c,
                          "iscrowd": 0} for b, c in anns]}
        for i, anns in GT.items()
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=CLASSES, evaluator_type="rotated",
                                  thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(boxes, classes, scores=None, rotated=True) -> Instances:
    inst = Instances((100, 100))
    t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5 if rotated else 4)
    inst.pred_boxes = RotatedBoxes(t) if rotated else Boxes(t)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.scores = torch.tensor(scores if scores is not None else [0.9] * len(classes))
    return inst


def _evaluate(name, per_image, tmp_path=None):
    ev = RotatedCOCOEvaluator(name, output_dir=str(tmp_path) if tmp_path else None,
                              distributed=False)
    ev.reset()
    for img_id, inst in per_image.items():
        ev.process([{"image_id": img_id}], [{"instances": inst}])
    return ev.evaluate()["rbox"]


def _perfect():
    return {i: _instances([b for b, _ in anns], [c for _, c in anns]) for i, anns in GT.items()}


def test_perfect_predictions_give_ap_100(dataset, tmp_path):
    res = _evaluate(dataset, _perfect(), tmp_path)
    for key in ("AP", "AP50", "AP75", "AP-rod", "AP50-rod", "AP75-rod", "AP-plate"):
        assert res[key] == pytest.approx(100.0), key
    assert res["R50_overlap"] == pytest.approx(100.0)  # the two rods of image 1 cross


def test_shifted_prediction_has_known_ap(dataset):
    """Shifting a 40 x 10 rod by s along its length gives IoU (40 - s) / (40 + s)."""
    iou = 0.62  # matched at IoU thresholds 0.50, 0.55, 0.60 of the ten: AP 30
    s = 40 * (1 - iou) / (1 + iou)
    preds = _perfect()
    box = torch.tensor(GT[1][0][0])
    a = math.radians(box[4].item())
    box[0] += s * math.cos(a)
    box[1] -= s * math.sin(a)
    assert rotated_iou(box[None].numpy(), np.array([GT[1][0][0]]))[0, 0] == pytest.approx(iou, 1e-4)
    boxes = preds[1].pred_boxes.tensor.clone()
    boxes[0] = box
    preds[1].pred_boxes = RotatedBoxes(boxes)
    preds[1].scores = torch.tensor([0.8, 0.9, 0.9])
    preds[2] = _instances(np.zeros((0, 5)), [])
    res = _evaluate(dataset, preds)
    # 3 gt rods. At IoU <= 0.6 two are found, best first: precision 1 up to recall 2/3.
    # Above 0.6 the 0.9 one is found, then the shifted 0.8 one is a false positive.
    two_thirds = np.mean(np.where(np.linspace(0, 1, 101) <= 2 / 3, 1.0, 0.0))
    one_third = np.mean(np.where(np.linspace(0, 1, 101) <= 1 / 3, 1.0, 0.0))
    assert res["AP50-rod"] == pytest.approx(100 * two_thirds)
    assert res["AP75-rod"] == pytest.approx(100 * one_third)
    assert res["AP-rod"] == pytest.approx(100 * (3 * two_thirds + 7 * one_third) / 10)
    assert res["AP-plate"] == pytest.approx(100.0)


def test_missing_detection_halves_recall(dataset):
    """Two rods found of three... here: one of the two rods of image 1 and nothing else."""
    preds = {1: _instances([GT[1][0][0], GT[1][2][0]], [0, 1]), 2: _instances([], [])}
    res = _evaluate(dataset, preds)
    assert res["AP50-rod"] == pytest.approx(100 * 34 / 101)  # recall 1/3: points 0..0.33
    assert res["R50_overlap"] == pytest.approx(50.0)


def test_axis_aligned_predictions_count_as_angle_zero_boxes():
    name = "test_rotated_eval_aa"
    dicts = [{"file_name": "a.png", "image_id": 7, "height": 64, "width": 64, "annotations": [
        {"bbox": [10.0, 10.0, 30.0, 8.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0},
        {"bbox": [40.0, 40.0, 30.0, 8.0, 90.0], "bbox_mode": BoxMode.XYWHA_ABS,
         "category_id": 0}]}]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["rod"])
    try:
        # XYXY boxes: exactly the horizontal rod, and the vertical rod's enclosing box
        preds = {7: _instances([[10, 10, 40, 18], [36, 25, 44, 55]], [0, 0], [0.9, 0.8],
                               rotated=False)}
        res = _evaluate(name, preds)
        assert res["AP50"] == pytest.approx(100.0)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_output_json_has_rbox_polygon_and_enclosing_bbox(dataset, tmp_path):
    _evaluate(dataset, _perfect(), tmp_path)
    results = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert len(results) == 4
    r = next(r for r in results if r["image_id"] == 1 and r["category_id"] == 1)
    # canonical: w >= h, angle in [-90, 90); category ids back to the data set's (1, 2)
    rb = np.array(r["rbox"])
    assert rb[2] >= rb[3] and -90 <= rb[4] < 90
    corners = np.array(r["segmentation"][0]).reshape(4, 2)
    assert np.allclose(corners, rbox_to_polygon(rb), atol=0.01)
    x, y, w, h = r["bbox"]
    assert [x, y, x + w, y + h] == pytest.approx([*corners.min(0), *corners.max(0)], abs=0.02)
    assert {r["category_id"] for r in results} == {1, 2}


def test_instances_to_rotated_json_normalises_angles():
    inst = _instances([[10, 20, 4, 30, 170]], [0])
    (r,) = instances_to_rotated_json(inst, 3, id_map={0: 5})
    assert r["rbox"] == pytest.approx([10, 20, 30, 4, 80])  # (w, h, a) = (h, w, a + 90)
    assert r["category_id"] == 5 and r["image_id"] == 3 and r["area"] == pytest.approx(120)


def test_works_without_compiled_ops(dataset, monkeypatch):
    """Only emdet.ops is used: detectron2's _C entry points may be missing or broken."""
    import detectron2.layers.rotated_boxes as d2_rotated

    def broken(*args, **kwargs):
        raise RuntimeError("detectron2._C is not available")

    monkeypatch.setattr(d2_rotated, "pairwise_iou_rotated", broken)
    from detectron2 import _C

    monkeypatch.setattr(_C, "box_iou_rotated", broken, raising=False)
    assert _evaluate(dataset, _perfect())["AP"] == pytest.approx(100.0)


def test_no_predictions_give_nan(dataset):
    res = _evaluate(dataset, {1: _instances([], []), 2: _instances([], [])})
    assert math.isnan(res["AP"])


def test_ground_truth_conversion_uses_the_rotated_boxes():
    dicts = [{"image_id": 1, "height": 10, "width": 10, "annotations": [
        {"bbox": [5, 5, 2, 8, 0], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},
        {"bbox": [5, 5, 0, 8, 0], "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0},
        {"bbox": [1, 1, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1}]}]
    coco = dataset_dicts_to_rotated_coco(dicts, ["rod"])
    (a,) = coco["annotations"]
    assert a["bbox"] == pytest.approx([5, 5, 8, 2, -90]) and a["area"] == pytest.approx(16)


def test_overlap_recall_counts_crossing_rods():
    gt = np.array([[50, 50, 40, 6, 10], [50, 50, 40, 6, -10], [10, 90, 20, 5, 0]])
    assert rotated_iou(gt[:1], gt[1:2])[0, 0] > 0.1
    # the isolated rod (index 2) does not count; of the crossing pair only one is found
    found, total = overlap_recall(gt, gt[[0, 2]], np.array([0.9, 0.9]))
    assert (found, total) == (1, 2)
    assert overlap_recall(gt, gt, np.ones(3)) == (2, 2)
    assert overlap_recall(gt, gt, np.full(3, 0.3)) == (0, 2)  # below the score threshold
    # one axis-aligned box around the crossing: by enclosing boxes it matches one rod, not two
    half = np.array([40 * math.cos(0.1745) + 6 * math.sin(0.1745),
                     40 * math.sin(0.1745) + 6 * math.cos(0.1745)]) / 2
    box = np.array([[*(50 - half), *(50 + half)]])
    assert overlap_recall(gt, box, np.ones(1), enclosing=True) == (1, 2)
    assert overlap_recall(gt, box, np.ones(1)) == (0, 2)
