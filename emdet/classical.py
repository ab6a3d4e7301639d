"""A classical particle pipeline, tuned on the training images: the baseline learned models must beat.

Threshold (Otsu, or local mean for uneven illumination) -> fill holes -> remove small objects ->
split touching particles by a distance-transform watershed -> instance masks. The seed papers
and EMPS compare their networks with exactly this kind of pipeline; emdet reports a learned
model's figures beside it, tuned on the same training images (:func:`tune`), so that a row on
real data says whether the model is worth training.

Every step is scikit-image / SciPy (``threshold_otsu``, ``threshold_local``,
``distance_transform_edt``, ``peak_local_max``, ``h_maxima``, ``watershed``); only the
parameter search is ours. Its objects are matched with pycocotools' mask IoU and the one-to-one
rule of :func:`emdet.evaluation.threshold.match_by_score`, and the figures reported for a test
set come from :func:`emdet.evaluation.instances.score_instances`, the same
scorer as for the learned models.

Examples
--------
>>> params, f1 = tune(images, annotated_labels)  # doctest: +SKIP
>>> labels, scores = segment_particles(image, params)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from emdet.evaluation.threshold import match_by_score

__all__ = ["DEFAULT_GRID", "BaselineError", "ClassicalParams", "coco_to_labels", "label_f1",
           "labels_to_annotations", "run_baseline", "segment_particles", "tune"]

POLARITIES = ("dark", "bright", "auto")
THRESHOLDS = ("otsu", "local")
SPLITS = ("none", "peaks", "hmax")


@dataclass(frozen=True)
class ClassicalParams:
    """Settings of :func:`segment_particles`.

    Attributes
    ----------
    polarity : {"dark", "bright", "auto"}
        Particles darker than the background (bright-field TEM), brighter (SEM, HAADF), or per
        image the phase that covers less of the image border (the background touches the edges).
    threshold : {"otsu", "local"}
        One Otsu threshold per image, or a local mean over ``block`` px (uneven illumination).
    blur : float
        Gaussian sigma (px) before thresholding; 0 = none.
    background : float
        Uneven illumination removed first: the image minus its Gaussian blur of this sigma
        (px; :func:`emdet.data.preprocess.subtract_background` ``"highpass"``, as the models'
        ``INPUT.EM.BACKGROUND``); 0 = none.
    block : int
        Odd window (px) of the local threshold.
    split : {"none", "peaks", "hmax"}
        Touching particles: not split; watershed from distance-transform peaks at least
        ``split_size`` px apart; or from its h-maxima of depth ``split_size`` px (scale-free).
    split_size : float
    min_area : int
        Objects of fewer pixels are dropped (after splitting too).
    """

    polarity: str = "auto"
    threshold: str = "otsu"
    blur: float = 1.0
    background: float = 0.0
    block: int = 101
    split: str = "hmax"
    split_size: float = 2.0
    min_area: int = 20

    def __post_init__(self) -> None:
        for name, allowed in (("polarity", POLARITIES), ("threshold", THRESHOLDS),
                              ("split", SPLITS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {allowed}")
        if not (self.blur >= 0 and self.split_size >= 0 and self.min_area >= 0
                and self.background >= 0):
            raise ValueError("blur, background, split_size and min_area must be >= 0")
        if self.block < 3 or self.block % 2 == 0:
            raise ValueError(f"block={self.block}: expected an odd window of at least 3 px")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "parameters") -> ClassicalParams:
        """Parameters from a dict (e.g. the saved ``params.json``); unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected {sorted(names)}")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The values :func:`tune` tries for each parameter.
DEFAULT_GRID: dict[str, Sequence[Any]] = {
    "polarity": POLARITIES,
    "threshold": THRESHOLDS,
    "blur": (0.0, 1.0, 2.0, 4.0, 6.0, 8.0),
    "background": (0.0, 50.0, 150.0),
    "block": (51, 151, 301),
    "split": SPLITS,
    "split_size": (1.0, 2.0, 4.0, 8.0, 16.0),
    "min_area": (10, 30, 80, 200, 500),
}


def _normalise(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image.mean(axis=2)
    if image.ndim != 2:
        raise ValueError(f"image of shape {image.shape}: expected (H, W) or (H, W, C)")
    lo, hi = np.percentile(image, (0.5, 99.5))
    return np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)


