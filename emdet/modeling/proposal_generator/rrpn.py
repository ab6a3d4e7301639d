"""``EMRRPN``: detectron2's rotated RPN with the periodic angle regression of emdet.

detectron2's RRPN regresses ``da`` wrapped to ``[-180, 180)``: a rod at 85 degrees matched to an
anchor at -90 degrees (the same orientation) gets ``da = 175`` degrees. Here the target is first
rewritten as its equivalent closest in angle to the anchor
(:class:`~emdet.modeling.box_regression.PeriodicBox2BoxTransformRotated`). Everything else,
including rotated-IoU anchor matching and rotated NMS of proposals, is detectron2's ``RRPN``.

Use with ``MODEL.ANCHOR_GENERATOR.NAME: RotatedAnchorGenerator`` and its ``ANGLES``.

Shapes: ``N`` images, ``A`` anchors per location, ``Hi x Wi`` feature map ``i``; anchors
``(sum Hi*Wi*A, 5)``; predicted deltas ``(N, Hi*Wi*A, 5)`` per level; proposals
``RotatedBoxes`` per image.
"""

from __future__ import annotations

from detectron2.modeling.proposal_generator.build import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator.rrpn import RRPN

from emdet.modeling.box_regression import PeriodicBox2BoxTransformRotated, rotated_reg_weights

__all__ = ["EMRRPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class EMRRPN(RRPN):
    """RRPN regressing angles within ``MODEL.ROTATED.ANGLE_PERIOD``; see the module docstring."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["box2box_transform"] = PeriodicBox2BoxTransformRotated(
            rotated_reg_weights(cfg.MODEL.RPN.BBOX_REG_WEIGHTS, "MODEL.RPN.BBOX_REG_WEIGHTS"),
            period=cfg.MODEL.ROTATED.ANGLE_PERIOD,
        )
        return ret
