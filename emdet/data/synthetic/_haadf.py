"""Single atoms and atomic columns in aberration-corrected HAADF-STEM, as a real detector sees them.

The ``atoms`` kind is the clean case of Leibovich et al. (Gaussian columns plus Poisson noise).
Real AC-HAADF images of heavy atoms on a support (single-atom catalysts, clusters, small
crystals) differ in ways that defeat a model trained on that alone; this kind draws each of them
at random strength per image, so a network pre-trained on it has seen the range:

* **content**: heavy single atoms scattered on the support (at least ``2.2 sigma`` apart), a few
  small clusters of 3-7 atoms, and in about half of the images a crystalline patch whose columns
  sit on a rotated lattice with intensities growing with the column's depth;
* **amorphous support**: many faint light-atom blobs (a speckle at the probe's scale) on a
  thickness that varies smoothly over the field (Z-contrast of carbon is a few per cent of a
  heavy atom's per atom, but thousands of them overlap);
* **probe tails**: the probe is a Gaussian core plus a broad Gaussian tail (5-30 % of its
  weight, 3-6 times wider), as an aberration-corrected probe's intensity has;
* **scan distortion**: every scan line is shifted along the fast scan direction by slow drift
  plus line-to-line jitter (0.1-0.8 px), and the slow direction is sheared slightly; the
  annotated positions are where the atoms appear in the distorted image;
* **dose and detector**: Poisson shot noise at 3 to 60 electrons per atom peak (log-uniform),
  Gaussian read noise, a dark offset and scan-line offsets.

Each visible atom or column is a ``point`` annotation of class ``atom`` with a small box.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from emdet.data.synthetic._base import (
    Instance,
    SyntheticImage,
    SyntheticKind,
    point_instance,
    register_kind,
)
from emdet.data.synthetic._noise import smooth_noise

_CLASSES = ("atom",)


def _poisson_disc(rng: np.random.Generator, n: int, size: int, min_dist: float,
                  taken: np.ndarray) -> np.ndarray:
    """Up to ``n`` random points in ``[2, size - 2]^2`` at least ``min_dist`` from each other
    and from ``taken`` (dart throwing; a few hundred points, so no spatial index is needed)."""
    pts = [p for p in taken]
    out = []
    for _ in range(20 * n):
        if len(out) >= n:
            break
        p = rng.uniform(2.0, size - 2.0, 2)
        if pts and np.min(np.hypot(*(np.asarray(pts) - p).T)) < min_dist:
            continue
        pts.append(p)
        out.append(p)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _crystal(rng: np.random.Generator, size: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns of a small faceted crystal: ``(N, 2)`` positions and ``(N,)`` relative heights."""
    spacing = rng.uniform(3.2, 4.5) * sigma
    radius = rng.uniform(0.12, 0.25) * size
    centre = rng.uniform(0.3, 0.7, 2) * size
    phi = rng.uniform(0, np.pi)
    a1 = spacing * np.array([np.cos(phi), np.sin(phi)])
    ratio = rng.choice([1.0, np.sqrt(2.0), 1.2])
    a2 = spacing * ratio * np.array([-np.sin(phi), np.cos(phi)])
    n = int(np.ceil(2 * radius / spacing)) + 2
    ij = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1)), -1).reshape(-1, 2)
    xy = centre + ij[:, :1] * a1 + ij[:, 1:] * a2
    # a faceted outline: the intersection of half-planes at random distances
    k = int(rng.integers(5, 9))
    normals = np.stack([np.cos(np.arange(k) * 2 * np.pi / k + phi),
                        np.sin(np.arange(k) * 2 * np.pi / k + phi)], 1)
    reach = radius * rng.uniform(0.8, 1.1, k)
    depth = np.min(reach[None, :] - (xy - centre) @ normals.T, axis=1)
    keep = (depth > 0) & (xy > 2).all(1) & (xy < size - 2).all(1)
    heights = 0.6 + 0.4 * np.clip(depth[keep] / radius, 0, 1) * rng.uniform(1.0, 3.0)
    return xy[keep], heights


