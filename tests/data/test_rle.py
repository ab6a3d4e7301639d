"""Mask crops and COCO RLE: the same strings as pycocotools, without full-image arrays."""

import numpy as np
import pytest
from pycocotools import mask as mask_util

from emdet.data.rle import (
    MaskCrop,
    crop_to_rle,
    rle_area,
    rle_to_crop,
    segmentation_to_crop,
)


def _full(crop: MaskCrop, height: int, width: int) -> np.ndarray:
    out = np.zeros((height, width), dtype=bool)
    h, w = crop.mask.shape
    out[crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w] = crop.mask
    return out


def _check(mask: np.ndarray) -> None:
    h, w = mask.shape
    reference = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle = crop_to_rle(MaskCrop.from_mask(mask), h, w)
    assert rle["counts"] == reference["counts"].decode()
    assert rle["size"] == [h, w]
    assert rle_area(rle) == mask.sum() == rle_area(reference)
    back = rle_to_crop(reference)
    assert (_full(back, h, w) == mask).all()
    if mask.any():  # the crop is tight
        assert back.mask[[0, -1]].any(axis=1).all() and back.mask[:, [0, -1]].any(axis=0).all()


def test_random_masks_match_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        _check(rng.random((h, w)) < rng.random())


def _edge_cases():
    yield "empty", np.zeros((7, 5), bool)
    yield "full", np.ones((7, 5), bool)
    last = np.zeros((6, 4), bool)
    last[-1, -1] = True
    yield "last pixel", last
    first = np.zeros((6, 4), bool)
    first[0, 0] = True
    yield "first pixel", first
    cols = np.zeros((5, 6), bool)
    cols[:, 2:4] = True  # a run continuing from one column into the next
    yield "full columns", cols


@pytest.mark.parametrize("mask", [m for _, m in _edge_cases()], ids=[n for n, _ in _edge_cases()])
def test_edge_cases_match_pycocotools(mask):
    _check(mask)


def test_crop_offset_in_a_large_image():
    crop = MaskCrop(3000, 1500, np.ones((40, 60), bool))
    rle = crop_to_rle(crop, 4096, 4096)
    full = mask_util.decode(rle).astype(bool)
    assert full.sum() == 2400 and full[3000:3040, 1500:1560].all()
    back = rle_to_crop(rle)
    assert (back.y0, back.x0, back.mask.shape) == (3000, 1500, (40, 60))


def test_uncompressed_rle_and_polygons():
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:25] = True
    counts = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    uncompressed = {"size": [20, 30], "counts": [4 + 20 * 10] + [5, 15] * 14 + [5, 20 * 5 + 11]}
    assert (_full(rle_to_crop(uncompressed), 20, 30) == mask).all()
    assert (_full(rle_to_crop(counts), 20, 30) == mask).all()
    polygon = [[10.0, 4.0, 25.0, 4.0, 25.0, 9.0, 10.0, 9.0]]
    reference = mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygon, 20, 30)))
    crop = segmentation_to_crop(polygon, 20, 30)
    assert (_full(crop, 20, 30) == reference.astype(bool)).all()


def test_crop_outside_image_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        crop_to_rle(MaskCrop(5, 5, np.ones((10, 10), bool)), 12, 12)


def test_union_and_window():
    a = MaskCrop(2, 3, np.ones((2, 2), bool))
    b = MaskCrop(3, 6, np.ones((3, 1), bool))
    u = MaskCrop.union([a, b])
    assert (u.y0, u.x0, u.mask.shape, u.area) == (2, 3, (4, 4), 7)
    w = u.window(0, 4, 5, 8)
    assert w.shape == (4, 3) and w.sum() == 1 and w[3, 1]
    assert MaskCrop.union([]).area == 0
