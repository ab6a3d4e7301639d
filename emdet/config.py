"""emdet's configuration: detectron2's ``CfgNode`` plus the keys emdet adds.

:func:`add_emdet_config` is the one place every emdet key is defined, each with a one-line comment.
:func:`load_config` reads a YAML file (safe loader, ``_BASE_`` inheritance) and command-line
overrides, and turns detectron2's terse errors into :class:`ConfigError` naming file and key.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["ConfigError", "add_emdet_config", "get_emdet_cfg", "load_config", "merge_config"]


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the file and the key."""


def _add_input_config(cfg: CN) -> None:
    cfg.INPUT.EM = CN()
    # Intensity percentiles mapped to 0..255 when an image is loaded; [] maps min..max.
    cfg.INPUT.EM.CLIP_PERCENTILES = [0.5, 99.5]
    # Median filter size in pixels applied after loading (0 = off; Lin et al. use one).
    cfg.INPUT.EM.MEDIAN_BLUR = 0
    # Dtype of the network input: "auto" (uint8 for 8-bit files, float32 for 16/32-bit and
    # float data, which keeps their full precision), "uint8" or "float32"; the same in training,
    # --eval-only and predict.
    cfg.INPUT.EM.INPUT_DTYPE = "auto"
    # Background removal before the percentile stretch: "" (off), "highpass" (minus a Gaussian
    # blur; either polarity), "rolling_ball" (bright objects: HAADF, SEM) or "rolling_ball_dark"
    # (dark objects: bright-field TEM).
    cfg.INPUT.EM.BACKGROUND = ""
    # Radius (px) of that background: the Gaussian sigma or the ball; above the largest object.
    cfg.INPUT.EM.BACKGROUND_RADIUS = 50.0
    # Random 90-degree rotations during training (the seeds' augmentation).
    cfg.INPUT.EM.ROT90 = True
    # Random vertical flips during training (horizontal flips: INPUT.RANDOM_FLIP).
    cfg.INPUT.EM.VFLIP = True
    # Brightness jitter: intensity scaled by a factor drawn from [1 - B, 1 + B] (0 = off).
    cfg.INPUT.EM.BRIGHTNESS = 0.0
    # Contrast jitter around the mean: factor from [1 - C, 1 + C] (0 = off).
    cfg.INPUT.EM.CONTRAST = 0.0
    # Gamma drawn from [low, high] applied to intensities in 0..1 ([1, 1] = off).
    cfg.INPUT.EM.GAMMA = [1.0, 1.0]
    # Standard deviation of additive Gaussian noise in 0..255 units (0 = off).
    cfg.INPUT.EM.NOISE_STD = 0.0
    # Random crops of this many pixels (square) from images larger than it (0 = off).
    cfg.INPUT.EM.CROP_SIZE = 0


def _add_rotated_config(cfg: CN) -> None:
    # Give the model rotated gt_boxes (RotatedBoxes; axis-aligned annotations get angle 0); False
    # gives rotated (rbox) annotations to axis-aligned models as their enclosing boxes.
    cfg.INPUT.EM.ROTATED = False
    # Rotated boxes cut by the image border (crops) are shortened along their length to the part
    # inside; those with less than this fraction of their length inside are dropped.
    cfg.INPUT.EM.ROTATED_MIN_VISIBLE = 0.5
    cfg.MODEL.ROTATED = CN()
    # Angle deltas are regressed within one period: 180 (a box equals itself turned by half a
    # turn) or 90 (also w <-> h with a quarter turn); the target's equivalent closest in angle.
    cfg.MODEL.ROTATED.ANGLE_PERIOD = 90.0
    # ROI head proposal-to-ground-truth IoU: "rotated", "enclosing" (IoU of enclosing axis-aligned
    # boxes, for horizontal proposals) or "auto" (enclosing for the HRPN proposal generator).
    cfg.MODEL.ROTATED.MATCHING = "auto"


