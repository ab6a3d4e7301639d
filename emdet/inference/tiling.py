"""Merge per-tile detections of one large image into one set of objects.

Glossary
--------
``N``
    Detections of all tiles of one image together.
``boxes``
    ``(N, 4)`` float64 ``(x0, y0, x1, y1)`` for axis-aligned models, or ``(N, 5)``
    ``(cx, cy, w, h, angle_deg)`` for rotated ones (detectron2's ``XYWHA_ABS``), in image pixels.
``tile``
    ``(y0, x0, y1, x1)``: the image rows and columns a tile covers (ends exclusive).

How tiles are merged (:func:`merge_tiles`)
------------------------------------------
Neighbouring tiles overlap (or at least touch), so an object near a seam is seen by several
tiles: whole by some, cut at a tile edge by others, and an object larger than the overlap is
only ever seen in pieces.

1. **Duplicates.** Same-class detections from different tiles whose boxes overlap by more than
   ``nms_threshold`` (IoU; rotated IoU for rotated boxes) are grouped and reduced with
   detectron2's ``batched_nms`` / ``batched_nms_rotated``; a suppressed detection is folded into
   the kept one it overlaps most.
2. **Objects cut at a seam.** A detection that reaches an inner tile edge (one that is not the
   image border) is *cut*. Two same-class detections from neighbouring tiles, at least one of
   them cut, are joined when their shapes agree where both tiles see the image: mask IoU >=
   ``join_threshold`` inside the tiles' shared region; for models without masks, the boxes
   (rasterised) cover each other there: intersection over the smaller >= ``join_threshold``
   (the boxes of two pieces of one object differ in height, the pieces do not); for tiles that
   only touch (no overlap), intersection over the smaller of the two pixel lines on either side
   of the seam >= ``join_threshold``. Joins run from the best
   agreement down; a detection that is whole in its tile is never joined with another
   detection of that tile, so two neighbours that merely touch stay apart.
3. A group's score is its best member's. The mask is the union of the members' masks (and the
   box their union) when the group contains a cut piece; a group of whole duplicates keeps its
   best member's mask and box.

Only detections in the neighbourhood of a seam are compared, tile pair by tile pair, so the
work grows with the number of tiles, not with the square of the number of detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from emdet.data.rle import MaskCrop

__all__ = ["Detections", "merge_tiles"]


@dataclass
class Detections:
    """Detections of one image (or one tile) in image pixel coordinates.

    Attributes
    ----------
    boxes : ndarray of float64, shape (N, 4) or (N, 5)
        ``(x0, y0, x1, y1)``, or ``(cx, cy, w, h, angle_deg)`` for a rotated model.
    scores : ndarray of float32, shape (N,)
    classes : ndarray of int64, shape (N,)
        Contiguous class indices (0 .. K-1) as the model predicts them.
    masks : list of MaskCrop, or None
        One mask per detection for models with a mask head.
    border : ndarray of bool, shape (N,), or None
        True where the object reaches the image border (it may be incomplete); set by
        :func:`merge_tiles`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: list[MaskCrop] | None = None
    border: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, self.box_dim)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if len(self.scores) != n or len(self.classes) != n:
            raise ValueError(
                f"Detections: {n} boxes but {len(self.scores)} scores, {len(self.classes)} classes"
            )
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"Detections: {n} boxes but {len(self.masks)} masks")

    @property
    def box_dim(self) -> int:
        boxes = np.asarray(self.boxes)
        return 5 if boxes.ndim == 2 and boxes.shape[1] == 5 else 4

    @property
    def rotated(self) -> bool:
        """True for rotated boxes ``(cx, cy, w, h, angle_deg)``."""
        return self.boxes.shape[1] == 5

    def __len__(self) -> int:
        return len(self.boxes)

    def select(self, index: np.ndarray | Sequence[int]) -> Detections:
        """The detections at ``index`` (integer indices or a boolean mask), in that order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return Detections(
            self.boxes[index],
            self.scores[index],
            self.classes[index],
            None if self.masks is None else [self.masks[i] for i in index],
            None if self.border is None else self.border[index],
        )

    def extents(self) -> np.ndarray:
        """``(N, 4)`` float64 ``(x0, y0, x1, y1)``: the pixels each object covers (its mask's
        box when there are masks, else its box or the box around its rotated box)."""
        if self.masks is not None:
            return np.array([m.extent for m in self.masks], dtype=np.float64).reshape(-1, 4)
        if self.rotated:
            return _rbox_extents(self.boxes)
        return self.boxes.copy()

    @classmethod
    def empty(cls, *, rotated: bool = False, masks: bool = False) -> Detections:
        return cls(np.zeros((0, 5 if rotated else 4)), [], [], [] if masks else None)

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """All detections of ``parts`` in order (all with or all without masks)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        has_masks = parts[0].masks is not None
        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.classes for p in parts]),
            [m for p in parts for m in p.masks] if has_masks else None,
        )


