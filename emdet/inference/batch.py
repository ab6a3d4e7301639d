"""Predict a batch of EM files into one COCO file, resumably, on one or many processes.

:func:`predict_batch` is what ``tools/predict.py`` runs. Output folder::

    predictions.json     COCO: images (size, pixel size/unit, frame), categories, annotations
                         (score, bbox, RLE segmentation, area, border; rbox for rotated models)
    failures.csv         file, frame, error, reason: one row per file or frame that could not
                         be read or predicted (header only when everything worked)
    overlays/<name>.png  the image with coloured outlines (``<name>_f0003.png`` for frame 3)
    labelme/<name>.json  with ``labelme=True``: labelme files that show an 8-bit view (embedded)
                         and point at the image itself (``<name>_f0003.tif`` for a frame)
    parts/run.json       the settings of the run
    parts/files/         per-file results, so a rerun skips finished files (keep it to resume)

How it streams: files are read one frame at a time in a background thread (one frame ahead), each
frame is predicted (tiled when large), its masks are RLE-encoded at once and its result is written
atomically to ``parts/files/<name>.part.json`` (``parts/files/<name>.frames/<frame>.json``
while a stack is under way; ``<name>.failed.json`` for failures). Each kind has its own suffix and
the run's own files live outside ``parts/files/``, so no input name (``run.tif``,
``x.failed.tif``) can overwrite another file's result or the settings. Memory therefore stays at about two frames, whatever the number of files.
``predictions.json`` is assembled from the parts at the end, streamed and atomically replaced.

Resuming: a file whose part exists and whose size and modification time are unchanged is skipped;
a stack resumes at its first unfinished frame; failed files are retried. The settings that shape
predictions (config, weights, tile, overlap, thresholds, classes) are kept in ``parts/run.json``;
rerunning into the folder with other settings is an error unless ``overwrite`` is set.

Several processes (``detectron2.engine.launch``): rank ``r`` of ``w`` predicts files ``r::w``;
rank 0 then waits for the others' parts (the folder must be shared) and assembles.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emdet.inference.predictor import PredictError, display_image
from emdet.utils.atomic import atomic_open, atomic_write
from emdet.utils.csvsafe import csv_safe_cell

__all__ = [
    "PredictError",
    "PredictOptions",
    "PredictResult",
    "class_names_for",
    "predict_batch",
]

logger = logging.getLogger(__name__)

PART_VERSION = 2
FAILURE_COLUMNS = ["file", "frame", "error", "reason"]
_FRAME_BY_FRAME = ("tiff", "mrc", "npy")  # formats io reads one frame without the others


@dataclass
class PredictOptions:
    """Options of :func:`predict_batch` (``tools/predict.py`` flags in brackets).

    Attributes
    ----------
    tile : int, optional
        [--tile] Tile side in pixels; default ``INPUT.MIN_SIZE_TEST``; 0: whole images.
    overlap : int, optional
        [--overlap] Pixels shared by neighbouring tiles; default ``tile // 4``.
    score_threshold : float, optional
        [--score-threshold] Minimum score kept; default the threshold calibrated on the
        validation set (``score_threshold.json`` beside ``MODEL.WEIGHTS``, written by
        ``tools/train_net.py``'s evaluation), else the config's
        ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
    batch_size : int, optional
        [--batch-size] Tiles per forward pass; default 1 on CPU, 4 on GPU.
    join_threshold : float
        Agreement needed to join pieces of an object cut at a tile seam (see
        :func:`emdet.inference.tiling.merge_tiles`).
    overlays : bool
        [--no-overlays turns off] Write ``overlays/<name>.png``.
    overlay_max_size : int
        [--overlay-size] Longer side of overlays in pixels (0: full size).
    labelme : bool
        [--labelme] Write a labelme file per image: an embedded 8-bit view to correct on,
        ``imagePath`` the input file (a frame of a stack: a calibrated TIFF of the frame).
    overwrite : bool
        [--overwrite] Discard earlier results in the folder instead of resuming.
    recursive : bool
        [--recursive] Also list images in sub-folders of input folders.
    class_names : list of str, optional
        [--classes] Category names; default from the config's data sets.
    input_scale : float, optional
        [--input-scale] Model-input pixels per image pixel for images much larger than the
        training images (see :mod:`emdet.inference.predictor`); default: measured from the
        config's training images when they are registered; 0: none (tiles at the image's own
        scale).
    progress : bool
        Show a progress bar (rank 0).
    """

    tile: int | None = None
    overlap: int | None = None
    score_threshold: float | None = None
    batch_size: int | None = None
    join_threshold: float = 0.5
    overlays: bool = True
    overlay_max_size: int = 2048
    labelme: bool = False
    overwrite: bool = False
    recursive: bool = False
    class_names: list[str] | None = None
    progress: bool = True
    input_scale: float | None = None

    def __post_init__(self) -> None:
        import math

        def bad(flag: str, value: Any, need: str) -> PredictError:
            return PredictError(f"{flag} {value!r}: {need}")

        if self.tile is not None and self.tile < 0:
            raise bad("--tile", self.tile, "must be >= 0 pixels (0: whole images)")
        if self.overlap is not None and self.overlap < 0:
            raise bad("--overlap", self.overlap, "must be >= 0 pixels")
        if self.tile and self.overlap is not None and self.overlap >= self.tile:
            raise bad("--overlap", self.overlap, f"must be smaller than --tile {self.tile}")
        if self.score_threshold is not None and not (
                math.isfinite(self.score_threshold) and 0 <= self.score_threshold <= 1):
            raise bad("--score-threshold", self.score_threshold, "must be between 0 and 1")
        if self.batch_size is not None and self.batch_size < 1:
            raise bad("--batch-size", self.batch_size, "must be at least 1 tile")
        if self.overlay_max_size < 0:
            raise bad("--overlay-size", self.overlay_max_size, "must be >= 0 (0: full size)")
        if self.input_scale is not None and not (math.isfinite(self.input_scale)
                                                 and self.input_scale >= 0):
            raise bad("--input-scale", self.input_scale, "must be a number >= 0 (0: none)")
        if not (math.isfinite(self.join_threshold) and 0 <= self.join_threshold <= 1):
            raise bad("join_threshold", self.join_threshold, "must be between 0 and 1")


@dataclass
class PredictResult:
    """What a :func:`predict_batch` call did (on this rank)."""

    output_dir: Path
    predictions: Path | None  # rank 0 only
    failures: Path | None  # rank 0 only
    files: int = 0  # files in this rank's share
    frames_predicted: int = 0
    files_skipped: int = 0  # finished in an earlier run
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.frames_predicted / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------
# small helpers


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    atomic_write(path, json.dumps(data, separators=(",", ":"), allow_nan=False))


def _read_json(path: Path) -> Any | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class _File:
    index: int
    path: Path
    name: str  # unique, used for parts/overlays/labelme file names
    file_name: str  # relative to the image root, posix


def _plan_files(paths: Sequence[Path]) -> tuple[Path, list[_File]]:
    if not paths:
        return Path.cwd(), []
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    stems: dict[str, int] = {}
    for p in resolved:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    files = []
    for i, (p, r) in enumerate(zip(paths, resolved, strict=True)):
        name = p.stem
        # same stems, or a stem like a frame's name (x_f0003 is frame 3 of x): add a hash
        if stems[p.stem] > 1 or _FRAME_NAME.search(p.stem):
            name = f"{p.stem}_{hashlib.sha1(str(r).encode()).hexdigest()[:6]}"
        files.append(_File(i, p, name, r.relative_to(root).as_posix()))
    return root, files


_FRAME_NAME = re.compile(r"_f\d{4}$")


def _frame_name(f: _File, frame: int, n_frames: int) -> str:
    return f.name if n_frames == 1 else f"{f.name}_f{frame:04d}"


def class_names_for(cfg, names: Sequence[str] | None = None) -> tuple[list[str], list[int]]:
    """Category names and COCO ids for the model's class indices.

    From ``names`` if given; else from the metadata of the config's first test (or train) data
    set when it is registered (keeping its COCO category ids); else ``class_0, class_1, ...``.
    """
    num = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        num = int(cfg.MODEL.RETINANET.NUM_CLASSES)
    if names:
        names = [str(n) for n in names]
        if len(names) != num:
            raise PredictError(
                f"--classes gives {len(names)} names but the model predicts {num} classes "
                "(MODEL.ROI_HEADS.NUM_CLASSES)."
            )
        return names, list(range(1, num + 1))
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = set(DatasetCatalog.list())
    for dataset in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if dataset not in registered:
            continue
        meta = MetadataCatalog.get(dataset)
        classes = list(meta.get("thing_classes", []) or [])
        if len(classes) != num:
            continue
        id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
        ids = list(range(1, num + 1))
        if id_map:
            inverse = {v: k for k, v in id_map.items()}
            ids = [int(inverse.get(i, i + 1)) for i in range(num)]
        return classes, ids
    logger.warning(
        "no registered data set of the config names the %d classes; calling them class_0 ... "
        "(pass --classes NAME,NAME,... or set EMDET_DATASETS to name them)",
        num,
    )
    return [f"class_{i}" for i in range(num)], list(range(1, num + 1))


def inference_cfg(cfg, options: PredictOptions, *, log: bool = False):
    """A frozen copy of ``cfg`` with the score threshold applied: ``options``', else the one
    calibrated on the validation set beside ``MODEL.WEIGHTS`` (``score_threshold.json``,
    :mod:`emdet.evaluation.threshold`), else the config's."""
    from emdet.evaluation.threshold import THRESHOLD_FILE, read_threshold

    threshold = options.score_threshold
    weights = str(cfg.MODEL.WEIGHTS)
    if threshold is None and weights and ("://" not in weights or weights.startswith("emdet://")):
        threshold = read_threshold(cfg.MODEL.WEIGHTS)
        if threshold is not None and log:
            logger.info("score threshold %.3f, calibrated on the validation set (stored in the "
                        "weights, or %s beside them; --score-threshold overrides it)",
                        threshold, THRESHOLD_FILE)
    cfg = cfg.clone()
    cfg.defrost()
    if threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(threshold)
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = float(threshold)
    cfg.freeze()
    return cfg


