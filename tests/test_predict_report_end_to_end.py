"""Issue "batch inference": a trained quick model predicts a folder holding one 4096 px
micrograph and one corrupt file; stats_report turns the predictions into CSVs and a report.

Slow (7 minutes on 2 shared CPU cores: a short training, then 484 tiles of 256 px):
``pytest -m slow tests/test_predict_report_end_to_end.py``.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


def _run(*cmd, env, cwd):
    result = subprocess.run([sys.executable, *map(str, cmd)], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_4k_folder_with_a_corrupt_file_to_report(tmp_path):
    from emdet.data.io import read_image, write_tiff
    from emdet.data.synthetic import generate_image, make_synthetic

    root = tmp_path / "datasets"
    make_synthetic("vesicles", num=8, size=256, seed=0, output=root / "vesicles_synth",
                   split={"train": 0.75, "val": 0.25})
    env = dict(os.environ, EMDET_DATASETS=str(root), PYTHONUNBUFFERED="1")
    model = tmp_path / "model"
    _run(REPO / "tools/train_net.py", "--config-file", QUICK, "OUTPUT_DIR", model,
         "SOLVER.MAX_ITER", "150", "SOLVER.STEPS", "(120,)", "TEST.EVAL_PERIOD", "0",
         env=env, cwd=tmp_path)

    # a 4096 x 4096 micrograph: a 16 x 16 mosaic of 256 px synthetic tiles, 2 nm pixels
    tiles = [generate_image("vesicles", 7, k, 256).image for k in range(256)]
    big = np.block([[tiles[16 * r + c] for c in range(16)] for r in range(16)])
    folder = tmp_path / "micrographs"
    folder.mkdir()
    write_tiff(folder / "grid_4k.tif", big, pixel_size=2.0, unit="nm")
    (folder / "grid_broken.tif").write_bytes(b"II*\x00" + bytes(100))  # truncated TIFF
    assert read_image(folder / "grid_4k.tif")[0].shape == (4096, 4096)

    out = tmp_path / "predict"
    log = _run(REPO / "tools/predict.py", "--config-file", QUICK, "--input", folder,
               "--output", out, "--tile", "256", "--overlap", "64", "--score-threshold", "0.5",
               "--quiet", "MODEL.WEIGHTS", model / "model_final.pth", env=env, cwd=tmp_path)
    assert "predicted 1 images" in log and "1 failures" in log
    coco = json.loads((out / "predictions.json").read_text())
    assert [(im["file_name"], im["height"], im["width"], im["pixel_size"], im["unit"])
            for im in coco["images"]] == [("grid_4k.tif", 4096, 4096, 2.0, "nm")]
    anns = coco["annotations"]
    # 256 tiles of ~6 large, ~20 small vesicles and ~6 holes each: thousands of objects
    assert len(anns) > 2000 and all(a["score"] >= 0.5 for a in anns)
    assert all(isinstance(a["segmentation"], dict) and "counts" in a["segmentation"] for a in anns)
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [r["file"] for r in failures] == ["grid_broken.tif"] and failures[0]["reason"]
    assert (out / "overlays/grid_4k.png").stat().st_size > 100_000

    stats = tmp_path / "stats"
    _run(REPO / "tools/stats_report.py", "--input", out / "predictions.json", "--output", stats,
         env=env, cwd=tmp_path)
    inst = pd.read_csv(stats / "instances.csv")
    assert len(inst) == len(anns)
    assert inst["area_px"].sum() == pytest.approx(sum(a["area"] for a in anns), rel=1e-6)
    # physical units from the file's 2 nm pixels
    assert np.allclose(inst["area_nm2"], inst["area_px"] * 4.0)
    assert np.allclose(inst["equivalent_diameter_nm"], 2.0 * np.sqrt(4 * inst["area_px"] / np.pi))
    summary = pd.read_csv(stats / "summary.csv")
    counts = inst.groupby("category").size()
    for _, r in summary.iterrows():
        if r["category"] in counts:
            assert r["count"] == counts[r["category"]]
    html = (stats / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # histograms, counts, an overlay
