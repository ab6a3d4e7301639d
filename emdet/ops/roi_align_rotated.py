"""RoIAlign for rotated boxes in PyTorch (stand-in for detectron2's C++/CUDA ``ROIAlignRotated``).

Glossary of shapes
------------------
``B, C, H, W``
    Batch size, channels, height and width of the feature map ``input``.
``R``
    Number of regions of interest.
``PH, PW``
    Pooled (output) height and width.
``GH, GW``
    Sampling grid per output bin: ``sampling_ratio`` if it is positive, else
    ``ceil(roi_h / PH)`` and ``ceil(roi_w / PW)`` (adaptive, different for each roi).
``rois``
    ``(R, 6)`` float, rows ``(batch_index, cx, cy, w, h, angle_degrees)`` in input-image pixels;
    ``cx * spatial_scale - 0.5`` is the centre in feature-map pixel indices (always "aligned").
``output``
    ``(R, C, PH, PW)``, same dtype as ``input``.

How it works
------------
Sample points are placed exactly as detectron2 does: bin ``(ph, pw)``, sample ``(iy, ix)`` at
``yy = -h/2 + ph * h/PH + (iy + 0.5) * h/PH/GH`` (same for ``xx``), rotated as
``y = yy cos(a) - xx sin(a) + cy`` and ``x = yy sin(a) + xx cos(a) + cx``, and read with
detectron2's bilinear rule: 0 outside ``[-1, H] x [-1, W]``, clamped to the border inside it. The
bin value is the mean over its ``GH * GW`` samples (0 for an empty roi). The only difference from
the C++ op is that ``cos`` and ``sin`` are exact at multiples of 90 degrees
(:func:`emdet.ops.box_iou_rotated.cos_sin_deg`).

The op is linear in ``input``: ``output = S @ input``, where the sparse matrix ``S`` has one row per
output bin and 4 entries (the bilinear corners, weighted by ``1 / (GH * GW)``) per sample. ``S`` is
built for all rois at once (variable grids are flattened with ``repeat_interleave``, rois chunked
to bound memory) and applied with :func:`torch.nn.functional.embedding_bag` (``mode="sum"`` with
per-sample weights) on the channels-last feature map, which reads every feature vector
contiguously. The gradient is ``S.T @ grad``: the same entries sorted by pixel and applied with
``embedding_bag`` again. Both run on CPU and CUDA and need no atomics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from emdet.ops.box_iou_rotated import cos_sin_deg

__all__ = ["roi_align_rotated", "roi_align_rotated_backward", "roi_align_rotated_forward"]

#: Largest number of sample points handled at once (about 100 bytes each while planning).
SAMPLE_CHUNK = 1 << 21


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    ph, pw = size
    return int(ph), int(pw)


def _check(input: Tensor, rois: Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(
            f"input must be a feature map of shape (B, C, H, W); got shape {tuple(input.shape)}."
        )
    _check_rois(rois, input.device)


def _check_rois(rois: Tensor, device: torch.device) -> None:
    if rois.dim() != 2 or rois.shape[1] != 6:
        raise ValueError(
            "rois must have shape (R, 6) with rows (batch_index, cx, cy, w, h, angle_degrees); "
            f"got shape {tuple(rois.shape)}."
        )
    if rois.device != device:
        raise ValueError(f"rois are on {rois.device} but the feature map is on {device}.")


def roi_align_rotated(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
) -> Tensor:
    """Pool rotated regions of a feature map into fixed-size grids (detectron2's ROIAlignRotated).

    Differentiable with respect to ``input`` (autograd); not with respect to ``rois``.

    Parameters
    ----------
    input : Tensor, shape (B, C, H, W), floating point
        Feature maps.
    rois : Tensor, shape (R, 6), floating point, same device
        Rows ``(batch_index, cx, cy, w, h, angle_degrees)`` in input-image pixels; ``w, h >= 0``.
        Boxes follow detectron2's rotated-box convention (see :mod:`emdet.ops.box_iou_rotated`).
    output_size : int or (int, int)
        ``PH, PW``.
    spatial_scale : float, optional
        Feature-map pixels per image pixel (e.g. ``1/16``).
    sampling_ratio : int, optional
        Samples per bin along each axis; ``<= 0`` picks ``ceil(roi_size / pooled_size)`` per roi.

    Returns
    -------
    Tensor, shape (R, C, PH, PW), dtype and device of ``input``
        Pooled features; bins of a zero-size roi are 0, samples beyond one pixel outside the map
        count as 0.

    Raises
    ------
    ValueError
        If shapes are wrong, devices differ, or a roi has a negative width or height.
    """
    _check(input, rois)
    ph, pw = _pair(output_size)
    return _forward(input, rois, float(spatial_scale), ph, pw, int(sampling_ratio))


def roi_align_rotated_forward(
    input: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    sampling_ratio: int,
) -> Tensor:
    """Forward pass with the signature of detectron2's ``_C.roi_align_rotated_forward``.

    Parameters
    ----------
    input : Tensor, shape (B, C, H, W), floating point
    rois : Tensor, shape (R, 6), floating point
    spatial_scale : float
    pooled_height, pooled_width : int
    sampling_ratio : int

    Returns
    -------
    Tensor, shape (R, C, pooled_height, pooled_width), no autograd history
        As :func:`roi_align_rotated`.
    """
    _check(input, rois)
    with torch.no_grad():
        return _forward(
            input,
            rois,
            float(spatial_scale),
            int(pooled_height),
            int(pooled_width),
            int(sampling_ratio),
        )


def roi_align_rotated_backward(
    grad: Tensor,
    rois: Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
) -> Tensor:
    """Gradient w.r.t. the input, with the signature of ``_C.roi_align_rotated_backward``.

    Parameters
    ----------
    grad : Tensor, shape (R, channels, pooled_height, pooled_width), floating point
        Gradient of the loss w.r.t. the pooled output.
    rois : Tensor, shape (R, 6)
    spatial_scale : float
    pooled_height, pooled_width : int
    batch_size, channels, height, width : int
        Shape of the forward input.
    sampling_ratio : int

    Returns
    -------
    Tensor, shape (batch_size, channels, height, width), dtype and device of ``grad``
        Gradient of the loss w.r.t. the input feature map.
    """
    _check_rois(rois, grad.device)
    shape = (int(batch_size), int(channels), int(height), int(width))
    expected = (rois.shape[0], shape[1], int(pooled_height), int(pooled_width))
    if tuple(grad.shape) != expected:
        raise ValueError(f"grad must have shape {expected}; got {tuple(grad.shape)}.")
    with torch.no_grad():
        plan = _Plan(
            rois,
            grad.dtype,
            shape,
            float(spatial_scale),
            int(pooled_height),
            int(pooled_width),
            int(sampling_ratio),
        )
        return plan.apply_transpose(grad)


class _Plan:
    """Sampling plan of a set of rois: the entries of ``S`` (see module docstring), in chunks.

    Attributes
    ----------
    chunks : list of (int, int, Tensor, Tensor, Tensor)
        ``(roi_start, roi_stop, pixel, weight, offsets)``: rois ``roi_start:roi_stop`` own output
        bins ``roi_start * PH * PW`` onwards; ``pixel`` ``(E,)`` int64 indexes the flattened
        ``(B * H * W)`` map, ``weight`` ``(E,)`` has the input dtype, ``offsets`` ``(bins,)`` int64
        starts each bin's run of entries.
    """

    def __init__(
        self,
        rois: Tensor,
        dtype: torch.dtype,
        shape: tuple[int, int, int, int],
        spatial_scale: float,
        ph: int,
        pw: int,
        sampling_ratio: int,
    ) -> None:
        b, _, h, w = shape
        if ph <= 0 or pw <= 0:
            raise ValueError(f"output_size must be positive; got ({ph}, {pw}).")
        self.shape, self.ph, self.pw, self.num_rois = shape, ph, pw, rois.shape[0]
        self.chunks = []
        if rois.shape[0] == 0 or b * h * w == 0:
            return
        rois = rois.detach().to(dtype)
        batch = rois[:, 0].long()  # truncation, as the C++ cast
        cx = rois[:, 1] * spatial_scale - 0.5
        cy = rois[:, 2] * spatial_scale - 0.5
        roi_w = rois[:, 3] * spatial_scale
        roi_h = rois[:, 4] * spatial_scale
        bad = ~((roi_w >= 0) & (roi_h >= 0))
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"ROIAlignRotated needs rois with non-negative width and height; roi {k} is "
                f"{rois[k].tolist()} (batch_index, cx, cy, w, h, angle_degrees)."
            )
        if bool(((batch < 0) | (batch >= b)).any()):
            raise ValueError(
                f"roi batch indices must lie in [0, {b}) for a batch of {b} feature maps; got "
                f"{batch.unique().tolist()}."
            )
        cos, sin = cos_sin_deg(rois[:, 5])
        if sampling_ratio > 0:
            grid_h = torch.full_like(batch, sampling_ratio)
            grid_w = grid_h
        else:
            grid_h = torch.ceil(roi_h / ph).long()
            grid_w = torch.ceil(roi_w / pw).long()
        per_roi = grid_h * grid_w * (ph * pw)
        # Split the rois into runs of at most SAMPLE_CHUNK samples (a larger roi runs alone).
        ends = per_roi.cumsum(0)
        cuts = torch.arange(1, int(ends[-1]) // SAMPLE_CHUNK + 1, device=ends.device) * SAMPLE_CHUNK
        bounds = sorted(set([0, rois.shape[0]] + torch.searchsorted(ends, cuts).tolist()))
        params = (batch, cx, cy, roi_w, roi_h, cos, sin, grid_h, grid_w)
        for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
            if r1 > r0:
                sub = [t[r0:r1] for t in params]
                self.chunks.append((r0, r1, *_entries(*sub, ph=ph, pw=pw, h=h, w=w)))

    def apply(self, input: Tensor) -> Tensor:
        """``S @ input``: ``(B, C, H, W)`` -> ``(R, C, PH, PW)``."""
        b, c, h, w = self.shape
        per_roi = self.ph * self.pw
        out = input.new_zeros((self.num_rois * per_roi, c))
        if self.chunks and c:
            table = input.permute(0, 2, 3, 1).contiguous().view(b * h * w, c)
            for r0, r1, pixel, weight, offsets in self.chunks:
                out[r0 * per_roi : r1 * per_roi] = F.embedding_bag(
                    pixel, table, offsets, mode="sum", per_sample_weights=weight
                )
        return out.view(-1, self.ph, self.pw, c).permute(0, 3, 1, 2).contiguous()

    def apply_transpose(self, grad: Tensor) -> Tensor:
        """``S.T @ grad``: ``(R, C, PH, PW)`` -> ``(B, C, H, W)``."""
        b, c, h, w = self.shape
        bins = grad.permute(0, 2, 3, 1).contiguous().view(-1, c)
        npix = b * h * w
        grad_table = bins.new_zeros((npix, c))
        per_roi = self.ph * self.pw
        for r0, r1, pixel, weight, offsets in self.chunks:
            if pixel.numel() == 0 or c == 0:
                continue
            # The bin of every entry, then the entries regrouped by pixel.
            counts = torch.diff(offsets, append=offsets.new_tensor([pixel.numel()]))
            rows = torch.repeat_interleave(
                torch.arange(r0 * per_roi, r1 * per_roi, device=pixel.device),
                counts,
                output_size=pixel.numel(),
            )
            order = torch.argsort(pixel)
            per_pixel = torch.bincount(pixel, minlength=npix)
            starts = per_pixel.cumsum(0) - per_pixel
            grad_table += F.embedding_bag(
                rows[order], bins, starts, mode="sum", per_sample_weights=weight[order]
            )
        return grad_table.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


def _entries(
    batch: Tensor,
    cx: Tensor,
    cy: Tensor,
    roi_w: Tensor,
    roi_h: Tensor,
    cos: Tensor,
    sin: Tensor,
    grid_h: Tensor,
    grid_w: Tensor,
    *,
    ph: int,
    pw: int,
    h: int,
    w: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Entries of ``S`` for ``n`` rois (all inputs ``(n,)``, centres already shifted by -0.5).

    Returns
    -------
    pixel : Tensor, shape (E,), int64
        Index into the flattened ``(B * H * W)`` map; ``E = 4 * samples``.
    weight : Tensor, shape (E,), dtype of ``cx``
        Bilinear weight over the bin's sample count, 0 for samples off the map.
    offsets : Tensor, shape (n * ph * pw,), int64
        First entry of each output bin (bins in roi, ``ph``, ``pw`` order).
    """
    n = batch.numel()
    device, dtype = cx.device, cx.dtype
    per_bin = grid_h * grid_w
    per_roi = per_bin * (ph * pw)
    total = int(per_roi.sum())
    bin_counts = torch.repeat_interleave(4 * per_bin, ph * pw)
    offsets = bin_counts.cumsum(0) - bin_counts
    if total == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty, empty.to(dtype), offsets
    # One element per sample, ordered roi, ph, pw, iy, ix.
    roi = torch.repeat_interleave(torch.arange(n, device=device), per_roi, output_size=total)
    local = torch.arange(total, device=device) - (per_roi.cumsum(0) - per_roi)[roi]
    gh, gw = grid_h[roi], grid_w[roi]
    ix = local % gw
    rest = local // gw
    iy = rest % gh
    rest = rest // gh
    j = rest % pw
    i = rest // pw
    rh, rw = roi_h[roi], roi_w[roi]
    bin_h, bin_w = rh / ph, rw / pw
    # Same operation order as detectron2: start + p * bin + (i + .5) * bin / grid.
    yy = -rh / 2 + i.to(dtype) * bin_h + (iy.to(dtype) + 0.5) * bin_h / gh.to(dtype)
    xx = -rw / 2 + j.to(dtype) * bin_w + (ix.to(dtype) + 0.5) * bin_w / gw.to(dtype)
    c, s = cos[roi], sin[roi]
    y = yy * c - xx * s + cy[roi]
    x = yy * s + xx * c + cx[roi]
    # detectron2's bilinear_interpolate: 0 outside [-1, H] x [-1, W], border clamp inside.
    inside = (y >= -1.0) & (y <= h) & (x >= -1.0) & (x <= w)
    y = torch.where(inside, y, 0.0).clamp(min=0)
    x = torch.where(inside, x, 0.0).clamp(min=0)
    y_low, x_low = y.floor(), x.floor()
    y_edge, x_edge = y_low >= h - 1, x_low >= w - 1
    y_low = torch.where(y_edge, float(h - 1), y_low)
    x_low = torch.where(x_edge, float(w - 1), x_low)
    ly = torch.where(y_edge, 0.0, y - y_low)
    lx = torch.where(x_edge, 0.0, x - x_low)
    hy, hx = 1.0 - ly, 1.0 - lx
    y_low, x_low = y_low.long(), x_low.long()
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    base = batch[roi] * (h * w)
    pixel = (
        torch.stack(
            [y_low * w + x_low, y_low * w + x_high, y_high * w + x_low, y_high * w + x_high], 1
        )
        + base[:, None]
    )
    scale = inside.to(dtype) / per_bin[roi].to(dtype)
    weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], 1) * scale[:, None]
    return pixel.reshape(-1), weight.reshape(-1), offsets


class _RoIAlignRotatedFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, spatial_scale, ph, pw, sampling_ratio):
        plan = _Plan(rois, input.dtype, tuple(input.shape), spatial_scale, ph, pw, sampling_ratio)
        ctx.plan = plan
        return plan.apply(input)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grad_input = ctx.plan.apply_transpose(grad) if ctx.needs_input_grad[0] else None
        return grad_input, None, None, None, None, None


def _forward(
    input: Tensor, rois: Tensor, spatial_scale: float, ph: int, pw: int, sampling_ratio: int
) -> Tensor:
    return _RoIAlignRotatedFunction.apply(input, rois, spatial_scale, ph, pw, sampling_ratio)
