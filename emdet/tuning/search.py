"""Random (or TPE/grid) search over config keys with Optuna, resumable and shareable.

Each trial trains in its own subprocess and folder (``<output>/trial_NNNN``) with the trial's
values as ``KEY VALUE`` overrides, so a crash or a diverging loss fails that trial only. A
runner says how: :class:`Detectron2Runner` (``tools/train_net.py``, detectron2 configs) or
:class:`UNetRunner` (``tools/train_unet.py``, the dense U-Net configs). Trials
live in an Optuna storage (SQLite file by default, PostgreSQL URL for several machines): running
the same command again continues the study up to ``--trials`` finished trials.

Hostile conditions:

* A trial's training process dies with its tuner, even on ``kill -9`` (``_process.run_child``).
* A trial left ``RUNNING`` by a killed tuner of this machine is marked failed when a tuner of the
  study next starts or between its trials (it counts as finished, as any failed trial); one of
  a dead worker on another machine is failed by Optuna's heartbeat after 2 minutes.
* Trial ``n`` draws its values from ``(seed, n)`` (``_sampler.TrialSeededSampler``): a resumed
  study or a second worker tries new values, and a fresh study with the same seed repeats.
* Workers sharing a study stop at exactly ``--trials`` finished trials: a worker starts no trial
  while the finished and running ones reach the count, and a trial that finds, once started,
  that lower-numbered ones already do (two workers started theirs at once) is pruned with the
  user attribute ``surplus`` without training.
* Outputs are written atomically (``emdet.utils.atomic``) and, by workers sharing an output
  folder, one at a time (a lock file), so the last one written shows the newest state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emdet.tuning._process import is_dead_local_worker, run_child, worker_token
from emdet.tuning.space import SearchSpace, to_opts
from emdet.utils.atomic import atomic_open, atomic_write

__all__ = ["Detectron2Runner", "TrialFailed", "TuneSettings", "UNetRunner", "is_unet_config",
           "make_folds", "run_study", "write_outputs"]

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
FINISHED = ("COMPLETE", "FAIL")


class TrialFailed(RuntimeError):
    """The trial's training or evaluation failed; the study records it and goes on."""


@dataclass
class Detectron2Runner:
    """Trains and evaluates one trial with ``tools/train_net.py``."""

    config_file: str
    opts: Sequence[str] = ()
    script: Path = REPO / "tools/train_net.py"

    def load_config(self, extra: Sequence[str] = ()):
        from emdet.config import load_config

        return load_config(self.config_file, [*self.opts, *extra])

    def default_metric(self) -> str:
        return "segm/AP" if self.load_config().MODEL.MASK_ON else "bbox/AP"

    def train_dataset(self) -> str:
        return self.load_config().DATASETS.TRAIN[0]

    def fold_opts(self, name: str) -> list[str]:
        return ["DATASETS.TRAIN", repr((f"{name}_train",)), "DATASETS.TEST",
                repr((f"{name}_val",))]

    def run(self, trial_dir: Path, opts: Sequence[str], env: dict, log) -> dict[str, float]:
        cmd = [sys.executable, str(self.script), "--config-file", str(self.config_file),
               *self.opts, "OUTPUT_DIR", str(trial_dir), *opts]
        returncode = run_child(cmd, env=env, log=log)
        if returncode != 0:
            raise TrialFailed(f"training exited with {returncode}; see {log.name}")
        return read_metrics(trial_dir / "metrics.json")


