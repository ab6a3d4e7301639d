"""Rotated box regression with the angle handled periodically.

detectron2's :class:`~detectron2.modeling.box_regression.Box2BoxTransformRotated` regresses the
angle difference wrapped to ``[-180, 180)``. A rectangle, however, is unchanged by half a turn,
and also by a quarter turn that swaps its width and height::

    (cx, cy, w, h, a) == (cx, cy, w, h, a + 180) == (cx, cy, h, w, a + 90)

so a rod at 89 degrees and one at -89 degrees are almost the same box, yet their deltas from an
angle-0 proposal differ by 178 degrees. Regressing towards whichever is given makes the target
jump, and the head learns the average: a wrong, horizontal rod. :class:`PeriodicBox2BoxTransformRotated`
replaces the target, before computing deltas, by its equivalent whose angle is closest to the
proposal's:

* ``period=180``: ``a`` moved by multiples of 180, so ``da`` lies in ``[-90, 90)`` degrees;
* ``period=90`` (default): also ``(w, h, a) -> (h, w, a -+ 90)``, so ``da`` lies in
  ``[-45, 45)`` and ``dw``, ``dh`` compare the proposal's sides with the target's sides that lie
  closest to them. An axis-aligned proposal around a near-vertical rod is then regressed by a
  few degrees, not by almost 90.

Deltas are those of detectron2 (``dx = wx (x' - x) / w``, ``dw = ww log(w' / w)``, ...,
``da = wa * radians(a' - a)``); only the choice of target changes, so :meth:`apply_deltas` is
detectron2's. Predicted boxes are brought to the canonical form (``w >= h``, angle in
``[-90, 90)``) by the output layers, not here.

Shapes: ``R`` boxes, ``K`` classes; boxes ``(R, 5)``, deltas ``(R, 5)`` or ``(R, K * 5)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from detectron2.modeling.box_regression import _DEFAULT_SCALE_CLAMP, Box2BoxTransformRotated

from emdet.modeling._rotated import wrap_angle

__all__ = ["PeriodicBox2BoxTransformRotated", "rotated_reg_weights"]

PERIODS = (90.0, 180.0)


def rotated_reg_weights(weights: Sequence[float], key: str) -> tuple[float, ...]:
    """Five box-regression weights from a config value; four get an angle weight of 1.

    detectron2's default ``BBOX_REG_WEIGHTS`` have four values (axis-aligned boxes).
    """
    weights = tuple(float(w) for w in weights)
    if len(weights) == 4:
        return (*weights, 1.0)
    if len(weights) != 5:
        raise ValueError(
            f"{key} must have 5 values (wx, wy, ww, wh, wa) for rotated boxes, got {weights}"
        )
    return weights


class PeriodicBox2BoxTransformRotated:
    """Box2BoxTransformRotated regressing towards the target's equivalent closest in angle.

    Parameters
    ----------
    weights : 5 floats
        ``(wx, wy, ww, wh, wa)`` as in detectron2 (``wa`` multiplies the angle in radians).
    period : {90, 180}
        See the module docstring.
    scale_clamp : float
        Largest ``dw``, ``dh`` applied (detectron2's default: ``log(1000 / 16)``).
    """

    def __init__(
        self,
        weights: Sequence[float],
        period: float = 90.0,
        scale_clamp: float = _DEFAULT_SCALE_CLAMP,
    ):
        if float(period) not in PERIODS:
            raise ValueError(
                f"MODEL.ROTATED.ANGLE_PERIOD must be 90 or 180 (degrees), got {period}"
            )
        self.weights = tuple(float(w) for w in weights)
        self.period = float(period)
        self.scale_clamp = scale_clamp
        self._base = Box2BoxTransformRotated(self.weights, scale_clamp=scale_clamp)

    def equivalent_target(self, target_boxes: torch.Tensor, ref_angles: torch.Tensor) -> torch.Tensor:
        """``(R, 5)`` targets rewritten as the equivalent box closest in angle to ``(R,)`` angles."""
        cx, cy, w, h, a = target_boxes.unbind(-1)
        da = wrap_angle(a - ref_angles, 180.0)  # [-90, 90)
        if self.period == 90.0:
            swap = (da >= 45.0) | (da < -45.0)
            da = torch.where(swap, da - 90.0 * torch.sign(da), da)
            w, h = torch.where(swap, h, w), torch.where(swap, w, h)
        return torch.stack([cx, cy, w, h, ref_angles + da], dim=-1)

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """``(R, 5)`` deltas taking ``src_boxes`` to (an equivalent of) ``target_boxes``."""
        assert isinstance(src_boxes, torch.Tensor), type(src_boxes)
        target = self.equivalent_target(target_boxes, src_boxes[:, 4])
        return self._base.get_deltas(src_boxes, target)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(R, K * 5)`` boxes: ``deltas`` applied to ``(R, 5)`` ``boxes`` (detectron2's)."""
        return self._base.apply_deltas(deltas, boxes)

    @property
    def max_angle_delta(self) -> float:
        """Largest ``|da|`` of :meth:`get_deltas`, in the units of the deltas (radians * wa)."""
        return self.weights[4] * math.radians(self.period / 2)
