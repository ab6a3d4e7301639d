"""Data set registration with detectron2, its error messages, and the rotated-box convention."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import emdet  # noqa: F401  (makes detectron2 importable)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as d2utils
from detectron2.structures import BoxMode, RotatedBoxes
from shapely.geometry import Polygon

from emdet.data import (
    DatasetFormatError,
    DatasetSpec,
    get_datasets_root,
    normalize_rbox,
    polygon_to_rbox,
    rbox_to_polygon,
    rbox_to_xywh,
    register_all_from_root,
    register_dataset,
    register_datasets,
    unregister_dataset,
)
from emdet.data.datasets import _REGISTERED
from emdet.data.synthetic import SYNTHETIC_KINDS, make_synthetic

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

KINDS = ("vesicles", "nanorods", "merons", "graphene", "atoms")
NUM, SIZE = 4, 128


def _random_rboxes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.uniform(20, 80, n),
            rng.uniform(20, 80, n),
            rng.uniform(5, 40, n),
            rng.uniform(3, 20, n),
            rng.uniform(-180, 180, n),
        ]
    )


# ---------------------------------------------------------------- geometry: the convention


def test_rbox_docstring_example():
    # detectron2 RotatedBoxes docstring: (5, 3, 4, 2, 90) is the 4x2 box turned 90 deg CCW.
    corners = rbox_to_polygon([5, 3, 4, 2, 90])
    np.testing.assert_allclose(
        sorted(map(tuple, np.round(corners, 9))), [(4, 1), (4, 5), (6, 1), (6, 5)], atol=1e-9
    )
    # +30 deg turns the width axis towards the top of the screen (y decreases)
    right_end = rbox_to_polygon([0, 0, 10, 0, 30])[:2].mean(axis=0)
    np.testing.assert_allclose(right_end, [5 * np.cos(np.pi / 6), -5 * np.sin(np.pi / 6)])


def test_rbox_matches_get_rotated_vertices():
    # transcription of detectron2/layers/csrc/box_iou_rotated/box_iou_rotated_utils.h
    for cx, cy, w, h, a in _random_rboxes(20):
        t = a * 0.01745329251
        c2, s2 = np.cos(t) * 0.5, np.sin(t) * 0.5
        p0 = (cx + s2 * h + c2 * w, cy + c2 * h - s2 * w)
        p1 = (cx - s2 * h + c2 * w, cy - c2 * h - s2 * w)
        expected = [p0, p1, (2 * cx - p0[0], 2 * cy - p0[1]), (2 * cx - p1[0], 2 * cy - p1[1])]
        np.testing.assert_allclose(rbox_to_polygon([cx, cy, w, h, a]), expected, atol=1e-6)


def test_rbox_matches_detectron2_visualizer():
    from detectron2.utils.visualizer import Visualizer

    for rbox in _random_rboxes(5, seed=1):
        vis = Visualizer(np.zeros((100, 100, 3), dtype=np.uint8))
        vis.draw_rotated_box_with_label(tuple(rbox))
        drawn = {
            (round(x, 6), round(y, 6)) for line in vis.output.ax.lines for x, y in line.get_xydata()
        }
        ours = {(round(x, 6), round(y, 6)) for x, y in rbox_to_polygon(rbox)}
        assert drawn == ours


def test_rbox_area_enclosing_box_and_iou_match_detectron2():
    boxes = _random_rboxes(12, seed=2)
    rb = RotatedBoxes(torch.tensor(boxes, dtype=torch.float64))
    polys = [Polygon(p) for p in rbox_to_polygon(boxes)]
    np.testing.assert_allclose(rb.area().numpy(), [p.area for p in polys], rtol=1e-6)
    xyxy = BoxMode.convert(torch.tensor(boxes), BoxMode.XYWHA_ABS, BoxMode.XYXY_ABS).numpy()
    xywh = rbox_to_xywh(boxes)
    np.testing.assert_allclose(
        xyxy, np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]), atol=1e-6
    )
    try:
        from detectron2.structures import pairwise_iou_rotated

        iou = pairwise_iou_rotated(rb[:6], rb[6:]).numpy()
    except (AttributeError, NotImplementedError, RuntimeError) as e:  # rotated IoU op missing
        pytest.skip(f"detectron2 rotated IoU unavailable: {e}")
    for i in range(6):
        for j in range(6):
            p, q = polys[i], polys[6 + j]
            expected = p.intersection(q).area / p.union(q).area
            assert iou[i, j] == pytest.approx(expected, abs=1e-4)


def test_normalize_and_polygon_to_rbox():
    for rbox in _random_rboxes(20, seed=3):
        norm = normalize_rbox(rbox)
        assert norm[2] >= norm[3] and -90 <= norm[4] < 90
        same = Polygon(rbox_to_polygon(norm)).symmetric_difference(Polygon(rbox_to_polygon(rbox)))
        assert same.area < 1e-6
        np.testing.assert_allclose(polygon_to_rbox(rbox_to_polygon(rbox)), norm, atol=1e-4)
    np.testing.assert_allclose(normalize_rbox([[0, 0, 2, 4, 0]]), [[0, 0, 4, 2, -90]])
    with pytest.raises(ValueError, match="angle_deg"):
        rbox_to_polygon([1, 2, 3, 4])


# ---------------------------------------------------------------- registration


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    for kind in KINDS:
        make_synthetic(kind, NUM, SIZE, seed=5, output=root / f"tds_{kind}")
    return root


@pytest.fixture
def clean():
    """Unregister whatever a test registered, so the global catalogs stay clean."""
    before = set(_REGISTERED)
    yield
    for name in set(_REGISTERED) - before:
        unregister_dataset(name)


@pytest.fixture
def one(root, tmp_path) -> Path:
    """A private copy of the vesicles data set to break."""
    return Path(shutil.copytree(root / "tds_vesicles", tmp_path / "broken"))


def test_register_all_kinds(root, clean):
    names = register_all_from_root(root)
    assert names == [f"tds_{k}_{s}" for k in sorted(KINDS) for s in ("train", "val", "test")]
    assert register_all_from_root(root) == names  # idempotent
    for kind in KINDS:
        spec = SYNTHETIC_KINDS[kind]
        dicts = DatasetCatalog.get(f"tds_{kind}_train")
        meta = MetadataCatalog.get(f"tds_{kind}_train")
        assert len(dicts) == 2 and len(DatasetCatalog.get(f"tds_{kind}_val")) == 1
        assert meta.thing_classes == list(spec.classes)
        assert meta.evaluator_type == spec.evaluator_type
        assert (meta.pixel_size, meta.unit, meta.rotated) == (spec.pixel_size, "nm", spec.rotated)
        assert Path(meta.json_file) == root / f"tds_{kind}" / "annotations" / "train.json"
        assert Path(meta.image_root) == root / f"tds_{kind}" / "images"
        if spec.stuff_classes:
            assert meta.stuff_classes == list(spec.stuff_classes) and meta.ignore_label == 255
        for d in dicts:
            assert Path(d["file_name"]).is_file()
            assert (d["height"], d["width"]) == (SIZE, SIZE) and d["pixel_size"] == spec.pixel_size
            assert d["annotations"]
            if spec.stuff_classes:
                assert Path(d["sem_seg_file_name"]).is_file()
            for obj in d["annotations"]:
                assert 0 <= obj["category_id"] < len(spec.classes)
                if spec.rotated:
                    assert obj["bbox_mode"] == BoxMode.XYWHA_ABS and len(obj["bbox"]) == 5
                    corners = rbox_to_polygon(obj["bbox"])
                    assert corners.min() >= 0 and corners.max() <= SIZE
                    assert "rbox" not in obj
                else:
                    assert obj["bbox_mode"] == BoxMode.XYWH_ABS
                    x, y, w, h = obj["bbox"]
                    assert 0 <= x and 0 <= y and x + w <= SIZE + 1e-6 and y + h <= SIZE + 1e-6
                if spec.evaluator_type == "points":
                    assert len(obj["point"]) == 2


def test_dicts_become_detectron2_instances(root, clean):
    register_all_from_root(root)
    for kind, fmt in (("vesicles", "polygon"), ("graphene", "bitmask"), ("atoms", "polygon")):
        for d in DatasetCatalog.get(f"tds_{kind}_train"):
            inst = d2utils.annotations_to_instances(d["annotations"], (SIZE, SIZE), mask_format=fmt)
            assert len(inst) == len(d["annotations"]) == len(inst.gt_masks)
            if fmt == "bitmask":  # RLE decoded: same pixel counts as the json areas
                areas = inst.gt_masks.tensor.sum(dim=(1, 2)).numpy()
                assert areas.min() > 0
    for d in DatasetCatalog.get("tds_nanorods_train"):
        inst = d2utils.annotations_to_instances_rotated(d["annotations"], (SIZE, SIZE))
        assert isinstance(inst.gt_boxes, RotatedBoxes) and len(inst) == len(d["annotations"])


def test_env_var_root_and_explicit_registration(root, clean, monkeypatch):
    monkeypatch.setenv("EMDET_DATASETS", str(root))
    assert get_datasets_root() == root
    names = register_dataset(
        "rods_a", "tds_nanorods", classes=["nanorod"], rotated=True, pixel_size=0.5, unit="nm"
    )
    assert names == ["rods_a_train", "rods_a_val", "rods_a_test"]
    assert MetadataCatalog.get("rods_a_val").evaluator_type == "coco"
    assert DatasetCatalog.get("rods_a_val")[0]["annotations"][0]["bbox_mode"] == BoxMode.XYWHA_ABS
    # same spec again is fine, also with the folder spelled absolutely
    assert (
        register_datasets(
            [
                DatasetSpec(
                    "rods_a", str(root / "tds_nanorods"), ("nanorod",), "coco", 0.5, "nm", True
                )
            ]
        )
        == names
    )
    with pytest.raises(ValueError, match="pixel_size: 0.5 -> 0.4"):
        register_dataset(
            "rods_a", "tds_nanorods", classes=["nanorod"], rotated=True, pixel_size=0.4, unit="nm"
        )
    unregister_dataset("rods_a")
    assert "rods_a_train" not in DatasetCatalog.list()
    register_dataset(
        "rods_a",
        "tds_nanorods",
        evaluator_type="rotated",
        pixel_size=0.4,
        unit="nm",
        splits=["val"],
    )
    assert MetadataCatalog.get("rods_a_val").thing_classes == ["nanorod"]  # read from the json
    assert MetadataCatalog.get("rods_a_val").rotated is True
    assert "rods_a_train" not in DatasetCatalog.list()


def test_default_root_is_cwd_datasets(monkeypatch, tmp_path):
    monkeypatch.delenv("EMDET_DATASETS", raising=False)
    assert get_datasets_root() == Path("datasets")
    monkeypatch.chdir(tmp_path)
    assert register_all_from_root() == []  # no datasets/ here: nothing to do
    with pytest.raises(FileNotFoundError, match="does not exist"):
        register_all_from_root(tmp_path / "nope")


def test_only_existing_splits_and_no_yaml(one, clean):
    (one / "annotations" / "test.json").unlink()
    (one / "dataset.yaml").unlink()
    names = register_all_from_root(one.parent)
    assert names == ["broken_train", "broken_val"]
    meta = MetadataCatalog.get("broken_train")
    assert meta.thing_classes == ["vesicle_large", "vesicle_small", "hole"]
    assert (meta.evaluator_type, meta.pixel_size, meta.unit) == ("coco", 1.0, "px")


def test_foreign_name_collision(one, clean):
    DatasetCatalog.register("broken_train", lambda: [])
    try:
        with pytest.raises(ValueError, match="registered by other code"):
            register_dataset("broken", one)
    finally:
        DatasetCatalog.remove("broken_train")


def test_spec_validation():
    with pytest.raises(ValueError, match="evaluator_type"):
        DatasetSpec("x", evaluator_type="keypoints")
    with pytest.raises(ValueError, match="stuff_classes"):
        DatasetSpec("x", evaluator_type="sem_seg")
    with pytest.raises(ValueError, match="pixel_size"):
        DatasetSpec("x", pixel_size=0)
    assert DatasetSpec("x", evaluator_type="rotated").rotated is True


# ---------------------------------------------------------------- errors name file and field


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _load_error(folder: Path, exc=DatasetFormatError, split: str = "train") -> str:
    register_dataset(folder.name, folder, classes=["vesicle_large", "vesicle_small", "hole"])
    with pytest.raises(exc) as info:
        DatasetCatalog.get(f"{folder.name}_{split}")
    return str(info.value)


def test_error_missing_json_folder(tmp_path, clean):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"empty.*annotations"):
        register_dataset("empty", tmp_path / "empty")


def test_error_json_deleted_after_registration(one, clean):
    register_dataset("broken", one)
    (one / "annotations" / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"broken/annotations/val.json does not exist"):
        DatasetCatalog.get("broken_val")


def test_error_malformed_json(one, clean):
    path = one / "annotations" / "train.json"
    path.write_text(path.read_text()[:-50])
    msg = _load_error(one)
    assert str(path) in msg and "not valid JSON" in msg and "line 1" in msg


def test_error_unknown_category(one, clean):
    path = one / "annotations" / "train.json"
    _edit(path, lambda d: d["annotations"][3].update(category_id=7))
    msg = _load_error(one)
    assert str(path) in msg and "'category_id' 7" in msg and "categories" in msg


def test_error_missing_image(one, clean):
    (one / "images" / "vesicles_0001.tif").unlink()
    msg = _load_error(one)
    assert "train.json" in msg and "'file_name'" in msg and "vesicles_0001.tif" in msg


def test_error_no_annotations(one, clean):
    path = one / "annotations" / "val.json"
    _edit(path, lambda d: d.update(annotations=[]))
    msg = _load_error(one, split="val")
    assert str(path) in msg and "'annotations' is empty" in msg


def test_error_classes_disagree(one, clean):
    path = one / "annotations" / "train.json"
    _edit(path, lambda d: d["categories"][2].update(name="pore"))
    msg = _load_error(one)
    assert str(path) in msg and "'categories'" in msg and "pore" in msg


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "'bbox'"),
        (lambda d: d["annotations"][0].update(image_id=999), "'image_id' 999"),
        (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]), "used twice"),
        (lambda d: d["images"][0].pop("height"), "field 'height'"),
        (lambda d: d.pop("categories"), "field 'categories'"),
    ],
)
def test_error_bad_fields(one, clean, edit, field):
    path = one / "annotations" / "train.json"
    _edit(path, edit)
    msg = _load_error(one)
    assert str(path) in msg and field in msg


def test_error_rotated_without_rbox(root, tmp_path, clean):
    folder = Path(shutil.copytree(root / "tds_nanorods", tmp_path / "rods"))
    path = folder / "annotations" / "train.json"
    _edit(path, lambda d: d["annotations"][2].pop("rbox"))
    register_all_from_root(tmp_path)
    with pytest.raises(
        DatasetFormatError, match=r"rods/annotations/train.json: annotation id \d+: .*'rbox'"
    ):
        DatasetCatalog.get("rods_train")


def test_error_bad_dataset_yaml(one, clean):
    yml = one / "dataset.yaml"
    meta = yaml.safe_load(yml.read_text())
    yml.write_text(yaml.safe_dump({**meta, "pixel_size": -2}))
    with pytest.raises(DatasetFormatError, match=r"broken/dataset.yaml: field 'pixel_size'"):
        register_all_from_root(one.parent)
    yml.write_text("classes: [a, b\n")
    with pytest.raises(DatasetFormatError, match=r"dataset.yaml: not valid YAML"):
        register_all_from_root(one.parent)
    yml.write_text(yaml.safe_dump({**meta, "evaluator_type": "sem_seg", "stuff_classes": None}))
    with pytest.raises(DatasetFormatError, match=r"dataset.yaml: field 'stuff_classes'"):
        register_all_from_root(one.parent)
