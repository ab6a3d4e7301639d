"""tools/predict.py as a user runs it: a folder with a good and a corrupt file."""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from emdet.data.io import write_tiff
from emdet.data.synthetic import generate_image


def test_predict_cli_writes_everything(tmp_path, h, random_weights):
    images = tmp_path / "images"
    images.mkdir()
    write_tiff(images / "grid_01.tif", generate_image("vesicles", 0, 0, 320).image,
               pixel_size=2.0, unit="nm")
    (images / "grid_02.tif").write_bytes(b"not a tiff at all")
    out = tmp_path / "out"

    def command(output, weights):
        return [
            sys.executable, str(h.REPO / "tools/predict.py"),
            "--config-file", str(h.QUICK), "--input", str(images), "--output", str(output),
            "--tile", "256", "--overlap", "64", "--score-threshold", "0.2", "--labelme",
            "--classes", "vesicle_large,vesicle_small,hole", "--quiet",
            "MODEL.WEIGHTS", str(weights), "MODEL.DEVICE", "cpu",
        ]

    result = subprocess.run(command(out, random_weights), capture_output=True, text=True, cwd=tmp_path, timeout=600,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "predicted 1 images" in result.stdout and "images/s" in result.stdout
    coco = json.loads((out / "predictions.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["grid_01.tif"]
    assert coco["images"][0]["pixel_size"] == 2.0 and coco["images"][0]["unit"] == "nm"
    assert coco["info"]["settings"]["tile"] == 256
    assert all(a["score"] >= 0.2 for a in coco["annotations"])
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["grid_02.tif"] and rows[0]["reason"]
    assert (out / "overlays" / "grid_01.png").is_file()
    assert (out / "labelme" / "grid_01.json").is_file()

    # The same command in-process with a checkpoint that is not there: a one-line error.
    spec = importlib.util.spec_from_file_location("predict_tool", h.REPO / "tools/predict.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit, match="missing.pth does not exist"):
        tool.cli(command(tmp_path / "out2", tmp_path / "missing.pth")[2:])
