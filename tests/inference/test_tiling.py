"""Merging tiles: objects on seams come out once, whole, and neighbours stay apart."""

import numpy as np
import pytest

from emdet.data.rle import MaskCrop
from emdet.inference.predictor import EMPredictor
from emdet.inference.tiling import Detections, merge_tiles


def _disk(height, width, cy, cx, r):
    yy, xx = np.mgrid[:height, :width]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r**2


def _tile_dets(full_masks, classes, rect, scores=None):
    """What a perfect detector sees in one tile: each object's part inside the tile."""
    y0, x0, y1, x1 = rect
    masks, boxes, cls, sc = [], [], [], []
    for k, m in enumerate(full_masks):
        part = m[y0:y1, x0:x1]
        if not part.any():
            continue
        crop = MaskCrop.from_mask(part, y0=y0, x0=x0)
        masks.append(crop)
        ex0, ey0, ex1, ey1 = crop.extent
        boxes.append([ex0, ey0, ex1, ey1])
        cls.append(classes[k])
        sc.append(0.9 if scores is None else scores[k])
    return Detections(np.array(boxes, float).reshape(-1, 4), sc, cls, masks)


def test_object_straddling_a_seam_comes_out_once_with_the_joined_mask():
    disk = _disk(100, 200, 50, 100, 30)  # centred on the seam between the tiles
    tiles = [(0, 0, 100, 110), (0, 90, 100, 200)]  # 20 px overlap, the disk is 60 px wide
    merged = merge_tiles([(t, _tile_dets([disk], [0], t)) for t in tiles], (100, 200))
    assert len(merged) == 1
    full = np.zeros((100, 200), bool)
    crop = merged.masks[0]
    full[crop.y0 : crop.y0 + crop.mask.shape[0], crop.x0 : crop.x0 + crop.mask.shape[1]] = crop.mask
    assert (full == disk).all()
    assert merged.boxes[0].tolist() == [70, 20, 130, 80]
    assert not merged.border[0]


def test_touching_tiles_without_overlap_are_joined_too():
    disk = _disk(100, 200, 50, 100, 30)
    tiles = [(0, 0, 100, 100), (0, 100, 100, 200)]
    merged = merge_tiles([(t, _tile_dets([disk], [0], t)) for t in tiles], (100, 200))
    assert len(merged) == 1 and merged.masks[0].area == disk.sum()


def test_whole_duplicates_in_the_overlap_are_merged_keeping_the_best():
    disk = _disk(100, 200, 50, 100, 8)  # inside the overlap: both tiles see all of it
    tiles = [(0, 0, 100, 120), (0, 80, 100, 200)]
    parts = [(t, _tile_dets([disk], [1], t, scores=[s])) for t, s in zip(tiles, (0.6, 0.8),
                                                                       strict=True)]
    merged = merge_tiles(parts, (100, 200))
    assert len(merged) == 1
    assert merged.scores[0] == pytest.approx(0.8) and merged.classes[0] == 1
    assert merged.masks[0].area == disk.sum()


def test_neighbours_that_touch_across_a_seam_stay_apart():
    a = _disk(100, 200, 50, 88, 12)  # a and b touch at x = 100, the middle of the overlap
    b = np.zeros_like(a)
    b[38:62, 100:124] = True
    a &= ~b
    tiles = [(0, 0, 100, 110), (0, 90, 100, 200)]
    merged = merge_tiles([(t, _tile_dets([a, b], [0, 0], t)) for t in tiles], (100, 200))
    assert sorted(m.area for m in merged.masks) == sorted([a.sum(), b.sum()])


def test_different_classes_are_never_merged():
    disk = _disk(100, 200, 50, 100, 8)
    tiles = [(0, 0, 100, 120), (0, 80, 100, 200)]
    parts = [(tiles[0], _tile_dets([disk], [0], tiles[0])),
             (tiles[1], _tile_dets([disk], [1], tiles[1]))]
    assert len(merge_tiles(parts, (100, 200))) == 2


