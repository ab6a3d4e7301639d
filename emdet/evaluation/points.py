"""Point-detection metrics: one-to-one matching within a radius, per image and pooled.

A predicted point and an annotated point *match* when they are at most ``radius`` pixels apart
(inclusive: a distance of exactly ``radius`` matches). Each point matches at most one other;
the matching maximises the number of matched pairs and, among those, minimises the summed
distance (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, on each cluster of
points that lie within ``radius`` of one another). Then

==========  ===================================  ===========================================
TP          matched predictions                  = matched annotations
FP          unmatched predictions
FN          unmatched annotations
precision   ``TP / (TP + FP)``                   share of detections that are right
recall      ``TP / (TP + FN)``                   share of annotated points found
f1          ``2 TP / (2 TP + FP + FN)``
fp_rate     ``FP / (TP + FP)`` = 1 - precision   false-discovery rate: share of detections
                                                 that match no annotation
fn_rate     ``FN / (TP + FN)`` = 1 - recall      miss rate: share of annotations not found
==========  ===================================  ===========================================

Rates are fractions; multiply by 100 for the percentages Lin et al. report. Note that Lin et
al. give precision and recall near 0.7 *and* FP/FN rates of 2.9 % / 3.3 %, which cannot both
hold with per-detection rates, so theirs are probably per pixel of the heatmap; the numbers of
this module are per point and not comparable to those two. A ratio with a zero denominator is
``zero_division`` (NaN by default; e.g. precision of an image without predictions).

Points are ``(x, y)`` in pixels (columns 0 and 1 of an ``(N, >=2)`` array; more columns such as
class or score are ignored).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["POINT_METRICS", "match_points", "point_metrics", "point_metrics_by_class"]

#: Metric columns of :func:`point_metrics`.
POINT_METRICS = ("precision", "recall", "f1", "fp_rate", "fn_rate")


def _xy(points: np.ndarray | Sequence, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points, got shape {arr.shape}.")
    if not np.isfinite(arr[:, :2]).all():
        raise ValueError(f"{name} has NaN or infinite coordinates.")
    return arr[:, :2]


def match_points(
    pred: np.ndarray, gt: np.ndarray, *, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of predicted to annotated points within ``radius`` pixels.

    Parameters
    ----------
    pred : numpy.ndarray
        ``(N, 2)`` predicted ``(x, y)`` (extra columns ignored).
    gt : numpy.ndarray
        ``(M, 2)`` annotated ``(x, y)``.
    radius : float, keyword-only
        Largest matching distance in pixels (inclusive).

    Returns
    -------
    pred_index : numpy.ndarray
        ``(K,)`` int64 indices into ``pred`` of the matched predictions.
    gt_index : numpy.ndarray
        ``(K,)`` int64 indices into ``gt`` of their partners.
    distance : numpy.ndarray
        ``(K,)`` float64 distances, all ``<= radius``. Pairs are sorted by ``pred_index``.

    Examples
    --------
    >>> p, g, d = match_points([[0, 0], [10, 0]], [[1, 0], [30, 0]], radius=2)
    >>> p.tolist(), g.tolist(), d.tolist()
    ([0], [0], [1.0])
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    if not radius >= 0:
        raise ValueError(f"radius must be >= 0 pixels, got {radius}.")
    p, g = _xy(pred, "pred"), _xy(gt, "gt")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(p) == 0 or len(g) == 0:
        return empty
    # Candidate pairs (slightly generous search, then the exact inclusive test).
    cand = cKDTree(p).query_ball_tree(cKDTree(g), r=radius * (1 + 1e-9) + 1e-12)
    pi = np.repeat(np.arange(len(p)), [len(c) for c in cand]).astype(np.int64)
    gi = np.fromiter((j for c in cand for j in c), dtype=np.int64, count=len(pi))
    if len(pi) == 0:
        return empty
    dist = np.hypot(*(p[pi] - g[gi]).T)
    ok = dist <= radius
    pi, gi, dist = pi[ok], gi[ok], dist[ok]
    if len(pi) == 0:
        return empty
    n, m = len(p), len(g)
    graph = coo_matrix((np.ones(len(pi)), (pi, n + gi)), shape=(n + m, n + m))
    _, labels = connected_components(graph, directed=False)
    out_p, out_g, out_d = [], [], []
    comp_of_pair = labels[pi]
    order = np.argsort(comp_of_pair, kind="stable")
    pi, gi, dist, comp_of_pair = pi[order], gi[order], dist[order], comp_of_pair[order]
    bounds = np.flatnonzero(np.diff(comp_of_pair)) + 1
    for cp, cg, cd in zip(np.split(pi, bounds), np.split(gi, bounds), np.split(dist, bounds),
                          strict=True):
        rows, r_idx = np.unique(cp, return_inverse=True)
        cols, c_idx = np.unique(cg, return_inverse=True)
        if len(rows) == 1 or len(cols) == 1:  # a star: the closest partner wins
            k = int(np.argmin(cd))
            out_p.append(cp[k : k + 1])
            out_g.append(cg[k : k + 1])
            out_d.append(cd[k : k + 1])
            continue
        big = (radius + 1.0) * (min(len(rows), len(cols)) + 1)  # > any all-feasible total
        cost = np.full((len(rows), len(cols)), big)
        cost[r_idx, c_idx] = cd
        rr, cc = linear_sum_assignment(cost)
        keep = cost[rr, cc] < big
        out_p.append(rows[rr[keep]])
        out_g.append(cols[cc[keep]])
        out_d.append(cost[rr[keep], cc[keep]])
    mp, mg, md = (np.concatenate(x) for x in (out_p, out_g, out_d))
    order = np.argsort(mp, kind="stable")
    return mp[order].astype(np.int64), mg[order].astype(np.int64), md[order].astype(np.float64)


def _ratio(num: float, den: float, zero_division: float) -> float:
    return float(num) / float(den) if den > 0 else float(zero_division)


def _row(n_pred: int, n_gt: int, tp: int, dist_sum: float, zero_division: float) -> dict:
    fp, fn = n_pred - tp, n_gt - tp
    return {
        "n_pred": n_pred,
        "n_gt": n_gt,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": _ratio(tp, tp + fp, zero_division),
        "recall": _ratio(tp, tp + fn, zero_division),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, zero_division),
        "fp_rate": _ratio(fp, tp + fp, zero_division),
        "fn_rate": _ratio(fn, tp + fn, zero_division),
        "mean_distance": _ratio(dist_sum, tp, np.nan),
    }


def _per_image(x, name: str) -> list[np.ndarray]:
    """One image's ``(N, 2)`` points, or a sequence of them, as a list per image."""
    if isinstance(x, np.ndarray) and x.dtype != object and x.ndim <= 2:
        return [x]
    try:
        arr = np.asarray(x, dtype=np.float64)
    except ValueError:  # ragged: one array per image
        return list(x)
    if arr.ndim <= 2:  # [] or [[x, y], ...]: a single image
        return [arr]
    if arr.ndim == 3:
        return list(x)
    raise ValueError(f"{name}: expected (N, 2) points or one (N, 2) array per image, got "
                     f"shape {arr.shape}.")


