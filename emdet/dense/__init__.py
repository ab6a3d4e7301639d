"""Dense (per-pixel) models for EM images: U-Net segmentation and heatmaps, and the Bragg filter.

* :mod:`emdet.dense.unet`: :class:`UNet` (padded, any depth/width, ``in_channels=1``) and
  :func:`pad_to_multiple`.
* :mod:`emdet.dense.bragg`: :class:`BraggFilter` and :func:`fit_bragg_filter` (Sadre et al.
  eq. 4-6), built from pure functions.
* :mod:`emdet.dense.heatmap`: Gaussian heatmap targets and peak finding (Lin et al.).
* :mod:`emdet.dense.config`, :mod:`emdet.dense.data`, :mod:`emdet.dense.train`,
  :mod:`emdet.dense.predict`: config keys, data set loading, training with k-fold
  cross-validation, checkpoints and :class:`DensePredictor`.
* :mod:`emdet.dense.apply`: batch segmentation and point detection over files (the tools).
"""

from emdet.dense.bragg import BraggFilter, fit_bragg_filter
from emdet.dense.config import add_unet_config, get_unet_cfg, load_unet_config
from emdet.dense.cv import kfold_splits, summarize_folds
from emdet.dense.heatmap import find_peaks, gaussian_heatmap, heatmap_points, points_from_labels
from emdet.dense.predict import DensePredictor, load_checkpoint, save_checkpoint
from emdet.dense.unet import UNet, pad_to_multiple

__all__ = [
    "BraggFilter",
    "DensePredictor",
    "UNet",
    "add_unet_config",
    "find_peaks",
    "fit_bragg_filter",
    "gaussian_heatmap",
    "get_unet_cfg",
    "heatmap_points",
    "kfold_splits",
    "load_checkpoint",
    "load_unet_config",
    "pad_to_multiple",
    "points_from_labels",
    "save_checkpoint",
    "summarize_folds",
]
