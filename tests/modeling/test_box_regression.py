"""Periodic angle regression: equivalent targets give equal deltas, deltas stay in one period."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import emdet  # noqa: F401

# isort: split
from detectron2.modeling.box_regression import Box2BoxTransformRotated

from emdet.modeling.box_regression import PeriodicBox2BoxTransformRotated, rotated_reg_weights
from emdet.ops import box_iou_rotated

WEIGHTS = (10.0, 10.0, 5.0, 5.0, 5.0)


def _boxes(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(np.column_stack([rng.uniform(20, 80, n), rng.uniform(20, 80, n),
                                         rng.uniform(10, 60, n), rng.uniform(4, 12, n),
                                         rng.uniform(-400, 400, n)]), dtype=torch.float64)


@pytest.mark.parametrize("period", [90.0, 180.0])
def test_round_trip_gives_the_same_rectangle(period):
    t = PeriodicBox2BoxTransformRotated(WEIGHTS, period=period)
    src, tgt = _boxes(200, 0), _boxes(200, 1)
    out = t.apply_deltas(t.get_deltas(src, tgt), src)
    iou = box_iou_rotated(out.float(), tgt.float()).diagonal()
    assert torch.all(iou > 0.999)


@pytest.mark.parametrize("period", [90.0, 180.0])
def test_angle_deltas_stay_within_one_period(period):
    t = PeriodicBox2BoxTransformRotated(WEIGHTS, period=period)
    deltas = t.get_deltas(_boxes(500, 2), _boxes(500, 3))
    da = deltas[:, 4] / WEIGHTS[4]
    assert da.abs().max() <= math.radians(period / 2) + 1e-9
    assert t.max_angle_delta == pytest.approx(WEIGHTS[4] * math.radians(period / 2))


def test_equivalent_targets_give_equal_deltas():
    src = _boxes(100, 4)
    tgt = _boxes(100, 5)
    half_turn = tgt.clone()
    half_turn[:, 4] += 180.0
    swapped = tgt[:, [0, 1, 3, 2, 4]].clone()
    swapped[:, 4] += 90.0
    p90 = PeriodicBox2BoxTransformRotated(WEIGHTS, period=90)
    p180 = PeriodicBox2BoxTransformRotated(WEIGHTS, period=180)
    d = p90.get_deltas(src, tgt)
    torch.testing.assert_close(p90.get_deltas(src, half_turn), d)
    torch.testing.assert_close(p90.get_deltas(src, swapped), d)
    torch.testing.assert_close(p180.get_deltas(src, half_turn), p180.get_deltas(src, tgt))
    # detectron2's own transform tells the half-turned copy apart (360-degree period)
    d2 = Box2BoxTransformRotated(WEIGHTS)
    assert not torch.allclose(d2.get_deltas(src, half_turn), d2.get_deltas(src, tgt))


def test_near_vertical_rods_from_a_horizontal_proposal_are_close():
    """89 and -89 degrees are nearly the same rod; with period 90 their deltas are too."""
    src = torch.tensor([[50.0, 50.0, 10.0, 40.0, 0.0]] * 2, dtype=torch.float64)  # tall box
    tgt = torch.tensor([[50.0, 50.0, 40.0, 10.0, 89.0], [50.0, 50.0, 40.0, 10.0, -89.0]],
                       dtype=torch.float64)
    d = PeriodicBox2BoxTransformRotated(WEIGHTS, period=90).get_deltas(src, tgt)
    assert (d[0] - d[1]).abs().max() < WEIGHTS[4] * math.radians(2.0) + 1e-9
    assert d[:, 2:4].abs().max() < 1e-9  # w, h compared with the proposal sides they lie along
    jump = Box2BoxTransformRotated(WEIGHTS).get_deltas(src, tgt)
    assert (jump[0, 4] - jump[1, 4]).abs() > WEIGHTS[4] * math.radians(170)


def test_weights_and_period_are_checked():
    assert rotated_reg_weights((10, 10, 5, 5), "K") == (10.0, 10.0, 5.0, 5.0, 1.0)
    with pytest.raises(ValueError, match="K must have 5 values"):
        rotated_reg_weights((1, 2, 3), "K")
    with pytest.raises(ValueError, match="ANGLE_PERIOD"):
        PeriodicBox2BoxTransformRotated(WEIGHTS, period=45)
