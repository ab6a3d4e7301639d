"""roi_align_rotated: torchvision at angle 0, a loop reference, rotation identities, gradients."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import shapely
import torch
import torchvision

from emdet.ops import roi_align_rotated, roi_align_rotated_backward, roi_align_rotated_forward

ra_module = importlib.import_module("emdet.ops.roi_align_rotated")


def _random_rois(
    gen: torch.Generator,
    n: int,
    batch: int,
    h: int,
    w: int,
    *,
    scale: float = 1.0,
    angle: bool = True,
) -> torch.Tensor:
    """Rois in image pixels (feature size / scale), some partly or fully off the map."""
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    cx = (u(n) * (w + 8) - 4) / scale
    cy = (u(n) * (h + 8) - 4) / scale
    rw = u(n) * (w * 0.8) / scale
    rh = u(n) * (h * 0.8) / scale
    a = (u(n) * 720 - 360) if angle else torch.zeros(n, dtype=torch.float64)
    b = torch.randint(0, batch, (n,), generator=gen).double()
    return torch.stack([b, cx, cy, rw, rh, a], 1)


def _loop_reference(
    x: np.ndarray, rois: np.ndarray, ph: int, pw: int, scale: float, sampling_ratio: int
) -> np.ndarray:
    """detectron2's ROIAlignRotated forward, written out with loops (float64)."""
    _, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph, pw))

    def bilinear(img, y, xx):
        if y < -1.0 or y > h or xx < -1.0 or xx > w:
            return np.zeros(c)
        y, xx = max(y, 0.0), max(xx, 0.0)
        y0, x0 = int(y), int(xx)
        if y0 >= h - 1:
            y0 = y1 = h - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= w - 1:
            x0 = x1 = w - 1
            xx = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, xx - x0
        hy, hx = 1 - ly, 1 - lx
        return (
            hy * hx * img[:, y0, x0]
            + hy * lx * img[:, y0, x1]
            + ly * hx * img[:, y1, x0]
            + ly * lx * img[:, y1, x1]
        )

    for r, (b, cx, cy, rw, rh, a) in enumerate(rois):
        cx, cy, rw, rh = cx * scale - 0.5, cy * scale - 0.5, rw * scale, rh * scale
        t = a * math.pi / 180
        cos, sin = math.cos(t), math.sin(t)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        count = max(gh * gw, 1)
        for i in range(ph):
            for j in range(pw):
                acc = np.zeros(c)
                for iy in range(gh):
                    yy = -rh / 2 + i * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        xx = -rw / 2 + j * bw + (ix + 0.5) * bw / gw
                        y = yy * cos - xx * sin + cy
                        xr = yy * sin + xx * cos + cx
                        acc += bilinear(x[int(b)], y, xr)
                out[r, :, i, j] = acc / count
    return out


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_angle_zero_equals_torchvision_aligned(sampling_ratio, scale, dtype, device):
    gen = torch.Generator().manual_seed(sampling_ratio + int(4 * scale))
    x = torch.randn(3, 4, 20, 25, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 60, 3, 20, 25, scale=scale, angle=False)
    boxes = torch.cat(
        [rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1
    )
    x, rois, boxes = x.to(device, dtype), rois.to(device, dtype), boxes.to(device, dtype)
    got = roi_align_rotated(x, rois, (5, 4), scale, sampling_ratio)
    expected = torchvision.ops.roi_align(x, boxes, (5, 4), scale, sampling_ratio, aligned=True)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_loop_reference_at_any_angle(sampling_ratio):
    gen = torch.Generator().manual_seed(20 + sampling_ratio)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 12, 2, 9, 11, scale=0.5)
    got = roi_align_rotated(x, rois, (3, 2), 0.5, sampling_ratio)
    expected = _loop_reference(x.numpy(), rois.numpy(), 3, 2, 0.5, sampling_ratio)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_quarter_turn_of_roi_is_quarter_turn_of_map(sampling_ratio):
    """Known answer, derived from the sampling formula.

    With angle 90 a sample at roi offsets (yy, xx) reads the map at (cy' - xx, cx' + yy). On
    ``G = rot90(F)`` (``G[i, j] = F[j, W - 1 - i]``) the axis-aligned roi
    ``(cy, W - cx, w, h, 0)`` reads the same points in reverse bin order, so
    ``out90[..., i, j] == out0_on_G[..., PH - 1 - i, PW - 1 - j]``.
    """
    gen = torch.Generator().manual_seed(30 + sampling_ratio)
    f = torch.randn(2, 3, 14, 17, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 40, 2, 14, 17)
    rois[:, 5] = 90
    turned = torch.rot90(f, 1, dims=(-2, -1))
    w = f.shape[-1]
    rois_g = torch.stack(
        [
            rois[:, 0],
            rois[:, 2],
            w - rois[:, 1],
            rois[:, 3],
            rois[:, 4],
            torch.zeros_like(rois[:, 0]),
        ],
        1,
    )
    out90 = roi_align_rotated(f, rois, (4, 3), 1.0, sampling_ratio)
    out0 = roi_align_rotated(turned, rois_g, (4, 3), 1.0, sampling_ratio)
    torch.testing.assert_close(out90, out0.flip(-2, -1), rtol=0, atol=1e-12)


