"""Data for the dense models: load a data set folder, preprocess, crop and augment batches.

A data set folder (see ``datasets/README.md``) gives, per image, a label mask
(``masks/<stem>.png``, segmentation) or points (COCO ``annotations/*.json`` with a ``point``
field, or labelme point shapes in ``labelme/<stem>.json``; heatmaps). All images are read
with :func:`emdet.data.io.read_image` and preprocessed once by :func:`preprocess_image`, which
inference uses too, so training and prediction see identical intensities.

Shapes: images ``(H, W)`` float32; labels ``(H, W)`` int64; points ``(N, 2)`` ``(x, y)``;
batches ``x (B, 1, S, S)``, segmentation targets ``(B, S, S)`` int64, heatmap targets
``(B, C, S, S)`` float32, pixel weights and validity ``(B, S, S)`` float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emdet.dense.heatmap import gaussian_heatmap
from emdet.dense.losses import IGNORE_INDEX, unet_weight_map
from emdet.utils import strictjson

__all__ = [
    "DenseSample",
    "DenseDataError",
    "load_dense_samples",
    "preprocess_image",
    "resolve_dataset_dir",
    "sample_batch",
]

logger = logging.getLogger(__name__)


class DenseDataError(ValueError):
    """A data set folder is missing files or has wrong ones; the message names them."""


@dataclass
class DenseSample:
    """One preprocessed image with its ground truth.

    Attributes
    ----------
    name : str
        Image file name (relative to ``images/``).
    path : pathlib.Path
        Image file.
    split : str or None
        The ``annotations/<split>.json`` it came from.
    image : numpy.ndarray
        ``(H, W)`` float32 after :func:`preprocess_image`.
    labels : numpy.ndarray or None
        ``(H, W)`` int64 class labels (segmentation).
    points : numpy.ndarray
        ``(N, 2)`` ``(x, y)`` annotated points (may be empty).
    point_classes : numpy.ndarray
        ``(N,)`` int64 class index of each point.
    pixel_weights : numpy.ndarray or None
        ``(H, W)`` float32 loss weights (:func:`emdet.dense.losses.unet_weight_map`).
    pixel_size : float or None
        nm per pixel: the COCO image's ``pixel_size`` when given (converted to nm), else the
        file's own calibration; ``None`` when neither has one.
    """

    name: str
    path: Path
    split: str | None
    image: np.ndarray
    labels: np.ndarray | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pixel_weights: np.ndarray | None = None
    pixel_size: float | None = None


def preprocess_image(image: np.ndarray, cfg) -> np.ndarray:
    """The network input for an ``(H, W)`` image: ``cfg.INPUT.PREPROCESS`` applied, float32.

    ``"flatfield"``: Sadre et al. eq. 1-3 (:func:`emdet.dense.bragg.normalize_for_bragg`);
    ``"lin"``: :func:`emdet.data.preprocess.lin_preprocess` with ``INPUT.CLIP_PERCENTILES`` and
    ``INPUT.MEDIAN_BLUR``; ``"percentile"``: :func:`emdet.data.preprocess.normalize_intensity`;
    ``"zscore"``: :func:`emdet.data.preprocess.normalize`.
    """
    from emdet.data import preprocess

    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(
            f"dense models take (H, W) greyscale images, got shape {image.shape}. Read stacks "
            "frame by frame (emdet.data.io.read_series)."
        )
    method = cfg.INPUT.PREPROCESS
    low, high = (float(v) for v in cfg.INPUT.CLIP_PERCENTILES)
    if method == "flatfield":
        from emdet.dense.bragg import normalize_for_bragg

        out = normalize_for_bragg(image)
    elif method == "lin":
        out = preprocess.lin_preprocess(image.astype(np.float32), low=low, high=high,
                                        size=int(cfg.INPUT.MEDIAN_BLUR))
    elif method == "percentile":
        out = preprocess.normalize_intensity(image, clip_percentiles=(low, high))
    elif method == "zscore":
        out = preprocess.normalize(image, method="zscore")
    else:
        raise ValueError(f"INPUT.PREPROCESS {method!r} is not one of flatfield, lin, "
                         "percentile, zscore.")
    return np.ascontiguousarray(out, dtype=np.float32)


def resolve_dataset_dir(cfg) -> Path:
    """``cfg.DATASET.DIR`` as an absolute folder.

    A relative path is looked up under the data sets root (``$EMDET_DATASETS``, default
    ``./datasets``) first, then relative to the working directory.

    Raises
    ------
    DenseDataError
        The folder does not exist; the message says how to make the synthetic one.
    """
    from emdet.data.datasets import get_datasets_root

    text = str(cfg.DATASET.DIR)
    path = Path(text).expanduser()
    if not path.is_absolute():
        under_root = get_datasets_root() / path
        path = path if not under_root.is_dir() and path.is_dir() else under_root
    path = path.absolute()
    if not path.is_dir():
        kind = next((k for k in ("graphene", "merons", "atoms", "vesicles", "nanorods")
                     if k in path.name), None)
        hint = (f" Make the synthetic one with: python tools/make_synthetic.py --kind {kind} "
                f"--num 25 --size 256 --output {path}" if kind else "")
        raise DenseDataError(
            f"DATASET.DIR: data set folder {path} does not exist (names are looked up under "
            f"$EMDET_DATASETS, default ./datasets).{hint}"
        )
    return path


def _classes(cfg, root: Path) -> tuple[str, ...]:
    if cfg.DATASET.CLASSES:
        return tuple(str(c) for c in cfg.DATASET.CLASSES)
    yml = root / "dataset.yaml"
    if yml.is_file():
        from emdet.data.datasets import read_dataset_yaml

        spec = read_dataset_yaml(yml)
        names = spec.stuff_classes if cfg.TASK == "segmentation" else spec.classes
        if names:
            return tuple(names)
    raise DenseDataError(
        f"{root}: no class names. Set DATASET.CLASSES in the config, or list them in "
        f"{yml} ({'stuff_classes' if cfg.TASK == 'segmentation' else 'classes'}: [...])."
    )


@dataclass
class _Entry:
    name: str
    split: str | None
    mask: Path | None = None
    points: list = field(default_factory=list)
    point_classes: list = field(default_factory=list)
    pixel_size: float | None = None  # nm, from the COCO image


def _inside(folder: Path, rel: str) -> bool:
    """``rel`` names a place inside ``folder`` (no absolute path, no climbing out)."""
    base = folder.resolve()
    target = (folder / rel).resolve()
    return target == base or base in target.parents


def _inside_images(root: Path, rel: str) -> bool:
    return bool(rel) and _inside(root / "images", rel)


def _entries_from_coco(root: Path, splits: Sequence[str] | None,
                       classes: Sequence[str]) -> list[_Entry]:
    ann_dir = root / "annotations"
    files = sorted(ann_dir.glob("*.json"))
    if splits is not None:
        files = [f for f in files if f.stem in splits]
    entries: dict[str, _Entry] = {}
    from emdet.data.cocofile import CocoFormatError, read_coco

    for jf in files:
        try:  # strict JSON, ids, sizes and finite points checked (emdet.data.cocofile)
            data = read_coco(jf)
        except (OSError, CocoFormatError) as e:
            raise DenseDataError(f"not a usable COCO json: {e}") from None
        cat_name = {c["id"]: c["name"] for c in data.get("categories", [])}
        by_id = {}
        for i, img in enumerate(data.get("images", [])):
            name = img.get("file_name")
            if not isinstance(name, str) or not _inside_images(root, name):
                raise DenseDataError(f"{jf}: images[{i}] 'file_name' {name!r} must be a path "
                                     f"inside {root / 'images'}")
            mask = img.get("sem_seg_file_name")
            if mask and (not isinstance(mask, str) or not _inside(root / "masks", mask)):
                raise DenseDataError(f"{jf}: images[{i}] 'sem_seg_file_name' {mask!r} must be "
                                     f"a path inside {root / 'masks'}")
            e = entries.setdefault(name, _Entry(name, jf.stem))
            if img.get("pixel_size") is not None:
                from emdet.data.io import normalise_unit

                value, unit = normalise_unit(img["pixel_size"], img.get("unit") or "nm")
                if unit == "nm" and value:
                    e.pixel_size = float(value)
            if img.get("sem_seg_file_name"):
                e.mask = root / "masks" / img["sem_seg_file_name"]
            by_id[img["id"]] = e
        for ann in data.get("annotations", []):
            if "point" not in ann:
                continue
            name = cat_name.get(ann.get("category_id"))
            if name not in classes:
                continue
            e = by_id.get(ann.get("image_id"))
            if e is None:
                raise DenseDataError(
                    f"{jf}: annotation {ann.get('id')} refers to image_id "
                    f"{ann.get('image_id')}, which is not in 'images'"
                )
            e.points.append([float(v) for v in ann["point"][:2]])
            e.point_classes.append(classes.index(name))
    return list(entries.values())


def _point(value, where: str) -> list[float]:
    """``[x, y]`` from labelme's ``[[x, y]]``, refusing anything but two finite numbers."""
    import math

    xy = value[0] if isinstance(value, list) and value and isinstance(value[0], list) else None
    ok = (xy is not None and len(xy) >= 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in xy[:2]))
    if not ok:
        raise DenseDataError(f"{where} must be [[x, y]] with two finite numbers, got {value!r}")
    return [float(xy[0]), float(xy[1])]


