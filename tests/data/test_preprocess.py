"""emdet.data.preprocess and emdet.data.tiling: golden values, known answers, dtype preservation."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from emdet.data import preprocess, tiling
from emdet.data.preprocess import (
    _bernstein,
    bezier_surface,
    fit_bezier_coefficients,
    fit_bezier_flatfield,
    flatfield_correct,
    lin_preprocess,
    median_blur,
    normalize,
    normalize_intensity,
    percentile_clip,
    resize,
    to_model_input,
)
from emdet.data.tiling import stitch_tiles, tile_image, tile_starts


@pytest.mark.parametrize("module", [preprocess, tiling])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------------------------
# percentile clip, normalise, median blur, Lin et al.


def test_percentile_clip_golden_values():
    out = percentile_clip(np.arange(101.0).reshape(1, 101))  # 5th/95th percentiles: 5 and 95
    assert out.min() == 5.0 and out.max() == 95.0
    np.testing.assert_array_equal(out[0, 5:96], np.arange(5.0, 96.0))
    out = percentile_clip(np.arange(100.0).reshape(10, 10), low=5, high=95)
    assert out.min() == pytest.approx(4.95) and out.max() == pytest.approx(94.05)
    assert out.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_percentile_clip_keeps_dtype(dtype):
    img = np.arange(100).reshape(10, 10).astype(dtype)
    out = percentile_clip(img, low=5, high=95)
    assert out.dtype == dtype and out.shape == img.shape
    if np.issubdtype(dtype, np.integer):  # bounds 4.95 and 94.05 rounded to whole counts
        assert (out.min(), out.max()) == (5, 94)


def test_percentile_clip_rejects_bad_percentiles():
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        percentile_clip(np.zeros((3, 3)), low=95, high=5)


def test_normalize_minmax_and_zscore():
    img = np.array([[0, 50], [100, 150]], np.uint16)
    np.testing.assert_allclose(normalize(img), [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    assert normalize(img).dtype == np.float32
    z = normalize(img.astype(np.float64), method="zscore")
    assert z.dtype == np.float64
    np.testing.assert_allclose(z.ravel(), (np.array([0, 50, 100, 150]) - 75) / np.sqrt(3125))
    assert not normalize(np.full((4, 4), 7.0)).any()
    assert not normalize(np.full((4, 4), 7.0), method="zscore").any()
    with pytest.raises(ValueError, match="minmax"):
        normalize(img, method="max")


def test_median_blur_removes_hot_pixel_and_keeps_dtype():
    img = np.full((9, 9), 100, np.uint16)
    img[4, 4] = 65535
    out = median_blur(img, size=3)
    assert out.dtype == np.uint16 and (out == 100).all()
    with pytest.raises(ValueError, match="odd"):
        median_blur(img, size=4)


def test_lin_preprocess_is_clip_normalise_blur():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, size=(32, 40)).astype(np.uint16)
    img[3, 3] = 65535  # a hot pixel, clipped away by the 95th percentile
    out = lin_preprocess(img)
    lo, hi = np.percentile(img.astype(np.float64), [5, 95])
    manual = (np.clip(img.astype(np.float64), lo, hi) - lo) / (hi - lo)
    from scipy import ndimage

    manual = ndimage.median_filter(manual, size=3, mode="nearest")
    assert out.dtype == np.float32 and out.shape == img.shape
    np.testing.assert_allclose(out, manual, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


# --------------------------------------------------------------------------------------------
# model input normalisation


def test_normalize_intensity_percentiles_and_nan():
    img = np.arange(1001, dtype=np.float64).reshape(7, 143)  # 0.5/99.5 percentiles: 5 and 995
    out = normalize_intensity(img)
    assert out.dtype == np.float64
    assert out.ravel()[5] == 0.0 and out.ravel()[995] == 1.0
    assert out.ravel()[500] == pytest.approx(0.5)
    img32 = img.astype(np.float32)
    img32[0, 0] = np.nan
    out = normalize_intensity(img32, clip_percentiles=None, out_range=(-1.0, 1.0))
    assert out.dtype == np.float32 and out[0, 0] == -1.0 and out.max() == 1.0
    assert not normalize_intensity(np.full((3, 3), 5, np.uint8)).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_to_model_input_any_dtype_to_hw3(dtype):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 200, size=(20, 30)).astype(dtype)
    out = to_model_input(img)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert (out[..., 0] == out[..., 2]).all()
    f = to_model_input(img, out_dtype=np.float32, channels=1)
    assert f.shape == (20, 30, 1) and f.dtype == np.float32
    np.testing.assert_array_equal(np.rint(f[..., 0]).astype(np.uint8), out[..., 0])


def test_to_model_input_is_bit_depth_independent():
    """A 12-bit and an 8-bit recording of the same scene give the same model input."""
    scene = np.random.default_rng(5).random((32, 32))
    eight = np.rint(scene * 255).astype(np.uint8)
    twelve = eight.astype(np.uint16) * 16
    np.testing.assert_array_equal(to_model_input(eight), to_model_input(twelve))


def test_to_model_input_colour_and_errors():
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 1] = 1000
    out = to_model_input(rgb, clip_percentiles=None)
    assert out[0, 0].tolist() == [0, 255, 0]
    with pytest.raises(ValueError, match="greyscale"):
        to_model_input(rgb, channels=1)
    with pytest.raises(ValueError, match="out_dtype"):
        to_model_input(rgb[..., 0], out_dtype=np.uint16)
    with pytest.raises(ValueError, match=r"\(H, W\).*read_series"):
        to_model_input(np.zeros((2, 4, 4, 4)))


# --------------------------------------------------------------------------------------------
# Sadre et al. Bézier flat field


def test_bernstein_basis_partition_of_unity_and_endpoints():
    basis = _bernstein(11, 2)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0)
    np.testing.assert_allclose(basis[0], [1, 0, 0])
    np.testing.assert_allclose(basis[-1], [0, 0, 1])
    np.testing.assert_allclose(basis[5], [0.25, 0.5, 0.25])  # t = 1/2


def test_bezier_surface_corners_are_corner_coefficients():
    k = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    surface = bezier_surface(k, (21, 31))
    assert surface.shape == (21, 31)
    assert (surface[0, 0], surface[0, -1], surface[-1, 0], surface[-1, -1]) == (1, 3, 7, 9)
    assert surface[10, 15] == pytest.approx(np.array([0.25, 0.5, 0.25]) @ k @ [0.25, 0.5, 0.25])
    np.testing.assert_allclose(bezier_surface(np.full((3, 3), 2.5), (5, 6)), 2.5)


@pytest.mark.parametrize("order", [1, 2, (2, 3)])
def test_fit_recovers_exact_coefficients(order):
    m, n = (order, order) if isinstance(order, int) else order
    k = np.random.default_rng(1).uniform(0.5, 2.0, size=(m + 1, n + 1))
    img = bezier_surface(k, (37, 53)).astype(np.float32)
    np.testing.assert_allclose(fit_bezier_coefficients(img, order=order), k, atol=1e-5)
    mask = np.zeros(img.shape, bool)
    mask[::2, ::3] = True
    img_masked = np.where(mask, img, 1e6)  # values outside the mask must not matter
    np.testing.assert_allclose(
        fit_bezier_coefficients(img_masked, order=order, mask=mask), k, atol=1e-5
    )


def _illuminated_texture(shape=(128, 160), seed=0):
    """Texture with mean 1 times a quadratic illumination fall-off (probe off-centre)."""
    rng = np.random.default_rng(seed)
    texture = 1.0 + 0.2 * rng.standard_normal(shape)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    u, v = y / (shape[0] - 1), x / (shape[1] - 1)
    illumination = 1000.0 * (1.2 - 0.6 * (u - 0.3) ** 2 - 0.8 * (v - 0.6) ** 2)
    return texture, illumination, texture * illumination


def _block_means(img, block=16):
    h, w = img.shape
    return (
        img[: h - h % block, : w - w % block]
        .reshape(h // block, block, w // block, block)
        .mean(axis=(1, 3))
    )


def test_flatfield_recovers_known_illumination():
    texture, illumination, measured = _illuminated_texture()
    surface = fit_bezier_flatfield(measured.astype(np.float32))
    # A quadratic fall-off is exactly representable by the degree-2 (3 x 3) surface; what is
    # left is the texture's noise (largest in the corners, where fewest pixels constrain it).
    error = np.abs(surface / illumination - 1)
    assert error.mean() < 0.005 and error.max() < 0.03
    corrected = flatfield_correct(measured.astype(np.float32))
    assert corrected.dtype == np.float32
    # eq. 3: zero mean and (RMS about one ~) unit standard deviation
    assert abs(float(corrected.mean())) < 1e-5 and float(corrected.std()) == pytest.approx(
        1, abs=0.01
    )
    # the low-frequency trend is gone: 16 x 16 block means scatter no more than those of the
    # texture alone (its noise floor), while before correction they vary far more
    expected = (texture - texture.mean()) / texture.std()
    noise_floor = _block_means(expected).std()
    trend_before = _block_means((measured - measured.mean()) / measured.std()).std()
    trend_after = _block_means(corrected).std()
    assert trend_after < 1.1 * noise_floor and trend_before > 5 * trend_after
    # and the texture itself is what is left
    assert np.corrcoef(corrected.ravel(), expected.ravel())[0, 1] > 0.999


def test_bilinear_surface_is_not_enough_for_quadratic_falloff():
    _, _, measured = _illuminated_texture()
    flat1 = _block_means(flatfield_correct(measured, order=1)).std()
    flat2 = _block_means(flatfield_correct(measured, order=2)).std()
    assert flat2 < flat1 / 2


def test_flatfield_follows_sadre_sigma_definition():
    _, _, measured = _illuminated_texture(shape=(40, 50), seed=2)
    ratio = measured / fit_bezier_flatfield(measured)
    expected = (ratio - ratio.mean()) / np.sqrt(np.mean((ratio - 1.0) ** 2))
    np.testing.assert_allclose(flatfield_correct(measured), expected, rtol=1e-12)


def test_flatfield_rejects_nonpositive_illumination():
    # zero-mean data, e.g. after background subtraction
    img = np.random.default_rng(0).standard_normal((20, 20))
    with pytest.raises(ValueError, match="positive"):
        flatfield_correct(img)


def test_fit_needs_enough_pixels():
    mask = np.zeros((10, 10), bool)
    mask[0, :3] = True
    with pytest.raises(ValueError, match="lower order or a larger mask"):
        fit_bezier_coefficients(np.ones((10, 10)), mask=mask)


# --------------------------------------------------------------------------------------------
# resize


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_resize_keeps_dtype_and_range(dtype):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    img = np.zeros((40, 60), dtype)
    img[:, 30:] = info.max if info else 3.5e4
    out = resize(img, scale=0.5)
    assert out.dtype == dtype and out.shape == (20, 30)
    assert out.max() == img.max() and out.min() == img.min()  # not rescaled to [0, 1]
    assert resize(img, shape=(25, 17)).shape == (25, 17)


def test_resize_labels_nearest_and_colour():
    labels = np.repeat(np.arange(4, dtype=np.int32), 10).reshape(4, 10)
    out = resize(labels, scale=(2, 0.5), order=0)
    assert out.shape == (8, 5) and set(np.unique(out)) <= set(range(4))
    mask = resize(labels > 1, scale=2.0)
    assert mask.dtype == bool and mask.shape == (8, 20)
    rgb = np.zeros((10, 12, 3), np.uint8)
    assert resize(rgb, shape=(5, 6)).shape == (5, 6, 3)
    with pytest.raises(ValueError, match="exactly one"):
        resize(rgb, scale=2, shape=(3, 3))


# --------------------------------------------------------------------------------------------
# tiling


def test_tile_starts_golden():
    assert tile_starts(10, 4, 1) == [0, 3, 6]
    assert tile_starts(11, 4, 1) == [0, 3, 6, 7]
    assert tile_starts(3, 4, 1) == [0]
    assert tile_starts(8, 8) == [0]
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_starts(10, 4, 4)


@pytest.mark.parametrize(
    "shape, tile, overlap",
    [
        ((37, 53), 16, 5),
        ((64, 64), 16, 0),
        ((100, 7), (32, 16), (8, 0)),  # image narrower than the tile
        ((30, 41, 3), 12, 4),  # colour
    ],
)
@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_tile_stitch_roundtrip_is_exact(shape, tile, overlap, dtype):
    img = np.random.default_rng(7).random(shape)
    img = (img * 60000).astype(dtype) if dtype == np.uint16 else img
    tiles = tile_image(img, tile, overlap=overlap)
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    for y0, x0, t in tiles:
        np.testing.assert_array_equal(t, img[y0 : y0 + th, x0 : x0 + tw])
        assert t.shape[:2] == (min(th, shape[0]), min(tw, shape[1]))  # full tiles, no padding
    covered = np.zeros(shape[:2], int)
    for y0, x0, t in tiles:
        covered[y0 : y0 + t.shape[0], x0 : x0 + t.shape[1]] += 1
    assert covered.min() >= 1
    out = stitch_tiles(tiles, shape[:2])
    assert out.dtype == img.dtype and out.shape == img.shape
    assert np.array_equal(out, img)  # bit for bit


def test_tiles_are_read_only_views():
    img = np.zeros((8, 8))
    _, _, t = tile_image(img, 4)[0]
    assert np.shares_memory(t, img)
    with pytest.raises(ValueError):
        t[0, 0] = 1


def test_stitch_averages_overlaps_and_checks_coverage():
    tiles = [(0, 0, np.zeros((4, 4), np.float32)), (0, 2, np.full((4, 4), 2.0, np.float32))]
    out = stitch_tiles(tiles, (4, 6))
    np.testing.assert_array_equal(out[0], [0, 0, 1, 1, 2, 2])
    probs = [
        (y0, x0, np.ones(t.shape + (3,)) * i)
        for i, (y0, x0, t) in enumerate(tile_image(np.zeros((10, 10)), 6, overlap=2))
    ]
    assert stitch_tiles(probs, (10, 10)).shape == (10, 10, 3)
    with pytest.raises(ValueError, match="covered by no tile"):
        stitch_tiles(tiles[:1], (4, 6))
    with pytest.raises(ValueError, match="outside"):
        stitch_tiles(tiles, (4, 5))
    with pytest.raises(ValueError, match="no tiles"):
        stitch_tiles([], (4, 4))


# --------------------------------------------------------------------------------------------
# fast paths agree with the reference implementations


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_histogram_percentiles_match_numpy(dtype):
    from emdet.data.preprocess import _bounds

    rng = np.random.default_rng(11)
    info = np.iinfo(dtype)
    img = rng.integers(max(info.min, -2000), min(info.max, 5000), size=(37, 41)).astype(dtype)
    for q in [(0.5, 99.5), (5, 95), (0, 100), (33.3, 66.7)]:
        np.testing.assert_allclose(
            _bounds(img, q), np.percentile(img.astype(np.float64), q), rtol=1e-12
        )
    np.testing.assert_array_equal(
        normalize_intensity(img), normalize_intensity(img.astype(np.float32)).astype(np.float32)
    )


@pytest.mark.parametrize(
    "dtype, size", [(np.uint8, 3), (np.uint8, 7), (np.uint16, 5), (np.float32, 3), (np.float32, 5)]
)
def test_fast_median_matches_scipy(dtype, size):
    from scipy import ndimage

    img = (np.random.default_rng(2).random((33, 47)) * 250).astype(dtype)
    expected = ndimage.median_filter(img, size=size, mode="nearest")
    np.testing.assert_array_equal(median_blur(img, size=size), expected)


def _ramp_with_disk(height: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:240, :320]
    disk = (yy - 120) ** 2 + (xx - 150) ** 2 < 8 ** 2
    image = 1000.0 + 3.0 * xx + 1.5 * yy  # illumination falling across the field
    image[disk] += height
    return image.astype(np.float32), disk


@pytest.mark.parametrize("method, height", [("rolling_ball", 500.0),
                                            ("rolling_ball_dark", -500.0),
                                            ("highpass", 500.0)])
def test_subtract_background_removes_the_ramp_and_keeps_the_particle(method, height):
    image, disk = _ramp_with_disk(height)
    radius = 30.0
    out = preprocess.subtract_background(image, method=method, radius=radius)
    assert out.dtype == np.float32 and out.shape == image.shape
    inner = np.zeros_like(disk)
    margin = 60 if method == "highpass" else 20  # borders: reflected/rolled edges are approximate
    inner[margin:-margin, margin:-margin] = True
    background = out[inner & ~disk]
    spread = np.subtract(*np.percentile(background, [95, 5]))
    contrast = np.median(out[disk]) - np.median(background)
    # rolling balls work on the 0..255 stretch of the image; highpass in stored counts
    scale = 1.0 if method == "highpass" else 255.0 / np.subtract(*np.percentile(image, [99.5, 0.5]))
    assert contrast == pytest.approx(height * scale, rel=0.3 if method == "highpass" else 0.1)
    # the raw ramp spans 600-900 counts inside the border, more than the particle; what is left of it
    # is a few per cent of the particle's contrast
    assert np.ptp(image[inner & ~disk]) > 1.2 * abs(height)
    assert spread < 0.05 * abs(contrast)


def test_rolling_ball_on_a_shrunk_copy_matches_the_full_size_one():
    """Radii above 10 px run on a shrunk image (speed); the result agrees with skimage's
    full-size rolling ball to a few per cent of the particle's contrast."""
    from skimage.restoration import rolling_ball

    image, disk = _ramp_with_disk(500.0)
    rng = np.random.default_rng(0)
    image = image + rng.normal(0, 5, image.shape).astype(np.float32)
    fast = preprocess.subtract_background(image, method="rolling_ball", radius=30.0)
    scaled = normalize_intensity(image, out_range=(0.0, 255.0))
    full = scaled - rolling_ball(scaled, radius=30.0)
    inner = (slice(20, -20), slice(20, -20))
    particle = np.median(full[disk])  # about 80 units of the 0..255 scale
    assert np.median(np.abs(fast - full)[inner]) < 0.04 * particle
    assert abs(np.median(fast[disk]) - particle) < 0.05 * particle


