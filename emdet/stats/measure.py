"""Size and shape of every object, as tables: masks, label images or COCO files + pixel size.

Every function returns a :class:`pandas.DataFrame` whose physical columns say their unit
(``area_nm2``, ``equivalent_diameter_nm``, ...). Measurements come from scikit-image's
``regionprops_table(..., spacing=(p, p))``:

===========================  =================================================================
column                       meaning
===========================  =================================================================
``area_px``                  pixels in the mask
``area_<u>2``                area in unit^2 (``area_px * p**2``)
``equivalent_diameter_<u>``  diameter of the disk with the same area
``major_axis_<u>``,          axes of the ellipse with the same second moments (a filled
``minor_axis_<u>``           rectangle L x W gives ``L * 4 / sqrt(12)``, not L)
``aspect_ratio``             major / minor axis
``orientation_deg``          angle of the major axis from the image x axis, counter-clockwise
                             as seen on screen, in [-90, 90) (the ``rbox`` convention)
``perimeter_<u>``            Crofton perimeter (unbiased for round shapes)
``circularity``              ``4 pi area / perimeter**2``: ~1 for a disk, pi/4 for a square
``feret_diameter_max_<u>``   largest caliper diameter (:func:`feret_diameter_max`)
``rbox_length_<u>``,         rotated boxes only: the longer and shorter side and the angle of
``rbox_width_<u>``,          the longer side (``rbox`` convention, degrees in [-90, 90))
``rbox_angle_deg``
``border``                   the object touches the image border (it may be cut off)
===========================  =================================================================

``<u>`` is the unit with ``µ`` written ``u`` and ``/`` as ``_per_`` (``nm``, ``um``, ``px``).
Objects of an image without a pixel size get NaN in the physical columns (the table's unit is
that of the calibrated images, or ``px`` when none is calibrated).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emdet.data.rle import MaskCrop, segmentation_to_crop

__all__ = [
    "StatsError",
    "density_unit",
    "feret_diameter_max",
    "images_table",
    "load_coco",
    "measure_coco",
    "measure_labels",
    "measure_masks",
    "size_columns",
    "summarize",
    "unit_suffix",
]

logger = logging.getLogger(__name__)

_PROPS = (
    "label",
    "area",
    "equivalent_diameter_area",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "perimeter_crofton",
    "centroid",
)
_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def feret_diameter_max(mask: np.ndarray) -> float:
    """Largest caliper diameter of a binary mask in pixels, pixel squares included.

    A filled ``L x W`` rectangle gives ``sqrt(L**2 + W**2)``, a single pixel ``sqrt(2)``.
    (scikit-image's ``feret_diameter_max`` measures between pixel-edge midpoints and is ~100x
    slower.)
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("nan")
    contours, _ = cv2.findContours(
        np.pad(mask, 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    hull = cv2.convexHull(centres).reshape(-1, 2).astype(np.float64)
    pts = (hull[:, None, :] + _CORNERS[None]).reshape(-1, 2)
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d**2).sum(axis=2).max()))


class StatsError(ValueError):
    """Input that cannot be measured; the message names the file or field."""


def unit_suffix(unit: str | None) -> str:
    """Column-name form of a unit: ``"µm"`` -> ``"um"``, ``"1/nm"`` -> ``"per_nm"``."""
    if not unit:
        return "px"
    text = str(unit).strip().replace("µ", "u").replace("μ", "u").replace("Å", "A")
    if text.startswith("1/"):
        text = "per_" + text[2:]
    return "".join(c if c.isalnum() else "_" for c in text)


def density_unit(unit: str | None) -> tuple[str, float]:
    """``(column suffix, unit^2 per area unit)`` for densities: per µm² for nm and µm images,
    per megapixel for uncalibrated ones, else per unit²."""
    u = unit_suffix(unit)
    if u == "nm":
        return "um2", 1e6
    if u == "px":
        return "mpx", 1e6
    return f"{u}2", 1.0


