"""emdet.dense.bragg: frequency-mask helpers on their own, the filter on synthetic lattices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from emdet.data.preprocess import flatfield_correct
from emdet.data.synthetic._graphene import honeycomb
from emdet.dense._bragg_reference import reference_residual
from emdet.dense.bragg import (
    BraggFilter,
    aperture_envelope,
    bragg_filter,
    find_bragg_peaks,
    fit_bragg_filter,
    gaussian_apertures,
    normalize_for_bragg,
    padded_shape,
    rfft_frequencies,
    smooth_half_spectrum,
    weighted_spectrum,
)


def lattice_with_patch(seed: int = 0, n: int = 128, *, patch_centre=(70, 60), dose=300.0):
    """Perfect graphene lattice (Poisson counts) with a square patch of amorphous noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    lat = honeycomb(xx, yy, 9.84, 12.0 + 7 * seed, (3.0, 4.0))
    cx, cy = patch_centre
    patch = (np.abs(xx - cx) < 20) & (np.abs(yy - cy) < 18)
    amorphous = ndimage.gaussian_filter(rng.normal(size=(n, n)), 2)
    amorphous /= amorphous.std()
    signal = 1 - 0.12 * lat
    signal[patch] = 1 + 0.12 * amorphous[patch]
    return rng.poisson(dose * signal).astype(np.uint16), patch


# --------------------------------------------------------------------------------------------
# frequency-mask helpers, each on its own


def test_rfft_frequencies_match_numpy():
    qy, qx = rfft_frequencies((6, 9))
    np.testing.assert_allclose(qy[:, 0], np.fft.fftfreq(6))
    np.testing.assert_allclose(qx[0], np.fft.rfftfreq(9))
    assert qy.shape == (6, 1) and qx.shape == (1, 5) and qy.dtype == np.float32


def test_padded_shape_is_fast_and_large_enough():
    hp, wp = padded_shape((256, 250), 32)
    assert hp >= 320 and wp >= 314
    assert padded_shape((64, 64), 0) == (64, 64)
    with pytest.raises(ValueError, match="pad"):
        padded_shape((8, 8), -1)


def test_gaussian_apertures_equal_brute_force_with_periodic_wrap():
    shape = (40, 30)
    peaks = np.array([[0.1, 0.2], [-0.1, -0.2], [0.48, 0.0], [-0.48, 0.0]])
    sigma = 0.03
    got = gaussian_apertures(peaks, shape, sigma=sigma)
    qy = np.fft.fftfreq(shape[0])[:, None]
    qx = np.fft.rfftfreq(shape[1])[None, :]
    want = np.zeros((40, 16))
    for py, px in peaks:  # distance to the nearest periodic image of every peak
        dy = qy - py
        dy -= np.round(dy)
        dx = qx - px
        dx -= np.round(dx)
        want += np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.shape == (40, 16) and got.dtype == np.float32
    # apertures peak at 1 on their centre and the one at qy = +-0.48 wraps across the edge
    assert got[4, 6] == pytest.approx(1.0, abs=1e-6)  # qy = 4/40 = 0.1, qx = 6/30 = 0.2
    assert got[20, 0] > 0.8  # qy = -0.5 sees both +-0.48 apertures


def test_gaussian_apertures_empty_and_bad_sigma():
    assert not gaussian_apertures(np.zeros((0, 2)), (8, 8), sigma=0.01).any()
    with pytest.raises(ValueError, match="sigma"):
        gaussian_apertures(np.zeros((1, 2)), (8, 8), sigma=0)


