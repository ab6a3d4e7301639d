"""Search-space files: parsing, and bad spaces rejected before any training."""
import json

import pytest

import emdet  # noqa: F401
from emdet.config import load_config
from emdet.tuning import SpaceError, load_space
from emdet.tuning.space import to_opts

GOOD = """
SOLVER.BASE_LR: {type: loguniform, low: 1.0e-4, high: 1.0e-2}
SOLVER.MAX_ITER: {type: int, low: 100, high: 300, step: 100}
INPUT.EM.BRIGHTNESS: {type: uniform, low: 0.0, high: 0.3}
MODEL.ANCHOR_GENERATOR.SIZES: {type: choice, values: [[[8], [16]], [[16], [32]]]}
"""


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_space_parses_and_samples_within_bounds(tmp_path):
    import optuna

    space = load_space(_write(tmp_path, GOOD))
    assert [p.key for p in space.params][:2] == ["SOLVER.BASE_LR", "SOLVER.MAX_ITER"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = space.sample(study.ask())
        assert 1e-4 <= values["SOLVER.BASE_LR"] <= 1e-2
        assert values["SOLVER.MAX_ITER"] in (100, 200, 300)
        assert values["MODEL.ANCHOR_GENERATOR.SIZES"] in ([[8], [16]], [[16], [32]])
    cfg = load_config(None, to_opts(values))
    assert [list(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES] == \
        values["MODEL.ANCHOR_GENERATOR.SIZES"]
    space.check(lambda opts: load_config(None, opts))


def test_grid_of_choices_and_ints(tmp_path):
    space = load_space(_write(tmp_path, "A.B: {type: choice, values: [1, x]}\n"
                                        "C.D: {type: int, low: 1, high: 5, step: 2}\n"))
    assert space.grid() == {"A.B": [json.dumps(1), json.dumps("x")], "C.D": [1, 3, 5]}
    with pytest.raises(SpaceError, match="grid"):
        load_space(_write(tmp_path, "A: {type: uniform, low: 0, high: 1}", "u.yaml")).grid()


@pytest.mark.parametrize("text, match", [
    ("SOLVER.BASE_LR: {type: gaussian, low: 0, high: 1}", "unknown type 'gaussian'"),
    ("SOLVER.BASE_LR: {type: uniform, high: 1}", "needs 'low'"),
    ("SOLVER.BASE_LR: {type: uniform, low: 2, high: 1}", "must be below"),
    ("SOLVER.BASE_LR: {type: loguniform, low: 0, high: 1}", "low > 0"),
    ("SOLVER.BASE_LR: {type: uniform, low: a, high: 1}", r"SOLVER.BASE_LR.low: expected a number"),
    ("SOLVER.BASE_LR: {type: choice, values: []}", "non-empty list"),
    ("SOLVER.BASE_LR: {type: uniform, low: 0, high: 1, stepp: 2}", "unknown field"),
    ("SOLVER.BASE_LR: 0.1", "expected a mapping"),
    ("- just a list", "expected a mapping"),
    ("SOLVER: [unclosed", "not valid YAML"),
])
def test_bad_spaces_name_file_and_key(tmp_path, text, match):
    with pytest.raises(SpaceError, match=match) as err:
        load_space(_write(tmp_path, text))
    assert "space.yaml" in str(err.value)


def test_keys_and_types_are_checked_against_the_config(tmp_path):
    check = lambda opts: load_config(None, opts)  # noqa: E731
    space = load_space(_write(tmp_path, "SOLVER.BASE_LRR: {type: uniform, low: 0, high: 1}"))
    with pytest.raises(SpaceError, match=r"space.yaml: SOLVER.BASE_LRR"):
        space.check(check)
    space = load_space(_write(tmp_path, "SOLVER.MAX_ITER: {type: choice, values: [a, b]}"))
    with pytest.raises(SpaceError, match=r"SOLVER.MAX_ITER"):
        space.check(check)
    with pytest.raises(SpaceError, match="does not exist"):
        load_space(tmp_path / "missing.yaml")