def _with_input_scale(cfg, options: PredictOptions, rank: int) -> PredictOptions:
    """``options`` with the input scale resolved: given, measured from the training images of
    the config (:func:`emdet.inference.predictor.training_input_scale`), or none (0)."""
    import dataclasses

    from emdet.inference.predictor import training_input_scale

    if options.input_scale is not None:
        return options
    scale = training_input_scale(cfg)
    if rank == 0:
        if scale is None:
            logger.warning(
                "input scale unknown (the config's DATASETS.TRAIN %s are not registered here): "
                "images up to --tile pixels are resized as in evaluation, larger ones are cut "
                "into tiles at their own pixel scale. Set EMDET_DATASETS to the training data "
                "or pass --input-scale S (model pixels per image pixel)", list(cfg.DATASETS.TRAIN))
        else:
            logger.info("input scale %.4g model pixels per image pixel, from the training "
                        "images of %s; images of about their size are predicted whole, as in "
                        "evaluation", scale, ", ".join(cfg.DATASETS.TRAIN))
    return dataclasses.replace(options, input_scale=scale or 0.0)


def _settings(cfg, options: PredictOptions, names: list[str]) -> dict[str, Any]:
    hashed = cfg.clone()
    hashed.defrost()
    hashed.MODEL.DEVICE = ""
    hashed.OUTPUT_DIR = ""
    weights = str(cfg.MODEL.WEIGHTS)
    weights_info: dict[str, Any] = {"path": weights}
    if os.path.isfile(weights):
        st = os.stat(weights)
        weights_info.update(path=str(Path(weights).resolve()), size=st.st_size,
                            mtime_ns=st.st_mtime_ns)
    tile = int(cfg.INPUT.MIN_SIZE_TEST if options.tile is None else options.tile)
    overlap = int(tile // 4 if options.overlap is None else options.overlap)
    if tile and overlap >= tile:
        raise PredictError(f"--overlap {overlap} must be smaller than the tile side {tile} "
                           "(--tile, default INPUT.MIN_SIZE_TEST)")
    return {
        "config_sha1": hashlib.sha1(hashed.dump().encode()).hexdigest(),
        "weights": weights_info,
        "model": cfg.MODEL.META_ARCHITECTURE,
        "tile": tile,
        "overlap": overlap if tile else 0,
        "input_scale": options.input_scale or None,
        "score_threshold": float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
        "nms_threshold": float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST),
        "join_threshold": float(options.join_threshold),
        "min_size_test": int(cfg.INPUT.MIN_SIZE_TEST),
        "max_size_test": int(cfg.INPUT.MAX_SIZE_TEST),
        "clip_percentiles": list(cfg.INPUT.EM.CLIP_PERCENTILES),
        "input_dtype": str(cfg.INPUT.EM.INPUT_DTYPE),
        "background": [str(cfg.INPUT.EM.BACKGROUND), float(cfg.INPUT.EM.BACKGROUND_RADIUS)],
        "classes": names,
    }


