"""Pairwise IoU of rotated boxes in vectorised PyTorch (stand-in for detectron2's C++ op).

Glossary of shapes
------------------
``N``, ``M``
    Numbers of boxes in the two sets.
``P``
    Number of box pairs handled together (candidate pairs, or one chunk of them).
``boxes``
    ``(N, 5)`` floating point, one row ``(cx, cy, w, h, angle)`` per box, angle in degrees,
    detectron2's convention: in the image frame (x right, y down) the width axis of the box is
    ``(cos a, -sin a)`` and the height axis ``(sin a, cos a)`` (see
    :class:`detectron2.structures.RotatedBoxes`).
``pair tensors``
    ``(P,)`` one value per pair, ``(P, 4)`` one per box vertex, ``(P, 24)`` one per candidate
    vertex of the intersection polygon: 4 vertices of box 1, 4 of box 2, 16 edge crossings.

How it works
------------
1. Candidate pairs: only pairs whose circumscribed circles overlap can intersect. Both sets are
   sorted by ``cx`` and tested window by window (:func:`overlap_candidates`), so sparse scenes
   cost far less than ``N * M`` tests and memory stays bounded.
2. Each pair is solved in the frame of box 1 (centre at the origin, axes along its width and
   height), which is detectron2's midpoint shift taken one step further: box 1 is exactly
   ``[-w/2, w/2] x [-h/2, h/2]``, every edge crossing is a division by a single product (no
   cancellation), and box 2 is turned by the angle difference, whose sine stays accurate for
   nearly parallel boxes. Sines and cosines of multiples of 90 degrees are exact
   (:func:`cos_sin_deg`).
3. A separating-axis test on the 4 box axes drops pairs that do not overlap.
4. The 24 candidate vertices are kept when they lie in both boxes (up to a tolerance of a few
   machine epsilons of the pair's size), and points accepted by the tolerance are moved onto the
   boxes. Validity is decided from the point's position, not from the edge parameters, so nearly
   parallel edges cannot add a point outside either box.
5. Valid points are sorted by angle around their centroid (all of them lie on the boundary of the
   convex intersection), invalid slots repeat the first point, and the shoelace formula gives the
   intersection area. IoU is ``inter / (area1 + area2 - inter)``, with ``inter`` clipped to
   ``[0, min(area1, area2)]``; it is 0 when either area is below ``1e-14`` (as detectron2).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "batched_candidates",
    "box_iou_rotated",
    "cos_sin_deg",
    "overlap_candidates",
    "pair_iou_rotated",
    "pairwise_iou_rotated_sparse",
]

#: Boxes with ``w * h`` below this have IoU 0 with everything (detectron2's threshold).
MIN_AREA = 1e-14
#: Pairs solved together in the polygon stage; about 3 kB of temporaries per float32 pair.
PAIR_CHUNK = 1 << 15
#: Elements of the ``(rows, M)`` circle-test matrix computed at once.
CANDIDATE_CHUNK = 1 << 22
# Tolerance of the inside tests, in machine epsilons of the pair's size.
_TOL_EPS = 32.0


def _check_boxes(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(
            f"{name} must have shape (N, 5) with rows (cx, cy, w, h, angle_degrees); "
            f"got shape {tuple(boxes.shape)}."
        )


def _work_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32  # integers, float16 and bfloat16 are solved in float32
    return dtype


def cos_sin_deg(angle: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine and sine of angles in degrees, exact at multiples of 90 degrees.

    Parameters
    ----------
    angle : Tensor, any shape, float32 or float64
        Angles in degrees, any range.

    Returns
    -------
    cos, sin : Tensor, same shape and dtype as ``angle``
        ``cos(angle)`` and ``sin(angle)``. The angle is reduced to ``90 * k + r`` with
        ``|r| <= 45`` first, so that ``cos(90) == 0`` and ``sin(180) == 0`` exactly, and large
        angles lose no precision in the conversion to radians.
    """
    k = torch.round(angle / 90.0)
    r = torch.deg2rad(angle - 90.0 * k)
    c, s = torch.cos(r), torch.sin(r)
    quadrant = torch.remainder(k, 4.0)
    cos = torch.where(
        quadrant == 0, c, torch.where(quadrant == 1, -s, torch.where(quadrant == 2, -c, s))
    )
    sin = torch.where(
        quadrant == 0, s, torch.where(quadrant == 1, c, torch.where(quadrant == 2, -s, -c))
    )
    return cos, sin


