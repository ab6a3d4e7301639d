"""Drawing rotated predictions: the outline is coloured where the box edges are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emdet  # noqa: F401

# isort: split
from detectron2.structures import Instances, RotatedBoxes

from emdet.data.geometry import rbox_to_polygon
from emdet.utils.visualize import PALETTE, draw_instances, draw_rotated_boxes, to_rgb


def _grey(h: int = 96, w: int = 128) -> np.ndarray:
    return (np.arange(h * w, dtype=np.uint16).reshape(h, w) % 50 + 1000).astype(np.uint16)


def _edge_points(box, n: int = 9) -> np.ndarray:
    c = rbox_to_polygon(box)
    return np.concatenate([c[i] + np.linspace(0.15, 0.85, n)[:, None] * (c[(i + 1) % 4] - c[i])
                           for i in range(4)])


@pytest.mark.parametrize("box", [[64, 48, 60, 14, 30], [40, 30, 30, 8, -75], [90, 60, 20, 20, 0]])
def test_outline_pixels_get_the_class_colour(box):
    img = _grey()
    out = draw_rotated_boxes(img, np.array([box]), classes=[1], labels=False)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    grey = to_rgb(img)
    assert np.all(grey[..., 0] == grey[..., 1])  # the background is grey
    coloured = np.all(out == PALETTE[1], axis=2)
    points = _edge_points(np.array(box, float))
    exact = [coloured[int(y), int(x)] for x, y in points]
    near = [coloured[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].any() for x, y in points]
    assert all(near) and np.mean(exact) > 0.6  # 1-pixel lines: within a pixel of the edge
    cx, cy = int(box[0]), int(box[1])
    assert np.array_equal(out[cy, cx], grey[cy, cx])  # not filled
    changed = np.any(out != grey, axis=2)
    assert changed.sum() < 6 * (box[2] + box[3])  # only the outline
    assert np.array_equal(img, _grey())  # input untouched


def test_labels_scores_threshold_and_axis_aligned_boxes():
    img = _grey()
    boxes = np.array([[64, 48, 60, 14, 30], [30, 30, 20, 6, 0]])
    labelled = draw_rotated_boxes(img, boxes, scores=[0.93, 0.2], classes=[0, 0],
                                  class_names=["nanorod"], score_thresh=0.5)
    plain = draw_rotated_boxes(img, boxes[:1], classes=[0], labels=False)
    assert np.any(labelled != plain)  # the text "nanorod 0.93"
    below = draw_rotated_boxes(img, boxes[1:], scores=[0.2], score_thresh=0.5)
    assert np.array_equal(below, to_rgb(img))
    xyxy = draw_rotated_boxes(img, np.array([[20.0, 20.0, 60.0, 40.0]]), labels=False)
    assert tuple(xyxy[30, 20]) == PALETTE[0] and tuple(xyxy[20, 40]) == PALETTE[0]
    with pytest.raises(ValueError, match="boxes must be"):
        draw_rotated_boxes(img, np.zeros((2, 3)))


def test_draw_instances_and_empty():
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    inst = Instances((64, 64))
    inst.pred_boxes = RotatedBoxes(torch.tensor([[32.0, 32.0, 40.0, 8.0, 45.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    out = draw_instances(img, inst, class_names=["rod"])
    assert out.shape == (64, 64, 3) and np.any(np.all(out == PALETTE[0], axis=2))
    assert np.array_equal(draw_rotated_boxes(img, np.zeros((0, 5))), to_rgb(img))