def point_metrics(
    pred: np.ndarray | Sequence[np.ndarray],
    gt: np.ndarray | Sequence[np.ndarray],
    *,
    radius: float,
    names: Sequence[str] | None = None,
    zero_division: float = np.nan,
):
    """Precision, recall, F1, false-positive and false-negative rates per image and pooled.

    Parameters
    ----------
    pred, gt : numpy.ndarray or sequence of numpy.ndarray
        One image's ``(N, 2)`` points, or a sequence with one array per image.
    radius : float, keyword-only
        Matching radius in pixels (see the module docstring).
    names : sequence of str, keyword-only
        Row names (default ``"0", "1", ...``).
    zero_division : float, keyword-only, default NaN
        Value of a ratio with a zero denominator.

    Returns
    -------
    pandas.DataFrame
        One row per image and a last row ``"pooled"`` from the summed counts; columns
        ``n_pred, n_gt, tp, fp, fn``, :data:`POINT_METRICS` and ``mean_distance`` (pixels,
        over matched pairs).

    Examples
    --------
    >>> t = point_metrics([[0, 0], [5, 5]], [[0, 1]], radius=2)
    >>> t.loc["pooled", ["tp", "fp", "fn", "precision", "recall", "fp_rate"]].tolist()
    [1.0, 1.0, 0.0, 0.5, 1.0, 0.5]
    """
    import pandas as pd

    preds, gts = _per_image(pred, "pred"), _per_image(gt, "gt")
    if len(preds) != len(gts):
        raise ValueError(
            f"point_metrics got points of {len(preds)} images for {len(gts)} annotated images."
        )
    if names is None:
        names = [str(i) for i in range(len(gts))]
    elif len(names) != len(gts):
        raise ValueError(f"{len(names)} names for {len(gts)} images.")
    rows = []
    totals = [0, 0, 0, 0.0]
    for p, g in zip(preds, gts, strict=True):
        p, g = _xy(p, "pred"), _xy(g, "gt")
        _, _, d = match_points(p, g, radius=radius)
        rows.append(_row(len(p), len(g), len(d), float(d.sum()), zero_division))
        for i, v in enumerate((len(p), len(g), len(d), float(d.sum()))):
            totals[i] += v
    rows.append(_row(*totals, zero_division))
    table = pd.DataFrame(rows, index=[*map(str, names), "pooled"])
    table.index.name = "image"
    return table


