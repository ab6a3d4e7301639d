"""tools/train_unet.py, detect_points.py, segment.py and compare_segmentation.py as a user runs
them, on tiny synthetic data: outputs, multi-frame TIFFs, bad files listed while the rest runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ["MODEL.BLOCKS", "3", "MODEL.FEATURES", "4", "MODEL.DEVICE", "cpu",
        "INPUT.CROP_SIZE", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2"]


def _run(tool: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny graphene and meron data sets, one trained tiny model of each, and odd inputs."""
    from emdet.data.io import read_image, write_tiff
    from emdet.data.synthetic import make_synthetic
    from emdet.dense.config import load_unet_config
    from emdet.dense.data import load_dense_samples
    from emdet.dense.train import train_model

    root = tmp_path_factory.mktemp("tools")
    graphene = make_synthetic("graphene", num=4, size=64, seed=2, output=root / "graphene_synth",
                              split={"train": 0.5, "val": 0.5})
    merons = make_synthetic("merons", num=3, size=64, seed=2, output=root / "merons_synth")
    models = {}
    for name, folder in (("graphene_contamination", graphene), ("merons_heatmap", merons)):
        cfg = load_unet_config(REPO / "configs/unet" / f"{name}.yaml",
                               ["DATASET.DIR", str(folder), *TINY])
        samples, classes = load_dense_samples(cfg, splits=None)
        train_model(cfg, samples, classes, root / name, progress=False)
        models[name] = root / name / "model_final.pth"
    frames = np.stack([read_image(p)[0] for p in sorted((merons / "images").glob("*.tif"))])
    series = write_tiff(root / "series.tif", frames)  # a 3-frame time series
    bad = root / "corrupt.tif"
    bad.write_bytes(b"II*\x00 not really a tiff")
    return {"root": root, "graphene": graphene, "merons": merons, "models": models,
            "series": series, "bad": bad}


def test_train_unet_cli_trains_evaluates_and_explains_errors(data, tmp_path):
    cfg = REPO / "configs/unet/graphene_contamination.yaml"
    out = tmp_path / "run"
    r = _run("train_unet.py", "--config-file", cfg, "--quiet", "DATASET.DIR", data["graphene"],
             "OUTPUT_DIR", out, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"jaccard", "accuracy", "jaccard_contamination"} <= set(metrics)
    r = _run("train_unet.py", "--config-file", cfg, "SOLVER.MAX_ITERS", "3", cwd=tmp_path)
    assert r.returncode != 0 and "SOLVER.MAX_ITERS" in r.stderr and "Traceback" not in r.stderr


