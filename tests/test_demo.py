"""tools/demo.py end to end on a tiny budget: every step's output exists and is what it says."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def test_demo_trains_evaluates_predicts_and_reports(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(REPO / "tools/demo.py"), "--output", str(out), "--iters", "4",
           "--num-images", "6", "--size", "128", "--score-threshold", "0.0"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    for step in range(1, 6):
        assert f"[demo] {step}/5" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bbox", "segm"} <= set(metrics.get("vesicles_synth_val", metrics))  # one set: flat
    test = json.loads((out / "datasets/vesicles_synth/annotations/test.json").read_text())
    preds = json.loads((out / "predict/predictions.json").read_text())
    # the held-out images, and nothing else, were predicted
    assert sorted(Path(im["file_name"]).name for im in preds["images"]) == sorted(
        Path(im["file_name"]).name for im in test["images"])
    assert len(list((out / "predict/overlays").glob("*.png"))) == len(test["images"])
    gt = pd.read_csv(out / "stats_ground_truth/instances.csv")
    assert len(gt) == len(test["annotations"]) and gt["equivalent_diameter_nm"].gt(0).all()
    pred = pd.read_csv(out / "stats/instances.csv")
    assert len(pred) == len(preds["annotations"])  # score threshold 0 keeps them all
    assert (out / "stats/report.html").stat().st_size > 10_000
    for name in ("vesicle_large", "vesicle_small", "hole"):
        annotated = int((gt["category"] == name).sum())
        assert any(line.split()[1:2] == [name] and line.split()[3] == str(annotated)
                   for line in log.splitlines() if line.startswith("[demo]   "))
