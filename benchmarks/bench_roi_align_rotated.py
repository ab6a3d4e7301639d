"""roi_align_rotated (forward + backward) against torchvision's compiled ``roi_align``.

Case: 512 rois on a 1 x 256 x 64 x 64 feature map (spatial scale 1/4, rois 16-128 image px, so
4-32 feature px), pooled to 7 x 7. The baseline is ``torchvision.ops.roi_align(aligned=True)`` on
the same boxes with the angle dropped: the same sampling work without rotation, in C++ (the
closest compiled op available; detectron2's compiled ``ROIAlignRotated`` is not installed).
At angle 0 both give the same numbers (checked).
"""

from __future__ import annotations

from _common import best_time, devices, peak_memory_mb, row

NAME = "roi_align_rotated"
# (angle, sampling_ratio, backward)
CASES = {
    "angle 0, adaptive grid, fwd+bwd": (False, 0, True),
    "random angles, adaptive grid, fwd+bwd": (True, 0, True),
    "random angles, adaptive grid, fwd": (True, 0, False),
    "random angles, sampling 2, fwd+bwd": (True, 2, True),
}


def _inputs(case: str, device: str):
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 256, 64, 64, generator=gen)
    r = 512
    cx, cy = torch.rand(r, generator=gen) * 256, torch.rand(r, generator=gen) * 256
    w, h = torch.rand(r, generator=gen) * 112 + 16, torch.rand(r, generator=gen) * 112 + 16
    angle = torch.rand(r, generator=gen) * 360 - 180
    if not CASES[case][0]:
        angle = torch.zeros(r)
    zero = torch.zeros(r)
    rois = torch.stack([zero, cx, cy, w, h, angle], 1)
    boxes = torch.stack([zero, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    x = x.to(device).requires_grad_(True)
    return x, rois.to(device), boxes.to(device)


def _step(op, x, rois, sampling_ratio: int, backward: bool):
    import torch

    if not backward:
        with torch.no_grad():
            return op(x, rois, 7, 0.25, sampling_ratio)
    out = op(x, rois, 7, 0.25, sampling_ratio)
    out.backward(torch.ones_like(out))
    x.grad = None
    return out


def make_case(case: str, quick: bool, device: str):
    """The emdet call of one case, inputs ready on ``device`` (float32)."""
    import emdet  # noqa: F401
    from emdet.ops import roi_align_rotated

    _, sampling_ratio, backward = CASES[case]
    x, rois, _ = _inputs(case, device)
    return lambda: _step(roi_align_rotated, x, rois, sampling_ratio, backward)


def _torchvision_aligned(x, boxes, output_size, spatial_scale, sampling_ratio):
    import torchvision

    return torchvision.ops.roi_align(
        x, boxes, output_size, spatial_scale, sampling_ratio, aligned=True
    )


def run(quick: bool = False) -> list[dict]:
    """Milliseconds per call of emdet and torchvision, peak memory of emdet."""
    rows = []
    for case, (_, sampling_ratio, backward) in CASES.items():
        for device in devices():
            x, _, boxes = _inputs(case, device)

            def base(x=x, boxes=boxes, sampling_ratio=sampling_ratio, backward=backward):
                return _step(_torchvision_aligned, x, boxes, sampling_ratio, backward)

            fn = make_case(case, quick, device)
            t_base = best_time(base, repeat=2 if quick else 5)
            t = best_time(fn, repeat=2 if quick else 5)
            note = "forward + backward" if backward else "forward only"
            if "angle 0" in case:
                err = (fn() - base()).abs().max().item()
                note += f"; max |emdet - torchvision| = {err:.1e}"
            mem = peak_memory_mb(__file__, case, quick=quick, device=device)
            rows.append(
                row(
                    NAME,
                    f"{case}: 512 rois, 256 ch, 7x7",
                    t * 1e3,
                    "ms",
                    baseline=t_base * 1e3,
                    higher_is_better=False,
                    peak_mem_mb=mem,
                    device=device,
                    note=note,
                )
            )
    return rows
