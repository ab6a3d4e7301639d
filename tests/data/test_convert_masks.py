"""Tests for label images -> COCO RLE (``--format masks``) and COCO -> instance-ID PNGs
(``--to masks``): exact pixels on real EMPS instance maps, round trips, connected components and
the watershed split, colour masks with an overlap colour, pairing, auto-detection, calibration."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from emdet.data.converters import (
    ConversionError,
    coco_to_masks,
    convert_annotations,
    parse_mask_classes,
    to_coco,
)
from emdet.data.io import write_tiff
from emdet.data.rle import MaskCrop, crop_to_rle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

REPO = Path(__file__).resolve().parents[2]
EMPS = Path(__file__).resolve().parents[3] / "shared/data/emps_train"
TOOL = REPO / "tools" / "convert_annotations.py"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def save(path: Path, array: np.ndarray) -> Path:
    """A mask or image as PNG (8/16-bit, grey or RGB) or TIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(array)))
    else:
        write_tiff(path, array)
    return path


def image(path: Path, h: int, w: int) -> Path:
    return save(path, np.full((h, w), 100, np.uint8))


def decode(seg: dict) -> np.ndarray:
    return mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def partition(labels: np.ndarray) -> set[frozenset[int]]:
    """The sets of flat pixel indices of each non-zero label (ids ignored)."""
    flat = labels.ravel()
    return {frozenset(np.flatnonzero(flat == v).tolist()) for v in np.unique(flat) if v != 0}


def instance_map(h: int = 60, w: int = 80) -> np.ndarray:
    ids = np.zeros((h, w), np.uint16)
    ids[5:15, 5:20] = 3
    ids[40:50, 60:79] = 3  # id 3 in two pieces: still one object
    ids[20:35, 30:45] = 1000
    ids[0:60, 79] = 7  # the last column, top to bottom: runs join across columns
    ids[34:36, 44:50] = 12  # touches 1000
    return ids


# --------------------------------------------------------------------------------------------
# RLE of a crop
# --------------------------------------------------------------------------------------------
def test_crop_to_rle_is_pycocotools_encode_of_the_full_mask():
    rng = np.random.default_rng(0)
    h, w = 37, 29
    cases = [(np.ones((h, w), bool), 0, 0), (np.ones((1, 1), bool), h - 1, w - 1),
             (np.ones((h, 3), bool), 0, 5), (np.ones((4, 4), bool), 0, 0)]
    for _ in range(200):
        ch, cw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = rng.random((ch, cw)) < rng.choice([0.1, 0.5, 0.9])
        cases.append((crop, top, left))
    for crop, top, left in cases:
        full = np.zeros((h, w), np.uint8)
        full[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        want = mask_utils.encode(np.asfortranarray(full))
        got = crop_to_rle(MaskCrop(int(top), int(left), crop), h, w)
        assert got == {"size": [h, w], "counts": want["counts"].decode()}


# --------------------------------------------------------------------------------------------
# Real data: EMPS instance maps
# --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not (EMPS / "segmaps").is_dir(),
                    reason=f"EMPS training split not found at {EMPS} (real micrographs with 16-bit "
                    "instance maps; see the issue 'Real micrographs')")
