"""``MODEL.WEIGHTS``: model-zoo names, URLs and local files, with errors that say what to do.

* ``detectron2://...`` and ``https://...`` are fetched once into iopath's cache
  (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``); with no network the error names the URL
  to download elsewhere and the exact path to put the file at.
* Local ``.pth`` checkpoints are read by ``torch.load`` with ``weights_only=True``.
* Local ``.pkl`` files (detectron2's model zoo format) are unpickled with a loader that only
  accepts numpy arrays and plain containers, so a tampered file cannot run code.
"""
from __future__ import annotations

import os
import pickle
from urllib.parse import urlparse

__all__ = ["WeightsError", "cache_path_for", "resolve_weights", "safe_load_pkl"]

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


def safe_load_pkl(filename: str) -> dict:
    """Unpickle a detectron2-style ``.pkl`` allowing only numpy arrays and plain containers."""
    with open(filename, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as e:
            raise WeightsError(f"{filename}: {e}") from e