def _entries_from_folders(root: Path, classes: Sequence[str]) -> list[_Entry]:
    from emdet.data.io import list_images

    entries = []
    for path in list_images(root / "images"):
        e = _Entry(path.relative_to(root / "images").as_posix(), None)
        mask = root / "masks" / f"{path.stem}.png"
        if mask.is_file():
            e.mask = mask
        lm = root / "labelme" / f"{path.stem}.json"
        if lm.is_file():
            try:
                    doc = strictjson.loads(lm.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise DenseDataError(f"{lm}: not a readable labelme json ({err})") from None
            shapes = doc.get("shapes", []) if isinstance(doc, dict) else None
            if not isinstance(shapes, list):
                raise DenseDataError(f"{lm}: 'shapes' must be a list of labelme shapes")
            for k, shape in enumerate(shapes):
                if not isinstance(shape, dict):
                    raise DenseDataError(f"{lm}: shapes[{k}] is not an object")
                if shape.get("shape_type") == "point" and shape.get("label") in classes:
                    e.points.append(_point(shape.get("points"), f"{lm}: shapes[{k}] 'points'"))
                    e.point_classes.append(classes.index(shape["label"]))
        entries.append(e)
    return entries


def load_dense_samples(
    cfg, *, splits: Sequence[str] | None = None
) -> tuple[list[DenseSample], tuple[str, ...]]:
    """Read and preprocess every image of the configured data set with its ground truth.

    Parameters
    ----------
    cfg : CfgNode
        From :func:`emdet.dense.config.load_unet_config`.
    splits : sequence of str, keyword-only
        Only these ``annotations/<split>.json``; ``None`` takes every split (cross-validation).

    Returns
    -------
    samples : list of DenseSample
        In file-name order.
    classes : tuple of str
        Class names (segmentation label values, or point classes).

    Raises
    ------
    DenseDataError
        Missing folder, images or masks, masks of the wrong size or with labels beyond the
        classes; the message names the file.
    """
    import cv2

    from emdet.data.io import read_image

    root = resolve_dataset_dir(cfg)
    classes = _classes(cfg, root)
    if (root / "annotations").is_dir() and any((root / "annotations").glob("*.json")):
        entries = _entries_from_coco(root, splits, classes)
    elif (root / "images").is_dir():
        if splits is not None:
            logger.info("%s has no annotations/*.json; using all images (no splits)", root)
        entries = _entries_from_folders(root, classes)
    else:
        raise DenseDataError(f"{root}: no images/ folder (expected the layout of "
                             "datasets/README.md)")
    entries.sort(key=lambda e: e.name)
    if cfg.DATASET.MAX_IMAGES:
        entries = entries[: int(cfg.DATASET.MAX_IMAGES)]
    if not entries:
        raise DenseDataError(f"{root}: no images found"
                             + (f" in splits {list(splits)}" if splits else ""))
    samples = []
    for e in entries:
        path = root / "images" / e.name
        if not path.is_file():
            raise DenseDataError(f"{path}: image listed in the annotations does not exist")
        try:
            image, meta = read_image(path)
        except (OSError, ValueError) as err:  # ImageReadError names the file and the problem
            raise DenseDataError(str(err)) from None
        if image.ndim != 2:
            raise DenseDataError(f"{path}: has {meta.n_frames} frames; training images must be "
                                 "single (H, W) frames")
        sample = DenseSample(name=e.name, path=path, split=e.split,
                             image=preprocess_image(image, cfg),
                             pixel_size=e.pixel_size or meta.pixel_size_nm)
        if cfg.TASK == "heatmap" or cfg.EVAL.POINTS_FROM_REGIONS:
            from emdet.dense.units import point_lengths

            try:  # lengths in nm need every image calibrated: say so before training
                point_lengths(cfg, sample.pixel_size, path)
            except ValueError as err:
                raise DenseDataError(str(err)) from None
        if cfg.TASK == "segmentation":
            if e.mask is None or not e.mask.is_file():
                expected = e.mask or root / "masks" / f"{path.stem}.png"
                raise DenseDataError(
                    f"{path}: no label mask (expected {expected}); segmentation needs one uint8 "
                    "PNG of class labels per image"
                )
            labels = cv2.imread(str(e.mask), cv2.IMREAD_UNCHANGED)
            if labels is None or labels.ndim != 2:
                raise DenseDataError(f"{e.mask}: not a single-channel label PNG")
            if labels.shape != image.shape:
                raise DenseDataError(f"{e.mask}: mask is {labels.shape[1]}x{labels.shape[0]} "
                                     f"but its image {image.shape[1]}x{image.shape[0]}")
            if labels.max() >= len(classes):
                raise DenseDataError(
                    f"{e.mask}: label value {int(labels.max())} but only {len(classes)} classes "
                    f"{list(classes)}; fix DATASET.CLASSES or the mask"
                )
            sample.labels = labels.astype(np.int64)
            if cfg.LOSS.SPATIAL_WEIGHTS:
                sample.pixel_weights = unet_weight_map(
                    labels, w0=float(cfg.LOSS.W0), sigma=float(cfg.LOSS.SIGMA))
        if e.points:
            sample.points = np.asarray(e.points, dtype=np.float64).reshape(-1, 2)
            sample.point_classes = np.asarray(e.point_classes, dtype=np.int64)
        samples.append(sample)
    return samples, classes


def _pad_to(arr: np.ndarray, size: tuple[int, int], value: float | None) -> np.ndarray:
    """Pad the last two axes at the end up to ``size`` (reflect, or a constant ``value``)."""
    h, w = arr.shape[-2:]
    ph, pw = max(0, size[0] - h), max(0, size[1] - w)
    if ph == 0 and pw == 0:
        return arr
    width = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
    if value is None:
        mode = "reflect" if ph < h and pw < w else "edge"
        return np.pad(arr, width, mode=mode)
    return np.pad(arr, width, mode="constant", constant_values=value)


def sample_batch(
    samples: Sequence[DenseSample],
    rng: np.random.Generator,
    *,
    task: str,
    num_classes: int,
    batch_size: int,
    crop: int,
    multiple: int,
    rot90: bool = True,
    flip: bool = True,
    heatmap_sigma: float | Callable[[DenseSample], float] = 2.0,
) -> dict[str, np.ndarray]:
    """A random training batch: crops, quarter turns and reflections, with their targets.

    Parameters
    ----------
    samples : sequence of DenseSample
    rng : numpy.random.Generator
    task : {"segmentation", "heatmap"}, keyword-only
    num_classes : int, keyword-only
    batch_size : int, keyword-only
    crop : int, keyword-only
        Square crop side (0 = whole images, padded to the largest in the batch).
    multiple : int, keyword-only
        Batch sides are padded up to a multiple of this (the U-Net's size multiple).
    rot90, flip : bool, keyword-only
        Random quarter turns / reflections (exact on the pixel grid, targets follow).
    heatmap_sigma : float or callable, keyword-only
        Gaussian peak width of heatmap targets in pixels, or a function of the sample giving
        it (``HEATMAP.SIGMA_NM``: :func:`emdet.dense.units.point_lengths`).

    Returns
    -------
    dict
        ``"image"`` ``(B, 1, S, S)`` float32; ``"target"`` ``(B, S, S)`` int64 or
        ``(B, C, S, S)`` float32; ``"weights"`` ``(B, S, S)`` float32 (0 on padding).
    """
    picks = rng.integers(0, len(samples), size=batch_size)
    chosen = []
    for k in picks:
        s = samples[int(k)]
        h, w = s.image.shape
        if crop:
            th, tw = min(crop, h), min(crop, w)
            y0 = int(rng.integers(0, h - th + 1))
            x0 = int(rng.integers(0, w - tw + 1))
        else:
            th, tw, y0, x0 = h, w, 0, 0
        region = (slice(y0, y0 + th), slice(x0, x0 + tw))
        image = s.image[region]
        weights = (np.ones((th, tw), np.float32) if s.pixel_weights is None
                   else s.pixel_weights[region].astype(np.float32))
        if task == "segmentation":
            target = s.labels[region]
        else:
            pts = s.points - np.array([x0, y0])
            sigma = heatmap_sigma(s) if callable(heatmap_sigma) else heatmap_sigma
            target = gaussian_heatmap(pts, (th, tw), sigma=float(sigma),
                                      classes=s.point_classes, num_classes=num_classes)
        chosen.append((image, target, weights))
    side_h = crop or max(c[0].shape[0] for c in chosen)
    side_w = crop or max(c[0].shape[1] for c in chosen)
    side_h, side_w = (-(-side_h // multiple) * multiple, -(-side_w // multiple) * multiple)
    if rot90 and side_h != side_w:
        side_h = side_w = max(side_h, side_w)
    images, targets, weights = [], [], []
    for image, target, weight in chosen:
        image = _pad_to(image, (side_h, side_w), None)
        target = _pad_to(target, (side_h, side_w), IGNORE_INDEX if task == "segmentation" else 0)
        weight = _pad_to(weight, (side_h, side_w), 0.0)
        k = int(rng.integers(0, 4)) if rot90 else 0
        flips = (bool(rng.integers(0, 2)), bool(rng.integers(0, 2))) if flip else (False, False)
        arrays = [image, target, weight]
        for i, a in enumerate(arrays):
            a = np.rot90(a, k, axes=(-2, -1))
            if flips[0]:
                a = a[..., ::-1, :]
            if flips[1]:
                a = a[..., :, ::-1]
            arrays[i] = np.ascontiguousarray(a)
        images.append(arrays[0])
        targets.append(arrays[1])
        weights.append(arrays[2])
    return {
        "image": np.stack(images)[:, None].astype(np.float32),
        "target": np.stack(targets),
        "weights": np.stack(weights).astype(np.float32),
    }
