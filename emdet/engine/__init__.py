"""Training and evaluation loops: detectron2's DefaultTrainer with what EM data needs."""
from emdet.engine.trainer import EMTrainer, setup_cfg

__all__ = ["EMTrainer", "setup_cfg"]