def _rbox_extents(rboxes: np.ndarray) -> np.ndarray:
    from emdet.data.geometry import rbox_to_polygon

    if len(rboxes) == 0:
        return np.zeros((0, 4))
    corners = rbox_to_polygon(rboxes)  # (N, 4, 2)
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of axis-aligned ``(x0, y0, x1, y1)`` boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of two box arrays of the same kind (4 or 5 columns)."""
    if a.shape[1] == 4:
        return _box_iou(a, b)
    import torch
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    iou = pairwise_iou_rotated(
        RotatedBoxes(torch.as_tensor(a, dtype=torch.float32)),
        RotatedBoxes(torch.as_tensor(b, dtype=torch.float32)),
    )
    return iou.numpy().astype(np.float64)


def _nms_keep(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float):
    """Indices kept by detectron2's batched NMS (rotated for 5-column boxes)."""
    import torch

    b = torch.as_tensor(boxes, dtype=torch.float32)
    s = torch.as_tensor(scores, dtype=torch.float32)
    c = torch.as_tensor(classes, dtype=torch.int64)
    if boxes.shape[1] == 5:
        from detectron2.layers import batched_nms_rotated

        keep = batched_nms_rotated(b, s, c, threshold)
    else:
        from detectron2.layers import batched_nms

        keep = batched_nms(b, s, c, threshold)
    return keep.numpy()


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, i: int, j: int) -> int:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[rj] = ri
        return ri