def _dist() -> tuple[int, int]:
    from detectron2.utils import comm

    return comm.get_rank(), comm.get_world_size()


def _synchronize() -> None:
    from detectron2.utils import comm

    comm.synchronize()


def _shared_run_id(world_size: int) -> str:
    token = uuid.uuid4().hex[:12]
    if world_size > 1:
        from detectron2.utils import comm

        token = comm.all_gather(token)[0]
    return token


# ----------------------------------------------------------------------------------------
# reading frames in a background thread


@dataclass
class _Item:
    kind: str  # "frame", "failed", "end", "done"
    file: _File
    frame: int | None = None
    n_frames: int = 1
    image: np.ndarray | None = None
    meta: Any = None
    error: BaseException | None = None
    part: dict | None = None


class _Parts:
    """Where a run keeps its per-file results."""

    def __init__(self, output_dir: Path):
        self.dir = output_dir / "parts" / "files"

    def part(self, f: _File) -> Path:
        return self.dir / f"{f.name}.part.json"

    def frames_dir(self, f: _File) -> Path:
        return self.dir / f"{f.name}.frames"

    def frame(self, f: _File, i: int) -> Path:
        return self.frames_dir(f) / f"{i:06d}.json"

    def failed(self, f: _File) -> Path:
        return self.dir / f"{f.name}.failed.json"

    def load_part(self, f: _File) -> dict | None:
        part = _read_json(self.part(f))
        if not part or part.get("version") != PART_VERSION:
            return None
        try:
            if part.get("fingerprint") != _fingerprint(f.path):
                return None
        except OSError:
            return None
        return part

    def load_frames(self, f: _File) -> dict[int, dict]:
        folder = self.frames_dir(f)
        if not folder.is_dir():
            return {}
        try:
            fp = _fingerprint(f.path)
        except OSError:
            fp = None
        frames = {}
        for p in folder.glob("*.json"):
            rec = _read_json(p)
            if rec and rec.get("fingerprint") == fp and isinstance(rec.get("frame"), int):
                frames[rec["frame"]] = rec
        return frames