def test_emps_instance_maps_convert_exactly(tmp_path):
    ids = sorted(p.stem for p in (EMPS / "segmaps").glob("*.png"))[:10]
    masks = tmp_path / "segmaps"
    masks.mkdir()
    for i in ids:  # links, not copies: the images stay where they are
        (masks / f"{i}.png").symlink_to(EMPS / "segmaps" / f"{i}.png")
    out = tmp_path / "emps.json"
    report = convert_annotations(masks, out, "masks", images_dir=EMPS / "images",
                                 mask_class_name="particle", progress=False)
    coco = json.loads(out.read_text())
    assert coco["info"]["mask_kind"] == "instances"
    assert coco["categories"] == [{"id": 1, "name": "particle", "supercategory": ""}]
    assert [im["file_name"] for im in coco["images"]] == [f"{i}.png" for i in ids]
    for im in coco["images"]:
        seg = np.asarray(Image.open(EMPS / "segmaps" / im["file_name"]))
        assert (im["height"], im["width"]) == seg.shape
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        present = np.unique(seg[seg != 0])
        assert len(anns) == len(present)
        assert sorted(a["mask_id"] for a in anns) == present.tolist()
        for a in anns:
            want = seg == a["mask_id"]
            got = decode(a["segmentation"])
            assert np.array_equal(got, want), (im["file_name"], a["mask_id"])
            assert a["area"] == want.sum()
            ys, xs = np.nonzero(want)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                 ys.max() - ys.min() + 1]
    assert report.num_annotations == len(coco["annotations"])
    # pycocotools reads it as any COCO file
    api = COCO(str(out))
    first = coco["annotations"][0]
    assert api.annToMask(api.loadAnns(first["id"])[0]).sum() == first["area"]


# --------------------------------------------------------------------------------------------
# Instance maps
# --------------------------------------------------------------------------------------------
def test_instance_map_round_trip_keeps_the_partition(tmp_path):
    ids = instance_map()
    save(tmp_path / "masks" / "a.png", ids)
    big = np.zeros((30, 40), np.uint32)
    big[2:10, 3:9] = 4_000_000_000  # sparse huge ids are numbered, not allocated
    big[12:20, 3:30] = 70_000
    big[25:29, 35:39] = 1
    save(tmp_path / "masks" / "b.tif", big)
    image(tmp_path / "images" / "a.tif", *ids.shape)
    image(tmp_path / "images" / "b.png", *big.shape)
    out = tmp_path / "coco" / "all.json"
    convert_annotations(tmp_path / "masks", out, "masks", images_dir=tmp_path / "images",
                        progress=False)
    coco = json.loads(out.read_text())
    assert [c["name"] for c in coco["categories"]] == ["object"]
    by_image = {im["file_name"]: im["id"] for im in coco["images"]}
    assert set(by_image) == {"a.tif", "b.png"}
    anns_a = [a for a in coco["annotations"] if a["image_id"] == by_image["a.tif"]]
    assert [a["mask_id"] for a in anns_a] == [3, 7, 12, 1000]
    assert anns_a[0]["area"] == 10 * 15 + 10 * 19
    assert anns_a[0]["bbox"] == [5, 5, 74, 45]

    written = coco_to_masks(out, tmp_path / "back", progress=False)
    assert [p.name for p in written] == ["a.png", "b.png", "instances.csv"]
    back_a = np.asarray(Image.open(tmp_path / "back" / "a.png"))
    back_b = np.asarray(Image.open(tmp_path / "back" / "b.png"))
    assert back_a.dtype == np.uint16 and back_a.shape == ids.shape
    assert partition(back_a) == partition(ids)
    assert partition(back_b) == partition(big)
    assert sorted(np.unique(back_a)) == [0, 1, 2, 3, 4]
    rows = list(csv.DictReader((tmp_path / "back" / "instances.csv").open()))
    assert [r["file"] for r in rows].count("a.png") == 4
    assert {r["category"] for r in rows} == {"object"}


def test_float_masks_with_whole_numbers_are_instance_maps(tmp_path):
    ids = instance_map().astype(np.float32)
    np.save(tmp_path / "masks.npy", ids)  # not in the mask folder: ignored
    (tmp_path / "masks").mkdir()
    np.save(tmp_path / "masks" / "a.npy", ids)
    image(tmp_path / "images" / "a.png", *ids.shape)
    conv = to_coco(tmp_path / "masks", "masks", images_dir=tmp_path / "images",
                   mask_kind="instances")
    assert [a["mask_id"] for a in conv.coco["annotations"]] == [3, 7, 12, 1000]


