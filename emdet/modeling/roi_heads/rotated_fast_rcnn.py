"""``EMRotatedFastRCNNOutputLayers``: detectron2's rotated box predictor with periodic angles.

Two changes to :class:`detectron2.modeling.roi_heads.rotated_fast_rcnn.RotatedFastRCNNOutputLayers`:

* box deltas are computed by
  :class:`~emdet.modeling.box_regression.PeriodicBox2BoxTransformRotated` (angle regressed within
  ``MODEL.ROTATED.ANGLE_PERIOD``);
* predicted boxes leave in the canonical form of emdet's annotations (``w >= h``, angle in
  ``[-90, 90)``; :func:`emdet.data.geometry.normalize_rbox`), after detectron2's per-class
  rotated NMS.

Shapes: ``R`` proposals (all images), ``K`` classes; class logits ``(R, K + 1)``, box deltas
``(R, K * 5)`` (``(R, 5)`` class-agnostic); per image ``pred_boxes`` ``RotatedBoxes (D, 5)``,
``scores`` ``(D,)``, ``pred_classes`` ``(D,)``.
"""

from __future__ import annotations

from detectron2.modeling.roi_heads.rotated_fast_rcnn import RotatedFastRCNNOutputLayers
from detectron2.structures import RotatedBoxes

from emdet.modeling._rotated import normalize_rotated
from emdet.modeling.box_regression import PeriodicBox2BoxTransformRotated, rotated_reg_weights

__all__ = ["EMRotatedFastRCNNOutputLayers"]


class EMRotatedFastRCNNOutputLayers(RotatedFastRCNNOutputLayers):
    """Rotated Fast R-CNN outputs with periodic angle regression; see the module docstring."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        args = super().from_config(cfg, input_shape)
        args["box2box_transform"] = PeriodicBox2BoxTransformRotated(
            rotated_reg_weights(
                cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS, "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS"
            ),
            period=cfg.MODEL.ROTATED.ANGLE_PERIOD,
        )
        return args

    def inference(self, predictions, proposals):
        instances, kept = super().inference(predictions, proposals)
        for inst in instances:
            inst.pred_boxes = RotatedBoxes(normalize_rotated(inst.pred_boxes.tensor))
        return instances, kept
