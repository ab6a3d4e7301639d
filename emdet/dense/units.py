"""Lengths of the point models in pixels or nanometres.

``HEATMAP.SIGMA`` (the Gaussian drawn at each annotated point), ``HEATMAP.MIN_DISTANCE`` (peaks
closer than this are merged) and ``EVAL.MATCH_RADIUS`` (a detection this close to an annotated
point matches it) are pixels. Their nanometre twins ``HEATMAP.SIGMA_NM``,
``HEATMAP.MIN_DISTANCE_NM`` and ``EVAL.MATCH_RADIUS_NM`` (0 = unset) replace them when set,
turned into pixels for each image by its own pixel size, so one config serves micrographs taken
at different magnifications and the figures are what a paper states ("matched within 0.1 nm";
with ``MATCH_RADIUS_NM`` the matched distances are in nm too). An image without a calibration
is then an error naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["PointLengths", "length_px", "match_in_nm", "point_lengths"]


@dataclass(frozen=True)
class PointLengths:
    """The point-model lengths of one image, in its pixels."""

    sigma: float
    min_distance: int
    radius: float


def match_in_nm(cfg) -> bool:
    """Points are matched in nm (``EVAL.MATCH_RADIUS_NM`` is set)."""
    return float(cfg.EVAL.MATCH_RADIUS_NM) > 0


def length_px(cfg, key: str, pixel_size: float | None, where: str | Path = "the image"
              ) -> float:
    """The config length ``key`` (``"HEATMAP.SIGMA"``, ``"HEATMAP.MIN_DISTANCE"`` or
    ``"EVAL.MATCH_RADIUS"``) in pixels of an image of ``pixel_size`` nm per pixel (``None``:
    uncalibrated): from ``<key>_NM`` when that is set, else the key itself.

    Raises
    ------
    ValueError
        ``<key>_NM`` is set and the image has no pixel size.
    """
    section, name = key.split(".")
    node = cfg[section]
    nm_value = float(node[name + "_NM"])
    if nm_value <= 0:
        return float(node[name])
    if not pixel_size or pixel_size <= 0:
        raise ValueError(
            f"{where}: has no pixel size, but {key}_NM ({nm_value:g} nm) needs one; calibrate "
            "the image (its COCO 'pixel_size', or convert_annotations.py --pixel-size) or give "
            f"{key} in pixels (and {name}_NM 0)")
    return nm_value / pixel_size


def point_lengths(cfg, pixel_size: float | None, where: str | Path = "the image"
                  ) -> PointLengths:
    """All three lengths of :func:`length_px` for one image (``MIN_DISTANCE`` rounded, >= 1)."""
    return PointLengths(
        sigma=length_px(cfg, "HEATMAP.SIGMA", pixel_size, where),
        min_distance=max(1, round(length_px(cfg, "HEATMAP.MIN_DISTANCE", pixel_size, where))),
        radius=length_px(cfg, "EVAL.MATCH_RADIUS", pixel_size, where),
    )
