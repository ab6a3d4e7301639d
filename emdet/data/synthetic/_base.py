"""What a synthetic generator returns, the registry of kinds, and raster helpers they share.

Coordinates follow COCO/detectron2: pixel ``(row i, col j)`` covers ``[j, j+1] x [i, i+1]``,
its centre is ``(j + 0.5, i + 0.5)``; polygons and points are in these continuous coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from scipy import ndimage

__all__ = [
    "SYNTHETIC_KINDS",
    "Instance",
    "SyntheticImage",
    "SyntheticKind",
    "mask_to_rle",
    "polygons_to_mask",
    "register_kind",
]


@dataclass
class Instance:
    """One annotated object, already in COCO form.

    Attributes
    ----------
    category : str
        Class name, one of the kind's ``classes``.
    segmentation : list of list of float, or dict
        COCO polygons (flat ``[x0, y0, x1, y1, ...]``) or a compressed RLE
        ``{"size": [H, W], "counts": str}``.
    bbox : tuple of 4 float
        ``(x, y, w, h)`` in pixels, inside the image.
    area : float
        Pixel count of the rasterised segmentation (COCO's convention).
    extra : dict
        More per-annotation fields written to the json as they are: ``rbox``
        ``[cx, cy, w, h, angle_deg]``, ``point`` ``[x, y]``, ``instance_id`` (value of the
        object in ``instances/<image>.png``).
    """

    category: str
    segmentation: list[list[float]] | dict[str, Any]
    bbox: tuple[float, float, float, float]
    area: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyntheticImage:
    """One generated micrograph with its ground truth.

    Attributes
    ----------
    image : ndarray of uint16, shape (H, W)
        Detector counts (Poisson noise included).
    instances : list of Instance
    sem_seg : ndarray of uint8, shape (H, W), or None
        Per-pixel class labels, values index the kind's ``stuff_classes``.
    instance_mask : ndarray of uint16, shape (H, W), or None
        0 for background, ``Instance.extra["instance_id"]`` inside each object.
    info : dict
        Per-image facts written into the COCO image entry (e.g. grain angles).
    """

    image: np.ndarray
    instances: list[Instance]
    sem_seg: np.ndarray | None = None
    instance_mask: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyntheticKind:
    """A registered kind of synthetic data set.

    ``generate(rng, size, scale)`` draws one image of ``size x size`` pixels; ``scale`` is how
    many pixels one default pixel becomes (``default pixel_size / pixel_size``), so objects keep
    their physical size when a different pixel size is asked for.
    """

    name: str
    generate: Callable[[np.random.Generator, int, float], SyntheticImage]
    classes: tuple[str, ...]
    evaluator_type: str
    pixel_size: float
    unit: str
    description: str
    rotated: bool = False
    stuff_classes: tuple[str, ...] = ()
    labelme: str | None = None  # "polygon" or "point": the labelme shape type written, if any


SYNTHETIC_KINDS: dict[str, SyntheticKind] = {}


def register_kind(kind: SyntheticKind) -> SyntheticKind:
    """Add ``kind`` to :data:`SYNTHETIC_KINDS` (an error if the name is taken)."""
    if kind.name in SYNTHETIC_KINDS:
        raise ValueError(f"synthetic kind {kind.name!r} is already registered")
    SYNTHETIC_KINDS[kind.name] = kind
    return kind


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons exactly as pycocotools and detectron2 do.

    Returns
    -------
    ndarray of bool, shape (height, width)
    """
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE (json-ready, ``counts`` as str) of a boolean mask (H, W)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def remove_small_components(
    mask: np.ndarray, min_size: int, *, connectivity: int = 2
) -> np.ndarray:
    """Copy of a boolean mask (H, W) without connected components of fewer than ``min_size``
    pixels (``connectivity`` 1: 4-connected, 2: 8-connected)."""
    structure = np.ones((3, 3)) if connectivity == 2 else None
    labels, _ = ndimage.label(mask, structure=structure)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def bbox_of_mask(mask: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of the pixels of a non-empty boolean mask (pixel edges, not centres)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] + 1 - cols[0]),
        float(rows[-1] + 1 - rows[0]),
    )


def bbox_of_points(xy: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` enclosing points, shape (K, 2), rounded to 0.01 px."""
    lo = xy.min(axis=0)
    hi = xy.max(axis=0)
    return (
        round(float(lo[0]), 2),
        round(float(lo[1]), 2),
        round(float(hi[0] - lo[0]), 2),
        round(float(hi[1] - lo[1]), 2),
    )


def point_instance(
    category: str, x: float, y: float, half: float, height: int, width: int
) -> Instance:
    """A point annotation: a small box of half-size ``half`` around ``(x, y)``, clipped."""
    x0, y0 = max(0.0, x - half), max(0.0, y - half)
    x1, y1 = min(float(width), x + half), min(float(height), y + half)
    x0, y0, x1, y1 = (round(v, 2) for v in (x0, y0, x1, y1))
    poly = [x0, y0, x1, y0, x1, y1, x0, y1]
    return Instance(
        category=category,
        segmentation=[poly],
        bbox=(x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)),
        area=round((x1 - x0) * (y1 - y0), 2),
        extra={"point": [round(float(x), 2), round(float(y), 2)]},
    )
