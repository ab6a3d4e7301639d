"""The calibrated score threshold: one-to-one matching in score order and the F1 curve."""
import json

import numpy as np
import pytest

from emdet.evaluation.threshold import (
    THRESHOLD_FILE,
    best_threshold,
    f1_curve,
    match_by_score,
    read_threshold,
)


def test_matching_is_one_to_one_highest_score_first():
    # two predictions overlap the same annotation; the higher-scoring one takes it
    iou = np.array([[0.6, 0.0], [0.9, 0.0], [0.0, 0.4]])
    scores = np.array([0.9, 0.5, 0.8])
    assert match_by_score(iou, scores).tolist() == [True, False, False]
    assert match_by_score(iou, scores, min_iou=0.3).tolist() == [True, False, True]
    assert match_by_score(np.zeros((0, 3)), np.zeros(0)).tolist() == []


def test_f1_curve_and_best_threshold_have_known_answers():
    # image 1: 3 annotations, detections 0.9 (hit), 0.8 (hit), 0.3 (miss), 0.2 (hit)
    # image 2: 1 annotation, detections 0.7 (hit), 0.1 (miss)
    images = [(np.array([0.9, 0.8, 0.3, 0.2]), np.array([True, True, False, True]), 3),
              (np.array([0.7, 0.1]), np.array([True, False]), 1)]
    curve = f1_curve(images)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.7, 0.3, 0.2, 0.1]
    # at 0.7: tp 3, fp 0, fn 1 -> F1 6/7; at 0.2: tp 4, fp 1, fn 0 -> F1 8/9 (best)
    assert curve["f1"][2] == pytest.approx(6 / 7)
    assert curve["f1"][4] == pytest.approx(8 / 9)
    best = best_threshold(curve)
    assert best == pytest.approx({"threshold": 0.2, "precision": 0.8, "recall": 1.0,
                                  "f1": 8 / 9, "count_ratio": 5 / 4})
    assert best_threshold(f1_curve([])) is None


def test_ties_in_score_are_one_threshold():
    curve = f1_curve([(np.array([0.5, 0.5, 0.4]), np.array([True, False, True]), 2)])
    assert curve["threshold"].tolist() == [0.5, 0.4]
    assert curve["precision"].tolist() == pytest.approx([0.5, 2 / 3])


def test_read_threshold_beside_the_weights(tmp_path):
    weights = tmp_path / "model_final.pth"
    assert read_threshold(weights) is None
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({"threshold": 0.62}))
    assert read_threshold(weights) == 0.62
    (tmp_path / THRESHOLD_FILE).write_text("{broken")
    assert read_threshold(weights) is None


def test_calibration_takes_the_middle_of_the_near_best_plateau():
    """Thresholds within one standard error of the best F1 are equally good; the middle one is
    taken. The same curve with 100 times the annotations narrows the plateau to the argmax."""
    # 20 annotations; detections from 0.95 down: 17 hits, 2 misses, a hit, 5 misses. F1 peaks
    # at 0.919 (threshold 0.35, the 17th hit) and stays within one standard error (0.061) of
    # it from threshold 0.4 down to 0.2375: the middle of those six is 0.275
    scores = np.round(np.linspace(0.95, 0.05, 25), 4)
    matched = np.array([True] * 17 + [False, False, True] + [False] * 5)
    curve = f1_curve([(scores, matched, 20)])
    top = curve["f1"].max()
    se = np.sqrt(top * (1 - top) / 20)
    near = np.flatnonzero(curve["f1"] >= top - se - 1e-12)
    best = best_threshold(curve)
    assert best["threshold"] == curve["threshold"][near[len(near) // 2]]
    assert best["threshold"] == pytest.approx(0.275) and best["f1"] == pytest.approx(34 / 39)
    assert curve["threshold"][np.argmax(curve["f1"])] == pytest.approx(0.35)
    many = f1_curve([(np.tile(scores, 100), np.tile(matched, 100), 2000)])
    assert best_threshold(many)["threshold"] == many["threshold"][np.argmax(many["f1"])]
