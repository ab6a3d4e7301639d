"""A plain, readable NumPy implementation of the Bragg filter, to check and time the fast one.

Same algorithm and parameters as :class:`emdet.dense.bragg.BraggFilter`, written the direct
way: :func:`emdet.data.preprocess.flatfield_correct`, full complex ``numpy.fft.fft2`` in
float64, the weighted spectrum smoothed with ``scipy.ndimage.gaussian_filter`` (periodic),
local maxima with ``maximum_filter``, each Gaussian aperture as the outer product of two 1-D
Gaussians, and ``scipy.ndimage.gaussian_filter`` for the low pass. What depends only on the
image's shape (window, frequencies, the DC envelope) is computed once per shape and cached, as
a user timing it over many images of one size would. ``benchmarks/bench_dense.py`` uses it as
the baseline; ``tests/dense/test_bragg.py`` checks that both give the same result.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from emdet.data.preprocess import flatfield_correct
from emdet.dense.bragg import padded_shape


def reference_residual(
    image: np.ndarray,
    *,
    sigma: float = 0.0156,
    g_thresh: float = 0.005,
    max_peaks: int = 24,
    smooth: float = 2.0,
    lowpass: float = 5.0,
    pad: int = 32,
    preprocess: bool = True,
) -> np.ndarray:
    """``F_LP[|I - I_Bragg - <I>|]`` as :meth:`BraggFilter.residual`, float64 ``(H, W)``."""
    x = flatfield_correct(np.asarray(image, dtype=np.float64)) if preprocess else np.asarray(
        image, dtype=np.float64)
    h, w = x.shape
    window, qy, qx, envelope, (hp, wp, oy, ox) = _shape_terms(h, w, pad, sigma)

    def padded(a):
        out = np.zeros((hp, wp))
        out[oy : oy + h, ox : ox + w] = a
        return out

    g = np.hypot(qy, qx) * np.abs(np.fft.fft2(padded(x * window)))  # eq. 4
    gs = ndimage.gaussian_filter(g, smooth, mode="wrap", truncate=4.0) if smooth > 0 else g
    is_max = (gs == ndimage.maximum_filter(gs, size=3, mode="wrap")) & (gs > g_thresh)
    rows, cols = np.nonzero(is_max)
    order = np.lexsort((cols, rows, -gs[rows, cols]))
    chosen: list[tuple[int, int]] = []
    taken: set[tuple[int, int]] = set()
    for r, c in zip(rows[order], cols[order], strict=True):
        if len(chosen) + 2 > max_peaks:
            break
        if (r, c) in taken:
            continue
        mirror = ((-r) % hp, (-c) % wp)
        chosen += [(r, c), mirror]
        taken.update({(r, c), mirror})
    aperture = np.zeros((hp, wp))
    fy, fx = qy[:, 0], qx[0]
    for r, c in chosen:  # eq. 5, one Gaussian per peak, periodic distances, separable
        dy = fy - fy[r]
        dx = fx - fx[c]
        dy -= np.floor(dy + 0.5)
        dx -= np.floor(dx + 0.5)
        aperture += np.outer(np.exp(-dy**2 / (2 * sigma**2)), np.exp(-dx**2 / (2 * sigma**2)))
    spectrum = np.fft.fft2(padded(x))
    bragg = np.real(np.fft.ifft2(spectrum * aperture))[oy : oy + h, ox : ox + w]
    bragg = bragg / envelope
    diff = np.abs(x - bragg - x.mean())  # eq. 6
    return ndimage.gaussian_filter(diff, lowpass, mode="reflect", truncate=4.0)


@functools.lru_cache(maxsize=8)
def _shape_terms(h: int, w: int, pad: int, sigma: float):
    """Window, frequencies and the clipped DC envelope of one image shape (read-only)."""
    hp, wp = padded_shape((h, w), pad)
    oy, ox = (hp - h) // 2, (wp - w) // 2
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])
    window /= window.sum()
    qy = np.fft.fftfreq(hp)[:, None]
    qx = np.fft.fftfreq(wp)[None, :]
    dy = qy - np.floor(qy + 0.5)
    dx = qx - np.floor(qx + 0.5)
    dc = np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
    ones = np.zeros((hp, wp))
    ones[oy : oy + h, ox : ox + w] = 1.0
    envelope = np.real(np.fft.ifft2(np.fft.fft2(ones) * dc))[oy : oy + h, ox : ox + w]
    envelope = np.clip(envelope, 0.05, None)
    for a in (window, qy, qx, envelope):
        a.setflags(write=False)
    return window, qy, qx, envelope, (hp, wp, oy, ox)


def reference_predict(image: np.ndarray, *, m_thresh: float = 0.3, **kwargs) -> np.ndarray:
    """``(H, W)`` bool mask, as :meth:`BraggFilter.predict`."""
    return reference_residual(image, **kwargs) > m_thresh
