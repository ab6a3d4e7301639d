"""Bragg-filter segmentation of lattice images (Sadre et al. 2021, eq. 4-6).

A crystal imaged along a zone axis is periodic, so its Fourier transform has sharp "Bragg
spots". Keeping only the spots (Gaussian apertures around them) and transforming back gives
the periodic part of the image; what is left, ``|I - I_Bragg|``, is large where the lattice is
covered by amorphous contamination. Low-passed and thresholded, it is a contamination mask.

Pipeline of :class:`BraggFilter.predict` (each step is a pure function below):

1. flat field and normalisation (eq. 1-3, :func:`normalize_for_bragg`):
   ``I = (I_meas / I_0 - mu) / sigma`` with ``I_0`` a degree-2 Bézier surface;
2. zero padding by ``pad`` pixels (to a fast FFT size) and a Hann window ``W`` over the image;
3. weighted spectrum ``G(q) = |q| |F{I W}|`` (eq. 4, :func:`weighted_spectrum`);
4. local maxima of ``G`` smoothed by a 2-pixel Gaussian, above ``g_thresh``: the strongest
   ``max_peaks`` (counted individually, taken in ``+-q`` pairs so ``I_Bragg`` is real;
   :func:`find_bragg_peaks`);
5. ``I_Bragg = F^-1{F{I} sum_n exp(-|q - q_n|^2 / 2 sigma^2)}`` (eq. 5,
   :func:`gaussian_apertures`, :func:`bragg_filter`), divided by the aperture's response to the
   image support so the lattice is not under-estimated near the borders (the paper's
   "normalisation of the filter output"; :func:`aperture_envelope`);
6. ``F_LP[|I - I_Bragg - <I>|] > m_thresh`` with ``F_LP`` a 5-pixel Gaussian (eq. 6,
   :func:`bragg_residual`).

Units and conventions
---------------------
* Spatial frequencies ``q`` are in cycles per pixel (the paper's "1/pixels"); ``sigma`` too.
  The paper's tuned value is ``sigma = 0.0156``.
* Spectra use the :func:`numpy.fft.rfft2` layout: ``(Hp, Wp // 2 + 1)`` for a padded image of
  ``(Hp, Wp)``; row ``i`` is ``qy = fftfreq(Hp)[i]``, column ``j`` is ``qx = j / Wp``.
* ``G`` is normalised by the window's sum, so a Fourier component of amplitude ``A`` covering
  the whole image gives a peak ``|q| A / 2``, whatever the image size. ``g_thresh`` is in these
  units (about 0.002-0.02 for graphene at the default normalisation), not the paper's 12.5,
  whose FFT scaling is not given; ``m_thresh`` is in units of the normalised image's RMS.
* float32 throughout; the FFTs are :mod:`scipy.fft` with ``workers`` threads.

Glossary of shapes: image ``(H, W)``; padded image ``(Hp, Wp)``; half spectrum
``(Hp, Wp // 2 + 1)``; peaks ``(N, 2)`` as ``(qy, qx)``; masks ``(H, W)`` bool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import scipy.fft as sfft

__all__ = [
    "G_THRESH_GRID",
    "SIGMA_GRID",
    "BraggFilter",
    "aperture_envelope",
    "bragg_filter",
    "bragg_residual",
    "find_bragg_peaks",
    "fit_bragg_filter",
    "gaussian_apertures",
    "normalize_for_bragg",
    "padded_shape",
    "rfft_frequencies",
    "smooth_half_spectrum",
    "weighted_spectrum",
]

logger = logging.getLogger(__name__)

#: Gaussian kernels are cut at this many standard deviations (as scipy.ndimage's default).
_TRUNCATE = 4.0
#: Aperture sizes (cycles per pixel) searched by :func:`fit_bragg_filter` by default, from about
#: one frequency bin of a padded 256 px image up to twice the paper's 0.0156.
SIGMA_GRID = (0.002, 0.003, 0.004, 0.006, 0.008, 0.011, 0.0156, 0.022, 0.03)
#: Peak thresholds searched by :func:`fit_bragg_filter` by default (log-spaced).
G_THRESH_GRID = tuple(float(v) for v in np.geomspace(5e-4, 3e-2, 10))


# --------------------------------------------------------------------------------------------
# small checked helpers


def _as_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.size == 0 or image.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} needs a non-empty real-valued (H, W) image; got shape {image.shape} and "
            f"dtype {image.dtype}. For a stack, call it frame by frame "
            "(emdet.data.io.read_series)."
        )
    return image


def _gauss_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(_TRUNCATE * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """2-D Gaussian filter, edges mirrored (``scipy.ndimage.gaussian_filter(mode="reflect")``)."""
    if sigma <= 0:
        return image
    k = _gauss_kernel(sigma)
    return cv2.sepFilter2D(
        np.ascontiguousarray(image, dtype=np.float32), -1, k, k, borderType=cv2.BORDER_REFLECT
    )


# --------------------------------------------------------------------------------------------
# step 1: flat field and normalisation (eq. 1-3)


@lru_cache(maxsize=16)
def _bezier_bases(n: int, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Bernstein basis ``B`` ``(n, order + 1)`` and its pseudo-inverse ``(order + 1, n)``."""
    from emdet.data.preprocess import _bernstein

    basis = _bernstein(n, order)
    pinv = np.linalg.pinv(basis)
    basis.flags.writeable = False
    pinv.flags.writeable = False
    return basis, pinv


