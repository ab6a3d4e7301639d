"""What the napari plugin does, without Qt: read, run a model, filter by score, save as COCO.

The widgets (:mod:`emdet.napari.widgets`) only wire these functions to napari layers, so they
are tested without a screen too.

* :func:`read_layers`: an EM file as napari layer data, the pixel size as the layer's ``scale``
  and ``units`` (a stack is one layer with a frame axis).
* :func:`run_model`: a trained emdet model on one image: :class:`ModelResult` with every
  detection down to the model's own minimum score, so a score slider can show more or fewer
  objects (:meth:`ModelResult.labels_at`, :meth:`ModelResult.points_at`) without running the
  model again.
* :func:`layers_to_coco` / :func:`save_dataset`: the (edited) layers of one image as COCO in the
  schema of ``tools/predict.py`` (RLE masks, ``rbox``, ``point``, pixel size), written to
  ``datasets/<name>/annotations/<split>.json`` with the image copied into ``images/`` at full
  depth, so ``tools/train_net.py`` / ``train_unet.py`` retrain on it.
* :func:`measure_layer`: the ``emdet.stats`` table of a Labels layer in physical units.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ModelResult", "layers_to_coco", "measure_layer", "read_layers", "run_model",
           "save_dataset"]

#: Kinds of :class:`ModelResult` and the napari layer each becomes.
KINDS = {"instances": "labels", "rotated": "shapes", "points": "points", "classes": "labels"}


def read_layers(path: str | Path) -> list[tuple[Any, dict, str]]:
    """``[(data, layer kwargs, "image")]`` of an EM file: the pixels as stored, ``scale`` and
    ``units`` from the file's calibration (pixels when it has none), the reading details in
    ``metadata["emdet"]`` (path, pixel size, unit, frames), which the other widgets use."""
    from emdet.data.io import read_image

    path = Path(path)
    image, meta = read_image(path)
    nm = meta.pixel_size_nm
    ps = nm or 1.0
    unit = "nm" if nm else "pixel"
    stack = image.ndim == 3 and meta.n_frames > 1
    kwargs = {
        "name": path.stem,
        "scale": (1.0, ps, ps) if stack else (ps, ps),
        "units": ("pixel", unit, unit) if stack else (unit, unit),
        "metadata": {"emdet": {"path": str(path.resolve()), "pixel_size": nm,
                               "unit": "nm" if nm else None,
                               "n_frames": int(meta.n_frames), "format": meta.format}},
    }
    return [(image, kwargs, "image")]


@dataclass
class ModelResult:
    """Every detection of one model run on one image.

    ``kind`` is ``"instances"`` (masks: ``masks`` full-image bool crops as
    :class:`emdet.data.rle.MaskCrop`), ``"rotated"`` (``boxes`` ``(N, 5)`` cx, cy, w, h, angle
    in degrees, counter-clockwise on screen), ``"points"`` (``points`` ``(N, 2)`` x, y) or
    ``"classes"`` (a class label image ``labels``, no scores).
    """

    kind: str
    class_names: list[str]
    shape: tuple[int, int]
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    masks: list | None = None
    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    threshold: float = 0.5  # the model's calibrated score threshold, or 0.5

    def keep(self, threshold: float) -> np.ndarray:
        """Indices of the detections scoring at least ``threshold``."""
        return np.flatnonzero(self.scores >= threshold)

    def labels_at(self, threshold: float) -> np.ndarray:
        """``(H, W)`` int32 label image: object ``k + 1`` for detection ``k`` at or above the
        threshold (higher scores drawn on top); the class image for ``"classes"``."""
        if self.kind == "classes":
            return self.labels
        out = np.zeros(self.shape, np.int32)
        for k in sorted(self.keep(threshold), key=lambda k: self.scores[k]):
            crop = self.masks[k]
            x0, y0, x1, y1 = crop.extent
            out[y0:y1, x0:x1][crop.mask] = k + 1
        return out

    def points_at(self, threshold: float) -> np.ndarray:
        """``(M, 2)`` (row, column) of the points at or above the threshold (napari order)."""
        keep = self.keep(threshold)
        return self.points[keep][:, ::-1].copy()

    def shapes_at(self, threshold: float) -> list[np.ndarray]:
        """Corner polygons ``(4, 2)`` (row, column) of the rotated boxes at or above it."""
        from emdet.data.geometry import rbox_to_polygon

        return [np.asarray(rbox_to_polygon(self.boxes[k]))[:, ::-1]
                for k in self.keep(threshold)]


def run_model(image: np.ndarray, config_file: str | Path, weights: str | Path | None = None,
              *, pixel_size: float | None = None, method: str = "auto",
              bragg_params: str | Path | None = None, opts: Sequence[str] = ()
              ) -> ModelResult:
    """Run a trained emdet model on one ``(H, W)`` image.

    Parameters
    ----------
    config_file : path
        A detectron2 config (Mask R-CNN, rotated Faster R-CNN) or a dense U-Net config
        (segmentation, heatmap points); ignored for ``method="bragg"``.
    weights : path or ``emdet://`` name, optional
        Default: the config's ``MODEL.WEIGHTS``.
    pixel_size : float, optional
        nm per pixel, for dense configs with lengths in nm (``HEATMAP.MIN_DISTANCE_NM``).
    method : {"auto", "bragg"}
        ``"bragg"``: the Bragg filter (Sadre et al.) with ``bragg_params`` (a JSON file of
        ``sigma``, ``g_thresh``, ``m_thresh`` as ``compare_segmentation.py`` writes it).
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"run_model needs one (H, W) image, got shape {image.shape}; pick a "
                         "frame of the stack")
    if method == "bragg":
        from emdet.dense.bragg import BraggFilter

        params = {}
        if bragg_params:
            with open(bragg_params, encoding="utf-8") as f:
                params = {k: float(v) for k, v in json.load(f).items()
                          if k in ("sigma", "g_thresh", "m_thresh")}
        mask = BraggFilter(**params).predict(image)
        return ModelResult("classes", ["lattice", "contamination"], image.shape,
                           labels=np.asarray(mask, np.int32))
    from emdet.tuning.search import is_unet_config

    if is_unet_config(config_file):
        return _run_dense(image, config_file, weights, pixel_size, opts)
    return _run_detectron2(image, config_file, weights, opts)