def _add_emdet_config(cfg: CN) -> None:
    cfg.EMDET = CN()
    # Folder with datasets/<name>/annotations/*.json; "" uses $EMDET_DATASETS or ./datasets.
    cfg.EMDET.DATASETS_ROOT = ""
    # Stop training with a clear error when the total loss is NaN/inf or exceeds this value.
    cfg.EMDET.MAX_LOSS = 1.0e4
    # Iterations between lines of training progress (console and metrics.json); detectron2's
    # fixed 20 meant minutes without a sign of life on a CPU.
    cfg.EMDET.LOG_PERIOD = 5
    # With TEST.EVAL_PERIOD > 0: keep OUTPUT_DIR/model_best.pth, the weights of the best value of
    # this metric on DATASETS.TEST (e.g. "segm/AP"; higher is better) with that evaluation's
    # calibrated score threshold stored inside; "" = off.
    cfg.EMDET.BEST_METRIC = ""
    # With BEST_METRIC and a MODEL.WEIGHTS to start from: evaluate the starting weights before
    # training, so model_best.pth stays the start unless fine-tuning beats it on DATASETS.TEST.
    cfg.EMDET.EVAL_START = True


def add_emdet_config(cfg: CN) -> CN:
    """Add every emdet key (with its default) to a detectron2 config, in place; return it."""
    _add_input_config(cfg)
    _add_rotated_config(cfg)
    _add_emdet_config(cfg)
    return cfg


def get_emdet_cfg() -> CN:
    """detectron2's defaults plus emdet's keys; the device defaults to CUDA when present."""
    import torch

    cfg = add_emdet_config(get_cfg())
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg


_KEY_RE = re.compile(r"config key: ([\w.]+)|Non-existent config key: ([\w.]+)")


def _key_from_error(err: Exception) -> str | None:
    match = _KEY_RE.search(str(err))
    return next((g for g in match.groups() if g), None) if match else None


def _find_key_file(config_file: Path, key: str) -> Path:
    """Which file in the ``_BASE_`` chain sets ``key`` (the given file if none is found)."""
    chain: list[Path] = []
    path: Path | None = config_file
    while path is not None and path.is_file() and path not in chain:
        chain.append(path)
        base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
        path = (path.parent / base).resolve() if isinstance(base, str) else None
    parts = key.split(".")
    for candidate in chain:
        node = yaml.safe_load(candidate.read_text()) or {}
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            return candidate
    return config_file


def load_config(config_file: str | Path | None, opts: Sequence[str] = ()) -> CN:
    """Read a config file and ``KEY VALUE`` overrides on top of :func:`get_emdet_cfg`.

    Raises
    ------
    ConfigError
        Missing or malformed file, unknown key or wrong value type; the message names the file
        (the one in the ``_BASE_`` chain that sets the key) and the key.
    """
    return merge_config(get_emdet_cfg(), config_file, opts)


def merge_config(cfg: CN, config_file: str | Path | None, opts: Sequence[str] = ()) -> CN:
    """Merge a YAML file (safe loader, ``_BASE_`` chain) and ``KEY VALUE`` overrides into
    ``cfg`` in place and return it; errors as :func:`load_config` (shared by the dense
    configs, :func:`emdet.dense.config.load_unet_config`)."""
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        check_base_chain(path)
        try:
            cfg.merge_from_file(str(path), allow_unsafe=False)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            key = _key_from_error(e)
            where = _find_key_file(path.resolve(), key) if key else path
            what = f"key {key}: " if key else ""
            raise ConfigError(f"{where}: {what}{_plain(e)}") from e
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got {list(opts)}")
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            key = _key_from_error(e)
            what = f"key {key}: " if key else ""
            raise ConfigError(f"command-line override {what}{_plain(e)}") from e
    check_values(cfg, str(config_file) if config_file else "config")
    return cfg


def _read_mapping(path: Path, referrer: Path | None) -> dict:
    via = f" (the _BASE_ of {referrer})" if referrer else ""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}{via}: not a text (UTF-8) YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}{via}: cannot be read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{via}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}{via}: a config must be a mapping of keys (KEY: value), "
                          f"not a {type(data).__name__}")
    return data


