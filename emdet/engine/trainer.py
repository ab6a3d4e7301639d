"""``EMTrainer``: detectron2's ``DefaultTrainer`` overriding only what differs for EM data.

What differs:

* evaluation uses ``COCOEvaluator`` with the official pycocotools path when the compiled fast
  path is missing (see :mod:`emdet.compat`), and writes per-class AP;
* TensorBoard logging is used only if ``tensorboard`` is installed (JSON and console always);
* a diverging loss stops training with the iteration and a suggestion, not a bare NaN trace.
"""
from __future__ import annotations

import importlib.util
import logging
import os

from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from emdet.compat import has_compiled_ops
from emdet.config import load_config

__all__ = ["EMTrainer", "setup_cfg"]

logger = logging.getLogger(__name__)


def setup_cfg(args, *, default_setup_enabled: bool = True):
    """Build the frozen config from parsed ``default_argument_parser`` arguments.

    Registers the datasets found under ``EMDET.DATASETS_ROOT`` (or ``$EMDET_DATASETS``) so that
    configs can name them.
    """
    cfg = load_config(args.config_file, args.opts or ())
    _register_datasets(cfg)
    cfg.freeze()
    if default_setup_enabled:
        default_setup(cfg, args)
    return cfg


def _register_datasets(cfg) -> None:
    try:
        from emdet.data.datasets import register_all_from_root
    except ImportError:  # data package not present in a minimal install
        return
    register_all_from_root(cfg.EMDET.DATASETS_ROOT or None)


class EMTrainer(DefaultTrainer):
    """DefaultTrainer for EM datasets; see the module docstring for what it changes."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(
            dataset_name, output_dir=output_folder, use_fast_impl=has_compiled_ops()
        )

    def build_writers(self):
        writers = [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
        ]
        if importlib.util.find_spec("tensorboard") is not None:
            from detectron2.utils.events import TensorboardXWriter

            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        return writers

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:
            lr = self.cfg.SOLVER.BASE_LR
            raise FloatingPointError(
                f"Training diverged at iteration {self.iter}: the loss became NaN or infinite. "
                f"Try a lower learning rate (SOLVER.BASE_LR is {lr}; e.g. {lr / 4:g}), a longer "
                f"SOLVER.WARMUP_ITERS, or check the annotations. Details: {e}"
            ) from e
