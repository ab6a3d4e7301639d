"""emdet.evaluation.points: Hungarian matching edge cases and point metrics with known answers."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest

from emdet.evaluation import points
from emdet.evaluation.points import match_points, point_metrics, point_metrics_by_class


def test_docstring_examples():
    result = doctest.testmod(points, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_empty_inputs():
    for pred, gt in (([], []), ([[1, 2]], []), ([], [[1, 2]]), (np.zeros((0, 2)), [[0, 0]])):
        p, g, d = match_points(pred, gt, radius=3)
        assert len(p) == len(g) == len(d) == 0
    t = point_metrics([], [], radius=3).loc["pooled"]
    assert (t["tp"], t["fp"], t["fn"]) == (0, 0, 0) and np.isnan(t["precision"])
    t = point_metrics([], [[1.0, 1.0]], radius=3).loc["pooled"]
    assert t["recall"] == 0.0 and t["fn_rate"] == 1.0 and np.isnan(t["precision"])


def test_all_false_positives():
    t = point_metrics([[0, 0], [50, 50], [90, 10]], [[20, 20]], radius=5).loc["pooled"]
    assert (t["tp"], t["fp"], t["fn"]) == (0, 3, 1)
    assert t["precision"] == 0.0 and t["fp_rate"] == 1.0 and t["f1"] == 0.0


def test_radius_boundary_is_inclusive():
    gt = [[10.0, 10.0]]
    assert len(match_points([[13.0, 14.0]], gt, radius=5.0)[0]) == 1  # distance exactly 5
    assert len(match_points([[13.0, 14.000001]], gt, radius=5.0)[0]) == 0
    assert len(match_points([[10.0, 10.0]], gt, radius=0.0)[0]) == 1


def test_one_to_one_maximises_matches_not_greedy():
    # Greedy nearest-first would pair p0-g0 (d=1) and leave p1 (only near g0) unmatched.
    pred = np.array([[1.0, 0.0], [-2.5, 0.0]])
    gt = np.array([[0.0, 0.0], [3.5, 0.0]])
    p, g, d = match_points(pred, gt, radius=3.0)
    assert sorted(zip(p.tolist(), g.tolist(), strict=True)) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(sorted(d), [2.5, 2.5])


def test_two_predictions_one_gt():
    p, g, d = match_points([[0, 0], [1, 0]], [[0.9, 0]], radius=2)
    assert p.tolist() == [1] and g.tolist() == [0] and d[0] == pytest.approx(0.1)
    t = point_metrics([[0, 0], [1, 0]], [[0.9, 0]], radius=2).loc["pooled"]
    assert (t["tp"], t["fp"], t["fn"]) == (1, 1, 0) and t["fp_rate"] == 0.5


def test_matches_brute_force_on_random_clusters():
    rng = np.random.default_rng(3)
    for _ in range(30):
        pred = rng.uniform(0, 10, (rng.integers(0, 6), 2))
        gt = rng.uniform(0, 10, (rng.integers(0, 6), 2))
        p, g, d = match_points(pred, gt, radius=2.5)
        best = (0, 0.0)
        for perm in itertools.permutations(range(len(gt)), min(len(pred), len(gt))):
            pairs = [(i, j) for i, j in zip(range(len(pred)), perm, strict=False)
                     if np.hypot(*(pred[i] - gt[j])) <= 2.5]
            score = (len(pairs), -sum(np.hypot(*(pred[i] - gt[j])) for i, j in pairs))
            best = max(best, score)
        if len(pred) <= len(gt):
            assert len(p) == best[0]
            assert -d.sum() == pytest.approx(best[1])
        assert len(set(p.tolist())) == len(p) and len(set(g.tolist())) == len(g)


def test_per_image_and_pooled_known_answer():
    pred = [np.array([[0, 0], [10, 10]]), np.array([[5, 5]])]
    gt = [np.array([[1, 0], [30, 30]]), np.array([[5, 6], [50, 50], [60, 60]])]
    t = point_metrics(pred, gt, radius=2, names=["a", "b"])
    assert list(t.index) == ["a", "b", "pooled"]
    a, b, pooled = t.loc["a"], t.loc["b"], t.loc["pooled"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 1, 1)
    assert (b["tp"], b["fp"], b["fn"]) == (1, 0, 2)
    assert (pooled["tp"], pooled["fp"], pooled["fn"]) == (2, 1, 3)
    assert pooled["precision"] == pytest.approx(2 / 3)
    assert pooled["recall"] == pytest.approx(2 / 5)
    assert pooled["f1"] == pytest.approx(4 / 8)
    assert pooled["fp_rate"] == pytest.approx(1 / 3) and pooled["fn_rate"] == pytest.approx(3 / 5)
    assert pooled["mean_distance"] == pytest.approx(1.0)


def test_by_class_matches_only_within_a_class():
    pred = [np.array([[0, 0], [10, 0]])]
    pred_cls = [np.array([0, 1])]
    gt = [np.array([[0, 0.5], [10, 0.5]])]
    gt_cls = [np.array([1, 1])]  # the first prediction has the wrong class
    t = point_metrics_by_class(pred, pred_cls, gt, gt_cls, radius=2, classes=["a", "b"])
    pooled = t[t["image"] == "pooled"].set_index("class")
    assert pooled.loc["a", "fp"] == 1 and pooled.loc["a", "n_gt"] == 0
    assert pooled.loc["b", "tp"] == 1 and pooled.loc["b", "fn"] == 1
    assert (pooled.loc["all", "tp"], pooled.loc["all", "fp"], pooled.loc["all", "fn"]) == (1, 1, 1)


def test_bad_points_raise():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        match_points(np.zeros(3), [[0, 0]], radius=1)
    with pytest.raises(ValueError, match="radius"):
        match_points([[0, 0]], [[0, 0]], radius=-1)