def _neighbour_pairs(tiles: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of tiles that overlap or share an edge (not just a corner)."""
    pairs = []
    y0, x0, y1, x1 = tiles.T
    for a in range(len(tiles) - 1):
        b = np.arange(a + 1, len(tiles))
        oy = np.minimum(y1[a], y1[b]) - np.maximum(y0[a], y0[b])
        ox = np.minimum(x1[a], x1[b]) - np.maximum(x0[a], x0[b])
        ok = (oy >= 0) & (ox >= 0) & ((oy > 0) | (ox > 0))
        pairs.extend((a, int(j)) for j in b[ok])
    return pairs


def _shape_window(
    det: Detections, i: int, window: tuple[int, int, int, int], polygons: np.ndarray | None
) -> np.ndarray:
    """Detection ``i`` rasterised inside ``window = (y0, y1, x0, x1)`` (pixel centres inside);
    ``polygons`` are the corners of rotated boxes."""
    y0, y1, x0, x1 = window
    if det.masks is not None:
        return det.masks[i].window(y0, y1, x0, x1)
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    box = det.boxes[i]
    if det.rotated:
        # fillPoly fills pixels whose centre (j + 0.5, i + 0.5) is inside; shift by half a pixel.
        pts = (polygons[i] - [x0 + 0.5, y0 + 0.5]) * 256
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=8)
        return out.astype(bool)
    c0 = int(np.clip(np.ceil(box[0] - 0.5), x0, x1)) - x0
    c1 = int(np.clip(np.ceil(box[2] - 0.5), x0, x1)) - x0
    r0 = int(np.clip(np.ceil(box[1] - 0.5), y0, y1)) - y0
    r1 = int(np.clip(np.ceil(box[3] - 0.5), y0, y1)) - y0
    out[r0:r1, c0:c1] = 1
    return out.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _iomin(a: np.ndarray, b: np.ndarray) -> float:
    smaller = min(np.count_nonzero(a), np.count_nonzero(b))
    return np.count_nonzero(a & b) / smaller if smaller else 0.0


def _seam_windows(ta: np.ndarray, tb: np.ndarray):
    """Windows ``(y0, y1, x0, x1)`` in which tiles ``ta`` and ``tb`` see the same objects.

    Overlapping tiles: their shared region, for both. Tiles that share an edge: the pixel line
    on each side of it (the first window for ``ta``, the second for ``tb``).
    """
    y0, x0 = max(ta[0], tb[0]), max(ta[1], tb[1])
    y1, x1 = min(ta[2], tb[2]), min(ta[3], tb[3])
    if y1 > y0 and x1 > x0:
        return (y0, y1, x0, x1), (y0, y1, x0, x1)
    if x1 == x0 and y1 > y0:  # side by side
        left = ta[3] == x0
        wa = (y0, y1, x0 - 1, x0) if left else (y0, y1, x0, x0 + 1)
        wb = (y0, y1, x0, x0 + 1) if left else (y0, y1, x0 - 1, x0)
        return wa, wb
    if y1 == y0 and x1 > x0:  # one above the other
        top = ta[2] == y0
        wa = (y0 - 1, y0, x0, x1) if top else (y0, y0 + 1, x0, x1)
        wb = (y0, y0 + 1, x0, x1) if top else (y0 - 1, y0, x0, x1)
        return wa, wb
    return None


def _clip_window(window, ext_i, ext_j):
    """``window`` restricted to the union of two extents (both shapes are empty outside)."""
    y0, y1, x0, x1 = window
    ex0 = int(np.floor(min(ext_i[0], ext_j[0])))
    ey0 = int(np.floor(min(ext_i[1], ext_j[1])))
    ex1 = int(np.ceil(max(ext_i[2], ext_j[2])))
    ey1 = int(np.ceil(max(ext_i[3], ext_j[3])))
    return max(y0, ey0), min(y1, ey1), max(x0, ex0), min(x1, ex1)


def merge_tiles(
    tiles: Sequence[tuple[tuple[int, int, int, int], Detections]],
    image_size: tuple[int, int],
    *,
    nms_threshold: float = 0.5,
    join_threshold: float = 0.5,
    edge_px: int = 2,
) -> Detections:
    """Merge the detections of overlapping tiles into one set of objects (see module docstring).

    Parameters
    ----------
    tiles : sequence of (tile, Detections)
        ``tile = (y0, x0, y1, x1)`` and that tile's detections, already in image coordinates.
    image_size : (int, int)
        ``(H, W)`` of the image.
    nms_threshold : float, default 0.5
        Box IoU above which same-class detections from different tiles are duplicates
        (use the model's ``ROI_HEADS.NMS_THRESH_TEST``).
    join_threshold : float, default 0.5
        IoU of two pieces' shapes where both tiles see them, from which they are one object.
    edge_px : int, default 2
        A detection within this many pixels of an inner tile edge is cut by it; within this
        many pixels of the image border it is marked in ``border``.

    Returns
    -------
    Detections
        Merged detections sorted by decreasing score, with ``border`` set.
    """
    height, width = (int(v) for v in image_size)
    tiles = list(tiles)
    parts = [d for _, d in tiles]
    det = Detections.concatenate(parts) if parts else Detections.empty()
    if len(tiles) > 1 and len(det):
        det = _merge(tiles, det, (height, width), nms_threshold, join_threshold, edge_px)
    order = np.argsort(-det.scores, kind="stable")
    det = det.select(order)
    ext = det.extents()
    det.border = (
        (ext[:, 0] <= edge_px)
        | (ext[:, 1] <= edge_px)
        | (ext[:, 2] >= width - edge_px)
        | (ext[:, 3] >= height - edge_px)
    )
    return det


def _near(ext: np.ndarray, lo: int, hi: int, region) -> np.ndarray:
    """Indices ``lo:hi`` whose extent reaches within a pixel of ``region = (y0, x0, y1, x1)``."""
    ry0, rx0, ry1, rx1 = region
    idx = np.arange(lo, hi)
    e = ext[idx]
    ok = (e[:, 0] <= rx1 + 1) & (e[:, 2] >= rx0 - 1) & (e[:, 1] <= ry1 + 1) & (e[:, 3] >= ry0 - 1)
    return idx[ok]


def _merge(tiles, det: Detections, image_size, nms_threshold, join_threshold, edge_px):
    height, width = image_size
    rects = np.array([t for t, _ in tiles], dtype=np.int64).reshape(-1, 4)
    counts = [len(d) for _, d in tiles]
    tile_of = np.repeat(np.arange(len(tiles)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)])
    ext = det.extents()
    polygons = None
    if det.masks is None and det.rotated:
        from emdet.data.geometry import rbox_to_polygon

        polygons = rbox_to_polygon(det.boxes).reshape(-1, 4, 2)

    # Which detections reach an inner edge of their own tile.
    ty0, tx0, ty1, tx1 = rects[tile_of].T
    cut = (
        ((tx0 > 0) & (ext[:, 0] <= tx0 + edge_px))
        | ((ty0 > 0) & (ext[:, 1] <= ty0 + edge_px))
        | ((tx1 < width) & (ext[:, 2] >= tx1 - edge_px))
        | ((ty1 < height) & (ext[:, 3] >= ty1 - edge_px))
    )

    dup_edges: list[tuple[int, int]] = []
    seam_edges: list[tuple[float, int, int]] = []
    for a, b in _neighbour_pairs(rects):
        if not counts[a] or not counts[b]:
            continue
        ra, rb = rects[a], rects[b]
        ry0, rx0 = max(ra[0], rb[0]), max(ra[1], rb[1])
        ry1, rx1 = min(ra[2], rb[2]), min(ra[3], rb[3])

        ia = _near(ext, starts[a], starts[a + 1], (ry0, rx0, ry1, rx1))
        ib = _near(ext, starts[b], starts[b + 1], (ry0, rx0, ry1, rx1))
        if not ia.size or not ib.size:
            continue
        same = det.classes[ia][:, None] == det.classes[ib][None, :]
        if not same.any():
            continue
        iou = pairwise_iou(det.boxes[ia], det.boxes[ib])
        for p, q in zip(*np.nonzero(same & (iou > nms_threshold)), strict=True):
            dup_edges.append((int(ia[p]), int(ib[q])))
        windows = _seam_windows(ra, rb)
        if windows is None:
            continue
        wa, wb = windows
        either_cut = cut[ia][:, None] | cut[ib][None, :]
        touching = (
            (ext[ia, 0][:, None] <= ext[ib, 2][None, :] + 1)
            & (ext[ib, 0][None, :] <= ext[ia, 2][:, None] + 1)
            & (ext[ia, 1][:, None] <= ext[ib, 3][None, :] + 1)
            & (ext[ib, 1][None, :] <= ext[ia, 3][:, None] + 1)
        )
        for p, q in zip(*np.nonzero(same & either_cut & touching), strict=True):
            i, j = int(ia[p]), int(ib[q])
            if wa == wb:
                w = _clip_window(wa, ext[i], ext[j])
                if w[1] <= w[0] or w[3] <= w[2]:
                    continue
                agree = _iou if det.masks is not None else _iomin
                score = agree(
                    _shape_window(det, i, w, polygons), _shape_window(det, j, w, polygons)
                )
            else:  # tiles that only touch: the lines on both sides of the seam
                score = _iomin(
                    _shape_window(det, i, wa, polygons), _shape_window(det, j, wb, polygons)
                )
            if score >= join_threshold:
                seam_edges.append((score, i, j))

    n = len(det)
    # 1. Duplicates: batched NMS within each group of mutually overlapping detections.
    owner = np.arange(n)
    if dup_edges:
        groups = _UnionFind(n)
        for i, j in dup_edges:
            groups.union(i, j)
        members: dict[int, list[int]] = {}
        for i in {k for e in dup_edges for k in e}:
            members.setdefault(groups.find(i), []).append(i)
        for idx in members.values():
            idx = np.array(sorted(idx))
            keep = idx[_nms_keep(det.boxes[idx], det.scores[idx], det.classes[idx], nms_threshold)]
            dropped = np.setdiff1d(idx, keep)
            if dropped.size:
                iou = pairwise_iou(det.boxes[dropped], det.boxes[keep])
                iou[det.classes[dropped][:, None] != det.classes[keep][None, :]] = -1
                owner[dropped] = keep[np.argmax(iou, axis=1)]

    # 2. Pieces of objects cut at seams: join, best agreement first. Two detections of the same
    # tile end up in one object only if both are cut (a curved object can leave a tile and come
    # back); a whole detection is never joined with anything else from its own tile.
    joined = _UnionFind(n)
    tiles_all: dict[int, set[int]] = {}
    tiles_whole: dict[int, set[int]] = {}
    for i in range(n):
        tiles_all.setdefault(int(owner[i]), set()).add(int(tile_of[i]))
        tiles_whole.setdefault(int(owner[i]), set())
        if not cut[i]:
            tiles_whole[int(owner[i])].add(int(tile_of[i]))
    has_seam = np.zeros(n, dtype=bool)
    for _, i, j in sorted(seam_edges, key=lambda e: -e[0]):
        ri, rj = joined.find(int(owner[i])), joined.find(int(owner[j]))
        if ri == rj or tiles_whole[ri] & tiles_all[rj] or tiles_all[ri] & tiles_whole[rj]:
            continue
        root = joined.union(ri, rj)
        tiles_all[root] = tiles_all[ri] | tiles_all[rj]
        tiles_whole[root] = tiles_whole[ri] | tiles_whole[rj]
        has_seam[root] = True

    groups_out: dict[int, list[int]] = {}
    for i in range(n):
        groups_out.setdefault(joined.find(int(owner[i])), []).append(i)

    keep_idx, boxes, masks = [], [], []
    for root, idx in groups_out.items():
        best = max(idx, key=lambda k: (det.scores[k], -k))
        keep_idx.append(best)
        combine = len(idx) > 1 and (has_seam[root] or bool(cut[idx].any()))
        if combine:
            boxes.append(_union_box(det.boxes[idx]))
            if det.masks is not None:
                masks.append(MaskCrop.union(det.masks[k] for k in idx))
        else:
            boxes.append(det.boxes[best])
            if det.masks is not None:
                masks.append(det.masks[best])
    keep_idx = np.array(keep_idx, dtype=np.int64)
    return Detections(
        np.array(boxes).reshape(-1, det.boxes.shape[1]),
        det.scores[keep_idx],
        det.classes[keep_idx],
        masks if det.masks is not None else None,
    )


def _union_box(boxes: np.ndarray) -> np.ndarray:
    """The box around several pieces of one object.

    Axis-aligned: min/max. Rotated: in the orientation of the largest piece (a short piece cut
    off near a seam has an unreliable angle), long enough to cover every piece along that axis,
    and as wide as the widest piece that shares the orientation (within 15 degrees), centred
    across like the largest piece.
    """
    if boxes.shape[1] == 4:
        return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])
    from emdet.data.geometry import normalize_rbox, rbox_to_polygon

    ref = int(np.argmax(boxes[:, 2] * boxes[:, 3]))
    angle = boxes[ref, 4]
    theta = np.deg2rad(angle)
    u = np.array([np.cos(theta), -np.sin(theta)])  # the box's width axis in the image
    v = np.array([np.sin(theta), np.cos(theta)])  # its height axis
    pu = rbox_to_polygon(boxes) @ u  # (N, 4)
    u0, u1 = pu.min(), pu.max()
    diff = np.abs((boxes[:, 4] - angle + 90.0) % 180.0 - 90.0)  # 0..90 degrees
    across = np.where(diff <= 15.0, boxes[:, 3], np.where(diff >= 75.0, boxes[:, 2], np.nan))
    across[ref] = boxes[ref, 3]
    height = float(np.nanmax(across))
    vc = float(boxes[ref, :2] @ v)
    centre = u * (u0 + u1) / 2 + v * vc
    return normalize_rbox([centre[0], centre[1], u1 - u0, height, angle])
