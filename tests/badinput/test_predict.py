"""``tools/predict.py`` given impossible folders and options: a message, nothing written.

A batch over thousands of micrographs must not start (or half-start) when it cannot finish
well: ``--output`` a file, an ``--input`` that is not there or holds no image, impossible tile,
overlap, threshold or batch values. Each case must be refused before the model is loaded, with
a message naming the option, and must leave the output location as it was.
"""
from __future__ import annotations

import pytest

from tests.badinput.harness import assert_refused, run_tool, snapshot
from tests.badinput.test_images import _good, _random_weights
from tests.inference.conftest import QUICK


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _random_weights(tmp_path_factory.mktemp("weights"))


#: case -> (how to change the command, words the message must contain)
CASES = {
    "output_is_a_file": ({"output_file": True}, ["out", "is a file"]),
    "input_missing": ({"input": "missing"}, ["missing", "No such image file"]),
    "input_empty_folder": ({"input": "empty"}, ["empty", "no image"]),
    "tile_negative": ({"opts": ["--tile", "-256"]}, ["--tile"]),
    "overlap_too_big": ({"opts": ["--tile", "256", "--overlap", "256"]}, ["--overlap"]),
    "overlap_negative": ({"opts": ["--overlap", "-1"]}, ["--overlap"]),
    "score_threshold_above_one": ({"opts": ["--score-threshold", "1.5"]}, ["--score-threshold"]),
    "score_threshold_nan": ({"opts": ["--score-threshold", "nan"]}, ["--score-threshold"]),
    "batch_size_zero": ({"opts": ["--batch-size", "0"]}, ["--batch-size"]),
    "overlay_size_negative": ({"opts": ["--overlay-size", "-5"]}, ["--overlay-size"]),
    "default_overlap_vs_tile": ({"opts": ["--tile", "64", "--overlap", "80"]}, ["--overlap"]),
    "weights_missing": ({"weights": "nowhere.pth"}, ["nowhere.pth", "does not exist"]),
    "weights_a_folder": ({"weights": "folder"}, ["MODEL.WEIGHTS"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_predict_refuses_before_starting(tmp_path, monkeypatch, weights, case):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EMDET_DATASETS", str(tmp_path / "no_datasets"))
    change, needles = CASES[case]
    images = tmp_path / "images"
    images.mkdir()
    _good(images / "a.tif")
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder").mkdir()
    out = tmp_path / "out"
    if change.get("output_file"):
        out.write_text("my notes\n")
    source = tmp_path / change["input"] if "input" in change else images
    model = tmp_path / change["weights"] if "weights" in change else weights
    before = snapshot(tmp_path)
    outcome = run_tool("predict", [
        "--config-file", QUICK, "--input", source, "--output", out, "--quiet",
        *change.get("opts", []), "MODEL.WEIGHTS", model, "MODEL.DEVICE", "cpu",
    ], case=f"predict/{case}")
    assert_refused(outcome, *needles)
    assert snapshot(tmp_path) == before
    assert out.is_file() if change.get("output_file") else not out.exists()