def normalize_for_bragg(image: np.ndarray, *, order: int = 2) -> np.ndarray:
    """Sadre et al. eq. 1-3: divide by a fitted Bézier illumination surface, then standardise.

    The same result as :func:`emdet.data.preprocess.flatfield_correct` for an image without
    NaNs (checked in the tests), faster: with uniform weights the least-squares Bézier fit
    separates into ``k = pinv(By) Y pinv(Bx)^T``, with the bases cached per image shape.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` counts (positive), any real dtype.
    order : int, keyword-only, default 2
        Bézier degree per axis (the paper's "2x2 Bézier surface").

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 with mean 0 and ``sqrt(<(I/I_0 - 1)^2>) = 1``.

    Raises
    ------
    ValueError
        Not an image, NaN/inf pixels, or the fitted illumination is not positive everywhere.
    """
    image = _as_image(image, "normalize_for_bragg")
    x = image.astype(np.float64)
    if not np.isfinite(x).all():
        from emdet.data.preprocess import flatfield_correct

        return flatfield_correct(x).astype(np.float32)
    by, py = _bezier_bases(x.shape[0], int(order))
    bx, px = _bezier_bases(x.shape[1], int(order))
    surface = by @ ((py @ x) @ px.T) @ bx.T  # least squares: k = pinv(By) Y pinv(Bx)^T
    if not (surface > 0).all():
        raise ValueError(
            "The fitted illumination surface is zero or negative somewhere "
            f"(min {surface.min():.4g}); the Bragg filter's flat field needs positive counts. "
            "Pass raw detector counts, or normalise the image yourself and use "
            "BraggFilter(preprocess=False)."
        )
    ratio = x / surface
    mu = ratio.mean()
    sigma = math.sqrt(float(np.mean((ratio - 1.0) ** 2)))
    out = (ratio - mu) / sigma if sigma > 0 else ratio - mu
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# step 2-3: padding, window, weighted spectrum (eq. 4)


def padded_shape(shape: tuple[int, int], pad: int) -> tuple[int, int]:
    """``(Hp, Wp)``: ``shape`` plus ``pad`` pixels on every side, rounded up to fast FFT sizes."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0 pixels, got {pad}.")
    return tuple(sfft.next_fast_len(int(n) + 2 * int(pad), real=True) for n in shape)


def rfft_frequencies(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies of the :func:`numpy.fft.rfft2` layout, in cycles per pixel.

    Parameters
    ----------
    shape : (int, int)
        Real-space ``(H, W)``.

    Returns
    -------
    qy : numpy.ndarray
        ``(H, 1)`` float32, ``numpy.fft.fftfreq(H)``.
    qx : numpy.ndarray
        ``(1, W // 2 + 1)`` float32, ``numpy.fft.rfftfreq(W)``.
    """
    h, w = (int(s) for s in shape)
    qy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    qx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    return qy, qx


@dataclass(frozen=True)
class _Plan:
    """Everything that depends only on the image shape and ``pad`` (cached)."""

    shape: tuple[int, int]
    padded: tuple[int, int]
    offset: tuple[int, int]
    window: np.ndarray  # (H, W) float32 Hann window, scaled to sum 1
    qabs: np.ndarray  # (Hp, Wp//2+1) float32 |q|
    gather: np.ndarray  # (Hp + 2R, Wp//2+1 + 2R) int64 flat indices into the half spectrum
    radius: int  # R: extension of the half spectrum for smoothing
    keep: np.ndarray  # (Hp, Wp//2+1) bool: one representative per +-q pair