def _read_frames(f: _File, parts: _Parts) -> Iterator[_Item]:
    """Items for one file: its finished part, or its unfinished frames one by one."""
    from emdet.data.io import SUPPORTED_EXTENSIONS, read_image

    part = parts.load_part(f)
    if part is not None:
        yield _Item("done", f, part=part, n_frames=len(part["frames"]))
        return
    done = parts.load_frames(f)
    try:
        first, meta = read_image(f.path, page=0)
    except Exception as e:  # noqa: BLE001 - any reader error is this file's failure
        yield _Item("failed", f, error=e)
        yield _Item("end", f, n_frames=0)
        return
    n = int(meta.n_frames)
    fmt = SUPPORTED_EXTENSIONS.get(f.path.suffix.lower())
    if 0 not in done:
        yield _Item("frame", f, 0, n, first, meta)
    del first
    if n > 1 and fmt not in _FRAME_BY_FRAME and len(done) < n - 1:
        try:
            stack, stack_meta = read_image(f.path)
        except Exception as e:  # noqa: BLE001
            for i in range(1, n):
                if i not in done:
                    yield _Item("failed", f, i, n, error=e)
            yield _Item("end", f, n_frames=n)
            return
        for i in range(1, n):
            if i not in done:
                yield _Item("frame", f, i, n, np.ascontiguousarray(stack[i]), stack_meta)
    elif n > 1:
        for i in range(1, n):
            if i in done:
                continue
            try:
                image, frame_meta = read_image(f.path, page=i)
            except Exception as e:  # noqa: BLE001
                yield _Item("failed", f, i, n, error=e)
                continue
            yield _Item("frame", f, i, n, image, frame_meta)
    yield _Item("end", f, n_frames=n)


