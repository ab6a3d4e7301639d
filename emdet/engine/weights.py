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
* ``emdet://NAME`` names a model shipped inside emdet (``emdet/model_zoo/models.json``: file,
  sha256, the config that trained it, its calibrated score threshold); the file is checked
  against its sha256 before use.
* A torchvision or timm ImageNet ResNet state dict (``resnet18-f37072fd.pth`` from
  ``torchvision.models``, timm's ``model.safetensors``), given as a local file, is converted to
  detectron2's backbone names (:func:`torchvision_resnet_to_detectron2`).

A refused or unreadable file raises :class:`WeightsError` naming the file and what was refused.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "EMDET_PREFIX",
    "IMAGENET_INPUT",
    "WeightsError",
    "cache_path_for",
    "export_to_zoo",
    "is_torchvision_resnet",
    "load_weights_file",
    "model_zoo",
    "resolve_weights",
    "safe_load_pkl",
    "sha256_of",
    "stored_score_threshold",
    "torchvision_resnet_to_detectron2",
]

D2_PREFIX = "detectron2://"
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"
EMDET_PREFIX = "emdet://"
ZOO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_zoo")

#: What a torchvision/timm ImageNet backbone expects of its input, as detectron2 config keys.
IMAGENET_INPUT = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.NORM": "FrozenBN",
}


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