@lru_cache(maxsize=16)
def _plan(shape: tuple[int, int], pad: int, smooth: float) -> _Plan:
    h, w = shape
    hp, wp = padded_shape(shape, pad)
    oy, ox = (hp - h) // 2, (wp - w) // 2
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1]).astype(np.float64)
    window = (window / window.sum()).astype(np.float32)
    qy, qx = rfft_frequencies((hp, wp))
    qabs = np.sqrt(qy * qy + qx * qx).astype(np.float32)
    wh = wp // 2 + 1
    radius = max(1, int(_TRUNCATE * smooth + 0.5)) + 1
    gather = _hermitian_gather((hp, wp), radius)
    keep = np.ones((hp, wh), dtype=bool)
    rows = np.arange(hp)
    self_mirror_cols = [0] + ([wh - 1] if wp % 2 == 0 else [])
    for col in self_mirror_cols:  # columns that hold both q and -q: keep 0 < row <= Hp/2
        keep[:, col] = (rows > 0) & (rows <= hp // 2)
    for arr in (window, qabs, gather, keep):
        arr.flags.writeable = False
    return _Plan(
        shape=(h, w),
        padded=(hp, wp),
        offset=(oy, ox),
        window=window,
        qabs=qabs,
        gather=gather,
        radius=radius,
        keep=keep,
    )


def _hermitian_gather(shape: tuple[int, int], radius: int) -> np.ndarray:
    """Flat indices that extend a half spectrum by ``radius`` on every side.

    Rows wrap around (``qy`` is periodic); columns beyond ``qx = 0`` and ``qx = Nyquist`` are
    read from the mirrored half-plane, ``G(qy, -qx) = G(-qy, qx)``, which holds for the
    magnitude spectrum of a real image.
    """
    hp, wp = shape
    wh = wp // 2 + 1
    rows = np.arange(-radius, hp + radius)
    cols = np.arange(-radius, wh + radius)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    cc = np.mod(cc, wp)  # full-plane column index 0..wp-1
    mirrored = cc >= wh
    cc = np.where(mirrored, wp - cc, cc)
    rr = np.where(mirrored, -rr, rr)
    rr = np.mod(rr, hp)
    return (rr * wh + cc).astype(np.int64)


def weighted_spectrum(
    image: np.ndarray, *, pad: int = 32, workers: int = 1
) -> np.ndarray:
    """Sadre et al. eq. 4: ``G(q) = |q| |F{I W}|`` of a zero-padded, Hann-windowed image.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` normalised image (mean about 0, e.g. from :func:`normalize_for_bragg`).
    pad : int, keyword-only, default 32
        Zeros added on every side before the transform (see :func:`padded_shape`).
    workers : int, keyword-only, default 1
        Threads for :func:`scipy.fft.rfft2`.

    Returns
    -------
    numpy.ndarray
        ``(Hp, Wp // 2 + 1)`` float32 in the rfft layout, normalised by the window's sum (see
        the module docstring).
    """
    image = _as_image(image, "weighted_spectrum")
    plan = _plan(image.shape, int(pad), 2.0)
    return _weighted_spectrum(image.astype(np.float32, copy=False), plan, workers)


def _pad(image: np.ndarray, plan: _Plan) -> np.ndarray:
    hp, wp = plan.padded
    oy, ox = plan.offset
    h, w = plan.shape
    out = np.zeros((hp, wp), dtype=np.float32)
    out[oy : oy + h, ox : ox + w] = image
    return out


def _weighted_spectrum(image: np.ndarray, plan: _Plan, workers: int) -> np.ndarray:
    spec = sfft.rfft2(_pad(image * plan.window, plan), workers=workers)
    return np.abs(spec) * plan.qabs


def smooth_half_spectrum(
    spectrum: np.ndarray, *, width: int, sigma: float = 2.0
) -> np.ndarray:
    """Gaussian-smooth a magnitude spectrum stored in the rfft layout, as if it were whole.

    Equivalent to smoothing the full ``(Hp, Wp)`` spectrum with periodic boundaries and
    keeping its left half: the borders at ``qx = 0`` and ``qx = Nyquist`` see the mirrored
    half-plane (``G(qy, -qx) = G(-qy, qx)``), rows wrap around.

    Parameters
    ----------
    spectrum : numpy.ndarray
        ``(Hp, Wp // 2 + 1)`` real, symmetric magnitude (e.g. from :func:`weighted_spectrum`).
    width : int, keyword-only
        ``Wp``, the real-space width (the rfft layout cannot tell odd from even widths).
    sigma : float, keyword-only, default 2.0
        Standard deviation in Fourier pixels (the paper smooths by 2 pixels); 0 returns a copy.

    Returns
    -------
    numpy.ndarray
        Same shape, float32.
    """
    spectrum = np.asarray(spectrum, dtype=np.float32)
    hp, wh = spectrum.shape
    if wh != width // 2 + 1:
        raise ValueError(f"a half spectrum of width {wh} needs width={2 * (wh - 1)} or so, "
                         f"got width={width}.")
    if sigma <= 0:
        return spectrum.copy()
    radius = max(1, int(_TRUNCATE * sigma + 0.5)) + 1
    gather = _hermitian_gather((hp, width), radius)
    return _smooth_extended(spectrum, gather, radius, sigma)[radius:-radius, radius:-radius]


def _smooth_extended(
    spectrum: np.ndarray, gather: np.ndarray, radius: int, sigma: float
) -> np.ndarray:
    """Extended ``(Hp + 2R, Wh + 2R)`` smoothed array; its rim is only approximately right."""
    ext = spectrum.ravel()[gather]
    k = _gauss_kernel(sigma)
    return cv2.sepFilter2D(ext, -1, k, k, borderType=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------------------------
# step 4: Bragg peaks


def find_bragg_peaks(
    spectrum: np.ndarray,
    *,
    width: int,
    g_thresh: float,
    max_peaks: int = 24,
    smooth: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a smoothed weighted spectrum above a threshold, in ``+-q`` pairs.

    Parameters
    ----------
    spectrum : numpy.ndarray
        ``(Hp, Wp // 2 + 1)`` weighted spectrum ``G`` in the rfft layout
        (:func:`weighted_spectrum`).
    width : int, keyword-only
        ``Wp``, the padded real-space width.
    g_thresh : float, keyword-only
        Keep maxima of the smoothed ``G`` strictly above this.
    max_peaks : int, keyword-only, default 24
        At most this many peaks, counted individually: the strongest ``max_peaks // 2`` pairs.
        The paper fixes 24 (two graphene grains x 6 first- and 6 second-order spots).
    smooth : float, keyword-only, default 2.0
        Gaussian smoothing of ``G`` in Fourier pixels before the search (0 = none).

    Returns
    -------
    peaks : numpy.ndarray
        ``(N, 2)`` float32 ``(qy, qx)`` in cycles per pixel, ``N`` even: each selected maximum
        ``q`` followed by ``-q``; strongest first.
    heights : numpy.ndarray
        ``(N,)`` float32 smoothed ``G`` at each peak.
    """
    spectrum = np.asarray(spectrum, dtype=np.float32)
    hp, wh = spectrum.shape
    if wh != width // 2 + 1:
        raise ValueError(f"spectrum has {wh} columns, which does not match width={width}.")
    radius = max(1, int(_TRUNCATE * smooth + 0.5)) + 1
    gather = _hermitian_gather((hp, width), radius)
    rows = np.arange(hp)
    keep = np.ones((hp, wh), dtype=bool)
    for col in [0] + ([wh - 1] if width % 2 == 0 else []):
        keep[:, col] = (rows > 0) & (rows <= hp // 2)
    return _find_peaks(spectrum, gather, radius, keep, (hp, width), g_thresh, max_peaks, smooth)


def _find_peaks(
    spectrum: np.ndarray,
    gather: np.ndarray,
    radius: int,
    keep: np.ndarray,
    padded: tuple[int, int],
    g_thresh: float,
    max_peaks: int,
    smooth: float,
) -> tuple[np.ndarray, np.ndarray]:
    if smooth > 0:
        ext = _smooth_extended(spectrum, gather, radius, smooth)
    else:
        ext = spectrum.ravel()[gather]
    dilated = cv2.dilate(ext, np.ones((3, 3), np.uint8))
    inner = (slice(radius, -radius), slice(radius, -radius))
    values = ext[inner]
    is_peak = (values >= dilated[inner]) & (values > g_thresh) & keep
    n_pairs = max(0, int(max_peaks) // 2)
    rr, cc = np.nonzero(is_peak)
    heights = values[rr, cc]
    if len(heights) > n_pairs:
        top = np.argpartition(-heights, n_pairs - 1)[:n_pairs] if n_pairs else []
        rr, cc, heights = rr[top], cc[top], heights[top]
    order = np.argsort(-heights, kind="stable")
    rr, cc, heights = rr[order], cc[order], heights[order]
    hp, wp = padded
    qy = np.where(rr > hp // 2, rr - hp, rr) / hp
    qx = cc / wp
    peaks = np.empty((2 * len(rr), 2), dtype=np.float32)
    peaks[0::2, 0], peaks[0::2, 1] = qy, qx
    peaks[1::2, 0], peaks[1::2, 1] = -qy, -qx
    return peaks, np.repeat(heights, 2).astype(np.float32)


# --------------------------------------------------------------------------------------------
# step 5: Gaussian apertures and the Bragg-filtered image (eq. 5)


def _periodic(d: np.ndarray) -> np.ndarray:
    """Wrap frequency differences to [-0.5, 0.5) cycles per pixel."""
    return d - np.floor(d + 0.5)


def gaussian_apertures(
    peaks: np.ndarray, shape: tuple[int, int], *, sigma: float
) -> np.ndarray:
    """Sum of Gaussian apertures ``sum_n exp(-|q - q_n|^2 / 2 sigma^2)`` on the rfft grid.

    Distances are periodic (the spectrum of a sampled image is), and the Gaussian separates
    into ``qy`` and ``qx`` factors, so the sum is one small matrix product.

    Parameters
    ----------
    peaks : numpy.ndarray
        ``(N, 2)`` ``(qy, qx)`` aperture centres in cycles per pixel (include both ``q`` and
        ``-q`` for a real-valued filtered image; :func:`find_bragg_peaks` does).
    shape : (int, int)
        Real-space ``(Hp, Wp)`` of the transform.
    sigma : float, keyword-only
        Aperture standard deviation in cycles per pixel (paper: 0.0156).

    Returns
    -------
    numpy.ndarray
        ``(Hp, Wp // 2 + 1)`` float32, non-negative; zeros when there are no peaks.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be a positive frequency in cycles per pixel, got {sigma}.")
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    qy, qx = rfft_frequencies(shape)
    if len(peaks) == 0:
        return np.zeros((qy.shape[0], qx.shape[1]), dtype=np.float32)
    inv = -0.5 / (sigma * sigma)
    ay = np.exp(inv * _periodic(qy.astype(np.float64) - peaks[:, 0][None, :]) ** 2)  # (Hp, N)
    ax = np.exp(inv * _periodic(qx.astype(np.float64).T - peaks[:, 1][None, :]) ** 2)  # (Wh, N)
    return (ay.astype(np.float32) @ ax.T.astype(np.float32)).astype(np.float32)


@lru_cache(maxsize=32)
def _envelope_cached(shape: tuple[int, int], pad: int, sigma: float) -> np.ndarray:
    plan = _plan(shape, pad, 2.0)
    support = _pad(np.ones(shape, dtype=np.float32), plan)
    spec = sfft.rfft2(support)
    spec *= gaussian_apertures(np.zeros((1, 2)), plan.padded, sigma=sigma)
    env = sfft.irfft2(spec, s=plan.padded)
    oy, ox = plan.offset
    h, w = shape
    env = np.clip(env[oy : oy + h, ox : ox + w], 0.05, None).astype(np.float32)
    env.flags.writeable = False
    return env


def aperture_envelope(shape: tuple[int, int], *, pad: int = 32, sigma: float) -> np.ndarray:
    """How much of a lattice's amplitude one aperture keeps at each pixel of the image.

    A lattice filling the ``(H, W)`` image, zero-padded, loses amplitude within about
    ``1 / (2 pi sigma)`` pixels of the border: its Bragg-filtered image is the true one times
    the support (1 on the image, 0 on the padding) low-passed by the same Gaussian aperture
    centred on ``q = 0``. Dividing by this envelope undoes the loss.

    Parameters
    ----------
    shape : (int, int)
        Image ``(H, W)``.
    pad : int, keyword-only, default 32
        Padding used by the filter.
    sigma : float, keyword-only
        Aperture standard deviation in cycles per pixel.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 in ``[0.05, 1]`` (clipped below at 0.05), read-only (cached).
    """
    return _envelope_cached(tuple(int(s) for s in shape), int(pad), float(sigma))


def bragg_filter(
    image: np.ndarray,
    peaks: np.ndarray,
    *,
    sigma: float,
    pad: int = 32,
    normalize_edges: bool = True,
    workers: int = 1,
) -> np.ndarray:
    """Sadre et al. eq. 5: the periodic part of an image, through apertures at ``peaks``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` normalised image.
    peaks : numpy.ndarray
        ``(N, 2)`` ``(qy, qx)`` in cycles per pixel, in ``+-q`` pairs.
    sigma : float, keyword-only
        Aperture standard deviation in cycles per pixel.
    pad : int, keyword-only, default 32
        Zero padding on every side.
    normalize_edges : bool, keyword-only, default True
        Divide by :func:`aperture_envelope` so the lattice keeps its amplitude at the borders.
    workers : int, keyword-only, default 1
        FFT threads.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 ``I_Bragg``.
    """
    image = _as_image(image, "bragg_filter").astype(np.float32, copy=False)
    plan = _plan(image.shape, int(pad), 2.0)
    spec = sfft.rfft2(_pad(image, plan), workers=workers)
    return _bragg_from_spectrum(spec, peaks, sigma, plan, int(pad), normalize_edges, workers)


def _bragg_from_spectrum(
    spec: np.ndarray,
    peaks: np.ndarray,
    sigma: float,
    plan: _Plan,
    pad: int,
    normalize_edges: bool,
    workers: int,
) -> np.ndarray:
    h, w = plan.shape
    if len(peaks) == 0:
        return np.zeros((h, w), dtype=np.float32)
    filtered = sfft.irfft2(
        spec * gaussian_apertures(peaks, plan.padded, sigma=sigma), s=plan.padded, workers=workers
    )
    oy, ox = plan.offset
    out = filtered[oy : oy + h, ox : ox + w].astype(np.float32, copy=False)
    if normalize_edges:
        out = out / _envelope_cached((h, w), pad, float(sigma))
    return out


# --------------------------------------------------------------------------------------------
# step 6: residual and mask (eq. 6)


def bragg_residual(
    image: np.ndarray,
    *,
    sigma: float = 0.0156,
    g_thresh: float = 0.005,
    max_peaks: int = 24,
    smooth: float = 2.0,
    lowpass: float = 5.0,
    pad: int = 32,
    preprocess: bool = True,
    normalize_edges: bool = True,
    workers: int = 1,
) -> np.ndarray:
    """Sadre et al. eq. 6 before the threshold: ``F_LP[|I - I_Bragg - <I>|]``.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` raw counts (``preprocess=True``) or an already normalised image.
    sigma, g_thresh, max_peaks, smooth : keyword-only
        See :func:`gaussian_apertures` and :func:`find_bragg_peaks`.
    lowpass : float, keyword-only, default 5.0
        Standard deviation in pixels of the Gaussian low pass ``F_LP`` (paper: 5).
    pad : int, keyword-only, default 32
        Zero padding in pixels on every side.
    preprocess : bool, keyword-only, default True
        Apply :func:`normalize_for_bragg` (eq. 1-3) first.
    normalize_edges : bool, keyword-only, default True
        See :func:`bragg_filter`.
    workers : int, keyword-only, default 1
        FFT threads.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, non-negative.
    """
    bf = BraggFilter(
        sigma=sigma,
        g_thresh=g_thresh,
        max_peaks=max_peaks,
        smooth=smooth,
        lowpass=lowpass,
        pad=pad,
        preprocess=preprocess,
        normalize_edges=normalize_edges,
        workers=workers,
    )
    return bf.residual(image)


# --------------------------------------------------------------------------------------------
# the filter


@dataclass
class BraggFilter:
    """Contamination mask of a lattice image by Bragg filtering (Sadre et al. eq. 1-6).

    Parameters
    ----------
    sigma : float, default 0.0156
        Gaussian aperture size in cycles per pixel (the paper's tuned value).
    g_thresh : float, default 0.005
        Minimum smoothed weighted-spectrum value of a Bragg peak (units: module docstring).
    m_thresh : float, default 0.3
        Residual threshold: pixels where ``F_LP[|I - I_Bragg|]`` exceeds it are masked.
    max_peaks : int, default 24
        Most Bragg peaks used, counted individually (in ``+-q`` pairs).
    smooth : float, default 2.0
        Gaussian smoothing of ``G`` in Fourier pixels before the peak search.
    lowpass : float, default 5.0
        Gaussian low pass of the residual in pixels.
    pad : int, default 32
        Zero padding in pixels on every side.
    preprocess : bool, default True
        Flat-field and normalise (eq. 1-3) first; turn off for images already normalised.
    normalize_edges : bool, default True
        Undo the aperture's amplitude loss near the borders (:func:`aperture_envelope`).
    workers : int, default 1
        FFT threads.

    Attributes
    ----------
    cv_scores_ : pandas.DataFrame or None
        Set by :func:`fit_bragg_filter`: held-out metrics of every fold.

    Examples
    --------
    >>> bf = BraggFilter(sigma=0.0156, g_thresh=0.005, m_thresh=0.3)
    >>> mask = bf.predict(image)  # doctest: +SKIP
    """

    sigma: float = 0.0156
    g_thresh: float = 0.005
    m_thresh: float = 0.3
    max_peaks: int = 24
    smooth: float = 2.0
    lowpass: float = 5.0
    pad: int = 32
    preprocess: bool = True
    normalize_edges: bool = True
    workers: int = 1
    cv_scores_: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 cycles per pixel, got {self.sigma}.")
        if self.max_peaks < 0 or self.pad < 0 or self.lowpass < 0 or self.smooth < 0:
            raise ValueError("max_peaks, pad, lowpass and smooth must be >= 0.")

    @property
    def params(self) -> dict[str, float]:
        """The three tuned parameters, as a dict."""
        return {"sigma": self.sigma, "g_thresh": self.g_thresh, "m_thresh": self.m_thresh}

    def _normalized(self, image: np.ndarray) -> np.ndarray:
        image = _as_image(image, "BraggFilter")
        if self.preprocess:
            return normalize_for_bragg(image)
        return image.astype(np.float32, copy=False)

    def peaks(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bragg peaks ``(N, 2)`` ``(qy, qx)`` and their heights, as :func:`find_bragg_peaks`."""
        norm = self._normalized(image)
        plan = _plan(norm.shape, int(self.pad), float(self.smooth))
        g = _weighted_spectrum(norm, plan, self.workers)
        return _find_peaks(
            g, plan.gather, plan.radius, plan.keep, plan.padded, self.g_thresh,
            self.max_peaks, self.smooth,
        )

    def bragg_image(self, image: np.ndarray) -> np.ndarray:
        """``I_Bragg`` (eq. 5) of the normalised image, ``(H, W)`` float32."""
        return self._residual_parts(self._normalized(image))[1]

    def residual(self, image: np.ndarray) -> np.ndarray:
        """``F_LP[|I - I_Bragg - <I>|]`` (eq. 6 before the threshold), ``(H, W)`` float32."""
        return self._residual_parts(self._normalized(image))[2]

    def _residual_parts(self, norm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plan = _plan(norm.shape, int(self.pad), float(self.smooth))
        g = _weighted_spectrum(norm, plan, self.workers)
        peaks, _ = _find_peaks(
            g, plan.gather, plan.radius, plan.keep, plan.padded, self.g_thresh,
            self.max_peaks, self.smooth,
        )
        spec = sfft.rfft2(_pad(norm, plan), workers=self.workers)
        bragg = _bragg_from_spectrum(
            spec, peaks, self.sigma, plan, int(self.pad), self.normalize_edges, self.workers
        )
        diff = np.abs(norm - bragg - np.float32(norm.mean()))
        return peaks, bragg, _gaussian_blur(diff, self.lowpass)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Contamination mask ``F_LP[|I - I_Bragg|] > m_thresh`` (eq. 6).

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W)`` image, raw counts unless ``preprocess=False``.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` bool, True where the lattice is contaminated (or absent).
        """
        return self.residual(image) > self.m_thresh


# --------------------------------------------------------------------------------------------
# tuning


def _best_threshold(
    residuals: Sequence[np.ndarray], masks: Sequence[np.ndarray], *, bins: int = 512
) -> tuple[float, float]:
    """Threshold maximising the pooled Jaccard index of ``residual > t`` against ``masks``.

    All thresholds are scored at once from histograms of the positive and negative pixels.
    Returns ``(threshold, jaccard)``.
    """
    hi = max(float(np.percentile(r, 99.9)) for r in residuals) * 1.05 + 1e-6
    edges = np.linspace(0.0, hi, bins + 1)
    pos = np.zeros(bins, dtype=np.int64)
    neg = np.zeros(bins, dtype=np.int64)
    for r, m in zip(residuals, masks, strict=True):
        idx = np.clip(np.searchsorted(edges, r.ravel(), side="right") - 1, 0, bins - 1)
        mb = m.ravel().astype(bool)
        pos += np.bincount(idx[mb], minlength=bins)
        neg += np.bincount(idx[~mb], minlength=bins)
    # prediction "r > edges[k]" for k = 0..bins-1: pixels in bins >= k (up to bin resolution)
    tp = np.cumsum(pos[::-1])[::-1]
    fp = np.cumsum(neg[::-1])[::-1]
    fn = pos.sum() - tp
    denom = tp + fp + fn
    jac = np.divide(tp, denom, out=np.zeros(bins), where=denom > 0)
    k = int(np.argmax(jac))
    return float(edges[k]), float(jac[k])


def fit_bragg_filter(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    folds: int = 5,
    repeats: int = 1,
    seed: int = 0,
    sigmas: Sequence[float] | None = None,
    g_threshs: Sequence[float] | None = None,
    fold_indices: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    names: Sequence[str] | None = None,
    **filter_kwargs: Any,
) -> BraggFilter:
    """Tune ``sigma``, ``g_thresh`` and ``m_thresh`` on labelled images, with cross-validation.

    The paper minimises the segmentation error by gradient descent; here a grid over
    ``sigma`` x ``g_thresh`` is searched (the residual maps of every image are computed once
    per grid point), and for each grid point the best ``m_thresh`` is found exactly from
    histograms. The objective is the pooled Jaccard index of the mask. Each fold is tuned on
    the other folds and scored on itself; the returned filter is tuned on all images.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        ``(H, W)`` images (raw counts unless ``preprocess=False`` is passed).
    masks : sequence of numpy.ndarray
        ``(H, W)`` bool ground truth, True = contamination.
    folds : int, keyword-only, default 5
        Number of folds (``0`` or ``1``: no cross-validation, only the final fit).
    repeats : int, keyword-only, default 1
        Repeat the k-fold split this many times with different shuffles (paper: 2).
    seed : int, keyword-only, default 0
        Seed of the shuffles (:func:`emdet.dense.cv.kfold_splits`).
    sigmas, g_threshs : sequence of float, keyword-only
        Grids to search; default :data:`SIGMA_GRID` (around the paper's ``sigma = 0.0156``) and
        :data:`G_THRESH_GRID`.
    fold_indices : sequence of (train, test) index arrays, keyword-only
        Use these splits instead of drawing them (to compare methods on identical folds).
    names : sequence of str, keyword-only
        Image names for the per-image table.
    **filter_kwargs
        Other :class:`BraggFilter` arguments (``max_peaks``, ``lowpass``, ``pad``, ...).

    Returns
    -------
    BraggFilter
        Tuned on all images; ``cv_scores_`` holds one row of held-out metrics per fold (see
        :func:`emdet.evaluation.pixel_metrics`), with the parameters chosen in that fold.
    """
    import pandas as pd

    from emdet.dense.cv import kfold_splits
    from emdet.evaluation.pixels import pixel_metrics

    images = [_as_image(im, "fit_bragg_filter") for im in images]
    masks = [np.asarray(m).astype(bool) for m in masks]
    if len(images) != len(masks) or not images:
        raise ValueError(
            f"fit_bragg_filter needs as many masks as images (got {len(images)} images and "
            f"{len(masks)} masks), and at least one of each."
        )
    for i, (im, m) in enumerate(zip(images, masks, strict=True)):
        if im.shape != m.shape:
            raise ValueError(f"image {i} has shape {im.shape} but its mask {m.shape}.")
    sigmas = list(SIGMA_GRID if sigmas is None else sigmas)
    g_threshs = list(G_THRESH_GRID if g_threshs is None else g_threshs)
    base = BraggFilter(**filter_kwargs)
    normalized = [base._normalized(im) for im in images]
    base_pre = BraggFilter(**{**filter_kwargs, "preprocess": False})

    grid = [(s, g) for s in sigmas for g in g_threshs]
    residuals: dict[tuple[float, float], list[np.ndarray]] = {}
    for s, g in grid:
        bf = BraggFilter(**{**base_pre.__dict__, "sigma": s, "g_thresh": g, "cv_scores_": None})
        residuals[(s, g)] = [bf._residual_parts(x)[2] for x in normalized]

    def tune(indices: np.ndarray) -> BraggFilter:
        best = (-1.0, None)
        for key in grid:
            t, jac = _best_threshold([residuals[key][i] for i in indices],
                                     [masks[i] for i in indices])
            if jac > best[0]:
                best = (jac, (key[0], key[1], t))
        s, g, t = best[1]
        return BraggFilter(**{**base.__dict__, "sigma": s, "g_thresh": g, "m_thresh": t,
                              "cv_scores_": None})

    all_idx = np.arange(len(images))
    splits = list(fold_indices) if fold_indices is not None else (
        kfold_splits(len(images), folds, repeats=repeats, seed=seed) if folds and folds > 1
        else []
    )
    rows = []
    for k, (train, test) in enumerate(splits):
        bf = tune(np.asarray(train))
        key = (bf.sigma, bf.g_thresh)
        preds = [residuals[key][i] > bf.m_thresh for i in test]
        table = pixel_metrics(preds, [masks[i] for i in test])
        pooled = table.loc["pooled"].to_dict()
        rows.append({"fold": k, **bf.params, **pooled})
        logger.info("Bragg fold %d: sigma %.4g g_thresh %.3g m_thresh %.3g -> Jaccard %.3f",
                    k, bf.sigma, bf.g_thresh, bf.m_thresh, pooled["jaccard"])
    final = tune(all_idx)
    final.cv_scores_ = pd.DataFrame(rows) if rows else None
    return final