def _foreground(image: np.ndarray, p: ClassicalParams) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.filters import gaussian, threshold_local, threshold_otsu

    if p.background > 0:
        from emdet.data.preprocess import subtract_background

        grey = np.asarray(image, dtype=np.float32)
        grey = grey.mean(axis=2) if grey.ndim == 3 else grey
        image = subtract_background(grey, method="highpass", radius=p.background)
    img = _normalise(image)
    if p.blur > 0:
        img = gaussian(img, sigma=p.blur, preserve_range=True)
    if p.threshold == "otsu":
        bright = img > (threshold_otsu(img) if img.max() > img.min() else 1.0)
    else:
        bright = img > threshold_local(img, p.block, method="mean")
    if p.polarity == "dark":
        fg = ~bright
    elif p.polarity == "bright":
        fg = bright
    else:
        border = np.concatenate([bright[0], bright[-1], bright[:, 0], bright[:, -1]])
        fg = ~bright if border.mean() > 0.5 else bright
    return ndi.binary_fill_holes(fg)


def _split(fg: np.ndarray, p: ClassicalParams) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    objects, _ = ndi.label(fg)
    if p.split == "none" or not objects.any():
        return objects
    dist = ndi.distance_transform_edt(fg)
    if p.split == "peaks":
        peaks = peak_local_max(dist, min_distance=max(1, int(p.split_size)), labels=objects,
                               exclude_border=False)
        seeds = np.zeros(fg.shape, bool)
        seeds[tuple(peaks.T)] = True
    else:
        seeds = h_maxima(dist, p.split_size) > 0 if p.split_size > 0 else dist > 0
    markers, _ = ndi.label(seeds)
    # objects without a seed (smaller than the seed rule) stay whole
    unseeded = np.setdiff1d(np.unique(objects[fg]), np.unique(objects[seeds]))
    labels = watershed(-dist, markers, mask=fg)
    if unseeded.size:
        extra = np.isin(objects, unseeded)
        labels[extra] = objects[extra] + markers.max()
    return labels


def _drop_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    area = np.bincount(labels.ravel())
    small = area < max(min_area, 1)
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return relabel_sequential(out)[0]