@dataclass
class UNetRunner:
    """Trains and evaluates one trial with ``tools/train_unet.py`` (a U-Net config).

    With ``folds >= 2`` every trial runs train_unet's own k-fold cross-validation over all
    images of the data set and its metrics are the means over the folds (``cv_summary.csv``);
    otherwise it trains on ``DATASET.TRAIN_SPLITS`` and is scored on ``DATASET.TEST_SPLITS``.
    """

    config_file: str
    opts: Sequence[str] = ()
    folds: int = 0
    script: Path = REPO / "tools/train_unet.py"

    def load_config(self, extra: Sequence[str] = ()):
        from emdet.dense.config import load_unet_config

        return load_unet_config(self.config_file, [*self.opts, *extra])

    def default_metric(self) -> str:
        """Jaccard index of ``EVAL.POSITIVE_CLASS`` for segmentation, point F1 for heatmaps."""
        return "jaccard" if self.load_config().TASK == "segmentation" else "f1"

    def run(self, trial_dir: Path, opts: Sequence[str], env: dict, log) -> dict[str, float]:
        cv = ["--folds", str(self.folds)] if self.folds >= 2 else []
        cmd = [sys.executable, str(self.script), "--config-file", str(self.config_file),
               "--quiet", *cv, *self.opts, "OUTPUT_DIR", str(trial_dir), *opts]
        returncode = run_child(cmd, env=env, log=log)
        if returncode != 0:
            raise TrialFailed(f"training exited with {returncode}; see {log.name}")
        if cv:
            import pandas as pd

            summary = trial_dir / "cv_summary.csv"
            if not summary.is_file():
                raise TrialFailed(f"{summary} was not written")
            return {str(k): float(v) for k, v in pd.read_csv(summary, index_col=0)["mean"].items()}
        path = trial_dir / "metrics.json"
        if not path.is_file():
            raise TrialFailed(f"{path} was not written (DATASET.TEST_SPLITS empty?)")
        metrics = json.loads(path.read_text())
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def is_unet_config(config_file: str | Path) -> bool:
    """Whether a YAML file (or a file in its ``_BASE_`` chain) is a dense U-Net config.

    U-Net configs have the top-level key ``TASK`` (``emdet.dense.config``), detectron2 configs
    never do.
    """
    import yaml

    path, seen = Path(config_file), set()
    while path.is_file() and path not in seen:
        seen.add(path)
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            return False
        if "TASK" in data:
            return True
        base = data.get("_BASE_")
        if not isinstance(base, str):
            return False
        path = (path.parent / base).resolve()
    return False


def read_metrics(path: Path) -> dict[str, float]:
    """The last value of every evaluation metric (``bbox/...``, ``segm/...``) in metrics.json."""
    if not path.is_file():
        raise TrialFailed(f"{path} was not written")
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.update({k: v for k, v in record.items() if "/" in k and not k.startswith("lr")})
    return out


@dataclass
class TuneSettings:
    """Everything one ``tools/tune_net.py`` run needs."""

    runner: Detectron2Runner | UNetRunner
    space: SearchSpace
    trials: int
    output: Path
    metric: str | None = None
    direction: str = "maximize"
    storage: str | None = None
    study: str | None = None
    sampler: str = "random"
    seed: int = 0
    folds: int = 1
    env: dict = field(default_factory=dict)

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.output / 'tune.db').resolve()}"

    def study_name(self) -> str:
        return self.study or f"{Path(self.runner.config_file).stem}--{Path(self.space.path).stem}"


def make_folds(dataset: str, folds: int, root: Path, *, seed: int = 0) -> list[str]:
    """Write ``folds`` train/val splits of a registered dataset's images under ``root``.

    Each fold is a dataset folder ``<dataset>_fold<k>`` (images linked, annotations/train.json
    and val.json, the source's dataset.yaml) that ``register_all_from_root(root)`` registers.
    Images are split, not annotations; the split is seeded. Returns the fold dataset names.
    """
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(dataset)
    coco = json.loads(Path(meta.json_file).read_text())
    ids = sorted(img["id"] for img in coco["images"])
    if len(ids) < folds:
        raise ValueError(f"{dataset} has {len(ids)} images, fewer than --folds {folds}")
    random.Random(seed).shuffle(ids)
    names = []
    for k in range(folds):
        val = set(ids[k::folds])
        name = f"{dataset}_fold{k}"
        folder = root / name
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        images = folder / "images"
        if not images.exists():
            with contextlib.suppress(FileExistsError):  # another worker made it just now
                images.symlink_to(Path(meta.image_root).resolve(), target_is_directory=True)
        for split, keep in (("train", lambda i, v=val: i not in v),
                            ("val", lambda i, v=val: i in v)):
            part = dict(coco)
            part["images"] = [im for im in coco["images"] if keep(im["id"])]
            part["annotations"] = [a for a in coco["annotations"] if keep(a["image_id"])]
            atomic_write(folder / "annotations" / f"{split}.json", json.dumps(part))
        source_yaml = Path(meta.get("dataset_dir", "")) / "dataset.yaml"
        if source_yaml.is_file():
            shutil.copyfile(source_yaml, folder / "dataset.yaml")
        names.append(name)
    return names