def _run_dense(image, config_file, weights, pixel_size, opts) -> ModelResult:
    from emdet.dense.config import load_unet_config
    from emdet.dense.predict import DensePredictor

    predictor = DensePredictor(load_unet_config(config_file, list(opts)), weights=weights)
    names = list(predictor.classes)
    if predictor.task == "segmentation":
        labels, _ = predictor.segment(image)
        return ModelResult("classes", names, image.shape, labels=labels.astype(np.int32))
    xy, cls, scores = predictor.points(image, pixel_size)
    thr = predictor.thresholds
    # peaks were already cut at the (calibrated) threshold: the slider starts at the lowest
    threshold = float(min(thr)) if isinstance(thr, list) else float(thr)
    return ModelResult("points", names, image.shape, scores=np.asarray(scores, np.float32),
                       classes=np.asarray(cls, np.int64),
                       points=np.asarray(xy, np.float64).reshape(-1, 2), threshold=threshold)


def _run_detectron2(image, config_file, weights, opts) -> ModelResult:
    from emdet.config import load_config
    from emdet.evaluation.threshold import read_threshold
    from emdet.inference.batch import class_names_for
    from emdet.inference.predictor import EMPredictor, training_input_scale

    extra = list(opts) + (["MODEL.WEIGHTS", str(weights)] if weights else [])
    cfg = load_config(config_file, extra)
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = min(float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST),
                                                0.05)  # all down to 0.05: the slider filters
    cfg.freeze()
    det = EMPredictor(cfg, input_scale=training_input_scale(cfg))(image)
    names, _ = class_names_for(cfg)
    calibrated = read_threshold(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else None
    threshold = 0.5 if calibrated is None else float(calibrated)
    if det.box_dim == 5:
        return ModelResult("rotated", names, image.shape, scores=det.scores, classes=det.classes,
                           boxes=det.boxes, threshold=threshold)
    if det.masks is None:
        raise ValueError(f"{config_file}: the model predicts boxes without masks; the viewer "
                         "shows masks (Mask R-CNN), rotated boxes or points")
    return ModelResult("instances", names, image.shape, scores=det.scores, classes=det.classes,
                       masks=list(det.masks), threshold=threshold)


def layers_to_coco(
    image_meta: dict,
    shape: tuple[int, int],
    class_names: Sequence[str],
    *,
    labels: np.ndarray | None = None,
    label_classes: dict[int, int] | None = None,
    points: np.ndarray | None = None,
    point_classes: Sequence[int] | None = None,
    rboxes: np.ndarray | None = None,
    rbox_classes: Sequence[int] | None = None,
    file_name: str | None = None,
) -> dict:
    """One image's objects as a COCO dict in predict's schema (no scores: they are labels now).

    Parameters
    ----------
    image_meta : dict
        ``metadata["emdet"]`` of the image layer (:func:`read_layers`): path, pixel size, unit.
    shape : (H, W)
    labels : (H, W) int array, optional
        Instance label image (each positive value one object), as edited in napari.
    label_classes : dict, optional
        Class index of each label value (default: class 0).
    points : (N, 2) array, optional
        Points in napari order (row, column); ``point_classes`` their class indices.
    rboxes : (N, 5) array, optional
        Rotated boxes ``cx, cy, w, h, angle``; ``rbox_classes`` their class indices.
    """
    h, w = (int(v) for v in shape)
    image = {"id": 1, "file_name": file_name or Path(image_meta["path"]).name, "height": h,
             "width": w}
    if image_meta.get("pixel_size"):
        image.update(pixel_size=float(image_meta["pixel_size"]), unit=image_meta["unit"])
    anns: list[dict] = []

    def add(cat: int, **fields) -> None:
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": int(cat) + 1,
                     "iscrowd": 0, **fields})

    if labels is not None:
        from scipy import ndimage

        from emdet.data.rle import MaskCrop, crop_to_rle

        labels = np.asarray(labels)
        # each object from its own box (find_objects), not a full-image mask per label
        for index, box in enumerate(ndimage.find_objects(np.clip(labels, 0, None)), start=1):
            if box is None:
                continue
            crop = MaskCrop.from_mask(labels[box] == index, y0=box[0].start, x0=box[1].start)
            x0, y0, x1, y1 = crop.extent
            add((label_classes or {}).get(index, 0), segmentation=crop_to_rle(crop, h, w),
                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                area=float(crop.area))
    if points is not None:
        for k, (row, col) in enumerate(np.asarray(points, float).reshape(-1, 2)):
            add(point_classes[k] if point_classes is not None else 0,
                point=[float(col), float(row)], bbox=[float(col), float(row), 0.0, 0.0],
                area=0.0)
    if rboxes is not None:
        from emdet.data.geometry import normalize_rbox, rbox_to_xywh

        for k, box in enumerate(np.asarray(rboxes, float).reshape(-1, 5)):
            rb = [float(v) for v in normalize_rbox(box)]
            add(rbox_classes[k] if rbox_classes is not None else 0, rbox=rb,
                bbox=[float(v) for v in rbox_to_xywh(rb)], area=rb[2] * rb[3])
    return {"images": [image], "annotations": anns,
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]}