def segment_particles(
    image: np.ndarray, params: ClassicalParams | None = None, *, foreground: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of the particles in one image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Any dtype; normalised by its 0.5/99.5 percentiles (colour averaged to grey).
    params : ClassicalParams, optional
    foreground : ndarray of bool, shape (H, W), optional
        A foreground already computed for these params (the parameter search reuses it).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, 1..N one particle each.
    scores : ndarray of float, shape (N,)
        Solidity (area / convex-hull area) of each particle, the confidence its AP is ranked
        by: round particles score high, merged clumps and debris low.
    """
    from skimage.measure import regionprops

    p = params or ClassicalParams()
    fg = _foreground(image, p) if foreground is None else foreground
    labels = _drop_small(_split(fg, p), p.min_area).astype(np.int32)
    scores = np.array([r.solidity for r in regionprops(labels)], float)
    return labels, scores


def _label_rles(labels: np.ndarray) -> list[dict[str, Any]]:
    n = len(np.unique(labels[labels > 0]))
    return [a["segmentation"] for a in labels_to_annotations(labels, np.ones(n))]


def _match(pred: np.ndarray, scores: np.ndarray, truth_rles: Sequence[dict], min_iou: float
           ) -> tuple[int, int, int]:
    from pycocotools import mask as mask_util

    dt = [a["segmentation"] for a in labels_to_annotations(pred, scores)]
    if not dt or not truth_rles:
        return 0, len(dt), len(truth_rles)
    iou = np.asarray(mask_util.iou(dt, list(truth_rles), [0] * len(truth_rles)), float)
    iou = iou.reshape(len(dt), len(truth_rles))
    tp = int(match_by_score(iou, np.asarray(scores, float), min_iou).sum())
    return tp, len(dt), len(truth_rles)


def label_f1(
    pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, min_iou: float = 0.5
) -> tuple[int, int, int]:
    """Matched objects between two label images: ``(true positives, found, annotated)``.

    One-to-one at mask IoU >= ``min_iou`` (pycocotools), highest score first, as
    :func:`emdet.evaluation.threshold.match_by_score` and the scorer of the learned models.
    """
    return _match(pred, scores, _label_rles(truth), min_iou)


def _score(fgs: Sequence[np.ndarray], truth_rles: Sequence[Sequence[dict]], p: ClassicalParams
           ) -> dict[str, float]:
    tp = found = annotated = 0
    for fg, rles in zip(fgs, truth_rles, strict=True):
        labels, scores = segment_particles(None, p, foreground=fg)
        a, b, c = _match(labels, scores, rles, 0.5)
        tp, found, annotated = tp + a, found + b, annotated + c
    return {"precision": tp / found if found else 0.0,
            "recall": tp / annotated if annotated else 0.0,
            "f1": 2 * tp / (found + annotated) if found + annotated else 0.0}


def tune(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    start: ClassicalParams | None = None,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> tuple[ClassicalParams, float, list[dict[str, Any]]]:
    """Tune :class:`ClassicalParams` for the best pooled matched-object F1 on training images.

    Coordinate search: from ``start``, try every value of one parameter with the others held,
    keep the best, go on to the next parameter, and repeat the cycle until a whole round
    changes nothing (at most ``rounds`` rounds). With the default grid that is about 30
    settings a round instead of the 10 800 of the full grid, which on 12 EMPS images and a
    loaded 2-core CPU is 1-2 minutes instead of hours; ties keep the current value, so the
    result is deterministic.

    Parameters
    ----------
    images : sequence of ndarray (H, W) or (H, W, C)
        The training images.
    truths : sequence of ndarray of int, (H, W)
        Their annotated instance labels (0 background).
    grid : mapping, optional
        Values to try per parameter (default :data:`DEFAULT_GRID`; a missing key keeps its
        ``start`` value).
    start : ClassicalParams, optional
    rounds : int
    progress : callable, optional
        Called with one line after every parameter.

    Returns
    -------
    best : ClassicalParams
    f1 : float
        Its pooled F1 at mask IoU 0.5 on the training images.
    tried : list of dict
        Every setting tried, with its precision, recall and F1, best first.
    """
    if len(images) != len(truths) or not images:
        raise ValueError(f"{len(images)} images but {len(truths)} label images: expected the "
                         "same number, at least one")
    grid = dict(DEFAULT_GRID if grid is None else grid)
    unknown = sorted(set(grid) - {f.name for f in fields(ClassicalParams)})
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}")
    fg_keys = ("polarity", "threshold", "blur", "background", "block")
    truth_rles = [_label_rles(t) for t in truths]  # encoded once, matched by every setting
    foregrounds: dict[tuple, list[np.ndarray]] = {}
    scored: dict[ClassicalParams, dict[str, float]] = {}

    def score(p: ClassicalParams) -> float:
        if p not in scored:
            key = tuple(getattr(p, k) for k in fg_keys)
            if key not in foregrounds:
                foregrounds.clear()  # one foreground set in memory: they are cheap to redo
                foregrounds[key] = [_foreground(im, p) for im in images]
            scored[p] = _score(foregrounds[key], truth_rles, p)
        return scored[p]["f1"]

    best = start or ClassicalParams()
    best_f1 = score(best)
    for _ in range(max(1, rounds)):
        changed = False
        for name, values in grid.items():
            if name == "block" and best.threshold != "local":
                continue
            if name == "split_size" and best.split == "none":
                continue
            for value in values:
                candidate = replace(best, **{name: value})
                f1 = score(candidate)
                if f1 > best_f1:
                    best, best_f1, changed = candidate, f1, True
            if progress:
                progress(f"{name} = {getattr(best, name)!r}: F1 {best_f1:.3f}")
        if not changed:
            break
    tried = [p.to_dict() | row for p, row in scored.items()]
    tried.sort(key=lambda row: -row["f1"])
    return best, best_f1, tried


# --------------------------------------------------------------------------------------------
# COCO in and out, and the whole run (tools/classical_baseline.py)
# --------------------------------------------------------------------------------------------
class BaselineError(ValueError):
    """Bad input to the baseline run; the message names the file and what to do."""


def coco_to_labels(anns: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """Instance labels (1..N in annotation order, later ones on top) of COCO annotations.

    Returns
    -------
    ndarray of int32, shape (height, width)
    """
    from emdet.data.rle import segmentation_to_crop

    labels = np.zeros((height, width), np.int32)
    for i, ann in enumerate(a for a in anns if not a.get("iscrowd", 0)):
        crop = segmentation_to_crop(ann["segmentation"], height, width)
        x0, y0, x1, y1 = crop.extent
        labels[y0:y1, x0:x1][crop.mask] = i + 1
    return labels


def labels_to_annotations(labels: np.ndarray, scores: np.ndarray, category_id: int = 1
                          ) -> list[dict[str, Any]]:
    """COCO annotations (compressed RLE, ``score``) of an instance label image, in label order."""
    from skimage.measure import regionprops

    from emdet.data.rle import MaskCrop, crop_to_rle

    h, w = labels.shape
    out = []
    for region, score in zip(regionprops(labels), scores, strict=True):
        r0, c0, r1, c1 = region.bbox
        crop = MaskCrop(int(r0), int(c0), np.ascontiguousarray(region.image))
        out.append({"category_id": int(category_id), "score": round(float(score), 5),
                    "iscrowd": 0, "bbox": [int(c0), int(r0), int(c1 - c0), int(r1 - r0)],
                    "area": int(region.area), "segmentation": crop_to_rle(crop, h, w)})
    return out


def _read_grey(path) -> np.ndarray:
    import warnings

    from emdet.data.io import ColourConversionWarning, read_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ColourConversionWarning)
        image, _ = read_image(path, page=0)
    return image


def _dataset(path, images_dir) -> tuple[dict[str, Any], Any]:
    from pathlib import Path

    from emdet.data.cocofile import read_coco

    path = Path(path)
    coco = read_coco(path)
    root = Path(images_dir) if images_dir is not None else path.parent.parent / "images"
    if not root.is_dir():
        raise BaselineError(f"{path}: its images folder {root} does not exist; pass --images "
                            "(COCO file_name is relative to it).")
    one_class = {c["id"] for c in coco["categories"]}
    if len(one_class) != 1:
        raise BaselineError(f"{path}: {len(one_class)} categories; the classical baseline "
                            "finds one kind of particle. Keep one category (or convert with "
                            "--mask-class-name).")
    return coco, root


def run_baseline(
    train: str | os.PathLike,
    apply: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    params: ClassicalParams | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tune on ``train``, segment every image of ``apply``, score it when it is annotated.

    Writes (all-or-nothing, :func:`emdet.utils.atomic.atomic_write_many`) ``params.json`` (the
    tuned parameters, their training F1 and every setting tried), ``predictions.json`` (a COCO
    set with scores, the schema of ``tools/predict.py``) and ``figures.json``
    (:func:`emdet.evaluation.instances.score_instances` against ``apply``'s annotations).
    ``params`` skips the tuning (``train`` may then be None).

    Returns
    -------
    dict
        ``params``, ``train_f1``, ``figures`` (None without annotations), ``outputs``.
    """
    import json
    import time
    from pathlib import Path

    from emdet.data.converters._common import refuse_existing
    from emdet.evaluation.instances import score_instances
    from emdet.utils.atomic import atomic_write_many

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise BaselineError(f"{out}: --output must be a folder, and this is a file.")
    targets = [out / n for n in ("params.json", "predictions.json", "figures.json")]
    refuse_existing(targets, overwrite)
    say = print if progress else (lambda *a, **k: None)
    train_f1, tried = None, []
    t0 = time.perf_counter()
    if params is None:
        if train is None:
            raise BaselineError("give training annotations (--train) or tuned --params")
        coco, root = _dataset(train, images_dir)
        anns: dict[Any, list] = {}
        for a in coco["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        images, truths = [], []
        for im in coco["images"]:
            images.append(_read_grey(root / im["file_name"]))
            truths.append(coco_to_labels(anns.get(im["id"], []), int(im["height"]),
                                         int(im["width"])))
        say(f"Tuning on {len(images)} training images ({train}) ...", flush=True)
        params, train_f1, tried = tune(images, truths, progress=lambda line: say("  " + line,
                                                                                flush=True))
        say(f"Tuned in {time.perf_counter() - t0:.0f} s: {params} (training F1 {train_f1:.3f})")
    coco, root = _dataset(apply, images_dir)
    category = coco["categories"][0]["id"]
    pred_images, pred_anns = [], []
    for k, im in enumerate(coco["images"]):
        labels, scores = segment_particles(_read_grey(root / im["file_name"]), params)
        for a in labels_to_annotations(labels, scores, category):
            pred_anns.append(a | {"id": len(pred_anns) + 1, "image_id": k + 1})
        pred_images.append({kk: im[kk] for kk in ("file_name", "height", "width", "pixel_size",
                                                   "unit") if kk in im} | {"id": k + 1})
        if progress and (k + 1) % 10 == 0:
            say(f"  segmented {k + 1}/{len(coco['images'])} images", flush=True)
    predictions = {"info": {"description": "emdet classical baseline", "params":
                            params.to_dict(), "image_root": str(root)},
                   "licenses": [], "categories": list(coco["categories"]),
                   "images": pred_images, "annotations": pred_anns}
    figures = score_instances(coco, predictions) if coco["annotations"] else None
    files = [(targets[0], json.dumps({"params": params.to_dict(), "train_f1": train_f1,
                                      "train": str(train) if train else None,
                                      "tried": tried}, indent=1) + "\n"),
             (targets[1], json.dumps(predictions) + "\n")]
    if figures is not None:
        files.append((targets[2], json.dumps(figures, indent=1) + "\n"))
    atomic_write_many(files)
    return {"params": params, "train_f1": train_f1, "figures": figures,
            "outputs": [p for p, _ in files]}
