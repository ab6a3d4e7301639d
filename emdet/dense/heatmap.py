"""Gaussian heatmap targets for point annotations, and points back from heatmaps (Lin et al.).

Coordinates follow emdet's COCO convention: continuous pixels, pixel ``(row i, col j)`` has its
centre at ``(x, y) = (j + 0.5, i + 0.5)``. A point at a pixel centre therefore makes a heatmap
whose maximum (exactly 1) is that pixel, and :func:`find_peaks` returns the same ``(x, y)``.

Shapes: points ``(N, 2)`` ``(x, y)``; class indices ``(N,)``; heatmaps ``(C, H, W)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["calibrate_thresholds", "find_peaks", "gaussian_heatmap", "heatmap_points",
           "points_from_labels"]

#: Peak thresholds tried by :func:`calibrate_thresholds`.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def gaussian_heatmap(
    points: np.ndarray,
    shape: tuple[int, int],
    *,
    sigma: float = 2.0,
    classes: np.ndarray | None = None,
    num_classes: int = 1,
) -> np.ndarray:
    """Heatmap with a unit Gaussian peak at each point (the maximum where peaks overlap).

    Parameters
    ----------
    points : numpy.ndarray
        ``(N, 2)`` ``(x, y)`` in pixels (continuous; pixel centres at ``+ 0.5``).
    shape : (int, int)
        ``(H, W)`` of the image.
    sigma : float, keyword-only, default 2.0
        Standard deviation in pixels.
    classes : numpy.ndarray, keyword-only
        ``(N,)`` class index of each point (0 .. ``num_classes - 1``); default all 0.
    num_classes : int, keyword-only, default 1
        Number of output channels.

    Returns
    -------
    numpy.ndarray
        ``(num_classes, H, W)`` float32 in [0, 1];
        ``exp(-((x_j - x)^2 + (y_i - y)^2) / (2 sigma^2))`` with ``x_j = j + 0.5``.

    Examples
    --------
    >>> hm = gaussian_heatmap(np.array([[2.5, 1.5]]), (4, 5), sigma=1.0)
    >>> np.unravel_index(hm[0].argmax(), hm[0].shape), float(hm[0, 1, 2])
    ((np.int64(1), np.int64(2)), 1.0)
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 pixels, got {sigma}.")
    h, w = (int(s) for s in shape)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cls = np.zeros(len(pts), dtype=np.int64) if classes is None else np.asarray(classes).astype(
        np.int64).reshape(-1)
    if len(cls) != len(pts):
        raise ValueError(f"{len(cls)} class indices for {len(pts)} points.")
    if len(cls) and (cls.min() < 0 or cls.max() >= num_classes):
        raise ValueError(f"class indices must be in 0..{num_classes - 1}, got {sorted(set(cls))}.")
    out = np.zeros((num_classes, h, w), dtype=np.float32)
    radius = int(np.ceil(4 * sigma))
    inv = -0.5 / (sigma * sigma)
    for (x, y), c in zip(pts, cls, strict=True):
        j0, j1 = max(0, int(np.floor(x)) - radius), min(w, int(np.floor(x)) + radius + 1)
        i0, i1 = max(0, int(np.floor(y)) - radius), min(h, int(np.floor(y)) + radius + 1)
        if j0 >= j1 or i0 >= i1:
            continue
        gy = np.exp(inv * (np.arange(i0, i1) + 0.5 - y) ** 2)
        gx = np.exp(inv * (np.arange(j0, j1) + 0.5 - x) ** 2)
        np.maximum(out[c, i0:i1, j0:j1], np.outer(gy, gx).astype(np.float32),
                   out=out[c, i0:i1, j0:j1])
    return out


