"""Broken and hostile dense-model data sets (``tools/train_unet.py``) and synthetic options.

A U-Net data set is a folder of images, label masks and COCO files, often copied from a
colleague. Each case breaks one file of a valid synthetic graphene set; ``train_unet.py`` must
stop before training with a message naming the file (and the field), must not read outside the
data set folder (``file_name: ../../secret.tif``), and must leave the data set unchanged.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.harness import REPO, assert_refused, run_tool, snapshot

UNET = REPO / "configs/unet/graphene_contamination.yaml"


@pytest.fixture(scope="module")
def graphene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dense") / "graphene"
    outcome = run_tool("make_synthetic", ["--kind", "graphene", "--num", "3", "--size", "64",
                                          "--output", out, "--quiet"])
    assert outcome.code in (0, None) and outcome.traceback is None, outcome.message
    return out


def _coco(root: Path, split: str = "train") -> tuple[Path, dict]:
    path = root / "annotations" / f"{split}.json"
    return path, json.loads(path.read_text())


def _edit_image(field: str, value):
    def mutate(root: Path) -> str:
        path, data = _coco(root)
        if value is _DELETE:
            del data["images"][0][field]
        else:
            data["images"][0][field] = value
        path.write_text(json.dumps(data))
        return "train.json"
    return mutate


_DELETE = object()


def _write_mask(array: np.ndarray):
    def mutate(root: Path) -> str:
        import cv2

        cv2.imwrite(str(root / "masks" / "graphene_0000.png"), array)
        return "graphene_0000.png"
    return mutate


def _remove(rel: str):
    def mutate(root: Path) -> str:
        (root / rel).unlink()
        return Path(rel).name
    return mutate


def _bytes(rel: str, data: bytes | None = None, cut: float | None = None):
    def mutate(root: Path) -> str:
        target = root / rel
        target.write_bytes(data if data is not None else
                           target.read_bytes()[: int(target.stat().st_size * cut)])
        return Path(rel).name
    return mutate


def _secret_outside(root: Path) -> str:
    shutil.copy(root / "images" / "graphene_0000.tif", root.parent / "secret.tif")
    return _edit_image("file_name", "../../secret.tif")(root)


#: case -> (mutation returning the file name the message must name, extra words)
CASES = {
    "file_name_climbs_out": (_secret_outside, ["file_name"]),
    "file_name_absolute": (_edit_image("file_name", "/etc/hostname"), ["file_name"]),
    "file_name_missing": (_edit_image("file_name", _DELETE), ["file_name"]),
    "file_name_number": (_edit_image("file_name", 7), ["file_name"]),
    "mask_name_climbs_out": (_edit_image("sem_seg_file_name", "../../../x.png"),
                             ["sem_seg_file_name"]),
    "pixel_size_nan": (_edit_image("pixel_size", float("nan")), ["pixel_size"]),
    "height_missing": (_edit_image("height", _DELETE), ["height"]),
    "annotations_not_json": (_bytes("annotations/train.json", b"{images: ["), ["JSON"]),
    "annotations_not_utf8": (_bytes("annotations/train.json", b'{"images": "\xff"}'),
                             ["UTF-8"]),
    "mask_wrong_size": (_write_mask(np.zeros((32, 48), np.uint8)), ["48x32"]),
    "mask_label_too_high": (_write_mask(np.full((64, 64), 9, np.uint8)), ["label value 9"]),
    "mask_colour": (_write_mask(np.zeros((64, 64, 3), np.uint8)), ["single-channel"]),
    "mask_missing": (_remove("masks/graphene_0000.png"), ["mask"]),
    "mask_not_png": (_bytes("masks/graphene_0000.png", b"GIF89a broken"), ["single-channel"]),
    "image_missing": (_remove("images/graphene_0000.tif"), ["does not exist"]),
    "image_truncated": (_bytes("images/graphene_0000.tif", cut=0.5), ["truncated"]),
    "image_is_text": (_bytes("images/graphene_0000.tif", b"not a tiff\n" * 20), ["TIFF"]),
    "image_empty": (_bytes("images/graphene_0000.tif", b""), ["empty"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_unet_refuses_broken_data_sets(tmp_path, monkeypatch, graphene, case):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data" / "graphene"
    shutil.copytree(graphene, root)
    mutation, needles = CASES[case]
    named = mutation(root)
    before = snapshot(tmp_path / "data")
    outcome = run_tool("train_unet", [
        "--config-file", UNET, "DATASET.DIR", root, "OUTPUT_DIR", tmp_path / "out",
        "SOLVER.MAX_ITER", "1", "MODEL.DEVICE", "cpu",
    ], case=f"dense/train_unet/{case}")
    assert_refused(outcome, named, *needles)
    assert snapshot(tmp_path / "data") == before
    assert not list((tmp_path / "out").rglob("*.pth")) if (tmp_path / "out").exists() else True


#: make_synthetic option case -> (arguments, words the message must contain)
SYNTHETIC = {
    "num_zero": (["--num", "0"], ["--num"]),
    "num_negative": (["--num", "-3"], ["--num"]),
    "size_zero": (["--size", "0"], ["--size"]),
    "size_huge": (["--size", "100000"], ["--size"]),
    "pixel_size_nan": (["--pixel-size", "nan"], ["pixel size"]),
    "pixel_size_negative": (["--pixel-size", "-1"], ["pixel size"]),
    "split_bad_syntax": (["--split", "train:0.5"], ["--split"]),
    "split_negative": (["--split", "train=0.8,val=-0.2"], ["split", "val"]),
    "split_all_zero": (["--split", "train=0,val=0"], ["split"]),
    "split_bad_name": (["--split", "../up=1"], ["split name"]),
    "unit_unknown": (["--pixel-size", "2", "--unit", "parsec"], ["parsec"]),
    "output_is_a_file": (["--output", "{file}"], ["not a folder"]),
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_make_synthetic_refuses_impossible_options(tmp_path, case):
    args, needles = SYNTHETIC[case]
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    args = [a.replace("{file}", str(notes)) for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out")]
    before = snapshot(tmp_path)
    outcome = run_tool("make_synthetic", ["--kind", "vesicles", "--quiet", *args],
                       case=f"dense/make_synthetic/{case}")
    assert_refused(outcome, *needles)
    assert snapshot(tmp_path) == before
