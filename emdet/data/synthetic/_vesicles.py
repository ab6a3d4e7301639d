"""Vesicles and holes in a TEM bright-field image (Zhong et al., seed paper 002).

Three classes: ``vesicle_large`` (large, slightly lighter irregular ellipses with a dark
membrane rim), ``vesicle_small`` (small dark blobs) and ``hole`` (small bright round holes in
the film), about 1 : 4 : 1 by number, on a grey textured background with low contrast.
Objects do not overlap (their instance masks are exact); large vesicles may be cut by the
image border. Polygons are the ground truth; masks are their pycocotools rasterisation, the
same one detectron2 trains on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from shapely.geometry import Polygon, box

from emdet.data.synthetic._base import (
    Instance,
    SyntheticImage,
    SyntheticKind,
    bbox_of_points,
    polygons_to_mask,
    register_kind,
)
from emdet.data.synthetic._noise import detector_counts, illumination, smooth_noise

# name: (number per 256 x 256 default-pixel field, radius range in default pixels,
#        wobble, intensity change)
_CLASSES = {
    "vesicle_large": ((4, 7), (13.0, 26.0), 0.12, +0.07),
    "vesicle_small": ((14, 24), (2.5, 5.0), 0.10, -0.20),
    "hole": ((4, 7), (2.0, 3.5), 0.03, +0.40),
}


def _outline(
    rng: np.random.Generator, cx: float, cy: float, radius: float, wobble: float
) -> np.ndarray:
    """Irregular ellipse, shape (K, 2): a random ellipse with low-order radial harmonics."""
    n = int(np.clip(2 * np.pi * radius / 2.0, 16, 64))
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += rng.uniform(0, wobble / (k - 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.65, 1.0)
    a, b = radius / np.sqrt(aspect), radius * np.sqrt(aspect)
    phi = rng.uniform(0, np.pi)
    x, y = a * r * np.cos(t), b * r * np.sin(t)
    return np.stack(
        [cx + np.cos(phi) * x - np.sin(phi) * y, cy + np.sin(phi) * x + np.cos(phi) * y], axis=1
    )


def _clip_to_image(points: np.ndarray, size: int) -> list[np.ndarray]:
    """Parts of a polygon inside ``[0, size]^2``, each (K, 2), rounded to 0.01 px."""
    poly = Polygon(points)
    if not poly.is_valid:
        poly = poly.buffer(0)
    clipped = poly.intersection(box(0, 0, size, size))
    parts = getattr(clipped, "geoms", [clipped])
    out = []
    for part in parts:
        if part.geom_type != "Polygon" or part.area < 4.0:
            continue
        xy = np.round(np.asarray(part.exterior.coords)[:-1], 2)
        if len(xy) >= 3:
            out.append(xy)
    return out


def generate_vesicles(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One bright-field TEM image of vesicles and holes; see the module docstring."""
    shape = (size, size)
    field_factor = (size / (256.0 * scale)) ** 2
    occupied = np.zeros(shape, dtype=bool)
    instance_mask = np.zeros(shape, dtype=np.uint16)
    instances: list[Instance] = []
    contrast = np.zeros(shape)
    rim = np.zeros(shape)
    for name, ((nlo, nhi), (rlo, rhi), wobble, delta) in _CLASSES.items():
        wanted = int(round(rng.uniform(nlo, nhi) * field_factor))
        placed = 0
        for _ in range(wanted * 30):
            if placed == wanted:
                break
            radius = rng.uniform(rlo, rhi) * scale
            margin = -0.5 * radius if name == "vesicle_large" else radius * 1.6 + 1
            cx, cy = rng.uniform(margin, size - margin, 2)
            parts = _clip_to_image(_outline(rng, cx, cy, radius, wobble), size)
            if not parts:
                continue
            polygons = [p.ravel().tolist() for p in parts]
            # Exact full-image rasterisation (as pycocotools/detectron2 do it), then work in a
            # window around the object.
            mask = polygons_to_mask(polygons, size, size)
            xy = np.concatenate(parts)
            x0, y0 = (max(0, int(v) - 4) for v in xy.min(axis=0))
            x1, y1 = (min(size, int(np.ceil(v)) + 4) for v in xy.max(axis=0))
            win = (slice(y0, y1), slice(x0, x1))
            local = mask[win]
            if local.sum() < 4 or (local & occupied[win]).any():
                continue
            placed += 1
            instance_id = len(instances) + 1
            occupied[win] |= ndimage.binary_dilation(local, iterations=2)
            instance_mask[win][local] = instance_id
            contrast[win][local] += delta
            if name == "vesicle_large":
                inner = ndimage.binary_erosion(local, iterations=2, border_value=1)
                rim[win][local & ~inner] = 1.0
            instances.append(
                Instance(
                    category=name,
                    segmentation=polygons,
                    bbox=bbox_of_points(xy),
                    area=float(local.sum()),
                    extra={"instance_id": instance_id},
                )
            )
    # Film: grey level with slow thickness variation and fine granularity; objects blurred by
    # the objective's point spread.
    film = 1.0 + 0.05 * smooth_noise(rng, shape, size / 6) + 0.02 * smooth_noise(rng, shape, 2.0)
    objects = ndimage.gaussian_filter(contrast, 1.0 * scale) - 0.10 * ndimage.gaussian_filter(
        rim, 0.8 * scale
    )
    dose = rng.uniform(300.0, 600.0)  # electrons per pixel on bare film
    expected = dose * film * (1.0 + objects) * illumination(rng, shape, falloff=0.15)
    image = detector_counts(rng, ndimage.gaussian_filter(expected, 0.7), offset=100)
    return SyntheticImage(
        image=image,
        instances=instances,
        instance_mask=instance_mask,
        info={"dose_e_per_px": round(float(dose), 1)},
    )


register_kind(
    SyntheticKind(
        name="vesicles",
        generate=generate_vesicles,
        classes=tuple(_CLASSES),
        evaluator_type="coco",
        pixel_size=2.0,
        unit="nm",
        description="TEM bright-field vesicles (large light, small dark) and holes; polygons",
        labelme="polygon",
    )
)
