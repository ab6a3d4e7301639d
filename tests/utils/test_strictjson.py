"""Strict JSON: non-finite numbers and broken text are named by their field."""
import json

import pytest

from emdet.utils.strictjson import StrictJSONError, loads


@pytest.mark.parametrize("text, where, words", [
    ('{"a": [1, {"b": NaN}]}', "a[1].b", "NaN"),
    ('{"x": -Infinity}', "x", "-Infinity"),
    ('{"big": 1e999}', "big", "1e999"),
    ('{"huge": ' + "9" * 400 + "}", "huge", "finite"),
    ('{"s": "\\ud800"}', "s", "surrogate"),
    ("NaN", "the top level", "NaN"),
])
def test_bad_values_are_named(text, where, words):
    with pytest.raises(StrictJSONError) as info:
        loads(text)
    assert info.value.where == where and words in info.value.problem


def test_valid_json_is_as_json_reads_it():
    text = '{"images": [{"id": 1, "w": 2.5e3, "name": "µm ok"}], "n": -3}'
    assert loads(text) == json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        loads('{"a": ')
