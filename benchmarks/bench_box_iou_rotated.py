"""box_iou_rotated against shapely 2 (vectorised GEOS) on the same pairs.

Cases
-----
``sparse``
    1000 x 1000 rods (5-60 px long, aspect 3-10) in a 1000 x 1000 px field: few pairs overlap,
    as in one EM image of particles.
``dense``
    300 x 300 rods in a 60 px field (about a quarter of the pairs overlap).
``all-overlap``
    300 x 300 rods whose centres lie in a 4 px square: nearly every pair overlaps, so every pair
    goes through the polygon stage (worst case for emdet, best case for shapely's per-pair cost).

The baseline is the best a user would write with shapely 2, not a naive one: an ``STRtree`` of
the second set's polygons gives the pairs that intersect, ``shapely.intersection`` their areas
in one vectorised call, written into the ``(N, M)`` IoU matrix (``quick``: the first rows
only, scaled to pairs per second). Against all ``N * M`` pairs without the tree (the baseline
until 2026-12-04) the sparse case read 133x.

``sparse API``
    16 000 x 16 000 rods in a 4000 px field (the density of ``sparse``):
    ``pairwise_iou_rotated_sparse`` (only the overlapping pairs) against ``box_iou_rotated``
    (the dense ``N x M`` matrix) on the same boxes, both emdet, same run.
"""

from __future__ import annotations

import numpy as np
from _common import best_time, devices, peak_memory_mb, polygons, rods, row

NAME = "box_iou_rotated"
CASES = {
    "sparse": dict(n=1000, field=1000.0, length=(5.0, 60.0)),
    "dense": dict(n=300, field=60.0, length=(5.0, 60.0)),
    "all-overlap": dict(n=300, field=4.0, length=(20.0, 60.0)),
}
#: The sparse API's case (not compared with shapely: 2.6e8 pairs).
LARGE = dict(n=16000, field=4000.0, length=(5.0, 60.0))


def _boxes(case: str) -> tuple[np.ndarray, np.ndarray]:
    spec = LARGE if case in ("sparse-api", "dense-16k") else CASES[case]
    rng = np.random.default_rng(0)
    return (
        rods(rng, spec["n"], spec["field"], length=spec["length"]),
        rods(rng, spec["n"], spec["field"], length=spec["length"]),
    )


def make_case(case: str, quick: bool, device: str):
    """The emdet call of one case, inputs ready on ``device`` (float32)."""
    import torch

    import emdet  # noqa: F401
    from emdet.ops import box_iou_rotated

    b1, b2 = (torch.tensor(b, dtype=torch.float32, device=device) for b in _boxes(case))
    if case == "sparse-api":
        from emdet.ops import pairwise_iou_rotated_sparse

        return lambda: pairwise_iou_rotated_sparse(b1, b2)
    return lambda: box_iou_rotated(b1, b2)


def _shapely_iou(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """The ``(N, M)`` IoU matrix by shapely: STRtree candidates, vectorised intersections."""
    import shapely

    p1, p2 = polygons(b1), polygons(b2)
    rows, cols = shapely.STRtree(p2).query(p1, predicate="intersects")
    inter = shapely.area(shapely.intersection(p1[rows], p2[cols]))
    iou = np.zeros((len(p1), len(p2)))
    iou[rows, cols] = inter / (shapely.area(p1)[rows] + shapely.area(p2)[cols] - inter)
    return iou


def run(quick: bool = False) -> list[dict]:
    """Pairs per second of emdet and shapely, peak memory of emdet, max |IoU difference|."""
    rows = []
    for case in CASES:
        b1, b2 = _boxes(case)
        pairs = len(b1) * len(b2)
        sub = b1[: max(1, len(b1) // 5)] if quick else b1
        reference = None

        def baseline(sub=sub, b2=b2):
            nonlocal reference
            reference = _shapely_iou(sub, b2)

        t_base = best_time(baseline, repeat=1 if quick else 3, min_total=0.0)
        base_rate = sub.shape[0] * len(b2) / t_base
        overlap = float((reference > 0).mean())
        for device in devices():
            fn = make_case(case, quick, device)
            t = best_time(fn, repeat=3 if quick else 10)
            got = fn().cpu().double().numpy()[: sub.shape[0]]
            err = float(np.abs(got - reference).max())
            mem = peak_memory_mb(__file__, case, quick=quick, device=device)
            rows.append(
                row(
                    NAME,
                    f"{case}: {len(b1)}x{len(b2)} rods, {overlap:.1%} overlap",
                    pairs / t,
                    "pairs/s",
                    baseline=base_rate,
                    peak_mem_mb=mem,
                    device=device,
                    note=f"max |IoU - shapely| = {err:.1e} (float32); {t * 1e3:.1f} ms per call",
                )
            )
    rows += _sparse_api(quick)
    return rows


def _sparse_api(quick: bool) -> list[dict]:
    """The sparse API against the dense matrix, both emdet, on 16 000 x 16 000 sparse rods."""
    out = []
    n = LARGE["n"]
    for device in devices():
        sparse, dense = make_case("sparse-api", quick, device), make_case("dense-16k", quick,
                                                                          device)
        t_dense = best_time(dense, repeat=2 if quick else 3, min_total=0.0)
        t_sparse = best_time(sparse, repeat=2 if quick else 3, min_total=0.0)
        rows_, cols, iou = sparse()
        matrix = dense()
        same = bool(np.array_equal(matrix[rows_, cols].cpu().numpy(), iou.cpu().numpy())
                    and int((matrix > 0).sum()) == len(iou))
        mem = peak_memory_mb(__file__, "sparse-api", quick=quick, device=device)
        mem_dense = peak_memory_mb(__file__, "dense-16k", quick=quick, device=device)
        out.append(row(
            NAME, f"sparse API: {n}x{n} rods, {len(iou)} overlapping pairs, vs the dense matrix",
            n * n / t_sparse, "pairs/s", baseline=n * n / t_dense, peak_mem_mb=mem,
            device=device,
            note=(f"{t_sparse * 1e3:.0f} ms vs {t_dense * 1e3:.0f} ms per call; dense peak "
                  f"{mem_dense if mem_dense is None else round(mem_dense)} MB; same pairs and "
                  f"values as the matrix: {same}")))
    return out
