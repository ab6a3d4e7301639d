"""Geometric augmentations move images, points, boxes and rotated boxes consistently."""
import numpy as np
import pytest

import emdet  # noqa: F401

# isort: split
from detectron2.data import transforms as T
from detectron2.structures import RotatedBoxes

from emdet.data.transforms import Rot90Transform, build_em_augmentations


def _corners(rboxes: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners of detectron2 rotated boxes, via a unit box turned by detectron2's rule."""
    import torch

    out = []
    for cx, cy, w, h, a in rboxes:
        t = np.deg2rad(a)
        c, s = np.cos(t), np.sin(t)
        # detectron2: CCW as displayed with y down -> x' = c*dx + s*dy, y' = -s*dx + c*dy
        pts = [(cx + c * dx + s * dy, cy - s * dx + c * dy) for dx, dy in
               [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]]
        out.append(pts)
    # sanity: same area as detectron2 computes
    assert np.allclose(RotatedBoxes(torch.tensor(rboxes, dtype=torch.float32)).area().numpy(),
                       rboxes[:, 2] * rboxes[:, 3], rtol=1e-5)
    return np.array(out)


def _same_point_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return all(
        np.allclose(np.sort(pa.round(6).view("f8,f8"), axis=0).view("f8"),
                    np.sort(pb.round(6).view("f8,f8"), axis=0).view("f8"), atol=1e-5)
        for pa, pb in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rot90_image_matches_numpy_and_points_follow_pixels(k):
    h, w = 5, 8
    img = np.arange(h * w).reshape(h, w)
    t = Rot90Transform(k, h, w)
    out = t.apply_image(img)
    assert np.array_equal(out, np.rot90(img, k))
    # the centre of pixel (r, c) must land on the centre of the pixel holding the same value
    rr, cc = np.mgrid[0:h, 0:w]
    pts = np.stack([cc.ravel() + 0.5, rr.ravel() + 0.5], axis=1)
    moved = t.apply_coords(pts.copy())
    vals = out[(moved[:, 1] - 0.5).astype(int), (moved[:, 0] - 0.5).astype(int)]
    assert np.array_equal(vals, img.ravel())
    # inverse brings points back
    assert np.allclose(t.inverse().apply_coords(moved), pts)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_rotated_boxes_keep_their_corners(k):
    h, w = 60, 100
    rng = np.random.default_rng(k)
    boxes = np.column_stack([rng.uniform(10, 50, 6), rng.uniform(10, 50, 6),
                             rng.uniform(2, 20, 6), rng.uniform(2, 20, 6),
                             rng.uniform(-180, 180, 6)])
    t = Rot90Transform(k, h, w)
    moved_corners = t.apply_coords(_corners(boxes).reshape(-1, 2)).reshape(-1, 4, 2)
    assert _same_point_sets(_corners(t.apply_rotated_box(boxes)), moved_corners)


@pytest.mark.parametrize("flip", ["h", "v"])
def test_flips_move_rotated_box_corners(flip):
    h, w = 40, 70
    boxes = np.array([[20.0, 15.0, 16.0, 4.0, 30.0], [50.0, 25.0, 10.0, 3.0, -75.0]])
    t = T.HFlipTransform(w) if flip == "h" else T.VFlipTransform(h)
    moved = t.apply_coords(_corners(boxes).reshape(-1, 2)).reshape(-1, 4, 2)
    assert _same_point_sets(_corners(t.apply_rotated_box(boxes)), moved)


def test_crop_moves_rotated_boxes():
    t = T.CropTransform(5, 7, 20, 20)
    out = t.apply_rotated_box(np.array([[10.0, 10.0, 4.0, 2.0, 30.0]]))
    assert np.allclose(out, [[5.0, 3.0, 4.0, 2.0, 30.0]])


def test_training_augmentations_follow_config():
    from emdet.config import load_config

    cfg = load_config(None, ["INPUT.EM.CROP_SIZE", "128", "INPUT.EM.NOISE_STD", "3.0",
                             "INPUT.EM.GAMMA", "[0.8, 1.2]", "INPUT.EM.BRIGHTNESS", "0.1"])
    names = [type(a).__name__ for a in build_em_augmentations(cfg, True)]
    assert names[0] == "RandomCrop"
    for expected in ["ResizeShortestEdge", "RandomFlip", "RandomRot90", "RandomBrightness",
                     "GammaAugmentation", "GaussianNoiseAugmentation"]:
        assert expected in names
    test_names = [type(a).__name__ for a in build_em_augmentations(cfg, False)]
    assert test_names == ["ResizeShortestEdge"]


def test_noise_and_gamma_keep_uint8_range():
    from emdet.data.transforms import GammaAugmentation, GaussianNoiseAugmentation

    img = np.full((8, 8, 3), 250, np.uint8)
    noisy = GaussianNoiseAugmentation(50.0).get_transform(img).apply_image(img)
    assert noisy.dtype == np.uint8 and noisy.max() == 255 and noisy.min() < 250
    g = GammaAugmentation(2.0, 2.0).get_transform(img).apply_image(np.full((2, 2), 128, np.uint8))
    assert np.all(g == int(255 * (128 / 255) ** 2))