@pytest.mark.parametrize("width", [32, 33])
def test_smooth_half_spectrum_equals_smoothing_the_whole_plane(width):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, width))
    full = np.abs(np.fft.fft2(image))
    want = ndimage.gaussian_filter(full, 2.0, mode="wrap", truncate=4.0)[:, : width // 2 + 1]
    got = smooth_half_spectrum(full[:, : width // 2 + 1], width=width, sigma=2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_weighted_spectrum_peak_is_q_times_half_amplitude():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    image = 2.0 * np.cos(2 * np.pi * 8 * xx / n)  # amplitude 2 at q = (0, 1/8)
    g = weighted_spectrum(image, pad=0)
    assert g.shape == (n, n // 2 + 1)
    assert np.unravel_index(g.argmax(), g.shape) == (0, 8)
    assert g[0, 8] == pytest.approx(0.125 * 2.0 / 2, rel=0.02)
    assert g[0, 0] == 0.0  # |q| = 0 at DC


def test_find_bragg_peaks_returns_pairs_strongest_first():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    image = np.cos(2 * np.pi * (8 * xx + 4 * yy) / n) + 0.5 * np.cos(2 * np.pi * 12 * yy / n)
    g = weighted_spectrum(image, pad=0)
    peaks, heights = find_bragg_peaks(g, width=n, g_thresh=0.005, smooth=1.0)
    assert len(peaks) == 4 and np.all(np.diff(heights) <= 0)
    np.testing.assert_allclose(peaks[0], [4 / 64, 8 / 64], atol=1e-7)
    np.testing.assert_allclose(peaks[1], -peaks[0])
    assert {tuple(np.abs(p)) for p in peaks[2:]} == {(12 / 64, 0.0)}  # on the qx = 0 column
    # max_peaks counts individual peaks; an odd cap keeps whole pairs only
    assert len(find_bragg_peaks(g, width=n, g_thresh=0.005, max_peaks=3)[0]) == 2
    assert len(find_bragg_peaks(g, width=n, g_thresh=10.0)[0]) == 0


def test_aperture_envelope_is_one_inside_and_half_at_the_border():
    env = aperture_envelope((96, 96), pad=32, sigma=0.02)
    assert env[48, 48] == pytest.approx(1.0, abs=1e-3)
    assert 0.4 < env[48, 0] < 0.65 and env[0, 0] < env[48, 0]
    assert not env.flags.writeable


def test_bragg_filter_keeps_a_pure_lattice():
    n = 96
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    lat = honeycomb(xx, yy, 9.84, 20.0, (1.0, 2.0)).astype(np.float32)
    lat -= lat.mean()
    peaks = BraggFilter(g_thresh=0.002, preprocess=False).peaks(lat)[0]
    assert len(peaks) == 12  # 6 first-order + 6 second-order spots
    out = bragg_filter(lat, peaks, sigma=0.0156)
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(out - lat)[inner].max() < 0.1 * np.abs(lat).max()


def test_normalize_for_bragg_equals_flatfield_correct():
    image, _ = lattice_with_patch(1)
    ramp = np.linspace(0.7, 1.2, image.shape[1])[None, :]
    image = (image * ramp).astype(np.float64)
    np.testing.assert_allclose(normalize_for_bragg(image), flatfield_correct(image),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="positive counts"):
        normalize_for_bragg(image - 1000.0)


# --------------------------------------------------------------------------------------------
# the filter


def test_bragg_finds_the_noise_patch_in_a_perfect_lattice():
    image, patch = lattice_with_patch(0)
    bf = BraggFilter(g_thresh=0.002)
    residual = bf.residual(image)
    inside, outside = np.median(residual[patch]), np.median(residual[~patch])
    assert inside > 1.6 * outside
    mask = BraggFilter(g_thresh=0.002, m_thresh=0.5 * (inside + outside)).predict(image)
    assert mask.dtype == bool and mask.shape == image.shape
    iou = (mask & patch).sum() / (mask | patch).sum()
    assert iou > 0.75


@pytest.mark.parametrize("params", [{}, {"sigma": 0.008, "g_thresh": 0.002},
                                    {"sigma": 0.03, "g_thresh": 0.0005, "max_peaks": 6}])
def test_fast_filter_equals_plain_numpy_reference(params):
    image, _ = lattice_with_patch(2, n=96)
    fast = BraggFilter(**params).residual(image)
    ref = reference_residual(image, **params)
    np.testing.assert_allclose(fast, ref, atol=2e-5)


def test_fit_bragg_filter_tunes_and_cross_validates():
    data = [lattice_with_patch(s, n=96, patch_centre=(30 + 10 * s, 50)) for s in range(4)]
    images = [d[0] for d in data]
    masks = [d[1] for d in data]
    bf = fit_bragg_filter(images, masks, folds=2, sigmas=[0.0156], g_threshs=[0.001, 0.003])
    assert isinstance(bf, BraggFilter) and bf.sigma == 0.0156
    scores = bf.cv_scores_
    assert len(scores) == 2 and {"jaccard", "m_thresh", "sigma", "g_thresh"} <= set(scores)
    assert scores["jaccard"].min() > 0.5
    with pytest.raises(ValueError, match="as many masks as images"):
        fit_bragg_filter(images, masks[:2])


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match=r"\(H, W\) image"):
        BraggFilter().predict(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="sigma"):
        BraggFilter(sigma=-1)