def test_masks_pair_by_name_with_mask_endings_and_calibration(tmp_path):
    ids = instance_map()
    save(tmp_path / "masks" / "grid_01_mask.png", ids)
    save(tmp_path / "masks" / "grid_02-labels.png", ids)
    (tmp_path / "masks" / "notes.txt").write_text("not a mask")
    (tmp_path / "images").mkdir()
    write_tiff(tmp_path / "images" / "grid_01.tif", np.zeros(ids.shape, np.uint16),
               pixel_size=0.25)
    image(tmp_path / "images" / "grid_02.png", *ids.shape)
    image(tmp_path / "images" / "grid_03.png", *ids.shape)  # no mask: warned, left out
    conv = to_coco(tmp_path / "masks", "masks", images_dir=tmp_path / "images")
    images = conv.coco["images"]
    assert [im["file_name"] for im in images] == ["grid_01.tif", "grid_02.png"]
    assert images[0]["pixel_size"] == pytest.approx(0.25) and images[0]["unit"] == "nm"
    assert "pixel_size" not in images[1]  # PNG: uncalibrated
    assert any("grid_03.png" in w and "without a mask" in w for w in conv.warnings)


def test_empty_mask_keeps_its_image_without_annotations(tmp_path):
    save(tmp_path / "masks" / "a.png", np.zeros((20, 30), np.uint16))
    save(tmp_path / "masks" / "b.png", instance_map())
    image(tmp_path / "images" / "a.png", 20, 30)
    image(tmp_path / "images" / "b.png", 60, 80)
    conv = to_coco(tmp_path / "masks", "masks", images_dir=tmp_path / "images")
    assert len(conv.coco["images"]) == 2
    assert {a["image_id"] for a in conv.coco["annotations"]} == {2}
    assert any("a.png" in w and "no objects" in w for w in conv.warnings)


def test_auto_kind_for_the_folder(tmp_path, caplog):
    # 8-bit 0/255 masks are binary: connected components
    two = np.zeros((40, 40), np.uint8)
    two[2:10, 2:10] = 255
    two[20:30, 20:30] = 255
    save(tmp_path / "bin" / "a.png", two)
    image(tmp_path / "images" / "a.png", 40, 40)
    image(tmp_path / "images" / "b.png", 40, 40)
    with caplog.at_level(logging.INFO, logger="emdet.data.converters"):
        conv = to_coco(tmp_path / "bin", "masks", images_dir=tmp_path / "images")
    assert conv.coco["info"]["mask_kind"] == "binary" and len(conv.coco["annotations"]) == 2
    assert "mask kind: binary" in caplog.text
    # beside an 8-bit instance map, a one-value mask is an instance map too: one id, one object
    many = np.zeros((40, 40), np.uint8)
    many[1:5, 1:5], many[10:15, 10:15] = 1, 2
    save(tmp_path / "mixed" / "a.png", two)
    save(tmp_path / "mixed" / "b.png", many)
    conv = to_coco(tmp_path / "mixed", "masks", images_dir=tmp_path / "images")
    assert conv.coco["info"]["mask_kind"] == "instances"
    assert [a["image_id"] for a in conv.coco["annotations"]] == [1, 2, 2]
    assert conv.coco["annotations"][0]["area"] == 64 + 100
    # forced binary: components
    conv = to_coco(tmp_path / "mixed", "masks", images_dir=tmp_path / "images",
                   mask_kind="binary")
    assert len(conv.coco["annotations"]) == 4


