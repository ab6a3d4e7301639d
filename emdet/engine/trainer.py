"""``EMTrainer``: detectron2's ``DefaultTrainer`` overriding only what differs for EM data.

What differs:

* images are read and augmented by :class:`emdet.data.mapper.EMDatasetMapper` (any EM format,
  16-bit, the seeds' augmentations);
* evaluation uses ``COCOEvaluator`` with the official pycocotools path when the compiled fast
  path is missing (see :mod:`emdet.compat`), and writes per-class AP;
* checkpoints are written atomically (:class:`emdet.engine.checkpoint.AtomicCheckpointer`), so
  ``--resume`` after a kill always finds a complete one, and ``metrics.json`` drops the records
  of iterations the resumed run will repeat (so every iteration appears once);
* progress is written every ``EMDET.LOG_PERIOD`` iterations (detectron2: 20);
* TensorBoard logging is used only if ``tensorboard`` is installed (JSON and console always);
* a diverging loss stops training with the iteration and a suggestion, not a bare NaN trace;
* with ``EMDET.BEST_METRIC`` and ``TEST.EVAL_PERIOD``, :class:`BestCheckpointer` keeps
  ``model_best.pth`` with the score threshold calibrated at that evaluation inside, and a
  resumed run keeps comparing with the best before the interruption; with ``MODEL.WEIGHTS``
  the starting weights are evaluated first (``EMDET.EVAL_START``), so fine-tuning that does not
  beat them on the validation set leaves them as the best.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys

from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

import emdet.modeling  # noqa: F401  (registers emdet's heads)
from emdet.compat import has_compiled_ops
from emdet.config import ConfigError, load_config
from emdet.engine.checkpoint import AtomicCheckpointer

__all__ = ["BestCheckpointer", "EMTrainer", "setup_cfg"]

logger = logging.getLogger(__name__)


def setup_cfg(args, *, default_setup_enabled: bool = True):
    """Build the frozen config from parsed ``default_argument_parser`` arguments.

    Registers the datasets found under ``EMDET.DATASETS_ROOT`` (or ``$EMDET_DATASETS``) so that
    configs can name them.
    """
    cfg = load_config(args.config_file, args.opts or ())
    _register_datasets(cfg)
    check_datasets(cfg, args.config_file)
    from emdet.data.mapper import match_mask_format

    bitmask = match_mask_format(cfg)  # RLE data train as bitmasks, without a config change
    cfg.freeze()
    if default_setup_enabled:
        if not getattr(args, "verbose", False):
            _quiet_console(cfg)
        default_setup(cfg, args)
        _setup_emdet_logger(cfg)
    if bitmask:
        logger.info("INPUT.MASK_FORMAT bitmask: the training data %s have RLE masks",
                    ", ".join(cfg.DATASETS.TRAIN))
    return cfg


#: Long records that go to ``OUTPUT_DIR/log.txt`` only (``train_net.py --verbose``: also the
#: console): the environment, the whole config and the model's layer list.
_FILE_ONLY = ("Environment info:", "Command line arguments:", "Contents of args.config_file",
              "Running with full config", "Model:\n")


class _FileOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_FILE_ONLY)


def _quiet_console(cfg) -> None:
    """Keep the environment dump, the full config and the model print out of the console.

    detectron2's ``setup_logger`` is memoised on its arguments: calling it here exactly as
    ``default_setup`` does creates the same loggers early, so the filter is on their console
    handlers before ``default_setup`` logs; the file handler still gets everything.
    """
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    for log in (setup_logger(output_dir, distributed_rank=rank, name="fvcore"),
                setup_logger(output_dir, distributed_rank=rank)):
        for handler in log.handlers:  # the log file's handler is a StreamHandler too
            if getattr(handler, "stream", None) in (sys.stdout, sys.stderr) and not any(
                    isinstance(f, _FileOnly) for f in handler.filters):
                handler.addFilter(_FileOnly())


def _setup_emdet_logger(cfg) -> None:
    """emdet's own messages on the console and in ``OUTPUT_DIR/log.txt``, like detectron2's
    (``default_setup`` sets up only the ``detectron2`` and ``fvcore`` loggers)."""
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    emdet_logger = logging.getLogger("emdet")
    if not any(getattr(h, "_emdet_setup", False) for h in emdet_logger.handlers):
        before = set(emdet_logger.handlers)
        setup_logger(cfg.OUTPUT_DIR or None, distributed_rank=comm.get_rank(), name="emdet",
                     abbrev_name="emdet")
        for handler in set(emdet_logger.handlers) - before:
            handler._emdet_setup = True
        emdet_logger.setLevel(logging.INFO)  # setup_logger opens DEBUG (one line per image read)


def _register_datasets(cfg) -> None:
    try:
        from emdet.data.datasets import register_all_from_root
    except ImportError:  # data package not present in a minimal install
        return
    register_all_from_root(cfg.EMDET.DATASETS_ROOT or None)


_BUILTIN_PREFIXES = ("coco_", "lvis_", "voc_", "cityscapes_", "ade20k_", "keypoints_coco_")


def check_datasets(cfg, config_file: str = "") -> None:
    """Fail early, naming the config key and dataset, when the data cannot train this model.

    Checks that every dataset in ``DATASETS.TRAIN/TEST`` is registered, that its class count
    matches ``MODEL.ROI_HEADS.NUM_CLASSES``, and that training images have annotations (images
    without any are dropped by detectron2; a warning lists them, and none left is an error).
    """
    where = config_file or "config"
    known = set(DatasetCatalog.list())
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in known:
                ours = sorted(n for n in known if not n.startswith(_BUILTIN_PREFIXES))
                raise ConfigError(
                    f"{where}: DATASETS.{key} names {name!r}, which is not registered. Datasets "
                    f"found under the datasets root: {ours or 'none'}. Make a synthetic one with "
                    "`python tools/make_synthetic.py --kind vesicles --output "
                    "datasets/vesicles_synth`, convert yours with tools/convert_annotations.py, "
                    "or set EMDET_DATASETS to their folder."
                )
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
                raise ConfigError(
                    f"{where}: MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} "
                    f"but dataset {name} has {len(classes)} classes {list(classes)}; set "
                    f"MODEL.ROI_HEADS.NUM_CLASSES {len(classes)}."
                )
    for name in cfg.DATASETS.TRAIN:
        dicts = DatasetCatalog.get(name)
        empty = [d["file_name"] for d in dicts if not d.get("annotations")]
        if dicts and len(empty) == len(dicts):
            raise ConfigError(
                f"{where}: DATASETS.TRAIN dataset {name} has no annotated image "
                f"({len(dicts)} images, none with annotations); nothing to learn from."
            )
        if empty and cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            shown = ", ".join(os.path.basename(f) for f in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            logger.warning(
                f"{name}: {len(empty)} of {len(dicts)} training images have no annotations and "
                f"are skipped ({shown}{more}); set DATALOADER.FILTER_EMPTY_ANNOTATIONS False to "
                "train on them as background."
            )


def trim_metrics(path: str, start_iter: int) -> int:
    """Drop records of ``iteration >= start_iter`` (and a torn last line) from ``metrics.json``.

    detectron2's ``JSONWriter`` appends; a run killed after its last checkpoint and resumed from
    it would otherwise log the iterations in between twice. The file is rewritten in place (the
    writer already holds it open for appending, so it must stay the same file). Returns the
    number of records dropped.
    """
    import json

    if not os.path.isfile(path):
        return 0
    with open(path, "r+", encoding="utf-8") as f:
        lines = f.read().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if isinstance(record, dict) and int(record.get("iteration", -1)) < start_iter:
                kept.append(line)
        dropped = len(lines) - len(kept)
        if dropped:
            f.seek(0)
            f.write("".join(f"{line}\n" for line in kept))
            f.truncate()
    if dropped:
        logger.info(f"{path}: dropped {dropped} records from iteration {start_iter} on, which "
                    "this run repeats")
    return dropped


class BestCheckpointer(hooks.BestCheckpointer):
    """detectron2's ``BestCheckpointer`` that stores what predict needs and survives a resume.

    ``model_best.pth`` also holds ``best_metric``, ``val_metric`` and ``score_threshold`` (the
    threshold :class:`emdet.evaluation.threshold.ScoreThresholdEvaluator` calibrated in the same
    evaluation, which :func:`emdet.evaluation.threshold.read_threshold` prefers to the file
    beside the weights). On ``--resume`` the best value is read back from it, so an evaluation
    after the restart replaces it only when it is better.
    """

    def __init__(self, *args, eval_start: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._eval_start = eval_start

    def before_train(self) -> None:
        path = os.path.join(self._checkpointer.save_dir, f"{self._file_prefix}.pth")
        if self.trainer.start_iter == 0 and self._eval_start:
            self._score_start()
            return
        if self.trainer.start_iter == 0 or not os.path.isfile(path):
            return
        from emdet.engine.weights import WeightsError, load_weights_file

        try:
            data = load_weights_file(path)
        except WeightsError as e:
            self._logger.warning("%s is unreadable (%s); the next evaluation replaces it", path, e)
            return
        if data.get("val_metric") == self._val_metric and "best_metric" in data:
            self.best_metric = float(data["best_metric"])
            self.best_iter = int(data.get("iteration", -1))
            self._logger.info("Resumed: best %s so far %.4f at iteration %d (%s)",
                              self._val_metric, self.best_metric, self.best_iter, path)

    def _score_start(self) -> None:
        """Evaluate the starting weights (recorded at iteration 0) and make them the best so
        far: fine-tuning from a good model must beat it on the validation set to replace it."""
        evaluation = next((h for h in self.trainer._hooks if isinstance(h, hooks.EvalHook)), None)
        if evaluation is None:
            return
        self._logger.info("Evaluating the starting weights (EMDET.EVAL_START) ...")
        evaluation._do_eval()
        self._best_checking()

    def _best_checking(self) -> None:
        latest = self.trainer.storage.latest()
        metric = latest.get(self._val_metric)
        if metric is None:
            self._logger.warning(
                "EMDET.BEST_METRIC %s was not computed by the evaluation (it computed %s); "
                "model_best.pth is not written", self._val_metric,
                ", ".join(sorted(k for k in latest if "/" in k)[:12]) or "nothing")
            return
        value, iteration = metric
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            self._logger.info("%s %.4f at iteration %d: not better than %.4f at %d", self._val_metric,
                              value, iteration, self.best_metric, self.best_iter)
            return
        if not self._update_best(value, iteration):
            return
        extra = {"iteration": iteration, "best_metric": float(value),
                 "val_metric": self._val_metric}
        threshold = latest.get("score_threshold/threshold")
        if threshold is not None:
            extra["score_threshold"] = float(threshold[0])
        self._checkpointer.save(self._file_prefix, **extra)
        self._logger.info("Saved %s.pth: %s %.4f at iteration %d%s", self._file_prefix,
                          self._val_metric, value, iteration,
                          f", score threshold {extra['score_threshold']:.3f}"
                          if "score_threshold" in extra else "")


class ProgressPrinter(CommonMetricPrinter):
    """detectron2's progress line (ETA, losses, time, lr) with the latest validation figure
    appended, e.g. ``val segm/AP 41.3 @ 149``: the metric that keeps ``model_best.pth``
    (``EMDET.BEST_METRIC``), else the first of ``segm/AP``, ``bbox/AP``, ``rotated/AP``."""

    _FALLBACK = ("segm/AP", "bbox/AP", "rotated/AP", "bbox/AP50")

    def __init__(self, max_iter: int | None = None, *, metric: str | None = None, **kw):
        super().__init__(max_iter, **kw)
        self._metric = metric
        printer = self

        class _ValSuffix(logging.LoggerAdapter):  # CommonMetricPrinter logs one line: extend it
            def process(self, msg, kwargs):
                return msg + printer._val_text(), kwargs

        self.logger = _ValSuffix(self.logger, {})

    def _val_text(self) -> str:
        from detectron2.utils.events import get_event_storage

        try:
            latest = get_event_storage().latest()
        except (AssertionError, AttributeError):
            return ""
        for name in ([self._metric] if self._metric else []) + list(self._FALLBACK):
            if name in latest:
                value, iteration = latest[name]
                return f"  val {name} {float(value):.1f} @ {int(iteration)}"
        return ""


class _FirstStepWriter(hooks.PeriodicWriter):
    """detectron2's ``PeriodicWriter`` that also writes after the first iteration of a run, so
    the console shows losses and an ETA within seconds, not after ``EMDET.LOG_PERIOD`` slow
    CPU iterations."""

    def after_step(self):
        if self.trainer.iter == self.trainer.start_iter:
            for writer in self._writers:
                writer.write()
        else:
            super().after_step()


def _crowd_rule(evaluator) -> None:
    """The crowd rule of :mod:`emdet.data.cocofile` in the evaluator's ground truth: pycocotools
    read the json itself, so a CVAT file whose annotations are all ``iscrowd: 1`` would be
    scored as all ignored regions; they become objects, as in training."""
    from emdet.data.cocofile import crowd_as_objects

    api = getattr(evaluator, "_coco_api", None)
    if api is not None:  # its index holds the same annotation dicts, changed in place
        crowd_as_objects(api.dataset.get("annotations") or [],
                         getattr(evaluator._metadata, "json_file", ""))


class EMTrainer(DefaultTrainer):
    """DefaultTrainer for EM datasets; see the module docstring for what it changes."""

    @classmethod
    def build_train_loader(cls, cfg):
        from emdet.data.mapper import EMDatasetMapper

        return build_detection_train_loader(cfg, mapper=EMDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        from emdet.data.mapper import EMDatasetMapper

        return build_detection_test_loader(
            cfg, dataset_name, mapper=EMDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """COCO AP (maxDets up to ``TEST.DETECTIONS_PER_IMAGE``); rotated-box AP for ``rotated``;
        on the first ``DATASETS.TEST`` set also the calibrated score threshold
        (:mod:`emdet.evaluation.threshold`, written to ``OUTPUT_DIR/score_threshold.json``)."""
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "rotated":
            from emdet.evaluation.rotated import RotatedCOCOEvaluator

            return RotatedCOCOEvaluator(dataset_name, output_dir=output_folder)
        if evaluator_type not in ("coco", "points"):
            raise ValueError(
                f"dataset {dataset_name} has evaluator_type {evaluator_type!r}; tools/train_net.py "
                "evaluates instance datasets ('coco', 'points' as small boxes, 'rotated'). Dense "
                "datasets are trained with tools/train_unet.py."
            )
        coco = COCOEvaluator(
            dataset_name,
            # point datasets have small boxes around each point and no masks
            tasks=("bbox",) if evaluator_type == "points" or not cfg.MODEL.MASK_ON else None,
            output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
            use_fast_impl=has_compiled_ops(),
        )
        _crowd_rule(coco)
        if evaluator_type != "coco" or dataset_name != cfg.DATASETS.TEST[0]:
            return coco
        from detectron2.evaluation import DatasetEvaluators

        from emdet.evaluation.threshold import ScoreThresholdEvaluator

        # the score threshold for counts, calibrated on the first test set, beside the weights
        return DatasetEvaluators([coco, ScoreThresholdEvaluator(
            dataset_name, output_dir=cfg.OUTPUT_DIR or None, use_masks=cfg.MODEL.MASK_ON)])

    def build_hooks(self):
        # DefaultTrainer made a plain DetectionCheckpointer just before calling this; the
        # checkpoint hook built below must get the atomic one.
        self.checkpointer = AtomicCheckpointer(
            self.checkpointer.model,
            self.cfg.OUTPUT_DIR,
            save_to_disk=self.checkpointer.save_to_disk,
            **self.checkpointer.checkpointables,
        )
        built = super().build_hooks()
        for i, hook in enumerate(built):
            if isinstance(hook, hooks.PeriodicWriter):  # detectron2 fixes it at 20 iterations
                built[i] = _FirstStepWriter(hook._writers, period=int(self.cfg.EMDET.LOG_PERIOD))
        metric, period = self.cfg.EMDET.BEST_METRIC, self.cfg.TEST.EVAL_PERIOD
        if metric and period > 0:
            where = next(i for i, h in enumerate(built) if isinstance(h, hooks.EvalHook))
            start = bool(self.cfg.EMDET.EVAL_START and self.cfg.MODEL.WEIGHTS)
            built.insert(where + 1, BestCheckpointer(period, self.checkpointer, metric,
                                                     eval_start=start))
        elif metric:
            logger.warning("EMDET.BEST_METRIC %s needs TEST.EVAL_PERIOD > 0; model_best.pth is "
                           "not written", metric)
        return built

    def resume_or_load(self, resume: bool = True):
        super().resume_or_load(resume=resume)
        from detectron2.utils import comm

        if comm.is_main_process():
            trim_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), self.start_iter)

    def build_writers(self):
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        writers = [
            ProgressPrinter(self.max_iter, metric=self.cfg.EMDET.BEST_METRIC or None),
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
