"""Checkpoints that are never half-written and never run code when loaded.

detectron2 (through fvcore) writes ``model_XXXXXXX.pth`` in place and then ``last_checkpoint``.
A job killed while writing leaves a truncated file; :class:`AtomicCheckpointer` writes both to a
temporary file in the same folder and renames it, so ``--resume`` always finds a complete one.
It loads ``.pth`` files with ``torch.load(weights_only=True)`` and detectron2 ``.pkl`` files with
:func:`emdet.engine.weights.safe_load_pkl`, and resolves ``MODEL.WEIGHTS`` names and URLs with
:func:`emdet.engine.weights.resolve_weights`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from emdet.engine.weights import resolve_weights, safe_load_pkl

__all__ = ["AtomicCheckpointer", "atomic_write_bytes"]


def atomic_write_bytes(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files appear complete or not at all."""

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
        return super().load(resolve_weights(path) if path else path, *args, **kwargs)

    def _load_file(self, filename: str) -> dict:
        if filename.endswith(".pkl"):
            data = safe_load_pkl(filename)
            if "model" in data and "__author__" in data:  # detectron2 model zoo format
                return data
            data = data.get("blobs", data)  # Caffe2 / Detectron1 format
            model = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": model, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):
            return super()._load_file(filename)
        loaded = torch.load(filename, map_location="cpu", weights_only=True)
        return loaded if "model" in loaded else {"model": loaded}
