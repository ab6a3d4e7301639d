"""Tensor helpers for rotated boxes ``(cx, cy, w, h, angle_deg)`` in detectron2's convention.

The convention (angle counter-clockwise as displayed, image y down, width axis along
``(cos a, -sin a)``) is the one of :mod:`emdet.data.geometry`, which has the NumPy versions.

Shapes: ``R`` boxes; rotated boxes ``(R, 5)``, axis-aligned boxes ``(R, 4)`` as ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

import torch

__all__ = ["enclosing_boxes", "horizontal_to_rotated", "normalize_rotated", "wrap_angle"]


def wrap_angle(angle: torch.Tensor, period: float) -> torch.Tensor:
    """Angles (degrees) to ``[-period / 2, period / 2)``."""
    return torch.remainder(angle + period / 2, period) - period / 2


def normalize_rotated(boxes: torch.Tensor) -> torch.Tensor:
    """The same rectangles with ``w >= h`` and the angle in ``[-90, 90)`` (a new tensor).

    ``(w, h, a)``, ``(h, w, a + 90)`` and ``(w, h, a + 180)`` describe one rectangle; this is
    :func:`emdet.data.geometry.normalize_rbox` for tensors, differentiable almost everywhere.
    """
    cx, cy, w, h, a = boxes.unbind(-1)
    swap = h > w
    w2 = torch.where(swap, h, w)
    h2 = torch.where(swap, w, h)
    a2 = wrap_angle(torch.where(swap, a + 90.0, a), 180.0)
    return torch.stack([cx, cy, w2, h2, a2], dim=-1)


def enclosing_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """``(R, 4)`` axis-aligned ``(x0, y0, x1, y1)`` boxes enclosing ``(R, 5)`` rotated boxes."""
    cx, cy, w, h, a = boxes.unbind(-1)
    t = torch.deg2rad(a)
    c, s = torch.cos(t).abs(), torch.sin(t).abs()
    half_w = 0.5 * (c * w + s * h)
    half_h = 0.5 * (s * w + c * h)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def horizontal_to_rotated(boxes: torch.Tensor) -> torch.Tensor:
    """``(R, 5)`` rotated boxes with angle 0 from ``(R, 4)`` ``(x0, y0, x1, y1)`` boxes."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack(
        [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, torch.zeros_like(x0)], dim=-1
    )