@pytest.mark.parametrize("tile,overlap", [(128, 32), (128, 0), (100, 1), (96, 48)])
@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_prediction_equals_the_whole_image(h, tile, overlap, seed):
    """With a perfect detector, tiling + merging must give exactly the objects of the whole
    image, whatever the tile size and overlap (objects up to 80 px, larger than the overlap)."""
    image = h.blob_scene(300, 420, 60, seed)
    cfg = h.oracle_cfg("INPUT.MIN_SIZE_TEST", str(tile))  # tiles at their own scale
    predictor = EMPredictor(cfg, model=h.OracleModel(), tile=tile, overlap=overlap)
    det = predictor(image)
    assert h.mask_set(det) == h.components(image)
    assert len(predictor.tiles(300, 420)) > 4


def test_box_only_model_joins_boxes(h):
    image = h.blob_scene(256, 256, 25, 3)
    cfg_whole = h.oracle_cfg("INPUT.MIN_SIZE_TEST", "256")
    cfg_tiles = h.oracle_cfg("INPUT.MIN_SIZE_TEST", "96")
    whole = EMPredictor(cfg_whole, model=h.OracleModel(masks=False), tile=0)(image)
    tiled = EMPredictor(cfg_tiles, model=h.OracleModel(masks=False), tile=96, overlap=32)(image)
    assert tiled.masks is None and len(tiled) == len(whole)
    order_w = np.lexsort(whole.boxes.T[::-1])
    order_t = np.lexsort(tiled.boxes.T[::-1])
    np.testing.assert_allclose(tiled.boxes[order_t], whole.boxes[order_w])


def test_rotated_model_gives_one_rbox_per_rod(h):
    """Rods cut by seams come back as one rotated box each, like the whole image's."""
    image = h.blob_scene(300, 300, 20, 5, rods=True)
    cfg_whole = h.oracle_cfg("INPUT.MIN_SIZE_TEST", "300")
    whole = EMPredictor(cfg_whole, model=h.OracleModel(rotated=True, masks=False), tile=0)(image)
    tiled = EMPredictor(h.oracle_cfg(), model=h.OracleModel(rotated=True, masks=False), tile=128,
                        overlap=48)(image)
    assert tiled.rotated and len(tiled) == len(whole)
    import torch
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    iou = pairwise_iou_rotated(RotatedBoxes(torch.tensor(tiled.boxes, dtype=torch.float32)),
                               RotatedBoxes(torch.tensor(whole.boxes, dtype=torch.float32)))
    assert (iou.max(dim=1).values > 0.95).all()


def test_rotated_duplicates_merge_with_batched_nms_rotated():
    rbox = [100.0, 50.0, 40.0, 8.0, 30.0]
    tiles = [(0, 0, 100, 140), (0, 60, 100, 200)]  # the rod lies inside the overlap
    parts = [
        (tiles[0], Detections(np.array([rbox]), [0.7], [0])),
        (tiles[1], Detections(np.array([[100.5, 50.0, 40.0, 8.0, 31.0]]), [0.9], [0])),
    ]
    merged = merge_tiles(parts, (100, 200))
    assert len(merged) == 1 and merged.rotated
    assert merged.scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(merged.boxes[0], [100.5, 50.0, 40.0, 8.0, 31.0])


def test_border_flags_and_empty_input():
    m = np.zeros((50, 50), bool)
    m[0:5, 10:20] = True
    det = _tile_dets([m, _disk(50, 50, 25, 25, 5)], [0, 0], (0, 0, 50, 50))
    merged = merge_tiles([((0, 0, 50, 50), det)], (50, 50))
    assert sorted(merged.border.tolist()) == [False, True]
    assert len(merge_tiles([], (10, 10))) == 0
    empty = merge_tiles([((0, 0, 10, 10), Detections.empty(masks=True))] * 2, (10, 10))
    assert len(empty) == 0
