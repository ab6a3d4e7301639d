"""Atomic columns of a nanoparticle at low dose (Leibovich et al., seed paper 001).

A faceted particle on a thin amorphous support, imaged along a zone axis: its atomic columns
sit on a rotated rectangular lattice and appear as Gaussian peaks whose height grows with the
number of atoms in the column. Columns are classed by height, ``height_1`` (thinnest, at the
surface) to ``height_3`` (the core), as in the seed paper where the column depth decreases
towards the surface; some columns are one class off at random (point defects). The dose is low
(about one electron per background pixel, signal-to-noise near 1) and the noise is Poisson.
Each column is a ``point`` ``[x, y]`` with a small box; ``masks/`` labels the pixels within
a third of a lattice spacing of a column with its class (1..3), 0 elsewhere.
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
from emdet.data.synthetic._noise import detector_counts, smooth_noise

_CLASSES = ("height_1", "height_2", "height_3")


def _particle(rng: np.random.Generator, size: int) -> np.ndarray:
    """Convex faceted particle outline, shape (K, 2) in pixels."""
    n = int(rng.integers(6, 9))
    step = 2 * np.pi / n
    t = np.arange(n) * step + rng.uniform(-0.3, 0.3, n) * step + rng.uniform(0, step)
    r = size * rng.uniform(0.30, 0.40, n)
    centre = size / 2 + rng.normal(0, 0.04 * size, 2)
    return centre + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def generate_atoms(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One low-dose image of a nanoparticle's atomic columns; see the module docstring."""
    shape = (size, size)
    outline = _particle(rng, size)
    inside = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(inside, [np.round(outline * 16).astype(np.int32)], 1, shift=4)
    depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]

    spacing = rng.uniform(10.0, 12.0) * scale
    a1 = spacing * np.array([1.0, 0.0])
    a2 = spacing * np.sqrt(2.0) * np.array([0.0, 1.0])
    phi = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    a1, a2 = rot @ a1, rot @ a2
    origin = size / 2 + rng.uniform(-0.5, 0.5, 2) * spacing
    n = int(np.ceil(size / spacing)) + 2
    ij = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1)), -1).reshape(-1, 2)
    xy = origin + ij[:, :1] * a1 + ij[:, 1:] * a2
    xy = xy[(xy >= 1.0).all(axis=1) & (xy <= size - 1.0).all(axis=1)]
    px = np.floor(xy).astype(int)
    d = depth[px[:, 1], px[:, 0]]
    keep = d > 0.3 * spacing
    xy, d = xy[keep], d[keep]
    level = np.clip((d / (1.5 * spacing)).astype(int), 0, len(_CLASSES) - 1)
    flip = rng.random(len(level)) < 0.12
    level = np.where(flip, np.clip(level + rng.choice([-1, 1], len(level)), 0, 2), level)

    sigma = 0.16 * spacing
    columns = np.zeros(shape)
    sem_seg = np.zeros(shape, dtype=np.uint8)
    label_radius = spacing / 3
    win = int(np.ceil(4 * sigma))
    instances: list[Instance] = []
    for (x, y), lev in zip(xy, level, strict=True):
        x0, x1 = max(0, int(x) - win), min(size, int(x) + win + 1)
        y0, y1 = max(0, int(y) - win), min(size, int(y) + win + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
        r2 = (xx - x) ** 2 + (yy - y) ** 2
        columns[y0:y1, x0:x1] += (lev + 1) * np.exp(-r2 / (2 * sigma * sigma))
        sem_seg[y0:y1, x0:x1][r2 <= label_radius**2] = lev + 1
        instances.append(
            point_instance(_CLASSES[lev], float(x), float(y), 0.35 * spacing, size, size)
        )
    support = 1.0 + 0.15 * smooth_noise(rng, shape, 1.5 * scale)
    peak = rng.uniform(1.5, 2.5)  # electrons per pixel per height level at a column centre
    expected = support + peak * columns
    image = detector_counts(rng, expected)
    return SyntheticImage(
        image=image,
        instances=instances,
        sem_seg=sem_seg,
        info={
            "lattice_spacing_px": round(float(spacing), 3),
            "lattice_angle_deg": round(float(np.degrees(phi)), 3),
        },
    )


register_kind(
    SyntheticKind(
        name="atoms",
        generate=generate_atoms,
        classes=_CLASSES,
        evaluator_type="points",
        pixel_size=0.03,
        unit="nm",
        description="low-dose atomic columns of a nanoparticle, classed by column height",
        stuff_classes=("background",) + _CLASSES,
        labelme="point",
    )
)