def _render(xy: np.ndarray, weight: np.ndarray, size: int, sigma: float, tail_weight: float,
            tail_scale: float) -> np.ndarray:
    """Atoms at sub-pixel ``xy`` seen through the probe: a Gaussian core of ``sigma`` plus a
    ``tail_scale`` times wider Gaussian holding ``tail_weight`` of the intensity; an atom of
    weight 1 peaks at 1. Evaluated at pixel centres ``(j + 0.5, i + 0.5)``."""
    wide = sigma * tail_scale
    a_core, a_tail = (1 - tail_weight) / sigma**2, tail_weight / wide**2
    norm = a_core + a_tail
    out = np.zeros((size, size))
    win = int(np.ceil(4 * wide))
    for (x, y), w in zip(xy, weight, strict=True):
        x0, x1 = max(0, int(x) - win), min(size, int(x) + win + 1)
        y0, y1 = max(0, int(y) - win), min(size, int(y) + win + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        out[y0:y1, x0:x1] += w / norm * (a_core * np.exp(-r2 / (2 * sigma**2))
                                         + a_tail * np.exp(-r2 / (2 * wide**2)))
    return out


def generate_haadf(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One AC-HAADF-STEM image of heavy atoms on a support; see the module docstring."""
    sigma = rng.uniform(1.3, 2.2) * scale  # probe core, px (~0.05 nm at 0.025 nm/px)
    columns = np.zeros((0, 2))
    heights = np.zeros(0)
    if rng.random() < 0.5:
        columns, heights = _crystal(rng, size, sigma)
    density = rng.uniform(0.5, 5.0) / (40 * scale) ** 2  # single atoms per px^2 (per nm^2)
    singles = _poisson_disc(rng, int(density * size * size), size, 2.2 * sigma, columns)
    clusters = []
    for _ in range(int(rng.integers(0, 4))):
        seed = rng.uniform(0.1, 0.9, 2) * size
        n = int(rng.integers(3, 8))
        offsets = rng.normal(0, 1.8 * sigma, (n, 2))
        clusters.append(seed + offsets)
    atoms = [singles, *clusters]
    xy = np.concatenate([columns, *atoms], axis=0) if len(columns) else np.concatenate(atoms)
    weight = np.concatenate([heights, rng.uniform(0.7, 1.3, len(xy) - len(heights))])
    # atoms of a cluster closer than 1.6 sigma merge into one peak: keep one point
    order = np.argsort(-weight, kind="stable")
    kept: list[int] = []
    for i in order:
        if all(np.hypot(*(xy[i] - xy[j])) >= 1.6 * sigma for j in kept):
            kept.append(i)
        else:
            nearest = min(kept, key=lambda j: np.hypot(*(xy[i] - xy[j])))
            weight[nearest] += weight[i]
    kept_arr = np.array(sorted(kept), dtype=int)
    xy, weight = xy[kept_arr], weight[kept_arr]
    inside = (xy > 0.5).all(1) & (xy < size - 0.5).all(1)
    xy, weight = xy[inside], weight[inside]

    tail_weight = rng.uniform(0.05, 0.3)
    atoms_img = _render(xy, weight, size, sigma, tail_weight, rng.uniform(3.0, 6.0))
    # amorphous support: faint speckle at the probe's scale on a smoothly varying thickness
    thickness = np.clip(1.0 + 0.35 * smooth_noise(rng, (size, size), 25 * scale), 0.2, None)
    speckle = ndimage.gaussian_filter(rng.gamma(2.0, 0.5, (size, size)), sigma)
    support = rng.uniform(0.08, 0.35) * thickness * speckle / speckle.mean()
    clean = atoms_img + support

    # scan distortion: each line shifted along x (slow drift + jitter), slow-axis shear
    jitter = rng.uniform(0.1, 0.8) * scale
    drift = np.cumsum(rng.normal(0, 0.05 * scale, size))
    drift -= drift.mean()
    shift_x = drift + rng.normal(0, jitter, size) * (rng.random(size) < 0.5)
    shear = rng.uniform(-0.02, 0.02)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    map_x = (xx + shift_x[:, None] + shear * yy).astype(np.float32)
    distorted = cv2.remap(clean.astype(np.float32), map_x, yy, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    # output pixel (i, j) samples the clean image at column j + shift(i) + shear i, so a feature
    # at x0 appears at x0 - shift(i) - shear i (the same offset for indices and continuous x)
    rows = np.clip(np.floor(xy[:, 1]).astype(int), 0, size - 1)
    seen = xy.copy()
    seen[:, 0] = xy[:, 0] - shift_x[rows] - shear * rows
    visible = (seen[:, 0] > 0.5) & (seen[:, 0] < size - 0.5)

    dose = float(np.exp(rng.uniform(np.log(3.0), np.log(60.0))))  # electrons at an atom peak
    expected = dose * np.clip(distorted, 0, None)
    counts = rng.poisson(expected).astype(np.float64)
    read = rng.uniform(0.0, 1.5)
    counts += rng.normal(0, read, counts.shape) + rng.normal(0, 0.3 * read, (size, 1))
    offset = rng.uniform(10, 100)
    image = np.clip(np.rint(counts + offset), 0, 65535).astype(np.uint16)

    instances: list[Instance] = [
        point_instance("atom", float(x), float(y), 1.5 * sigma, size, size)
        for x, y in seen[visible]
    ]
    return SyntheticImage(
        image=image,
        instances=instances,
        info={
            "probe_sigma_px": round(float(sigma), 3),
            "probe_tail_weight": round(float(tail_weight), 3),
            "dose_e_per_peak": round(dose, 2),
            "scan_jitter_px": round(float(jitter), 3),
            "crystal_columns": int(len(columns)),
        },
    )


register_kind(
    SyntheticKind(
        name="haadf",
        generate=generate_haadf,
        classes=_CLASSES,
        evaluator_type="points",
        pixel_size=0.025,
        unit="nm",
        description="AC-HAADF-STEM heavy atoms on an amorphous support: probe tails, scan "
                    "distortion, varying dose",
        labelme="point",
    )
)