def _sampler(settings: TuneSettings):
    import optuna

    from emdet.tuning._sampler import TrialSeededSampler

    if settings.sampler == "random":
        return TrialSeededSampler(lambda s: optuna.samplers.RandomSampler(seed=s), settings.seed)
    if settings.sampler == "tpe":
        return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s), settings.seed)
    if settings.sampler == "grid":  # the seed shuffles the grid: the same in every process
        return optuna.samplers.GridSampler(settings.space.grid(), seed=settings.seed)
    raise ValueError(f"unknown sampler {settings.sampler!r}; use random, tpe or grid")


def _postgres_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed (SQLAlchemy 2.1 assumes psycopg 3)."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    for module, driver in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://"):]
    raise ValueError("--storage postgresql://... needs a PostgreSQL driver: "
                     "pip install -e .[postgres] (psycopg2-binary)")


def _storage(url: str, *, attempts: int = 5):
    """The Optuna storage of ``url``; a database is shared by workers that may start together.

    The first worker on an empty database creates Optuna's tables; two doing that at the same
    moment collide (PostgreSQL: ``duplicate key ... pg_type_typname_nsp_index``), so creation is
    retried after a short random pause, by when the other worker's tables exist.
    """
    import optuna
    import sqlalchemy.exc

    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url
    url = _postgres_driver(url)
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            if attempt == attempts - 1:
                raise
            logger.info(f"storage set-up collided with another worker ({type(e).__name__}); "
                        "retrying")
            time.sleep(random.uniform(0.2, 1.0) * (attempt + 1))
    raise AssertionError("not reached")


def run_study(settings: TuneSettings, *, progress: bool = True):
    """Run (or continue) the study until ``settings.trials`` trials have finished."""
    import optuna
    from optuna.trial import TrialState
    from tqdm import tqdm

    settings.output.mkdir(parents=True, exist_ok=True)
    settings.space.check(lambda opts: settings.runner.load_config(opts))
    metric = settings.metric or settings.runner.default_metric()
    fold_names: list[str] = []
    env = dict(os.environ, **settings.env)
    runner = settings.runner
    if settings.folds > 1 and isinstance(runner, UNetRunner):
        runner = dataclasses.replace(runner, folds=settings.folds)  # train_unet's own CV
    elif settings.folds > 1:
        from emdet.data.datasets import register_all_from_root

        settings.runner.load_config()  # registers nothing itself; datasets come from the root
        register_all_from_root(env.get("EMDET_DATASETS"))
        fold_root = settings.output / "folds"
        fold_names = make_folds(settings.runner.train_dataset(), settings.folds, fold_root,
                                seed=settings.seed)
        env["EMDET_DATASETS"] = str(fold_root.resolve())

    study = optuna.create_study(
        study_name=settings.study_name(), storage=_storage(settings.storage_url()),
        sampler=_sampler(settings), direction=settings.direction, load_if_exists=True,
    )
    for key, value in (("config_file", str(settings.runner.config_file)),
                       ("space", settings.space.path), ("metric", metric)):
        if study.user_attrs.get(key) is None:
            study.set_user_attr(key, value)  # a worker starting at the same moment may win
        old = study.user_attrs.get(key)
        if old != value:
            raise ValueError(f"study {settings.study_name()} in {settings.storage_url()} was run "
                             f"with {key} {old!r}, not {value!r}; use another --study name")

    def count(*states: TrialState, below: int | None = None) -> int:
        return sum(1 for t in study.get_trials(deepcopy=False, states=states)
                   if below is None or t.number < below)

    def finished() -> int:
        return count(TrialState.COMPLETE, TrialState.FAIL)

    surplus: list[int] = []
    me = worker_token()

    def objective(trial) -> float:
        trial.set_user_attr("worker", me)
        lower = count(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, below=trial.number)
        if lower >= settings.trials:  # another worker started the last trial at the same time
            trial.set_user_attr("surplus", True)
            surplus.append(trial.number)
            raise optuna.TrialPruned(f"{settings.trials} trials are finished or running already")
        try:
            return _objective(trial)
        except TrialFailed as e:
            trial.set_user_attr("error", str(e))
            raise

    def _objective(trial) -> float:
        values = settings.space.sample(trial)
        trial_dir = settings.output / f"trial_{trial.number:04d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        scores = []
        with open(trial_dir / "log.txt", "w") as log:
            for k, name in enumerate(fold_names or [None]):
                opts = ["SEED", str(settings.seed), *to_opts(values)]
                run_dir = trial_dir if name is None else trial_dir / f"fold{k}"
                if name is not None:
                    opts += settings.runner.fold_opts(name)
                metrics = runner.run(run_dir, opts, env, log)
                if metric not in metrics:
                    raise TrialFailed(f"metric {metric!r} not reported; got {sorted(metrics)}")
                scores.append(float(metrics[metric]))
        if any(s != s for s in scores):  # NaN: nothing detected
            raise TrialFailed(f"{metric} is NaN")
        if len(scores) > 1:
            trial.set_user_attr("fold_scores", scores)
        return sum(scores) / len(scores)

    bar = tqdm(total=settings.trials, initial=min(finished(), settings.trials), unit="trial",
               disable=not progress, desc=settings.study_name())

    def tick(study, trial) -> None:
        bar.n = min(finished(), settings.trials)
        bar.refresh()
        if trial.state == TrialState.FAIL:
            logger.warning(f"trial {trial.number} failed: {trial.user_attrs.get('error', '')}")

    sampler = study.sampler
    while not surplus:
        _fail_dead_trials(study)
        done, running = finished(), count(TrialState.RUNNING)
        if done + running >= settings.trials:
            if done < settings.trials:
                logger.info(f"{running} trial(s) of study {settings.study_name()} run in other "
                            f"workers; with them it has {settings.trials}; this worker stops")
            break
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
            logger.info(f"every point of the grid was tried ({done} trials)")
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[tick])
    bar.close()
    write_outputs(study, settings, metric)
    return study


