"""Hostile conditions: kill -9 and SIGTERM of a tuner, restarts, concurrent writers, PostgreSQL."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import emdet  # noqa: F401
from emdet.config import load_config
from emdet.tuning import Detectron2Runner, TuneSettings, load_space, run_study

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FAKE = HERE / "fake_train_net.py"
WORKER = HERE / "study_worker.py"
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"
SPACE = """
SOLVER.BASE_LR: {type: loguniform, low: 1.0e-3, high: 3.0e-2}
MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE: {type: choice, values: [64, 128]}
"""
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="parent-death signal and /proc are Linux features")


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SPACE)
    return path


def _settings(folder: Path, trials: int, **kw) -> TuneSettings:
    runner = Detectron2Runner(str(QUICK), script=FAKE)
    return TuneSettings(runner=runner, space=load_space(_space(folder)), trials=trials,
                        output=folder / "out", metric="bbox/AP", **kw)


def _popen(cmd, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], env=dict(os.environ, **(env or {})),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _study_process(tmp_path, trials, env=None, seed=0) -> subprocess.Popen:
    """run_study in a separate process (tests/tuning/study_worker.py)."""
    return _popen([sys.executable, WORKER, "study", tmp_path / "out", _space(tmp_path), trials,
                   seed], env)


def _tune_cli(tmp_path, trials, *extra, env=None) -> subprocess.Popen:
    """tools/tune_net.py on the fake trainer."""
    return _popen([sys.executable, REPO / "tools/tune_net.py", "--config-file", QUICK,
                   "--space", _space(tmp_path), "--trials", trials, "--output", tmp_path / "out",
                   "--train-script", FAKE, "--metric", "bbox/AP", "--no-progress", *extra], env)


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaps yet (PID 1 of a container may not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(line.split()[1:2] in (["Z"], ["X"]) for line in status.splitlines()
               if line.startswith("State:"))


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the tuner exited ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _trainers(pids: Path, n: int = 1) -> list[int]:
    """Pids of the fake trainers started so far, once there are at least ``n``."""
    found = sorted(int(p.name) for p in pids.glob("[0-9]*")) if pids.is_dir() else []
    return found if len(found) >= n else []


def _reap(pids: Path, *procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    for pid in _trainers(pids):
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


@linux_only
def test_kill_9_of_the_tuner_also_ends_its_training_process(tmp_path):
    pids = tmp_path / "pids"
    proc = _study_process(tmp_path, 3, {"FAKE_TRAIN_SLEEP": "300", "FAKE_TRAIN_PIDS": str(pids)})
    try:
        (child,) = _wait(lambda: _trainers(pids), 60, "the first trial's training", proc)
        proc.kill()  # SIGKILL: no Python cleanup runs in the tuner
        proc.wait()
        _wait(lambda: _gone(child), 10, f"the orphaned training process {child} to end")
    finally:
        _reap(pids, proc)


@linux_only
def test_sigterm_fails_the_running_trial_and_ends_its_training(tmp_path):
    pids = tmp_path / "pids"
    proc = _tune_cli(tmp_path, 3, env={"FAKE_TRAIN_SLEEP": "300", "FAKE_TRAIN_PIDS": str(pids)})
    try:
        (child,) = _wait(lambda: _trainers(pids), 60, "the first trial's training", proc)
        proc.send_signal(signal.SIGTERM)  # what a batch system sends at the time limit
        assert proc.wait(timeout=60) != 0
        assert _gone(child), f"training process {child} outlived its terminated tuner"
        study = optuna.load_study(study_name=None,
                                  storage=f"sqlite:///{tmp_path / 'out' / 'tune.db'}")
        assert [t.state.name for t in study.trials] == ["FAIL"]
    finally:
        _reap(pids, proc)


def test_worker_tokens_tell_dead_local_tuners_from_live_and_remote_ones():
    from emdet.tuning._process import HOST, is_dead_local_worker, worker_token

    assert not is_dead_local_worker(worker_token())  # this process
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    token = worker_token(proc.pid)
    proc.wait()
    assert is_dead_local_worker(token)
    assert not is_dead_local_worker(f"not-{HOST}:{proc.pid}:1")  # Optuna's heartbeat decides
    assert not is_dead_local_worker(None) and not is_dead_local_worker("garbage")
    if sys.platform.startswith("linux"):  # same pid, another start time: the pid was reused
        pid, start = worker_token().rsplit(":", 2)[1:]
        assert is_dead_local_worker(f"{HOST}:{pid}:{int(start) - 1}")


def _params(study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_resumed_study_draws_new_values_and_a_fresh_one_repeats(tmp_path, sampler):
    run_study(_settings(tmp_path / "a", 3, seed=5, sampler=sampler), progress=False)
    resumed = run_study(_settings(tmp_path / "a", 6, seed=5, sampler=sampler), progress=False)
    assert len(set(_params(resumed))) == 6, "the restarted sampler repeated earlier values"
    fresh = run_study(_settings(tmp_path / "b", 6, seed=5, sampler=sampler), progress=False)
    assert _params(fresh) == _params(resumed)  # values depend on (seed, trial number) only
    other = run_study(_settings(tmp_path / "c", 6, seed=6, sampler=sampler), progress=False)
    assert not set(_params(other)) & set(_params(fresh))


@linux_only
def test_restart_after_kill_9_fails_the_killed_trial_and_draws_new_values(tmp_path):
    pids = tmp_path / "pids"
    proc = _study_process(tmp_path, 6, {"FAKE_TRAIN_SLEEP": "0.3", "FAKE_TRAIN_PIDS": str(pids)})
    try:
        _wait(lambda: _trainers(pids, 3), 120, "the third trial's training", proc)
        proc.kill()
        proc.wait()
    finally:
        _reap(pids, proc)
    study = run_study(_settings(tmp_path, 6), progress=False)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and len(states) == 6
    killed = study.trials[2]
    assert killed.state.name == "FAIL" and "killed" in killed.user_attrs["error"]
    assert len(set(_params(study))) == 6, "the restarted sampler repeated earlier values"
    frame = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert list(frame.state) == states


def test_concurrent_output_writers_never_collide(tmp_path):
    run_study(_settings(tmp_path, 3), progress=False)
    out, go = tmp_path / "out", tmp_path / "go"
    writers = [_popen([sys.executable, WORKER, "write-outputs", out, _space(tmp_path), 4, go])
               for _ in range(2)]
    time.sleep(3)  # both have imported everything and wait for the start signal
    go.touch()
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-2000:]
    assert len(pd.read_csv(out / "trials.csv")) == 3
    assert (out / "metric_vs_trial.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_config(out / "best_config.yaml").SOLVER.BASE_LR > 0
    assert not [p.name for p in out.iterdir() if "tmp" in p.name], "temporary files left"


def test_two_tuners_share_one_postgresql_study(tmp_path, postgres_url):
    study_name, trials = "shared", 6
    workers = [_tune_cli(tmp_path, trials, "--storage", postgres_url, "--study", study_name,
                         env={"FAKE_TRAIN_SLEEP": "1"}) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    from emdet.tuning.search import _storage  # postgresql:// with the installed driver

    study = optuna.load_study(study_name=study_name, storage=_storage(postgres_url))
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(finished) == trials
    assert all(t.state.name == "PRUNED" and t.user_attrs.get("surplus")
               for t in study.trials if t not in finished)
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert len({t.user_attrs["worker"] for t in finished}) == 2, "one worker ran every trial"
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    assert complete and study.best_value == max(t.value for t in complete)
    out = tmp_path / "out"
    frame = pd.read_csv(out / "trials.csv")
    assert frame.state.isin(["COMPLETE", "FAIL"]).sum() == trials
    assert frame["bbox/AP"].max() == pytest.approx(study.best_value)
    cfg = load_config(out / "best_config.yaml")
    assert cfg.SOLVER.BASE_LR == pytest.approx(study.best_params["SOLVER.BASE_LR"])
