"""Hyper-parameter search for detectron2 and U-Net configs (``tools/tune_net.py``)."""
from emdet.tuning.search import (
    Detectron2Runner,
    TrialFailed,
    TuneSettings,
    UNetRunner,
    is_unet_config,
    run_study,
)
from emdet.tuning.space import Param, SearchSpace, SpaceError, load_space

__all__ = ["Detectron2Runner", "Param", "SearchSpace", "SpaceError", "TrialFailed",
           "TuneSettings", "UNetRunner", "is_unet_config", "load_space", "run_study"]
