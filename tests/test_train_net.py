"""tools/train_net.py as a user runs it: trains, evaluates per class, resumes after a kill."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("datasets")
    make_synthetic("vesicles", num=6, size=128, seed=3, output=root / "vesicles_synth",
                   split={"train": 0.5, "val": 0.5})
    return root


def _cmd(out_dir, *extra, resume=False):
    cmd = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(QUICK)]
    if resume:
        cmd.append("--resume")
    return cmd + ["OUTPUT_DIR", str(out_dir), "INPUT.MIN_SIZE_TRAIN", "(128,)",
                  "INPUT.MIN_SIZE_TEST", "128", *extra]


def _env(data_root):
    return dict(os.environ, EMDET_DATASETS=str(data_root), PYTHONUNBUFFERED="1")


def _iterations(out_dir: Path) -> list[int]:
    lines = (out_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if '"total_loss"' in line]


def test_trains_and_reports_per_class_ap(tmp_path, data_root):
    out = tmp_path / "run"
    result = subprocess.run(
        _cmd(out, "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2", "TEST.EVAL_PERIOD", "0"),
        env=_env(data_root), capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    assert _iterations(out)[-1] == 3  # iterations 0..3
    log = result.stdout + result.stderr
    assert "Per-category segm AP" in log and "vesicle_small" in log and "hole" in log
    # the score threshold for counts, calibrated on the test set, beside the weights
    assert "calibrated score threshold" in log
    calibrated = json.loads((out / "score_threshold.json").read_text())
    assert 0 <= calibrated["threshold"] <= 1 and calibrated["dataset"] == "vesicles_synth_val"
    # progress from the first iteration; environment, config and model only in the log file
    assert re.search(r"iter: 0 +total_loss", result.stdout)
    saved = (out / "log.txt").read_text()
    for long_record in ("Environment info", "Running with full config", "GeneralizedRCNN("):
        assert long_record not in result.stdout and long_record in saved, long_record


def test_resume_after_kill_continues_the_schedule(tmp_path, data_root):
    out = tmp_path / "run"
    opts = ["SOLVER.MAX_ITER", "16", "SOLVER.CHECKPOINT_PERIOD", "3", "SOLVER.WARMUP_ITERS", "2"]
    proc = subprocess.Popen(_cmd(out, *opts), env=_env(data_root), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "model_0000005.pth"  # written after the 6th iteration (index 5)
    deadline = time.time() + 300

    def logged_9() -> bool:  # iteration 9 is logged after checkpoint 8: resuming repeats it
        metrics = out / "metrics.json"
        return metrics.exists() and '"iteration": 9' in metrics.read_text()

    while not (checkpoint.exists() and logged_9()) and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "training never reached its second checkpoint"
    assert not (out / "model_final.pth").exists(), "killed too late to test resuming"
    last = (out / "last_checkpoint").read_text().strip()
    resume_from = int(last[len("model_"):-len(".pth")]) + 1

    result = subprocess.run(_cmd(out, *opts, resume=True), env=_env(data_root), cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"Loading from {out / last}" in log
    assert f"Starting training from iteration {resume_from}" in log
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    iterations = _iterations(out)
    assert iterations[-1] == 15
    # every logged iteration appears once, although the killed run logged some after its last
    # checkpoint that the resumed run repeated (EMDET.LOG_PERIOD 5: iterations 4, 9, 14, 15)
    assert iterations == sorted(set(iterations)), iterations
    assert not list(out.glob(".*.emdet-tmp")), "a checkpoint was left half-written"


def test_a_finished_run_trains_on_with_a_higher_max_iter_and_shows_the_val_metric(
        tmp_path, data_root):
    out = tmp_path / "run"
    opts = ["SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "2", "EMDET.LOG_PERIOD", "1"]
    first = subprocess.run(_cmd(out, "SOLVER.MAX_ITER", "3", *opts), env=_env(data_root),
                           capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    # the progress line carries the latest validation figure once there is one
    assert re.search(r"iter: 2 .*val segm/AP \d+\.\d @ 1", first.stdout), first.stdout[-2000:]
    again = subprocess.run(_cmd(out, "SOLVER.MAX_ITER", "5", *opts, resume=True),
                           env=_env(data_root), capture_output=True, text=True, cwd=tmp_path,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Starting training from iteration 3" in again.stdout + again.stderr
    assert _iterations(out) == [0, 1, 2, 3, 4]


def test_config_error_names_key_and_file(tmp_path, data_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{QUICK}"\nSOLVER:\n  MAX_ITERS: 3\n')
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(bad)],
        env=_env(data_root), capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode != 0
    assert "SOLVER.MAX_ITERS" in result.stderr and "bad.yaml" in result.stderr


def test_unregistered_dataset_is_explained(tmp_path, data_root):
    result = subprocess.run(
        _cmd(tmp_path / "x", "DATASETS.TRAIN", "('nanorods_typo_train',)"),
        env=_env(data_root), capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode != 0
    assert "nanorods_typo_train" in result.stderr and "vesicles_synth_train" in result.stderr


def test_rle_dataset_trains_without_a_mask_format_setting(tmp_path, data_root):
    """Masks given as RLE (mask converters, CVAT, predictions) once stopped training at
    iteration 0 ("Cannot create polygons") until INPUT.MASK_FORMAT bitmask was set by hand."""
    import shutil

    import numpy as np
    from pycocotools import mask as mask_util

    root = tmp_path / "datasets"
    shutil.copytree(data_root / "vesicles_synth", root / "vesicles_synth")
    for split in ("train", "val"):  # val: the evaluator's threshold matches against RLE
        ann = root / "vesicles_synth" / "annotations" / f"{split}.json"
        coco = json.loads(ann.read_text())
        size = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
        for a in coco["annotations"]:
            h, w = size[a["image_id"]]
            rle = mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))
            assert mask_util.decode(rle).sum() > 0
            a["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        ann.write_text(json.dumps(coco))
    out = tmp_path / "run"
    result = subprocess.run(
        _cmd(out, "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "0"),
        env=_env(root), capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "INPUT.MASK_FORMAT bitmask" in log
    assert "MASK_FORMAT: bitmask" in (out / "config.yaml").read_text()
    assert (out / "model_final.pth").is_file()
    assert (out / "score_threshold.json").is_file()  # matched against RLE annotations
    assert np.isfinite([json.loads(x)["total_loss"] for x in
                        (out / "metrics.json").read_text().splitlines()
                        if '"total_loss"' in x]).all()
