"""Repeated k-fold splits and mean +- spread summaries, shared by the U-Net and the Bragg filter.

Sadre et al. train with 5-fold cross-validation repeated twice with a fresh shuffle; comparing
two methods is only fair on identical folds, so both take their splits from
:func:`kfold_splits`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["kfold_splits", "summarize_folds"]


def kfold_splits(
    n: int, folds: int, *, repeats: int = 1, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Repeated k-fold ``(train, test)`` index splits.

    Parameters
    ----------
    n : int
        Number of items (images).
    folds : int
        Number of folds, ``2 <= folds <= n``.
    repeats : int, keyword-only, default 1
        Number of shuffles; repeat ``r`` uses ``numpy.random.default_rng([seed, r])``.
    seed : int, keyword-only, default 0

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        ``repeats * folds`` pairs of sorted int64 index arrays; in each repeat every item is in
        exactly one test fold (fold sizes differ by at most one).

    Examples
    --------
    >>> [test.tolist() for _, test in kfold_splits(5, 5)]
    [[4], [0], [2], [3], [1]]
    """
    if not 2 <= folds <= n:
        raise ValueError(
            f"k-fold cross-validation needs 2 <= folds <= number of images; got folds={folds} "
            f"for {n} images. Use fewer folds or more images."
        )
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    splits = []
    for r in range(repeats):
        order = np.random.default_rng([seed, r]).permutation(n)
        for test in np.array_split(order, folds):
            test = np.sort(test).astype(np.int64)
            train = np.setdiff1d(np.arange(n), test).astype(np.int64)
            splits.append((train, test))
    return splits


def summarize_folds(rows: Iterable[dict], *, skip: Iterable[str] = ("fold", "repeat")):
    """Mean, standard deviation, min and max of every numeric column over folds.

    Parameters
    ----------
    rows : iterable of dict
        One dict of metrics per fold.
    skip : iterable of str, keyword-only
        Columns to leave out (identifiers).

    Returns
    -------
    pandas.DataFrame
        Index: metric names; columns ``mean``, ``std`` (sample, ``ddof=1``; 0 for one fold),
        ``min``, ``max``, ``n``.
    """
    import pandas as pd

    table = pd.DataFrame(list(rows))
    table = table.drop(columns=[c for c in skip if c in table.columns])
    table = table.select_dtypes(include=[np.number])
    out = pd.DataFrame(
        {
            "mean": table.mean(),
            "std": table.std(ddof=1).fillna(0.0) if len(table) > 1 else table.mean() * 0.0,
            "min": table.min(),
            "max": table.max(),
            "n": table.count(),
        }
    )
    return out