# --------------------------------------------------------------------------------------------
# Binary masks and the watershed split
# --------------------------------------------------------------------------------------------
def test_touching_discs_are_split_with_split_touching(tmp_path):
    h, w = 64, 96
    a, b = disc(h, w, 32, 30, 14), disc(h, w, 32, 57, 14)  # overlap: one blob
    blob = (a | b).astype(np.uint8) * 255
    save(tmp_path / "masks" / "d.png", blob)
    image(tmp_path / "images" / "d.png", h, w)
    kw = {"images_dir": tmp_path / "images"}
    whole = to_coco(tmp_path / "masks", "masks", **kw).coco["annotations"]
    assert len(whole) == 1 and whole[0]["area"] == blob.astype(bool).sum()
    conv = to_coco(tmp_path / "masks", "masks", split_touching=True, **kw)
    split = conv.coco["annotations"]
    assert len(split) == 2
    assert conv.coco["info"]["split_touching"] == {"min_distance": 5}
    masks = [decode(s["segmentation"]) for s in sorted(split, key=lambda s: s["bbox"][0])]
    assert not (masks[0] & masks[1]).any()
    assert np.array_equal(masks[0] | masks[1], blob.astype(bool))
    for m, d in zip(masks, (a, b), strict=True):
        assert (m & d).sum() / (m | d).sum() > 0.85
    # 8-connectivity: pixels touching at a corner are one object
    diag = np.zeros((10, 10), np.uint8)
    diag[2, 2] = diag[3, 3] = diag[7, 7] = 1
    save(tmp_path / "diag" / "d.png", diag)
    image(tmp_path / "images" / "d.png", 10, 10)
    conv = to_coco(tmp_path / "diag", "masks", **kw)
    assert sorted(a["area"] for a in conv.coco["annotations"]) == [1, 2]


# --------------------------------------------------------------------------------------------
# Colour masks
# --------------------------------------------------------------------------------------------
def test_rgb_classes_and_the_overlap_colour_given_to_both(tmp_path):
    h, w = 50, 70
    rgb = np.full((h, w, 3), 255, np.uint8)  # white background
    rgb[5:20, 5:25] = (255, 0, 0)  # vesicle
    rgb[5:20, 25:40] = (0, 255, 0)  # hole
    rgb[8:14, 22:28] = (255, 255, 0)  # overlap of the two
    rgb[30:45, 50:65] = (255, 0, 0)  # a second vesicle
    rgb[30:33, 5:8] = (255, 255, 0)  # an overlap touching nothing
    save(tmp_path / "masks" / "a.png", rgb)
    image(tmp_path / "images" / "a.png", h, w)
    spec = "255,0,0=vesicle;0,255,0=hole;255,255,0=vesicle+hole;255,255,255=background"
    conv = to_coco(tmp_path / "masks", "masks", images_dir=tmp_path / "images",
                   mask_classes=spec)
    coco = conv.coco
    assert coco["info"]["mask_kind"] == "rgb"
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert list(cats.values()) == ["vesicle", "hole"]
    objs = [(cats[a["category_id"]], decode(a["segmentation"])) for a in coco["annotations"]]
    overlap = np.all(rgb == (255, 255, 0), axis=-1)
    overlap[30:33, 5:8] = False
    red = np.all(rgb == (255, 0, 0), axis=-1)
    green = np.all(rgb == (0, 255, 0), axis=-1)
    vesicles = [m for n, m in objs if n == "vesicle"]
    holes = [m for n, m in objs if n == "hole"]
    assert len(vesicles) == 3 and len(holes) == 2  # the lone overlap becomes one of each
    first = next(m for m in vesicles if m[10, 10])
    red_first = red.copy()
    red_first[25:] = False
    assert np.array_equal(first, red_first | overlap)
    hole = next(m for m in holes if m[10, 30])
    assert np.array_equal(hole, green | overlap)
    lone = np.zeros((h, w), bool)
    lone[30:33, 5:8] = True
    assert sum(np.array_equal(m, lone) for _, m in objs) == 2