def overlap_candidates(
    boxes1: Tensor,
    boxes2: Tensor,
    *,
    upper_triangle: bool = False,
    chunk: int | None = None,
    rows_per_chunk: int = 128,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield index pairs of boxes whose circumscribed circles overlap, a chunk at a time.

    Both sets are sorted by ``cx``; each chunk of ``rows_per_chunk`` boxes of ``boxes1`` is only
    tested against the ``boxes2`` whose ``cx`` lies within reach, so sparse scenes cost much less
    than ``N * M`` tests. Pairs where either box has an area below :data:`MIN_AREA` or a
    non-finite coordinate are left out (their IoU is 0).

    Parameters
    ----------
    boxes1 : Tensor, shape (N, 5), float
        Rotated boxes ``(cx, cy, w, h, angle_degrees)``.
    boxes2 : Tensor, shape (M, 5), float
        Rotated boxes, same device and dtype.
    upper_triangle : bool, optional
        Only yield pairs ``(i, j)`` with ``j > i`` (for one set against itself, as in NMS).
    chunk : int, optional
        Largest number of elements of a circle-test matrix built at once; default
        :data:`CANDIDATE_CHUNK`.
    rows_per_chunk : int, optional
        Rows of ``boxes1`` (in ``cx`` order) per window.

    Yields
    ------
    rows, cols : Tensor, shape (P,), int64
        Indices into ``boxes1`` and ``boxes2`` of candidate pairs, on the boxes' device, in no
        particular order; every candidate pair is yielded exactly once.
    """
    chunk = CANDIDATE_CHUNK if chunk is None else chunk
    keep1 = _usable(boxes1).nonzero(as_tuple=True)[0]
    keep2 = _usable(boxes2).nonzero(as_tuple=True)[0]
    n, m = keep1.numel(), keep2.numel()
    if n == 0 or m == 0:
        return
    b1, b2 = boxes1[keep1], boxes2[keep2]
    order1, order2 = b1[:, 0].argsort(), b2[:, 0].argsort()
    idx1, idx2 = keep1[order1], keep2[order2]
    b1, b2 = b1[order1], b2[order2]
    x1, y1 = b1[:, 0].contiguous(), b1[:, 1].contiguous()
    x2, y2 = b2[:, 0].contiguous(), b2[:, 1].contiguous()
    # A relative slack: pairs let through by it are dropped later by the separating-axis test.
    r1 = 0.5 * torch.hypot(b1[:, 2], b1[:, 3]) * (1 + 1e-5)
    r2 = 0.5 * torch.hypot(b2[:, 2], b2[:, 3]) * (1 + 1e-5)

    step = max(1, min(rows_per_chunk, n))
    starts = torch.arange(0, n, step, device=b1.device)
    stops = (starts + step).clamp(max=n) - 1
    pad = starts.numel() * step - n
    r1_max = torch.cat([r1, r1.new_zeros(pad)]).view(-1, step).amax(1)
    reach = r1_max + r2.max()
    lo = torch.searchsorted(x2, x1[starts] - reach)
    hi = torch.searchsorted(x2, x1[stops] + reach, right=True)
    windows = torch.stack([starts, stops + 1, lo, hi], 1).tolist()

    for row0, row1, col0, col1 in windows:
        if col1 <= col0:
            continue
        sub = max(1, chunk // (col1 - col0))
        for s in range(row0, row1, sub):
            e = min(row1, s + sub)
            dx = x1[s:e, None] - x2[col0:col1]
            dy = y1[s:e, None] - y2[col0:col1]
            limit = r1[s:e, None] + r2[col0:col1]
            rows, cols = (dx * dx + dy * dy <= limit * limit).nonzero(as_tuple=True)
            rows, cols = idx1[rows + s], idx2[cols + col0]
            if upper_triangle:
                upper = cols > rows
                rows, cols = rows[upper], cols[upper]
            if rows.numel():
                yield rows, cols


def batched_candidates(
    boxes1: Tensor,
    boxes2: Tensor,
    *,
    upper_triangle: bool = False,
    batch: int | None = None,
    chunk: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """:func:`overlap_candidates` regrouped into batches of at most ``batch`` pairs.

    Solving few large batches of pairs is much faster than many small ones (per-call overhead),
    and the batch size bounds the memory of the polygon stage.

    Parameters
    ----------
    boxes1, boxes2, upper_triangle
        As :func:`overlap_candidates`.
    batch : int, optional
        Pairs per batch; default :data:`PAIR_CHUNK`.
    chunk : int, optional
        Circle-test chunk of :func:`overlap_candidates`; default :data:`CANDIDATE_CHUNK`.

    Yields
    ------
    rows, cols : Tensor, shape (P,), int64, ``P <= batch``
        Indices into ``boxes1`` and ``boxes2``.
    """
    batch = PAIR_CHUNK if batch is None else batch
    chunk = CANDIDATE_CHUNK if chunk is None else chunk
    rows_buf: list[Tensor] = []
    cols_buf: list[Tensor] = []
    size = 0
    for rows, cols in overlap_candidates(
        boxes1, boxes2, upper_triangle=upper_triangle, chunk=chunk
    ):
        rows_buf.append(rows)
        cols_buf.append(cols)
        size += rows.numel()
        if size >= batch:
            rows, cols = torch.cat(rows_buf), torch.cat(cols_buf)
            for start in range(0, size - batch + 1, batch):
                yield rows[start : start + batch], cols[start : start + batch]
            rest = size % batch
            rows_buf, cols_buf, size = [rows[size - rest :]], [cols[size - rest :]], rest
    if size:
        yield torch.cat(rows_buf), torch.cat(cols_buf)


def _usable(boxes: Tensor) -> Tensor:
    """Boxes with a finite row and ``w * h >= MIN_AREA``: ``(N, 5)`` -> ``(N,)`` bool."""
    return torch.isfinite(boxes).all(1) & (boxes[:, 2] * boxes[:, 3] >= MIN_AREA)


def _separated(
    cx: Tensor, cy: Tensor, cd: Tensor, sd: Tensor, a: Tensor, b: Tensor, p: Tensor, q: Tensor
) -> Tensor:
    """Separating-axis test of box 1 ``[-a, a] x [-b, b]`` and box 2 (centre, turn, half sizes).

    Touching boxes count as separated. All inputs and the output have shape ``(P,)``.
    """
    acd, asd = cd.abs(), sd.abs()
    sep = cx.abs() >= a + p * acd + q * asd
    sep |= cy.abs() >= b + p * asd + q * acd
    xi = -(cx * cd - cy * sd)  # centre of box 1 in the frame of box 2
    eta = -(cx * sd + cy * cd)
    sep |= xi.abs() >= p + a * acd + b * asd
    sep |= eta.abs() >= q + a * asd + b * acd
    return sep


def _intersection_area(
    cx: Tensor, cy: Tensor, cd: Tensor, sd: Tensor, a: Tensor, b: Tensor, p: Tensor, q: Tensor
) -> Tensor:
    """Area of the intersection of box 1 ``[-a, a] x [-b, b]`` and box 2, in box 1's frame.

    Box 2 has centre ``(cx, cy)``, half width ``p`` along ``(cd, -sd)`` and half height ``q`` along
    ``(sd, cd)``. All inputs and the output have shape ``(P,)``; the boxes must not be
    separated (otherwise the result is still correct but the work is wasted).
    """
    ux, uy = p * cd, -p * sd  # half width vector of box 2
    vx, vy = q * sd, q * cd  # half height vector of box 2
    # Vertices, in detectron2's order: c+u+v, c+u-v, c-u-v, c-u+v.
    sx = torch.stack([ux + vx, ux - vx, -ux - vx, -ux + vx], 1)
    sy = torch.stack([uy + vy, uy - vy, -uy - vy, -uy + vy], 1)
    bx, by = cx[:, None] + sx, cy[:, None] + sy  # (P, 4) vertices of box 2
    # Line through vertex k of box 2 along its edge k: direction v for k = 0, 2 and u for 1, 3.
    fx = torch.stack([vx, ux, vx, ux], 1)
    fy = torch.stack([vy, uy, vy, uy], 1)
    pm = torch.tensor([1.0, -1.0], dtype=a.dtype, device=a.device)
    x0 = a[:, None, None] * pm[:, None]  # (P, 2, 1): the vertical edges x = +-a of box 1
    y0 = b[:, None, None] * pm[:, None]
    # Crossings with x = x0 and y = y0; a zero division gives inf/nan, which fails the tests below.
    y_at_x0 = by[:, None] + (x0 - bx[:, None]) * (fy / fx)[:, None]  # (P, 2, 4)
    x_at_y0 = bx[:, None] + (y0 - by[:, None]) * (fx / fy)[:, None]
    ones = torch.ones_like(y_at_x0)
    ax = torch.stack([a, a, -a, -a], 1)
    ay = torch.stack([b, -b, -b, b], 1)
    px = torch.cat([ax, bx, (x0 * ones).flatten(1), x_at_y0.flatten(1)], 1)  # (P, 24)
    py = torch.cat([ay, by, y_at_x0.flatten(1), (y0 * ones).flatten(1)], 1)

    eps = torch.finfo(a.dtype).eps
    tol = (_TOL_EPS * eps * (cx.abs() + cy.abs() + a + b + p + q))[:, None]
    a_, b_, p_, q_ = a[:, None], b[:, None], p[:, None], q[:, None]
    cx_, cy_, cd_, sd_ = cx[:, None], cy[:, None], cd[:, None], sd[:, None]
    xi = (px - cx_) * cd_ - (py - cy_) * sd_  # coordinates in the frame of box 2
    eta = (px - cx_) * sd_ + (py - cy_) * cd_
    valid = (px.abs() <= a_ + tol) & (py.abs() <= b_ + tol)
    valid &= (xi.abs() <= p_ + tol) & (eta.abs() <= q_ + tol)
    # Points accepted by the tolerance are moved onto the boxes (nearest point of box 2, then
    # clamp into box 1), so the tolerance only changes the area at second order.
    outside2 = (xi.abs() > p_) | (eta.abs() > q_)
    xi, eta = torch.maximum(torch.minimum(xi, p_), -p_), torch.maximum(torch.minimum(eta, q_), -q_)
    px = torch.where(outside2, cx_ + xi * cd_ + eta * sd_, px)
    py = torch.where(outside2, cy_ - xi * sd_ + eta * cd_, py)
    px = torch.maximum(torch.minimum(px, a_), -a_)
    py = torch.maximum(torch.minimum(py, b_), -b_)

    count = valid.sum(1)
    zero = torch.zeros((), dtype=px.dtype, device=px.device)
    px, py = torch.where(valid, px, zero), torch.where(valid, py, zero)
    denom = count.clamp(min=1).to(px.dtype)
    px = px - (px.sum(1) / denom)[:, None]
    py = py - (py.sum(1) / denom)[:, None]
    angle = torch.where(valid, torch.atan2(py, px), torch.full_like(px, 10.0))
    order = angle.argsort(dim=1)
    px, py = px.gather(1, order), py.gather(1, order)
    valid = valid.gather(1, order)
    px = torch.where(valid, px, px[:, :1])
    py = torch.where(valid, py, py[:, :1])
    cross = px * py.roll(-1, 1) - py * px.roll(-1, 1)
    area = 0.5 * cross.sum(1).abs()
    return torch.where(count >= 3, area, zero)


def pair_iou_rotated(boxes1: Tensor, boxes2: Tensor, *, chunk: int | None = None) -> Tensor:
    """IoU of aligned pairs of rotated boxes: ``iou[k] = IoU(boxes1[k], boxes2[k])``.

    Parameters
    ----------
    boxes1, boxes2 : Tensor, shape (P, 5), float32 or float64
        Rotated boxes ``(cx, cy, w, h, angle_degrees)``, same device and dtype.
    chunk : int, optional
        Pairs solved at once (default :data:`PAIR_CHUNK`); bounds the peak memory.

    Returns
    -------
    Tensor, shape (P,), same dtype and device
        IoU in ``[0, 1]``; 0 when either box has ``w * h < 1e-14``.
    """
    chunk = PAIR_CHUNK if chunk is None else chunk
    out = torch.zeros(boxes1.shape[0], dtype=boxes1.dtype, device=boxes1.device)
    for start in range(0, boxes1.shape[0], chunk):
        b1, b2 = boxes1[start : start + chunk], boxes2[start : start + chunk]
        out[start : start + chunk] = _pair_iou_chunk(b1, b2)
    return out


def _pair_iou_chunk(b1: Tensor, b2: Tensor) -> Tensor:
    """IoU of aligned pairs ``(P, 5), (P, 5) -> (P,)`` in one go (see :func:`pair_iou_rotated`)."""
    area1, area2 = b1[:, 2] * b1[:, 3], b2[:, 2] * b2[:, 3]
    c1, s1 = cos_sin_deg(b1[:, 4])
    cd, sd = cos_sin_deg(b2[:, 4] - b1[:, 4])
    dx, dy = b2[:, 0] - b1[:, 0], b2[:, 1] - b1[:, 1]
    cx = dx * c1 - dy * s1  # centre of box 2 in the frame of box 1
    cy = dx * s1 + dy * c1
    a, b = 0.5 * b1[:, 2].abs(), 0.5 * b1[:, 3].abs()
    p, q = 0.5 * b2[:, 2].abs(), 0.5 * b2[:, 3].abs()
    live = (area1 >= MIN_AREA) & (area2 >= MIN_AREA)
    live &= ~_separated(cx, cy, cd, sd, a, b, p, q)
    iou = torch.zeros_like(area1)
    idx = live.nonzero(as_tuple=True)[0]
    if idx.numel() == 0:
        return iou
    args = [t[idx] for t in (cx, cy, cd, sd, a, b, p, q)]
    inter = _intersection_area(*args)
    a1, a2 = area1[idx], area2[idx]
    inter = torch.minimum(inter, torch.minimum(a1, a2))
    iou[idx] = inter / (a1 + a2 - inter)
    return iou


def _dtypes(boxes1: Tensor, boxes2: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """Check two box sets (shape, device) and return ``(work dtype, output dtype)``."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.device != boxes2.device:
        raise ValueError(
            f"boxes1 is on {boxes1.device} but boxes2 is on {boxes2.device}; move both to one "
            "device."
        )
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    dtype = _work_dtype(boxes1, boxes2)
    return dtype, out_dtype if out_dtype.is_floating_point else dtype


def box_iou_rotated(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair of rotated boxes (detectron2's ``box_iou_rotated``).

    Parameters
    ----------
    boxes1 : Tensor, shape (N, 5), float32 or float64
        Rotated boxes ``(cx, cy, w, h, angle_degrees)`` in detectron2's convention (module
        docstring); any angle range, ``a`` and ``a + 360 k`` are the same box.
    boxes2 : Tensor, shape (M, 5), same device
        Rotated boxes.

    Returns
    -------
    Tensor, shape (N, M), dtype of ``boxes1`` and ``boxes2`` promoted (float32 for integer or
    half-precision input), device of ``boxes1``
        ``iou[i, j]`` in ``[0, 1]``. 0 for disjoint or touching boxes and when either box has
        ``w * h < 1e-14``; 1 for identical boxes. Not differentiable, like the C++ op.

    Notes
    -----
    Only pairs whose circumscribed circles overlap are solved, in batches, so the time is a
    sweep over the boxes sorted by ``cx`` plus about 1 microsecond (CPU) per overlapping pair,
    and the memory is the ``(N, M)`` result plus bounded temporaries. Works on CPU and CUDA.
    """
    dtype, out_dtype = _dtypes(boxes1, boxes2)
    with torch.no_grad():
        b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
        n, m = b1.shape[0], b2.shape[0]
        iou = torch.zeros(n * m, dtype=dtype, device=b1.device)
        for rows, cols in batched_candidates(b1, b2):
            iou[rows * m + cols] = _pair_iou_chunk(b1[rows], b2[cols])
        return iou.view(n, m).to(out_dtype)


def pairwise_iou_rotated_sparse(boxes1: Tensor, boxes2: Tensor, *, min_iou: float = 0.0
                                ) -> tuple[Tensor, Tensor, Tensor]:
    """The overlapping pairs of two sets of rotated boxes, without the ``(N, M)`` matrix.

    Parameters
    ----------
    boxes1 : Tensor, shape (N, 5)
    boxes2 : Tensor, shape (M, 5), same device
        Rotated boxes as in :func:`box_iou_rotated`.
    min_iou : float, default 0
        Keep the pairs whose IoU is above this.

    Returns
    -------
    rows, cols : Tensor of int64, shape (P,)
        Indices into ``boxes1`` and ``boxes2``, sorted by ``(row, col)``.
    iou : Tensor, shape (P,)
        Their IoU, the values :func:`box_iou_rotated` gives at ``[rows, cols]`` (the other
        entries of that matrix are 0, or at most ``min_iou``).

    Notes
    -----
    Time and memory grow with the pairs whose circumscribed circles overlap, not with
    ``N * M``: for 16 000 sparse boxes the dense matrix alone is 1 GB of float32 zeros.
    """
    dtype, out_dtype = _dtypes(boxes1, boxes2)
    device = boxes1.device
    with torch.no_grad():
        b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
        parts_r, parts_c, parts_v = [], [], []
        for rows, cols in batched_candidates(b1, b2):
            iou = _pair_iou_chunk(b1[rows], b2[cols])
            keep = iou > min_iou
            parts_r.append(rows[keep])
            parts_c.append(cols[keep])
            parts_v.append(iou[keep])
        if not parts_r:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty.clone(), torch.zeros(0, dtype=out_dtype, device=device)
        rows, cols, iou = torch.cat(parts_r), torch.cat(parts_c), torch.cat(parts_v)
        order = torch.argsort(rows * max(1, b2.shape[0]) + cols)
        return rows[order].long(), cols[order].long(), iou[order].to(out_dtype)
