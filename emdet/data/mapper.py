"""``EMDatasetMapper``: detectron2's DatasetMapper reading EM files, with the seeds' augmentations.

What differs from ``detectron2.data.DatasetMapper``:

* images are read by :func:`emdet.data.io.load_for_detectron2` (16/32-bit TIFF, dm3/dm4, MRC, ...),
  with one intensity normalisation (:func:`emdet.data.preprocess.model_input_options`:
  ``INPUT.EM.CLIP_PERCENTILES``, ``INPUT_DTYPE``, ``BACKGROUND``, ``MEDIAN_BLUR``), the same as
  predict's;
* training adds random 90-degree rotations and vertical flips (exact, no interpolation),
  brightness/contrast/gamma jitter, Gaussian noise and random crops, all from ``INPUT.EM.*``;
* rotated boxes (``BoxMode.XYWHA_ABS``) follow every geometric transform;
* with ``INPUT.EM.ROTATED`` the annotations become ``RotatedBoxes`` ``gt_boxes`` (detectron2's
  ``annotations_to_instances_rotated``) in emdet's canonical form (``w >= h``, angle in
  ``[-90, 90)``), rods cut by the image border shortened to their visible part; the training
  data sets are checked first for zero-size rods, angles that look like radians and boxes
  outside the image (:func:`check_rotated_annotations`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from emdet.data.geometry import normalize_rbox, rbox_to_polygon
from emdet.data.preprocess import model_input_options
from emdet.data.transforms import build_em_augmentations

__all__ = [
    "EMDatasetMapper",
    "check_rotated_annotations",
    "clip_rotated_to_image",
    "datasets_have_rle",
    "match_mask_format",
]

logger = logging.getLogger(__name__)


def datasets_have_rle(names: Sequence[str]) -> bool:
    """True if any annotation of the registered data sets ``names`` has an RLE mask (a dict
    ``segmentation``, as written by mask converters, CVAT or predict)."""
    from detectron2.data import DatasetCatalog

    for name in names:
        for record in DatasetCatalog.get(name):
            if any(isinstance(a.get("segmentation"), dict) for a in record.get("annotations", ())):
                return True
    return False


def match_mask_format(cfg) -> bool:
    """Set ``INPUT.MASK_FORMAT`` to ``bitmask`` when a training set has RLE masks.

    detectron2 builds ``PolygonMasks`` by default and stops at iteration 0 with "Cannot create
    polygons from ..." on RLE; ``bitmask`` reads both RLE and polygons, so the format follows the
    data. ``cfg`` must not be frozen. Returns True if it changed the config.
    """
    if not cfg.MODEL.MASK_ON or cfg.INPUT.MASK_FORMAT != "polygon":
        return False
    if not datasets_have_rle(cfg.DATASETS.TRAIN):
        return False
    cfg.INPUT.MASK_FORMAT = "bitmask"
    return True


class EMDatasetMapper(DatasetMapper):
    """DatasetMapper for EM images; see the module docstring."""

    @configurable
    def __init__(self, is_train: bool = True, *, input_options: dict | None = None,
                 rotated: bool = False, rotated_min_visible: float = 0.5, **kw):
        super().__init__(is_train, **kw)
        #: :func:`emdet.data.preprocess.to_model_input` settings (clip_percentiles, out_dtype,
        #: median_blur, background, background_radius); None: its defaults.
        self.input_options = dict(input_options or {})
        self.rotated = bool(rotated)
        self.rotated_min_visible = float(rotated_min_visible)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_em_augmentations(cfg, is_train)
        ret["input_options"] = model_input_options(cfg)
        ret["rotated"] = cfg.INPUT.EM.ROTATED
        ret["rotated_min_visible"] = cfg.INPUT.EM.ROTATED_MIN_VISIBLE
        if is_train:
            _check_rotated_datasets(cfg.DATASETS.TRAIN)
            if ret.get("use_instance_mask") and ret.get("instance_mask_format") == "polygon" \
                    and datasets_have_rle(cfg.DATASETS.TRAIN):
                ret["instance_mask_format"] = "bitmask"  # API use without setup_cfg
        return ret

    def read(self, file_name: str, page: int | None = None,
             keep_databar: bool | None = None) -> np.ndarray:
        """HxWx3 image for the model (uint8, or float32 on the same 0-255 scale), from any format
        emdet reads (``page`` of a stack)."""
        from emdet.data.io import load_for_detectron2

        image = load_for_detectron2(
            file_name, format=self.image_format, page=page, keep_databar=keep_databar,
            **self.input_options
        )
        return image if image.flags.writeable else image.copy()

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        # a frame of a multi-frame file (COCO image "frame", emdet.data.cocofile.image_frame)
        page = dataset_dict.get("frame")
        image = self.read(dataset_dict["file_name"], page)
        height = dataset_dict.get("height")
        if height is not None and image.shape[0] != height:
            from emdet.data.io import databar_rows

            if image.shape[0] + databar_rows(dataset_dict["file_name"]) == height:
                # annotated with the SEM databar kept (--keep-databar, or an older COCO file)
                image = self.read(dataset_dict["file_name"], page, keep_databar=True)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        """detectron2's, or with ``rotated`` the rotated branch (see the module docstring)."""
        if not self.rotated:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        boxes = _apply_rotated_box(transforms, _rotated_boxes(annos))
        boxes, keep = clip_rotated_to_image(boxes, image_shape, self.rotated_min_visible)
        objs = [
            {"bbox": box.tolist(), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": a["category_id"]}
            for box, a in zip(boxes, [a for a, k in zip(annos, keep, strict=True) if k],
                              strict=True)
        ]
        instances = utils.annotations_to_instances_rotated(objs, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances, box_threshold=_MIN_SIDE)


# ---------------------------------------------------------------------------------------------
# Rotated branch: boxes, border clipping and data set checks.

#: Rotated boxes with a side shorter than this (pixels, after augmentation) are dropped.
_MIN_SIDE = 1.0
#: Radians check: only data sets with at least this many rotated boxes are judged.
_RADIANS_MIN_BOXES = 20
_WARNED: set[str] = set()


def _rotated_boxes(annos: Sequence[dict]) -> np.ndarray:
    """``(N, 5)`` float64 ``XYWHA_ABS`` boxes; axis-aligned annotations get angle 0."""
    out = np.zeros((len(annos), 5))
    for i, a in enumerate(annos):
        if a["bbox_mode"] == BoxMode.XYWHA_ABS:
            out[i] = a["bbox"]
        else:
            x, y, w, h = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
            out[i] = (x + w / 2, y + h / 2, w, h, 0.0)
    return out


def _apply_rotated_box(transforms: T.TransformList, boxes: np.ndarray) -> np.ndarray:
    """Rotated boxes through every transform; photometric ones (points unmoved) are skipped."""
    probe = np.array([[1.0, 2.0], [37.0, 5.0], [3.0, 29.0]])
    for t in getattr(transforms, "transforms", [transforms]):
        if hasattr(t, "apply_rotated_box"):
            boxes = t.apply_rotated_box(np.array(boxes, dtype=np.float64))
        elif not np.allclose(t.apply_coords(probe.copy()), probe):
            raise NotImplementedError(
                f"{type(t).__name__} moves the image but has no rule for rotated boxes; register "
                f"one with {type(t).__name__}.register_type('rotated_box', fn) or leave this "
                "augmentation out of rotated training (INPUT.EM.ROTATED)"
            )
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


def clip_rotated_to_image(
    boxes: np.ndarray, image_shape: Sequence[int], min_visible: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Shorten rotated boxes (rods) cut by the image border to their part inside the image.

    Each box is first made canonical (:func:`emdet.data.geometry.normalize_rbox`, ``w`` along the
    rod); its centre line (length ``w``) is clipped to ``[0, W] x [0, H]`` and the box shrunk
    along it, keeping angle and ``h``.

    Parameters
    ----------
    boxes : ndarray, shape (N, 5)
        ``(cx, cy, w, h, angle_deg)``.
    image_shape : (H, W)
    min_visible : float
        Boxes with less than this fraction of their length inside are dropped, as are boxes
        with a side shorter than 1 pixel.

    Returns
    -------
    boxes : ndarray of float64, shape (M, 5)
        Kept boxes, canonical.
    keep : ndarray of bool, shape (N,)
        Which input boxes were kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    if len(boxes) == 0:
        return boxes.copy(), np.zeros(0, dtype=bool)
    boxes = normalize_rbox(boxes).reshape(-1, 5)
    cx, cy, w, h, a = boxes.T
    lo, hi, u = _centre_line_inside(boxes, float(image_shape[0]), float(image_shape[1]))
    length = hi - lo
    visible = np.divide(length, w, out=np.zeros_like(w), where=w > 0)
    keep = (visible >= min_visible) & (length >= _MIN_SIDE) & (h >= _MIN_SIDE)
    mid = (lo + hi) / 2
    out = np.stack([cx + mid * u[:, 0], cy + mid * u[:, 1], length, h, a], axis=1)
    return out[keep], keep


def _centre_line_inside(boxes: np.ndarray, height, width):
    """Part ``[lo, hi]`` (``lo <= hi``) of canonical boxes' centre lines inside the image.

    ``height``, ``width``: scalars or ``(N,)``; returns ``lo, hi`` ``(N,)`` as offsets along the
    width axis ``u`` ``(N, 2)`` from the centre (Liang-Barsky clipping).
    """
    cx, cy, w, _, a = boxes.T
    t = np.deg2rad(a)
    u = np.stack([np.cos(t), -np.sin(t)], axis=1)
    lo, hi = -w / 2, w / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        for centre, size, direction in ((cx, width, u[:, 0]), (cy, height, u[:, 1])):
            flat = np.abs(direction) < 1e-12
            t0 = np.where(flat, -np.inf, (0.0 - centre) / direction)
            t1 = np.where(flat, np.inf, (size - centre) / direction)
            lo = np.maximum(lo, np.minimum(t0, t1))
            hi = np.minimum(hi, np.maximum(t0, t1))
            hi = np.where(flat & ((centre < 0) | (centre > size)), lo, hi)
    return lo, np.maximum(hi, lo), u


def check_rotated_annotations(dataset_dicts: Sequence[dict], source: str) -> list[str]:
    """Problems with the rotated boxes of a data set, each logged once as a warning.

    Checks: boxes with zero width or height (ignored in training), angles that look like
    radians (at least 20 boxes, all ``|angle| <= 3.2``, not all zero), boxes partly or wholly
    outside their image (shortened or dropped in training).

    Parameters
    ----------
    dataset_dicts : list of dict
        detectron2 dataset dicts whose annotations have ``bbox_mode`` ``XYWHA_ABS``.
    source : str
        What to name in the messages (the annotation file).

    Returns
    -------
    list of str
        The warnings (empty if none).
    """
    boxes, files = [], []
    for d in dataset_dicts:
        for a in d.get("annotations", []):
            if a.get("bbox_mode") == BoxMode.XYWHA_ABS:
                boxes.append(a["bbox"])
                files.append((d.get("file_name", "?"), d.get("height"), d.get("width")))
    if not boxes:
        return []
    boxes = np.asarray(boxes, dtype=np.float64)
    messages = []

    def examples(mask: np.ndarray) -> str:
        names = sorted({str(files[i][0]).rsplit("/", 1)[-1] for i in np.flatnonzero(mask)})
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    small = (boxes[:, 2] < _MIN_SIDE) | (boxes[:, 3] < _MIN_SIDE)
    if small.any():
        messages.append(
            f"{source}: {int(small.sum())} rotated box(es) have a width or height below "
            f"{_MIN_SIDE:g} pixel (images {examples(small)}); they are ignored in training. "
            "Redraw or delete them."
        )
    angles = np.abs(boxes[:, 4])
    if len(boxes) >= _RADIANS_MIN_BOXES and angles.max() <= 3.2 and angles.max() > 1e-3:
        messages.append(
            f"{source}: all {len(boxes)} rotated boxes have |angle| <= 3.2, so the angles look "
            "like radians, but rbox angles are degrees, counter-clockwise on screen. Convert "
            "roLabelImg / LabelImg-KITTI files with tools/convert_annotations.py (it turns their "
            "clockwise radians into degrees), or multiply the angles by 180/pi."
        )
    known = np.array([f[1] is not None and f[2] is not None for f in files])
    if known.any():
        boxes_k = normalize_rbox(boxes[known]).reshape(-1, 5)
        height = np.array([f[1] for f, k in zip(files, known, strict=True) if k], dtype=float)
        width = np.array([f[2] for f, k in zip(files, known, strict=True) if k], dtype=float)
        corners = rbox_to_polygon(boxes_k)  # (M, 4, 2)
        limit = np.stack([width, height], axis=1)[:, None, :]
        tol = 1.0
        partly = np.zeros(len(boxes), dtype=bool)
        partly[known] = ((corners < -tol) | (corners > limit + tol)).any(axis=(1, 2))
        lo, hi, _ = _centre_line_inside(boxes_k, height, width)
        wholly = np.zeros(len(boxes), dtype=bool)
        wholly[known] = hi - lo <= 0
        partly &= ~wholly
        if partly.any():
            messages.append(
                f"{source}: {int(partly.sum())} rotated box(es) extend beyond their image "
                f"(images {examples(partly)}); in training they are shortened to the part "
                "inside, and dropped if less than INPUT.EM.ROTATED_MIN_VISIBLE of their length "
                "is inside. Check the image sizes in the annotation file."
            )
        if wholly.any():
            messages.append(
                f"{source}: {int(wholly.sum())} rotated box(es) lie outside their image "
                f"(images {examples(wholly)}) and are ignored. Check the coordinates (pixels, "
                "x to the right, y down) and the image sizes."
            )
    for m in messages:
        if m not in _WARNED:
            _WARNED.add(m)
            logger.warning(m)
    return messages


def _check_rotated_datasets(names: Sequence[str]) -> None:
    """Run :func:`check_rotated_annotations` on the registered rotated data sets in ``names``."""
    for name in names:
        meta = MetadataCatalog.get(name)
        if not meta.get("rotated", False) or name not in DatasetCatalog.list():
            continue
        check_rotated_annotations(DatasetCatalog.get(name), meta.get("json_file", name))
