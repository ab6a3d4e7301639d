"""Shared fixtures for the rotated-box ops: devices and shapely references."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch

import emdet  # noqa: F401  (installs the ops as detectron2._C)

_CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ],
)


@pytest.fixture(params=["cpu", _CUDA])
def device(request) -> torch.device:
    """CPU, and CUDA under the ``gpu`` marker."""
    return torch.device(request.param)


def _polygons(boxes: np.ndarray) -> np.ndarray:
    """Shapely polygons of ``(N, 5)`` rotated boxes, with the vertex formula of detectron2's
    ``Visualizer.draw_rotated_box_with_label`` (width axis ``(cos a, -sin a)`` in x-right,
    y-down image coordinates)."""
    cx, cy, w, h, a = np.asarray(boxes, dtype=np.float64).T
    t = np.deg2rad(a)
    c, s = np.cos(t), np.sin(t)
    rect = [(-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2)]
    pts = np.stack(
        [np.stack([s * yy + c * xx + cx, c * yy - s * xx + cy], -1) for xx, yy in rect], 1
    )
    return shapely.polygons(pts)


def _shapely_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU of rotated boxes with shapely, float64."""
    p1, p2 = _polygons(boxes1), _polygons(boxes2)
    inter = shapely.area(shapely.intersection(p1[:, None], p2[None, :]))
    union = shapely.area(p1)[:, None] + shapely.area(p2)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@pytest.fixture(scope="session")
def polygons():
    """``polygons(boxes) -> ndarray of shapely.Polygon``."""
    return _polygons


@pytest.fixture(scope="session")
def shapely_iou():
    """``shapely_iou(boxes1, boxes2) -> (N, M) float64 IoU``."""
    return _shapely_iou


def _rods(rng: np.random.Generator, n: int, field: float) -> np.ndarray:
    length = rng.uniform(5, 60, n)
    aspect = rng.uniform(3, 10, n)
    return np.stack(
        [
            rng.uniform(0, field, n),
            rng.uniform(0, field, n),
            length,
            length / aspect,
            rng.uniform(-540, 540, n),  # beyond +-180 on purpose
        ],
        1,
    )


@pytest.fixture(scope="session")
def rods():
    """``rods(rng, n, field) -> (n, 5)`` random rods (5-60 px long, aspect 3-10, any angle)."""
    return _rods
