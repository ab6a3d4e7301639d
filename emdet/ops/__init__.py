"""Rotated-box ops that detectron2 implements in C++, here in vectorised PyTorch (CPU and CUDA)."""

from emdet.ops.box_iou_rotated import box_iou_rotated, pairwise_iou_rotated_sparse
from emdet.ops.nms_rotated import nms_rotated
from emdet.ops.roi_align_rotated import (
    roi_align_rotated,
    roi_align_rotated_backward,
    roi_align_rotated_forward,
)

__all__ = [
    "box_iou_rotated",
    "nms_rotated",
    "pairwise_iou_rotated_sparse",
    "roi_align_rotated",
    "roi_align_rotated_backward",
    "roi_align_rotated_forward",
]
