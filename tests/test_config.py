"""Configs: every YAML loads; mistakes are reported with file and key."""
from pathlib import Path

import pytest

import emdet  # noqa: F401
from emdet.config import ConfigError, add_emdet_config, get_emdet_cfg, load_config
from emdet.tuning.search import is_unet_config

REPO = Path(__file__).resolve().parents[1]
# detectron2 configs; dense (U-Net) configs, which have a TASK key (tests/dense/test_config.py),
# and configs/search (tests/tuning) have loaders of their own.
ALL_CONFIGS = sorted(
    p for p in (REPO / "configs").glob("**/*.yaml")
    if not {"search", "unet"} & set(p.parts) and not is_unet_config(p)
)


def test_there_are_configs():
    assert ALL_CONFIGS


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_loads(path):
    cfg = load_config(path)
    assert cfg.INPUT.EM.ROT90 in (True, False)


def test_emdet_keys_have_defaults():
    from detectron2.config import get_cfg

    cfg = add_emdet_config(get_cfg())
    assert list(cfg.INPUT.EM.CLIP_PERCENTILES) == [0.5, 99.5]
    assert cfg.EMDET.DATASETS_ROOT == ""
    assert get_emdet_cfg().MODEL.DEVICE in {"cpu", "cuda"}


def test_unknown_key_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "bad.yaml" in str(err.value) and "SOLVER.BASE_LRR" in str(err.value)


def test_unknown_key_in_base_names_the_base_file(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  ROI_HEADZ:\n    NUM_CLASSES: 2\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text('_BASE_: "base.yaml"\nSOLVER:\n  MAX_ITER: 10\n')
    with pytest.raises(ConfigError) as err:
        load_config(leaf)
    assert "base.yaml" in str(err.value) and "MODEL.ROI_HEADZ" in str(err.value)


def test_wrong_type_names_key(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("SOLVER:\n  MAX_ITER: lots\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*SOLVER\.MAX_ITER"):
        load_config(bad)


def test_keys_with_fixed_choices_name_the_allowed_values(tmp_path):
    bad = tmp_path / "bg.yaml"
    bad.write_text('INPUT:\n  EM:\n    BACKGROUND: "tophat"\n')
    with pytest.raises(ConfigError, match=r"bg\.yaml.*INPUT\.EM\.BACKGROUND is 'tophat'.*"
                                          r"'highpass', 'rolling_ball'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"INPUT\.EM\.INPUT_DTYPE is 'float16'.*'float32'"):
        load_config(None, ["INPUT.EM.INPUT_DTYPE", "float16"])
    with pytest.raises(ConfigError, match=r"INPUT\.EM\.BACKGROUND_RADIUS is 0.0"):
        load_config(None, ["INPUT.EM.BACKGROUND_RADIUS", "0.0"])


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="m.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_command_line_overrides(tmp_path):
    cfg = load_config(None, ["SOLVER.MAX_ITER", "7", "INPUT.EM.NOISE_STD", "2.5"])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.INPUT.EM.NOISE_STD == 2.5
    with pytest.raises(ConfigError, match="SOLVER.NOPE"):
        load_config(None, ["SOLVER.NOPE", "1"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        load_config(None, ["SOLVER.MAX_ITER"])


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("SOLVER:\n  BASE_LR: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(evil)
