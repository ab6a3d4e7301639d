"""Rotated-box geometry in detectron2's convention, shared by datasets, converters and heads.

A rotated box is ``(cx, cy, w, h, a)``: centre, width, height in pixels and the angle ``a`` in
degrees, counter-clockwise as seen on screen (image y axis points down). This is
``BoxMode.XYWHA_ABS`` / :class:`detectron2.structures.RotatedBoxes`. A point ``(x', y')`` in the
box frame (width along x', height along y') lies in the image at::

    x = cx + cos(a) x' + sin(a) y'
    y = cy - sin(a) x' + cos(a) y'

which is ``get_rotated_vertices`` in detectron2's ``box_iou_rotated_utils.h``; the width axis
points along ``(cos a, -sin a)``. Coordinates are continuous: pixel ``(row i, col j)`` covers
``[j, j + 1] x [i, i + 1]`` and its centre is ``(j + 0.5, i + 0.5)`` (COCO / detectron2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["normalize_rbox", "polygon_to_rbox", "rbox_to_polygon", "rbox_to_xywh"]


def rbox_to_polygon(rbox: Sequence[float] | np.ndarray) -> np.ndarray:
    """Corners of rotated boxes.

    Parameters
    ----------
    rbox : array_like, shape (5,) or (N, 5)
        ``(cx, cy, w, h, angle_deg)`` in detectron2's ``XYWHA_ABS`` convention.

    Returns
    -------
    corners : ndarray of float64, shape (4, 2) or (N, 4, 2)
        ``(x, y)`` corners in detectron2's ``get_rotated_vertices`` order: box-frame points
        ``(+w/2, +h/2), (+w/2, -h/2), (-w/2, -h/2), (-w/2, +h/2)``. The order is cyclic, so the
        flattened corners are a valid COCO polygon.
    """
    boxes = np.asarray(rbox, dtype=np.float64)
    single = boxes.ndim == 1
    boxes = np.atleast_2d(boxes)
    if boxes.shape[-1] != 5:
        raise ValueError(
            f"rotated boxes must be (cx, cy, w, h, angle_deg), got shape {np.shape(rbox)}"
        )
    cx, cy, w, h, a = boxes.T
    theta = np.deg2rad(a)
    c, s = np.cos(theta), np.sin(theta)
    xs = np.array([0.5, 0.5, -0.5, -0.5])[None, :] * w[:, None]
    ys = np.array([0.5, -0.5, -0.5, 0.5])[None, :] * h[:, None]
    x = cx[:, None] + c[:, None] * xs + s[:, None] * ys
    y = cy[:, None] - s[:, None] * xs + c[:, None] * ys
    corners = np.stack([x, y], axis=-1)
    return corners[0] if single else corners


def rbox_to_xywh(rbox: Sequence[float] | np.ndarray) -> np.ndarray:
    """Axis-aligned box ``(x, y, w, h)`` enclosing rotated boxes.

    Parameters
    ----------
    rbox : array_like, shape (5,) or (N, 5)

    Returns
    -------
    ndarray of float64, shape (4,) or (N, 4)
    """
    corners = rbox_to_polygon(rbox)
    lo = corners.min(axis=-2)
    hi = corners.max(axis=-2)
    return np.concatenate([lo, hi - lo], axis=-1)


def normalize_rbox(rbox: Sequence[float] | np.ndarray) -> np.ndarray:
    """The same rotated boxes with ``w >= h`` and the angle in ``[-90, 90)`` degrees.

    Every rectangle has exactly one such representation (up to squares, whose width and
    height are equal), which makes rotated annotations comparable.

    Parameters
    ----------
    rbox : array_like, shape (5,) or (N, 5)

    Returns
    -------
    ndarray of float64, shape (5,) or (N, 5)
    """
    boxes = np.array(rbox, dtype=np.float64)
    single = boxes.ndim == 1
    boxes = np.atleast_2d(boxes)
    swap = boxes[:, 3] > boxes[:, 2]
    boxes[swap, 2], boxes[swap, 3] = boxes[swap, 3].copy(), boxes[swap, 2].copy()
    boxes[swap, 4] += 90.0
    boxes[:, 4] = (boxes[:, 4] + 90.0) % 180.0 - 90.0
    return boxes[0] if single else boxes


def polygon_to_rbox(points: Sequence[float] | np.ndarray) -> np.ndarray:
    """Smallest rotated box around a polygon (e.g. four clicked corners of a nanorod).

    Parameters
    ----------
    points : array_like, shape (K, 2) or (2K,)
        Polygon vertices ``(x, y)``, K >= 3, or a flat COCO polygon.

    Returns
    -------
    rbox : ndarray of float64, shape (5,)
        ``(cx, cy, w, h, angle_deg)`` normalised as in :func:`normalize_rbox`.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 points, got {len(pts)}")
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    best = None
    # Rotating calipers: the minimum-area rectangle has one side on a hull edge.
    for i in range(len(hull)):
        edge = hull[(i + 1) % len(hull)] - hull[i]
        length = math.hypot(*edge)
        if length == 0:
            continue
        u = edge / length
        v = np.array([-u[1], u[0]])
        pu, pv = hull @ u, hull @ v
        area = (pu.max() - pu.min()) * (pv.max() - pv.min())
        if best is None or area < best[0] - 1e-9:
            best = (area, u, v, pu, pv)
    if best is None:
        raise ValueError("polygon has no extent (all points coincide)")
    _, u, v, pu, pv = best
    mu, mv = (pu.max() + pu.min()) / 2, (pv.max() + pv.min()) / 2
    cx, cy = mu * u + mv * v
    # The width axis is (cos a, -sin a) in image coordinates.
    angle = math.degrees(math.atan2(-u[1], u[0]))
    return normalize_rbox([cx, cy, pu.max() - pu.min(), pv.max() - pv.min(), angle])