def test_full_turns_and_negative_angles():
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(1, 2, 16, 16, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 30, 1, 16, 16)
    turned = rois.clone()
    turned[:, 5] += 360 * torch.tensor([1.0, -1.0, 2.0]).repeat(10)
    torch.testing.assert_close(
        roi_align_rotated(x, rois, 4, 1.0, 0),
        roi_align_rotated(x, turned, 4, 1.0, 0),
        rtol=0,
        atol=1e-9,
    )
    # Half a turn reverses the bin order on both axes.
    half = rois.clone()
    half[:, 5] += 180
    torch.testing.assert_close(
        roi_align_rotated(x, rois, 4, 1.0, 2),
        roi_align_rotated(x, half, 4, 1.0, 2).flip(-2, -1),
        rtol=0,
        atol=1e-12,
    )


def test_box_convention_matches_box_iou():
    """A roi over a rotated rod drawn with the IoU op's vertex convention reads ~1 inside."""
    h = w = 64
    rod = np.array([[32.0, 30.0, 44.0, 12.0, 30.0]])
    cx, cy, rw, rh, a = rod[0]
    t = np.deg2rad(a)
    corners = [
        (s * yy + c * xx + cx, c * yy - s * xx + cy)
        for c, s in [(np.cos(t), np.sin(t))]
        for xx, yy in [(-rw / 2, rh / 2), (-rw / 2, -rh / 2), (rw / 2, -rh / 2), (rw / 2, rh / 2)]
    ]
    polygon = shapely.Polygon(corners)
    jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)  # pixel centres
    mask = shapely.contains_xy(polygon, jj, ii).astype(np.float64)
    x = torch.tensor(mask)[None, None]
    inside = roi_align_rotated(x, torch.tensor([[0.0, *rod[0]]]), (5, 9), 1.0, 2)[0, 0]
    mirrored = roi_align_rotated(x, torch.tensor([[0.0, cx, cy, rw, rh, -a]]), (5, 9), 1.0, 2)[0, 0]
    assert inside[1:-1, 1:-1].min() > 0.95
    assert mirrored[1:-1, 1:-1].mean() < 0.7


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradcheck(sampling_ratio):
    gen = torch.Generator().manual_seed(50 + sampling_ratio)
    x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(gen, 5, 2, 6, 7)
    assert torch.autograd.gradcheck(
        lambda t: roi_align_rotated(t, rois, (3, 2), 1.0, sampling_ratio), (x,), fast_mode=True
    )


