"""Checkpoints that are never half-written and never run code when loaded.

detectron2 (through fvcore) writes ``model_XXXXXXX.pth`` in place and then ``last_checkpoint``.
A job killed while writing leaves a truncated file; :class:`AtomicCheckpointer` writes both
through :func:`emdet.utils.atomic.atomic_open`, so ``--resume`` always finds a complete one, and
removes the temporary files of writers that were killed. Every file, ``.pth``, ``.pkl`` or
``.safetensors``, is read by :func:`emdet.engine.weights.load_weights_file` (tensors and plain
containers only), and ``MODEL.WEIGHTS`` names and URLs are resolved by
:func:`emdet.engine.weights.resolve_weights`. It is the one checkpointer of every tool:
training, ``--eval-only``, prediction and benchmarks.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from emdet.engine.weights import (
    IMAGENET_INPUT,
    WeightsError,
    is_torchvision_resnet,
    load_weights_file,
    resolve_weights,
    torchvision_resnet_to_detectron2,
)
from emdet.utils.atomic import atomic_open, clean_stale_temps

__all__ = ["AtomicCheckpointer", "atomic_write_bytes"]


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary binary file that then replaces ``path``."""
    with atomic_open(path, "wb") as f:
        write(f)


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files appear complete or not at all, loaded safely."""

    def __init__(self, model, save_dir: str = "", **kwargs: Any):
        super().__init__(model, save_dir, **kwargs)
        if self.save_dir and self.save_to_disk:
            for path in clean_stale_temps(self.save_dir):
                self.logger.info(f"Removed {path}, left by a run that was killed while saving")

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write_bytes(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write_bytes(path, lambda f: f.write(last_filename_basename.encode()))

    def load(self, path, *args, **kwargs):
        path = resolve_weights(path) if path else path
        try:
            return super().load(path, *args, **kwargs)
        except WeightsError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # fvcore's own checks of what the file holds (e.g. "Unsupported type found in
            # checkpoint"), after load_weights_file has already refused anything with code
            raise WeightsError(f"{path}: not a usable checkpoint ({type(e).__name__}: {e}); "
                               "give a model_final.pth written by emdet or a detectron2 model "
                               "zoo file") from None

    def _load_file(self, filename: str) -> dict:
        data = load_weights_file(filename)
        if filename.endswith(".pkl"):
            if "model" in data and "__author__" in data:  # detectron2 model zoo format
                return data
            data = data.get("blobs", data)  # Caffe2 / Detectron1 format
            model = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}
        state = data.get("state_dict", data) if "model" not in data else data["model"]
        if is_torchvision_resnet(state):
            self.logger.info(
                f"{filename}: a torchvision/timm ResNet; its names are converted to detectron2's "
                "backbone. It expects " + ", ".join(f"{k} {v}" for k, v in IMAGENET_INPUT.items())
                + " (configs/real/mask_rcnn_imagenet_cpu.yaml sets them)."
            )
            return torchvision_resnet_to_detectron2(state)
        return data if "model" in data else {"model": data}
