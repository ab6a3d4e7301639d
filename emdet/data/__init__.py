"""EM data: data set registration, rotated-box geometry and seeded synthetic data sets.

* :mod:`emdet.data.datasets`: ``datasets/<name>/{images,annotations}`` folders registered with
  detectron2 as ``<name>_<split>`` (:func:`register_all_from_root`, :func:`register_dataset`).
* :mod:`emdet.data.geometry`: rotated boxes in detectron2's convention (:func:`rbox_to_polygon`).
* :mod:`emdet.data.rle`: instance masks as crops (``MaskCrop``) and COCO RLE without full-image
  arrays.
* :mod:`emdet.data.synthetic`: :func:`make_synthetic` writes vesicles / nanorods / merons /
  graphene / atoms data sets (imported on first use: it pulls in SciPy and scikit-image).
"""

from typing import Any

from emdet.data.datasets import (
    ENV_VAR,
    EVALUATOR_TYPES,
    SPLITS,
    DatasetFormatError,
    DatasetSpec,
    get_datasets_root,
    load_em_coco_json,
    read_dataset_yaml,
    register_all_from_root,
    register_dataset,
    register_datasets,
    unregister_dataset,
)
from emdet.data.geometry import normalize_rbox, polygon_to_rbox, rbox_to_polygon, rbox_to_xywh

_SYNTHETIC = ("SYNTHETIC_KINDS", "generate_image", "make_synthetic")

__all__ = [
    "ENV_VAR",
    "EVALUATOR_TYPES",
    "SPLITS",
    "SYNTHETIC_KINDS",
    "DatasetFormatError",
    "DatasetSpec",
    "generate_image",
    "get_datasets_root",
    "load_em_coco_json",
    "make_synthetic",
    "normalize_rbox",
    "polygon_to_rbox",
    "rbox_to_polygon",
    "rbox_to_xywh",
    "read_dataset_yaml",
    "register_all_from_root",
    "register_dataset",
    "register_datasets",
    "unregister_dataset",
]


def __getattr__(name: str) -> Any:
    if name in _SYNTHETIC:
        from emdet.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'emdet.data' has no attribute {name!r}")