def _fail_dead_trials(study) -> None:
    """Mark failed the trials left RUNNING by dead workers: of this host at once, else stale."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    study_id = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get("worker")
        if not is_dead_local_worker(token):
            continue
        if study_id is None:
            study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        pid = str(token).rsplit(":", 2)[1]
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, "error", f"its tuner (pid {pid} on this "
                                        "machine) was killed while the trial ran")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            logger.warning(f"trial {trial.number} was left running by a killed tuner (pid {pid}); "
                           "marked failed")
    with warnings.catch_warnings():  # experimental in Optuna; the heartbeat covers other hosts
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextlib.contextmanager
def _output_lock(folder: Path):
    """One writer of a shared output folder at a time (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(folder / ".tune.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_outputs(study, settings: TuneSettings, metric: str) -> dict[str, Path]:
    """trials.csv, best_config.yaml (a full config train_net accepts) and metric_vs_trial.png.

    Each file is replaced atomically; workers sharing the output folder write one at a time.
    """
    settings.output.mkdir(parents=True, exist_ok=True)
    with _output_lock(settings.output):
        return _write_outputs(study, settings, metric)


def _write_outputs(study, settings: TuneSettings, metric: str) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    out = settings.output
    paths = {"trials": out / "trials.csv"}
    trials = study.get_trials(deepcopy=False)
    frame = study.trials_dataframe()
    frame = frame.rename(columns={"value": metric})
    atomic_write(paths["trials"], frame.to_csv(index=False))

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    try:
        if complete:
            xs = [t.number for t in complete]
            ys = [t.value for t in complete]
            best = [max(ys[: i + 1]) if settings.direction == "maximize" else min(ys[: i + 1])
                    for i in range(len(ys))]
            ax.plot(xs, ys, "o", label="trial")
            ax.step(xs, best, where="post", label="best so far")
            ax.legend()
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.set_title(settings.study_name())
        fig.tight_layout()
        paths["plot"] = out / "metric_vs_trial.png"
        with atomic_open(paths["plot"], "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)

    if complete:
        pick = max if settings.direction == "maximize" else min
        best = pick(complete, key=lambda t: t.value)
        values = {p.key: json.loads(best.params[p.key]) if p.type == "choice" else best.params[p.key]
                  for p in settings.space.params}
        cfg = settings.runner.load_config(["SEED", str(settings.seed), *to_opts(values)])
        paths["best_config"] = out / "best_config.yaml"
        header = (f"# Best of study {settings.study_name()}: trial {best.number}, "
                  f"{metric} = {best.value:.4g}\n# Retrain: python tools/"
                  f"{Path(settings.runner.script).name} "
                  f"--config-file {paths['best_config']}\n")
        atomic_write(paths["best_config"], header + cfg.dump())
    return paths