def test_detect_points_frame_by_frame_with_a_bad_file(data, tmp_path):
    out = tmp_path / "points"
    single = sorted((data["merons"] / "images").glob("*.tif"))[0]
    r = _run("detect_points.py", "--config-file", REPO / "configs/unet/merons_heatmap.yaml",
             "MODEL.WEIGHTS", data["models"]["merons_heatmap"], "HEATMAP.THRESHOLD", "0.01",
             "--input", data["series"], single, data["bad"], "--output", out, "--quiet",
             cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "failures.csv" in r.stderr
    failures = _rows(out / "failures.csv")
    assert [Path(f["file"]).name for f in failures] == ["corrupt.tif"]
    rows = _rows(out / "points" / "series.csv")
    assert list(rows[0]) == ["frame", "x", "y", "x_nm", "y_nm", "class", "score"]
    assert {int(r["frame"]) for r in rows} == {0, 1, 2}
    assert {r["class"] for r in rows} <= {"meron", "antimeron"}
    # the series was written without a pixel size: no nm, and the console says so
    assert all(r["x_nm"] == r["y_nm"] == "" for r in rows)
    assert "series.tif" in r.stderr and "no pixel size" in r.stderr
    # the single image is calibrated: positions in nm are its pixels times its pixel size
    from emdet.data.io import read_image

    pixel = read_image(single)[1].pixel_size
    assert pixel is not None and pixel > 0
    own = _rows(out / "points" / f"{single.stem}.csv")
    tol = 0.006 * pixel  # x, y are written to 0.01 px
    assert own and all(float(p["x_nm"]) == pytest.approx(float(p["x"]) * pixel, abs=tol)
                       and float(p["y_nm"]) == pytest.approx(float(p["y"]) * pixel, abs=tol)
                       for p in own)
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == sorted(["series_f0000.png", "series_f0001.png", "series_f0002.png",
                               f"{single.stem}.png"])
    summary = _rows(out / "summary.csv")
    assert len(summary) == 4 and {"n_meron", "n_antimeron"} <= set(summary[0])
    row = next(s for s in summary if s["name"] == single.stem)
    assert float(row["area_nm2"]) == pytest.approx(64 * 64 * pixel ** 2, rel=1e-4)
    assert float(row["density_meron_per_nm2"]) == pytest.approx(
        int(row["n_meron"]) / float(row["area_nm2"]), rel=1e-4)
    assert sum(p["class"] == "meron" for p in own) == int(row["n_meron"])


def test_detect_points_with_lengths_in_nm_lists_uncalibrated_frames(data, tmp_path):
    out = tmp_path / "points_nm"
    single = sorted((data["merons"] / "images").glob("*.tif"))[0]  # 0.5 nm per pixel
    r = _run("detect_points.py", "--config-file", REPO / "configs/unet/merons_heatmap.yaml",
             "MODEL.WEIGHTS", data["models"]["merons_heatmap"], "HEATMAP.THRESHOLD", "0.01",
             "HEATMAP.MIN_DISTANCE_NM", "1.5", "--input", data["series"], single,
             "--output", out, "--quiet", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    failures = _rows(out / "failures.csv")
    assert [(Path(f["file"]).name, f["frame"]) for f in failures] == [
        ("series.tif", "0"), ("series.tif", "1"), ("series.tif", "2")]
    assert all("HEATMAP.MIN_DISTANCE_NM" in f["error"] for f in failures)
    # the calibrated image is done, as with MIN_DISTANCE 3 px (1.5 nm at 0.5 nm)
    px = tmp_path / "points_px"
    _run("detect_points.py", "--config-file", REPO / "configs/unet/merons_heatmap.yaml",
         "MODEL.WEIGHTS", data["models"]["merons_heatmap"], "HEATMAP.THRESHOLD", "0.01",
         "--input", single, "--output", px, "--quiet", cwd=tmp_path)
    assert _rows(out / "points" / f"{single.stem}.csv") == _rows(px / "points" /
                                                                   f"{single.stem}.csv")


def test_segment_bragg_and_unet_rank_images(data, tmp_path):
    images = data["graphene"] / "images"
    out = tmp_path / "bragg"
    r = _run("segment.py", "--method", "bragg", "--input", images, data["bad"], "--output", out,
             "--sort-by-fraction", "--quiet", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    fractions = _rows(out / "fractions.csv")
    assert len(fractions) == 4 and all(r["pixel_size_nm"] for r in fractions)  # calibrated
    from emdet.data.io import read_image

    for row in fractions:
        assert float(row["fraction_lattice"]) + float(row["fraction_contamination"]) == \
            pytest.approx(1.0, abs=1e-5)
        image, meta = read_image(row["file"])
        if meta.pixel_size is None:
            assert row["pixel_size_nm"] == row["area_lattice_nm2"] == ""
            continue
        field = image.size * meta.pixel_size ** 2  # the contaminated area in nm^2, as published
        assert float(row["area_contamination_nm2"]) == pytest.approx(
            float(row["fraction_contamination"]) * field, rel=1e-4)
    ranking = _rows(out / "ranking.csv")
    values = [float(r["fraction_lattice"]) for r in ranking]
    assert values == sorted(values, reverse=True) and ranking[0]["rank"] == "1"
    assert (out / "overview.png").is_file() and len(list((out / "masks").iterdir())) == 4
    assert [Path(f["file"]).name for f in _rows(out / "failures.csv")] == ["corrupt.tif"]

    out = tmp_path / "unet"
    r = _run("segment.py", "--method", "unet", "--config-file",
             REPO / "configs/unet/graphene_contamination.yaml", "--weights",
             data["models"]["graphene_contamination"], "--input", images, "--output", out,
             "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"fraction_vacuum", "fraction_lattice", "fraction_contamination"} <= set(
        _rows(out / "fractions.csv")[0])
    assert not (out / "failures.csv").exists()
    import cv2

    mask = cv2.imread(str(next((out / "masks").iterdir())), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (64, 64) and mask.max() <= 2


def test_compare_segmentation_writes_a_table(data, tmp_path):
    out = tmp_path / "cmp"
    r = _run("compare_segmentation.py", "--config-file",
             REPO / "configs/unet/graphene_contamination.yaml", "--folds", "2", "--output", out,
             "--quiet", "DATASET.DIR", data["graphene"], *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (out / "table.md").read_text()
    for metric in ("Accuracy", "Balanced accuracy", "Jaccard", "F1", "Precision", "Recall"):
        assert f"| {metric} |" in table
    assert "Bragg parameters" in table and (out / "bragg_folds.csv").is_file()
    # the tuned filter goes straight into segment.py
    params = json.loads((out / "bragg_params.json").read_text())
    assert set(params) == {"sigma", "g_thresh", "m_thresh"}
    r = _run("segment.py", "--method", "bragg", "--bragg-params", out / "bragg_params.json",
             "--input", data["graphene"] / "images", "--output", tmp_path / "seg", "--quiet",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_rows(tmp_path / "seg" / "fractions.csv")) == 4
