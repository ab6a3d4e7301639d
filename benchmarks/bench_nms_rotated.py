"""nms_rotated against a shapely-based greedy NMS on the same boxes.

Case: detector-like output, 2000 rotated boxes that are jittered copies (centre +-2 px, size
+-20 %, angle +-10 degrees) of 200 rods in a 1000 px field, random scores, IoU threshold 0.5.

The baseline is a fair shapely implementation, not a naive one: an STRtree query finds the
pairs whose polygons intersect, ``shapely.intersection`` gives their IoU in one vectorised call,
and the greedy pass runs over numpy arrays. Both must keep the same boxes (checked).
"""

from __future__ import annotations

import numpy as np
from _common import best_time, devices, peak_memory_mb, polygons, rods, row

NAME = "nms_rotated"
CASES = {"detections": dict(n=2000, objects=200, field=1000.0, threshold=0.5)}


def _data(case: str) -> tuple[np.ndarray, np.ndarray, float]:
    spec = CASES[case]
    rng = np.random.default_rng(0)
    base = rods(rng, spec["objects"], spec["field"])
    boxes = base[rng.integers(0, spec["objects"], spec["n"])].copy()
    boxes[:, :2] += rng.normal(0, 2, (spec["n"], 2))
    boxes[:, 2:4] *= rng.uniform(0.8, 1.2, (spec["n"], 2))
    boxes[:, 4] += rng.normal(0, 10, spec["n"])
    return boxes, rng.random(spec["n"]), spec["threshold"]


def make_case(case: str, quick: bool, device: str):
    """The emdet call of one case, inputs ready on ``device`` (float32)."""
    import torch

    import emdet  # noqa: F401
    from emdet.ops import nms_rotated

    boxes, scores, threshold = _data(case)
    b = torch.tensor(boxes, dtype=torch.float32, device=device)
    s = torch.tensor(scores, dtype=torch.float32, device=device)
    return lambda: nms_rotated(b, s, threshold)


def shapely_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy rotated NMS with shapely: STRtree candidates, vectorised IoU, greedy pass."""
    import shapely

    order = np.argsort(-scores, kind="stable")
    polys = polygons(boxes[order])
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
    upper = right > left
    left, right = left[upper], right[upper]
    inter = shapely.area(shapely.intersection(polys[left], polys[right]))
    areas = shapely.area(polys)
    iou = inter / (areas[left] + areas[right] - inter)
    hit = iou > threshold
    left, right = left[hit], right[hit]
    by_source = np.argsort(left, kind="stable")
    left, right = left[by_source], right[by_source]
    removed = np.zeros(len(boxes), dtype=bool)
    heads, starts = np.unique(left, return_index=True)
    stops = np.append(starts[1:], len(left))
    for head, start, stop in zip(heads, starts, stops, strict=True):
        if not removed[head]:
            removed[right[start:stop]] = True
    return order[~removed]


def run(quick: bool = False) -> list[dict]:
    """Milliseconds per call of emdet and the shapely baseline, peak memory of emdet."""
    rows = []
    for case in CASES:
        boxes, scores, threshold = _data(case)
        expected = shapely_nms(boxes, scores, threshold)

        def baseline(boxes=boxes, scores=scores, threshold=threshold):
            return shapely_nms(boxes, scores, threshold)

        t_base = best_time(baseline, repeat=2 if quick else 5)
        for device in devices():
            fn = make_case(case, quick, device)
            t = best_time(fn, repeat=3 if quick else 10)
            same = fn().cpu().numpy().tolist() == expected.tolist()
            mem = peak_memory_mb(__file__, case, quick=quick, device=device)
            rows.append(
                row(
                    NAME,
                    f"{case}: {len(boxes)} boxes, thr {threshold}, {len(expected)} kept",
                    t * 1e3,
                    "ms",
                    baseline=t_base * 1e3,
                    higher_is_better=False,
                    peak_mem_mb=mem,
                    device=device,
                    note="same boxes kept as shapely" if same else "KEPT BOXES DIFFER FROM SHAPELY",
                )
            )
    return rows
