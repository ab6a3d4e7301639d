"""Strict JSON for files from other people: no ``NaN``/``Infinity``, every bad value named.

Python's ``json`` accepts ``NaN``, ``Infinity`` and integers too large for a float, and text with
lone surrogates, none of which are JSON numbers or Unicode text that other tools (pycocotools,
labelme, spreadsheets) handle. :func:`loads` parses with placeholders for such values and then
names the first one by its place in the file (``annotations[0].segmentation[0][3]``), so a
reader can refuse the file with the field. Used by :mod:`emdet.data.cocofile` (COCO files) and
:mod:`emdet.data.converters` (labelme and other annotation files).
"""
from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["StrictJSONError", "find_bad_value", "loads"]


class StrictJSONError(ValueError):
    """A value strict JSON does not allow; ``where`` is its field path, ``problem`` what it is."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} is {problem}")
        self.where, self.problem = where, problem


class _NonFinite:
    """Stands for a ``NaN``/``Infinity`` literal (or a number too large for a float) while
    parsing, so its place in the file can be named."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text[:30])


def _parse_int(text: str) -> int | _NonFinite:
    if len(text.lstrip("-")) > 308:  # beyond any float; int() itself stops at 4300 digits
        return _NonFinite(text[:20] + "...")
    return int(text)


def find_bad_value(node: Any) -> tuple[str, str] | None:
    """``(field path, what is wrong)`` for the first non-finite number or invalid text."""
    stack: list[tuple[Any, str]] = [(node, "")]
    while stack:  # iterative: a deep file must not hit the recursion limit here
        node, where = stack.pop()
        if isinstance(node, _NonFinite):
            return where or "the top level", f"{node.text}, which is not a finite number"
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    return where or "the top level", "text with a lone surrogate (not Unicode)"
            continue
        if isinstance(node, dict):
            items = []
            for k, v in node.items():
                key_where = f"{where}.{k}" if where else str(k)
                items.append((k, key_where))
                items.append((v, key_where))
        elif isinstance(node, list):
            items = [(v, f"{where}[{i}]") for i, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def loads(text: str) -> Any:
    """Parse strict JSON.

    Raises
    ------
    json.JSONDecodeError
        Not JSON at all (with line and column).
    StrictJSONError
        A ``NaN``/``Infinity``, a number too large for a float, or text that is not Unicode;
        the error names the field.
    RecursionError
        Nested too deeply.
    """
    data = json.loads(text, parse_constant=_NonFinite, parse_float=_parse_float,
                      parse_int=_parse_int)
    bad = find_bad_value(data)
    if bad is not None:
        raise StrictJSONError(*bad)
    return data
