"""Hand-made COCO files for the statistics tests: known shapes, known sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

import emdet  # noqa: F401  (completes detectron2)
from emdet.data.rle import MaskCrop, crop_to_rle


def disk(height: int, width: int, cy: float, cx: float, r: float) -> np.ndarray:
    """Pixels whose centre lies within ``r`` of ``(cx, cy)`` (continuous coordinates)."""
    yy, xx = np.mgrid[:height, :width]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r**2


def rotated_rect(height: int, width: int, rbox) -> np.ndarray:
    """Pixels whose centre lies inside a rotated box ``(cx, cy, w, h, angle_deg)``."""
    cx, cy, w, h, a = rbox
    t = np.deg2rad(a)
    yy, xx = np.mgrid[:height, :width]
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    along = dx * np.cos(t) - dy * np.sin(t)  # width axis (cos a, -sin a)
    across = dx * np.sin(t) + dy * np.cos(t)
    return (np.abs(along) <= w / 2) & (np.abs(across) <= h / 2)


def rle(mask: np.ndarray) -> dict:
    return crop_to_rle(MaskCrop.from_mask(mask), *mask.shape)


def make_predictions() -> dict:
    """Two calibrated images (0.5 nm) and a 3-frame series (2 nm):

    * image 1 (200 x 300): disks of radius 20 and 10 px ("particle"), a 60 x 20 px rectangle
      ("rod", with rbox), a disk cut by the left border; scores 0.9, 0.8, 0.7, 0.3.
    * series frames 0..2 (100 x 100): 1, 2 and 3 disks of radius 8 px ("particle").
    """
    images, anns = [], []

    def add(image_id, mask, cat, score, **extra):
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                     "segmentation": rle(mask), "area": int(mask.sum()), "score": score,
                     "bbox": [0, 0, 1, 1], "iscrowd": 0, **extra})

    images.append({"id": 1, "file_name": "a.tif", "width": 300, "height": 200,
                   "pixel_size": 0.5, "unit": "nm", "frame": 0, "n_frames": 1})
    add(1, disk(200, 300, 60, 60, 20), 1, 0.9)
    add(1, disk(200, 300, 150, 200, 10), 1, 0.8)
    add(1, rotated_rect(200, 300, (150, 60, 60, 20, 0)), 2, 0.7, rbox=[150, 60, 60, 20, 0])
    add(1, disk(200, 300, 150, 5, 12), 1, 0.3)
    for frame in range(3):
        image_id = 2 + frame
        images.append({"id": image_id, "file_name": "series.tif", "width": 100, "height": 100,
                       "pixel_size": 2.0, "unit": "nm", "frame": frame, "n_frames": 3})
        for k in range(frame + 1):
            add(image_id, disk(100, 100, 25 + 25 * k, 50, 8), 1, 0.95)
    return {
        "info": {"description": "hand-made", "settings": {"tile": 256}},
        "images": images,
        "categories": [{"id": 1, "name": "particle"}, {"id": 2, "name": "rod"}],
        "annotations": anns,
    }


@pytest.fixture
def predictions():
    return make_predictions()


@pytest.fixture
def predictions_file(tmp_path):
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(make_predictions()))
    return path


@pytest.fixture(scope="session")
def shapes():
    from types import SimpleNamespace

    return SimpleNamespace(disk=disk, rotated_rect=rotated_rect, rle=rle,
                           make_predictions=make_predictions)