def find_peaks(
    heatmap: np.ndarray,
    *,
    threshold: float = 0.3,
    min_distance: int = 3,
    subpixel: bool = True,
    max_peaks: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of one heatmap channel as points.

    Parameters
    ----------
    heatmap : numpy.ndarray
        ``(H, W)`` values (probabilities from a network, or a target from
        :func:`gaussian_heatmap`).
    threshold : float, keyword-only, default 0.3
        Peaks must exceed this value.
    min_distance : int, keyword-only, default 3
        Peaks are at least this many pixels apart (Chebyshev distance); the stronger wins
        (:func:`skimage.feature.peak_local_max`).
    subpixel : bool, keyword-only, default True
        Refine each peak with a parabola through the logarithm of its 3 neighbours along each
        axis, which is exact for a sampled Gaussian.
    max_peaks : int, keyword-only
        Keep only the strongest ones.

    Returns
    -------
    points : numpy.ndarray
        ``(N, 2)`` float64 ``(x, y)``, strongest first.
    scores : numpy.ndarray
        ``(N,)`` float32 heatmap value at each peak pixel.
    """
    from skimage.feature import peak_local_max

    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2:
        raise ValueError(f"find_peaks needs one (H, W) channel, got shape {hm.shape}.")
    rc = peak_local_max(
        hm,
        min_distance=max(1, int(min_distance)),
        threshold_abs=float(threshold),
        exclude_border=False,
        num_peaks=np.inf if max_peaks is None else int(max_peaks),
    )
    rc = rc[hm[rc[:, 0], rc[:, 1]] > threshold] if len(rc) else rc.reshape(0, 2)
    scores = hm[rc[:, 0], rc[:, 1]].astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    rc, scores = rc[order], scores[order]
    xy = np.stack([rc[:, 1] + 0.5, rc[:, 0] + 0.5], axis=1).astype(np.float64)
    if subpixel and len(rc):
        xy[:, 0] += _parabola_offset(hm, rc, axis=1)
        xy[:, 1] += _parabola_offset(hm, rc, axis=0)
    return xy.reshape(-1, 2), scores


def _parabola_offset(hm: np.ndarray, rc: np.ndarray, *, axis: int) -> np.ndarray:
    """Vertex offset (-0.5..0.5) of the parabola through log-values at -1, 0, +1 along an axis."""
    n = hm.shape[axis]
    idx = rc[:, axis]
    inside = (idx > 0) & (idx < n - 1)
    offset = np.zeros(len(rc))
    if not inside.any():
        return offset
    r, c = rc[inside, 0], rc[inside, 1]
    step = (1, 0) if axis == 0 else (0, 1)
    eps = 1e-12
    left = np.log(np.maximum(hm[r - step[0], c - step[1]], eps).astype(np.float64))
    mid = np.log(np.maximum(hm[r, c], eps).astype(np.float64))
    right = np.log(np.maximum(hm[r + step[0], c + step[1]], eps).astype(np.float64))
    curvature = left - 2 * mid + right
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    offset[inside] = np.clip(np.nan_to_num(d), -0.5, 0.5)
    return offset


def heatmap_points(
    heatmaps: np.ndarray,
    *,
    threshold: float | Sequence[float] = 0.3,
    min_distance: int = 3,
    subpixel: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`find_peaks` on every channel of a ``(C, H, W)`` heatmap.

    ``threshold`` is one value for all channels or one per channel (e.g. from
    :func:`calibrate_thresholds`).

    Returns
    -------
    points : numpy.ndarray
        ``(N, 2)`` ``(x, y)``.
    classes : numpy.ndarray
        ``(N,)`` int64 channel of each point.
    scores : numpy.ndarray
        ``(N,)`` float32.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmap_points needs (C, H, W) heatmaps, got shape {heatmaps.shape}.")
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(heatmaps),))
    pts, cls, sc = [], [], []
    for c, channel in enumerate(heatmaps):
        p, s = find_peaks(channel, threshold=float(thresholds[c]), min_distance=min_distance,
                          subpixel=subpixel)
        pts.append(p)
        sc.append(s)
        cls.append(np.full(len(p), c, dtype=np.int64))
    return np.concatenate(pts).reshape(-1, 2), np.concatenate(cls), np.concatenate(sc)


def points_from_labels(
    labels: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    background: int = 0,
    min_area: int = 1,
    ignore: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids of the connected regions of a label image, as points with a class.

    For segmentation networks that label the pixels around each object (atomic columns in
    Leibovich et al.): each 4-connected region of non-background pixels becomes one point at
    its centroid, classed by the majority label in the region.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer labels.
    probabilities : numpy.ndarray, keyword-only
        ``(K, H, W)`` class probabilities; the score is the mean probability of the region's
        class over the region (default 1).
    background : int, keyword-only, default 0
        Label that is not an object.
    min_area : int, keyword-only, default 1
        Smaller regions are dropped.
    ignore : sequence of int, keyword-only
        Further labels that are not objects.

    Returns
    -------
    points : numpy.ndarray
        ``(N, 2)`` ``(x, y)`` centroids (pixel centres at ``+ 0.5``).
    classes : numpy.ndarray
        ``(N,)`` int64 majority labels.
    scores : numpy.ndarray
        ``(N,)`` float32.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    fg = labels != background
    for v in ignore:
        fg &= labels != v
    regions, n = ndimage.label(fg)
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0, np.float32)
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(regions), regions, index)
    cy, cx = (np.asarray(v) for v in zip(*ndimage.center_of_mass(fg, regions, index),
                                          strict=True))
    flat_r = regions.ravel()
    sel = flat_r > 0
    n_labels = int(labels.max()) + 1
    counts = np.zeros((n + 1, n_labels), dtype=np.int64)
    np.add.at(counts, (flat_r[sel], labels.ravel()[sel].astype(np.int64)), 1)
    cls = counts[1:].argmax(axis=1).astype(np.int64)
    if probabilities is not None:
        probs = np.asarray(probabilities)
        means = np.stack([ndimage.mean(p, regions, index) for p in probs])  # (K, n)
        scores = means[np.minimum(cls, len(probs) - 1), np.arange(n)].astype(np.float32)
    else:
        scores = np.ones(n, dtype=np.float32)
    keep = area >= min_area
    xy = np.stack([cx + 0.5, cy + 0.5], axis=1)
    return xy[keep], cls[keep], scores[keep]


def calibrate_thresholds(
    heatmaps: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    point_classes: Sequence[np.ndarray],
    *,
    radius: float | Sequence[float],
    min_distance: int | Sequence[int] = 3,
    default: float = 0.3,
    grid: Sequence[float] = THRESHOLD_GRID,
) -> np.ndarray:
    """Per class, the peak threshold that maximises pooled F1 against annotated points.

    A network trained with a peak-weighted loss (``LOSS.PEAK_WEIGHT``) over-predicts: its
    heatmaps are high around and between the annotated points, and a fixed threshold gives many
    false positives. This picks, for each channel, the threshold from ``grid`` whose peaks best
    match the annotations (one-to-one within ``radius``; :func:`emdet.evaluation.point_metrics`);
    where several are equally good, the middle one of them.

    Parameters
    ----------
    heatmaps : sequence of numpy.ndarray
        One ``(C, H, W)`` prediction per image.
    points, point_classes : sequence of numpy.ndarray
        Per image, ``(N, 2)`` annotated ``(x, y)`` and their ``(N,)`` class indices.
    radius : float or sequence of float, keyword-only
        Matching radius in pixels (``EVAL.MATCH_RADIUS``), or one per image.
    min_distance : int or sequence of int, keyword-only
        As in :func:`find_peaks` (``HEATMAP.MIN_DISTANCE``), or one per image.
    default : float, keyword-only
        Threshold of a class with no annotated point.
    grid : sequence of float, keyword-only
        Thresholds tried (default 0.05 to 0.95 in steps of 0.05).

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64 thresholds.
    """
    from emdet.evaluation.points import match_points

    grid = np.sort(np.asarray(grid, dtype=np.float64))
    radii = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(heatmaps),))
    distances = np.broadcast_to(np.asarray(min_distance), (len(heatmaps),))
    n_classes = int(np.asarray(heatmaps[0]).shape[0]) if len(heatmaps) else 0
    out = np.full(n_classes, float(default))
    for c in range(n_classes):
        tp = np.zeros(len(grid))
        n_pred = np.zeros(len(grid))
        n_gt = 0
        for i, (hm, pts, cls) in enumerate(zip(heatmaps, points, point_classes, strict=True)):
            gt = np.asarray(pts, dtype=np.float64).reshape(-1, 2)[np.asarray(cls) == c]
            n_gt += len(gt)
            found, scores = find_peaks(np.asarray(hm)[c], threshold=float(grid[0]),
                                       min_distance=int(distances[i]))
            for k, t in enumerate(grid):
                keep = found[scores > t] if k else found
                n_pred[k] += len(keep)
                tp[k] += len(match_points(keep, gt, radius=float(radii[i]))[0])
        if n_gt == 0:
            continue
        f1 = 2 * tp / np.maximum(n_pred + n_gt, 1)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out[c] = float(grid[best[len(best) // 2]])
    return out
