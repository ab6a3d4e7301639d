"""Search spaces: YAML files mapping config keys to distributions, checked before any training.

A space file::

    SOLVER.BASE_LR: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
    SOLVER.MAX_ITER: {type: int, low: 100, high: 400, step: 100}
    INPUT.EM.BRIGHTNESS: {type: uniform, low: 0.0, high: 0.3}
    MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE: {type: choice, values: [64, 128, 256]}
    MODEL.ANCHOR_GENERATOR.SIZES: {type: choice, values: [[[8], [16], [32], [64], [128]],
                                                         [[16], [32], [64], [128], [256]]]}

Types: ``loguniform`` and ``uniform`` (float, ``low``/``high``), ``int`` (``low``/``high``,
optional ``step``, ``log``), ``choice`` (``values``: any YAML values, lists included).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Param", "SearchSpace", "SpaceError", "load_space"]

TYPES = ("loguniform", "uniform", "int", "choice")


class SpaceError(ValueError):
    """A search space is wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False
    values: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        """Draw a value from an Optuna trial (choices are stored as JSON strings)."""
        if self.type == "choice":
            return json.loads(trial.suggest_categorical(self.key, [_enc(v) for v in self.values]))
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high),
                                     step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.type == "loguniform")

    def grid(self) -> list[Any]:
        """All values, for grid search (``choice`` and ``int`` only)."""
        if self.type == "choice":
            return [_enc(v) for v in self.values]
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        raise SpaceError(f"{self.key}: a {self.type} range cannot be searched on a grid; "
                         "use type: choice with the values to try")

    def example(self) -> Any:
        """A valid value (used to check the key against the config before training)."""
        if self.type == "choice":
            return self.values[0]
        return int(self.low) if self.type == "int" else float(self.low)


def _enc(value: Any) -> str:
    return json.dumps(value)


@dataclass(frozen=True)
class SearchSpace:
    """Ordered parameters of a space file."""

    params: tuple[Param, ...]
    path: str = "<space>"

    def sample(self, trial) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        return {p.key: p.grid() for p in self.params}

    def check(self, apply: Callable[[list[str]], object]) -> None:
        """Check every key and an example value with ``apply(opts)`` (e.g. a config merge).

        ``apply`` gets ``[KEY, VALUE]`` and must raise on an unknown key or a wrong type; the
        error is re-raised as :class:`SpaceError` naming this file and the key.
        """
        for p in self.params:
            try:
                apply(to_opts({p.key: p.example()}))
            except Exception as e:  # the config system raises several types
                raise SpaceError(f"{self.path}: {p.key}: {e}") from e


def to_opts(values: dict[str, Any]) -> list[str]:
    """``{KEY: value}`` as detectron2 ``KEY VALUE`` overrides (values as Python literals)."""
    opts: list[str] = []
    for key, value in values.items():
        opts += [key, repr(value)]
    return opts


def _number(path: str, key: str, spec: dict, field: str) -> float:
    if field not in spec:
        raise SpaceError(f"{path}: {key}: type {spec['type']} needs '{field}'")
    try:
        return float(spec[field])
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{path}: {key}.{field}: expected a number, got {spec[field]!r}") from e


def _param(path: str, key: str, spec: Any) -> Param:
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpaceError(f"{path}: {key}: expected a mapping with 'type' (one of {TYPES})")
    kind = spec["type"]
    if kind not in TYPES:
        raise SpaceError(f"{path}: {key}: unknown type {kind!r}; use one of {TYPES}")
    known = {"type", "low", "high", "step", "log", "values"}
    extra = sorted(set(spec) - known)
    if extra:
        raise SpaceError(f"{path}: {key}: unknown field(s) {extra}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{path}: {key}: type choice needs a non-empty list 'values'")
        return Param(key, kind, values=tuple(values))
    low, high = _number(path, key, spec, "low"), _number(path, key, spec, "high")
    if not low < high:
        raise SpaceError(f"{path}: {key}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{path}: {key}: loguniform needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (kind != "int" or int(step) != step or step <= 0):
        raise SpaceError(f"{path}: {key}: 'step' must be a positive integer, for type int only")
    return Param(key, kind, low=low, high=high, step=None if step is None else int(step),
                 log=bool(spec.get("log", False)))


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file (safe YAML loader)."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"search space {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict) or not data:
        raise SpaceError(f"{path}: expected a mapping of config keys to distributions")
    return SearchSpace(tuple(_param(str(path), str(k), v) for k, v in data.items()), str(path))
