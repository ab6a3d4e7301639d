"""Checkpoints and inference of the dense models: probabilities, label masks and points.

:class:`DensePredictor` is the one object inference needs (like detectron2's
``DefaultPredictor``): it rebuilds the U-Net from a checkpoint, preprocesses a raw image exactly
as in training, pads it to the network's size multiple (or cuts it into overlapping tiles when
it is large) and returns class probabilities ``(C, H, W)``, a label mask or points.

Checkpoints are plain dicts of tensors, numbers and strings, written atomically
(:mod:`emdet.utils.atomic`) and read by :func:`emdet.engine.weights.load_weights_file`, the
loader of every emdet tool, so loading one cannot run code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emdet.dense.unet import UNet, pad_to_multiple
from emdet.engine.weights import (
    WeightsError,
    load_dense_safetensors,
    load_weights_file,
    resolve_weights,
)

__all__ = [
    "CheckpointError",
    "DensePredictor",
    "build_unet",
    "heatmap_thresholds",
    "load_checkpoint",
    "predict_probabilities",
    "resolve_device",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)


class CheckpointError(WeightsError, ValueError):
    """A checkpoint file is missing, unreadable or not an emdet dense-model checkpoint."""


def resolve_device(spec: str = "") -> torch.device:
    """``spec`` as a device; ``""`` is CUDA when available, else the CPU."""
    if not spec:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"MODEL.DEVICE {spec!r} but CUDA is not available here; use 'cpu' or "
                         "leave MODEL.DEVICE empty.")
    return device


def build_unet(cfg, num_classes: int) -> UNet:
    """The U-Net described by ``cfg.MODEL`` with ``num_classes`` outputs."""
    return UNet(
        in_channels=int(cfg.MODEL.IN_CHANNELS),
        classes=int(num_classes),
        blocks=int(cfg.MODEL.BLOCKS),
        features=int(cfg.MODEL.FEATURES),
        batch_norm=bool(cfg.MODEL.BATCH_NORM),
    )


def architecture(model: UNet) -> dict[str, Any]:
    """Constructor arguments of ``model`` (stored in checkpoints)."""
    return {
        "in_channels": model.in_channels,
        "classes": model.classes,
        "blocks": model.blocks,
        "features": model.features,
        "batch_norm": model.batch_norm,
    }


def save_checkpoint(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` with :func:`torch.save` to a temporary file, then rename it to ``path``.

    An interrupted write leaves the previous file (if any) intact.
    """
    from emdet.engine.checkpoint import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(str(path), lambda f: torch.save(data, f))
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with :func:`emdet.engine.weights.load_weights_file` (no code runs).

    ``path`` is a file written by ``tools/train_unet.py``, a ``.safetensors`` file, or a model
    shipped with emdet (``emdet://haadf-atoms-unet``, sha256-checked).

    Raises
    ------
    CheckpointError
        The file does not exist, is truncated/corrupt, or holds something other than a dict
        with a ``"model"`` state dict.
    """
    name = os.fspath(path)
    try:
        local = resolve_weights(name) if name.startswith("emdet://") else name
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    path = Path(local)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (MODEL.WEIGHTS / --weights)")
    try:
        if path.suffix == ".safetensors":
            data = load_dense_safetensors(str(path), map_location=str(map_location))
        else:
            data = load_weights_file(path, map_location=map_location)
    except WeightsError as e:
        raise CheckpointError(
            f"checkpoint {e} (MODEL.WEIGHTS / --weights; dense-model checkpoints are written by "
            "tools/train_unet.py)"
        ) from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"checkpoint {path} has no 'model' weights; is it an emdet "
                              "dense-model checkpoint (model_final.pth)?")
    return data


@torch.inference_mode()
def predict_probabilities(
    model: UNet,
    image: np.ndarray,
    *,
    task: str,
    device: torch.device | str | None = None,
    tile: int = 1024,
    overlap: int = 64,
) -> np.ndarray:
    """Class probabilities (softmax) or heatmaps (sigmoid) of one preprocessed image.

    Parameters
    ----------
    model : UNet
        In eval mode.
    image : numpy.ndarray
        ``(H, W)`` float32, already preprocessed (:func:`emdet.dense.data.preprocess_image`).
    task : {"segmentation", "heatmap"}, keyword-only
    device : keyword-only
        Default: the model's device.
    tile : int, keyword-only, default 1024
        Images with a side above this are predicted in ``tile`` x ``tile`` tiles (rounded up
        to the size multiple) that overlap by ``overlap`` pixels and are averaged (0 = never).
    overlap : int, keyword-only, default 64

    Returns
    -------
    numpy.ndarray
        ``(C, H, W)`` float32.
    """
    from emdet.data.tiling import stitch_tiles, tile_image

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"predict_probabilities needs one (H, W) image, got {image.shape}.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    multiple = model.size_multiple

    def run(arr: np.ndarray) -> np.ndarray:
        padded, crop = pad_to_multiple(arr, multiple)
        x = torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device)
        logits = model(x)[0]
        probs = torch.softmax(logits, 0) if task == "segmentation" else torch.sigmoid(logits)
        return probs[:, crop[0], crop[1]].float().cpu().numpy()

    h, w = image.shape
    if not tile or max(h, w) <= tile:
        return run(image)
    tile = -(-int(tile) // multiple) * multiple
    overlap = min(int(overlap), tile - multiple)
    parts = [(y0, x0, np.moveaxis(run(np.asarray(t)), 0, -1))
             for y0, x0, t in tile_image(image, tile, overlap=overlap)]
    return np.moveaxis(stitch_tiles(parts, (h, w), dtype=np.float32), -1, 0)


class DensePredictor:
    """Run a trained dense model on raw images.

    Parameters
    ----------
    cfg : CfgNode
        Dense config (:func:`emdet.dense.config.load_unet_config`); ``MODEL.WEIGHTS`` is the
        checkpoint unless ``weights`` is given. The architecture, task and classes stored in the
        checkpoint win over the config's (a note is logged when they differ).
    weights : path, optional
    device : str, optional
        Default ``cfg.MODEL.DEVICE`` (CUDA when available).

    Attributes
    ----------
    model : UNet
    classes : tuple of str
    task : str
    """

    def __init__(self, cfg, weights: str | os.PathLike | None = None,
                 device: str | None = None):
        path = weights or cfg.MODEL.WEIGHTS
        if not path:
            raise CheckpointError("no weights: set MODEL.WEIGHTS path/to/model_final.pth (or "
                                  "--weights) to a checkpoint written by tools/train_unet.py")
        self.device = resolve_device(device if device is not None else cfg.MODEL.DEVICE)
        data = load_checkpoint(path, map_location="cpu")
        self.cfg = _with_training_input(cfg, data.get("cfg"), path)
        arch = data.get("arch") or {}
        self.task = str(data.get("task", cfg.TASK))
        if self.task != cfg.TASK:
            logger.warning("%s was trained for TASK %r; the config says %r. Using %r.",
                           path, self.task, cfg.TASK, self.task)
        classes = data.get("classes")
        self.classes = tuple(classes) if classes else tuple(cfg.DATASET.CLASSES)
        try:
            self.model = UNet(**arch) if arch else build_unet(cfg, len(self.classes))
            self.model.load_state_dict(data["model"])
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{path}: weights do not fit the network ({e}); check "
                                  "MODEL.BLOCKS/FEATURES/BATCH_NORM and DATASET.CLASSES, or "
                                  "give a checkpoint written by tools/train_unet.py") from None
        if not self.classes:
            self.classes = tuple(f"class_{i}" for i in range(self.model.classes))
        self.model.to(self.device).eval()
        self.weights = Path(path)
        #: Peak thresholds calibrated in training (per class), or None.
        self.stored_thresholds = data.get("heatmap_thresholds")

    @property
    def thresholds(self) -> float | list[float]:
        """Heatmap peak thresholds: the checkpoint's calibrated ones (``HEATMAP.CALIBRATE``,
        the default) or ``HEATMAP.THRESHOLD``."""
        return heatmap_thresholds(self.cfg, self.stored_thresholds)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` float32 probabilities (or heatmaps) of a raw ``(H, W)`` image."""
        from emdet.dense.data import preprocess_image

        return predict_probabilities(
            self.model, preprocess_image(image, self.cfg), task=self.task, device=self.device,
            tile=int(self.cfg.PREDICT.TILE), overlap=int(self.cfg.PREDICT.TILE_OVERLAP),
        )

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label mask ``(H, W)`` uint8 (argmax) and the probabilities ``(C, H, W)``."""
        probs = self.probabilities(image)
        return probs.argmax(0).astype(np.uint8), probs

    def points(self, image: np.ndarray, pixel_size: float | None = None, *,
               where: str = "the image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points ``(N, 2)`` ``(x, y)``, class indices ``(N,)`` and scores ``(N,)``.

        Heatmap models: peaks of each channel above its threshold (:attr:`thresholds`) at
        least ``HEATMAP.MIN_DISTANCE`` apart (``HEATMAP.MIN_DISTANCE_NM`` needs
        ``pixel_size``, the image's nm per pixel; ``where`` names the image in the error). Segmentation models: centroids of the predicted regions of every class but the
        first (background).
        """
        from emdet.dense.heatmap import heatmap_points, points_from_labels
        from emdet.dense.units import length_px

        if self.task == "heatmap":
            distance = max(1, round(length_px(self.cfg, "HEATMAP.MIN_DISTANCE", pixel_size,
                                              where)))
            return heatmap_points(self.probabilities(image), threshold=self.thresholds,
                                  min_distance=distance)
        probs = self.probabilities(image)
        xy, cls, scores = points_from_labels(probs.argmax(0), probabilities=probs)
        return xy, cls, scores


