"""Configuration of the dense models (U-Net segmentation and heatmaps): one small CfgNode.

:func:`add_unet_config` defines every key with a one-line comment; :func:`get_unet_cfg` returns
the defaults; :func:`load_unet_config` reads a YAML file (safe loader, ``_BASE_`` inheritance)
plus ``KEY VALUE`` overrides and raises :class:`emdet.config.ConfigError` naming the file and
the key, like :func:`emdet.config.load_config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from detectron2.config import CfgNode as CN

from emdet.config import ConfigError, merge_config

__all__ = ["TASKS", "PREPROCESSING", "add_unet_config", "get_unet_cfg", "load_unet_config"]

#: What a dense model predicts.
TASKS = ("segmentation", "heatmap")
#: Intensity preprocessing of the network input (:func:`emdet.dense.data.preprocess_image`).
PREPROCESSING = ("flatfield", "lin", "percentile", "zscore")


def _add_model_config(cfg: CN) -> None:
    cfg.MODEL = CN()
    # Double-convolution blocks over both paths, odd (Sadre et al.'s best: 7; original U-Net: 9).
    cfg.MODEL.BLOCKS = 7
    # Channels of the first block, doubled at each level down (Sadre et al.'s best: 32).
    cfg.MODEL.FEATURES = 32
    # Image channels (1 for EM images).
    cfg.MODEL.IN_CHANNELS = 1
    # Batch normalisation after each convolution (not in the paper; steadier short trainings).
    cfg.MODEL.BATCH_NORM = False
    # Checkpoint to start from or to predict with ("" = random initialisation).
    cfg.MODEL.WEIGHTS = ""
    # "cpu", "cuda", "cuda:1"; "" picks CUDA when available.
    cfg.MODEL.DEVICE = ""


def _add_dataset_config(cfg: CN) -> None:
    cfg.DATASET = CN()
    # Data set folder: a name under $EMDET_DATASETS (default ./datasets) or an absolute path.
    cfg.DATASET.DIR = "graphene_synth"
    # Class names in label/category order; [] reads dataset.yaml (stuff_classes for masks,
    # classes for points).
    cfg.DATASET.CLASSES = []
    # Splits (annotations/<split>.json) to train on when not cross-validating.
    cfg.DATASET.TRAIN_SPLITS = ["train"]
    # Splits to evaluate on after training when not cross-validating ([] = none).
    cfg.DATASET.TEST_SPLITS = ["val"]
    # Splits scored every SOLVER.EVAL_PERIOD iterations (and on the starting weights) to keep
    # model_best.pth; heatmap thresholds are then calibrated on them, not on the training
    # images ([] = none).
    cfg.DATASET.VAL_SPLITS = []
    # Use at most this many images (0 = all), e.g. for smoke tests.
    cfg.DATASET.MAX_IMAGES = 0


def _add_input_config(cfg: CN) -> None:
    cfg.INPUT = CN()
    # Intensity preprocessing: "flatfield" (Sadre et al. eq. 1-3), "lin" (Lin et al.: 5-95 %
    # clip, min-max, median blur), "percentile" (robust stretch to 0..1), "zscore".
    cfg.INPUT.PREPROCESS = "percentile"
    # Percentiles mapped to 0 and 1 by "percentile" (and clipped by "lin").
    cfg.INPUT.CLIP_PERCENTILES = [0.5, 99.5]
    # Median filter size for "lin" (odd; 1 = off).
    cfg.INPUT.MEDIAN_BLUR = 3
    # Side of the random square training crops in pixels (a multiple of 2**((BLOCKS-1)/2);
    # 0 = whole images).
    cfg.INPUT.CROP_SIZE = 128
    # Random quarter turns during training (exact on the pixel grid).
    cfg.INPUT.ROT90 = True
    # Random horizontal and vertical reflections during training.
    cfg.INPUT.FLIP = True


def _add_solver_config(cfg: CN) -> None:
    cfg.SOLVER = CN()
    # Adam learning rate (Sadre et al.: 1e-4 for 300 epochs on a GPU).
    cfg.SOLVER.BASE_LR = 1e-3
    # Adam weight decay.
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    # Training iterations (one batch each).
    cfg.SOLVER.MAX_ITER = 300
    # Crops per batch.
    cfg.SOLVER.IMS_PER_BATCH = 4
    # Write model_last.pth (for --resume) every this many iterations.
    cfg.SOLVER.CHECKPOINT_PERIOD = 100
    # Stop with a clear error when the loss is NaN/inf or exceeds this.
    cfg.SOLVER.MAX_LOSS = 1.0e4
    # Score DATASET.VAL_SPLITS every this many iterations and keep the best weights as
    # model_best.pth (0 = off).
    cfg.SOLVER.EVAL_PERIOD = 0
    # The metric model_best.pth maximises ("" = f1 for heatmaps, mean_jaccard for
    # segmentation); any key of metrics.json.
    cfg.SOLVER.BEST_METRIC = ""


def _add_loss_config(cfg: CN) -> None:
    cfg.LOSS = CN()
    # Segmentation: cross-entropy weight per class ([] = all 1).
    cfg.LOSS.CLASS_WEIGHTS = []
    # Segmentation: spatially weighted cross-entropy with Ronneberger's weight map (class
    # balance + W0 exp(-(d1 + d2)^2 / 2 SIGMA^2) between nearby objects), as Leibovich et al.
    cfg.LOSS.SPATIAL_WEIGHTS = False
    # Weight-map amplitude between objects.
    cfg.LOSS.W0 = 10.0
    # Weight-map distance scale in pixels.
    cfg.LOSS.SIGMA = 5.0
    # Heatmaps: binary cross-entropy weighted by 1 + PEAK_WEIGHT * target (peaks are rare).
    cfg.LOSS.PEAK_WEIGHT = 10.0


def _add_heatmap_config(cfg: CN) -> None:
    cfg.HEATMAP = CN()
    # Standard deviation in pixels of the Gaussian peak drawn at each annotated point.
    cfg.HEATMAP.SIGMA = 2.0
    # A predicted peak must exceed this heatmap value (0..1), unless CALIBRATE.
    cfg.HEATMAP.THRESHOLD = 0.3
    # After training, pick each class's threshold that maximises F1 on the training images
    # (within EVAL.MATCH_RADIUS), store it in the checkpoint and use it in evaluation and
    # tools/detect_points.py; False uses THRESHOLD for every class.
    cfg.HEATMAP.CALIBRATE = True
    # Peaks closer than this many pixels are merged (the weaker is dropped).
    cfg.HEATMAP.MIN_DISTANCE = 3
    # SIGMA and MIN_DISTANCE in nm instead (0 = unset): turned into pixels for each image by its
    # own pixel size (emdet.dense.units); an uncalibrated image is then an error.
    cfg.HEATMAP.SIGMA_NM = 0.0
    cfg.HEATMAP.MIN_DISTANCE_NM = 0.0


def _add_eval_config(cfg: CN) -> None:
    cfg.EVAL = CN()
    # Segmentation: binary metrics of this class against the rest ("" = the last class).
    cfg.EVAL.POSITIVE_CLASS = ""
    # Points: a detection within this many pixels of an annotated point matches it.
    cfg.EVAL.MATCH_RADIUS = 4.0
    # The same in nm (0 = unset): points are then matched in nm, distances reported in nm.
    cfg.EVAL.MATCH_RADIUS_NM = 0.0
    # Segmentation tasks with point annotations (atomic columns): also score the centroids of
    # predicted regions as points (True/False).
    cfg.EVAL.POINTS_FROM_REGIONS = False


def _add_cv_config(cfg: CN) -> None:
    cfg.CV = CN()
    # Folds of k-fold cross-validation over all images (0 = train/test splits instead).
    cfg.CV.FOLDS = 0
    # Repeats of the k-fold split with new shuffles (Sadre et al.: 2).
    cfg.CV.REPEATS = 1


def _add_predict_config(cfg: CN) -> None:
    cfg.PREDICT = CN()
    # Images larger than this (pixels per side) are predicted in overlapping tiles (0 = never).
    cfg.PREDICT.TILE = 1024
    # Overlap of neighbouring tiles in pixels.
    cfg.PREDICT.TILE_OVERLAP = 64


def add_unet_config(cfg: CN) -> CN:
    """Add every dense-model key (with its default) to ``cfg``, in place; return it."""
    # Config format version; detectron2's CfgNode.merge_from_file requires the latest, 2.
    cfg.VERSION = 2
    # "segmentation": per-pixel classes from masks/; "heatmap": Gaussian peaks at points.
    cfg.TASK = "segmentation"
    # Seed of weights, crops, augmentations and cross-validation shuffles.
    cfg.SEED = 0
    # Folder for checkpoints, metrics and the config used.
    cfg.OUTPUT_DIR = "output/unet"
    _add_model_config(cfg)
    _add_dataset_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_loss_config(cfg)
    _add_heatmap_config(cfg)
    _add_eval_config(cfg)
    _add_cv_config(cfg)
    _add_predict_config(cfg)
    return cfg


def get_unet_cfg() -> CN:
    """A fresh config with every dense-model default."""
    return add_unet_config(CN())


def _check(cfg: CN, where: str) -> None:
    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{where}: key {key}: {what}")

    if cfg.TASK not in TASKS:
        raise bad("TASK", f"must be one of {TASKS}, got {cfg.TASK!r}")
    if cfg.INPUT.PREPROCESS not in PREPROCESSING:
        raise bad("INPUT.PREPROCESS", f"must be one of {PREPROCESSING}, got "
                                      f"{cfg.INPUT.PREPROCESS!r}")
    blocks = cfg.MODEL.BLOCKS
    if not isinstance(blocks, int) or blocks < 3 or blocks % 2 == 0:
        raise bad("MODEL.BLOCKS", f"must be an odd number >= 3 (e.g. 7), got {blocks!r}")
    multiple = 2 ** ((blocks - 1) // 2)
    crop = cfg.INPUT.CROP_SIZE
    if crop and crop % multiple:
        raise bad(
            "INPUT.CROP_SIZE",
            f"{crop} is not a multiple of {multiple}, which a U-Net with {blocks} blocks needs; "
            f"use {-(-crop // multiple) * multiple}",
        )
    if cfg.SOLVER.IMS_PER_BATCH < 1 or cfg.SOLVER.MAX_ITER < 0:
        raise bad("SOLVER", "IMS_PER_BATCH must be >= 1 and MAX_ITER >= 0")
    if cfg.SOLVER.EVAL_PERIOD < 0:
        raise bad("SOLVER.EVAL_PERIOD", f"must be >= 0, got {cfg.SOLVER.EVAL_PERIOD}")
    if cfg.SOLVER.EVAL_PERIOD and not cfg.DATASET.VAL_SPLITS:
        raise bad("SOLVER.EVAL_PERIOD", "needs DATASET.VAL_SPLITS (the images to score), e.g. "
                                        "DATASET.VAL_SPLITS \"['val']\"")
    for key, value in (("HEATMAP.SIGMA_NM", cfg.HEATMAP.SIGMA_NM),
                       ("HEATMAP.MIN_DISTANCE_NM", cfg.HEATMAP.MIN_DISTANCE_NM),
                       ("EVAL.MATCH_RADIUS_NM", cfg.EVAL.MATCH_RADIUS_NM)):
        if not value >= 0:
            raise bad(key, f"must be >= 0 nm (0: use the key in pixels), got {value!r}")
    if cfg.CV.FOLDS == 1 or cfg.CV.FOLDS < 0:
        raise bad("CV.FOLDS", f"must be 0 (no cross-validation) or >= 2, got {cfg.CV.FOLDS}")


def load_unet_config(config_file: str | Path | None, opts: Sequence[str] = ()) -> CN:
    """Read a dense-model config file and ``KEY VALUE`` overrides on top of the defaults.

    Raises
    ------
    emdet.config.ConfigError
        Missing or malformed file, unknown key, wrong value type or value; the message names
        the file (the one in the ``_BASE_`` chain that sets the key) and the key.
    """
    cfg = merge_config(get_unet_cfg(), config_file, opts)
    where = str(config_file) if config_file else "defaults"
    if opts:
        where += " (with command-line overrides)"
    _check(cfg, where)
    return cfg