def test_gradcheck_full_jacobian_tiny():
    gen = torch.Generator().manual_seed(55)
    x = torch.randn(2, 1, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(gen, 3, 2, 4, 5)
    rois[0, 1:3] = torch.tensor([4.9, 3.9])  # samples on the clamped border band
    assert torch.autograd.gradcheck(lambda t: roi_align_rotated(t, rois, 2, 1.0, 0), (x,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_function_equals_autograd(dtype, device):
    gen = torch.Generator().manual_seed(60)
    x = torch.randn(3, 5, 12, 10, generator=gen, dtype=torch.float64).to(device, dtype)
    x.requires_grad_(True)
    rois = _random_rois(gen, 25, 3, 12, 10, scale=0.5).to(device, dtype)
    out = roi_align_rotated(x, rois, (3, 4), 0.5, 0)
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    (expected,) = torch.autograd.grad(out, x, grad)
    got = roi_align_rotated_backward(grad, rois, 0.5, 3, 4, 3, 5, 12, 10, 0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    fwd = roi_align_rotated_forward(x, rois, 0.5, 3, 4, 0)
    assert not fwd.requires_grad
    torch.testing.assert_close(fwd, out.detach(), rtol=0, atol=0)


def test_backward_accepts_non_contiguous_grad():
    gen = torch.Generator().manual_seed(61)
    rois = _random_rois(gen, 4, 1, 8, 8)
    grad = torch.randn(4, 2, 2, 3, generator=gen, dtype=torch.float64).permute(0, 3, 1, 2)
    got = roi_align_rotated_backward(grad, rois, 1.0, 2, 2, 1, 3, 8, 8, 0)
    expected = roi_align_rotated_backward(grad.contiguous(), rois, 1.0, 2, 2, 1, 3, 8, 8, 0)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_zero_size_and_empty_rois(device):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=device, requires_grad=True)
    rois = torch.tensor(
        [[0.0, 4, 4, 0, 3, 10], [1, 4, 4, 0, 0, 0], [1, 4, 4, 3, 3, 45]],
        dtype=torch.float64,
        device=device,
    )
    out = roi_align_rotated(x, rois, 2, 1.0, 0)
    assert torch.all(out[:2] == 0) and out[2].abs().sum() > 0
    empty = roi_align_rotated(x, rois[:0], (2, 3), 1.0, 0)
    assert empty.shape == (0, 3, 2, 3)
    empty.sum().backward()
    assert torch.all(x.grad == 0)
    grad = roi_align_rotated_backward(empty.detach(), rois[:0], 1.0, 2, 3, 2, 3, 8, 8, 0)
    assert grad.shape == (2, 3, 8, 8) and torch.all(grad == 0)


def test_rois_far_outside_give_zeros():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    rois = torch.tensor([[0.0, -50, -50, 4, 4, 30], [0, 100, 4, 6, 6, 0]], dtype=torch.float64)
    assert torch.all(roi_align_rotated(x, rois, 3, 1.0, 0) == 0)


def test_invalid_rois_raise():
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="non-negative width and height"):
        roi_align_rotated(x, torch.tensor([[0.0, 2, 2, -1, 2, 0]]), 2, 1.0, 0)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_rotated(x, torch.tensor([[2.0, 2, 2, 1, 2, 0]]), 2, 1.0, 0)
    with pytest.raises(ValueError, match=r"\(R, 6\)"):
        roi_align_rotated(x, torch.zeros(3, 5), 2, 1.0, 0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        roi_align_rotated(torch.zeros(1, 4, 4), torch.zeros(1, 6), 2, 1.0, 0)


def test_chunking_does_not_change_results(monkeypatch):
    gen = torch.Generator().manual_seed(70)
    x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(gen, 30, 2, 16, 16)
    out = roi_align_rotated(x, rois, 3, 1.0, 0)
    (grad,) = torch.autograd.grad(out.sum(), x)
    monkeypatch.setattr(ra_module, "SAMPLE_CHUNK", 50)
    out_small = roi_align_rotated(x, rois, 3, 1.0, 0)
    (grad_small,) = torch.autograd.grad(out_small.sum(), x)
    torch.testing.assert_close(out_small, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_small, grad, rtol=0, atol=1e-12)


def test_channels_last_input_and_float32_rois():
    gen = torch.Generator().manual_seed(80)
    x = torch.randn(1, 4, 10, 12, generator=gen, dtype=torch.float64)
    rois = _random_rois(gen, 8, 1, 10, 12).float()
    expected = roi_align_rotated(x, rois.double(), 2, 1.0, 2)
    got = roi_align_rotated(x.to(memory_format=torch.channels_last), rois, 2, 1.0, 2)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    gen = torch.Generator().manual_seed(90)
    x = torch.randn(2, 16, 32, 32, generator=gen)
    rois = _random_rois(gen, 100, 2, 32, 32, scale=0.25).float()
    xc = x.cuda().requires_grad_(True)
    out = roi_align_rotated(xc, rois.cuda(), 7, 0.25, 0)
    out.square().sum().backward()
    xr = x.clone().requires_grad_(True)
    ref = roi_align_rotated(xr, rois, 7, 0.25, 0)
    ref.square().sum().backward()
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xc.grad.cpu(), xr.grad, rtol=1e-4, atol=1e-4)
