"""Geometry the converters need beyond :mod:`emdet.data.geometry` (which has the rotated-box
helpers they share with the rest of emdet): roLabelImg's angle convention, circles as polygons,
polygon areas and clipping. ``tests/data/test_converters.py::test_rotation_convention_*`` pin
the conventions.

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

from emdet.data.geometry import normalize_rbox

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


def canonical_rbox(cx: float, cy: float, w: float, h: float, angle_deg: float) -> RBox:
    """:func:`emdet.data.geometry.normalize_rbox` of one box as a tuple of floats (``w >= h``,
    angle in ``[-90, 90)``, an angle within 1e-9 of 0 written as 0)."""
    box = tuple(float(v) for v in normalize_rbox([cx, cy, w, h, angle_deg]))
    return box[:4] + (0.0 if abs(box[4]) < 1e-9 else box[4],)


def rolabelimg_to_rbox(cx: float, cy: float, w: float, h: float, angle_rad: float) -> RBox:
    """roLabelImg ``(cx, cy, w, h, radians, clockwise)`` -> canonical detectron2 ``rbox``."""
    return canonical_rbox(cx, cy, w, h, -math.degrees(angle_rad))


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
