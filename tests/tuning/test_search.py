"""Studies: known-answer objective, failures, resume, kill, two workers, real end-to-end."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import emdet  # noqa: F401
from emdet.config import load_config
from emdet.tuning import Detectron2Runner, TuneSettings, load_space, run_study

REPO = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_train_net.py")
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"
SPACE = """
SOLVER.BASE_LR: {type: loguniform, low: 1.0e-3, high: 3.0e-2}
MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE: {type: choice, values: [64, 128]}
"""


def _settings(tmp_path, trials, **kw):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    runner = Detectron2Runner(str(QUICK), script=FAKE)
    return TuneSettings(runner=runner, space=load_space(space_file), trials=trials,
                        output=tmp_path / "out", metric="bbox/AP", **kw)


def _finished(csv):
    frame = pd.read_csv(csv)
    return frame[frame.state.isin(["COMPLETE", "FAIL"])]


def test_study_finds_known_best_records_failures_and_writes_outputs(tmp_path):
    study = run_study(_settings(tmp_path, 12, seed=1), progress=False)
    states = [t.state.name for t in study.trials]
    assert len(states) == 12 and "FAIL" in states and "COMPLETE" in states
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.params["SOLVER.BASE_LR"] > 0.015 for t in failed)
    assert all("exited with 1" in t.user_attrs["error"] for t in failed)
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    expected = 100 - 1e6 * (best.params["SOLVER.BASE_LR"] - 0.004) ** 2 + int(
        json.loads(best.params["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"])) / 1000
    assert best.value == pytest.approx(expected)
    out = tmp_path / "out"
    frame = pd.read_csv(out / "trials.csv")
    assert len(frame) == 12 and "bbox/AP" in frame and "params_SOLVER.BASE_LR" in frame
    assert (out / "metric_vs_trial.png").stat().st_size > 1000
    cfg = load_config(out / "best_config.yaml")
    assert cfg.SOLVER.BASE_LR == pytest.approx(best.params["SOLVER.BASE_LR"])
    assert cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == int(
        json.loads(best.params["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"]))


def test_rerun_continues_the_study(tmp_path):
    first = run_study(_settings(tmp_path, 2), progress=False)
    numbers = [(t.number, t.params) for t in first.trials]
    again = run_study(_settings(tmp_path, 4), progress=False)
    assert len(again.trials) == 4
    assert [(t.number, t.params) for t in again.trials[:2]] == numbers


def _worker(tmp_path, trials, env=None):
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from test_search import _settings; "
        "from emdet.tuning import run_study; from pathlib import Path; "
        f"run_study(_settings(Path({str(tmp_path)!r}), {trials:d}), progress=False)"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, **(env or {})),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_killed_study_resumes_to_the_requested_count(tmp_path):
    proc = _worker(tmp_path, 5, {"FAKE_TRAIN_SLEEP": "1.5"})
    db = tmp_path / "out" / "tune.db"
    deadline = time.time() + 120
    while time.time() < deadline:
        if len(list((tmp_path / "out").glob("trial_*/metrics.json"))) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert db.exists()
    study = run_study(_settings(tmp_path, 5), progress=False)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(finished) == 5
    assert len(_finished(tmp_path / "out" / "trials.csv")) == 5


def test_two_workers_share_one_study(tmp_path):
    (tmp_path / "out").mkdir()
    run_study(_settings(tmp_path, 1), progress=False)  # create the study and its tables first
    workers = [_worker(tmp_path, 6, {"FAKE_TRAIN_SLEEP": "0.5"}) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    study = run_study(_settings(tmp_path, 6), progress=False)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(finished) == 6  # a worker starts no trial beyond the count (surplus: pruned)
    assert all(t.user_attrs.get("surplus") for t in study.trials if t not in finished)
    assert len({t.number for t in study.trials}) == len(study.trials)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("datasets")
    make_synthetic("vesicles", num=4, size=128, seed=2, output=root / "vesicles_synth",
                   split={"train": 0.5, "val": 0.5})
    return root


def test_real_search_end_to_end_and_best_config_retrains_to_its_metric(tmp_path, data_root):
    space = tmp_path / "space.yaml"
    space.write_text("SOLVER.BASE_LR: {type: loguniform, low: 1.0e-3, high: 1.0e-2}\n")
    env = dict(os.environ, EMDET_DATASETS=str(data_root))
    common = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
              "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "1", "TEST.DETECTIONS_PER_IMAGE", "20"]
    out = tmp_path / "tune"
    cmd = [sys.executable, str(REPO / "tools/tune_net.py"), "--config-file", str(QUICK),
           "--space", str(space), "--trials", "2", "--output", str(out), "--metric", "bbox/AP50",
           "--no-progress", *common]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out / "trials.csv")
    assert list(frame.state) == ["COMPLETE", "COMPLETE"]
    best = frame.loc[frame["bbox/AP50"].idxmax()]
    retrain = tmp_path / "retrain"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/train_net.py"), "--config-file",
         str(out / "best_config.yaml"), "OUTPUT_DIR", str(retrain)],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    from emdet.tuning.search import read_metrics

    assert read_metrics(retrain / "metrics.json")["bbox/AP50"] == pytest.approx(
        best["bbox/AP50"], abs=1e-6)


UNET_TINY = ["MODEL.BLOCKS", "3", "MODEL.FEATURES", "4", "MODEL.DEVICE", "cpu",
             "INPUT.CROP_SIZE", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3"]


@pytest.fixture(scope="module")
def graphene_root(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("unet_datasets")
    make_synthetic("graphene", num=4, size=64, seed=2, output=root / "graphene_synth",
                   split={"train": 0.5, "val": 0.5}, progress=False)
    return root


def test_unet_configs_are_recognised():
    from emdet.tuning import is_unet_config

    assert is_unet_config(REPO / "configs/unet/graphene_contamination.yaml")
    assert not is_unet_config(QUICK)


def test_shipped_spaces_check_against_their_configs():
    from emdet.tuning import UNetRunner

    load_space(REPO / "configs/search/vesicles.yaml").check(
        lambda opts: Detectron2Runner(str(QUICK)).load_config(opts))
    unet = UNetRunner(str(REPO / "configs/unet/graphene_contamination.yaml"))
    space = load_space(REPO / "configs/search/unet_graphene.yaml")
    space.check(unet.load_config)
    assert {k: len(v) for k, v in space.grid().items()} == {
        "MODEL.BLOCKS": 3, "MODEL.FEATURES": 3, "SOLVER.BASE_LR": 3}


def test_unet_space_with_a_detectron2_key_is_rejected_before_training(tmp_path):
    from emdet.tuning import SpaceError, UNetRunner

    space = tmp_path / "space.yaml"
    space.write_text("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE: {type: choice, values: [64]}\n")
    runner = UNetRunner(str(REPO / "configs/unet/graphene_contamination.yaml"))
    settings = TuneSettings(runner=runner, space=load_space(space), trials=1,
                            output=tmp_path / "out")
    with pytest.raises(SpaceError, match=r"space\.yaml.*MODEL\.ROI_HEADS"):
        run_study(settings, progress=False)
    assert not list((tmp_path / "out").glob("trial_*"))


@pytest.mark.parametrize("folds", [0, 2])
def test_unet_grid_search_end_to_end_and_best_config_retrains(tmp_path, graphene_root, folds):
    """tools/tune_net.py on a U-Net config: grid over learning rates, best config retrains."""
    space = tmp_path / "space.yaml"
    space.write_text("SOLVER.BASE_LR: {type: choice, values: [1.0e-4, 3.0e-2]}\n")
    env = dict(os.environ, EMDET_DATASETS=str(graphene_root))
    out = tmp_path / "tune"
    cmd = [sys.executable, str(REPO / "tools/tune_net.py"), "--config-file",
           str(REPO / "configs/unet/graphene_contamination.yaml"), "--space", str(space),
           "--sampler", "grid", "--trials", "2", "--output", str(out), "--no-progress",
           *(["--folds", str(folds)] if folds else []), *UNET_TINY]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(out / "trials.csv")
    assert list(frame.state) == ["COMPLETE", "COMPLETE"] and "jaccard" in frame
    assert sorted(frame["params_SOLVER.BASE_LR"].astype(float)) == [1.0e-4, 3.0e-2]
    assert frame["jaccard"].between(0, 1).all()
    if folds:
        assert (out / "trial_0000" / "cv_summary.csv").is_file()
        return
    best = frame.loc[frame["jaccard"].idxmax()]
    text = (out / "best_config.yaml").read_text()
    assert "tools/train_unet.py" in text
    retrain = tmp_path / "retrain"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/train_unet.py"), "--config-file",
         str(out / "best_config.yaml"), "--quiet", "OUTPUT_DIR", str(retrain)],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((retrain / "metrics.json").read_text())
    assert metrics["jaccard"] == pytest.approx(best["jaccard"], abs=1e-9)
