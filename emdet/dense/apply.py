"""Run dense models over many files: segmentation masks and fractions, point tables, overlays.

The logic of ``tools/segment.py`` and ``tools/detect_points.py``. Every input file is read
frame by frame (:func:`emdet.data.io.read_series`), so a multi-page TIFF time series is
processed one frame at a time; a file that cannot be read or processed is listed in
``failures.csv`` (file, frame, error) and the others complete. Every output file is written
atomically (temporary file, then ``os.replace``).

Outputs of :func:`segment_files` in the output folder::

    masks/<name>.png        uint8 class labels (0 .. K-1)
    overlays/<name>.png     the image with the classes coloured
    fractions.csv           file, frame, name, pixel_size_nm, fraction_<class> and
                            area_<class>_nm2 for every class
    ranking.csv             with sort_by_fraction: images by decreasing useful fraction
    overview.png            with sort_by_fraction: thumbnails in that order (Sadre et al. Fig. 6)
    failures.csv            unreadable or failed inputs (only when there are some)

Outputs of :func:`detect_points_files`::

    points/<stem>.csv       frame, x, y (px), x_nm, y_nm, class, score (one row per point,
                            all frames)
    overlays/<name>.png     the image with the points marked
    summary.csv             file, frame, name, pixel_size_nm, area_nm2 (of the frame),
                            n_<class>, density_<class>_per_nm2
    failures.csv

``<name>`` is the file stem, with ``_f0007`` appended for frame 7 of a multi-frame file.
Physical columns (``_nm``, ``_nm2``) come from each file's own calibration
(:func:`emdet.data.io.read_image`) and are empty for an uncalibrated file; a warning names the
files whose figures stay in pixels.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emdet.utils.atomic import atomic_write
from emdet.utils.csvsafe import csv_safe_cell

__all__ = ["CLASS_COLOURS", "detect_points_files", "iter_frames", "segment_files"]

logger = logging.getLogger(__name__)

#: RGB colours of classes 0, 1, 2, ... in overlays (then repeated).
CLASS_COLOURS = (
    (60, 120, 255),  # blue
    (0, 0, 0),  # not drawn when it is the "useful" class; see _overlay_labels
    (255, 40, 40),  # red
    (40, 200, 40),  # green
    (255, 200, 0),  # yellow
    (200, 60, 255),  # purple
)
_POINT_COLOURS = ((255, 60, 60), (60, 160, 255), (60, 220, 60), (255, 200, 0), (220, 80, 255))


@dataclass
class Frame:
    """One frame of an input file."""

    path: Path
    index: int
    n_frames: int
    image: np.ndarray
    pixel_size: float | None = None  # nm per pixel, None when the file is not calibrated

    @property
    def name(self) -> str:
        return self.path.stem if self.n_frames == 1 else f"{self.path.stem}_f{self.index:04d}"


@dataclass
class Failure:
    """An input (or one frame of it) that could not be processed."""

    path: Path
    frame: int | None
    error: str


def iter_frames(paths: Iterable[Path], failures: list[Failure]) -> Iterator[Frame]:
    """Frames of every file; read errors are appended to ``failures`` instead of raised."""
    from emdet.data.io import read_series

    for path in paths:
        index = -1
        try:
            for index, (frame, meta) in enumerate(read_series(path)):
                yield Frame(Path(path), index, meta.n_frames, frame, meta.pixel_size_nm)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            failures.append(Failure(Path(path), index + 1 if index >= 0 else None,
                                    f"{type(e).__name__}: {e}"))
            logger.warning("skipping %s: %s", path, e)


def _write_png(path: Path, array: np.ndarray) -> None:
    import cv2

    arr = array[..., ::-1] if array.ndim == 3 else array  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write(path, buf.tobytes())


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([csv_safe_cell(h) for h in header])
    writer.writerows([csv_safe_cell(v) for v in row] for row in rows)
    atomic_write(path, text.getvalue())


def _cell(value) -> str | int:
    """A CSV cell: floats with 6 significant digits, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _warn_uncalibrated(rows: Sequence[dict]) -> None:
    files = sorted({Path(r["file"]).name for r in rows if r["pixel_size_nm"] is None})
    if files:
        logger.warning("%d file(s) carry no pixel size, so their nm columns are empty: %s",
                       len(files), ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))