def sha256_of(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_zoo() -> dict[str, dict[str, Any]]:
    """The models shipped with emdet: ``name -> {file, sha256, config, ...}``."""
    import json

    path = os.path.join(ZOO_DIR, "models.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _zoo_file(name: str) -> str:
    zoo = model_zoo()
    if name not in zoo:
        raise WeightsError(
            f"MODEL.WEIGHTS {EMDET_PREFIX}{name}: no such shipped model; emdet ships "
            + (", ".join(EMDET_PREFIX + k for k in sorted(zoo)) or "none in this install")
            + f" ({os.path.join(ZOO_DIR, 'models.json')})."
        )
    entry = zoo[name]
    path = os.path.join(ZOO_DIR, entry["file"])
    if not os.path.isfile(path):
        raise WeightsError(f"MODEL.WEIGHTS {EMDET_PREFIX}{name}: {path} is missing from this "
                           "install; reinstall emdet (or git checkout the file).")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise WeightsError(
            f"MODEL.WEIGHTS {EMDET_PREFIX}{name}: {path} has sha256 {digest}, not the recorded "
            f"{entry['sha256']}; the file is damaged or was replaced. Reinstall emdet (or git "
            "checkout the file)."
        )
    return path


def resolve_weights(path: str) -> str:
    """Return a local file for ``MODEL.WEIGHTS`` (``""`` stays ``""``: random initialisation)."""
    if not path:
        return ""
    if path.startswith(EMDET_PREFIX):
        return _zoo_file(path[len(EMDET_PREFIX):])
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
            "tools/train_net.py, a detectron2 .pkl, a torchvision/timm ResNet file (e.g. "
            "resnet18-f37072fd.pth, downloaded on a machine with internet by "
            "torchvision.models.resnet18(weights='IMAGENET1K_V1') into ~/.cache/torch/hub/"
            "checkpoints/), a shipped model (emdet://em-particles-r18), or \"\" for random "
            "initialisation."
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


def is_torchvision_resnet(state: Any) -> bool:
    """Whether a state dict has torchvision/timm ResNet names (``conv1``, ``layer1.0...``)."""
    if not isinstance(state, dict):
        return False
    keys = [k for k in state if isinstance(k, str)]
    return "conv1.weight" in keys and any(k.startswith("layer1.0.") for k in keys) and not any(
        k.startswith(("backbone.", "res2.", "stem.")) for k in keys)


def torchvision_resnet_to_detectron2(state: dict[str, Any]) -> dict[str, Any]:
    """Rename a torchvision/timm ResNet state dict to detectron2's ResNet backbone names.

    The renaming of detectron2's ``tools/convert-torchvision-to-d2.py``: ``conv1``/``bn1`` ->
    ``stem.conv1``/``stem.conv1.norm``, ``layerN`` -> ``res{N+1}``, ``bnK`` -> ``convK.norm``,
    ``downsample.0/1`` -> ``shortcut``/``shortcut.norm``; the classifier ``fc`` is dropped.
    The result is in detectron2's model-zoo form (``matching_heuristics``), so the names find
    ``backbone.bottom_up.*`` of an FPN model. The network then needs the input torchvision
    trained it on, :data:`IMAGENET_INPUT` (RGB, ImageNet mean/std in 0..255,
    ``STRIDE_IN_1X1 False``, BatchNorm statistics kept by ``FrozenBN``).
    """
    out = {}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        new = key if key.startswith("layer") else "stem." + key
        for i in (1, 2, 3, 4):
            new = new.replace(f"layer{i}.", f"res{i + 1}.")
        for i in (1, 2, 3):
            new = new.replace(f"bn{i}.", f"conv{i}.norm.")
        new = new.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        out[new] = value.detach().cpu().numpy() if hasattr(value, "detach") else value
    return {"model": out, "__author__": "torchvision", "matching_heuristics": True}


def export_to_zoo(
    checkpoint: str | os.PathLike,
    name: str,
    *,
    config: str,
    score_threshold: float | None = None,
    description: str = "",
    figures: dict[str, Any] | None = None,
    zoo_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Store a checkpoint's model as a compact fp16 ``.safetensors`` shipped as ``emdet://name``.

    Floating-point tensors are halved to fp16 (the model is float32 again when loaded; fp16
    keeps 3 significant digits, far below what 2 000 iterations of SGD resolve), other tensors
    kept. The file's metadata and ``models.json`` record the config that trained it, the
    calibrated ``score_threshold`` (read by predict), its sha256 and size. Both files are
    written atomically; the entry of another name is left as it is.

    Returns
    -------
    dict
        The ``models.json`` entry.
    """
    import json

    import torch
    from safetensors.torch import save

    from emdet.utils.atomic import atomic_write_many

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise WeightsError(f"model name {name!r}: use lower-case letters, digits, '.', '_', '-'")
    data = load_weights_file(checkpoint)
    state = data.get("model", data)
    tensors = {}
    for key, value in state.items():
        value = torch.as_tensor(value).detach().cpu()
        tensors[key] = (value.half() if value.is_floating_point() else value).contiguous()
    if score_threshold is None and isinstance(data.get("score_threshold"), int | float):
        score_threshold = float(data["score_threshold"])
    metadata = {"emdet_name": name, "config": config, "source": os.path.basename(
        os.fspath(checkpoint)), "iteration": str(data.get("iteration", ""))}
    dense = {k: data[k] for k in DENSE_META if k in data}
    if "arch" in dense:  # a U-Net checkpoint of tools/train_unet.py: keep what loading needs
        metadata["dense"] = json.dumps(dense)
    if score_threshold is not None:
        metadata["score_threshold"] = f"{score_threshold:.6g}"
    blob = save(tensors, metadata=metadata)
    zoo = os.fspath(zoo_dir) if zoo_dir is not None else ZOO_DIR
    import hashlib

    entry = {"file": f"{name}.safetensors", "sha256": hashlib.sha256(blob).hexdigest(),
             "bytes": len(blob), "config": config, "description": description,
             "iteration": data.get("iteration"), "score_threshold": score_threshold,
             "figures": figures or {}}
    if "arch" in dense:
        entry |= {"task": dense.get("task"), "classes": dense.get("classes"),
                  "heatmap_thresholds": dense.get("heatmap_thresholds")}
    index_path = os.path.join(zoo, "models.json")
    index = {}
    if os.path.isfile(index_path):
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    index[name] = entry
    atomic_write_many([(os.path.join(zoo, entry["file"]), blob),
                       (index_path, json.dumps(index, indent=2, sort_keys=True) + "\n")])
    return entry


#: What a dense (U-Net) checkpoint carries besides its weights; kept in a shipped file's metadata.
DENSE_META = ("cfg", "classes", "task", "arch", "heatmap_thresholds")


def load_dense_safetensors(filename: str, map_location: Any = "cpu") -> dict:
    """A shipped dense model as the checkpoint dict ``tools/train_unet.py`` writes: float32
    ``model`` tensors plus the ``cfg``/``classes``/``task``/``arch``/``heatmap_thresholds`` kept
    in the file's metadata (a bare state dict when it has none)."""
    import json

    tensors = _load_safetensors(filename, map_location)
    try:
        from safetensors import safe_open

        with safe_open(filename, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("dense") or "{}")
    except (ValueError, OSError) as e:
        raise WeightsError(f"{filename}: unreadable 'dense' metadata ({e}).") from None
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    return {**{k: meta[k] for k in DENSE_META if k in meta}, "model": state}


def stored_score_threshold(path: str | os.PathLike) -> float | None:
    """The ``score_threshold`` a weights file carries itself (checkpoint key or safetensors
    metadata), or None."""
    path = os.fspath(path)
    value: Any = None
    if path.endswith(".safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                value = (f.metadata() or {}).get("score_threshold")
        except Exception:  # noqa: BLE001 - an unreadable file is reported when it is loaded
            return None
    elif path.endswith((".pth", ".pt")):
        try:
            value = load_weights_file(path).get("score_threshold")
        except WeightsError:
            return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if 0 <= value <= 1 else None
