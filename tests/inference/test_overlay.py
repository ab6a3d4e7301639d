"""Overlays (predict and reports): outlines lie on the predicted box or mask edges."""

from __future__ import annotations

import numpy as np
import pytest

from emdet.data.geometry import rbox_to_polygon
from emdet.data.rle import MaskCrop
from emdet.inference.overlay import class_colour, draw_overlay
from emdet.inference.tiling import Detections


def _grey(h: int = 96, w: int = 128) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 50 + 100).astype(np.uint8)


def _drawn(out: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Pixels the drawing changed markedly (anti-aliased lines blend into their neighbours)."""
    return np.abs(out.astype(int) - grey.astype(int)).max(axis=2) > 30


def _colour_of(out: np.ndarray, grey: np.ndarray, drawn: np.ndarray) -> int:
    """The class whose colour is nearest to the most strongly drawn pixels."""
    change = np.abs(out.astype(int) - grey.astype(int)).max(axis=2)
    drawn = drawn & (out.max(axis=2) > 60)  # not the black halo under the outline
    strong = drawn & (change >= np.percentile(change[drawn], 75))
    mean = out[strong].mean(axis=0)
    return int(np.argmin([np.abs(mean - class_colour(k)).max() for k in range(10)]))


def _edge_points(box, n: int = 9) -> np.ndarray:
    c = rbox_to_polygon(np.asarray(box, float))
    return np.concatenate([c[i] + np.linspace(0.15, 0.85, n)[:, None] * (c[(i + 1) % 4] - c[i])
                           for i in range(4)])


@pytest.mark.parametrize("box", [[64, 48, 60, 14, 30], [40, 30, 30, 8, -75], [90, 60, 20, 20, 0]])
def test_rotated_outline_pixels_get_the_class_colour(box):
    img = _grey()
    det = Detections(boxes=[box], scores=[0.9], classes=[1])
    out = draw_overlay(img, det, ["a", "b"], legend=False)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    grey = np.repeat(img[:, :, None], 3, axis=2)
    drawn = _drawn(out, grey)
    points = _edge_points(box)
    near = [drawn[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].any() for x, y in points]
    assert all(near)
    assert _colour_of(out, grey, drawn) == 1
    cx, cy = int(box[0]), int(box[1])
    assert np.array_equal(out[cy, cx], grey[cy, cx])  # not filled
    # only the outline: 2 px of colour over a 4 px halo, anti-aliased, along the 4 sides
    assert np.any(out != grey, axis=2).sum() < 16 * (box[2] + box[3])
    assert np.array_equal(img, _grey())  # input untouched


def test_mask_outlines_axis_aligned_boxes_legend_and_downscaling():
    img = _grey(200, 300)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:25] = True
    det = Detections(boxes=[[100, 50, 130, 70], [10, 10, 60, 40]], scores=[0.9, 0.8],
                     classes=[0, 1], masks=[MaskCrop(y0=50, x0=100, mask=mask),
                                            MaskCrop(y0=10, x0=10, mask=np.zeros((0, 0), bool))])
    out = draw_overlay(img, det, ["vesicle", "hole"], legend=False)
    grey = np.repeat(img[:, :, None], 3, axis=2)
    drawn = _drawn(out, grey)
    ys, xs = np.nonzero(drawn[:, 80:])
    xs = xs + 80
    # the mask (x 105..125, y 55..65) is outlined, not its box (x 100..130, y 50..70)
    assert xs.min() >= 102 and xs.max() <= 127 and ys.min() >= 52 and ys.max() <= 67
    assert _colour_of(out[:, 80:], grey[:, 80:], drawn[:, 80:]) == 0
    # the detection with an empty mask is drawn as its box (edges x = 10, 60 and y = 10, 40)
    assert drawn[25, 9:11].any() and drawn[9:11, 35].any() and drawn[39:41, 35].any()
    assert _colour_of(out[:, :80], grey[:, :80], drawn[:, :80]) == 1
    with_legend = draw_overlay(img, det, ["vesicle", "hole"])
    assert np.any(with_legend[:20, :80] != out[:20, :80])  # names and counts
    small = draw_overlay(img, det, ["vesicle", "hole"], max_size=150)
    assert small.shape == (100, 150, 3)
    with pytest.raises(ValueError, match="uint8"):
        draw_overlay(img.astype(np.uint16), det, ["vesicle", "hole"])


def test_outlines_show_on_white_and_black_particles_and_the_scale_bar_is_true():
    from emdet.inference.overlay import scale_bar_length

    img = np.full((400, 600), 128, np.uint8)
    img[50:150, 50:150] = 255  # a white particle
    img[50:150, 300:400] = 0  # a black one
    det = Detections(boxes=[[50, 50, 150, 150], [300, 50, 400, 150]], scores=[0.9, 0.9],
                     classes=[0, 0])
    out = draw_overlay(img, det, ["p"], legend=False, pixel_size=2.0, unit="nm")
    colour = np.array(class_colour(0))
    for x0 in (50, 300):  # along each box's left edge the class colour, on white and on black
        column = out[60:140, x0 - 3:x0 + 3].reshape(-1, 3).astype(int)
        assert (np.abs(column - colour).max(axis=1) < 40).sum() >= 80
    inside_white = out[60:140, 50:56].reshape(-1, 3).astype(int)  # the halo on the white side
    assert (inside_white.max(axis=1) < 90).sum() >= 80
    # 600 px of 2 nm: a fifth is 240 nm, the round length below it 200 nm = 100 px
    assert scale_bar_length(2.0, 600) == 200 and scale_bar_length(0.05, 1000) == 10
    assert scale_bar_length(3.0, 1000) == 500
    white = (out[300:, 400:] == 255).all(axis=2)
    rows = np.flatnonzero(white.sum(axis=1) >= 100)
    assert rows.size >= 3 and white[rows[0]].sum() == 100  # the bar is exactly 200 nm long
    plain = draw_overlay(img, det, ["p"], legend=False)  # uncalibrated: no bar
    assert not (plain[300:, 400:] == 255).all(axis=2).any()
