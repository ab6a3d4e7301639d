"""The mapper's rotated branch: annotation tool -> data set -> augmentation -> RotatedBoxes.

The angle convention is pinned end to end: a box drawn in "LabelImg with KITTI BEV rotation"
(radians, clockwise on screen) is converted, registered, turned/flipped/cropped by the real
mapper, and its ``gt_boxes`` corners must equal the drawn corners moved by the same transform.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import emdet  # noqa: F401

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, RotatedBoxes

from emdet.config import load_config
from emdet.data import register_dataset, unregister_dataset
from emdet.data.converters import convert_annotations
from emdet.data.mapper import EMDatasetMapper, check_rotated_annotations, clip_rotated_to_image
from emdet.data.transforms import Rot90Transform

H, W = 80, 100
# LabelImg-KITTI lines: class cx cy w h rotation (radians, clockwise on screen)
KITTI = [(40.0, 30.0, 30.0, 8.0, 0.4), (62.0, 52.0, 24.0, 6.0, -1.2), (25.0, 60.0, 10.0, 20.0, 2.9)]


def kitti_corners(cx, cy, w, h, a):
    """Corners as LabelImg-KITTI draws them: +a turns the box clockwise on screen (y down)."""
    c, s = math.cos(a), math.sin(a)
    return np.array(
        [(cx + c * dx - s * dy, cy + s * dx + c * dy)
         for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]
    )


def d2_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 4, 2) corners with detectron2's get_rotated_vertices formula (degrees, CCW)."""
    out = []
    for cx, cy, w, h, a in np.asarray(boxes, dtype=np.float64):
        t = math.radians(a)
        c, s = math.cos(t), math.sin(t)
        out.append([(cx + c * dx + s * dy, cy - s * dx + c * dy)
                    for dx, dy in ((w / 2, h / 2), (w / 2, -h / 2), (-w / 2, -h / 2),
                                   (-w / 2, h / 2))])
    return np.array(out)


def same_corners(a: np.ndarray, b: np.ndarray, atol: float = 1e-3) -> bool:
    """Same quadrilateral, whatever the starting vertex and direction."""
    for start in range(4):
        for order in (1, -1):
            if np.allclose(a, np.roll(b[::order], start, axis=0), atol=atol):
                return True
    return False


class Fixed(T.Augmentation):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def get_transform(self, image):
        return self.make(*image.shape[:2])


class Recording(T.AugmentationList):
    """The real augmentation list, remembering the transforms of the last call."""

    def __call__(self, aug_input):
        self.last = super().__call__(aug_input)
        return self.last


@pytest.fixture(scope="module")
def kitti_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("rods")
    folder = root / "kitti_rods"
    (folder / "images").mkdir(parents=True)
    labels = root / "labels"
    labels.mkdir()
    Image.new("L", (W, H), 100).save(folder / "images" / "rods_1.png")
    (labels / "classes.txt").write_text("rod\n")
    (labels / "rods_1.txt").write_text("".join(f"0 {cx} {cy} {w} {h} {a}\n"
                                               for cx, cy, w, h, a in KITTI))
    convert_annotations(labels, folder / "annotations" / "train.json", "labelimg-kitti",
                        images_dir=folder / "images", progress=False)
    names = register_dataset("kitti_rods", folder, evaluator_type="rotated")
    yield names[0]
    unregister_dataset("kitti_rods")


def _cfg(*opts):
    return load_config(None, ["INPUT.EM.ROTATED", "True", "INPUT.MIN_SIZE_TRAIN", f"({H},)",
                              "INPUT.MAX_SIZE_TRAIN", "1000", *opts])


def _mapped(dataset_name, augs, cfg=None):
    cfg = cfg or _cfg()
    mapper = EMDatasetMapper(cfg, is_train=True)
    mapper.augmentations = Recording(augs)
    out = mapper(DatasetCatalog.get(dataset_name)[0])
    return out, mapper.augmentations.last