def _write_failures(out: Path, failures: list[Failure]) -> None:
    path = out / "failures.csv"
    if failures:
        _write_csv(path, ["file", "frame", "error"],
                   [[str(f.path), "" if f.frame is None else f.frame, f.error] for f in failures])
    elif path.exists():
        path.unlink()


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    from emdet.data.preprocess import normalize_intensity

    grey = (normalize_intensity(image, clip_percentiles=(0.5, 99.5)) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _overlay_labels(image: np.ndarray, labels: np.ndarray, skip: Sequence[int],
                    alpha: float = 0.45) -> np.ndarray:
    rgb = _grey_rgb(image).astype(np.float32)
    for k in np.unique(labels):
        if int(k) in skip:
            continue
        colour = np.array(CLASS_COLOURS[int(k) % len(CLASS_COLOURS)], dtype=np.float32)
        sel = labels == k
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * colour
    return rgb.astype(np.uint8)


def _overlay_points(image: np.ndarray, xy: np.ndarray, cls: np.ndarray,
                    radius: int = 4) -> np.ndarray:
    import cv2

    rgb = np.ascontiguousarray(_grey_rgb(image))
    for (x, y), c in zip(xy, cls, strict=True):
        colour = _POINT_COLOURS[int(c) % len(_POINT_COLOURS)]
        # x, y are continuous coordinates; pixel (col j) has its centre at j + 0.5
        cv2.circle(rgb, (int(np.floor(x)), int(np.floor(y))), radius, colour, 1, cv2.LINE_AA)
    return rgb


def _list_inputs(inputs: Sequence[str | os.PathLike], failures: list[Failure]) -> list[Path]:
    from emdet.data.io import list_images

    paths: list[Path] = []
    for item in inputs:
        try:
            paths.extend(list_images(item))
        except (OSError, ValueError) as e:
            failures.append(Failure(Path(item), None, f"{type(e).__name__}: {e}"))
    seen: set[Path] = set()
    return [p for p in paths if not (p in seen or seen.add(p))]


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", disable=not enabled,
                file=sys.stderr, mininterval=1.0)