def save_dataset(coco: dict, image_path: str | Path, root: str | Path, name: str,
                 split: str = "train", *, frame: int | None = None,
                 class_mask: np.ndarray | None = None) -> Path:
    """Add one image's COCO to ``root/<name>/annotations/<split>.json`` (replacing that image's
    earlier entry) and copy the image into ``root/<name>/images/`` as it is (full depth, its
    calibration); ``frame`` of a stack is written there as its own calibrated TIFF
    (``<stem>_f0003.tif``). ``class_mask`` (a segmentation: one class index per pixel) is
    written as ``root/<name>/masks/<image stem>.png`` and named in the image's
    ``sem_seg_file_name``, the layout ``train_unet.py`` reads. Every file is written
    atomically. Returns the annotations file."""
    from emdet.data.cocofile import check_coco, read_coco
    from emdet.data.io import read_image, write_tiff
    from emdet.utils.atomic import atomic_write

    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"data set name {name!r} must be a plain folder name")
    if not split or Path(split).name != split:
        raise ValueError(f"split {split!r} must be a plain file name")
    check_coco(coco, "the layers")
    ds = Path(root) / name
    (ds / "images").mkdir(parents=True, exist_ok=True)
    (ds / "annotations").mkdir(parents=True, exist_ok=True)
    src = Path(image_path)
    if frame is not None:  # a frame alone: lossless, calibrated, named as predict names it
        pixels, meta = read_image(src, page=int(frame))
        target = ds / "images" / f"{src.stem}_f{int(frame):04d}.tif"
        write_tiff(target, pixels, pixel_size=meta.pixel_size_nm)
        src = target
    target = ds / "images" / src.name
    if not target.exists() or target.resolve() != src.resolve():
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(target)
    out = ds / "annotations" / f"{split}.json"
    current = read_coco(out) if out.is_file() else {"images": [], "annotations": [],
                                                    "categories": coco["categories"]}
    if [c["name"] for c in current["categories"]] != [c["name"] for c in coco["categories"]]:
        raise ValueError(f"{out} has the classes {[c['name'] for c in current['categories']]}, "
                         f"the layers {[c['name'] for c in coco['categories']]}")
    old = [im["id"] for im in current["images"] if im["file_name"] == src.name]
    images = [im for im in current["images"] if im["id"] not in old]
    anns = [a for a in current["annotations"] if a["image_id"] not in old]
    new_id = max([im["id"] for im in images], default=0) + 1
    next_ann = max([a["id"] for a in anns], default=0) + 1
    image = dict(coco["images"][0], id=new_id, file_name=src.name)
    if class_mask is not None:
        import cv2

        mask = np.asarray(class_mask)
        if mask.shape != (image["height"], image["width"]) or mask.min() < 0 or mask.max() > 255:
            raise ValueError(f"the class mask is {mask.shape} with values {mask.min()}.."
                             f"{mask.max()}; expected the image's size and classes 0..255")
        ok, png = cv2.imencode(".png", mask.astype(np.uint8))
        if not ok:
            raise ValueError("cannot encode the class mask as PNG")
        (ds / "masks").mkdir(exist_ok=True)
        atomic_write(ds / "masks" / f"{src.stem}.png", png.tobytes())
        image["sem_seg_file_name"] = f"{src.stem}.png"
    images.append(image)
    for k, a in enumerate(coco["annotations"]):
        anns.append(dict(a, id=next_ann + k, image_id=new_id))
    merged = {"images": images, "annotations": anns, "categories": current["categories"]}
    atomic_write(out, json.dumps(merged) + "\n")
    return out


def measure_layer(labels: np.ndarray, image_meta: dict | None = None):
    """The ``emdet.stats`` table (one row per object) of a label image, in nm when the image
    layer is calibrated, else in pixels."""
    from emdet.stats.measure import measure_labels

    meta = image_meta or {}
    if meta.get("pixel_size"):
        return measure_labels(np.asarray(labels), pixel_size=float(meta["pixel_size"]),
                              unit="nm")
    return measure_labels(np.asarray(labels), pixel_size=None, unit="px")