def point_metrics_by_class(
    pred: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    gt: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    *,
    radius: float,
    classes: Sequence[str],
    names: Sequence[str] | None = None,
    zero_division: float = np.nan,
):
    """:func:`point_metrics` for each class (points match only within their class).

    Parameters
    ----------
    pred, gt : sequence of numpy.ndarray
        Per image, ``(N, 2)`` points.
    pred_labels, gt_labels : sequence of numpy.ndarray
        Per image, ``(N,)`` integer class indices into ``classes``.
    radius : float, keyword-only
    classes : sequence of str, keyword-only
        Class names.
    names, zero_division : keyword-only
        As :func:`point_metrics`.

    Returns
    -------
    pandas.DataFrame
        Long table with columns ``class`` and ``image`` (image names and ``"pooled"``) plus the
        columns of :func:`point_metrics`; the class ``"all"`` sums the counts of every class.
    """
    import pandas as pd

    n_images = len(gt)
    if not (len(pred) == len(pred_labels) == len(gt_labels) == n_images):
        raise ValueError("pred, pred_labels, gt and gt_labels need one entry per image.")
    names = [str(i) for i in range(n_images)] if names is None else [str(n) for n in names]
    tables = []
    for k, cls in enumerate(classes):
        sel_p = [_xy(p, "pred")[np.asarray(lp).reshape(-1) == k] for p, lp in zip(
            pred, pred_labels, strict=True)]
        sel_g = [_xy(g, "gt")[np.asarray(lg).reshape(-1) == k] for g, lg in zip(
            gt, gt_labels, strict=True)]
        t = point_metrics(sel_p, sel_g, radius=radius, names=names, zero_division=zero_division)
        tables.append(t.reset_index().assign(**{"class": cls}))
    long = pd.concat(tables, ignore_index=True)
    counts = long.groupby("image", sort=False)[["n_pred", "n_gt", "tp", "mean_distance"]]
    rows = []
    for image, grp in counts:
        dist_sum = float(np.nansum(grp["mean_distance"] * grp["tp"]))
        rows.append({"image": image, "class": "all",
                     **_row(int(grp["n_pred"].sum()), int(grp["n_gt"].sum()),
                            int(grp["tp"].sum()), dist_sum, zero_division)})
    long = pd.concat([long, pd.DataFrame(rows)], ignore_index=True)
    cols = ["class", "image"] + [c for c in long.columns if c not in ("class", "image")]
    return long[cols]
