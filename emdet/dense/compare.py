"""U-Net against the Bragg filter on identical cross-validation folds (Sadre et al. Table I).

:func:`compare_unet_bragg` draws one set of k-fold splits, tunes the Bragg filter on each
fold's training images (:func:`emdet.dense.bragg.fit_bragg_filter`) and trains a U-Net on the
same images (:func:`emdet.dense.train.run_training`), scores both on the held-out images with
:func:`emdet.evaluation.pixel_metrics` (positive class ``EVAL.POSITIVE_CLASS`` against the
rest, pooled over the fold's pixels), and tabulates mean +- standard deviation over the folds.
``Difference`` is U-Net minus Bragg in percentage points, as the paper's "Difference [%]"
column (e.g. its Jaccard 0.812 vs 0.688 gives 12.4).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from emdet.evaluation.pixels import METRICS
from emdet.utils.atomic import atomic_write

__all__ = ["compare_unet_bragg", "markdown_table"]

logger = logging.getLogger(__name__)

_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "jaccard": "Jaccard",
    "f1": "F1",
    "precision": "Precision",
    "recall": "Recall",
}


def markdown_table(unet, bragg, *, n_images: int, n_folds: int) -> str:
    """Table-I-like markdown from two per-fold metric tables (one row per fold)."""
    lines = [
        f"| Metric (contamination, {n_folds} folds, {n_images} images) | U-Net | Bragg filter "
        "| Difference [pp] |",
        "| --- | --- | --- | --- |",
    ]
    for m in METRICS:
        u, b = unet[m].astype(float), bragg[m].astype(float)
        lines.append(
            f"| {_LABELS[m]} | {u.mean():.3f} ± {u.std(ddof=1):.3f} | "
            f"{b.mean():.3f} ± {b.std(ddof=1):.3f} | {100 * (u.mean() - b.mean()):+.1f} |"
        )
    return "\n".join(lines)


def compare_unet_bragg(
    cfg,
    *,
    folds: int = 5,
    repeats: int = 1,
    output: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Cross-validate the U-Net of ``cfg`` and the Bragg filter on the same folds.

    Parameters
    ----------
    cfg : CfgNode
        Segmentation config (e.g. ``configs/unet/graphene_contamination.yaml``).
    folds, repeats : int, keyword-only
        k-fold splits, drawn with ``cfg.SEED``.
    output : path, keyword-only
        Folder for ``table.md``, ``bragg_folds.csv``, ``bragg_params.json`` (the filter tuned
        on all images, for ``tools/segment.py --bragg-params``) and ``unet/`` (default
        ``cfg.OUTPUT_DIR``).
    resume : bool, keyword-only
        Reuse finished U-Net folds in ``output/unet``.
    progress : bool, keyword-only

    Returns
    -------
    dict
        ``"table"`` (markdown), ``"unet"`` and ``"bragg"`` (per-fold DataFrames),
        ``"bragg_params"`` (DataFrame), ``"filter"`` (the Bragg filter tuned on all images).
    """
    from emdet.data.io import read_image
    from emdet.dense.bragg import fit_bragg_filter
    from emdet.dense.cv import kfold_splits
    from emdet.dense.data import load_dense_samples
    from emdet.dense.train import run_training

    if cfg.TASK != "segmentation":
        raise ValueError("the comparison needs a segmentation config (TASK: segmentation)")
    out = Path(output or cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    samples, classes = load_dense_samples(cfg, splits=None)
    pos_name = cfg.EVAL.POSITIVE_CLASS or classes[-1]
    pos = list(classes).index(pos_name)
    splits = kfold_splits(len(samples), folds, repeats=repeats, seed=int(cfg.SEED))
    names = [s.name for s in samples]

    raw = [read_image(s.path)[0] for s in samples]
    masks = [s.labels == pos for s in samples]
    print(f"[compare] Bragg filter: tuning sigma, g_thresh, m_thresh on {len(splits)} folds",
          flush=True)
    bragg = fit_bragg_filter(raw, masks, fold_indices=splits, names=names)
    bragg_folds = bragg.cv_scores_
    atomic_write(out / "bragg_folds.csv", bragg_folds.to_csv(index=False))

    print(f"[compare] U-Net: training {len(splits)} folds", flush=True)
    ucfg = cfg.clone()
    ucfg.defrost()
    ucfg.OUTPUT_DIR = str(out / "unet")
    ucfg.CV.FOLDS = folds
    ucfg.CV.REPEATS = repeats
    ucfg.freeze()
    result = run_training(ucfg, resume=resume, progress=progress, fold_indices=splits)
    unet_folds = result["folds"]

    table = markdown_table(unet_folds, bragg_folds, n_images=len(samples), n_folds=len(splits))
    params = bragg_folds[["sigma", "g_thresh", "m_thresh"]]
    param_line = ", ".join(
        f"{k} = {params[k].mean():.4g} ± {params[k].std(ddof=1):.2g}" for k in params.columns)
    text = (f"{table}\n\nBragg parameters over folds: {param_line}; on all images: "
            f"{json.dumps({k: round(float(v), 5) for k, v in bragg.params.items()})}\n")
    for name, content in (("table.md", text), ("bragg_params.json", json.dumps(
            {k: float(v) for k, v in bragg.params.items()}, indent=2) + "\n")):
        atomic_write(out / name, content)
    print(text)
    return {"table": table, "unet": unet_folds, "bragg": bragg_folds, "bragg_params": params,
            "filter": bragg, "text": text, "n_images": len(samples), "folds": np.asarray(
                [len(t) for _, t in splits])}
