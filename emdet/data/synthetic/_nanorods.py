"""Heavily overlapping nanorods in an HAADF-STEM image (Zhong et al., seed paper 002).

Rods are spherocylinders; HAADF intensity grows with the projected thickness, so where rods
cross the image is brighter. Rods gather in a few loose clusters with a shared preferred
orientation. Each rod is annotated by its tight rotated box ``rbox = [cx, cy, w, h, angle]``
(detectron2 ``XYWHA_ABS``, ``w`` along the rod, ``w >= h``, angle in ``[-90, 90)``), its
4-corner polygon and the enclosing axis-aligned ``bbox``. Rods lie wholly inside the image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from emdet.data.geometry import rbox_to_polygon
from emdet.data.synthetic._base import (
    Instance,
    SyntheticImage,
    SyntheticKind,
    bbox_of_points,
    register_kind,
)
from emdet.data.synthetic._noise import detector_counts, smooth_noise


def _render_rod(
    out: np.ndarray, cx: float, cy: float, length: float, diameter: float, angle_deg: float
) -> None:
    """Add the projected thickness (pixels) of one spherocylinder to ``out`` in place."""
    theta = np.deg2rad(angle_deg)
    u = np.array([np.cos(theta), -np.sin(theta)])  # rod axis, detectron2 width direction
    half = 0.5 * (length - diameter)  # half-length of the cylinder part
    r = 0.5 * diameter
    extent = half * np.abs(u) + r + 1
    h, w = out.shape
    x0, x1 = max(0, int(cx - extent[0])), min(w, int(np.ceil(cx + extent[0])) + 1)
    y0, y1 = max(0, int(cy - extent[1])), min(h, int(np.ceil(cy + extent[1])) + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    dx, dy = xx - cx, yy - cy
    along = np.clip(dx * u[0] + dy * u[1], -half, half)
    d2 = (dx - along * u[0]) ** 2 + (dy - along * u[1]) ** 2
    out[y0:y1, x0:x1] += 2.0 * np.sqrt(np.clip(r * r - d2, 0.0, None))


def generate_nanorods(rng: np.random.Generator, size: int, scale: float = 1.0) -> SyntheticImage:
    """One HAADF-STEM image of overlapping nanorods; see the module docstring."""
    shape = (size, size)
    field_factor = (size / (256.0 * scale)) ** 2
    n_rods = max(1, int(round(rng.uniform(25, 40) * field_factor)))
    n_clusters = max(1, int(round(rng.integers(2, 5) * np.sqrt(field_factor))))
    centres = rng.uniform(0.2, 0.8, (n_clusters, 2)) * size
    cluster_angle = rng.uniform(-90, 90, n_clusters)
    thickness = np.zeros(shape)
    instances: list[Instance] = []
    attempts = 0
    while len(instances) < n_rods and attempts < 50 * n_rods:
        attempts += 1
        k = rng.integers(n_clusters)
        length = rng.uniform(28.0, 64.0) * scale
        diameter = rng.uniform(7.0, 11.0) * scale
        cx, cy = centres[k] + rng.normal(0.0, 0.13 * size, 2)
        angle = (cluster_angle[k] + rng.normal(0.0, 30.0) + 90.0) % 180.0 - 90.0
        rbox = np.round([cx, cy, length, diameter, angle], 3)
        corners = np.round(rbox_to_polygon(rbox), 2)
        if corners.min() < 0.5 or corners.max() > size - 0.5:
            continue
        _render_rod(thickness, *rbox)
        instances.append(
            Instance(
                category="nanorod",
                segmentation=[corners.ravel().tolist()],
                bbox=bbox_of_points(corners),
                area=round(float(rbox[2] * rbox[3]), 2),
                extra={"rbox": [float(v) for v in rbox]},
            )
        )
    support = (
        20.0
        + 4.0 * smooth_noise(rng, shape, 4.0 * scale)
        + 3.0 * smooth_noise(rng, shape, size / 5)
    )
    brightness = rng.uniform(5.0, 8.0)  # counts per pixel of projected rod thickness
    expected = ndimage.gaussian_filter(support + brightness * thickness, 0.9 * scale)
    image = detector_counts(rng, expected)
    # STEM scan: each line has its own small offset.
    line_offset = np.rint(rng.normal(0.0, 1.5, (size, 1))).astype(np.int32)
    image = np.clip(image.astype(np.int32) + line_offset, 0, 65535).astype(np.uint16)
    return SyntheticImage(image=image, instances=instances)


register_kind(
    SyntheticKind(
        name="nanorods",
        generate=generate_nanorods,
        classes=("nanorod",),
        evaluator_type="rotated",
        pixel_size=0.5,
        unit="nm",
        description="HAADF-STEM nanorods, heavily overlapping; rotated boxes",
        rotated=True,
    )
)