def check_base_chain(config_file: Path) -> list[Path]:
    """Walk the ``_BASE_`` chain of ``config_file`` with the safe loader; return its files.

    Raises
    ------
    ConfigError
        A file in the chain is missing, unreadable or not a mapping, a ``_BASE_`` is not a path
        (``_BASE_: 42``), or the chain loops back on itself; the message names the file.
    """
    chain: list[Path] = []
    path, referrer = Path(config_file).resolve(), None
    while True:
        if path in chain:
            loop = " -> ".join(str(p) for p in [*chain[chain.index(path):], path])
            raise ConfigError(f"{referrer}: _BASE_ loops back to a file already in the chain "
                              f"({loop}); remove the cycle.")
        if not path.is_file():
            raise ConfigError(f"{referrer}: _BASE_ {path} does not exist (paths are relative to "
                              "the file that names them).")
        chain.append(path)
        base = _read_mapping(path, referrer).get("_BASE_")
        if base is None:
            return chain
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: _BASE_ must be the path of another YAML config, got "
                              f"{base!r}")
        referrer, path = path, (path.parent / Path(base).expanduser()).resolve()


#: key -> (lowest allowed, highest allowed, inclusive low?) for keys whose nonsense values
#: would otherwise fail minutes later, deep inside training.
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "SOLVER.MAX_ITER": (1, None, True),
    "SOLVER.BASE_LR": (0, None, False),
    "SOLVER.IMS_PER_BATCH": (1, None, True),
    "SOLVER.CHECKPOINT_PERIOD": (1, None, True),
    "SOLVER.WARMUP_ITERS": (0, None, True),
    "SOLVER.WARMUP_FACTOR": (0, 1, True),
    "SOLVER.GAMMA": (0, None, False),
    "SOLVER.MOMENTUM": (0, 1, True),
    "SOLVER.WEIGHT_DECAY": (0, None, True),
    "TEST.EVAL_PERIOD": (0, None, True),
    "TEST.DETECTIONS_PER_IMAGE": (1, None, True),
    "MODEL.ROI_HEADS.NUM_CLASSES": (1, None, True),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": (0, 1, True),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": (0, 1, True),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": (1, None, True),
    "MODEL.RPN.NMS_THRESH": (0, 1, True),
    "INPUT.MIN_SIZE_TEST": (0, None, True),
    "INPUT.MAX_SIZE_TEST": (1, None, True),
    "INPUT.MAX_SIZE_TRAIN": (1, None, True),
    "DATALOADER.NUM_WORKERS": (0, None, True),
    "EMDET.MAX_LOSS": (0, None, False),
    "EMDET.LOG_PERIOD": (1, None, True),
    "INPUT.EM.BACKGROUND_RADIUS": (0, None, False),
}

#: String keys with a fixed set of values.
_CHOICES: dict[str, tuple[str, ...]] = {
    "INPUT.EM.INPUT_DTYPE": ("auto", "uint8", "float32"),
    "INPUT.EM.BACKGROUND": ("", "highpass", "rolling_ball", "rolling_ball_dark"),
}


def _walk(node: Any, prefix: str = ""):
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _walk(value, name + ".")
        else:
            yield name, value


def _numbers(value: Any):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)


def check_values(cfg: CN, where: str = "config") -> None:
    """Refuse NaN/infinite numbers anywhere and out-of-range values of the keys in ``_RANGES``.

    Raises
    ------
    ConfigError
        Naming ``where`` (the config file), the key, the value and the allowed range.
    """
    for name, value in _walk(cfg):
        if any(isinstance(v, float) and not math.isfinite(v) for v in _numbers(value)):
            raise ConfigError(f"{where}: {name} is {value!r}; every number in a config must be "
                              "finite (not NaN or infinite).")
        choices = _CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ConfigError(f"{where}: {name} is {value!r}; it must be one of "
                              f"{', '.join(repr(c) for c in choices)}.")
        limits = _RANGES.get(name)
        if limits is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high, inclusive = limits
        too_low = low is not None and (value < low if inclusive else value <= low)
        too_high = high is not None and value > high
        if too_low or too_high:
            lo = "" if low is None else (f">= {low:g}" if inclusive else f"> {low:g}")
            hi = "" if high is None else f"<= {high:g}"
            allowed = " and ".join(x for x in (lo, hi) if x)
            raise ConfigError(f"{where}: {name} is {value!r}; it must be {allowed}.")


def _plain(err: Exception) -> str:
    text = str(err.args[0]) if err.args else str(err)
    if text.startswith("Non-existent config key"):
        return "no such config key (check its spelling and section)"
    return text
