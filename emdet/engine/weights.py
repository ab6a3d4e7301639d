"""``MODEL.WEIGHTS``: model-zoo names, URLs and local files, with errors that say what to do.

Every tool loads weights through :func:`load_weights_file` (training, ``--eval-only``,
prediction, the dense models, benchmarks), so no file from elsewhere can run code:

* ``detectron2://...`` and ``https://...`` are fetched once into iopath's cache
  (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``); with no network the error names the URL
  to download elsewhere and the exact path to put the file at.
* Local ``.pth`` checkpoints are read by ``torch.load`` with ``weights_only=True``.
* Local ``.pkl`` files (detectron2's model zoo format) are unpickled with a loader that only
  accepts numpy arrays and plain containers, so a tampered file cannot run code.
* ``.safetensors`` files (the format of Hugging Face / timm) hold tensors only by design.

A refused or unreadable file raises :class:`WeightsError` naming the file and what was refused.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "WeightsError",
    "cache_path_for",
    "load_weights_file",
    "resolve_weights",
    "safe_load_pkl",
]

D2_PREFIX = "detectron2://"
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


class WeightsError(OSError):
    """MODEL.WEIGHTS cannot be used; the message says why and what to do."""


def _url_of(path: str) -> str:
    return D2_URL + path[len(D2_PREFIX):] if path.startswith(D2_PREFIX) else path


def cache_path_for(path: str) -> str:
    """Where iopath keeps (or looks for) the downloaded copy of ``path``."""
    from iopath.common.file_io import get_cache_dir

    url = urlparse(_url_of(path))
    return os.path.join(get_cache_dir(), os.path.dirname(url.path.lstrip("/")),
                        url.path.split("/")[-1])


def resolve_weights(path: str) -> str:
    """Return a local file for ``MODEL.WEIGHTS`` (``""`` stays ``""``: random initialisation)."""
    if not path:
        return ""
    if path.startswith(D2_PREFIX) or path.startswith(("http://", "https://")):
        cached = cache_path_for(path)
        if os.path.isfile(cached):
            return cached
        from detectron2.utils.file_io import PathManager

        try:
            return PathManager.get_local_path(path)
        except Exception as e:  # network errors come in many types
            raise WeightsError(
                f"MODEL.WEIGHTS {path}: could not download {_url_of(path)} ({e}). On a machine "
                f"with internet, download that file and copy it to {cached} (emdet then finds "
                "it), or pass MODEL.WEIGHTS /path/to/the/file. To train from scratch, set "
                'MODEL.WEIGHTS "".'
            ) from e
    local = os.path.expanduser(path)
    if not os.path.isfile(local):
        raise WeightsError(
            f"MODEL.WEIGHTS {path}: no such file. Give the path of a .pth checkpoint written by "
            "tools/train_net.py or a detectron2 .pkl, or \"\" for random initialisation."
        )
    return local


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS or (
            module in {"numpy", "numpy.dtypes"} and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a weights .pkl should hold only numpy arrays"
        )


_REFUSAL_HINT = (
    "emdet loads weights as tensors, numbers and plain containers only, so that a file from "
    "elsewhere cannot run code. If you made this file yourself, save only the weights again, "
    "e.g. torch.save({'model': model.state_dict()}, 'clean.pth')."
)


def safe_load_pkl(filename: str) -> dict:
    """Unpickle a detectron2-style ``.pkl`` allowing only numpy arrays and plain containers."""
    with open(filename, "rb") as f:
        try:
            data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise WeightsError(f"{filename}: refused: {e}. {_REFUSAL_HINT}") from None
        except Exception as e:  # noqa: BLE001 - any other failure means a truncated/bad file
            raise WeightsError(
                f"{filename}: not a readable weights .pkl ({type(e).__name__}: {e}); it may be "
                "truncated or not a detectron2 model file."
            ) from None
    if not isinstance(data, dict):
        raise WeightsError(
            f"{filename}: holds a {type(data).__name__}, not a dict of weights; is it a "
            "detectron2 model .pkl?"
        )
    return data


def _torch_refusal(e: Exception) -> str:
    """The one useful line of torch's weights_only refusal (its text advises unsafe loading)."""
    text = str(e)
    match = re.search(r"Unsupported (?:global: GLOBAL [\w.]+|operand \S+)", text)
    if match:
        return match.group(0).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _load_torch(filename: str, map_location: Any) -> Any:
    import torch

    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{filename}: refused: {_torch_refusal(e)}. {_REFUSAL_HINT}") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a bad file
        raise WeightsError(
            f"{filename}: not a readable PyTorch weights file ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); it may be truncated, or not "
            "a checkpoint (.pth) at all."
        ) from None


def _load_safetensors(filename: str, map_location: Any) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise WeightsError(
            f"{filename}: reading .safetensors needs the 'safetensors' package "
            "(pip install safetensors)."
        ) from None
    device = str(map_location) if map_location is not None else "cpu"
    try:
        return dict(load_file(filename, device=device))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(
            f"{filename}: not a readable .safetensors file ({type(e).__name__}: {e})."
        ) from None


def load_weights_file(filename: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Read a local weights file without running any code it may contain.

    Parameters
    ----------
    filename : str or PathLike
        ``.pkl`` (detectron2 model zoo, numpy arrays only), ``.safetensors``, or anything else
        as a PyTorch file (``.pth``, ``.pt``, ``.pyth``, ``.bin``) read with
        ``torch.load(weights_only=True)``.
    map_location : str or torch.device
        Where tensors of a PyTorch file go (default the CPU).

    Returns
    -------
    dict
        The file's content as stored (a checkpoint dict, or a bare state dict).

    Raises
    ------
    WeightsError
        Missing, truncated or refused file; the message names the file and what was refused.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise WeightsError(f"{filename}: no such weights file.")
    if filename.endswith(".pkl"):
        return safe_load_pkl(filename)
    if filename.endswith(".safetensors"):
        return _load_safetensors(filename, map_location)
    data = _load_torch(filename, map_location)
    if not isinstance(data, dict):
        raise WeightsError(
            f"{filename}: holds a {type(data).__name__}, not a dict of weights (a state dict "
            "or a checkpoint with a 'model' entry)."
        )
    return data
