"""Small geometry helpers private to the converters.

NOTE (merge): ``emdet/data/geometry.py`` is getting the project's rotated-box helpers. Once it lands,
replace :func:`rbox_corners`, :func:`normalize_rbox` and :func:`rolabelimg_to_rbox` here with those and
keep ``tests/data/test_converters.py::test_rotation_convention_*``, which pin the convention.

Rotated-box conventions
-----------------------
roLabelImg (and LabelImg-KITTI) store ``(cx, cy, w, h, a)`` with ``a`` in radians; with ``y`` pointing
down the corners are ``x = cx + cos(a) dx - sin(a) dy``, ``y = cy + sin(a) dx + cos(a) dy`` for
``dx = ±w/2, dy = ±h/2``: a positive ``a`` turns the box *clockwise* on screen.

detectron2 (:class:`detectron2.structures.RotatedBoxes`, ``get_rotated_vertices`` in
``layers/csrc/box_iou_rotated/box_iou_rotated_utils.h``) stores ``(cx, cy, w, h, t)`` with ``t`` in
degrees, *counter-clockwise* on screen: ``x = cx + cos(t) dx + sin(t) dy``,
``y = cy - sin(t) dx + cos(t) dy``. Hence ``t = -degrees(a)``.

emdet's ``rbox`` is detectron2's box in a canonical form: ``w >= h`` (``w`` is the long side) and
``t`` in ``[-90, 90)``; so ``t`` is the orientation of the long axis, counter-clockwise from the image
x axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

#: Vertices used to turn a labelme circle into a polygon (a multiple of 4, so that the polygon's
#: bounding box is the circle's).
CIRCLE_VERTICES = 32

RBox = tuple[float, float, float, float, float]


def rolabelimg_corners(cx: float, cy: float, w: float, h: float, angle_rad: float) -> np.ndarray:
    """Corners of a roLabelImg box, shape ``(4, 2)`` float64, ``(x, y)`` per row.

    Order: ``(dx, dy) = (-w/2, -h/2), (w/2, -h/2), (w/2, h/2), (-w/2, h/2)`` rotated by the
    roLabelImg formula (see the module docstring); for ``angle_rad = 0`` that is top-left, top-right,
    bottom-right, bottom-left.
    """
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    offsets = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    return np.array([(cx + c * dx - s * dy, cy + s * dx + c * dy) for dx, dy in offsets], float)


def normalize_rbox(cx: float, cy: float, w: float, h: float, angle_deg: float) -> RBox:
    """Canonical detectron2 rotated box: ``w >= h`` and angle in ``[-90, 90)`` degrees.

    The same rectangle is described by ``(w, h, t)``, ``(h, w, t + 90)`` and ``(w, h, t + 180)``;
    this picks the one whose ``w`` is the long side and whose angle lies in ``[-90, 90)``.
    """
    w, h, t = float(w), float(h), float(angle_deg)
    if h > w:
        w, h, t = h, w, t + 90.0
    t = (t + 90.0) % 180.0 - 90.0
    if abs(t) < 1e-9:
        t = 0.0
    return (float(cx), float(cy), w, h, t)


def rolabelimg_to_rbox(cx: float, cy: float, w: float, h: float, angle_rad: float) -> RBox:
    """roLabelImg ``(cx, cy, w, h, radians, clockwise)`` -> canonical detectron2 ``rbox``."""
    return normalize_rbox(cx, cy, w, h, -math.degrees(angle_rad))


def rbox_corners(rbox: Sequence[float]) -> np.ndarray:
    """Corners of a detectron2 rotated box ``(cx, cy, w, h, degrees CCW)``, shape ``(4, 2)``.

    Same formula and order as detectron2's ``get_rotated_vertices``.
    """
    cx, cy, w, h, t = (float(v) for v in rbox)
    c, s = math.cos(math.radians(t)) / 2, math.sin(math.radians(t)) / 2
    p0 = (cx + s * h + c * w, cy + c * h - s * w)
    p1 = (cx - s * h + c * w, cy - c * h - s * w)
    return np.array([p0, p1, (2 * cx - p0[0], 2 * cy - p0[1]), (2 * cx - p1[0], 2 * cy - p1[1])])


def circle_polygon(cx: float, cy: float, r: float, n: int = CIRCLE_VERTICES) -> np.ndarray:
    """Regular ``n``-gon inscribed in the circle, shape ``(n, 2)``, starting at ``(cx + r, cy)``."""
    t = np.arange(n) * (2 * np.pi / n)
    pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    # Make the four extreme vertices exact, so the bounding box is exactly the circle's.
    q = n // 4
    if n % 4 == 0:
        pts[0] = (cx + r, cy)
        pts[q] = (cx, cy + r)
        pts[2 * q] = (cx - r, cy)
        pts[3 * q] = (cx, cy - r)
    return pts


def polygons_area(polygons: Sequence[np.ndarray]) -> float:
    """Area covered by the union of polygons (each ``(N, 2)``); self-intersections are repaired."""
    shapes = [shapely.make_valid(Polygon(p)) for p in polygons if len(p) >= 3]
    if not shapes:
        return 0.0
    if len(shapes) == 1:
        return float(shapes[0].area)
    return float(shapely.union_all(shapes).area)


def clip_polygons(polygons: Sequence[np.ndarray], width: float, height: float) -> list[np.ndarray]:
    """Intersect polygons with the image rectangle ``[0, width] x [0, height]``.

    Returns the pieces that have an area (a polygon cut in two by the border gives two), each
    ``(N, 2)`` float64 without the closing vertex; an empty list when nothing is inside.
    """
    frame = shapely.box(0.0, 0.0, float(width), float(height))
    out: list[np.ndarray] = []
    for p in polygons:
        inside = shapely.make_valid(Polygon(p)).intersection(frame)
        for geom in getattr(inside, "geoms", [inside]):
            if isinstance(geom, Polygon) and geom.area > 0:
                out.append(np.asarray(geom.exterior.coords, float)[:-1])
    return out