TRANSFORMS = {
    "identity": lambda h, w: T.NoOpTransform(),
    "rot90_k1": lambda h, w: Rot90Transform(1, h, w),
    "rot90_k2": lambda h, w: Rot90Transform(2, h, w),
    "rot90_k3": lambda h, w: Rot90Transform(3, h, w),
    "hflip": lambda h, w: T.HFlipTransform(w),
    "vflip": lambda h, w: T.VFlipTransform(h),
    "resize": lambda h, w: T.ResizeTransform(h, w, 2 * h, 2 * w),  # uniform, as ResizeShortestEdge
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_kitti_box_through_mapper_keeps_its_corners(kitti_dataset, name):
    out, tfm = _mapped(kitti_dataset, [Fixed(TRANSFORMS[name])])
    gt = out["instances"].gt_boxes
    assert isinstance(gt, RotatedBoxes) and len(gt) == len(KITTI)
    drawn = [kitti_corners(*k) for k in KITTI]
    moved = [tfm.apply_coords(c.copy()) for c in drawn]
    got = d2_corners(gt.tensor.numpy())
    for want, have in zip(moved, got, strict=True):
        assert same_corners(want, have, atol=2e-2), (name, want, have)
    # one canonical form: w >= h, angle in [-90, 90)
    t = gt.tensor
    assert (t[:, 2] >= t[:, 3]).all() and (t[:, 4] >= -90).all() and (t[:, 4] < 90).all()
    assert out["image"].shape[1:] == tuple(tfm.apply_image(np.zeros((H, W))).shape)


def test_quarter_turn_angles_and_pixels(kitti_dataset):
    """k=1 turns the image counter-clockwise: a rod's angle grows by 90 degrees (mod 180)."""
    base, _ = _mapped(kitti_dataset, [Fixed(TRANSFORMS["identity"])])
    turned, _ = _mapped(kitti_dataset, [Fixed(TRANSFORMS["rot90_k1"])])
    a0 = base["instances"].gt_boxes.tensor[:, 4]
    a1 = turned["instances"].gt_boxes.tensor[:, 4]
    diff = torch.remainder(a1 - a0 - 90.0 + 90.0, 180.0) - 90.0
    assert torch.allclose(diff, torch.zeros_like(diff), atol=1e-3)
    # the first rod: roLabelImg 0.4 rad clockwise -> -22.9 degrees CCW -> +67.1 after the turn
    assert a0[0].item() == pytest.approx(-math.degrees(0.4), abs=1e-3)
    assert a1[0].item() == pytest.approx(90 - math.degrees(0.4), abs=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_real_augmentations_move_boxes_with_the_image(kitti_dataset, seed):
    from emdet.data.transforms import build_em_augmentations

    cfg = _cfg("INPUT.EM.NOISE_STD", "2.0", "INPUT.EM.BRIGHTNESS", "0.1", "INPUT.EM.GAMMA",
               "[0.8, 1.2]")
    np.random.seed(seed)
    out, tfm = _mapped(kitti_dataset, build_em_augmentations(cfg, True), cfg)
    moved = [tfm.apply_coords(kitti_corners(*k)) for k in KITTI]
    got = d2_corners(out["instances"].gt_boxes.tensor.numpy())
    for want, have in zip(moved, got, strict=True):
        assert same_corners(want, have, atol=2e-2)


def test_crop_shortens_rods_cut_by_the_border(kitti_dataset):
    # crop x in [30, 80): rod 0 (cx 40, 30 long, 22.9 deg) loses its left end
    out, tfm = _mapped(kitti_dataset, [Fixed(lambda h, w: T.CropTransform(30, 0, 50, 80))],
                       _cfg("INPUT.EM.ROTATED_MIN_VISIBLE", "0.3"))
    boxes = out["instances"].gt_boxes.tensor.numpy()
    assert out["image"].shape[1:] == (80, 50)
    rod0 = boxes[0]
    assert rod0[2] < 30 and rod0[3] == pytest.approx(8)
    corners = d2_corners(rod0[None])[0]
    assert corners[:, 0].min() >= -4.0  # only the rod's half-thickness may stick out
    # its centre line ends on the border x = 0
    t = math.radians(rod0[4])
    ends = rod0[0] + np.array([-1, 1]) * rod0[2] / 2 * math.cos(t)
    assert ends.min() == pytest.approx(0.0, abs=1e-6)
    assert len(boxes) == 2  # rod 2 (cx 25, 10 x 20) is mostly left of the crop: dropped


def test_axis_aligned_models_get_enclosing_boxes(kitti_dataset):
    out, tfm = _mapped(kitti_dataset, [Fixed(TRANSFORMS["rot90_k1"])],
                       load_config(None, ["INPUT.MIN_SIZE_TRAIN", f"({H},)"]))
    gt = out["instances"].gt_boxes
    assert isinstance(gt, Boxes)
    for want, have in zip([tfm.apply_coords(kitti_corners(*k)) for k in KITTI], gt.tensor.numpy(),
                          strict=True):
        assert have == pytest.approx([*want.min(0), *want.max(0)], abs=1e-3)


def test_axis_aligned_annotations_become_angle_zero_rotated_boxes(tmp_path):
    name = "rot_mapper_xywh"
    img = tmp_path / "a.png"
    Image.new("L", (64, 48), 50).save(img)
    d = {"file_name": str(img), "height": 48, "width": 64, "image_id": 1, "annotations": [
        {"bbox": [10, 5, 20, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}]}
    mapper = EMDatasetMapper(_cfg("INPUT.MIN_SIZE_TRAIN", "(48,)"), is_train=True)
    mapper.augmentations = T.AugmentationList([])
    out = mapper(d)
    assert out["instances"].gt_boxes.tensor.tolist() == [[20.0, 9.0, 20.0, 8.0, 0.0]]
    assert name not in DatasetCatalog.list()


def test_clip_rotated_to_image():
    boxes = np.array([
        [50.0, 50.0, 40.0, 6.0, 0.0],    # inside
        [0.0, 50.0, 40.0, 6.0, 0.0],     # half outside on the left -> shortened
        [110.0, 50.0, 40.0, 6.0, 180.0],  # 25 % inside -> dropped
        [50.0, 50.0, 0.0, 6.0, 30.0],    # zero length -> dropped
        [50.0, 50.0, 30.0, 0.0, 30.0],   # zero width -> dropped
        [50.0, 98.0, 6.0, 30.0, 0.0],    # vertical (w < h): normalised, then cut at y = 100
    ])
    out, keep = clip_rotated_to_image(boxes, (100, 100), 0.5)
    assert keep.tolist() == [True, True, False, False, False, True]
    assert out[0] == pytest.approx([50, 50, 40, 6, 0])
    assert out[1] == pytest.approx([10, 50, 20, 6, 0])
    assert out[2] == pytest.approx([50, 91.5, 17, 6, -90])  # y from 83 to 113 -> 83 to 100
    empty, keep = clip_rotated_to_image(np.zeros((0, 5)), (10, 10))
    assert empty.shape == (0, 5) and keep.shape == (0,)


def _dicts(boxes, size=(100, 100), file_name="img.png"):
    return [{"file_name": file_name, "height": size[0], "width": size[1], "image_id": 1,
             "annotations": [{"bbox": list(b), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": 0}
                             for b in boxes]}]


def test_check_warns_about_radians_naming_the_file(caplog):
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(30, 70, 25), rng.uniform(30, 70, 25),
                             np.full(25, 20.0), np.full(25, 5.0), rng.uniform(-1.5, 1.5, 25)])
    with caplog.at_level(logging.WARNING):
        msgs = check_rotated_annotations(_dicts(boxes), "rods/annotations/train.json")
    assert len(msgs) == 1 and "radians" in msgs[0] and "rods/annotations/train.json" in msgs[0]
    assert "radians" in caplog.text
    degrees = boxes.copy()
    degrees[:, 4] = np.rad2deg(degrees[:, 4])
    assert check_rotated_annotations(_dicts(degrees), "x.json") == []
    horizontal = boxes.copy()
    horizontal[:, 4] = 0.0  # axis-aligned rods: angle 0 is not radians
    assert check_rotated_annotations(_dicts(horizontal), "x.json") == []
    assert check_rotated_annotations(_dicts(boxes[:5]), "x.json") == []  # too few to judge


def test_check_warns_about_zero_size_and_outside_boxes():
    boxes = [[50, 50, 20, 0, 10], [5, 50, 30, 6, 0], [300, 300, 20, 5, 45], [50, 50, 20, 5, 30]]
    msgs = check_rotated_annotations(_dicts(boxes, file_name="/d/img_3.tif"), "a/train.json")
    assert len(msgs) == 3
    zero, partly, wholly = msgs
    assert "a/train.json" in zero and "1 rotated box" in zero and "img_3.tif" in zero
    assert "extend beyond" in partly and "shortened" in partly
    assert "outside their image" in wholly


def test_training_mapper_checks_the_training_sets(tmp_path, caplog):
    from emdet.data.synthetic import make_synthetic

    make_synthetic("nanorods", num=2, size=192, seed=5, output=tmp_path / "radrods",
                   split={"train": 1.0}, progress=False)
    import json

    ann = tmp_path / "radrods" / "annotations" / "train.json"
    doc = json.loads(ann.read_text())
    for a in doc["annotations"]:
        a["rbox"][4] = math.radians(a["rbox"][4])
    ann.write_text(json.dumps(doc))
    names = register_dataset("radrods", tmp_path / "radrods", evaluator_type="rotated")
    try:
        assert MetadataCatalog.get(names[0]).rotated
        with caplog.at_level(logging.WARNING):
            EMDatasetMapper(_cfg("DATASETS.TRAIN", f"('{names[0]}',)"), is_train=True)
        assert "radians" in caplog.text and str(ann) in caplog.text
    finally:
        unregister_dataset("radrods")


def test_kitti_dataset_json_is_what_the_mapper_reads(kitti_dataset):
    """The converted json holds canonical degrees; the data set loads them as XYWHA_ABS."""
    d = DatasetCatalog.get(kitti_dataset)[0]
    a = d["annotations"][0]
    assert a["bbox_mode"] == BoxMode.XYWHA_ABS
    assert a["bbox"] == pytest.approx([40, 30, 30, 8, -math.degrees(0.4)], abs=1e-6)
    assert Path(d["file_name"]).is_file()


@pytest.mark.parametrize("name", ["identity", "rot90_k1", "hflip"])
def test_convention_end_to_end_through_the_model_to_coco_output(kitti_dataset, name):
    """LabelImg-KITTI file -> data set -> augmentation -> the rotated head's decoding, NMS and
    canonical form -> COCO result (rbox, corner polygon): the corners stay the drawn ones.

    The head is the real ``EMRotatedFastRCNNOutputLayers`` of the nanorod config; its class
    scores and box deltas are set to what a perfect network would output for proposals that
    are the rods turned by up to 40 degrees, stretched and shifted.
    """
    from detectron2.modeling import build_model
    from detectron2.structures import Instances

    import emdet.modeling  # noqa: F401
    from emdet.evaluation.rotated import instances_to_rotated_json

    out, tfm = _mapped(kitti_dataset, [Fixed(TRANSFORMS[name])])
    gt = out["instances"].gt_boxes.tensor.double()
    cfg = load_config(Path(__file__).resolve().parents[2]
                      / "configs/quick_schedules/nanorods_rotated_instant_test.yaml",
                      ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.5"])
    head = build_model(cfg).roi_heads.box_predictor
    rng = np.random.default_rng(0)
    n = len(gt)
    proposals = gt.clone()
    proposals[:, :2] += torch.tensor(rng.uniform(-2, 2, (n, 2)))
    proposals[:, 2:4] *= torch.tensor(rng.uniform(0.8, 1.25, (n, 2)))
    proposals[:, 4] += torch.tensor(rng.uniform(-40, 40, n))
    deltas = head.box2box_transform.get_deltas(proposals, gt).float()
    logits = torch.tensor([[8.0, -8.0]] * n)  # (R, K + 1): class 0, then background
    props = Instances(tuple(out["image"].shape[1:]),
                      proposal_boxes=RotatedBoxes(proposals.float()))
    (pred,), _ = head.inference((logits, deltas), [props])
    assert len(pred) == n
    results = instances_to_rotated_json(pred, img_id=1)
    drawn = [tfm.apply_coords(kitti_corners(*k)) for k in KITTI]
    for r in results:
        cx, cy, w, h, a = r["rbox"]
        assert w >= h and -90 <= a < 90
        polygon = np.array(r["segmentation"][0]).reshape(4, 2)
        assert same_corners(polygon, d2_corners([r["rbox"]])[0], atol=1e-2)  # 2 decimals
        assert sum(same_corners(d, polygon, atol=5e-2) for d in drawn) == 1, (name, r["rbox"])
