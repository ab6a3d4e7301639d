"""Random fields and detector models shared by the synthetic generators (pure NumPy/SciPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["bandpass_noise", "detector_counts", "illumination", "smooth_noise"]


def _standardize(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    std = x.std()
    return x / std if std > 0 else x


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered (periodic) white noise, zero mean, unit std, float64 ``shape``.

    Filtered in Fourier space, so large ``sigma`` cost no more than small ones.
    """
    h, w = shape
    spec = np.fft.rfft2(rng.standard_normal(shape))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    spec *= np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx * fx + fy * fy))
    return _standardize(np.fft.irfft2(spec, s=shape))


def bandpass_noise(
    rng: np.random.Generator, shape: tuple[int, int], period: float, *, bandwidth: float = 0.15
) -> np.ndarray:
    """White noise kept in a thin ring of spatial frequencies around ``1 / period``.

    Parameters
    ----------
    shape : (H, W)
    period : float
        Dominant wavelength in pixels.
    bandwidth : float, keyword-only
        Gaussian width of the ring relative to its radius.

    Returns
    -------
    ndarray of float64, shape (H, W)
        Zero mean, unit std. Thresholded at 0 it gives a labyrinth of stripes about
        ``period / 2`` wide.
    """
    h, w = shape
    spec = np.fft.rfft2(rng.standard_normal(shape))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    k = np.hypot(fx, fy)
    k0 = 1.0 / period
    spec *= np.exp(-0.5 * ((k - k0) / (bandwidth * k0)) ** 2)
    return _standardize(np.fft.irfft2(spec, s=shape))


def illumination(
    rng: np.random.Generator, shape: tuple[int, int], *, falloff: float = 0.3
) -> np.ndarray:
    """Smooth beam profile, 1 at its (off-centre) peak, about ``1 - falloff`` at the far corner.

    Returns
    -------
    ndarray of float64, shape (H, W), values in (0, 1]
    """
    h, w = shape
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r2 = (yy - cy) ** 2 + (xx - cx) ** 2
    r2max = max((y - cy) ** 2 + (x - cx) ** 2 for y in (0, h) for x in (0, w))
    return np.exp(np.log(max(1e-3, 1.0 - falloff)) * r2 / r2max)


def detector_counts(
    rng: np.random.Generator, expected: np.ndarray, *, offset: float = 0.0
) -> np.ndarray:
    """Poisson shot noise on expected counts (plus a constant dark offset), as uint16.

    Parameters
    ----------
    expected : ndarray of float, shape (H, W)
        Mean electrons per pixel, >= 0.

    Returns
    -------
    ndarray of uint16, shape (H, W)
    """
    counts = rng.poisson(np.clip(expected, 0.0, None)) + offset
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
