#!/usr/bin/env python
"""Random search over config keys: trains each trial, records the metric, writes the best config.

    python tools/tune_net.py --config-file configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml \\
        --space configs/search/vesicles.yaml --trials 8 --output output/tune_vesicles
    # same command again: continues the study; on several machines share a database:
    python tools/tune_net.py ... --storage postgresql://user:pw@host/db --study vesicles-lr
    # U-Net configs (found by their TASK key, or --task unet): blocks, features, learning rate
    python tools/tune_net.py --config-file configs/unet/graphene_contamination.yaml \\
        --space configs/search/unet_graphene.yaml --sampler grid --trials 27 --folds 5

Outputs in --output: trials.csv, best_config.yaml (train it with tools/train_net.py),
metric_vs_trial.png, trial_NNNN/ (each trial's training folder and log.txt). best_config.yaml
is retrained with tools/train_net.py, or tools/train_unet.py for U-Net configs.
Ctrl-C, SIGTERM (a batch system's time limit) or kill -9 also end the running trial's training;
the same command again marks that trial failed and continues with new values.
"""
import argparse
import logging
import signal
import sys
from pathlib import Path

import emdet  # noqa: F401
from emdet.config import ConfigError
from emdet.tuning import (
    Detectron2Runner,
    SpaceError,
    TuneSettings,
    UNetRunner,
    is_unet_config,
    load_space,
    run_study,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config-file", required=True, help="config every trial starts from")
    p.add_argument("--space", required=True, help="search space YAML (configs/search/*.yaml)")
    p.add_argument("--trials", type=int, required=True, help="finished trials to reach in all")
    p.add_argument("--task", choices=["auto", "detectron2", "unet"], default="auto",
                   help="what trains each trial: tools/train_net.py (detectron2) or "
                   "tools/train_unet.py (unet); auto: unet for configs with a TASK key")
    p.add_argument("--metric", help="metric to optimise (default segm/AP with masks, else "
                   "bbox/AP; U-Net: jaccard for segmentation, f1 for heatmaps)")
    p.add_argument("--minimize", action="store_true", help="lower metric is better")
    p.add_argument("--storage", help="Optuna storage URL (default sqlite:///<output>/tune.db)")
    p.add_argument("--study", help="study name (default <config>--<space>)")
    p.add_argument("--sampler", choices=["random", "tpe", "grid"], default="random")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and every trial's SEED")
    p.add_argument("--folds", type=int, default=1, help="k-fold CV over the training images "
                   "(U-Net: train_unet's k-fold CV over all images)")
    p.add_argument("--output", default="output/tune", help="folder for trials and results")
    p.add_argument("--train-script", help="script that trains one trial, with train_net's "
                   "command line (default tools/train_net.py, or tools/train_unet.py)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every trial")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[tune] %(message)s")
    # SIGTERM unwinds like Ctrl-C: the running trial's training is stopped, the trial marked failed
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        space = load_space(args.space)
        unet = args.task == "unet" or (args.task == "auto" and is_unet_config(args.config_file))
        script = {"script": Path(args.train_script)} if args.train_script else {}
        runner = (UNetRunner if unet else Detectron2Runner)(args.config_file, opts=args.opts,
                                                            **script)
        settings = TuneSettings(
            runner=runner, space=space,
            trials=args.trials, output=Path(args.output), metric=args.metric,
            direction="minimize" if args.minimize else "maximize", storage=args.storage,
            study=args.study, sampler=args.sampler, seed=args.seed, folds=args.folds,
        )
        study = run_study(settings, progress=not args.no_progress)
    except (SpaceError, ConfigError, ValueError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt as e:
        print(f"[tune] interrupted ({e or 'Ctrl-C'}); the running trial was stopped and marked "
              "failed; run the same command again to continue", file=sys.stderr)
        sys.exit(130)
    done = [t for t in study.trials if t.value is not None]
    if done:
        best = study.best_trial
        print(f"[tune] best: trial {best.number}, {best.value:.4g} with {best.params}")
    print(f"[tune] results in {args.output}: trials.csv, best_config.yaml, metric_vs_trial.png")


if __name__ == "__main__":
    main()
