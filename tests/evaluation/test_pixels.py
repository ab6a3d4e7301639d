"""emdet.evaluation.pixels: Table I metrics on hand-made masks with known answers."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from emdet.evaluation import pixels
from emdet.evaluation.pixels import METRICS, confusion_counts, pixel_metrics


def test_docstring_examples():
    result = doctest.testmod(pixels, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def _pair():
    # 4 x 5 image: gt has 6 positives; pred hits 4 of them and adds 2 false positives.
    gt = np.zeros((4, 5), dtype=bool)
    gt[0, :3] = gt[1, :3] = True  # 6 px
    pred = np.zeros((4, 5), dtype=bool)
    pred[0, :2] = pred[1, :2] = True  # 4 TP
    pred[3, 3:] = True  # 2 FP
    return pred, gt  # TP 4, FP 2, FN 2, TN 12


def test_known_answer_every_metric():
    pred, gt = _pair()
    row = pixel_metrics(pred, gt).loc["pooled"]
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (4, 2, 2, 12)
    assert row["accuracy"] == pytest.approx(16 / 20)
    assert row["balanced_accuracy"] == pytest.approx((4 / 6 + 12 / 14) / 2)
    assert row["jaccard"] == pytest.approx(4 / 8)
    assert row["f1"] == pytest.approx(8 / 12)
    assert row["precision"] == pytest.approx(4 / 6)
    assert row["recall"] == pytest.approx(4 / 6)
    assert list(METRICS) == [c for c in row.index if c in METRICS]


def test_label_images_with_positive_class():
    labels_gt = np.array([[0, 1, 2, 2], [1, 1, 2, 0]])
    labels_pred = np.array([[0, 2, 2, 1], [1, 1, 2, 2]])
    c = confusion_counts(labels_pred, labels_gt, positive=2)
    assert c == {"tp": 2, "fp": 2, "fn": 1, "tn": 3}
    row = pixel_metrics(labels_pred, labels_gt, positive=2).loc["pooled"]
    assert row["jaccard"] == pytest.approx(2 / 5)


def test_pooled_sums_counts_while_per_image_rows_differ():
    pred, gt = _pair()
    empty_gt = np.zeros_like(gt)
    table = pixel_metrics([pred, pred], [gt, empty_gt], names=["a", "b"])
    assert list(table.index) == ["a", "b", "pooled"]
    assert table.loc["pooled", "tp"] == 4 and table.loc["pooled", "fp"] == 2 + 6
    assert table.loc["pooled", "jaccard"] == pytest.approx(4 / (4 + 8 + 2))
    # image b has no positives: recall and jaccard-with-tp are undefined / zero as documented
    assert np.isnan(table.loc["b", "recall"])
    assert table.loc["b", "jaccard"] == 0.0 and table.loc["b", "precision"] == 0.0
    assert table.loc["b", "balanced_accuracy"] == pytest.approx(14 / 20)  # specificity only


def test_perfect_and_all_wrong():
    gt = np.eye(4, dtype=bool)
    perfect = pixel_metrics(gt, gt).loc["pooled"]
    assert all(perfect[m] == 1.0 for m in METRICS)
    wrong = pixel_metrics(~gt, gt).loc["pooled"]
    assert wrong["accuracy"] == 0.0 and wrong["jaccard"] == 0.0 and wrong["f1"] == 0.0


def test_zero_division_value_and_empty_both():
    z = np.zeros((3, 3), dtype=bool)
    row = pixel_metrics(z, z).loc["pooled"]
    assert row["accuracy"] == 1.0 and np.isnan(row["jaccard"]) and np.isnan(row["precision"])
    row = pixel_metrics(z, z, zero_division=0.0).loc["pooled"]
    assert row["jaccard"] == 0.0


def test_valid_mask_and_stack_input():
    pred, gt = _pair()
    valid = np.ones_like(gt)
    valid[3] = False  # drops the two false positives
    row = pixel_metrics(pred, gt, valid=valid).loc["pooled"]
    assert (row["fp"], row["tn"]) == (0, 9)
    table = pixel_metrics(np.stack([pred, pred]), np.stack([gt, gt]))
    assert len(table) == 3 and table.loc["pooled", "tp"] == 8


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(np.zeros((2, 2), bool), np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="one prediction per ground-truth image"):
        pixel_metrics([np.zeros((2, 2), bool)], [np.zeros((2, 2), bool)] * 2)