def _box(h, w, x0, x1, y0, y1) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_classes_syntax():
    parsed = parse_mask_classes(" 255,0,0 = vesicle ; 1,2,3=a+b;9,9,9=background")
    assert [(c.colour, c.names) for c in parsed] == [((255, 0, 0), ("vesicle",)),
                                                     ((1, 2, 3), ("a", "b")), ((9, 9, 9), ())]
    for bad in ("", "255,0,0", "255,0=vesicle", "256a,0,0=x", "1,2,3=", "1,2,3=a+",
                "1,2,3=a;1,2,3=b", "1,2,3=background"):
        with pytest.raises(ConversionError, match="--mask-classes"):
            parse_mask_classes(bad)


# --------------------------------------------------------------------------------------------
# COCO -> masks
# --------------------------------------------------------------------------------------------
def test_to_masks_draws_higher_scores_on_top_and_skips_low_scores(tmp_path):
    h, w = 30, 40
    rle = mask_utils.encode(np.asfortranarray(_box(h, w, 10, 30, 5, 20).astype(np.uint8)))
    coco = {
        "images": [{"id": 7, "file_name": "sub/x.tif", "width": w, "height": h},
                   {"id": 8, "file_name": "y.png", "width": w, "height": h}],
        "categories": [{"id": 1, "name": "rod"}, {"id": 2, "name": "dot"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "score": 0.9,
             "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]]},
            {"id": 2, "image_id": 7, "category_id": 2, "score": 0.5,
             "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}},
            {"id": 3, "image_id": 7, "category_id": 2, "score": 0.1,
             "segmentation": [[30, 20, 39, 20, 39, 29]]},
            {"id": 4, "image_id": 7, "category_id": 1, "score": 0.8, "bbox": [1, 1, 2, 2]},
        ],
    }
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(coco))
    written = coco_to_masks(path, tmp_path / "out", min_score=0.3, progress=False)
    assert [p.name for p in written] == ["x.png", "y.png", "instances.csv"]
    ids = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    assert ids[7, 15] == 1  # in both: the 0.9 polygon wins over the 0.5 mask
    assert ids[15, 25] == 2 and ids[25, 35] == 0  # 0.1 left out
    assert not np.asarray(Image.open(tmp_path / "out" / "y.png")).any()
    rows = list(csv.DictReader((tmp_path / "out" / "instances.csv").open()))
    assert [(r["id"], r["annotation_id"], r["category"], r["score"]) for r in rows] == [
        ("1", "1", "rod", "0.9"), ("2", "2", "dot", "0.5"), ("3", "4", "rod", "0.8")]
    assert rows[2]["pixels"] == "0"  # box only: listed, not drawn
    assert int(rows[1]["pixels"]) == (ids == 2).sum()
    with pytest.raises(ConversionError, match="--overwrite"):
        coco_to_masks(path, tmp_path / "out", progress=False)
    coco_to_masks(path, tmp_path / "out", overwrite=True, progress=False)


def test_cli_masks_and_back(tmp_path):
    import subprocess
    import sys

    ids = instance_map()
    save(tmp_path / "masks" / "a.png", ids)
    save(tmp_path / "masks" / "b.png", ids[::-1].copy())
    image(tmp_path / "images" / "a.png", *ids.shape)
    image(tmp_path / "images" / "b.png", *ids.shape)
    out = tmp_path / "ann" / "all.json"
    run = subprocess.run(
        [sys.executable, str(TOOL), "--format", "masks", "--input", tmp_path / "masks",
         "--images", tmp_path / "images", "--output", out, "--mask-class-name", "particle",
         "--split", "train=0.5,val=0.5", "--no-progress"],
        capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "mask kind: instances" in run.stderr
    assert {p.name for p in out.parent.iterdir()} == {"all.json", "train.json", "val.json"}
    run = subprocess.run(
        [sys.executable, str(TOOL), "--to", "masks", "--input", out, "--output",
         tmp_path / "back", "--no-progress"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "Wrote 2 instance-ID PNG(s) and instances.csv" in run.stdout
    assert partition(np.asarray(Image.open(tmp_path / "back" / "b.png"))) == partition(
        ids[::-1])
