"""Pixel-wise segmentation metrics of Sadre et al. (Table I), per image and pooled.

With TP, FP, FN, TN counted over pixels (Sadre et al. Table II: ``Y`` ground truth, ``Y'``
prediction, positive = the class of interest, e.g. contamination):

=====================  ==================================================
accuracy               ``(TP + TN) / (TP + TN + FP + FN)``
balanced_accuracy      ``(TP / (TP + FN) + TN / (TN + FP)) / 2``
jaccard                ``TP / (TP + FP + FN)`` (intersection over union)
f1                     ``2 TP / (2 TP + FP + FN)`` (Dice)
precision              ``TP / (TP + FP)``
recall                 ``TP / (TP + FN)``
=====================  ==================================================

These are scikit-learn's binary ``accuracy_score``, ``balanced_accuracy_score``,
``jaccard_score``, ``f1_score``, ``precision_score`` and ``recall_score``, which the paper used
(known-answer tests in ``tests/evaluation/test_pixels.py``). A ratio whose denominator is zero
(e.g. precision of an image with no predicted positives) is ``zero_division`` (NaN by default,
so means over images skip it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["METRICS", "confusion_counts", "pixel_metrics"]

#: Metric columns of :func:`pixel_metrics`, in Table I order.
METRICS = ("accuracy", "balanced_accuracy", "jaccard", "f1", "precision", "recall")


def _binary(x: np.ndarray, positive: object, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        return x
    if x.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a bool mask or a label image, got dtype {x.dtype}.")
    return x == positive


def confusion_counts(
    pred: np.ndarray, gt: np.ndarray, *, positive: object = 1, valid: np.ndarray | None = None
) -> dict[str, int]:
    """Pixel counts ``tp``, ``fp``, ``fn``, ``tn`` of one image.

    Parameters
    ----------
    pred, gt : numpy.ndarray
        ``(H, W)`` bool masks, or label images compared with ``positive``.
    positive : keyword-only, default 1
        Label of the positive class for non-bool inputs.
    valid : numpy.ndarray, keyword-only
        ``(H, W)`` bool; only these pixels are counted.

    Returns
    -------
    dict of str to int
    """
    p = _binary(pred, positive, "pred")
    g = _binary(gt, positive, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has shape {p.shape} but gt {g.shape}; they must match.")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != p.shape:
            raise ValueError(f"valid has shape {valid.shape}, the masks {p.shape}.")
        p, g = p[valid], g[valid]
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: float, den: float, zero_division: float) -> float:
    return float(num) / float(den) if den > 0 else float(zero_division)


def _metrics(c: dict[str, int], zero_division: float) -> dict[str, float]:
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    recall = _ratio(tp, tp + fn, zero_division)
    specificity = _ratio(tn, tn + fp, zero_division)
    if tp + fn == 0 or tn + fp == 0:  # one class absent: sklearn averages the defined rate only
        balanced = recall if tn + fp == 0 else specificity
    else:
        balanced = 0.5 * (recall + specificity)
    return {
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn, zero_division),
        "balanced_accuracy": balanced,
        "jaccard": _ratio(tp, tp + fp + fn, zero_division),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, zero_division),
        "precision": _ratio(tp, tp + fp, zero_division),
        "recall": recall,
    }


def pixel_metrics(
    pred: np.ndarray | Sequence[np.ndarray],
    gt: np.ndarray | Sequence[np.ndarray],
    *,
    positive: object = 1,
    valid: np.ndarray | Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    zero_division: float = np.nan,
):
    """Accuracy, balanced accuracy, Jaccard, F1, precision and recall per image and pooled.

    Parameters
    ----------
    pred, gt : numpy.ndarray or sequence of numpy.ndarray
        One ``(H, W)`` image or a sequence (or ``(N, H, W)`` stack) of them; bool masks, or
        integer label images of which ``positive`` is the positive class.
    positive : keyword-only, default 1
        Positive label for non-bool inputs (e.g. 2 = contamination in the synthetic graphene
        masks).
    valid : keyword-only
        Optional bool masks of the pixels to count (same layout as ``gt``).
    names : sequence of str, keyword-only
        Row names of the images (default ``"0", "1", ...``).
    zero_division : float, keyword-only, default NaN
        Value of a ratio whose denominator is zero.

    Returns
    -------
    pandas.DataFrame
        One row per image plus a last row ``"pooled"`` computed from the summed counts of all
        images (what the paper's Table I reports); columns ``tp, fp, fn, tn`` and
        :data:`METRICS`. ``table.drop("pooled").mean()`` gives the per-image average.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 0]], dtype=bool)
    >>> pred = np.array([[1, 0, 1, 0]], dtype=bool)
    >>> pixel_metrics(pred, gt).loc["pooled", ["accuracy", "jaccard", "f1"]].tolist()
    [0.5, 0.3333333333333333, 0.5]
    """
    import pandas as pd

    preds, gts = _as_list(pred), _as_list(gt)
    valids = _as_list(valid) if valid is not None else [None] * len(gts)
    if len(preds) != len(gts) or len(valids) != len(gts):
        raise ValueError(
            f"pixel_metrics got {len(preds)} predictions and {len(gts)} ground-truth images; "
            "pass one prediction per ground-truth image."
        )
    if names is None:
        names = [str(i) for i in range(len(gts))]
    elif len(names) != len(gts):
        raise ValueError(f"{len(names)} names for {len(gts)} images.")
    rows, total = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for p, g, v in zip(preds, gts, valids, strict=True):
        c = confusion_counts(p, g, positive=positive, valid=v)
        for k in total:
            total[k] += c[k]
        rows.append({**c, **_metrics(c, zero_division)})
    rows.append({**total, **_metrics(total, zero_division)})
    table = pd.DataFrame(rows, index=[*map(str, names), "pooled"])
    table.index.name = "image"
    return table


def _as_list(x) -> list:
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            return [x]
        if x.ndim == 3:
            return list(x)
        raise ValueError(f"expected an (H, W) image or (N, H, W) stack, got shape {x.shape}.")
    return list(x)
