"""``EMRROIHeads``: detectron2's ``RROIHeads`` for rotated boxes, with periodic angle regression.

What differs from :class:`detectron2.modeling.roi_heads.RROIHeads` (which already pools with
``ROIAlignRotated``, regresses ``(cx, cy, w, h, angle)`` and applies rotated NMS at test time):

* the box predictor is :class:`~emdet.modeling.roi_heads.rotated_fast_rcnn.EMRotatedFastRCNNOutputLayers`
  (angle deltas within ``MODEL.ROTATED.ANGLE_PERIOD``, canonical output boxes);
* proposals are matched to ground truth either by rotated IoU (rotated proposals, ``EMRRPN``)
  or by the IoU of the enclosing axis-aligned boxes (``MODEL.ROTATED.MATCHING: enclosing``; the
  default ``auto`` picks it for the ``HRPN`` proposal generator, whose angle-0 proposals have a
  rotated IoU far below 0.5 with diagonal rods).

Shapes (detectron2's glossary):

    N: images in the batch; R: proposals over the batch; Ri: proposals in image i;
    G: ground-truth boxes in image i; K: foreground classes.
    proposal_boxes: RotatedBoxes (Ri, 5); gt_boxes: RotatedBoxes (G, 5);
    match quality matrix: (G, Ri); pooled features: (R, C, P, P) with P = POOLER_RESOLUTION;
    class logits: (R, K + 1); box deltas (dx, dy, dw, dh, da): (R, K * 5).
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, RROIHeads
from detectron2.structures import Boxes, RotatedBoxes, pairwise_iou, pairwise_iou_rotated
from detectron2.utils.events import get_event_storage

from emdet.modeling._rotated import enclosing_boxes
from emdet.modeling.roi_heads.rotated_fast_rcnn import EMRotatedFastRCNNOutputLayers

__all__ = ["MATCHINGS", "EMRROIHeads"]

MATCHINGS = ("rotated", "enclosing")


def _resolve_matching(matching: str, proposal_generator: str) -> str:
    if matching == "auto":
        return "enclosing" if proposal_generator == "HRPN" else "rotated"
    if matching not in MATCHINGS:
        raise ValueError(
            f"MODEL.ROTATED.MATCHING must be 'auto', 'rotated' or 'enclosing', got {matching!r}"
        )
    return matching


@ROI_HEADS_REGISTRY.register()
class EMRROIHeads(RROIHeads):
    """Rotated Fast R-CNN ROI heads; see the module docstring."""

    @configurable
    def __init__(self, *, matching: str = "rotated", **kwargs):
        """
        Parameters
        ----------
        matching : {"rotated", "enclosing"}
            IoU used to match proposals to ground truth.
        **kwargs
            Those of :class:`detectron2.modeling.roi_heads.RROIHeads`.
        """
        super().__init__(**kwargs)
        self.matching = _resolve_matching(matching, "")

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["matching"] = _resolve_matching(
            cfg.MODEL.ROTATED.MATCHING, cfg.MODEL.PROPOSAL_GENERATOR.NAME
        )
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = EMRotatedFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def match_quality(self, gt_boxes: RotatedBoxes, proposal_boxes: RotatedBoxes) -> torch.Tensor:
        """``(G, Ri)`` IoU of ground truth and proposals, by ``self.matching``."""
        if self.matching == "enclosing":
            return pairwise_iou(
                Boxes(enclosing_boxes(gt_boxes.tensor)),
                Boxes(enclosing_boxes(proposal_boxes.tensor)),
            )
        return pairwise_iou_rotated(gt_boxes, proposal_boxes)

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals, targets):
        """detectron2's ``RROIHeads.label_and_sample_proposals`` with :meth:`match_quality`."""
        if self.proposal_append_gt:
            proposals = add_ground_truth_to_proposals(targets, proposals)
        proposals_with_gt = []
        num_fg_samples, num_bg_samples = [], []
        for proposals_per_image, targets_per_image in zip(proposals, targets, strict=True):
            has_gt = len(targets_per_image) > 0
            match_quality_matrix = self.match_quality(
                targets_per_image.gt_boxes, proposals_per_image.proposal_boxes
            )
            matched_idxs, matched_labels = self.proposal_matcher(match_quality_matrix)
            sampled_idxs, gt_classes = self._sample_proposals(
                matched_idxs, matched_labels, targets_per_image.gt_classes
            )
            proposals_per_image = proposals_per_image[sampled_idxs]
            proposals_per_image.gt_classes = gt_classes
            if has_gt:
                sampled_targets = matched_idxs[sampled_idxs]
                proposals_per_image.gt_boxes = targets_per_image.gt_boxes[sampled_targets]
            num_bg_samples.append((gt_classes == self.num_classes).sum().item())
            num_fg_samples.append(gt_classes.numel() - num_bg_samples[-1])
            proposals_with_gt.append(proposals_per_image)
        storage = get_event_storage()
        storage.put_scalar("roi_head/num_fg_samples", np.mean(num_fg_samples))
        storage.put_scalar("roi_head/num_bg_samples", np.mean(num_bg_samples))
        return proposals_with_gt
