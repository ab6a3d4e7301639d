"""Dense models: the Bragg filter and the U-Net, per image, on one CPU core (and the GPU).

Cases (all timed with the process pinned to one CPU core by ``os.sched_setaffinity`` and
torch/OpenCV threads set to 1, so the numbers are per core whatever the machine):

* ``bragg 256``: :meth:`emdet.dense.BraggFilter.predict` on a synthetic 256 x 256 HRTEM
  graphene image (flat field, padding, window, rfft2, peaks, apertures, low pass, threshold),
  against the plain NumPy implementation of the same filter
  (:mod:`emdet.dense._bragg_reference`: ``numpy.fft.fft2`` in float64, one ``numpy.exp`` per
  aperture over the whole plane, ``scipy.ndimage`` filters). Both must give the same mask.
  Sadre et al. report 20.3 ms per 256 x 256 image on a Xeon 6138.
* ``bragg 2048``: the same on a 2048 x 2048 image.
* ``unet 256``: ``UNet(blocks=7, features=32)`` (Sadre et al.'s best) forward pass with
  softmax, float32, ``torch.inference_mode``, batch of one 256 x 256 image, against the same
  network in float64 - the baseline shows what float32 inference buys, it is not a different
  algorithm. On CUDA (when present) float32 is also timed. Sadre et al. report 29.4 ms per
  256 x 256 image on an NVIDIA Titan Black (GPU).

``ratio`` is baseline time / emdet time (> 1: emdet faster); ``peak_mem_MB`` is the peak extra
memory of one emdet call, measured in a fresh subprocess (see ``_common.py``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
from _common import best_time, peak_memory_mb, row

NAME = "dense"
PAPER = {"bragg": "paper: 20.3 ms on a Xeon 6138", "unet": "paper: 29.4 ms on a Titan Black GPU"}


@contextmanager
def one_core():
    """Pin this process to one CPU core and use one torch/OpenCV thread inside the block."""
    import cv2
    import torch

    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    if affinity:
        os.sched_setaffinity(0, {min(affinity)})
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
        if affinity:
            os.sched_setaffinity(0, affinity)


def _graphene(size: int) -> np.ndarray:
    from emdet.data.synthetic import generate_image

    return generate_image("graphene", seed=0, index=0, size=size).image


def make_case(case: str, quick: bool, device: str):
    """The emdet call of one case, inputs ready (used for timing and peak memory)."""
    import torch

    import emdet  # noqa: F401
    from emdet.dense import BraggFilter, UNet

    kind, size = case.split()
    size = int(size)
    if kind == "bragg":
        image = _graphene(size)
        bf = BraggFilter(g_thresh=0.003)
        bf.predict(image)  # caches (window, envelope, Bézier bases) as in repeated use
        return lambda: bf.predict(image)
    torch.manual_seed(0)
    dtype = torch.float64 if kind == "unet64" else torch.float32
    net = UNet(blocks=7, features=32, classes=2).to(device=device, dtype=dtype).eval()
    x = torch.randn(1, 1, size, size, device=device, dtype=dtype)

    def forward():
        with torch.inference_mode():
            return torch.softmax(net(x), 1)

    return forward


def run(quick: bool = False) -> list[dict]:
    """ms per image of the Bragg filter and the U-Net, with baselines and peak memory."""
    import torch

    from emdet.dense._bragg_reference import reference_predict

    rows = []
    for size in (256, 2048):
        case = f"bragg {size}"
        image = _graphene(size)
        fast = make_case(case, quick, "cpu")
        with one_core():
            t = best_time(fast, repeat=3 if quick else 10)
            if quick and size > 256:
                t_ref = None
            else:
                t_ref = best_time(lambda image=image: reference_predict(image, g_thresh=0.003),
                                  repeat=2 if size > 256 else 5, min_total=0.2)
        same = np.mean(fast() == reference_predict(image, g_thresh=0.003))
        mem = peak_memory_mb(__file__, case, quick=quick, device="cpu")
        note = f"mask agreement with the numpy reference {100 * same:.3f} %"
        if size == 256:
            note += f"; {PAPER['bragg']}"
        rows.append(row(NAME, f"Bragg filter {size}x{size}, 1 core", t * 1e3, "ms",
                        baseline=None if t_ref is None else t_ref * 1e3,
                        higher_is_better=False, peak_mem_mb=mem, device="cpu", note=note))
    case = "unet 256"
    fast = make_case(case, quick, "cpu")
    slow = make_case("unet64 256", quick, "cpu")
    with one_core():
        t = best_time(fast, repeat=2 if quick else 5, min_total=0.5)
        t64 = best_time(slow, repeat=1 if quick else 3, min_total=0.5)
    mem = peak_memory_mb(__file__, case, quick=quick, device="cpu")
    rows.append(row(NAME, "U-Net 7 blocks/32 features 256x256, 1 core", t * 1e3, "ms",
                    baseline=t64 * 1e3, higher_is_better=False, peak_mem_mb=mem, device="cpu",
                    note="baseline: the same network in float64; " + PAPER["unet"]))
    if torch.cuda.is_available():
        gpu = make_case(case, quick, "cuda")
        gpu64 = make_case("unet64 256", quick, "cuda")
        t = best_time(gpu, repeat=10 if quick else 50)
        t64 = best_time(gpu64, repeat=5 if quick else 20)
        mem = peak_memory_mb(__file__, case, quick=quick, device="cuda")
        rows.append(row(NAME, "U-Net 7 blocks/32 features 256x256", t * 1e3, "ms",
                        baseline=t64 * 1e3, higher_is_better=False, peak_mem_mb=mem,
                        device=f"cuda ({torch.cuda.get_device_name()})",
                        note="baseline: the same network in float64; " + PAPER["unet"]))
    return rows
