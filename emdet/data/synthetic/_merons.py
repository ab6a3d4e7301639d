"""Labyrinth polar-domain texture with merons and antimerons (Lin et al., seed paper 000).

The domain pattern is band-pass filtered noise thresholded at zero (a labyrinth of stripes
about half a period wide). Its skeleton, with short spurs pruned, is the ground truth: the
image is rendered from the skeleton (stripes of even width around it), ``meron`` points are
the skeleton's end points and ``antimeron`` points its tri-junctions, both found with the
crossing number. Everything is computed on a larger canvas and cropped, so stripes cut by the
image frame do not create false end points. Each point is annotated as ``point`` ``[x, y]``
(pixel centre, continuous coordinates) and a small box around it.
``masks/`` holds 0 = matrix, 1 = domain, 2 = domain skeleton.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from emdet.data.synthetic._base import (
    Instance,
    SyntheticImage,
    SyntheticKind,
    point_instance,
    register_kind,
    remove_small_components,
)
from emdet.data.synthetic._noise import bandpass_noise, detector_counts, smooth_noise

# 8-neighbourhood in circular order N, NE, E, SE, S, SW, W, NW as (drow, dcol).
_RING = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def crossing_number(skeleton: np.ndarray) -> np.ndarray:
    """Crossing number of every skeleton pixel (0 off the skeleton).

    Half the number of 0/1 changes going once around the 8 neighbours: 1 at an end point, 2
    along a line (also on staircase diagonals), 3 or more at a junction.

    Parameters
    ----------
    skeleton : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of int, shape (H, W)
    """
    sk = np.pad(skeleton.astype(np.int8), 1)
    h, w = skeleton.shape
    ring = [sk[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in _RING]
    changes = sum(np.abs(ring[i] - ring[(i + 1) % 8]) for i in range(8))
    return np.where(skeleton, changes // 2, 0)


def _neighbours(skeleton: np.ndarray, r: int, c: int) -> list[tuple[int, int]]:
    h, w = skeleton.shape
    out = []
    # Orthogonal neighbours first: walking along staircases then visits every pixel.
    for dr, dc in _RING[0::2] + _RING[1::2]:
        rr, cc = r + dr, c + dc
        if 0 <= rr < h and 0 <= cc < w and skeleton[rr, cc]:
            out.append((rr, cc))
    return out


def prune_spurs(skeleton: np.ndarray, min_length: float, *, max_rounds: int = 6) -> np.ndarray:
    """Remove branches shorter than ``min_length`` pixels that end in a free end point.

    Parameters
    ----------
    skeleton : ndarray of bool, shape (H, W)
        One pixel wide (e.g. from :func:`skimage.morphology.skeletonize`).
    min_length : float
        Spurs with fewer pixels than this, counted from the end point to (not including) the
        junction, are deleted.

    Returns
    -------
    ndarray of bool, shape (H, W)
        A new, re-thinned skeleton.
    """
    sk = skeleton.copy()
    for _ in range(max_rounds):
        cn = crossing_number(sk)
        removed = False
        for r, c in np.argwhere(cn == 1):
            if not sk[r, c]:
                continue
            path = [(r, c)]
            seen = {(r, c)}
            cur = (r, c)
            reached_junction = False
            while len(path) < min_length:
                nxt = [p for p in _neighbours(sk, *cur) if p not in seen]
                if not nxt:
                    break
                junction = [p for p in nxt if cn[p] >= 3]
                if junction:
                    reached_junction = True
                    break
                cur = nxt[0]
                seen.update(nxt)
                path.append(cur)
            if reached_junction:
                for p in path:
                    sk[p] = False
                removed = True
        sk = skeletonize(sk)
        if not removed:
            break
    return sk


def skeleton_features(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """End points and junctions of a one-pixel-wide skeleton.

    Parameters
    ----------
    skeleton : ndarray of bool, shape (H, W)

    Returns
    -------
    ends : ndarray of int, shape (K, 2)
        ``(row, col)`` of pixels with crossing number 1.
    junctions : ndarray of int, shape (M, 2)
        ``(row, col)`` of one pixel per 8-connected cluster of pixels with crossing number
        >= 3: the cluster pixel closest to the cluster's centroid.
    """
    cn = crossing_number(skeleton)
    ends = np.argwhere(cn == 1)
    labels, _ = ndimage.label(cn >= 3, structure=np.ones((3, 3)))
    pix = np.argwhere(labels > 0)
    lab = labels[pix[:, 0], pix[:, 1]]
    order = np.argsort(lab, kind="stable")
    pix, lab = pix[order], lab[order]
    junctions = []
    for cluster in np.split(pix, np.flatnonzero(np.diff(lab)) + 1):
        if len(cluster):
            centroid = cluster.mean(axis=0)
            junctions.append(cluster[np.argmin(((cluster - centroid) ** 2).sum(axis=1))])
    return ends, np.array(junctions, dtype=int).reshape(-1, 2)


def generate_merons(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One STEM image of a labyrinth domain pattern; see the module docstring."""
    period = rng.uniform(16.0, 20.0) * scale
    margin = int(np.ceil(2 * period))
    canvas = (size + 2 * margin,) * 2
    domains = bandpass_noise(rng, canvas, period, bandwidth=0.12) > 0
    small = int(0.6 * period * period)
    domains = remove_small_components(domains, small, connectivity=1)
    domains = ~remove_small_components(~domains, small, connectivity=1)
    skel = skeletonize(domains)
    skel = remove_small_components(skel, int(period))
    skel = prune_spurs(skel, period / 2)
    skel = remove_small_components(skel, int(period))
    ends, junctions = skeleton_features(skel)

    dist = ndimage.distance_transform_edt(~skel)
    crop = (slice(margin, margin + size),) * 2
    dist, skel_crop = dist[crop], skel[crop]
    stripes = 0.5 * (1.0 + np.cos(np.pi * np.clip(dist / (0.5 * period), 0.0, 1.0)))
    sem_seg = np.where(dist <= period / 4, 1, 0).astype(np.uint8)
    sem_seg[skel_crop] = 2

    half = period / 4
    border = 2
    instances: list[Instance] = []
    for name, pts in (("meron", ends), ("antimeron", junctions)):
        for r, c in pts - margin:
            if border <= r < size - border and border <= c < size - border:
                instances.append(point_instance(name, c + 0.5, r + 0.5, half, size, size))

    shape = (size, size)
    level = 300.0 * (1.0 + 0.06 * smooth_noise(rng, shape, size / 5))
    expected = level * (1.0 + rng.uniform(0.25, 0.4) * stripes)
    expected = ndimage.gaussian_filter(expected, 1.0 * scale)
    image = detector_counts(rng, expected)
    line_offset = np.rint(rng.normal(0.0, 3.0, (size, 1))).astype(np.int32)
    image = np.clip(image.astype(np.int32) + line_offset, 0, 65535).astype(np.uint16)
    return SyntheticImage(
        image=image,
        instances=instances,
        sem_seg=sem_seg,
        info={"stripe_period_px": round(float(period), 2)},
    )


register_kind(
    SyntheticKind(
        name="merons",
        generate=generate_merons,
        classes=("meron", "antimeron"),
        evaluator_type="points",
        pixel_size=0.5,
        unit="nm",
        description="STEM labyrinth domains; merons (stripe ends) and antimerons (tri-junctions)",
        stuff_classes=("matrix", "domain", "skeleton"),
        labelme="point",
    )
)
