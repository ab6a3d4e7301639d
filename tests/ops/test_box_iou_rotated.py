"""box_iou_rotated: shapely on random rods, exact hand-made cases, degenerate and empty input."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from emdet.ops import box_iou_rotated
from emdet.ops.box_iou_rotated import (
    batched_candidates,
    cos_sin_deg,
    overlap_candidates,
    pair_iou_rotated,
)

iou_module = importlib.import_module("emdet.ops.box_iou_rotated")
TOL = {torch.float64: 1e-9, torch.float32: 1e-5}


def _iou(b1, b2, dtype=torch.float64, device="cpu") -> np.ndarray:
    t1 = torch.as_tensor(np.asarray(b1, dtype=np.float64), dtype=dtype, device=device)
    t2 = torch.as_tensor(np.asarray(b2, dtype=np.float64), dtype=dtype, device=device)
    return box_iou_rotated(t1, t2).cpu().double().numpy()


@pytest.fixture(scope="module", params=[60.0, 400.0], ids=["dense-60px", "sparse-400px"])
def rod_sets(request, rods, shapely_iou):
    """Two sets of 300 rods, their float32-rounded copies, and shapely IoUs of both."""
    rng = np.random.default_rng(int(request.param))
    b1, b2 = rods(rng, 300, request.param), rods(rng, 300, request.param)
    r1, r2 = (b.astype(np.float32).astype(np.float64) for b in (b1, b2))
    return {
        torch.float64: (b1, b2, shapely_iou(b1, b2)),
        torch.float32: (r1, r2, shapely_iou(r1, r2)),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_shapely_on_random_rods(rod_sets, dtype, device):
    b1, b2, expected = rod_sets[dtype]
    got = _iou(b1, b2, dtype, device)
    assert got.shape == expected.shape
    assert (expected > 0).sum() > 500  # enough overlapping pairs to mean something
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype])
    # Pruned pairs are exact zeros, not tiny numbers.
    assert np.all(got[expected == 0] == 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1e-1, 1e-3, 1e-5, 1e-7])
def test_same_angle_pairs_match_closed_form(dtype, scale):
    """Boxes with equal angles overlap in a rectangle: IoU is a product of 1-D overlaps.

    Small perturbations make nearly coincident, parallel edges: the hardest case for rounding.
    """
    rng = np.random.default_rng(int(-math.log10(scale)))
    n = 2000
    a = np.stack(
        [
            rng.uniform(-50, 50, n),
            rng.uniform(-50, 50, n),
            rng.uniform(1, 40, n),
            rng.uniform(1, 40, n),
            rng.uniform(-360, 360, n),
        ],
        1,
    )
    shift = rng.normal(0, scale, (n, 2)) * a[:, 2:4] * rng.integers(0, 2, (n, 1))
    sizes = a[:, 2:4] * (1 + rng.normal(0, scale, (n, 2)) * rng.integers(0, 2, (n, 1)))
    a = a.astype(np.float32).astype(np.float64) if dtype == torch.float32 else a
    t = np.deg2rad(a[:, 4])
    u, v = np.stack([np.cos(t), -np.sin(t)], 1), np.stack([np.sin(t), np.cos(t)], 1)
    b = np.concatenate([a[:, :2] + shift[:, :1] * u + shift[:, 1:] * v, sizes, a[:, 4:]], 1)
    if dtype == torch.float32:
        b = b.astype(np.float32).astype(np.float64)
    # Closed form in the frame of box a (recompute the offsets from the rounded centres).
    d = b[:, :2] - a[:, :2]
    off = np.stack([(d * u).sum(1), (d * v).sum(1)], 1)
    lo = np.maximum(-a[:, 2:4] / 2, off - b[:, 2:4] / 2)
    hi = np.minimum(a[:, 2:4] / 2, off + b[:, 2:4] / 2)
    inter = np.clip(hi - lo, 0, None).prod(1)
    expected = inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)
    got = pair_iou_rotated(torch.tensor(a, dtype=dtype), torch.tensor(b, dtype=dtype)).double()
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=TOL[dtype])


def test_float32_agrees_with_float64_for_nearly_parallel_boxes():
    rng = np.random.default_rng(7)
    n = 4000
    a = (
        np.stack(
            [
                rng.uniform(-9, 9, n),
                rng.uniform(-9, 9, n),
                rng.uniform(1, 30, n),
                rng.uniform(0.5, 5, n),
                rng.uniform(-180, 180, n),
            ],
            1,
        )
        .astype(np.float32)
        .astype(np.float64)
    )
    b = a + np.concatenate([rng.normal(0, 1e-3, (n, 4)), rng.normal(0, 1e-4, (n, 1))], 1)
    b = b.astype(np.float32).astype(np.float64)
    f64 = pair_iou_rotated(torch.tensor(a), torch.tensor(b))
    f32 = pair_iou_rotated(
        torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    )
    np.testing.assert_allclose(f32.double().numpy(), f64.numpy(), rtol=0, atol=1e-5)


# (box1, box2, exact IoU)
EXACT_CASES = {
    "identical": ([3, 4, 10, 2, 33], [3, 4, 10, 2, 33], 1.0),
    "nested": ([0, 0, 4, 4, 17], [0.5, 0.2, 1, 2, 17], 2 / 16),
    "nested-axis-aligned": ([0, 0, 4, 4, 0], [0, 0, 2, 4, 0], 0.5),
    "disjoint": ([0, 0, 2, 2, 0], [5, 0, 2, 2, 0], 0.0),
    "disjoint-circles-overlap": ([0, 0, 10, 1, 45], [4, 4, 10, 1, 45], 0.0),
    "touching-edge": ([0, 0, 2, 2, 0], [2, 0, 2, 2, 0], 0.0),
    "touching-corner": ([0, 0, 2, 2, 0], [2, 2, 2, 2, 0], 0.0),
    "touching-edge-rotated": ([0, 0, 2, 2, 90], [0, 2, 2, 2, -90], 0.0),
    "square-turned-90": ([1, 1, 3, 3, 0], [1, 1, 3, 3, 90], 1.0),
    "square-turned-270": ([1, 1, 3, 3, 10], [1, 1, 3, 3, 280], 1.0),
    "4x2-turned-90": ([0, 0, 4, 2, 0], [0, 0, 4, 2, 90], 4 / 12),
    "4x2-turned-90-rotated": ([7, -3, 4, 2, 31], [7, -3, 4, 2, 121], 4 / 12),
    "swap-w-h-is-turn": ([0, 0, 4, 2, 25], [0, 0, 2, 4, 115], 1.0),
    "half-shift": ([0, 0, 2, 2, 0], [1, 0, 2, 2, 0], 2 / 6),
    "zero-width": ([0, 0, 0, 2, 0], [0, 0, 4, 2, 0], 0.0),
    "zero-height": ([0, 0, 4, 2, 0], [0, 0, 4, 0, 0], 0.0),
    "both-zero": ([0, 0, 0, 0, 0], [0, 0, 0, 0, 0], 0.0),
    "area-below-1e-14": ([0, 0, 1e-8, 1e-8, 0], [0, 0, 1e-8, 1e-8, 0], 0.0),
    "tiny-identical": ([0, 0, 1e-6, 1e-6, 10], [0, 0, 1e-6, 1e-6, 10], 1.0),
    "tiny-half-shift": ([0, 0, 1e-6, 1e-6, 0], [5e-7, 0, 1e-6, 1e-6, 0], 1 / 3),
    "far-from-origin": ([1e4, 1e4, 3, 1, 10], [1e4, 1e4, 3, 1, 370], 1.0),
    "angle-minus-720": ([5, 5, 8, 1, 25], [5, 5, 8, 1, 25 - 720], 1.0),
    "angle-plus-180": ([5, 5, 8, 1, 25], [5, 5, 8, 1, 205], 1.0),
    "angle-1e4": ([5, 5, 8, 1, 10000], [5, 5, 8, 1, 10000 - 360 * 28], 1.0),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(EXACT_CASES), ids=list(EXACT_CASES))
def test_exact_cases(case, dtype, device):
    b1, b2, expected = EXACT_CASES[case]
    got = _iou([b1], [b2], dtype, device)[0, 0]
    back = _iou([b2], [b1], dtype, device)[0, 0]
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert got == pytest.approx(expected, abs=tol)
    assert back == pytest.approx(expected, abs=tol)
    if expected in (0.0, 1.0) and "far" not in case and "1e4" not in case:
        assert got == expected  # exactly


def test_convention_matches_detectron2_docstring():
    # RotatedBoxes: (5, 3, 4, 2, 90) covers x in [4, 6], y in [1, 5].
    assert _iou([[5, 3, 4, 2, 90]], [[5, 3, 2, 4, 0]])[0, 0] == pytest.approx(1.0)
    # The width axis of angle 30 points to (cos 30, -sin 30): up-right on screen.
    rod = [0, 0, 10, 1, 30]
    assert _iou([rod], [[4, -2.3, 1, 1, 30]])[0, 0] > 0.05
    assert _iou([rod], [[4, 2.3, 1, 1, 30]])[0, 0] == 0.0


def test_angle_periodicity(rods):
    boxes = torch.tensor(rods(np.random.default_rng(3), 200, 100.0))
    turned = boxes.clone()
    turned[:, 4] += torch.tensor([360.0, -360.0, 720.0, 180.0]).repeat(50)
    np.testing.assert_allclose(
        box_iou_rotated(boxes, boxes).numpy(), box_iou_rotated(boxes, turned).numpy(), atol=1e-12
    )


def test_symmetric(rods):
    rng = np.random.default_rng(4)
    b1, b2 = (torch.tensor(rods(rng, 150, 80.0)) for _ in range(2))
    np.testing.assert_allclose(
        box_iou_rotated(b1, b2).numpy(), box_iou_rotated(b2, b1).T.numpy(), atol=1e-12
    )


@pytest.mark.parametrize("n, m", [(0, 3), (2, 0), (0, 0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_inputs(n, m, dtype, device):
    out = box_iou_rotated(
        torch.zeros(n, 5, dtype=dtype, device=device), torch.zeros(m, 5, dtype=dtype, device=device)
    )
    assert out.shape == (n, m)
    assert out.dtype == dtype
    assert out.device.type == device.type


def test_dtypes():
    boxes = torch.tensor([[0, 0, 4, 2, 0], [1, 0, 4, 2, 0]])
    assert box_iou_rotated(boxes, boxes).dtype == torch.float32  # integers
    assert box_iou_rotated(boxes.half(), boxes.half()).dtype == torch.float16
    out = box_iou_rotated(boxes.double(), boxes.double())
    assert out.dtype == torch.float64
    assert out[0, 1].item() == pytest.approx(6 / 10)


def test_not_differentiable_and_no_graph():
    boxes = torch.tensor([[0.0, 0, 4, 2, 0]], requires_grad=True)
    assert not box_iou_rotated(boxes, boxes).requires_grad


@pytest.mark.parametrize("shape", [(3,), (3, 4), (2, 5, 1)])
def test_bad_shapes_raise(shape):
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        box_iou_rotated(torch.zeros(shape), torch.zeros(1, 5))


def test_non_finite_boxes_give_zero():
    boxes = torch.tensor([[0.0, 0, 4, 2, 0], [math.nan, 0, 4, 2, 0], [0, 0, math.inf, 2, 0]])
    out = box_iou_rotated(boxes, boxes)
    assert out[0, 0] == 1
    assert torch.all(out[1:, :] == 0) and torch.all(out[:, 1:] == 0)


def test_candidates_are_exactly_the_circle_overlaps(rods):
    rng = np.random.default_rng(5)
    b1 = torch.tensor(rods(rng, 97, 150.0))
    b2 = torch.tensor(rods(rng, 61, 150.0))
    b1[3, 2] = 0  # zero area: never a candidate
    r1, r2 = b1[:, 2:4].norm(dim=1) / 2, b2[:, 2:4].norm(dim=1) / 2
    dist = torch.cdist(b1[:, :2], b2[:, :2])
    expected = (dist < (r1[:, None] + r2) * (1 - 1e-9)) & (b1[:, 2:3] * b1[:, 3:4] > 0)
    for kwargs in ({}, {"chunk": 7, "rows_per_chunk": 3}, {"rows_per_chunk": 1000}):
        found = torch.zeros(97, 61, dtype=torch.int64)
        for rows, cols in overlap_candidates(b1, b2, **kwargs):
            found[rows, cols] += 1
        assert found.max() <= 1  # no pair twice
        assert torch.all(found.bool() >= expected)  # no overlapping pair missed
        assert torch.all(found.bool() <= (dist <= (r1[:, None] + r2) * 1.001))
    upper = {
        (i, j)
        for rows, cols in overlap_candidates(b1, b1, upper_triangle=True)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
    }
    assert all(j > i for i, j in upper)
    self_dist, reach = torch.cdist(b1[:, :2], b1[:, :2]), r1[:, None] + r1[None, :]
    usable = (b1[:, 2] * b1[:, 3] > 0)[:, None] & (b1[:, 2] * b1[:, 3] > 0)[None, :]
    must = ((self_dist < reach * (1 - 1e-9)) & usable).triu(1).nonzero().tolist()
    assert {tuple(p) for p in must} <= upper
    assert len(upper) <= ((self_dist <= reach * 1.001) & usable).triu(1).sum()


def test_chunking_does_not_change_results(rods, monkeypatch):
    rng = np.random.default_rng(6)
    b1, b2 = (torch.tensor(rods(rng, 120, 60.0)) for _ in range(2))
    expected = box_iou_rotated(b1, b2)
    monkeypatch.setattr(iou_module, "PAIR_CHUNK", 37)
    monkeypatch.setattr(iou_module, "CANDIDATE_CHUNK", 50)
    batches = list(batched_candidates(b1, b2, batch=37))
    assert all(rows.numel() <= 37 for rows, _ in batches)
    torch.testing.assert_close(box_iou_rotated(b1, b2), expected, rtol=0, atol=0)


def test_cos_sin_deg_exact_at_quarter_turns():
    angles = torch.tensor([0.0, 90, 180, 270, -90, -180, 360, 450, 1e4 * 360], dtype=torch.float64)
    cos, sin = cos_sin_deg(angles)
    assert cos.tolist() == [1, 0, -1, 0, 0, -1, 1, 0, 1]
    assert sin.tolist() == [0, 1, 0, -1, -1, 0, 0, 1, 0]
    any_angle = torch.linspace(-1000, 1000, 997, dtype=torch.float64)
    cos, sin = cos_sin_deg(any_angle)
    torch.testing.assert_close(cos, torch.cos(torch.deg2rad(any_angle)))
    torch.testing.assert_close(sin, torch.sin(torch.deg2rad(any_angle)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(rods):
    rng = np.random.default_rng(8)
    b1, b2 = (torch.tensor(rods(rng, 500, 100.0), dtype=torch.float32) for _ in range(2))
    torch.testing.assert_close(
        box_iou_rotated(b1.cuda(), b2.cuda()).cpu(), box_iou_rotated(b1, b2), rtol=0, atol=1e-5
    )


def test_same_convention_as_emdet_data_geometry(rods):
    geometry = pytest.importorskip("emdet.data.geometry")
    import shapely

    rng = np.random.default_rng(9)
    b1, b2 = rods(rng, 40, 50.0), rods(rng, 40, 50.0)
    p1 = shapely.polygons(geometry.rbox_to_polygon(b1))
    p2 = shapely.polygons(geometry.rbox_to_polygon(b2))
    inter = shapely.area(shapely.intersection(p1[:, None], p2[None, :]))
    expected = inter / (shapely.area(p1)[:, None] + shapely.area(p2)[None, :] - inter)
    np.testing.assert_allclose(_iou(b1, b2), expected, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_benchmark_scene_matches_shapely_and_stays_small(rods, shapely_iou):
    """The 1000 x 1000 rods of the benchmark: shapely agreement and peak memory < 2 GB."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    b1, b2 = rods(rng, 1000, 1000.0), rods(rng, 1000, 1000.0)
    r1, r2 = (b.astype(np.float32).astype(np.float64) for b in (b1, b2))
    np.testing.assert_allclose(
        _iou(r1, r2, torch.float32), shapely_iou(r1, r2), rtol=0, atol=TOL[torch.float32]
    )
    code = (
        "import resource, torch, emdet\n"
        "from emdet.ops import box_iou_rotated\n"
        "g = torch.Generator().manual_seed(0)\n"
        "b = torch.rand(2, 1000, 5, generator=g) * torch.tensor([1000, 1000, 60, 20, 360])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "box_iou_rotated(b[0], b[1])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 2 * 1024**2  # kB


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_pairs_are_the_nonzero_entries_of_the_matrix(rod_sets, dtype):
    from emdet.ops import pairwise_iou_rotated_sparse

    b1, b2, _ = rod_sets[dtype]
    t1, t2 = (torch.as_tensor(b, dtype=dtype) for b in (b1, b2))
    dense = box_iou_rotated(t1, t2)
    rows, cols, iou = pairwise_iou_rotated_sparse(t1, t2)
    expected = torch.nonzero(dense > 0, as_tuple=True)  # row-major: sorted by (row, col)
    assert torch.equal(rows, expected[0]) and torch.equal(cols, expected[1])
    assert iou.dtype == dtype and torch.equal(iou, dense[expected])
    assert 0 < len(rows) < dense.numel()
    # a threshold keeps only the pairs above it
    r5, c5, v5 = pairwise_iou_rotated_sparse(t1, t2, min_iou=0.5)
    assert torch.equal(torch.stack([r5, c5]), torch.stack(torch.nonzero(dense > 0.5,
                                                                        as_tuple=True)))
    assert (v5 > 0.5).all()


def test_sparse_pairs_of_empty_and_disjoint_sets():
    from emdet.ops import pairwise_iou_rotated_sparse

    a = torch.tensor([[0.0, 0.0, 10.0, 2.0, 0.0]])
    far = torch.tensor([[500.0, 500.0, 10.0, 2.0, 30.0]])
    for b in (torch.zeros((0, 5)), far):
        rows, cols, iou = pairwise_iou_rotated_sparse(a, b)
        assert rows.numel() == cols.numel() == iou.numel() == 0
        assert rows.dtype == torch.int64 and iou.dtype == torch.float32
    with pytest.raises(ValueError):
        pairwise_iou_rotated_sparse(a, torch.zeros((3, 4)))
