"""Non-maximum suppression of rotated boxes (stand-in for detectron2's C++/CUDA ``nms_rotated``).

Glossary of shapes
------------------
``N``
    Number of boxes.
``P``
    Number of pairs of boxes (in score order ``i < j``) whose circumscribed circles overlap.
``boxes``
    ``(N, 5)`` float, rows ``(cx, cy, w, h, angle_degrees)`` (see :mod:`emdet.ops.box_iou_rotated`).
``scores``
    ``(N,)`` float.
``keep``
    ``(K,)`` int64 indices into ``boxes``, ``K <= N``, highest score first.

How it works
------------
Boxes are sorted by score (stable, so ties keep their input order). IoUs are computed only for
the pairs that can overlap (:func:`emdet.ops.box_iou_rotated.batched_candidates`), on the boxes'
device. The pairs above the threshold form a small graph ``i -> j`` (``i`` scores higher), which
is moved to the CPU as a CSR structure; the greedy pass then walks the boxes in score order and
removes the successors of every box it keeps. That loop is over boxes that suppress something,
never over pairs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from emdet.ops.box_iou_rotated import _check_boxes, _pair_iou_chunk, _work_dtype, batched_candidates

__all__ = ["nms_rotated"]


def nms_rotated(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression of rotated boxes.

    Parameters
    ----------
    boxes : Tensor, shape (N, 5), float32 or float64
        Rotated boxes ``(cx, cy, w, h, angle_degrees)`` in detectron2's convention.
    scores : Tensor, shape (N,), float
        Score of each box, same device.
    iou_threshold : float
        A box is removed when its IoU with a kept, higher-scoring box is **strictly greater**
        than ``iou_threshold`` (torchvision's ``nms`` and detectron2's CUDA kernel; detectron2's
        CPU kernel uses ``>=``, which differs only for IoUs exactly equal to the threshold). A
        negative threshold keeps only the best box.

    Returns
    -------
    Tensor, shape (K,), int64, on the device of ``boxes``
        Indices of the kept boxes, by decreasing score; equal scores keep their input order.

    Notes
    -----
    IoUs follow :func:`emdet.ops.box_iou_rotated`: boxes with ``w * h < 1e-14`` overlap nothing
    and are always kept. On CUDA the IoUs are computed on the GPU and only the suppression
    pairs are copied to the CPU for the greedy pass.
    """
    _check_boxes(boxes, "boxes")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scores must have shape (N,) = ({boxes.shape[0]},) to match boxes; got "
            f"{tuple(scores.shape)}."
        )
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    with torch.no_grad():
        order = torch.sort(scores.to(device), descending=True, stable=True).indices
        if iou_threshold < 0:  # every IoU, 0 included, exceeds it: the best box suppresses all
            return order[:1]
        sorted_boxes = boxes[order].to(_work_dtype(boxes))
        sources: list[Tensor] = []
        targets: list[Tensor] = []
        for rows, cols in batched_candidates(sorted_boxes, sorted_boxes, upper_triangle=True):
            iou = _pair_iou_chunk(sorted_boxes[rows], sorted_boxes[cols])
            hit = iou > iou_threshold
            sources.append(rows[hit])
            targets.append(cols[hit])
        if not sources:
            return order
        src = torch.cat(sources).cpu().numpy()
        dst = torch.cat(targets).cpu().numpy()
        removed = _greedy(src, dst, n)
        keep = torch.from_numpy(np.flatnonzero(~removed)).to(device)
        return order[keep]


def _greedy(src: np.ndarray, dst: np.ndarray, n: int) -> np.ndarray:
    """Greedy suppression on the graph of pairs ``src[k] -> dst[k]`` (``src < dst``, score order).

    Parameters
    ----------
    src, dst : ndarray, shape (P,), int64
        Box ``dst[k]`` is suppressed by box ``src[k]`` if ``src[k]`` is kept.
    n : int
        Number of boxes.

    Returns
    -------
    ndarray, shape (n,), bool
        True for removed boxes.
    """
    removed = np.zeros(n, dtype=bool)
    if src.size == 0:
        return removed
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    heads, starts = np.unique(src, return_index=True)
    stops = np.append(starts[1:], src.size)
    for head, start, stop in zip(heads.tolist(), starts.tolist(), stops.tolist(), strict=True):
        if not removed[head]:
            removed[dst[start:stop]] = True
    return removed
