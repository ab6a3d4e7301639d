"""Random (or TPE/grid) search over config keys with Optuna, resumable and shareable.

Each trial trains in its own subprocess and folder (``<output>/trial_NNNN``) with the trial's
values as ``KEY VALUE`` overrides, so a crash or a diverging loss fails that trial only. A
runner says how: :class:`Detectron2Runner` (``tools/train_net.py``, detectron2 configs) or
:class:`UNetRunner` (``tools/train_unet.py``, the dense U-Net configs). Trials
live in an Optuna storage (SQLite file by default, PostgreSQL URL for several machines): running
the same command again continues the study up to ``--trials`` finished trials, and trials left
running by a killed worker are marked failed through Optuna's heartbeat.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emdet.tuning.space import SearchSpace, to_opts

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
        result = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise TrialFailed(f"training exited with {result.returncode}; see {log.name}")
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
        result = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise TrialFailed(f"training exited with {result.returncode}; see {log.name}")
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
            images.symlink_to(Path(meta.image_root).resolve(), target_is_directory=True)
        for split, keep in (("train", lambda i, v=val: i not in v),
                            ("val", lambda i, v=val: i in v)):
            part = dict(coco)
            part["images"] = [im for im in coco["images"] if keep(im["id"])]
            part["annotations"] = [a for a in coco["annotations"] if keep(a["image_id"])]
            _atomic_write_text(folder / "annotations" / f"{split}.json", json.dumps(part))
        source_yaml = Path(meta.get("dataset_dir", "")) / "dataset.yaml"
        if source_yaml.is_file():
            shutil.copyfile(source_yaml, folder / "dataset.yaml")
        names.append(name)
    return names


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sampler(settings: TuneSettings):
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=settings.seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(settings.space.grid(), seed=settings.seed)
    raise ValueError(f"unknown sampler {settings.sampler!r}; use random, tpe or grid")


def _storage(url: str):
    import optuna

    if url.startswith(("sqlite", "postgresql", "mysql")):
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    return url


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
        old = study.user_attrs.get(key)
        if old is None:
            study.set_user_attr(key, value)
        elif old != value:
            raise ValueError(f"study {settings.study_name()} in {settings.storage_url()} was run "
                             f"with {key} {old!r}, not {value!r}; use another --study name")

    def finished() -> int:
        return len(study.get_trials(deepcopy=False,
                                    states=(TrialState.COMPLETE, TrialState.FAIL)))

    def objective(trial) -> float:
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

    remaining = settings.trials - finished()
    if remaining > 0:
        study.optimize(
            objective, n_trials=remaining, catch=(TrialFailed,),
            callbacks=[optuna.study.MaxTrialsCallback(
                settings.trials, states=(TrialState.COMPLETE, TrialState.FAIL)), tick],
        )
    bar.close()
    write_outputs(study, settings, metric)
    return study


def write_outputs(study, settings: TuneSettings, metric: str) -> dict[str, Path]:
    """trials.csv, best_config.yaml (a full config train_net accepts) and metric_vs_trial.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    out = settings.output
    paths = {"trials": out / "trials.csv"}
    frame = study.trials_dataframe()
    frame = frame.rename(columns={"value": metric})
    _atomic_write_text(paths["trials"], frame.to_csv(index=False))

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    tmp = out / ".tmp-metric_vs_trial.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, paths["plot"])

    if complete:
        best = study.best_trial
        values = {p.key: json.loads(best.params[p.key]) if p.type == "choice" else best.params[p.key]
                  for p in settings.space.params}
        cfg = settings.runner.load_config(["SEED", str(settings.seed), *to_opts(values)])
        paths["best_config"] = out / "best_config.yaml"
        header = (f"# Best of study {settings.study_name()}: trial {best.number}, "
                  f"{metric} = {best.value:.4g}\n# Retrain: python tools/"
                  f"{Path(settings.runner.script).name} "
                  f"--config-file {paths['best_config']}\n")
        _atomic_write_text(paths["best_config"], header + cfg.dump())
    return paths