def _empty_measure_frame(unit: str) -> pd.DataFrame:
    u = unit_suffix(unit)
    cols = [
        "area_px", f"area_{u}2", f"equivalent_diameter_{u}", f"major_axis_{u}",
        f"minor_axis_{u}", "aspect_ratio", "orientation_deg", f"perimeter_{u}", "circularity",
        f"feret_diameter_max_{u}", "centroid_x_px", "centroid_y_px", "border",
    ]
    return pd.DataFrame({c: pd.Series(dtype=bool if c == "border" else float) for c in cols})


def _finish_props(table: Mapping[str, np.ndarray], p: float | None, unit: str) -> pd.DataFrame:
    """Turn a ``regionprops_table`` (computed with spacing ``p`` or 1) into emdet columns."""
    u = unit_suffix(unit)
    s = 1.0 if p is None else float(p)
    phys = 1.0 if p is not None else np.nan  # NaN out physical columns without a pixel size
    area = np.asarray(table["area"], dtype=np.float64)
    major = np.asarray(table["axis_major_length"], dtype=np.float64)
    minor = np.asarray(table["axis_minor_length"], dtype=np.float64)
    perimeter = np.asarray(table["perimeter_crofton"], dtype=np.float64)
    orientation = np.degrees(np.asarray(table["orientation"], dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(minor > 0, major / minor, np.nan)
        circularity = np.where(perimeter > 0, 4 * math.pi * area / perimeter**2, np.nan)
    return pd.DataFrame(
        {
            "area_px": np.rint(area / s**2),
            f"area_{u}2": area * phys,
            f"equivalent_diameter_{u}": np.asarray(table["equivalent_diameter_area"]) * phys,
            f"major_axis_{u}": major * phys,
            f"minor_axis_{u}": minor * phys,
            "aspect_ratio": aspect,
            # skimage: angle between the row axis and the major axis, anticlockwise; here the
            # angle from the x axis as seen on screen (y down), like rbox angles.
            "orientation_deg": (orientation + 180.0) % 180.0 - 90.0,
            f"perimeter_{u}": perimeter * phys,
            "circularity": circularity,
        }
    )


def measure_labels(
    labels: np.ndarray, *, pixel_size: float | None = 1.0, unit: str | None = "px"
) -> pd.DataFrame:
    """Measure every object of a label image.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        0 = background, each object one positive value (e.g. ``instances/<image>.png``).
    pixel_size : float or None, default 1.0
        Pixel width in ``unit``; None gives NaN in the physical columns.
    unit : str, default "px"
        Unit of ``pixel_size``, used in the column names.

    Returns
    -------
    pandas.DataFrame
        One row per label (ascending), column ``label`` then the columns of the module
        docstring (``centroid_x_px``/``centroid_y_px`` in pixels).
    """

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise StatsError(
            f"measure_labels needs a 2-D integer label image, got {labels.dtype} {labels.shape}"
        )
    unit = unit if pixel_size is not None else (unit or "px")
    from scipy import ndimage

    values, crops = [], []
    for k, sl in enumerate(ndimage.find_objects(np.clip(labels, 0, None)), start=1):
        if sl is not None:
            values.append(k)
            crops.append(MaskCrop(sl[0].start, sl[1].start, labels[sl] == k))
    out = measure_masks(crops, pixel_size=pixel_size, unit=unit, image_size=labels.shape)
    out.insert(0, "label", np.array(values, dtype=labels.dtype))
    return out


def _pack(crops: Sequence[MaskCrop], max_width: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Place crops side by side (shelf packing) in one label image; label ``k + 1`` is crop
    ``k``. Returns the label image and the ``(y, x)`` position of each crop."""
    heights = np.array([c.mask.shape[0] for c in crops])
    widths = np.array([c.mask.shape[1] for c in crops])
    width = int(max(max_width, widths.max()))
    pos = np.zeros((len(crops), 2), dtype=np.int64)
    x = y = shelf = 0
    for k in np.argsort(-heights, kind="stable"):
        if x + widths[k] > width:
            y, x, shelf = y + shelf, 0, 0
        pos[k] = (y, x)
        x += widths[k]
        shelf = max(shelf, heights[k])
    labels = np.zeros((y + shelf, width), dtype=np.int32)
    for k, c in enumerate(crops):
        py, px = pos[k]
        h, w = c.mask.shape
        labels[py : py + h, px : px + w][c.mask] = k + 1
    return labels, pos


def measure_masks(
    masks: Sequence[MaskCrop | np.ndarray],
    *,
    pixel_size: float | None = 1.0,
    unit: str | None = "px",
    image_size: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """Measure instance masks (full-size boolean arrays or :class:`MaskCrop`).

    Parameters
    ----------
    masks : sequence of MaskCrop or ndarray of bool (H, W)
        One mask per object; overlapping objects are measured separately.
    pixel_size, unit
        As for :func:`measure_labels`.
    image_size : (int, int), optional
        ``(H, W)``, to tell which objects touch the border (taken from full-size masks).

    Returns
    -------
    pandas.DataFrame
        One row per mask, in order; empty masks give NaN measurements and ``area_px`` 0.
    """
    from skimage.measure import regionprops_table

    unit = unit if pixel_size is not None else (unit or "px")
    crops: list[MaskCrop] = []
    for m in masks:
        if isinstance(m, MaskCrop):
            crops.append(m)
        else:
            m = np.asarray(m, dtype=bool)
            image_size = image_size or m.shape
            crops.append(MaskCrop.from_mask(m))
    out = _empty_measure_frame(unit).reindex(range(len(crops)))
    out["area_px"] = 0.0
    full = [k for k, c in enumerate(crops) if c.mask.any()]
    if full:
        s = 1.0 if pixel_size is None else float(pixel_size)
        labels, pos = _pack([crops[k] for k in full])
        table = regionprops_table(labels, properties=_PROPS, spacing=(s, s))
        props = _finish_props(table, pixel_size, unit)
        order = np.asarray(table["label"]) - 1  # regionprops sorts by label
        index = np.asarray(full)[order]
        for col in props.columns:
            out.loc[index, col] = props[col].to_numpy()
        phys = 1.0 if pixel_size is None else float(pixel_size)
        out.loc[index, f"feret_diameter_max_{unit_suffix(unit)}"] = [
            feret_diameter_max(crops[k].mask) * (phys if pixel_size is not None else np.nan)
            for k in index
        ]
        cy = np.asarray(table["centroid-0"]) / s - pos[order, 0]
        cx = np.asarray(table["centroid-1"]) / s - pos[order, 1]
        out.loc[index, "centroid_x_px"] = cx + np.array([crops[k].x0 for k in index]) + 0.5
        out.loc[index, "centroid_y_px"] = cy + np.array([crops[k].y0 for k in index]) + 0.5
    if image_size is not None:
        h, w = image_size
        out["border"] = [
            bool(c.mask.size)
            and (c.x0 <= 0 or c.y0 <= 0 or c.extent[2] >= w or c.extent[3] >= h)
            for c in crops
        ]
    else:
        out["border"] = False
    out["border"] = out["border"].astype(bool)
    return out


# ----------------------------------------------------------------------------------------
# COCO files


def load_coco(coco: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A COCO dataset dict from a path or a dict, checked by :func:`emdet.data.cocofile.check_coco`
    (structure, finite numbers, polygons and RLE that fit their image) before anything is drawn.
    """
    from emdet.data.cocofile import CocoFormatError, check_coco, read_coco

    try:
        if isinstance(coco, (str, os.PathLike)):
            try:
                return read_coco(coco)
            except FileNotFoundError:
                raise StatsError(f"{coco} does not exist") from None
        return check_coco(coco, "the COCO input")
    except CocoFormatError as e:
        raise StatsError(str(e)) from None


def _table_unit(images: Sequence[Mapping[str, Any]], pixel_size, unit) -> str:
    if pixel_size is not None:
        return unit or "nm"
    units = {img.get("unit") for img in images if img.get("pixel_size")}
    units.discard(None)
    if len(units) > 1:
        raise StatsError(
            f"the images are calibrated in different units ({', '.join(sorted(units))}); "
            "measure them separately or pass --pixel-size and --unit to use one for all."
        )
    return units.pop() if units else "px"


def images_table(
    coco: str | os.PathLike | Mapping[str, Any],
    *,
    pixel_size: float | None = None,
    unit: str | None = None,
    frame_interval: float | None = None,
) -> pd.DataFrame:
    """One row per COCO image: id, file, frame, size and pixel size, area in unit^2.

    Parameters
    ----------
    coco : path or dict
    pixel_size, unit : optional
        Override the images' own calibration (``pixel_size`` / ``unit`` fields of each image,
        as ``tools/predict.py`` writes them and ``dataset.yaml`` gives).
    frame_interval : float, optional
        Seconds between frames of a series: adds ``time_s = frame * frame_interval`` (an
        image's own ``time`` field, in seconds, is used when present).

    Returns
    -------
    pandas.DataFrame
        ``image_id, file_name, frame, n_frames, width, height, pixel_size, unit,
        area_<u>2, time_s``.
    """
    coco = load_coco(coco)
    images = coco["images"]
    default_ps, default_unit = _dataset_calibration(coco)
    table_unit = _table_unit(
        [dict(img, pixel_size=img.get("pixel_size", default_ps),
              unit=img.get("unit", default_unit)) for img in images],
        pixel_size, unit,
    )
    u = unit_suffix(table_unit)
    rows = []
    for img in images:
        ps = pixel_size if pixel_size is not None else img.get("pixel_size", default_ps)
        if table_unit == "px" and ps is None:
            ps = 1.0
        frame = int(img.get("frame", 0) or 0)
        time_s = img.get("time")
        if time_s is None and frame_interval is not None:
            time_s = frame * frame_interval
        rows.append(
            {
                "image_id": img["id"],
                "file_name": str(img.get("file_name", img["id"])),
                "frame": frame,
                "n_frames": int(img.get("n_frames", 1) or 1),
                "width": int(img["width"]),
                "height": int(img["height"]),
                "pixel_size": np.nan if ps is None else float(ps),
                "unit": table_unit,
                f"area_{u}2": np.nan if ps is None else img["width"] * img["height"] * ps**2,
                "time_s": np.nan if time_s is None else float(time_s),
            }
        )
    return pd.DataFrame(rows)


def _dataset_calibration(coco: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """Pixel size for images without their own: ``info.pixel_size``/``unit`` if present."""
    info = coco.get("info") or {}
    ps = info.get("pixel_size")
    return (float(ps) if ps else None), info.get("unit")


def measure_coco(
    coco: str | os.PathLike | Mapping[str, Any],
    *,
    pixel_size: float | None = None,
    unit: str | None = None,
    score_threshold: float | None = None,
) -> pd.DataFrame:
    """Measure every annotation of a COCO file (predictions or ground truth).

    Parameters
    ----------
    coco : path or dict
        COCO dataset; annotations may have RLE or polygon ``segmentation``, ``rbox``, ``bbox``
        and ``score`` (ground truth has none: the column is NaN). Annotations with neither a
        segmentation nor an rbox are measured as their box.
    pixel_size, unit : optional
        One calibration for all images, overriding theirs.
    score_threshold : float, optional
        Leave out annotations with a ``score`` below this (annotations without one stay).

    Returns
    -------
    pandas.DataFrame
        One row per annotation: ``annotation_id, image_id, file_name, frame, category_id,
        category, score``, the measurement columns of the module docstring and, when any
        annotation has an ``rbox``, ``rbox_length_<u>, rbox_width_<u>, rbox_angle_deg``.
    """
    from emdet.data.geometry import normalize_rbox

    coco = load_coco(coco)
    images = images_table(coco, pixel_size=pixel_size, unit=unit)
    table_unit = images["unit"].iloc[0] if len(images) else (unit or "px")
    u = unit_suffix(table_unit)
    cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for k, ann in enumerate(coco.get("annotations") or []):
        if ann.get("category_id") not in cats:
            raise StatsError(
                f"annotation {ann.get('id', k)} has category_id {ann.get('category_id')!r}, "
                "which is not in 'categories'"
            )
        score = ann.get("score")
        if score_threshold is not None and score is not None and score < score_threshold:
            continue
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    known = set(images["image_id"])
    unknown = [i for i in by_image if i not in known]
    if unknown:
        raise StatsError(f"annotations refer to image ids {unknown[:5]} that are not in 'images'")

    frames = []
    has_rbox = any("rbox" in a for anns in by_image.values() for a in anns)
    uncalibrated = []
    for img in images.itertuples(index=False):
        anns = by_image.get(img.image_id, [])
        if not anns:
            continue
        ps = None if np.isnan(img.pixel_size) else float(img.pixel_size)
        if ps is None:
            uncalibrated.append(img.file_name)
        crops = [_annotation_crop(a, img.height, img.width) for a in anns]
        table = measure_masks(crops, pixel_size=ps, unit=table_unit,
                              image_size=(img.height, img.width))
        head = pd.DataFrame(
            {
                "annotation_id": [a.get("id") for a in anns],
                "image_id": img.image_id,
                "file_name": img.file_name,
                "frame": img.frame,
                "category_id": [int(a["category_id"]) for a in anns],
                "category": [cats[int(a["category_id"])] for a in anns],
                "score": [float(a["score"]) if "score" in a else np.nan for a in anns],
            }
        )
        table = pd.concat([head, table], axis=1)
        if "border" in anns[0] and all("border" in a for a in anns):
            table["border"] = [bool(a["border"]) for a in anns]
        if has_rbox:
            scale = np.nan if ps is None else ps
            rb = np.array(
                [normalize_rbox(a["rbox"]) if "rbox" in a else [np.nan] * 5 for a in anns]
            ).reshape(-1, 5)
            table[f"rbox_length_{u}"] = rb[:, 2] * scale
            table[f"rbox_width_{u}"] = rb[:, 3] * scale
            table["rbox_angle_deg"] = rb[:, 4]
        table["pixel_size"] = np.nan if ps is None else ps
        table["unit"] = table_unit
        frames.append(table)
    if uncalibrated:
        logger.warning(
            "%d images have no pixel size (e.g. %s); their objects have NaN physical sizes. "
            "Pass --pixel-size/--unit to calibrate them.",
            len(uncalibrated), uncalibrated[0],
        )
    if not frames:
        head = pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
            ("annotation_id", "Int64"), ("image_id", "Int64"), ("file_name", str),
            ("frame", int), ("category_id", int), ("category", str), ("score", float)]})
        out = pd.concat([head, _empty_measure_frame(table_unit)], axis=1)
        out["pixel_size"] = pd.Series(dtype=float)
        out["unit"] = pd.Series(dtype=str)
        return out
    return pd.concat(frames, ignore_index=True)


def _annotation_crop(ann: Mapping[str, Any], height: int, width: int) -> MaskCrop:
    seg = ann.get("segmentation")
    if seg:
        return segmentation_to_crop(seg, height, width)
    from pycocotools import mask as mask_util

    if "rbox" in ann:
        from emdet.data.geometry import rbox_to_polygon

        poly = rbox_to_polygon(ann["rbox"]).reshape(-1).tolist()
    else:
        x, y, w, h = (float(v) for v in ann["bbox"])
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
    return segmentation_to_crop(
        mask_util.merge(mask_util.frPyObjects([poly], height, width)), height, width
    )


# ----------------------------------------------------------------------------------------
# summaries


def size_columns(instances: pd.DataFrame) -> list[str]:
    """The size columns summarised: equivalent diameter, area, and rbox length if present."""
    cols = [c for c in instances.columns if c.startswith("equivalent_diameter_")]
    cols += [c for c in instances.columns if c.startswith("area_") and c != "area_px"]
    cols += [c for c in instances.columns if c.startswith("rbox_length_")]
    return cols


def summarize(
    instances: pd.DataFrame,
    images: pd.DataFrame,
    *,
    categories: Sequence[str] | None = None,
    percentiles: Sequence[float] = (5, 25, 75, 95),
) -> pd.DataFrame:
    """Counts, densities and size statistics per image and category, and over all images.

    Parameters
    ----------
    instances : pandas.DataFrame
        From :func:`measure_coco` (or any table with ``image_id``, ``category`` and size
        columns such as ``equivalent_diameter_nm`` and ``area_nm2``).
    images : pandas.DataFrame
        From :func:`images_table`: every image, so images without objects count 0.
    categories : sequence of str, optional
        Categories to report, in order (default: those in ``instances``, sorted).
    percentiles : sequence of float
        Percentiles of each size column, as ``<column>_p<q>``.

    Returns
    -------
    pandas.DataFrame
        One row per (image, category) with ``scope = "image"``, then one per category with
        ``scope = "all"`` (``image_id`` empty). Columns: ``scope, image_id, file_name, frame,
        category, count, image_area_<u>2, density_per_<a>`` and, per size column,
        ``_mean, _median, _std, _p<q>`` (std with ddof=1: NaN for one object).
    """
    if categories is None:
        categories = sorted(instances["category"].dropna().unique()) if len(instances) else []
    categories = list(categories)
    area_col = next((c for c in images.columns if c.startswith("area_")), None)
    unit = images["unit"].iloc[0] if len(images) and "unit" in images else "px"
    dens_suffix, dens_factor = density_unit(unit)
    sizes = size_columns(instances)

    def stats(group: pd.DataFrame) -> dict[str, float]:
        row: dict[str, float] = {"count": int(len(group))}
        for col in sizes:
            values = group[col].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            row[f"{col}_mean"] = float(values.mean()) if values.size else np.nan
            row[f"{col}_median"] = float(np.median(values)) if values.size else np.nan
            row[f"{col}_std"] = float(values.std(ddof=1)) if values.size > 1 else np.nan
            for q in percentiles:
                row[f"{col}_p{q:g}"] = float(np.percentile(values, q)) if values.size else np.nan
        return row

    groups = {key: g for key, g in instances.groupby(["image_id", "category"], sort=False)}
    rows = []
    for img in images.itertuples(index=False):
        area = getattr(img, area_col) if area_col else np.nan
        for cat in categories:
            group = groups.get((img.image_id, cat), instances.iloc[0:0])
            row = {"scope": "image", "image_id": img.image_id, "file_name": img.file_name,
                   "frame": img.frame, "category": cat}
            row.update(stats(group))
            row[area_col and f"image_{area_col}" or "image_area"] = area
            row[f"density_per_{dens_suffix}"] = (
                row["count"] / area * dens_factor if area and not np.isnan(area) else np.nan
            )
            rows.append(row)
    total_area = float(images[area_col].sum(min_count=1)) if area_col else np.nan
    for cat in categories:
        group = instances[instances["category"] == cat]
        row = {"scope": "all", "image_id": pd.NA, "file_name": "(all images)", "frame": pd.NA,
               "category": cat}
        row.update(stats(group))
        row[area_col and f"image_{area_col}" or "image_area"] = total_area
        row[f"density_per_{dens_suffix}"] = (
            row["count"] / total_area * dens_factor
            if total_area and not np.isnan(total_area) else np.nan
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        first = ["scope", "image_id", "file_name", "frame", "category", "count"]
        dens = [c for c in out.columns if c.startswith(("image_area", "density_per_"))]
        out = out[first + dens + [c for c in out.columns if c not in first + dens]]
        out["count"] = out["count"].astype(int)
    return out

