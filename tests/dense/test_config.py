"""emdet.dense.config: every U-Net YAML loads; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from emdet.config import ConfigError
from emdet.dense.config import get_unet_cfg, load_unet_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "unet").glob("*.yaml"))
# dense configs outside configs/unet: the pre-training and real-data recipes
OTHER = [REPO / "configs/pretrain/haadf_atoms_unet.yaml",
         REPO / "configs/real/points_heatmap_cpu.yaml"]


def test_there_are_configs_for_the_three_tasks():
    names = {p.stem for p in CONFIGS}
    assert {"graphene_contamination", "merons_heatmap", "atoms_columns"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads(path):
    cfg = load_unet_config(path)
    assert cfg.TASK in ("segmentation", "heatmap")
    assert cfg.MODEL.BLOCKS == 7 and cfg.INPUT.CROP_SIZE % 8 == 0
    if path.stem != "Base-UNet":
        assert cfg.DATASET.DIR.endswith("_synth") and cfg.OUTPUT_DIR.startswith("output/unet/")


@pytest.mark.parametrize("path", OTHER, ids=lambda p: p.name)
def test_pretraining_and_real_data_recipes_load(path):
    cfg = load_unet_config(path)
    assert cfg.TASK == "heatmap" and cfg.SOLVER.EVAL_PERIOD > 0 and cfg.DATASET.VAL_SPLITS
    assert cfg.INPUT.PREPROCESS == "percentile" and cfg.MODEL.FEATURES == 16


def test_paper_architecture_is_an_override():
    cfg = load_unet_config(REPO / "configs/unet/graphene_contamination.yaml",
                           ["MODEL.FEATURES", "32", "MODEL.BATCH_NORM", "False"])
    assert (cfg.MODEL.BLOCKS, cfg.MODEL.FEATURES, cfg.MODEL.BATCH_NORM) == (7, 32, False)


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_BASE_: {}\nMODEL:\n  FEATURE: 16\n".format(
        REPO / "configs/unet/Base-UNet.yaml"))
    with pytest.raises(ConfigError) as err:
        load_unet_config(bad)
    assert str(bad) in str(err.value) and "MODEL.FEATURE" in str(err.value)


def test_wrong_values_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="INPUT.CROP_SIZE.*multiple of 8.*use 104"):
        load_unet_config(None, ["INPUT.CROP_SIZE", "100"])
    with pytest.raises(ConfigError, match="MODEL.BLOCKS.*odd"):
        load_unet_config(None, ["MODEL.BLOCKS", "6"])
    with pytest.raises(ConfigError, match="TASK"):
        load_unet_config(None, ["TASK", "detection"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_unet_config(None, ["SOLVER.MAX_ITER"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_unet_config(tmp_path / "missing.yaml")


def test_unsafe_yaml_is_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("TASK: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError):
        load_unet_config(evil)


def test_defaults_are_documented_in_one_place():
    cfg = get_unet_cfg()
    assert cfg.MODEL.FEATURES == 32 and cfg.CV.FOLDS == 0 and cfg.HEATMAP.SIGMA == 2.0
