"""detectron2's own layers and structures run on emdet.ops (or agree with compiled detectron2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emdet
from emdet import ops

needs_stand_in = pytest.mark.skipif(
    emdet.has_compiled_ops(), reason="official detectron2 with compiled ops in use"
)


def _boxes(rng: np.random.Generator, n: int, field: float = 80.0) -> torch.Tensor:
    length = rng.uniform(5, 40, n)
    return torch.tensor(
        np.stack(
            [
                rng.uniform(0, field, n),
                rng.uniform(0, field, n),
                length,
                length / rng.uniform(1, 6, n),
                rng.uniform(-180, 180, n),
            ],
            1,
        ),
        dtype=torch.float32,
    )


def test_rotated_boxes_pairwise_iou():
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    rng = np.random.default_rng(0)
    b1, b2 = _boxes(rng, 60), _boxes(rng, 45)
    expected = ops.box_iou_rotated(b1, b2)
    torch.testing.assert_close(
        pairwise_iou_rotated(RotatedBoxes(b1), RotatedBoxes(b2)), expected, rtol=0, atol=1e-5
    )
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated as layer_iou

    torch.testing.assert_close(layer_iou(b1, b2), expected, rtol=0, atol=1e-5)


def test_batched_nms_rotated_is_per_class_nms():
    from detectron2.layers import batched_nms_rotated, nms_rotated

    rng = np.random.default_rng(1)
    boxes = _boxes(rng, 300, field=60.0)
    scores = torch.tensor(rng.random(300), dtype=torch.float32)
    classes = torch.tensor(rng.integers(0, 3, 300))
    keep = batched_nms_rotated(boxes, scores, classes, 0.5)
    kept = []
    for c in range(3):
        idx = (classes == c).nonzero()[:, 0]
        kept.append(idx[ops.nms_rotated(boxes[idx], scores[idx], 0.5)])
    kept = torch.cat(kept)
    expected = kept[torch.sort(scores[kept], descending=True, stable=True).indices]
    assert keep.dtype == torch.int64
    assert keep.tolist() == expected.tolist()
    assert nms_rotated(boxes, scores, 0.5).tolist() == ops.nms_rotated(boxes, scores, 0.5).tolist()
    assert (
        torch.ops.detectron2.nms_rotated(boxes, scores, 0.5).tolist()
        == nms_rotated(boxes, scores, 0.5).tolist()
    )
    empty = batched_nms_rotated(boxes[:0], scores[:0], classes[:0], 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_rotated_layer_forward_and_backward(sampling_ratio):
    from detectron2.layers import ROIAlignRotated

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 24, 20, generator=gen, requires_grad=True)
    n = 30
    rois = torch.cat(
        [
            torch.randint(0, 2, (n, 1), generator=gen).float(),
            torch.rand(n, 2, generator=gen) * 90,
            torch.rand(n, 2, generator=gen) * 60,
            torch.rand(n, 1, generator=gen) * 360 - 180,
        ],
        1,
    )
    layer = ROIAlignRotated((7, 5), spatial_scale=0.25, sampling_ratio=sampling_ratio)
    out = layer(x, rois)
    grad = torch.randn(out.shape, generator=gen)
    (got_grad,) = torch.autograd.grad(out, x, grad)

    x2 = x.detach().clone().requires_grad_(True)
    expected = ops.roi_align_rotated(x2, rois, (7, 5), 0.25, sampling_ratio)
    (expected_grad,) = torch.autograd.grad(expected, x2, grad)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_roi_heads_pooler_runs_on_rotated_boxes():
    from detectron2.modeling.poolers import ROIPooler
    from detectron2.structures import RotatedBoxes

    pooler = ROIPooler(
        (7, 7), scales=(1 / 4, 1 / 8), sampling_ratio=0, pooler_type="ROIAlignRotated"
    )
    features = [torch.randn(2, 4, 32, 32), torch.randn(2, 4, 16, 16)]
    boxes = [RotatedBoxes(_boxes(np.random.default_rng(s), 5, 120.0)) for s in (3, 4)]
    assert pooler(features, boxes).shape == (10, 4, 7, 7)


@needs_stand_in
def test_deform_conv_ops_raise_clear_error():
    from detectron2 import _C

    for name in ("deform_conv_forward", "modulated_deform_conv_forward"):
        with pytest.raises(NotImplementedError, match="compiled extension"):
            getattr(_C, name)()


@needs_stand_in
def test_deform_conv_layers_on_cpu():
    """On CPU detectron2 itself runs DeformConv through torchvision, and refuses the rest."""
    from detectron2.layers import DeformConv, ModulatedDeformConv

    x = torch.randn(1, 4, 8, 8)
    conv = DeformConv(4, 6, kernel_size=3, padding=1)
    offset = torch.zeros(1, 18, 8, 8)
    plain = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    torch.testing.assert_close(conv(x, offset), plain, rtol=1e-4, atol=1e-4)
    with pytest.raises(NotImplementedError):
        DeformConv(4, 6, kernel_size=3, padding=1, deformable_groups=2)(x, torch.zeros(1, 36, 8, 8))
    with pytest.raises(NotImplementedError):
        ModulatedDeformConv(4, 6, kernel_size=3, padding=1)(
            x, torch.zeros(1, 18, 8, 8), torch.ones(1, 9, 8, 8)
        )


@needs_stand_in
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deform_conv_on_cuda_raises_clear_error():
    from detectron2.layers import DeformConv

    conv = DeformConv(4, 6, kernel_size=3, padding=1).cuda()
    with pytest.raises(NotImplementedError, match="compiled extension"):
        conv(torch.randn(1, 4, 8, 8).cuda(), torch.zeros(1, 18, 8, 8).cuda())