def segment_files(
    segment: Callable[[np.ndarray], np.ndarray],
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    classes: Sequence[str],
    useful_class: str | None = None,
    sort_by_fraction: bool = False,
    overlays: bool = True,
    progress: bool = True,
) -> dict:
    """Segment every frame of every input; write masks, overlays and class fractions.

    Parameters
    ----------
    segment : callable
        ``(H, W)`` raw image -> ``(H, W)`` integer labels in ``0 .. len(classes) - 1``.
    inputs : sequence of path
        Image files, folders or glob patterns (:func:`emdet.data.io.list_images`).
    output : path
        Output folder (created).
    classes : sequence of str, keyword-only
        Class names of the labels.
    useful_class : str, keyword-only
        The class whose fraction ranks the images (default ``"lattice"`` when present, else
        the first class); it is left uncoloured in overlays.
    sort_by_fraction : bool, keyword-only
        Also write ``ranking.csv`` and ``overview.png``, images by decreasing useful fraction.
    overlays : bool, keyword-only
    progress : bool, keyword-only

    Returns
    -------
    dict
        ``"fractions"`` (list of dict rows), ``"failures"`` (list of :class:`Failure`),
        ``"ranking"`` (rows, when sorted).
    """
    out = Path(output)
    for sub in ("masks",) + (("overlays",) if overlays else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    if useful_class is None:
        useful_class = "lattice" if "lattice" in classes else classes[0]
    if useful_class not in classes:
        raise ValueError(f"useful class {useful_class!r} is not one of {classes}")
    useful = classes.index(useful_class)
    failures: list[Failure] = []
    paths = _list_inputs(inputs, failures)
    rows, thumbs = [], []
    for frame in _progress(iter_frames(paths, failures), None, "segment", progress):
        try:
            labels = np.asarray(segment(frame.image))
            if labels.shape != frame.image.shape[:2]:
                raise ValueError(f"segmenter returned shape {labels.shape} for an image of "
                                 f"{frame.image.shape}")
            labels = labels.astype(np.uint8)
            _write_png(out / "masks" / f"{frame.name}.png", labels)
            counts = np.bincount(labels.ravel(), minlength=len(classes))[: len(classes)]
            fractions = counts / labels.size
            if overlays or sort_by_fraction:
                ov = _overlay_labels(frame.image, labels, skip=[useful])
                if overlays:
                    _write_png(out / "overlays" / f"{frame.name}.png", ov)
                if sort_by_fraction:
                    thumbs.append((frame.name, _thumbnail(ov)))
        except Exception as e:  # noqa: BLE001 - report and go on with the next frame
            failures.append(Failure(frame.path, frame.index, f"{type(e).__name__}: {e}"))
            logger.warning("failed on %s frame %d: %s", frame.path, frame.index, e)
            continue
        nm2 = None if frame.pixel_size is None else frame.pixel_size ** 2
        rows.append({"file": str(frame.path), "frame": frame.index, "name": frame.name,
                     "pixel_size_nm": frame.pixel_size,
                     **{f"fraction_{c}": float(f) for c, f in zip(classes, fractions,
                                                                   strict=True)},
                     **{f"area_{c}_nm2": None if nm2 is None else float(n) * nm2
                        for c, n in zip(classes, counts, strict=True)}})
    header = (["file", "frame", "name", "pixel_size_nm"] + [f"fraction_{c}" for c in classes]
              + [f"area_{c}_nm2" for c in classes])
    _write_csv(out / "fractions.csv", header, [[_cell(r[h]) for h in header] for r in rows])
    _warn_uncalibrated(rows)
    result: dict = {"fractions": rows, "failures": failures}
    if sort_by_fraction and rows:
        key = f"fraction_{useful_class}"
        ranked = sorted(rows, key=lambda r: -r[key])
        _write_csv(out / "ranking.csv", ["rank", "name", "file", "frame", key],
                   [[i + 1, r["name"], r["file"], r["frame"], f"{r[key]:.6f}"]
                    for i, r in enumerate(ranked)])
        by_name = dict(thumbs)
        _write_png(out / "overview.png", _contact_sheet(
            [(by_name[r["name"]], f"#{i + 1}: {100 * r[key]:.0f} % {useful_class}") for i, r in
             enumerate(ranked) if r["name"] in by_name]))
        result["ranking"] = ranked
    _write_failures(out, failures)
    return result


def _thumbnail(rgb: np.ndarray, side: int = 192) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def _contact_sheet(items: list[tuple[np.ndarray, str]], columns: int = 6,
                   side: int = 192) -> np.ndarray:
    import cv2

    n = max(1, len(items))
    cols = min(columns, n)
    rows = -(-n // cols)
    label_h = 22
    sheet = np.full((rows * (side + label_h), cols * side, 3), 255, dtype=np.uint8)
    for i, (thumb, label) in enumerate(items):
        r, c = divmod(i, cols)
        y0, x0 = r * (side + label_h), c * side
        th, tw = thumb.shape[:2]
        sheet[y0 + label_h : y0 + label_h + th, x0 : x0 + tw] = thumb
        cv2.putText(sheet, label, (x0 + 4, y0 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return sheet


def detect_points_files(
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    classes: Sequence[str],
    overlays: bool = True,
    progress: bool = True,
) -> dict:
    """Detect points in every frame of every input; write one CSV per file and overlays.

    Parameters
    ----------
    detect : callable
        ``(raw (H, W) image, its nm per pixel or None)`` -> ``(points (N, 2) (x, y), classes
        (N,), scores (N,))``, e.g. :meth:`emdet.dense.predict.DensePredictor.points`.
    inputs : sequence of path
        Files, folders or glob patterns.
    output : path
        Output folder (created).
    classes : sequence of str, keyword-only
        Names of the class indices.
    overlays : bool, keyword-only
    progress : bool, keyword-only

    Returns
    -------
    dict
        ``"summary"`` (rows: file, frame, name, n_<class>), ``"failures"``.
    """
    out = Path(output)
    (out / "points").mkdir(parents=True, exist_ok=True)
    if overlays:
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    failures: list[Failure] = []
    paths = _list_inputs(inputs, failures)
    per_file: dict[Path, list] = {}
    summary = []
    for frame in _progress(iter_frames(paths, failures), None, "detect", progress):
        try:
            xy, cls, scores = detect(frame.image, frame.pixel_size)
            xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
            cls = np.asarray(cls, dtype=np.int64).reshape(-1)
            if overlays:
                _write_png(out / "overlays" / f"{frame.name}.png",
                           _overlay_points(frame.image, xy, cls))
        except Exception as e:  # noqa: BLE001 - report and go on with the next frame
            failures.append(Failure(frame.path, frame.index, f"{type(e).__name__}: {e}"))
            logger.warning("failed on %s frame %d: %s", frame.path, frame.index, e)
            continue
        rows = per_file.setdefault(frame.path, [])
        ps = frame.pixel_size
        for (x, y), c, s in zip(xy, cls, np.asarray(scores).reshape(-1), strict=True):
            # x, y are pixel-centre coordinates: the physical position is x * pixel size
            rows.append([frame.index, f"{x:.2f}", f"{y:.2f}", _cell(None if ps is None else x * ps),
                         _cell(None if ps is None else y * ps), classes[int(c)],
                         f"{float(s):.4f}"])
        counts = np.bincount(cls, minlength=len(classes))
        h, w = frame.image.shape[:2]
        area = None if ps is None else h * w * ps ** 2
        summary.append({"file": str(frame.path), "frame": frame.index, "name": frame.name,
                        "pixel_size_nm": ps, "area_nm2": area,
                        **{f"n_{c}": int(n) for c, n in zip(classes, counts, strict=False)},
                        **{f"density_{c}_per_nm2": None if area is None else int(n) / area
                           for c, n in zip(classes, counts, strict=False)}})
        _write_csv(out / "points" / f"{frame.path.stem}.csv",
                   ["frame", "x", "y", "x_nm", "y_nm", "class", "score"], rows)
    header = (["file", "frame", "name", "pixel_size_nm", "area_nm2"]
              + [f"n_{c}" for c in classes] + [f"density_{c}_per_nm2" for c in classes])
    _write_csv(out / "summary.csv", header, [[_cell(r[h]) for h in header] for r in summary])
    _warn_uncalibrated(summary)
    _write_failures(out, failures)
    return {"summary": summary, "failures": failures}