def heatmap_thresholds(cfg, stored) -> float | list[float]:
    """The peak thresholds to use: those stored with the model (``HEATMAP.CALIBRATE``) or
    ``HEATMAP.THRESHOLD``."""
    if cfg.HEATMAP.CALIBRATE and stored is not None:
        return [float(t) for t in stored]
    return float(cfg.HEATMAP.THRESHOLD)


def _with_training_input(cfg, trained_cfg: str | None, path) -> Any:
    """``cfg`` with the ``INPUT`` preprocessing the checkpoint was trained with.

    The network only works on intensities prepared as in training, so the checkpoint's
    ``INPUT`` section wins; a warning names the keys that differ from ``cfg``.
    """
    if not trained_cfg:
        return cfg
    from detectron2.config import CfgNode as CN

    try:
        trained = CN.load_cfg(trained_cfg)  # yacs reads it with yaml.safe_load
    except Exception:  # noqa: BLE001 - an unreadable stored config only loses this check
        logger.warning("%s: stored training config is unreadable; using the given INPUT", path)
        return cfg
    if "INPUT" not in trained:
        return cfg
    out = cfg.clone()
    out.defrost()
    differ = [k for k in ("PREPROCESS", "CLIP_PERCENTILES", "MEDIAN_BLUR")
              if k in trained.INPUT and list(np.atleast_1d(trained.INPUT[k])) != list(
                  np.atleast_1d(cfg.INPUT[k]))]
    if differ:
        logger.warning("%s was trained with INPUT.%s = %s; using those, not the config's %s",
                       path, "/".join(differ), [trained.INPUT[k] for k in differ],
                       [cfg.INPUT[k] for k in differ])
    for key in ("PREPROCESS", "CLIP_PERCENTILES", "MEDIAN_BLUR"):
        if key in trained.INPUT:
            out.INPUT[key] = trained.INPUT[key]
    out.freeze()
    return out
