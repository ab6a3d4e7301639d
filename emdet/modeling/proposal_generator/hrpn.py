"""``HRPN``: a horizontal (axis-aligned) RPN whose proposals feed a rotated ROI head.

The RPN itself is detectron2's ``RPN``: axis-aligned anchors, trained on the axis-aligned boxes
enclosing the rotated ground truth. Its proposals leave as :class:`RotatedBoxes` with angle 0,
so that :class:`~emdet.modeling.roi_heads.EMRROIHeads` pools them with ``ROIAlignRotated`` and
regresses the rotated box (R2CNN-style). The ROI head then matches proposals to ground truth by
the IoU of enclosing boxes (``MODEL.ROTATED.MATCHING: auto``), since a horizontal box around a
diagonal rod has a rotated IoU with it far below 0.5.

Shapes: ``N`` images, ``R`` ground-truth boxes in an image, ``P`` proposals in an image;
``gt_boxes`` ``RotatedBoxes (R, 5)`` in, enclosing ``Boxes (R, 4)`` to the anchor matcher;
``proposal_boxes`` ``RotatedBoxes (P, 5)`` with angle 0 out.
"""

from __future__ import annotations

from detectron2.modeling.proposal_generator.build import PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.proposal_generator.rpn import RPN
from detectron2.structures import Boxes, Instances, RotatedBoxes

from emdet.modeling._rotated import enclosing_boxes, horizontal_to_rotated

__all__ = ["HRPN"]


def _axis_aligned_targets(gt_instances: list[Instances]) -> list[Instances]:
    out = []
    for inst in gt_instances:
        boxes = inst.gt_boxes
        if isinstance(boxes, RotatedBoxes):
            boxes = Boxes(enclosing_boxes(boxes.tensor))
        out.append(Instances(inst.image_size, gt_boxes=boxes))
    return out


@PROPOSAL_GENERATOR_REGISTRY.register()
class HRPN(RPN):
    """detectron2's RPN on enclosing boxes, emitting angle-0 rotated proposals."""

    def label_and_sample_anchors(self, anchors, gt_instances):
        return super().label_and_sample_anchors(anchors, _axis_aligned_targets(gt_instances))

    def predict_proposals(self, anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes):
        proposals = super().predict_proposals(
            anchors, pred_objectness_logits, pred_anchor_deltas, image_sizes
        )
        for p in proposals:
            p.proposal_boxes = RotatedBoxes(horizontal_to_rotated(p.proposal_boxes.tensor))
        return proposals