def _prefetch(files: Sequence[_File], parts: _Parts, depth: int = 1) -> Iterator[_Item]:
    """The items of all files, read ``depth`` frames ahead in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    sentinel = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for f in files:
                for item in _read_frames(f, parts):
                    if not put(item):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(e)
        put(sentinel)

    thread = threading.Thread(target=work, name="emdet-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the reader notices within 0.1 s
        thread.join(timeout=10)


# ----------------------------------------------------------------------------------------
# the batch


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())


def _failure(f: _File, frame: int | None, e: BaseException, stage: str) -> dict[str, Any]:
    return {
        "file": f.file_name,
        "frame": "" if frame is None else int(frame),
        "error": f"{stage}: {type(e).__name__}",
        "reason": _reason(e),
    }


class _Runner:
    """One rank's share of a batch."""

    def __init__(self, output_dir: Path, cfg, options: PredictOptions, names, ids, predictor):
        self.out = output_dir
        self.cfg = cfg
        self.options = options
        self.names = names
        self.ids = ids
        self._predictor = predictor
        self.parts = _Parts(output_dir)
        self.predicted = 0
        self.skipped = 0
        self.progress = None
        self.failures: list[dict[str, Any]] = []

    @property
    def predictor(self):
        if self._predictor is None:
            from emdet.inference.predictor import EMPredictor

            self._predictor = EMPredictor(
                self.cfg,
                tile=self.options.tile,
                overlap=self.options.overlap,
                batch_size=self.options.batch_size,
                join_threshold=self.options.join_threshold,
                input_scale=self.options.input_scale or None,
            )
        return self._predictor

    # -- per frame outputs --------------------------------------------------------------
    def _extras(self, f: _File, record: dict, raw: np.ndarray, prepared: np.ndarray,
                det) -> None:
        name = _frame_name(f, record["frame"], record["n_frames"])
        if self.options.overlays:
            from emdet.inference.overlay import draw_overlay, write_png

            rel = f"overlays/{name}.png"
            write_png(
                self.out / rel,
                draw_overlay(display_image(prepared), det, self.names,
                             max_size=self.options.overlay_max_size,
                             pixel_size=record["pixel_size"], unit=record["unit"]),
            )
            record["overlay"] = rel
        if self.options.labelme:
            record["labelme"] = self._labelme(f, name, record, raw, prepared)

    def _labelme(self, f: _File, name: str, record: dict, raw: np.ndarray,
                 prepared: np.ndarray) -> str:
        """A labelme file whose ``imagePath`` is the image at full depth with its calibration
        (the input file itself; for a frame of a stack, a calibrated TIFF of that frame), and
        whose embedded ``imageData`` is the 8-bit view labelme shows. Converting the corrected
        file back (``convert_annotations.py --format labelme``) then reads the original pixels
        and pixel size, not an 8-bit copy."""
        import cv2

        from emdet.data.converters import coco_to_labelme
        from emdet.data.io import write_tiff

        folder = self.out / "labelme"
        folder.mkdir(parents=True, exist_ok=True)
        if record["n_frames"] == 1:
            image_file = f.path.resolve()
        else:  # labelme has no frames: this frame alone, lossless and calibrated
            image_file = folder / f"{name}.tif"
            unit = record["unit"] if record["pixel_size"] is not None else "nm"
            write_tiff(image_file, raw, pixel_size=record["pixel_size"], unit=unit)
        ok, png = cv2.imencode(".png", display_image(prepared))
        if not ok:
            raise PredictError(f"{f.file_name}: cannot encode the labelme view as PNG")
        anns = [dict(a, id=k + 1, image_id=1) for k, a in enumerate(record["annotations"])]
        coco = {
            "images": [{"id": 1, "file_name": str(image_file), "height": record["height"],
                        "width": record["width"]}],
            "categories": [{"id": i, "name": n} for i, n in zip(self.ids, self.names, strict=True)],
            "annotations": anns,
        }
        coco_to_labelme(coco, folder, images_dir=folder, overwrite=True, progress=False,
                        image_data={1: png.tobytes()}, stems={1: name})
        return f"labelme/{name}.json"

    def _missing_extras(self, record: dict) -> bool:
        if self.options.overlays and not (
            record.get("overlay") and (self.out / record["overlay"]).is_file()
        ):
            return True
        return bool(
            self.options.labelme
            and not (record.get("labelme") and (self.out / record["labelme"]).is_file())
        )

    def ensure_extras(self, f: _File, part: dict) -> None:
        """Draw overlays / labelme files a finished file lacks (e.g. resumed with --labelme)."""
        from emdet.data.io import read_image
        from emdet.inference.coco import annotations_to_detections
        from emdet.inference.predictor import prepare_image

        changed = False
        index = {cid: k for k, cid in enumerate(self.ids)}
        for record in part["frames"]:
            if not self._missing_extras(record):
                continue
            try:
                image, _ = read_image(f.path, page=record["frame"])
            except Exception as e:  # noqa: BLE001
                logger.warning("%s: cannot redraw the overlay: %s", f.file_name, _reason(e))
                continue
            prepared = prepare_image(image, self.cfg)
            det = annotations_to_detections(
                record["annotations"], record["height"], record["width"], index
            )
            self._extras(f, record, image, prepared, det)
            changed = True
        if changed:
            _write_json(self.parts.part(f), part)

    # -- per frame ------------------------------------------------------------------------
    def predict_frame(self, item: _Item) -> dict:
        from emdet.inference.coco import detections_to_annotations
        from emdet.inference.predictor import prepare_image

        f, meta = item.file, item.meta
        t0 = time.perf_counter()
        prepared = prepare_image(item.image, self.cfg)
        predictor = self.predictor
        predictor.on_tiles = None if self.progress is None else self.progress.tiles
        det = predictor.predict_prepared(prepared)
        height, width = prepared.shape[:2]
        record = {
            "fingerprint": _fingerprint(f.path),
            "file_name": f.file_name,
            "frame": int(item.frame),
            "n_frames": int(item.n_frames),
            "width": int(width),
            "height": int(height),
            "pixel_size": None if meta.pixel_size is None else float(meta.pixel_size),
            "unit": meta.unit,
            "format": meta.format,
            "overlay": None,
            "annotations": detections_to_annotations(det, height, width, self.ids),
        }
        record["seconds"] = round(time.perf_counter() - t0, 4)
        self._extras(f, record, item.image, prepared, det)
        return record

    def run(self, files: Sequence[_File], progress) -> None:
        self.progress = progress
        current: dict[str, Any] = {}

        def start(f: _File) -> None:
            current.clear()
            current.update(file=f, records=[], failures=[])

        for item in _prefetch(files, self.parts):
            f = item.file
            if item.kind == "done":
                self.ensure_extras(f, item.part)
                self.skipped += 1
                progress.skip(item.n_frames)
                continue
            if current.get("file") is not f:
                start(f)
            if item.kind == "frame":
                progress.begin(item.n_frames, f.file_name)
                try:
                    record = self.predict_frame(item)
                except Exception as e:  # noqa: BLE001
                    if self.predicted == 0 and not isinstance(e, MemoryError):
                        # Nothing has worked yet: more likely the set-up than this file.
                        raise
                    logger.exception("%s frame %s: prediction failed", f.file_name, item.frame)
                    current["failures"].append(_failure(f, item.frame, e, "predict"))
                    progress.failed()
                    continue
                self.predicted += 1
                if item.n_frames == 1:
                    current["records"].append(record)
                else:
                    _write_json(self.parts.frame(f, item.frame), record)
                progress.done()
            elif item.kind == "failed":
                current["failures"].append(_failure(f, item.frame, item.error, "read"))
                logger.warning("%s: %s", f.file_name, _reason(item.error))
                progress.failed()
            elif item.kind == "end":
                self.finish_file(f, item.n_frames, current["records"], current["failures"])

    def finish_file(self, f: _File, n_frames: int, records: list, failures: list) -> None:
        if failures:
            self.failures.extend(failures)
            _write_json(
                self.parts.failed(f),
                {"version": PART_VERSION, "file_name": f.file_name, "failures": failures},
            )
            if records:  # a single frame cannot both work and fail; keep what worked anyway
                for record in records:
                    _write_json(self.parts.frame(f, record["frame"]), record)
            return
        if n_frames > 1:
            frames = self.parts.load_frames(f)
            if len(frames) < n_frames:  # the file changed while it was read; retry next run
                return
            records = [frames[i] for i in range(n_frames)]
        if not records:
            return
        part = {
            "version": PART_VERSION,
            "fingerprint": records[0]["fingerprint"],
            "file_name": f.file_name,
            "frames": records,
        }
        _write_json(self.parts.part(f), part)
        with contextlib.suppress(FileNotFoundError):
            self.parts.failed(f).unlink()
        shutil.rmtree(self.parts.frames_dir(f), ignore_errors=True)


