"""Shared helpers for the inference tests: a perfect "oracle" detector and blob scenes.

The oracle model detects the connected components of the bright pixels of whatever it is given,
like a flawless Mask R-CNN: an object cut by a tile edge comes out cut, so tiled prediction must
merge the pieces back into the connected components of the whole image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import emdet  # noqa: F401  (completes detectron2)
from emdet.config import load_config

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"

#: Intensities of the two blob classes and the background in scenes (min-max stretched to 0-255:
#: background 0, dim 134, bright 255).
BACKGROUND, DIM, BRIGHT = 100, 1000, 2000


class OracleModel(torch.nn.Module):
    """Connected components of pixels > 60 (class 1 where > 190), in detectron2's output form.

    Parameters
    ----------
    rotated : bool
        Predict ``RotatedBoxes`` (smallest rotated box around each component) instead of boxes.
    masks : bool
        Predict ``pred_masks``.
    fail_on_call : int, optional
        Raise RuntimeError on this forward call (1-based), to simulate a crash.
    """

    def __init__(self, *, rotated: bool = False, masks: bool = True, fail_on_call=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.rotated, self.masks, self.fail_on_call = rotated, masks, fail_on_call
        self.calls = 0
        self.tiles = 0

    def forward(self, inputs):
        from detectron2.structures import Boxes, Instances, RotatedBoxes

        from emdet.data.geometry import polygon_to_rbox

        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("simulated model failure")
        outputs = []
        for d in inputs:
            self.tiles += 1
            height, width = d["height"], d["width"]
            grey = d["image"][0].numpy()
            grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_NEAREST)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(
                (grey > 60).astype(np.uint8), connectivity=8
            )
            boxes, classes, scores, rboxes = [], [], [], []
            for k in range(1, n):
                x, y, w, h, area = stats[k]
                boxes.append([x, y, x + w, y + h])
                classes.append(int(grey[lab == k].mean() > 190))
                scores.append(0.5 + 0.49 * min(1.0, area / 2000))
                if self.rotated:
                    ys, xs = np.nonzero(lab == k)
                    corners = np.concatenate(
                        [np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]
                    )
                    rboxes.append(polygon_to_rbox(corners))
            inst = Instances((height, width))
            if self.rotated:
                inst.pred_boxes = RotatedBoxes(torch.tensor(np.array(rboxes).reshape(-1, 5),
                                                            dtype=torch.float32))
            else:
                inst.pred_boxes = Boxes(torch.tensor(np.array(boxes).reshape(-1, 4),
                                                     dtype=torch.float32))
            inst.scores = torch.tensor(scores, dtype=torch.float32)
            inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
            if self.masks:
                inst.pred_masks = torch.from_numpy(
                    lab[None] == np.arange(1, n)[:, None, None]
                ).reshape(-1, height, width)
            outputs.append({"instances": inst})
        return outputs


def oracle_cfg(*opts: str):
    """Quick config set up for the oracle: 2 classes, min-max intensity stretch, tiles of 128
    run at their own scale."""
    return load_config(
        QUICK,
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.ROI_HEADS.NUM_CLASSES", "2",
            "INPUT.EM.CLIP_PERCENTILES", "[]",
            "INPUT.MIN_SIZE_TEST", "128",
            "INPUT.MAX_SIZE_TEST", "4096",
            *opts,
        ],
    )


def blob_scene(height: int, width: int, n: int, seed: int, *, rmax: float = 40,
               rods: bool = False) -> np.ndarray:
    """uint16 image: ``n`` convex blobs (ellipses, or thin rods) that never touch, half DIM and
    half BRIGHT, on a BACKGROUND of 100; one BRIGHT pixel in a corner pins the stretch."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), BACKGROUND, dtype=np.uint16)
    occupied = np.zeros((height, width), dtype=np.uint8)
    placed = 0
    for _ in range(n * 30):
        one = np.zeros_like(occupied)
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        angle = rng.uniform(0, 180)
        if rods:
            length = rng.uniform(20, 90)
            axes = (int(length / 2), int(max(2, length / rng.uniform(4, 8)) / 2))
        else:
            r = rng.uniform(4, rmax)
            axes = (int(r), int(max(2, r * rng.uniform(0.4, 1))))
        cv2.ellipse(one, (cx, cy), axes, angle, 0, 360, 1, -1)
        if (cv2.dilate(one, np.ones((5, 5), np.uint8)) & occupied).any():
            continue
        occupied |= one
        image[one.astype(bool)] = BRIGHT if placed % 2 else DIM
        placed += 1
        if placed == n:
            break
    image[0, 0] = BRIGHT
    return image


def components(image: np.ndarray) -> set[tuple]:
    """The oracle's answer on a whole image: ``(y0, x0, shape, mask bytes, class)`` per object."""
    from emdet.inference.predictor import instances_to_detections, prepare_image

    cfg = oracle_cfg()
    prepared = prepare_image(image, cfg)
    inst = OracleModel()([{"image": torch.as_tensor(np.repeat(prepared[None], 3, 0)),
                           "height": image.shape[0], "width": image.shape[1]}])[0]["instances"]
    return mask_set(instances_to_detections(inst))


def mask_set(det) -> set[tuple]:
    return {
        (m.y0, m.x0, m.mask.shape, m.mask.tobytes(), int(c))
        for m, c in zip(det.masks, det.classes, strict=True)
    }


@pytest.fixture
def oracle():
    return OracleModel()


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A checkpoint of the quick Mask R-CNN with random (seeded) weights."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = load_config(QUICK, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("weights") / "random_quick.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def h():
    """The helpers of this module (test files cannot import a conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        OracleModel=OracleModel,
        oracle_cfg=oracle_cfg,
        blob_scene=blob_scene,
        components=components,
        mask_set=mask_set,
        QUICK=QUICK,
        REPO=REPO,
        BRIGHT=BRIGHT,
        DIM=DIM,
        BACKGROUND=BACKGROUND,
    )
