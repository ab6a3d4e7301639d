"""COCO file -> ``instances.csv``, ``summary.csv`` and ``report.html`` (``tools/stats_report.py``).

Composes :mod:`emdet.stats.measure` (the tables) and :mod:`emdet.stats.report` (the page), and
gathers example overlays: the PNGs ``tools/predict.py`` drew, or, for ground truth and for a
stricter score threshold, new ones drawn from the images when they can be found.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdet.stats.measure import (
    StatsError,
    images_table,
    load_coco,
    measure_coco,
    size_columns,
    summarize,
)
from emdet.stats.report import render_report
from emdet.utils.atomic import atomic_write_many
from emdet.utils.csvsafe import csv_safe

__all__ = ["StatsOutputs", "run_stats_report"]

logger = logging.getLogger(__name__)


@dataclass
class StatsOutputs:
    """Files written by :func:`run_stats_report` and the tables behind them."""

    instances_csv: Path
    summary_csv: Path
    report: Path
    instances: pd.DataFrame
    summary: pd.DataFrame
    images: pd.DataFrame
    #: What the report's banner says (uncalibrated images, pixel units, border objects).
    notes: tuple[str, ...] = ()


def _csv(df: pd.DataFrame) -> str:
    return csv_safe(df).to_csv(index=False)


def _image_roots(coco: Mapping[str, Any], coco_path: Path | None, images_dir) -> list[Path]:
    """Folders the report may read images from: ``--images`` and the COCO file's own folder
    (and ``../images`` of a dataset's annotations folder). ``info.image_root`` of the file is
    used only for emdet's own predictions (``parts/run.json`` beside it); a COCO file from
    elsewhere cannot make the report embed images from other places on this machine."""
    roots = []
    if images_dir:
        roots.append(Path(images_dir))
    if coco_path is not None:
        info_root = (coco.get("info") or {}).get("image_root")
        if info_root and isinstance(info_root, str) and (
                coco_path.parent / "parts" / "run.json").is_file():
            roots.append(Path(info_root))
        roots += [coco_path.parent, coco_path.parent.parent / "images"]  # dataset layout
    return roots


def _inside(root: Path, relative: Any) -> Path | None:
    """``root / relative`` if ``relative`` is a relative path that stays inside ``root``."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    rel = Path(relative.replace("\\", "/"))
    if rel.is_absolute() or rel.drive:
        return None
    try:
        base = root.resolve()
        path = (base / rel).resolve()
    except (OSError, RuntimeError):
        return None
    return path if path.is_relative_to(base) else None


def _overlay_png(
    coco: Mapping[str, Any],
    image: Mapping[str, Any],
    annotations: list[Mapping[str, Any]],
    coco_path: Path | None,
    roots: list[Path],
    redraw: bool,
    max_size: int,
    pixel_size: float | None = None,
    unit: str | None = None,
) -> bytes | None:
    import cv2

    existing = image.get("overlay")
    if existing and coco_path is not None and not redraw:
        png = _inside(coco_path.parent, existing)
        if png is None:
            logger.warning("overlay %r of %s is outside the COCO file's folder; not shown",
                           existing, image.get("file_name"))
        elif png.is_file():
            data = cv2.imread(str(png), cv2.IMREAD_COLOR)
            if data is not None:
                scale = min(1.0, max_size / max(data.shape[:2]))
                if scale < 1:
                    data = cv2.resize(data, None, fx=scale, fy=scale,
                                      interpolation=cv2.INTER_AREA)
                ok, buf = cv2.imencode(".png", data)
                return buf.tobytes() if ok else None
    candidates = [_inside(r, image.get("file_name")) for r in roots]
    source = next((c for c in candidates if c is not None and c.is_file()), None)
    if source is None:
        return None
    from emdet.data.io import read_image
    from emdet.data.preprocess import to_model_input
    from emdet.inference.coco import annotations_to_detections
    from emdet.inference.overlay import draw_overlay

    try:
        pixels, meta = read_image(source, page=int(image.get("frame", 0) or 0))
    except (OSError, ValueError, IndexError) as e:
        logger.warning("cannot read %s for an overlay: %s", source, e)
        return None
    grey = to_model_input(pixels if pixels.ndim == 2 else pixels[..., 0], channels=1)[..., 0]
    index = {int(c["id"]): k for k, c in enumerate(coco["categories"])}
    det = annotations_to_detections(annotations, int(image["height"]), int(image["width"]), index)
    rgb = draw_overlay(grey, det, [c["name"] for c in coco["categories"]], max_size=max_size,
                       pixel_size=pixel_size if unit and unit != "px" else None, unit=unit)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return buf.tobytes() if ok else None


def _check_options(*, pixel_size, score_threshold, frame_interval, max_overlays,
                   overlay_size) -> None:
    def finite(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    if pixel_size is not None and not (finite(pixel_size) and pixel_size > 0):
        raise StatsError(f"--pixel-size {pixel_size!r} must be a finite number > 0")
    if score_threshold is not None and not (finite(score_threshold)
                                            and 0 <= score_threshold <= 1):
        raise StatsError(f"--score-threshold {score_threshold!r} must be between 0 and 1")
    if frame_interval is not None and not (finite(frame_interval) and frame_interval > 0):
        raise StatsError(f"--frame-interval {frame_interval!r} must be a finite number of "
                         "seconds > 0")
    if max_overlays < 0:
        raise StatsError(f"--max-overlays {max_overlays} must be >= 0")
    if overlay_size < 1:
        raise StatsError(f"overlay_size {overlay_size} must be >= 1 pixel")


def run_stats_report(
    coco: str | os.PathLike | Mapping[str, Any],
    output_dir: str | os.PathLike,
    *,
    pixel_size: float | None = None,
    unit: str | None = None,
    score_threshold: float | None = None,
    frame_interval: float | None = None,
    exclude_border: bool = False,
    images_dir: str | os.PathLike | None = None,
    max_overlays: int = 4,
    overlay_size: int = 900,
    title: str | None = None,
    annotations: str | os.PathLike | Mapping[str, Any] | None = None,
) -> StatsOutputs:
    """Measure a COCO file (predictions or ground truth) and write the CSVs and the report.

    Parameters
    ----------
    coco : path or dict
        ``predictions.json`` from ``tools/predict.py`` or any COCO file with images' sizes.
    output_dir : path
        Folder for ``instances.csv``, ``summary.csv``, ``report.html`` and ``figures/`` (each
        figure of the report as 300 dpi PNG and SVG) (created).
    pixel_size, unit : optional
        One calibration for all images instead of each image's own (``unit`` default "nm").
    score_threshold : float, optional
        Leave out predictions scoring below this.
    frame_interval : float, optional
        Seconds between the frames of a series, for counts over time.
    exclude_border : bool
        Leave out objects touching the image border (their sizes are lower bounds).
    images_dir : path, optional
        Where the images are, to draw overlays (default: the file's ``info.image_root``, its
        folder, or ``../images`` of a dataset's annotations folder).
    max_overlays : int
        Example overlays in the report.
    annotations : path or dict, optional
        The annotated COCO of the same images (paired by file name and frame), measured with
        the same calibration: the report sets predicted beside annotated (size histograms
        overlaid, counts per image side by side) and ``comparison.csv`` holds the per-image
        counts and median sizes of both.

    Returns
    -------
    StatsOutputs
    """
    _check_options(pixel_size=pixel_size, score_threshold=score_threshold,
                   frame_interval=frame_interval, max_overlays=max_overlays,
                   overlay_size=overlay_size)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise StatsError(f"--output {out} is a file, not a folder")
    coco_path = Path(coco) if isinstance(coco, (str, os.PathLike)) else None
    data = load_coco(coco)
    if pixel_size is not None and unit is None:
        unit = "nm"
    images = images_table(data, pixel_size=pixel_size, unit=unit, frame_interval=frame_interval)
    instances = measure_coco(data, pixel_size=pixel_size, unit=unit,
                             score_threshold=score_threshold)
    n_border = int(instances["border"].sum()) if len(instances) else 0
    if exclude_border:
        instances = instances[~instances["border"].astype(bool)].reset_index(drop=True)
    categories = [str(c["name"]) for c in data["categories"]]
    summary = summarize(instances, images, categories=categories)

    notes = []
    unit_used = images["unit"].iloc[0] if len(images) else "px"
    uncalibrated = images[images["pixel_size"].isna()]
    if len(uncalibrated):
        notes.append(
            f"{len(uncalibrated)} of {len(images)} images carry no pixel size (e.g. "
            f"{uncalibrated['file_name'].iloc[0]}): their objects have no physical size. "
            "Pass --pixel-size and --unit."
        )
    if unit_used == "px":
        notes.append("No image is calibrated: sizes are in pixels (pass --pixel-size/--unit).")
    if n_border:
        what = "1 object touches" if n_border == 1 else f"{n_border} objects touch"
        notes.append(
            f"{what} the image border; their sizes are lower bounds"
            + (" and they are left out (--exclude-border)." if exclude_border
               else " (--exclude-border leaves them out).")
        )
    ground_truth = len(instances) > 0 and instances["score"].isna().all()

    overlays = []
    if max_overlays > 0 and len(images):
        roots = _image_roots(data, coco_path, images_dir)
        by_image: dict[Any, list] = {}
        for ann in data.get("annotations") or []:
            s = ann.get("score")
            if score_threshold is not None and s is not None and s < score_threshold:
                continue
            by_image.setdefault(ann["image_id"], []).append(ann)
        picks = np.unique(np.linspace(0, len(images) - 1, min(max_overlays, len(images)))
                          .round().astype(int))
        image_by_id = {img["id"]: img for img in data["images"]}
        for k in picks:
            image_id = images["image_id"].iloc[k]
            img = image_by_id[image_id]
            ps = images["pixel_size"].iloc[k]
            png = _overlay_png(data, img, by_image.get(image_id, []), coco_path, roots,
                               redraw=score_threshold is not None, max_size=overlay_size,
                               pixel_size=None if pd.isna(ps) else float(ps),
                               unit=images["unit"].iloc[k])
            if png:
                frame = f" frame {img.get('frame')}" if int(img.get("n_frames", 1) or 1) > 1 else ""
                overlays.append((f"{img['file_name']}{frame}: "
                                 f"{len(by_image.get(image_id, []))} objects", png))

    settings: dict[str, Any] = {
        "input": str(coco_path.resolve()) if coco_path else "(in memory)",
        "kind": "ground truth (no scores)" if ground_truth else "predictions",
        "score threshold": "none" if score_threshold is None else score_threshold,
        "pixel size": (f"{pixel_size} {unit} (given)" if pixel_size is not None
                       else "from each image"),
        "size unit": unit_used,
        "frame interval (s)": "none" if frame_interval is None else frame_interval,
        "objects touching the border": "left out" if exclude_border else "kept",
    }
    info = data.get("info") or {}
    for key, value in (info.get("settings") or {}).items():
        settings[f"predict: {key}"] = value
    for key in ("description", "date_created", "emdet_version", "image_root"):
        if key in info:
            settings[f"file: {key}"] = info[key]
    reference = None
    extra_files: list[tuple[Path, str]] = []
    if annotations is not None:
        from emdet.stats.report import compare_counts

        ref_data = load_coco(annotations)
        ref_images = images_table(ref_data, pixel_size=pixel_size, unit=unit)
        ref_instances = measure_coco(ref_data, pixel_size=pixel_size, unit=unit)
        ref_summary = summarize(ref_instances, ref_images, categories=categories)
        diameter = next((c for c in size_columns(instances)
                         if c.startswith("equivalent_diameter_")), None)
        comparison = compare_counts(summary, ref_summary, diameter)
        reference = (ref_instances, comparison)
        extra_files.append((out / "comparison.csv", _csv(comparison)))
        settings["annotations"] = (str(Path(annotations).resolve())
                                   if isinstance(annotations, (str, os.PathLike))
                                   else "(in memory)")
    figures: dict[str, bytes] = {}  # each figure as 300 dpi PNG and SVG, for papers
    html = render_report(
        instances=instances,
        summary=summary,
        images=images,
        categories=categories,
        settings=settings,
        overlays=overlays,
        title=title or f"emdet statistics: {coco_path.name if coco_path else 'COCO data'}",
        notes=notes,
        figures=figures,
        reference=reference,
    )
    try:  # all or none
        atomic_write_many([(out / "instances.csv", _csv(instances)),
                           (out / "summary.csv", _csv(summary)), (out / "report.html", html),
                           *extra_files,
                           *((out / "figures" / name, data) for name, data in figures.items())])
    except OSError as e:
        raise StatsError(f"cannot write the outputs in {out}: {e}") from None
    return StatsOutputs(out / "instances.csv", out / "summary.csv", out / "report.html",
                        instances, summary, images, tuple(notes))

