"""emdet.dense.heatmap and losses: targets peak at the right pixel, peaks give the points back."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from emdet.dense import heatmap as heatmap_module
from emdet.dense.heatmap import (
    calibrate_thresholds,
    find_peaks,
    gaussian_heatmap,
    heatmap_points,
    points_from_labels,
)
from emdet.dense.losses import heatmap_loss, segmentation_loss, unet_weight_map


def test_docstring_examples():
    result = doctest.testmod(heatmap_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_target_peaks_at_the_annotated_pixel():
    # (x, y) = (j + 0.5, i + 0.5) is the centre of pixel (row i, col j)
    points = np.array([[10.5, 20.5], [40.5, 5.5], [0.5, 0.5]])
    hm = gaussian_heatmap(points, (32, 48), sigma=2.0)
    assert hm.shape == (1, 32, 48) and hm.dtype == np.float32
    for x, y in points:
        i, j = int(y), int(x)
        assert hm[0, i, j] == 1.0
        assert hm[0, i, j] > hm[0, i + 1, j] if i + 1 < 32 else True
    assert hm[0, 20, 11] == pytest.approx(np.exp(-1 / 8), rel=1e-6)  # one pixel away


def test_target_channels_and_overlap_takes_the_maximum():
    hm = gaussian_heatmap([[5.5, 5.5], [6.5, 5.5], [20.5, 3.5]], (16, 32), sigma=1.5,
                          classes=[0, 0, 1], num_classes=2)
    assert hm.shape == (2, 16, 32)
    assert hm[0].max() == 1.0 and hm[0, 5, 5] == 1.0 and hm[0, 5, 6] == 1.0
    assert hm[1, 3, 20] == 1.0 and hm[1, 5, 5] == 0.0
    with pytest.raises(ValueError, match="class indices"):
        gaussian_heatmap([[1, 1]], (4, 4), classes=[2], num_classes=2)


def test_find_peaks_recovers_pixel_centre_points_exactly():
    rng = np.random.default_rng(0)
    grid = np.array([(c, r) for c in range(4, 92, 8) for r in range(4, 60, 8)])
    points = grid[rng.choice(len(grid), 8, replace=False)] + 0.5
    hm = gaussian_heatmap(points, (64, 96), sigma=2.0)[0]
    found, scores = find_peaks(hm, threshold=0.5, min_distance=3)
    assert len(found) == len(points) and np.all(scores == 1.0)
    key = np.lexsort(found.T)
    np.testing.assert_array_equal(found[key], points[np.lexsort(points.T)])
    plain, _ = find_peaks(hm, threshold=0.5, subpixel=False)
    np.testing.assert_array_equal(np.sort(plain, 0), np.sort(points, 0))


def test_find_peaks_subpixel_is_exact_for_gaussians():
    points = np.array([[10.2, 12.9], [30.77, 8.41], [20.5, 25.0]])
    hm = gaussian_heatmap(points, (40, 48), sigma=2.0)[0]
    found, _ = find_peaks(hm, threshold=0.3)
    key = np.argsort(found[:, 0])
    np.testing.assert_allclose(found[key], points[np.argsort(points[:, 0])], atol=1e-4)


def test_find_peaks_threshold_min_distance_and_border():
    hm = gaussian_heatmap([[0.5, 0.5], [5.5, 0.5]], (16, 32), sigma=1.0)[0]
    hm += 0.2 * gaussian_heatmap([[20.5, 10.5]], (16, 32), sigma=1.0)[0]  # a weak peak
    found, _ = find_peaks(hm, threshold=0.3, min_distance=1)
    assert sorted(map(tuple, found)) == [(0.5, 0.5), (5.5, 0.5)]  # border peaks kept
    merged, _ = find_peaks(hm, threshold=0.1, min_distance=6)
    assert len(merged) == 2  # 0.5 and 5.5 are 5 px apart: only the stronger (first) stays
    assert find_peaks(np.zeros((8, 8)), threshold=0.1)[0].shape == (0, 2)


def test_heatmap_points_per_channel():
    hm = gaussian_heatmap([[3.5, 3.5], [12.5, 8.5]], (16, 16), sigma=1.0, classes=[1, 0],
                          num_classes=2)
    xy, cls, scores = heatmap_points(hm, threshold=0.5)
    assert cls.tolist() == [0, 1] and xy.tolist() == [[12.5, 8.5], [3.5, 3.5]]


def test_heatmap_rotates_with_the_points():
    # quarter turns of the pixel grid map pixel centres to pixel centres: augmenting the
    # image and the target together is exact
    n = 20
    points = np.array([[3.5, 7.5], [12.25, 4.75]])
    hm = gaussian_heatmap(points, (n, n), sigma=1.5)[0]
    rotated = np.rot90(hm)  # counter-clockwise: (x, y) -> (y, n - x)
    turned = np.stack([points[:, 1], n - points[:, 0]], 1)
    np.testing.assert_allclose(rotated, gaussian_heatmap(turned, (n, n), sigma=1.5)[0],
                               atol=1e-6)


def test_points_from_labels_centroids_and_majority_class():
    labels = np.zeros((10, 12), dtype=np.uint8)
    labels[1:4, 1:4] = 2  # centroid (2, 2) -> (x, y) = (2.5, 2.5)
    labels[6:9, 7:11] = 1
    labels[6, 7] = 3
    probs = np.zeros((4, 10, 12), np.float32)
    probs[2, 1:4, 1:4] = 0.8
    xy, cls, scores = points_from_labels(labels, probabilities=probs)
    order = np.argsort(xy[:, 0])
    assert cls[order].tolist() == [2, 1]
    np.testing.assert_allclose(xy[order][0], [2.5, 2.5])
    assert scores[order][0] == pytest.approx(0.8)
    assert points_from_labels(np.zeros((4, 4)))[0].shape == (0, 2)


def test_unet_weight_map_is_high_in_narrow_gaps():
    labels = np.zeros((20, 40), dtype=np.uint8)
    labels[5:15, 5:15] = 1
    labels[5:15, 17:27] = 1  # 2-pixel gap at columns 15-16
    w = unet_weight_map(labels, w0=10, sigma=3)
    assert w[10, 15] > 5 + w[10, 35]  # in the gap vs far background
    assert w[10, 10] == pytest.approx(w[12, 12])  # object pixels: class weight only
    balanced = unet_weight_map(labels, w0=0)
    assert balanced.mean() == pytest.approx(1.0)


def test_losses_reduce_to_plain_cross_entropy_and_weight_peaks():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert segmentation_loss(logits, labels) == pytest.approx(float(plain), rel=1e-6)
    cw = torch.tensor([1.0, 2.0, 0.5])
    weighted = torch.nn.functional.cross_entropy(logits, labels, weight=cw)
    assert segmentation_loss(logits, labels, class_weights=cw) == pytest.approx(
        float(weighted), rel=1e-6)
    labels[0] = -1  # ignored padding
    assert segmentation_loss(logits, labels) == pytest.approx(float(
        torch.nn.functional.cross_entropy(logits[1:], labels[1:])), rel=1e-6)
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 4, 4] = 1.0
    miss_peak = torch.full((1, 1, 8, 8), -5.0)
    assert heatmap_loss(miss_peak, target, peak_weight=10) > heatmap_loss(
        miss_peak, target, peak_weight=0)


def _scene(rng, n_true=6, n_false=4, true_peak=0.8, false_peak=0.5, size=64):
    """(1, H, W) heatmap: annotated points peak at ``true_peak``, spurious ones at
    ``false_peak``; returns the heatmap and the annotated points."""
    def draw():  # at pixel centres, so each peak pixel holds exactly its peak value
        return rng.integers(4, size - 4, (n_true + n_false, 2)) + 0.5

    pts = draw()
    while True:  # keep the peaks apart
        d = np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(len(pts)) * 99
        if d.min() > 8:
            break
        pts = draw()
    hm = np.zeros((1, size, size), np.float32)
    for k, p in enumerate(pts):
        peak = true_peak if k < n_true else false_peak
        hm = np.maximum(hm, peak * gaussian_heatmap(p[None], (size, size), sigma=1.5))
    return hm, pts[:n_true]


def test_calibrated_threshold_separates_true_from_spurious_peaks():
    rng = np.random.default_rng(0)
    scenes = [_scene(rng) for _ in range(3)]
    heatmaps = [h for h, _ in scenes]
    points = [p for _, p in scenes]
    classes = [np.zeros(len(p), np.int64) for p in points]
    t = calibrate_thresholds(heatmaps, points, classes, radius=2.0)
    # peaks are kept when > t: 0.5 <= t < 0.8 gives F1 1; the middle of 0.50..0.75 is 0.65
    assert t.tolist() == [pytest.approx(0.65)]
    xy, cls, _ = heatmap_points(heatmaps[0], threshold=t)
    assert len(xy) == len(points[0])
    # a fixed low threshold keeps the spurious peaks too
    assert len(heatmap_points(heatmaps[0], threshold=0.3)[0]) == 10


def test_calibration_per_class_and_a_class_without_points_keeps_the_default():
    rng = np.random.default_rng(1)
    (a, pa), (b, pb) = _scene(rng), _scene(rng, true_peak=0.45, false_peak=0.2)
    empty = np.zeros_like(a)
    hm = np.concatenate([a, b, empty])  # (3, H, W): class 2 has no annotation at all
    pts = np.concatenate([pa, pb])
    cls = np.r_[np.zeros(len(pa), np.int64), np.ones(len(pb), np.int64)]
    t = calibrate_thresholds([hm], [pts], [cls], radius=2.0, default=0.3)
    assert t[0] == pytest.approx(0.65) and 0.2 <= t[1] < 0.45 and t[2] == 0.3
    xy, found, _ = heatmap_points(hm, threshold=t)
    assert np.bincount(found, minlength=3).tolist() == [len(pa), len(pb), 0]
