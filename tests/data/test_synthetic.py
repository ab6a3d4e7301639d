"""Seeded synthetic data sets: layout, determinism, golden ground truth, atomic output."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import yaml
from pycocotools.coco import COCO
from shapely.geometry import Point, Polygon

from emdet.data.geometry import rbox_to_polygon, rbox_to_xywh
from emdet.data.synthetic import SYNTHETIC_KINDS, generate_image, make_synthetic, parse_split
from emdet.data.synthetic._merons import crossing_number, prune_spurs
from emdet.data.synthetic._nanorods import _render_rod
from emdet.data.synthetic._noise import bandpass_noise
from emdet.data.synthetic._writer import _allocate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

KINDS = ("vesicles", "nanorods", "merons", "graphene", "atoms", "haadf")
NUM, SIZE = 4, 128
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    return {k: make_synthetic(k, NUM, SIZE, seed=3, output=root / f"{k}_synth") for k in KINDS}


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _coco(folder: Path, split: str = "train") -> COCO:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(folder / "annotations" / f"{split}.json"))


def test_all_kinds_registered():
    assert set(SYNTHETIC_KINDS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_layout_and_yaml(sets, kind):
    folder, spec = sets[kind], SYNTHETIC_KINDS[kind]
    images = sorted((folder / "images").iterdir())
    assert [p.name for p in images] == [f"{kind}_{i:04d}.tif" for i in range(NUM)]
    assert sorted(p.name for p in (folder / "annotations").iterdir()) == [
        "test.json",
        "train.json",
        "val.json",
    ]
    meta = yaml.safe_load((folder / "dataset.yaml").read_text())
    assert meta["classes"] == list(spec.classes)
    assert meta["evaluator_type"] == spec.evaluator_type
    assert meta["rotated"] is spec.rotated
    assert meta["pixel_size"] == spec.pixel_size and meta["unit"] == "nm"
    assert meta["splits"] == {"train": 2, "val": 1, "test": 1}
    assert meta.get("stuff_classes", []) == list(spec.stuff_classes)
    assert (folder / "masks").is_dir() == bool(spec.stuff_classes)
    assert (folder / "labelme").is_dir() == (spec.labelme is not None)
    assert (folder / "instances").is_dir() == (kind == "vesicles")
    assert not list(folder.parent.glob(".*"))  # no temporary folders left


@pytest.mark.parametrize("kind", KINDS)
def test_coco_json_is_valid(sets, kind):
    folder, spec = sets[kind], SYNTHETIC_KINDS[kind]
    seen_images = []
    for split in ("train", "val", "test"):
        coco = _coco(folder, split)
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(spec.classes)
        seen_images += [img["file_name"] for img in coco.dataset["images"]]
        assert coco.dataset["annotations"], f"{kind} {split} has no annotations"
        for ann in coco.dataset["annotations"]:
            img = coco.imgs[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0
            assert x + w <= img["width"] + 1e-6 and y + h <= img["height"] + 1e-6
            assert ann["iscrowd"] == 0 and ann["area"] > 0 and ann["segmentation"]
            assert coco.annToMask(ann).any()
            if spec.rotated:
                assert len(ann["rbox"]) == 5
            if spec.evaluator_type == "points":
                px, py = ann["point"]
                assert x <= px <= x + w and y <= py <= y + h
    assert sorted(seen_images) == [f"{kind}_{i:04d}.tif" for i in range(NUM)]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_differs(tmp_path, kind):
    a = _files(make_synthetic(kind, 2, 96, seed=11, output=tmp_path / "a"))
    b = _files(make_synthetic(kind, 2, 96, seed=11, output=tmp_path / "b"))
    c = _files(make_synthetic(kind, 2, 96, seed=12, output=tmp_path / "c"))
    assert a == b
    assert a[f"images/{kind}_0000.tif"] != c[f"images/{kind}_0000.tif"]


@pytest.mark.parametrize("kind", KINDS)
def test_generate_image_is_the_written_image(sets, kind):
    sample = generate_image(kind, seed=3, index=1, size=SIZE)
    written = tifffile.imread(sets[kind] / "images" / f"{kind}_0001.tif")
    assert written.dtype == np.uint16 and written.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(sample.image, written)


def test_tiff_carries_pixel_size(sets):
    with tifffile.TiffFile(sets["atoms"] / "images" / "atoms_0000.tif") as tif:
        assert tif.imagej_metadata["unit"] == "nm"
        num, den = tif.pages[0].tags["XResolution"].value
        assert num / den == pytest.approx(1 / SYNTHETIC_KINDS["atoms"].pixel_size, rel=1e-6)


def test_vesicles_masks_equal_coco(sets):
    folder = sets["vesicles"]
    for split in ("train", "val"):
        coco = _coco(folder, split)
        for img in coco.dataset["images"]:
            inst = cv2.imread(str(folder / "instances" / img["instance_mask_file_name"]), -1)
            assert inst.dtype == np.uint16
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == inst.max()
            assert {a["category_id"] for a in anns} <= {1, 2, 3}
            for ann in anns:
                mask = inst == ann["instance_id"]
                np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), mask)
                assert ann["area"] == mask.sum()
                poly = [Polygon(np.reshape(p, (-1, 2))) for p in ann["segmentation"]]
                area = sum(p.area for p in poly)
                perimeter = sum(p.length for p in poly)
                assert abs(area - ann["area"]) <= 0.5 * perimeter + 2


def test_vesicle_classes_look_right():
    sample = generate_image("vesicles", seed=0, index=0, size=256)
    img = sample.image.astype(float)
    background = np.median(img[sample.instance_mask == 0])
    by_class: dict[str, list[float]] = {}
    for inst in sample.instances:
        core = sample.instance_mask == inst.extra["instance_id"]
        by_class.setdefault(inst.category, []).append(img[core].mean() / background)
    assert {"vesicle_large", "vesicle_small", "hole"} <= set(by_class)
    assert np.median(by_class["hole"]) > np.median(by_class["vesicle_large"]) > 1.0
    assert np.median(by_class["vesicle_small"]) < 0.95
    assert len(by_class["vesicle_small"]) > 2 * len(by_class["vesicle_large"])


def test_nanorod_polygons_match_rbox(sets):
    for split in ("train", "val", "test"):
        for ann in _coco(sets["nanorods"], split).dataset["annotations"]:
            cx, cy, w, h, a = ann["rbox"]
            assert w >= h and -90 <= a < 90
            poly = np.reshape(ann["segmentation"][0], (4, 2))
            np.testing.assert_allclose(poly, rbox_to_polygon(ann["rbox"]), atol=0.006)
            np.testing.assert_allclose(ann["bbox"], rbox_to_xywh(ann["rbox"]), atol=0.02)
            assert ann["area"] == pytest.approx(w * h, abs=0.01)


def test_nanorods_overlap_heavily():
    sample = generate_image("nanorods", seed=0, index=0, size=256)
    polys = [Polygon(np.reshape(i.segmentation[0], (4, 2))) for i in sample.instances]
    assert len(polys) >= 20
    overlapping = sum(any(p.intersects(q) for q in polys if q is not p) for p in polys)
    assert overlapping >= 0.5 * len(polys)


@pytest.mark.parametrize("rbox", [(40.0, 30.0, 50.0, 10.0, 30.0), (40.0, 30.0, 40.0, 8.0, -70.0)])
def test_rendered_rod_follows_rbox_convention(rbox):
    out = np.zeros((64, 80))
    _render_rod(out, *rbox)
    poly = Polygon(rbox_to_polygon(rbox)).buffer(0.75)
    ys, xs = np.nonzero(out)
    assert all(poly.contains(Point(x + 0.5, y + 0.5)) for x, y in zip(xs, ys, strict=True))
    # both ends of the long axis (cos a, -sin a) are filled
    cx, cy, w, _, a = rbox
    u = np.array([np.cos(np.deg2rad(a)), -np.sin(np.deg2rad(a))])
    for sign in (-1, 1):
        x, y = np.array([cx, cy]) + sign * 0.42 * w * u
        assert out[int(y), int(x)] > 0


def test_nanorod_length_is_physical(tmp_path):
    for pixel_size in (0.5, 0.3):
        sample = generate_image("nanorods", seed=1, size=200, pixel_size=pixel_size)
        lengths = np.array([i.extra["rbox"][2] for i in sample.instances]) * pixel_size
        assert lengths.min() >= 14.0 - 1e-6 and lengths.max() <= 32.0 + 1e-6


def _cn(skel: np.ndarray, r: int, c: int) -> int:
    """Crossing number, written out independently of the generator."""
    ring = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    v = [int(skel[r + dr, c + dc]) for dr, dc in ring]
    return sum(abs(v[i] - v[(i + 1) % 8]) for i in range(8)) // 2


def test_meron_points_are_skeleton_features(sets):
    folder = sets["merons"]
    for split in ("train", "val", "test"):
        coco = _coco(folder, split)
        for img in coco.dataset["images"]:
            mask = cv2.imread(str(folder / "masks" / img["sem_seg_file_name"]), -1)
            assert set(np.unique(mask)) <= {0, 1, 2}
            skel = mask == 2
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            merons, antimerons = set(), []
            for ann in anns:
                x, y = ann["point"]
                c, r = int(x), int(y)
                assert (x, y) == (c + 0.5, r + 0.5) and skel[r, c]
                if ann["category_id"] == 1:
                    assert _cn(skel, r, c) == 1
                    merons.add((r, c))
                else:
                    assert _cn(skel, r, c) >= 3
                    antimerons.append((r, c))
            assert merons and antimerons
            h, w = skel.shape
            # complete: every end point / junction away from the frame is annotated
            for r, c in np.argwhere(skel):
                if 3 <= r < h - 3 and 3 <= c < w - 3:
                    cn = _cn(skel, r, c)
                    if cn == 1:
                        assert (r, c) in merons
                    elif cn >= 3:
                        assert min(abs(r - rr) + abs(c - cc) for rr, cc in antimerons) <= 4


def test_labelme_files(sets):
    for kind, shape_type in (("vesicles", "polygon"), ("merons", "point"), ("atoms", "point")):
        folder = sets[kind]
        coco = _coco(folder, "train")
        for img in coco.dataset["images"]:
            stem = Path(img["file_name"]).stem
            path = folder / "labelme" / f"{stem}.json"
            doc = json.loads(path.read_text())
            assert set(doc) == {
                "version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"
            }  # fmt: skip
            assert doc["imageData"] is None
            assert (path.parent / doc["imagePath"]).resolve() == (
                folder / "images" / img["file_name"]
            ).resolve()
            assert (doc["imageHeight"], doc["imageWidth"]) == (img["height"], img["width"])
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(
                {s["group_id"] if s["group_id"] is not None else id(s) for s in doc["shapes"]}
            ) == len(anns)
            for shape in doc["shapes"]:
                assert set(shape) == {"label", "points", "group_id", "shape_type", "flags"}
                assert shape["shape_type"] == shape_type
                assert shape["label"] in SYNTHETIC_KINDS[kind].classes
            if shape_type == "point":
                assert sorted(s["points"][0] for s in doc["shapes"]) == sorted(
                    a["point"] for a in anns
                )


def test_graphene_masks_and_rle(sets):
    from pycocotools import mask as mask_util

    folder = sets["graphene"]
    coco = _coco(folder, "train")
    for img in coco.dataset["images"]:
        labels = cv2.imread(str(folder / "masks" / img["sem_seg_file_name"]), -1)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
        assert (labels == 1).mean() > 0.3  # mostly lattice
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        union = np.zeros(labels.shape, dtype=int)
        for ann in anns:
            assert isinstance(ann["segmentation"], dict)
            m = mask_util.decode(ann["segmentation"])
            assert m.sum() == ann["area"]
            union += m
        assert union.max() == 1
        np.testing.assert_array_equal(union.astype(bool), labels == 2)
        a1, a2 = img["synthetic"]["grain_angles_deg"]
        assert 8.0 <= min(abs(a1 - a2) % 60, 60 - abs(a1 - a2) % 60)


def test_graphene_lattice_period():
    sample = generate_image("graphene", seed=2, size=256)
    img = sample.image.astype(float) * (sample.sem_seg == 1)
    power = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    yy, xx = np.mgrid[-128:128, -128:128]
    k = np.hypot(xx, yy) / 256.0
    ring_k = 2 / (np.sqrt(3) * 0.246 / 0.025)  # first-order fringes of the honeycomb
    near = np.abs(k - ring_k) < 0.01
    away = (k > 0.03) & (np.abs(k - ring_k) > 0.02) & (np.abs(k - ring_k * np.sqrt(3)) > 0.02)
    assert power[near].mean() > 5 * power[away].mean()


def test_atom_masks_and_intensities(sets):
    folder = sets["atoms"]
    coco = _coco(folder, "train")
    for img in coco.dataset["images"]:
        labels = cv2.imread(str(folder / "masks" / img["sem_seg_file_name"]), -1)
        image = tifffile.imread(folder / "images" / img["file_name"]).astype(float)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert len(anns) > 30
        means = {}
        for ann in anns:
            x, y = ann["point"]
            assert labels[int(y), int(x)] == ann["category_id"]
            means.setdefault(ann["category_id"], []).append(
                image[labels == ann["category_id"]].mean()
            )
        from scipy import ndimage

        assert ndimage.label(labels > 0)[1] == len(anns)
        background = image[labels == 0].mean()
        levels = [np.mean(means[c]) for c in sorted(means)]
        assert background < levels[0] and levels == sorted(levels)


def test_haadf_points_are_where_the_distorted_scan_shows_the_atoms():
    """Every scan line is shifted (drift, jitter, shear); the annotated point is where the atom
    appears. Measured here: the intensity centroid around each annotated atom of the
    high-dose images lies 0.22 px (x) and 0.19 px (y) from it in median; annotating the
    undistorted positions gives 0.41 px in x, the shift with the wrong sign 0.53 px."""
    from scipy import ndimage

    offsets = []
    for index in range(40):
        sample = generate_image("haadf", seed=7, index=index, size=128)
        if sample.info["dose_e_per_peak"] < 20:
            continue
        assert sample.info["scan_jitter_px"] > 0 and sample.image.dtype == np.uint16
        img = ndimage.gaussian_filter(sample.image.astype(float), 0.7)
        background = np.median(img)
        for ann in sample.instances:
            x, y = ann.extra["point"]
            j, i = int(x), int(y)
            if not (3 <= j < SIZE - 3 and 3 <= i < SIZE - 3):
                continue
            win = np.clip(img[i - 3:i + 4, j - 3:j + 4] - background, 0, None)
            yy, xx = np.mgrid[i - 3:i + 4, j - 3:j + 4] + 0.5
            offsets.append(((win * xx).sum() / win.sum() - x, (win * yy).sum() / win.sum() - y))
    offsets = np.abs(np.array(offsets))
    assert len(offsets) > 300
    dx, dy = np.median(offsets, axis=0)
    assert dx < 0.3 and dy < 0.3 and dx < 1.4 * dy


def test_png_format(tmp_path):
    out = make_synthetic("vesicles", 2, 96, output=tmp_path / "v", image_format="png")
    img = cv2.imread(str(out / "images" / "vesicles_0000.png"), -1)
    assert img.dtype == np.uint8 and img.shape == (96, 96)
    data = json.loads((out / "annotations" / "train.json").read_text())
    assert data["images"][0]["file_name"] == "vesicles_0000.png"


def test_unit_and_pixel_size(tmp_path):
    out = make_synthetic("vesicles", 1, 96, output=tmp_path / "v", unit="A", split="train=1")
    meta = yaml.safe_load((out / "dataset.yaml").read_text())
    assert (meta["pixel_size"], meta["unit"]) == (20.0, "A")
    np.testing.assert_array_equal(
        tifffile.imread(out / "images" / "vesicles_0000.tif"),
        generate_image("vesicles", size=96).image,
    )
    with pytest.raises(ValueError, match="choose a pixel size between"):
        generate_image("atoms", pixel_size=0.001)
    with pytest.raises(ValueError, match="unit 'furlong'"):
        generate_image("atoms", pixel_size=1.0, unit="furlong")
    with pytest.raises(ValueError, match="unknown synthetic kind 'cells'"):
        generate_image("cells")


def test_split_parsing_and_allocation(tmp_path):
    assert parse_split("train=3,val=1") == {"train": 0.75, "val": 0.25}
    assert parse_split(None) == {"train": 0.6, "val": 0.2, "test": 0.2}
    for bad in ("train", "train=x", "train=-1", "train=0,val=0", "a b=1", "train=1,train=2"):
        with pytest.raises(ValueError):
            parse_split(bad)
    for num in range(1, 12):
        counts = _allocate(num, parse_split(None))
        assert sum(counts.values()) == num
    out = make_synthetic("atoms", 3, 64, output=tmp_path / "a", split="train=1,val=0")
    assert [p.name for p in (out / "annotations").iterdir()] == ["train.json"]


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "a"
    out.mkdir()  # an empty folder is fine
    make_synthetic("atoms", 1, 64, output=out, split="train=1")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic("atoms", 1, 64, output=out)
    (out / "stale.txt").write_text("old")
    make_synthetic("atoms", 2, 64, output=out, overwrite=True, split="train=1")
    assert not (out / "stale.txt").exists() and len(list((out / "images").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    kind = SYNTHETIC_KINDS["atoms"]
    calls = []

    def flaky(rng, size, scale):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("detector unplugged")
        return kind.generate(rng, size, scale)

    monkeypatch.setitem(SYNTHETIC_KINDS, "atoms", dataclasses.replace(kind, generate=flaky))
    with pytest.raises(RuntimeError, match="unplugged"):
        make_synthetic("atoms", 5, 64, output=tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    # an existing data set survives a failed overwrite
    monkeypatch.setitem(SYNTHETIC_KINDS, "atoms", kind)
    make_synthetic("atoms", 1, 64, output=tmp_path / "old", split="train=1")
    before = _files(tmp_path / "old")
    calls.clear()
    monkeypatch.setitem(SYNTHETIC_KINDS, "atoms", dataclasses.replace(kind, generate=flaky))
    with pytest.raises(RuntimeError):
        make_synthetic("atoms", 5, 64, output=tmp_path / "old", overwrite=True)
    assert _files(tmp_path / "old") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_cli", REPO / "tools" / "make_synthetic.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = tmp_path / "rods"
    cli.main(["--kind", "nanorods", "--num", "2", "--size", "96", "--output", str(out), "--quiet"])
    assert "wrote" in capsys.readouterr().out
    assert (out / "annotations" / "train.json").is_file()
    with pytest.raises(SystemExit, match="not empty"):
        cli.main(
            ["--kind", "nanorods", "--num", "2", "--size", "96", "--output", str(out), "--quiet"]
        )
    with pytest.raises(SystemExit):
        cli.main(["--kind", "cells"])


# ---- private helpers, tested directly ----


def _draw(points: list[tuple[int, int]], shape=(9, 9)) -> np.ndarray:
    sk = np.zeros(shape, dtype=bool)
    for r, c in points:
        sk[r, c] = True
    return sk


def test_crossing_number():
    line = _draw([(4, c) for c in range(1, 8)])
    cn = crossing_number(line)
    assert cn[4, 1] == cn[4, 7] == 1 and (cn[4, 2:7] == 2).all()
    tee = _draw([(4, c) for c in range(1, 8)] + [(r, 4) for r in range(5, 8)])
    assert crossing_number(tee)[4, 4] == 3
    stairs = _draw([(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4)])
    cn = crossing_number(stairs)
    assert cn[1, 1] == 1 and cn[3, 4] == 1 and (cn[stairs][1:-1] == 2).all()


def test_prune_spurs_keeps_long_branches():
    shape = (30, 30)
    trunk = [(15, c) for c in range(2, 28)]
    spur = [(r, 10) for r in range(16, 18)]  # 2 pixels
    branch = [(r, 20) for r in range(16, 28)]  # 12 pixels
    pruned = prune_spurs(_draw(trunk + spur + branch, shape), 5)
    assert not pruned[16:18, 10].any()
    assert pruned[16:28, 20].all() and pruned[15, 3:27].all()


def test_bandpass_noise_period():
    field = bandpass_noise(np.random.default_rng(0), (256, 256), 16.0)
    assert field.mean() == pytest.approx(0, abs=1e-9) and field.std() == pytest.approx(1)
    power = np.abs(np.fft.fft2(field)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256), indexing="ij")
    k = np.hypot(fx, fy)
    mean_k = (k * power).sum() / power.sum()
    assert mean_k == pytest.approx(1 / 16, rel=0.05)
