"""Train and cross-validate the dense models (U-Net segmentation and heatmaps).

:func:`run_training` is what ``tools/train_unet.py`` runs:

* without folds: train on ``DATASET.TRAIN_SPLITS``, write ``OUTPUT_DIR/model_final.pth``, then
  evaluate on ``DATASET.TEST_SPLITS`` (``metrics.json``, ``per_image.csv``);
* with ``CV.FOLDS = k`` (``--folds k``): k-fold cross-validation over all images, repeated
  ``CV.REPEATS`` times with new shuffles as Sadre et al.; each fold trains from scratch in
  ``OUTPUT_DIR/cv/fold_XX`` and is scored on its held-out images; ``cv_folds.csv`` has one row
  per fold and ``cv_summary.csv`` the mean, standard deviation, min and max of every metric.

Training: Adam, pixel-wise cross-entropy (optionally class- and spatially weighted) for
segmentation, weighted binary cross-entropy against Gaussian heatmaps for points; random crops,
quarter turns and reflections. ``model_last.pth`` is written every ``SOLVER.CHECKPOINT_PERIOD``
iterations (atomically) and ``--resume`` continues from it, with the optimizer and random
states, so a resumed run continues the same schedule; in cross-validation finished folds are
kept and skipped.

Metrics: segmentation, :func:`emdet.evaluation.pixel_metrics` of ``EVAL.POSITIVE_CLASS``
against the rest, plus the Jaccard index of every class (``jaccard_<class>``) and their mean;
heatmaps, :func:`emdet.evaluation.points.point_metrics_by_class` within ``EVAL.MATCH_RADIUS``
for every class and all classes together (``<metric>_<class>``, and the plain names for all).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emdet.dense.cv import kfold_splits, summarize_folds
from emdet.dense.data import DenseSample, load_dense_samples, sample_batch
from emdet.dense.losses import heatmap_loss, segmentation_loss
from emdet.dense.predict import (
    architecture,
    build_unet,
    heatmap_thresholds,
    load_checkpoint,
    predict_probabilities,
    resolve_device,
    save_checkpoint,
)
from emdet.dense.units import length_px, match_in_nm, point_lengths
from emdet.utils.atomic import atomic_write

__all__ = ["TrainingError", "evaluate", "run_training", "train_model"]

logger = logging.getLogger(__name__)

LAST = "model_last.pth"
FINAL = "model_final.pth"
BEST = "model_best.pth"


class TrainingError(RuntimeError):
    """Training cannot go on (diverging loss, ...); the message says what to change."""


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, default=float) + "\n")


def _write_csv(path: Path, table) -> None:
    atomic_write(path, table.to_csv())


def _seed_everything(seed: int) -> np.random.Generator:
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def train_model(
    cfg,
    samples: Sequence[DenseSample],
    classes: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    seed: int | None = None,
    progress: bool = True,
    desc: str = "train",
    val_samples: Sequence[DenseSample] | None = None,
):
    """Train a U-Net from scratch (or ``MODEL.WEIGHTS``) on ``samples``; return it.

    Parameters
    ----------
    cfg : CfgNode
        Dense config.
    samples : sequence of DenseSample
        Training images with their targets.
    classes : sequence of str
        Class names (output channels).
    out_dir : path
        Gets ``model_last.pth`` during training and ``model_final.pth`` at the end.
    resume : bool, keyword-only
        Continue from ``out_dir/model_last.pth`` when it exists (model, optimizer, iteration,
        random states); a finished ``model_final.pth`` is loaded and returned as is, unless
        ``SOLVER.MAX_ITER`` is now higher: then training continues from it.
    seed : int, keyword-only
        Default ``cfg.SEED``.
    progress : bool, keyword-only
        tqdm progress bar.
    desc : str, keyword-only
        Label of the progress bar and log lines.
    val_samples : sequence of DenseSample, keyword-only
        With ``SOLVER.EVAL_PERIOD``: scored on the starting weights and every period (heatmap
        thresholds calibrated on them first); the best by ``SOLVER.BEST_METRIC`` is kept as
        ``out_dir/model_best.pth`` and returned. The heatmap thresholds of the final model are
        calibrated on them too.

    Returns
    -------
    UNet
        In eval mode, on the configured device (the best weights when validating); heatmap
        models carry the calibrated peak thresholds as ``model.heatmap_thresholds`` (list, one
        per class; None without ``HEATMAP.CALIBRATE``), also stored in the checkpoint.

    Raises
    ------
    TrainingError
        The loss became NaN/inf or exceeded ``SOLVER.MAX_LOSS``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.MODEL.DEVICE)
    seed = int(cfg.SEED if seed is None else seed)
    rng = _seed_everything(seed)
    model = build_unet(cfg, len(classes)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.SOLVER.BASE_LR),
                                 weight_decay=float(cfg.SOLVER.WEIGHT_DECAY))
    start = 0
    max_iter = int(cfg.SOLVER.MAX_ITER)
    final, last, best_path = out_dir / FINAL, out_dir / LAST, out_dir / BEST
    eval_period = int(cfg.SOLVER.EVAL_PERIOD) if val_samples else 0
    finished = load_checkpoint(final, map_location=device) if resume and final.is_file() else None
    if finished is not None and (int(finished["iteration"]) + 1 >= max_iter
                                 or "optimizer" not in finished):
        done = best_path if eval_period and best_path.is_file() else final
        data = finished if done == final else load_checkpoint(done, map_location=device)
        model.load_state_dict(data["model"])
        model.heatmap_thresholds = data.get("heatmap_thresholds")
        logger.info("%s: already trained, loaded %s", desc, done)
        return model.eval()
    resume_from = final if finished is not None else last  # a higher MAX_ITER trains on
    if resume and resume_from.is_file():
        data = finished if finished is not None else load_checkpoint(last, map_location=device)
        model.load_state_dict(data["model"])
        optimizer.load_state_dict(data["optimizer"])
        start = int(data["iteration"]) + 1
        torch.set_rng_state(data["rng"]["torch"].cpu())
        rng.bit_generator.state = data["rng"]["numpy"]
        logger.info("%s: resuming from %s at iteration %d", desc, resume_from, start)
        print(f"[{desc}] resuming from {resume_from} at iteration {start} of {max_iter}",
              flush=True)
    elif cfg.MODEL.WEIGHTS:
        data = load_checkpoint(cfg.MODEL.WEIGHTS, map_location=device)
        _load_start(model, data, cfg.MODEL.WEIGHTS, classes, desc)

    task = cfg.TASK
    class_weights = None
    if task == "segmentation" and cfg.LOSS.CLASS_WEIGHTS:
        if len(cfg.LOSS.CLASS_WEIGHTS) != len(classes):
            raise TrainingError(f"LOSS.CLASS_WEIGHTS has {len(cfg.LOSS.CLASS_WEIGHTS)} values "
                                f"for {len(classes)} classes {list(classes)}")
        class_weights = torch.tensor(cfg.LOSS.CLASS_WEIGHTS, dtype=torch.float32, device=device)
    period = int(cfg.SOLVER.CHECKPOINT_PERIOD)
    meta = {"cfg": cfg.dump(), "classes": list(classes), "task": task,
            "arch": architecture(model)}
    keeper = _BestKeeper(cfg, val_samples, classes, best_path, meta, desc,
                         resume=resume) if eval_period else None
    if keeper is not None and start == 0:
        keeper.score(model, -1)  # the starting weights: fine-tuning must beat them
    model.train()
    if float(cfg.HEATMAP.SIGMA_NM) > 0:  # in nm: in each image's own pixels
        def heatmap_sigma(sample):
            return length_px(cfg, "HEATMAP.SIGMA", sample.pixel_size, sample.path)
    else:
        heatmap_sigma = float(cfg.HEATMAP.SIGMA)
    bar = tqdm(range(start, max_iter), desc=desc, initial=start, total=max_iter,
               disable=not progress, mininterval=2.0, file=sys.stderr, leave=False)
    loss_avg = None
    for iteration in bar:
        batch = sample_batch(
            samples, rng, task=task, num_classes=len(classes),
            batch_size=int(cfg.SOLVER.IMS_PER_BATCH), crop=int(cfg.INPUT.CROP_SIZE),
            multiple=model.size_multiple, rot90=bool(cfg.INPUT.ROT90),
            flip=bool(cfg.INPUT.FLIP), heatmap_sigma=heatmap_sigma,
        )
        x = torch.from_numpy(batch["image"]).to(device)
        w = torch.from_numpy(batch["weights"]).to(device)
        logits = model(x)
        if task == "segmentation":
            target = torch.from_numpy(batch["target"]).to(device)
            loss = segmentation_loss(logits, target, pixel_weights=w, class_weights=class_weights)
        else:
            target = torch.from_numpy(batch["target"]).to(device)
            loss = heatmap_loss(logits, target, peak_weight=float(cfg.LOSS.PEAK_WEIGHT),
                                valid=w > 0)
        value = float(loss.detach())
        if not math.isfinite(value) or value > float(cfg.SOLVER.MAX_LOSS):
            raise TrainingError(
                f"{desc}: loss is {value} at iteration {iteration}; training diverged. Lower "
                f"SOLVER.BASE_LR (now {cfg.SOLVER.BASE_LR}), e.g. to "
                f"{float(cfg.SOLVER.BASE_LR) / 10:g}."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
        bar.set_postfix(loss=f"{loss_avg:.4f}", refresh=False)
        if period and (iteration + 1) % period == 0 and iteration + 1 < max_iter:
            save_checkpoint(last, {
                **meta,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "iteration": iteration,
                "rng": {"torch": torch.get_rng_state(), "numpy": rng.bit_generator.state},
            })
            logger.info("%s: iteration %d, loss %.4f, wrote %s", desc, iteration + 1, loss_avg,
                        last)
        if keeper is not None and ((iteration + 1) % eval_period == 0
                                   or iteration + 1 == max_iter):
            keeper.score(model, iteration)
            model.train()
    bar.close()
    model.eval()
    model.heatmap_thresholds = None
    if task == "heatmap" and cfg.HEATMAP.CALIBRATE:
        on = val_samples if eval_period else samples
        model.heatmap_thresholds = _calibrate(cfg, model, on, classes)
        meta["heatmap_thresholds"] = model.heatmap_thresholds
        print(f"[{desc}] calibrated peak thresholds on the "
              f"{'validation' if eval_period else 'training'} images: " + ", ".join(
                  f"{c} {t:.2f}" for c, t in zip(classes, model.heatmap_thresholds,
                                                 strict=True)), flush=True)
    # with the optimizer and random states, so --resume with a higher MAX_ITER trains on
    save_checkpoint(final, {**meta, "model": model.state_dict(), "iteration": max_iter - 1,
                            "optimizer": optimizer.state_dict(),
                            "rng": {"torch": torch.get_rng_state(),
                                    "numpy": rng.bit_generator.state}})
    if last.is_file():
        last.unlink()
    if loss_avg is not None:
        print(f"[{desc}] {max_iter} iterations, final loss {loss_avg:.4f}, wrote {final}",
              flush=True)
    if keeper is not None and best_path.is_file():
        data = load_checkpoint(best_path, map_location=device)
        model.load_state_dict(data["model"])
        model.heatmap_thresholds = data.get("heatmap_thresholds")
        print(f"[{desc}] best {keeper.metric} {data['best_value']:.4f} at "
              f"{_iteration_name(int(data['iteration']))}: using {best_path}", flush=True)
    return model.eval()


def _load_start(model, data: dict, source: str, classes: Sequence[str], desc: str) -> None:
    """Start from ``data``'s weights; layers whose shape differs (the output head, when the
    classes differ from those it was trained for) keep their fresh initialisation."""
    own = model.state_dict()
    state = {k: v for k, v in data["model"].items() if k in own and v.shape == own[k].shape}
    fresh = sorted(k for k in own if k not in state)
    unknown = sorted(k for k in data["model"] if k not in own)
    if unknown or any(not k.startswith("head.") for k in fresh):
        raise TrainingError(
            f"MODEL.WEIGHTS {source}: its weights do not fit this network (missing or "
            f"reshaped: {', '.join(fresh[:4]) or '-'}; unknown: {', '.join(unknown[:4]) or '-'})"
            "; check MODEL.BLOCKS, MODEL.FEATURES and MODEL.BATCH_NORM against the config "
            "that trained it.")
    model.load_state_dict(state, strict=False)
    if fresh:
        print(f"[{desc}] initialised from {source}; the output layer starts afresh for the "
              f"classes {list(classes)} (the weights were trained for "
              f"{data.get('classes') or '?'})", flush=True)
    logger.info("%s: initialised from %s", desc, source)


def _iteration_name(iteration: int) -> str:
    return "the starting weights" if iteration < 0 else f"iteration {iteration + 1}"


class _BestKeeper:
    """Scores the model on the validation images and keeps the best as ``model_best.pth``.

    The file holds what ``model_final.pth`` holds plus ``best_metric``, ``best_value`` and the
    heatmap thresholds calibrated on the validation images at that point; on ``--resume`` the
    best value is read back from it, so a resumed run keeps comparing with the best before.
    """

    def __init__(self, cfg, samples, classes, path: Path, meta: dict, desc: str, *,
                 resume: bool):
        self.cfg, self.samples, self.classes = cfg, samples, classes
        self.path, self.meta, self.desc = path, meta, desc
        self.metric = str(cfg.SOLVER.BEST_METRIC) or (
            "f1" if cfg.TASK == "heatmap" else "mean_jaccard")
        self.best = -math.inf
        if resume and path.is_file():
            self.best = float(load_checkpoint(path).get("best_value", -math.inf))
        elif path.is_file():
            path.unlink()  # a best of an earlier, different run must not win

    def score(self, model, iteration: int) -> None:
        model.eval()
        model.heatmap_thresholds = None
        if self.cfg.TASK == "heatmap" and self.cfg.HEATMAP.CALIBRATE:
            model.heatmap_thresholds = _calibrate(self.cfg, model, self.samples, self.classes)
        metrics, _ = evaluate(self.cfg, model, self.samples, self.classes)
        if self.metric not in metrics:
            raise TrainingError(f"SOLVER.BEST_METRIC {self.metric!r} is not a metric of this "
                                f"task; choose one of {sorted(metrics)}")
        value = float(metrics[self.metric])
        better = value > self.best
        print(f"[{self.desc}] validation at {_iteration_name(iteration)}: {self.metric} "
              f"{value:.4f}" + (" (best so far)" if better else f" (best {self.best:.4f})"),
              flush=True)
        if better:
            self.best = value
            save_checkpoint(self.path, {
                **self.meta, "model": model.state_dict(), "iteration": iteration,
                "heatmap_thresholds": model.heatmap_thresholds, "best_metric": self.metric,
                "best_value": value, "val_metrics": metrics})


def _calibrate(cfg, model, samples: Sequence[DenseSample], classes) -> list[float]:
    """Per-class heatmap thresholds maximising F1 on ``samples`` (``HEATMAP.CALIBRATE``)."""
    from emdet.dense.heatmap import calibrate_thresholds

    device = next(model.parameters()).device
    probs = [predict_probabilities(model, s.image, task="heatmap", device=device,
                                   tile=int(cfg.PREDICT.TILE),
                                   overlap=int(cfg.PREDICT.TILE_OVERLAP)) for s in samples]
    lengths = [point_lengths(cfg, s.pixel_size, s.path) for s in samples]
    thresholds = calibrate_thresholds(
        probs, [s.points for s in samples], [s.point_classes for s in samples],
        radius=[n.radius for n in lengths], min_distance=[n.min_distance for n in lengths],
        default=float(cfg.HEATMAP.THRESHOLD))
    return [float(t) for t in thresholds]


def evaluate(
    cfg, model, samples: Sequence[DenseSample], classes: Sequence[str]
) -> tuple[dict[str, float], Any]:
    """Score a model on samples: pooled metrics (dict) and a per-image table.

    See the module docstring for the metrics of each task.
    """
    import pandas as pd

    from emdet.dense.heatmap import heatmap_points, points_from_labels
    from emdet.evaluation.pixels import pixel_metrics
    from emdet.evaluation.points import point_metrics_by_class

    device = next(model.parameters()).device
    model.eval()
    names = [s.name for s in samples]
    probs = [predict_probabilities(model, s.image, task=cfg.TASK, device=device,
                                   tile=int(cfg.PREDICT.TILE),
                                   overlap=int(cfg.PREDICT.TILE_OVERLAP)) for s in samples]
    metrics: dict[str, float] = {}
    lengths = [point_lengths(cfg, s.pixel_size, s.path) for s in samples]  # names uncalibrated
    # EVAL.MATCH_RADIUS_NM: points matched in nm within that radius, distances in nm
    nm = match_in_nm(cfg)
    radius = float(cfg.EVAL.MATCH_RADIUS_NM if nm else cfg.EVAL.MATCH_RADIUS)
    scale = [s.pixel_size if nm else 1.0 for s in samples]
    if cfg.TASK == "segmentation":
        pos_name = cfg.EVAL.POSITIVE_CLASS or classes[-1]
        if pos_name not in classes:
            raise ValueError(f"EVAL.POSITIVE_CLASS {pos_name!r} is not one of {list(classes)}")
        pos = list(classes).index(pos_name)
        preds = [p.argmax(0) for p in probs]
        gts = [s.labels for s in samples]
        table = pixel_metrics(preds, gts, positive=pos, names=names)
        pooled = table.loc["pooled"]
        metrics.update({k: float(pooled[k]) for k in
                        ("accuracy", "balanced_accuracy", "jaccard", "f1", "precision",
                         "recall")})
        jac = []
        for k, name in enumerate(classes):
            t = pixel_metrics(preds, gts, positive=k).loc["pooled"]
            metrics[f"jaccard_{name}"] = float(t["jaccard"])
            jac.append(float(t["jaccard"]))
        metrics["mean_jaccard"] = float(np.nanmean(jac))
        per_image = table
        if cfg.EVAL.POINTS_FROM_REGIONS and any(len(s.points) for s in samples):
            found = [points_from_labels(p.argmax(0), probabilities=p) for p in probs]
            pt = point_metrics_by_class(
                [f[0] * scale[i] for i, f in enumerate(found)], [f[1] for f in found],
                [s.points * scale[i] for i, s in enumerate(samples)],
                [s.point_classes for s in samples],
                radius=radius, classes=list(classes), names=names)
            _add_point_metrics(metrics, pt, classes[1:], prefix="points_")
    else:
        thr = heatmap_thresholds(cfg, getattr(model, "heatmap_thresholds", None))
        found = [heatmap_points(p, threshold=thr, min_distance=n.min_distance)
                 for p, n in zip(probs, lengths, strict=True)]
        per_image = point_metrics_by_class(
            [f[0] * scale[i] for i, f in enumerate(found)], [f[1] for f in found],
            [s.points * scale[i] for i, s in enumerate(samples)],
            [s.point_classes for s in samples],
            radius=radius, classes=list(classes), names=names)
        _add_point_metrics(metrics, per_image, classes)
    return metrics, pd.DataFrame(per_image)


def _add_point_metrics(metrics: dict, table, classes: Sequence[str], prefix: str = "") -> None:
    pooled = table[table["image"] == "pooled"].set_index("class")
    for cls in ["all", *classes]:
        if cls not in pooled.index:
            continue
        suffix = "" if cls == "all" else f"_{cls}"
        for key in ("precision", "recall", "f1", "fp_rate", "fn_rate"):
            metrics[f"{prefix}{key}{suffix}"] = float(pooled.loc[cls, key])
        if cls == "all":
            metrics[f"{prefix}n_gt"] = float(pooled.loc[cls, "n_gt"])
            metrics[f"{prefix}n_pred"] = float(pooled.loc[cls, "n_pred"])


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def run_training(
    cfg,
    *,
    resume: bool = False,
    folds: int | None = None,
    repeats: int | None = None,
    progress: bool = True,
    fold_indices: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Train (and cross-validate) as configured; write results to ``cfg.OUTPUT_DIR``.

    Parameters
    ----------
    cfg : CfgNode
        Dense config.
    resume : bool, keyword-only
        Continue an interrupted run in the same ``OUTPUT_DIR``.
    folds, repeats : int, keyword-only
        Override ``CV.FOLDS`` / ``CV.REPEATS``.
    progress : bool, keyword-only
        tqdm progress bars.
    fold_indices : sequence of (train, test) index arrays, keyword-only
        Use these splits (indices into the sorted images) instead of drawing them.

    Returns
    -------
    dict
        Without folds: ``{"metrics": {...}, "model": path}``. With folds: ``{"folds":
        DataFrame, "summary": DataFrame, "names": [...]}``.
    """
    folds = int(cfg.CV.FOLDS if folds is None else folds)
    repeats = int(cfg.CV.REPEATS if repeats is None else repeats)
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "config.yaml", cfg.dump())
    t0 = time.time()
    if folds or fold_indices is not None:
        result = _cross_validate(cfg, out, folds, repeats, resume, progress, fold_indices)
    else:
        result = _train_and_test(cfg, out, resume, progress)
    logger.info("finished in %.0f s", time.time() - t0)
    return result


def _train_and_test(cfg, out: Path, resume: bool, progress: bool) -> dict[str, Any]:
    train, classes = load_dense_samples(cfg, splits=list(cfg.DATASET.TRAIN_SPLITS) or None)
    print(f"[train] {len(train)} images, classes {list(classes)}, task {cfg.TASK}", flush=True)
    val = None
    if int(cfg.SOLVER.EVAL_PERIOD):
        val, _ = load_dense_samples(cfg, splits=list(cfg.DATASET.VAL_SPLITS))
        print(f"[val] {len(val)} images, scored every {cfg.SOLVER.EVAL_PERIOD} iterations",
              flush=True)
    model = train_model(cfg, train, classes, out, resume=resume, progress=progress,
                        val_samples=val)
    result: dict[str, Any] = {"model": out / (BEST if val else FINAL), "metrics": {}}
    if cfg.DATASET.TEST_SPLITS:
        try:
            test, _ = load_dense_samples(cfg, splits=list(cfg.DATASET.TEST_SPLITS))
        except ValueError as e:
            logger.warning("no test images (%s); skipping evaluation", e)
            return result
        metrics, per_image = evaluate(cfg, model, test, classes)
        _write_json(out / "metrics.json", {"n_images": len(test), **metrics})
        _write_csv(out / "per_image.csv", per_image)
        print(f"[test] {len(test)} images: {_format_metrics(metrics)}", flush=True)
        result["metrics"] = metrics
    return result


def _cross_validate(cfg, out: Path, folds: int, repeats: int, resume: bool, progress: bool,
                    fold_indices) -> dict[str, Any]:
    import pandas as pd

    samples, classes = load_dense_samples(cfg, splits=None)
    names = [s.name for s in samples]
    if fold_indices is None:
        splits = kfold_splits(len(samples), folds, repeats=repeats, seed=int(cfg.SEED))
    else:
        splits = [(np.asarray(a), np.asarray(b)) for a, b in fold_indices]
        folds = folds or len(splits)
    print(f"[cv] {len(samples)} images, {len(splits)} folds ({repeats} x {folds}), classes "
          f"{list(classes)}, task {cfg.TASK}", flush=True)
    rows = []
    cv_dir = out / "cv"
    cv_dir.mkdir(exist_ok=True)
    for k, (train_idx, test_idx) in enumerate(splits):
        fold_dir = cv_dir / f"fold_{k:02d}"
        done = fold_dir / "metrics.json"
        if resume and done.is_file():
            row = json.loads(done.read_text(encoding="utf-8"))
            print(f"[cv] fold {k} already done: jaccard/f1 "
                  f"{row.get('jaccard', row.get('f1', float('nan'))):.4f}", flush=True)
            rows.append(row)
            continue
        model = train_model(cfg, [samples[i] for i in train_idx], classes, fold_dir,
                            resume=resume, seed=int(cfg.SEED) * 1000 + k, progress=progress,
                            desc=f"fold {k + 1}/{len(splits)}")
        metrics, per_image = evaluate(cfg, model, [samples[i] for i in test_idx], classes)
        row = {"fold": k, "repeat": k // max(folds, 1), "n_test": len(test_idx), **metrics,
               "test_images": [names[i] for i in test_idx]}
        _write_csv(fold_dir / "per_image.csv", per_image)
        _write_json(done, row)
        print(f"[cv] fold {k}: {_format_metrics(metrics)}", flush=True)
        rows.append(row)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "test_images"} for r in rows])
    summary = summarize_folds(rows, skip=("fold", "repeat", "n_test", "test_images"))
    _write_csv(out / "cv_folds.csv", table.set_index("fold"))
    _write_csv(out / "cv_summary.csv", summary)
    print("[cv] mean +- std over folds:")
    for metric, r in summary.iterrows():
        print(f"  {metric:24s} {r['mean']:.4f} +- {r['std']:.4f}  (min {r['min']:.4f}, "
              f"max {r['max']:.4f})")
    return {"folds": table, "summary": summary, "names": names}


def build_parser():
    """Command-line interface of ``tools/train_unet.py``."""
    import argparse

    parser = argparse.ArgumentParser(
        description="Train a U-Net (segmentation or point heatmaps) on an EM data set folder, "
        "optionally with k-fold cross-validation.",
        epilog="Example: python tools/train_unet.py --config-file "
        "configs/unet/graphene_contamination.yaml --folds 5 --repeats 2 SOLVER.MAX_ITER 500",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="YAML config")
    parser.add_argument("--folds", type=int, default=None,
                        help="k-fold cross-validation over all images (overrides CV.FOLDS)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeat the k-fold split with new shuffles (overrides CV.REPEATS)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in OUTPUT_DIR from its last checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_ITER 100 OUTPUT_DIR out/x")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``tools/train_unet.py``: exits with a one-line message on user errors."""
    from emdet.config import ConfigError
    from emdet.dense.config import load_unet_config
    from emdet.dense.data import DenseDataError
    from emdet.dense.predict import CheckpointError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_unet_config(args.config_file, args.opts)
        if args.folds is not None and args.folds == 1:
            raise ConfigError("--folds must be 0 (no cross-validation) or >= 2")
        run_training(cfg, resume=args.resume, folds=args.folds, repeats=args.repeats,
                     progress=not args.quiet)
    except (ConfigError, DenseDataError, CheckpointError, TrainingError) as e:
        sys.exit(f"train_unet: {e}")
