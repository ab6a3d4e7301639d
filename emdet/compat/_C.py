"""Stand-in for ``detectron2._C`` when detectron2 was installed without its C++ extension.

Every function has the signature of the compiled one it replaces, so detectron2's own
``RotatedBoxes.pairwise_iou``, ``batched_nms_rotated`` and ``ROIAlignRotated`` run unchanged.
"""
from __future__ import annotations

import torch

EMDET_PURE_PYTORCH = True
__file__ = __file__  # collect_env reads it


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    from emdet import ops

    return ops.box_iou_rotated(boxes1, boxes2)


def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    from emdet import ops

    return ops.nms_rotated(boxes, scores, iou_threshold)


def roi_align_rotated_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    from emdet import ops

    return ops.roi_align_rotated_forward(
        input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio
    )


def roi_align_rotated_backward(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
    sampling_ratio,
):
    from emdet import ops

    return ops.roi_align_rotated_backward(
        grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
        width, sampling_ratio,
    )


def _deform_unavailable(*args, **kwargs):
    raise NotImplementedError(
        "Deformable convolution on CUDA (and modulated deformable convolution anywhere) needs "
        "detectron2's compiled extension, which this installation does not have: emdet runs "
        "detectron2 0.6 without C++ ops (plain DeformConv on CPU works through torchvision). "
        "Use a config without MODEL.RESNETS.DEFORM_ON_PER_STAGE, or install detectron2 built "
        "from source."
    )


deform_conv_forward = deform_conv_backward_input = deform_conv_backward_filter = _deform_unavailable
modulated_deform_conv_forward = modulated_deform_conv_backward = _deform_unavailable


def get_compiler_version() -> str:
    return "none (emdet.ops, pure PyTorch)"


def get_cuda_version() -> str:
    return "none (emdet.ops, pure PyTorch)"


_LIBRARY = None


def register_torch_ops() -> None:  # called below, when this module is first imported
    """Define ``torch.ops.detectron2.nms_rotated`` unless a compiled detectron2 already did."""
    global _LIBRARY
    if _LIBRARY is not None or hasattr(torch.ops.detectron2, "nms_rotated"):
        return
    lib = torch.library.Library("detectron2", "DEF")
    lib.define("nms_rotated(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    _LIBRARY = lib


register_torch_ops()
