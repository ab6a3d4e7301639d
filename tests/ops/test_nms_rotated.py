"""nms_rotated: greedy shapely reference, ties, thresholds, empty and degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emdet.ops import box_iou_rotated, nms_rotated


def _greedy_reference(iou: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS: stable score order, suppress when IoU > threshold."""
    removed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if removed[i]:
            continue
        keep.append(int(i))
        removed |= iou[i] > threshold
    return keep


def _detections(
    rng: np.random.Generator, rods, n: int, objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Jittered copies of a few rods, like the raw output of a detector."""
    base = rods(rng, objects, 300.0)
    boxes = base[rng.integers(0, objects, n)].copy()
    boxes[:, :2] += rng.normal(0, 2, (n, 2))
    boxes[:, 2:4] *= rng.uniform(0.8, 1.2, (n, 2))
    boxes[:, 4] += rng.normal(0, 10, n)
    return boxes, rng.random(n)


@pytest.fixture(scope="module")
def scene(rods, shapely_iou):
    """400 jittered detections of 60 rods and their shapely IoUs (diagonal zeroed)."""
    boxes, scores = _detections(np.random.default_rng(10), rods, 400, 60)
    iou = shapely_iou(boxes, boxes)
    np.fill_diagonal(iou, 0)
    return boxes, scores, iou


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_matches_greedy_shapely_reference(threshold, scene, device):
    boxes, scores, iou = scene
    keep = nms_rotated(
        torch.tensor(boxes, device=device), torch.tensor(scores, device=device), threshold
    )
    assert keep.dtype == torch.int64
    assert keep.device.type == device.type
    expected = _greedy_reference(iou, scores, threshold)
    assert keep.tolist() == expected
    if threshold < 0.8:
        assert 0 < len(expected) < 400  # the scene does exercise suppression


def test_float32_matches_greedy_on_own_iou(rods):
    rng = np.random.default_rng(11)
    boxes, scores = _detections(rng, rods, 600, 80)
    b, s = torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32)
    iou = box_iou_rotated(b, b).numpy()
    np.fill_diagonal(iou, 0)
    assert nms_rotated(b, s, 0.5).tolist() == _greedy_reference(iou, s.numpy(), 0.5)


def test_kept_by_decreasing_score(rods):
    rng = np.random.default_rng(12)
    boxes, scores = _detections(rng, rods, 300, 30)
    keep = nms_rotated(torch.tensor(boxes), torch.tensor(scores), 0.4)
    kept_scores = torch.tensor(scores)[keep]
    assert torch.all(kept_scores[:-1] >= kept_scores[1:])


def test_ties_keep_input_order():
    same = torch.tensor([[0.0, 0, 4, 2, 10]] * 4)
    assert nms_rotated(same, torch.ones(4), 0.5).tolist() == [0]
    apart = torch.tensor([[0.0, 0, 4, 2, 10], [50, 0, 4, 2, 10], [100, 0, 4, 2, 10]])
    assert nms_rotated(apart, torch.ones(3), 0.5).tolist() == [0, 1, 2]
    mixed = torch.tensor([[0.0, 0, 4, 2, 0], [50, 0, 4, 2, 0], [0, 0, 4, 2, 0], [50, 0, 4, 2, 0]])
    assert nms_rotated(mixed, torch.tensor([0.5, 0.9, 0.5, 0.9]), 0.5).tolist() == [1, 0]


def test_threshold_is_strict():
    # Nested, concentric: IoU is exactly 2 / 4.
    boxes = torch.tensor([[0.0, 0, 2, 2, 30], [0, 0, 2, 1, 30]])
    scores = torch.tensor([0.9, 0.8])
    assert box_iou_rotated(boxes[:1], boxes[1:]).item() == 0.5
    assert nms_rotated(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms_rotated(boxes, scores, 0.4999).tolist() == [0]
    identical = torch.tensor([[0.0, 0, 2, 2, 30]] * 2)
    assert nms_rotated(identical, scores, 1.0).tolist() == [0, 1]


def test_touching_and_disjoint_never_suppress():
    boxes = torch.tensor([[0.0, 0, 2, 2, 0], [2, 0, 2, 2, 0], [9, 9, 1, 1, 45]])
    assert nms_rotated(boxes, torch.tensor([0.3, 0.2, 0.1]), 0.0).tolist() == [0, 1, 2]


def test_negative_threshold_suppresses_everything_after_the_best():
    boxes = torch.tensor([[0.0, 0, 2, 2, 0], [20, 0, 2, 2, 0], [40, 0, 2, 2, 0]])
    assert nms_rotated(boxes, torch.tensor([0.1, 0.3, 0.2]), -0.1).tolist() == [1]


def test_zero_area_boxes_are_kept():
    boxes = torch.tensor([[0.0, 0, 2, 2, 0], [0, 0, 0, 2, 0], [0, 0, 2, 2, 0]])
    assert nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_input(dtype, device):
    keep = nms_rotated(
        torch.zeros(0, 5, dtype=dtype, device=device),
        torch.zeros(0, dtype=dtype, device=device),
        0.5,
    )
    assert keep.shape == (0,)
    assert keep.dtype == torch.int64
    assert keep.device.type == device.type


def test_single_box():
    assert nms_rotated(torch.tensor([[0.0, 0, 2, 2, 0]]), torch.tensor([1.0]), 0.5).tolist() == [0]


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="scores must have shape"):
        nms_rotated(torch.zeros(3, 5), torch.zeros(2), 0.5)
