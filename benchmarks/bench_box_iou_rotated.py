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

The baseline is ``shapely.intersection(a[:, None], b[None, :]).area`` turned into IoU, on all
``N * M`` pairs (``quick``: on the first rows only, scaled to pairs per second).
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


def _boxes(case: str) -> tuple[np.ndarray, np.ndarray]:
    spec = CASES[case]
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
    return lambda: box_iou_rotated(b1, b2)


def _shapely_iou(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    import shapely

    p1, p2 = polygons(b1), polygons(b2)
    inter = shapely.area(shapely.intersection(p1[:, None], p2[None, :]))
    return inter / (shapely.area(p1)[:, None] + shapely.area(p2)[None, :] - inter)


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
    return rows
