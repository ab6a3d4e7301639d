"""Broken annotations, predictions and options given to ``tools/score_instances.py`` and
``tools/classical_baseline.py``: a message naming the file and the field, never a traceback,
and no half-written output."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.badinput.harness import assert_refused, run_tool, snapshot

SQUARE = [10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]


def _gt() -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "particle"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [list(SQUARE)],
                         "bbox": [10.0, 10.0, 30.0, 30.0], "area": 900.0, "iscrowd": 0}],
    }


def _pred() -> dict:
    data = _gt()
    data["annotations"][0]["score"] = 0.9
    return data


def _set(data: dict, path: str, value) -> dict:
    keys = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]
    node = data
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()

# case -> (which file, path, value, words the message must contain)
CASES = {
    "pred_without_score": ("pred", "annotations.0.score", _DELETE, ("score",)),
    "pred_nan_score": ("pred", "annotations.0.score", float("nan"), ("NaN",)),
    "pred_image_not_annotated": ("pred", "images.0.file_name", "zzz.png", ("zzz.png",)),
    "pred_polygon_nan": ("pred", "annotations.0.segmentation.0.3", float("nan"), ("NaN",)),
    "pred_rle_wrong_size": ("pred", "annotations.0.segmentation",
                            {"size": [8, 8], "counts": [0, 64]}, ("segmentation",)),
    "pred_images_not_a_list": ("pred", "images", {"a": 1}, ("images",)),
    "gt_without_images": ("gt", "images", _DELETE, ("images",)),
    "gt_without_height": ("gt", "images.0.height", _DELETE, ("height",)),
}


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))  # NaN stays a NaN literal, as a careless writer leaves it
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_instances_refuses_broken_files(tmp_path, case):
    which, path, value, words = CASES[case]
    gt, pred = _gt(), _pred()
    _set(gt if which == "gt" else pred, path, value if value is _DELETE else copy.deepcopy(value))
    out = run_tool("score_instances", [
        "--annotations", _write(tmp_path / "gt.json", gt),
        "--predictions", _write(tmp_path / "pred.json", pred),
        "--json", tmp_path / "figures.json"], case=f"score_instances/{case}")
    assert_refused(out, *words)
    assert not (tmp_path / "figures.json").exists()


@pytest.mark.parametrize("args,words", [
    (["--score-threshold", "2"], ("--score-threshold",)),
    (["--max-dets", "0"], ("--max-dets",)),
    (["--weights", "nope.pth"], ("nope.pth",)),
], ids=["threshold_2", "max_dets_0", "weights_without_threshold"])
def test_score_instances_refuses_bad_options(tmp_path, args, words):
    out = run_tool("score_instances", [
        "--annotations", _write(tmp_path / "gt.json", _gt()),
        "--predictions", _write(tmp_path / "pred.json", _pred()), *args],
        case=f"score_instances/{args[0]}")
    assert_refused(out, *words)


def test_score_instances_accepts_valid_files_and_scores_them(tmp_path):
    out = run_tool("score_instances", [
        "--annotations", _write(tmp_path / "gt.json", _gt()),
        "--predictions", _write(tmp_path / "pred.json", _pred()),
        "--json", tmp_path / "figures.json"], case="score_instances/valid")
    assert out.code == 0, out.message
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["f1"] == 1 and figures["ap"] == pytest.approx(100)


def _dataset(tmp_path: Path, gt: dict) -> Path:
    (tmp_path / "ds" / "images").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ds" / "annotations").mkdir(exist_ok=True)
    img = np.full((64, 64), 200, np.uint8)
    img[10:40, 10:40] = 50
    Image.fromarray(img).save(tmp_path / "ds" / "images" / "a.png")
    return _write(tmp_path / "ds" / "annotations" / "train.json", gt)


@pytest.mark.parametrize("case", ["two_categories", "missing_image", "params_unknown_key",
                                  "params_bad_value", "output_is_a_file", "both_train_and_params"])
def test_classical_baseline_refuses_bad_input(tmp_path, case):
    gt = _gt()
    extra: list = []
    output = tmp_path / "out"
    if case == "two_categories":
        gt["categories"].append({"id": 2, "name": "hole"})
    elif case == "missing_image":
        gt["images"][0]["file_name"] = "missing.png"
    train = _dataset(tmp_path, gt)
    if case == "missing_image":
        (tmp_path / "ds" / "images" / "a.png").unlink()
    args = ["--train", train]
    if case.startswith("params"):
        value = {"polarity": "dark", "sigma": 1} if case == "params_unknown_key" else {
            "polarity": "dark", "block": 4}
        params = _write(tmp_path / "params.json", {"params": value})
        args = ["--params", params]
    elif case == "both_train_and_params":
        args += ["--params", _write(tmp_path / "params.json", {"params": {}})]
    elif case == "output_is_a_file":
        output.write_text("not a folder")
    words = {"two_categories": ("2 categories",), "missing_image": ("missing.png",),
             "params_unknown_key": ("sigma",), "params_bad_value": ("block=4",),
             "output_is_a_file": ("folder",), "both_train_and_params": ("exactly one",)}[case]
    before = snapshot(tmp_path / "ds")
    out = run_tool("classical_baseline", [*args, "--apply", train, "--output", output, *extra],
                   case=f"classical_baseline/{case}")
    assert_refused(out, *words)
    assert snapshot(tmp_path / "ds") == before
    assert not output.is_dir() or not any(output.iterdir())