def test_subtract_background_errors_name_the_setting():
    with pytest.raises(ValueError, match="INPUT.EM.BACKGROUND"):
        preprocess.subtract_background(np.zeros((8, 8)), method="tophat")
    with pytest.raises(ValueError, match="INPUT.EM.BACKGROUND_RADIUS"):
        preprocess.subtract_background(np.zeros((8, 8)), radius=0)


def test_model_input_dtype_follows_the_stored_bit_depth():
    assert preprocess.model_input_dtype(np.uint8) == np.uint8
    for stored in (np.uint16, np.int32, np.float32, np.float64):
        assert preprocess.model_input_dtype(stored) == np.float32
    assert preprocess.model_input_dtype(np.uint16, "uint8") == np.uint8
    with pytest.raises(ValueError, match="INPUT.EM.INPUT_DTYPE"):
        preprocess.model_input_dtype(np.uint16, "float16")


def test_float32_input_keeps_contrast_that_uint8_rounds_away():
    """Two 16-bit objects 40 counts apart on a 60000-count range: one grey level in uint8,
    distinct in float32."""
    image = np.zeros((8, 8), np.uint16)
    image[:, 4:] = 60000
    image[2, 1], image[5, 1] = 20000, 20040
    f32 = to_model_input(image, clip_percentiles=None, out_dtype="auto", channels=1)[..., 0]
    u8 = to_model_input(image, clip_percentiles=None, out_dtype=np.uint8, channels=1)[..., 0]
    assert f32.dtype == np.float32 and f32[5, 1] - f32[2, 1] == pytest.approx(40 * 255 / 60000, rel=1e-4)
    assert u8[5, 1] == u8[2, 1]