class _Progress:
    """tqdm bar counting frames (images), with images/s; silent when disabled."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="image", disable=not enabled, dynamic_ncols=True,
                        desc="predict", smoothing=0.1)
        self.n_failed = 0
        self._seen: set[str] = set()

    def begin(self, n_frames: int, name: str) -> None:
        if n_frames > 1 and name not in self._seen:  # a stack counts one image per frame
            self._seen.add(name)
            self.bar.total += n_frames - 1
            self.bar.refresh()
        self.bar.set_postfix_str(name[-40:], refresh=False)

    def tiles(self, done: int, total: int) -> None:
        if total > 1:
            self.bar.set_postfix_str(f"tile {done}/{total}")

    def done(self) -> None:
        self.bar.update(1)

    def skip(self, n: int) -> None:
        self.bar.total += n - 1
        self.bar.update(n)

    def failed(self) -> None:
        self.n_failed += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise PredictError(f"--output {output_dir} is a file, not a folder; give a folder for "
                           "predictions.json, failures.csv and overlays/.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PredictError(f"--output {output_dir}: cannot create the folder ({e.strerror or e})"
                           ) from None
    for name in ("predictions.json", "failures.csv", "parts", "overlays"):
        target = output_dir / name
        want_dir = name in ("parts", "overlays")
        if target.exists() and target.is_dir() != want_dir:
            raise PredictError(f"{target} is a {'file' if want_dir else 'folder'}, where predict "
                               f"writes its {'folder' if want_dir else 'file'}; move it away or "
                               "choose another --output folder.")


def _check_settings(output_dir: Path, settings: dict, overwrite: bool, rank: int) -> None:
    run_file = output_dir / "parts" / "run.json"
    old = _read_json(run_file)
    if old is not None and old != settings:
        if overwrite:
            if rank == 0:
                for sub in ("parts", "overlays"):
                    shutil.rmtree(output_dir / sub, ignore_errors=True)
                for name in ("predictions.json", "failures.csv"):
                    with contextlib.suppress(FileNotFoundError):
                        (output_dir / name).unlink()
        else:
            diff = [
                f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                for k in sorted(set(old) | set(settings))
                if old.get(k) != settings.get(k)
            ]
            raise PredictError(
                f"{output_dir} holds predictions made with other settings ({'; '.join(diff)}). "
                "Choose another --output folder, or pass --overwrite to discard them."
            )
    elif overwrite and rank == 0:
        shutil.rmtree(output_dir / "parts", ignore_errors=True)
        shutil.rmtree(output_dir / "overlays", ignore_errors=True)
    if rank == 0:
        _write_json(run_file, settings)


def predict_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    cfg,
    options: PredictOptions | None = None,
    *,
    predictor=None,
    rank: int | None = None,
    world_size: int | None = None,
) -> PredictResult:
    """Predict every image of ``inputs`` into ``output_dir`` (see the module docstring).

    Parameters
    ----------
    inputs : path, glob or folder, or a sequence of them
        Anything :func:`emdet.data.io.list_images` accepts; multi-frame files give one COCO
        image per frame.
    output_dir : path
        Created if needed; reused to resume.
    cfg : CfgNode
        emdet config with ``MODEL.WEIGHTS``.
    options : PredictOptions, optional
    predictor : EMPredictor, optional
        Use this predictor instead of building one from ``cfg`` (tests, notebooks).
    rank, world_size : int, optional
        This process's share (files ``rank::world_size``); default from ``detectron2.utils.comm``
        (set by ``launch``). Rank 0 assembles once every rank has finished.

    Returns
    -------
    PredictResult

    Raises
    ------
    PredictError
        No images found, a bad input path, class names that do not fit, or a settings clash.
    """
    from emdet.data.io import list_images

    options = options or PredictOptions()
    dist_rank, dist_world = _dist()
    rank = dist_rank if rank is None else int(rank)
    world_size = dist_world if world_size is None else int(world_size)
    output_dir = Path(output_dir)
    t0 = time.perf_counter()

    try:
        paths = list_images(inputs, recursive=options.recursive)
    except (FileNotFoundError, ValueError) as e:
        raise PredictError(f"cannot list the input images: {e}") from e
    if not paths:
        raise PredictError(
            f"no images found in {inputs!r}; emdet reads .tif/.tiff, .png, .jpg, .dm3/.dm4, "
            ".mrc, .ser, .emd and .npy files (add --recursive for sub-folders)."
        )
    root, files = _plan_files(paths)
    if predictor is None:
        _check_weights(cfg)
    cfg = inference_cfg(cfg, options, log=rank == 0)
    options = _with_input_scale(cfg, options, rank)
    names, ids = class_names_for(cfg, options.class_names)
    settings = _settings(cfg, options, names)
    _check_output_dir(output_dir)
    _check_settings(output_dir, settings, options.overwrite, rank)
    if dist_world > 1:
        _synchronize()  # rank 0 may have cleared the folder
    run_id = _shared_run_id(dist_world)

    mine = files[rank::world_size]
    runner = _Runner(output_dir, cfg, options, names, ids, predictor)
    progress = _Progress(len(mine), options.progress and rank == 0)
    try:
        runner.run(mine, progress)
    finally:
        progress.close()
        if runner._predictor is not None:
            runner._predictor.on_tiles = None
    result = PredictResult(
        output_dir,
        None,
        None,
        files=len(mine),
        frames_predicted=runner.predicted,
        files_skipped=runner.skipped,
        failed=runner.failures,
    )
    distributed = world_size > 1 and dist_world > 1
    if distributed:
        atomic_write(output_dir / "parts" / f".done-{run_id}-{rank}", str(len(mine)))
    if rank == 0:
        if distributed:
            _wait_for_ranks(output_dir, run_id, world_size)
        result.predictions, result.failures = _assemble(
            output_dir, files, root, cfg, names, ids, settings
        )
    result.seconds = time.perf_counter() - t0
    return result


def _check_weights(cfg) -> None:
    weights = str(cfg.MODEL.WEIGHTS)
    if not weights:
        raise PredictError(
            "MODEL.WEIGHTS is empty: prediction needs trained weights, e.g. append "
            "'MODEL.WEIGHTS output/quick/vesicles_mask_rcnn/model_final.pth' to the command."
        )
    if "://" not in weights and not os.path.isfile(weights):
        raise PredictError(
            f"MODEL.WEIGHTS {weights} does not exist; give the model_final.pth (or another "
            "checkpoint) that tools/train_net.py wrote."
        )


def _wait_for_ranks(output_dir: Path, run_id: str, world_size: int) -> None:
    markers = [output_dir / "parts" / f".done-{run_id}-{r}" for r in range(world_size)]
    last_log = time.monotonic()
    while not all(m.exists() for m in markers):
        if time.monotonic() - last_log > 60:
            waiting = [r for r, m in enumerate(markers) if not m.exists()]
            logger.info("waiting for ranks %s to finish their files", waiting)
            last_log = time.monotonic()
        time.sleep(1.0)
    for m in markers:
        with contextlib.suppress(FileNotFoundError):
            m.unlink()


# ----------------------------------------------------------------------------------------
# assembling predictions.json


def _file_results(parts: _Parts, f: _File) -> tuple[list[dict], list[dict]]:
    part = parts.load_part(f)
    if part is not None:
        return part["frames"], []
    frames = parts.load_frames(f)
    failed = _read_json(parts.failed(f)) or {}
    failures = list(failed.get("failures", []))
    if not frames and not failures:
        failures = [{"file": f.file_name, "frame": "", "error": "missing",
                     "reason": "no result: the run was interrupted before this file"}]
    return [frames[i] for i in sorted(frames)], failures


def _assemble(
    output_dir: Path, files: Sequence[_File], root: Path, cfg, names, ids, settings
) -> tuple[Path, Path]:
    """Write ``predictions.json`` and ``failures.csv`` from ``parts/`` (streamed, atomic).

    Images are numbered in file order (frames in order), annotations in image order.
    """
    import emdet

    parts = _Parts(output_dir)
    info = {
        "description": "emdet predictions",
        "date_created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "emdet_version": emdet.__version__,
        "image_root": str(root),
        "settings": settings,
    }
    categories = [{"id": int(i), "name": n} for i, n in zip(ids, names, strict=True)]
    target = output_dir / "predictions.json"
    failures: list[dict] = []
    with atomic_open(target, "w") as out:
        out.write('{"info": ' + json.dumps(info) + ', "licenses": [], "categories": ')
        out.write(json.dumps(categories) + ', "images": [')
        image_id = 0
        first = True
        for f in files:  # pass 1: images
            records, fails = _file_results(parts, f)
            failures.extend(fails)
            for rec in records:
                image_id += 1
                image = {k: v for k, v in rec.items() if k not in ("annotations", "fingerprint")}
                image["id"] = image_id
                out.write(("" if first else ", ") + json.dumps(image))
                first = False
        out.write('], "annotations": [')
        image_id = ann_id = 0
        first = True
        for f in files:  # pass 2: annotations, one file at a time
            records, _ = _file_results(parts, f)
            for rec in records:
                image_id += 1
                for ann in rec["annotations"]:
                    ann_id += 1
                    ann = dict(ann, id=ann_id, image_id=image_id)
                    out.write(("" if first else ",\n") + json.dumps(ann))
                    first = False
        out.write("]}\n")
    failures_path = output_dir / "failures.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FAILURE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in failures:
        writer.writerow({k: csv_safe_cell(row.get(k, "")) for k in FAILURE_COLUMNS})
    atomic_write(failures_path, buf.getvalue())
    return target, failures_path
