"""A classical point detector, tuned on the training images: the baseline for the heatmap U-Net.

Microscopists find atomic columns in HAADF-STEM images (and similar blob-like points) with a
band-pass filter and a peak finder: normalise the image by its 0.5/99.5 percentiles to 0..1
(:func:`emdet.data.preprocess.normalize_intensity`), take the difference of two Gaussian blurs
(:func:`skimage.filters.difference_of_gaussians`, sigma ``sigma`` minus sigma
``ratio * sigma``: noise finer than ``sigma`` and background slower than ``ratio * sigma`` are
removed), and keep the local maxima of that response above a threshold that are at least
``min_distance`` px apart (:func:`skimage.feature.peak_local_max`). Each maximum is refined to
sub-pixel precision by a parabola through it and its two neighbours along each axis. For dark
points (dips: bright-field images, vacancies) the response is negated.

The normalisation clips the brightest 0.5 % of pixels, as it does for the learned models, so a
few columns much brighter than all others get flat tops; with ``sigma`` below their radius the
response of such a plateau can be a ring and the point lands up to a pixel off centre. The
tuning picks ``sigma`` for the best F1, which avoids that on typical images.

:func:`tune_points` chooses the settings for the best pooled point F1 on annotated training
images, with the one-to-one matching within a radius of :mod:`emdet.evaluation.points`, the
same matcher and metrics that score emdet's learned heatmap models; :func:`run_points_baseline`
tunes, applies the tuned settings to a second data set and scores it, so that a learned
model's figures can be reported beside the classical ones on the same images.

The detector finds **one kind of point**: every annotation of a data set is one class, whatever
its ``category_id`` (the atoms data set's three column heights are pooled, for example).

Coordinates are COCO continuous pixel coordinates: pixel (row ``i``, column ``j``) covers
``[j, j + 1] x [i, i + 1]`` and its centre is ``(j + 0.5, i + 0.5)``.

Examples
--------
>>> params, f1, tried = tune_points(images, truths, match_radius=3)  # doctest: +SKIP
>>> xy, scores = find_points(image, params)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_GRID", "OUTPUT_FILES", "DoGParams", "PointsBaselineError", "dog_response",
           "find_points", "point_figures", "read_params_json", "read_point_dataset",
           "run_points_baseline", "tune_points"]

POLARITIES = ("bright", "dark")
#: Files :func:`run_points_baseline` writes into its output folder.
OUTPUT_FILES = ("params.json", "points.csv", "figures.json")


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclass(frozen=True)
class DoGParams:
    """Settings of :func:`find_points`.

    Attributes
    ----------
    sigma : float
        Smaller Gaussian sigma in px (> 0): about the radius of a point; noise finer than this
        is smoothed away.
    ratio : float
        The larger sigma is ``ratio * sigma`` (> 1); background varying more slowly than that
        is removed. :attr:`sigma_high` gives it in px.
    threshold : float
        Smallest difference-of-Gaussians response kept (>= 0), on the image normalised to
        0..1 by its 0.5 and 99.5 percentiles: a fraction of the image's robust range.
    min_distance : int
        Smallest distance in px (>= 1) between two points; of two closer maxima the stronger
        is kept.
    polarity : {"bright", "dark"}
        Points brighter than their surroundings (HAADF-STEM atomic columns) or darker (dips).
    subpixel : bool
        Refine each maximum by a parabola through its neighbours (otherwise pixel centres).
    """

    sigma: float = 2.0
    ratio: float = 1.6
    threshold: float = 0.05
    min_distance: int = 3
    polarity: str = "bright"
    subpixel: bool = True

    def __post_init__(self) -> None:
        for name in ("sigma", "ratio", "threshold"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r}: expected a finite number")
            object.__setattr__(self, name, float(value))
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma}: expected a Gaussian sigma > 0 px")
        if not self.ratio > 1:
            raise ValueError(f"ratio={self.ratio}: expected > 1 (the second sigma is "
                             "ratio * sigma, larger than the first)")
        if not self.threshold >= 0:
            raise ValueError(f"threshold={self.threshold}: expected >= 0 (a fraction of the "
                             "normalised image's 0..1 range)")
        md = self.min_distance
        if not _is_number(md) or not math.isfinite(md) or md != int(md) or md < 1:
            raise ValueError(f"min_distance={md!r}: expected a whole number of pixels >= 1")
        object.__setattr__(self, "min_distance", int(md))
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity={self.polarity!r}: expected one of {POLARITIES}")
        if not isinstance(self.subpixel, bool):
            raise ValueError(f"subpixel={self.subpixel!r}: expected true or false")

    @property
    def sigma_high(self) -> float:
        """The larger Gaussian sigma, ``ratio * sigma`` px."""
        return self.ratio * self.sigma

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "parameters") -> DoGParams:
        """Parameters from a dict (e.g. the saved ``params.json``); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected an object of parameters, got "
                             f"{type(data).__name__}")
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


#: The values :func:`tune_points` tries for each parameter (``subpixel`` is not tuned: it
#: moves points by less than half a pixel).
DEFAULT_GRID: dict[str, Sequence[Any]] = {
    "polarity": POLARITIES,
    "sigma": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
    "threshold": (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3),
    "min_distance": (1, 2, 3, 4, 6, 8, 12),
    "ratio": (1.6, 2.0, 3.0, 5.0),
}


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------
def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image.astype(np.float32).mean(axis=2)
    if image.ndim != 2:
        raise ValueError(f"image of shape {image.shape}: expected (H, W) or (H, W, C)")
    return image


def dog_response(image: np.ndarray, params: DoGParams | None = None) -> np.ndarray:
    """The difference-of-Gaussians response :func:`find_points` looks for maxima in.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Any dtype; normalised to 0..1 by its 0.5/99.5 percentiles (colour averaged to grey).
    params : DoGParams, optional

    Returns
    -------
    ndarray of float32, shape (H, W)
        ``G(sigma) - G(ratio * sigma)`` of the normalised image, negated for ``"dark"``.
    """
    from skimage.filters import difference_of_gaussians

    from emdet.data.preprocess import normalize_intensity

    p = params or DoGParams()
    img = normalize_intensity(_grey(image), clip_percentiles=(0.5, 99.5)).astype(np.float32)
    response = difference_of_gaussians(img, p.sigma, p.sigma_high, mode="reflect")
    response = np.asarray(response, np.float32)
    return -response if p.polarity == "dark" else response


def _parabola_offset(f_minus: np.ndarray, f0: np.ndarray, f_plus: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through (-1, f_minus), (0, f0), (1, f_plus), within +-0.5 px."""
    curvature = f_minus - 2 * f0 + f_plus
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (f_minus - f_plus) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def _candidates(response: np.ndarray, min_distance: int, floor: float, subpixel: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    """Maxima of ``response`` above ``floor``, strongest first: ``(xy (N, 2), scores (N,))``.

    Of two maxima closer than ``min_distance`` the weaker is dropped, and the fate of each
    depends only on stronger ones, so the points above a higher threshold are exactly these
    filtered by :func:`_select` (the tuning finds them once per response and spacing).
    """
    from skimage.feature import peak_local_max

    response = np.asarray(response, np.float32)
    rc = peak_local_max(response, min_distance=int(min_distance), threshold_abs=np.float32(floor),
                        exclude_border=False).reshape(-1, 2)
    scores = response[rc[:, 0], rc[:, 1]]
    xy = rc[:, ::-1].astype(np.float64) + 0.5
    if subpixel and len(rc):
        padded = np.pad(response.astype(np.float64), 1, mode="edge")
        r, c = rc[:, 0] + 1, rc[:, 1] + 1
        f0 = padded[r, c]
        xy[:, 0] += _parabola_offset(padded[r, c - 1], f0, padded[r, c + 1])
        xy[:, 1] += _parabola_offset(padded[r - 1, c], f0, padded[r + 1, c])
    return xy, scores


def _select(candidates: tuple[np.ndarray, np.ndarray], threshold: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """The candidates with a response above ``threshold`` (compared as peak_local_max does)."""
    xy, scores = candidates
    keep = scores > np.float32(threshold)
    return xy[keep], scores[keep].astype(np.float64)


def find_points(image: np.ndarray, params: DoGParams | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Points (atomic columns, blobs) in one image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        Any dtype (16-bit counts as read by :func:`emdet.data.io.read_image`); normalised to
        0..1 by its 0.5/99.5 percentiles, colour averaged to grey.
    params : DoGParams, optional
        Default :class:`DoGParams()`.

    Returns
    -------
    xy : ndarray of float64, shape (N, 2)
        ``(x, y)`` in COCO continuous pixel coordinates (pixel centres at ``+0.5``), strongest
        first.
    scores : ndarray of float64, shape (N,)
        The difference-of-Gaussians response at each point (above ``params.threshold``).
    """
    p = params or DoGParams()
    return _select(_candidates(dog_response(image, p), p.min_distance, p.threshold, p.subpixel),
                   p.threshold)


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------
def _pooled(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], radius: float
            ) -> dict[str, float]:
    from emdet.evaluation.points import point_metrics

    row = point_metrics(list(preds), list(truths), radius=radius, zero_division=0.0
                        ).loc["pooled"]
    return {k: float(row[k]) for k in ("precision", "recall", "f1")} | {
        k: int(row[k]) for k in ("n_pred", "n_gt", "tp")}


def tune_points(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    match_radius: float = 3.0,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    start: DoGParams | None = None,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> tuple[DoGParams, float, list[dict[str, Any]]]:
    """Tune :class:`DoGParams` for the best pooled point F1 on annotated training images.

    Coordinate search, as :func:`emdet.classical.tune`, except that the threshold is chosen
    anew for every value of every other parameter (the response's strength, and so the right
    threshold, changes with sigma, ratio and polarity): from ``start``, sweep the thresholds;
    then for each other parameter try every value, each with every threshold, and keep the
    best pair; repeat the cycle until a whole round changes nothing (at most ``rounds``
    rounds). With the default grid that is about 220 settings a round instead of the 4 480 of
    the full grid, and cheap ones: the peaks of one response and spacing are found once and
    only filtered by each threshold. Ties keep the current setting, so the result is
    deterministic. Points are matched one-to-one within ``match_radius`` px and the F1 is of
    the counts summed over all images (:func:`emdet.evaluation.points.point_metrics`).

    Parameters
    ----------
    images : sequence of ndarray, (H, W) or (H, W, C)
        The training images.
    truths : sequence of ndarray, (M, 2)
        Their annotated ``(x, y)`` points (COCO continuous coordinates; may be empty).
    match_radius : float
        Largest distance in px at which a found point matches an annotated one.
    grid : mapping, optional
        Values to try per parameter (default :data:`DEFAULT_GRID`; a missing key keeps its
        ``start`` value), tried in the mapping's order.
    start : DoGParams, optional
    rounds : int
    progress : callable, optional
        Called with one line after every parameter.

    Returns
    -------
    best : DoGParams
    f1 : float
        Its pooled F1 on the training images.
    tried : list of dict
        Every setting tried, with its precision, recall, F1 and counts, best first.
    """
    if len(images) != len(truths) or not len(images):
        raise ValueError(f"{len(images)} images but {len(truths)} point sets: expected the "
                         "same number, at least one")
    if not (_is_number(match_radius) and match_radius >= 0):
        raise ValueError(f"match_radius={match_radius!r}: expected a distance >= 0 px")
    grid = dict(DEFAULT_GRID if grid is None else grid)
    names = [f.name for f in fields(DoGParams)]
    unknown = sorted(set(grid) - set(names))
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; expected some of {names}")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not len(values):
            raise ValueError(f"grid[{name!r}] = {values!r}: expected a non-empty list of values")
        for value in values:
            try:
                DoGParams(**{name: value})
            except ValueError as e:
                raise ValueError(f"grid[{name!r}]: {e}") from None
    best = start or DoGParams()
    thresholds = [float(t) for t in grid.pop("threshold", [best.threshold])]
    floor = min(thresholds + [best.threshold])
    truths = [np.asarray(t, np.float64).reshape(-1, 2) for t in truths]
    responses: dict[tuple, list[np.ndarray]] = {}
    peaks: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
    scored: dict[DoGParams, dict[str, float]] = {}

    def score(p: DoGParams) -> float:
        if p not in scored:
            key = (p.sigma, p.ratio, p.polarity, p.min_distance, p.subpixel)
            if key not in peaks:
                if key[:2] not in responses:  # "dark" is the negated "bright" response
                    responses.clear()  # one set in memory: they are cheap to redo
                    responses[key[:2]] = [dog_response(im, replace(p, polarity="bright"))
                                          for im in images]
                sign = -1 if p.polarity == "dark" else 1
                peaks[key] = [_candidates(sign * r, p.min_distance, floor, p.subpixel)
                              for r in responses[key[:2]]]
            preds = [_select(c, p.threshold)[0] for c in peaks[key]]
            scored[p] = _pooled(preds, truths, match_radius)
        return scored[p]["f1"]

    best_f1 = score(best)
    for _ in range(max(1, rounds)):
        changed = False
        for name, values in [("threshold", [best.threshold]), *grid.items()]:
            for value in values:
                for t in thresholds:
                    candidate = replace(best, **{name: value, "threshold": t})
                    f1 = score(candidate)
                    if f1 > best_f1:
                        best, best_f1, changed = candidate, f1, True
            if progress:
                extra = "" if name == "threshold" else f" (threshold {best.threshold:g})"
                progress(f"{name} = {getattr(best, name)!r}{extra}: F1 {best_f1:.3f}")
        if not changed:
            break
    tried = [p.to_dict() | row for p, row in scored.items()]
    tried.sort(key=lambda row: -row["f1"])
    return best, best_f1, tried


# --------------------------------------------------------------------------------------------
# COCO in, files out (tools/classical_points.py)
# --------------------------------------------------------------------------------------------
class PointsBaselineError(ValueError):
    """Bad input to the point baseline; the message names the file, the field and what to do."""


def _read_grey(path: Path) -> np.ndarray:
    import warnings

    from emdet.data.io import ColourConversionWarning, read_image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ColourConversionWarning)
        image, _ = read_image(path, page=0)
    return image


def read_point_dataset(
    coco_json: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    need_points: bool = True,
) -> tuple[list[str], list[np.ndarray], list[np.ndarray] | None]:
    """Images and annotated points of a COCO data set whose annotations carry ``point``.

    The file is read strictly (:func:`emdet.data.cocofile.read_coco`) and its images with
    :func:`emdet.data.io.read_image` (any EM format, first frame of a stack). Every annotation
    counts as one class; crowd annotations (``iscrowd: 1``) are skipped.

    Parameters
    ----------
    coco_json : path
    images_dir : path, optional
        Folder that ``file_name`` is relative to (default ``../images`` of the json).
    need_points : bool, keyword-only
        Refuse a file without annotations (training data); otherwise such a file gives
        ``truths=None``.

    Returns
    -------
    names : list of str
        ``file_name`` of each image.
    images : list of ndarray, (H, W)
    truths : list of ndarray of float64, (M, 2), or None
        ``(x, y)`` points per image, None when the file has no annotations.

    Raises
    ------
    FileNotFoundError, emdet.data.cocofile.CocoFormatError, PointsBaselineError
    """
    from emdet.data.cocofile import read_coco
    from emdet.data.io import ImageReadError

    path = Path(coco_json)
    coco = read_coco(path)
    root = Path(images_dir) if images_dir is not None else path.parent.parent / "images"
    if not root.is_dir():
        raise PointsBaselineError(f"{path}: its images folder {root} does not exist; pass "
                                  "--images (COCO file_name is relative to it).")
    if not coco["images"]:
        raise PointsBaselineError(f"{path}: 'images' is empty; nothing to detect points in.")
    anns = [a for a in coco.get("annotations") or [] if not a.get("iscrowd", 0)]
    if need_points and not anns:
        raise PointsBaselineError(f"{path}: no annotations; the point baseline is tuned on "
                                  "annotated points (each annotation with 'point': [x, y]).")
    index = {im["id"]: k for k, im in enumerate(coco["images"])}
    points: list[list[list[float]]] = [[] for _ in coco["images"]]
    for i, a in enumerate(coco.get("annotations") or []):
        if a.get("iscrowd", 0):
            continue
        if "point" not in a:
            raise PointsBaselineError(
                f"{path}: annotations[{i}] (id {a.get('id')!r}) has no 'point' [x, y]; the "
                "point baseline needs point annotations (as written by tools/make_synthetic.py "
                "for atoms and merons, or converted from labelme point shapes).")
        points[index[a["image_id"]]].append([float(v) for v in a["point"][:2]])
    names, images = [], []
    for k, im in enumerate(coco["images"]):
        where = f"{path}: images[{k}] (id {im['id']!r})"
        name = im.get("file_name")
        if not name:
            raise PointsBaselineError(f"{where} has no 'file_name'; name the image file "
                                      f"(relative to {root}).")
        try:
            image = _read_grey(root / name)
        except (FileNotFoundError, ImageReadError, IndexError) as e:
            raise PointsBaselineError(f"{where}: 'file_name' {name!r}: {e}") from None
        if image.shape[:2] != (int(im["height"]), int(im["width"])):
            raise PointsBaselineError(
                f"{where}: 'height' x 'width' = {im['height']} x {im['width']}, but "
                f"{root / name} is {image.shape[0]} x {image.shape[1]} px; is it the right "
                "image?")
        names.append(name)
        images.append(image)
    truths = [np.asarray(p, np.float64).reshape(-1, 2) for p in points] if anns else None
    return names, images, truths


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


def point_figures(
    preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], match_radius: float,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The figures of ``figures.json``: pooled and per-image point metrics and count errors.

    Everything comes from :func:`emdet.evaluation.points.point_metrics` (one-to-one matching
    within ``match_radius`` px). ``precision``, ``recall``, ``f1`` are pooled (from the summed
    counts), ``mean_per_image`` averages them over the images where they are defined;
    ``count_error`` is the mean over annotated images of ``|found - annotated| / annotated``
    and ``count_error_total`` the same for the summed counts (as
    :func:`emdet.evaluation.instances.score_instances`). Undefined ratios are None.
    """
    from emdet.evaluation.points import POINT_METRICS, point_metrics

    table = point_metrics(list(preds), list(truths), radius=match_radius, names=names)
    per_image = table.drop(index="pooled")
    pooled = table.loc["pooled"]
    n_pred, n_gt = per_image["n_pred"].to_numpy(), per_image["n_gt"].to_numpy()
    annotated = n_gt > 0
    count_errors = np.abs(n_pred - n_gt)[annotated] / n_gt[annotated]
    counts = ("n_pred", "n_gt", "tp", "fp", "fn")
    rows = []
    for name, row in per_image.iterrows():
        r = {k: int(v) if k in counts else _finite_or_none(v) for k, v in row.items()}
        r["count_error"] = (abs(r["n_pred"] - r["n_gt"]) / r["n_gt"]) if r["n_gt"] else None
        rows.append({"image": name} | r)
    figures = {
        "match_radius": float(match_radius),
        "n_images": len(rows),
        "n_found": int(pooled["n_pred"]),
        "n_annotated": int(pooled["n_gt"]),
        **{k: int(pooled[k]) for k in ("tp", "fp", "fn")},
        **{k: _finite_or_none(pooled[k]) for k in (*POINT_METRICS, "mean_distance")},
        "mean_per_image": {k: _finite_or_none(per_image[k].mean())
                           for k in ("precision", "recall", "f1")},
        "count_error": float(count_errors.mean()) if annotated.any() else None,
        "count_error_total": (abs(int(pooled["n_pred"]) - int(pooled["n_gt"]))
                              / int(pooled["n_gt"])) if int(pooled["n_gt"]) else None,
        "per_image": rows,
    }
    return figures


def _points_csv(names: Sequence[str], preds: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "x", "y", "score"])
    for name, (xy, scores) in zip(names, preds, strict=True):
        for (x, y), s in zip(xy, scores, strict=True):
            writer.writerow([name, f"{x:.3f}", f"{y:.3f}", f"{s:.6g}"])
    return buf.getvalue()


def read_params_json(path: str | os.PathLike) -> DoGParams:
    """The tuned :class:`DoGParams` from a ``params.json`` written by :func:`run_points_baseline`.

    Raises
    ------
    PointsBaselineError
        The file is missing, not strict JSON, or has no valid ``params`` object.
    """
    from emdet.utils import strictjson

    path = Path(path)
    try:
        data = strictjson.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PointsBaselineError(f"{path}: no such params.json; give the params.json that "
                                  "tools/classical_points.py wrote") from None
    except (OSError, ValueError) as e:
        raise PointsBaselineError(f"{path}: not a readable params.json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise PointsBaselineError(f"{path}: no 'params' object; give the params.json that "
                                  "tools/classical_points.py wrote")
    try:
        return DoGParams.from_dict(data["params"], f"{path}: 'params'")
    except ValueError as e:
        raise PointsBaselineError(str(e)) from None


def run_points_baseline(
    train: str | os.PathLike | DoGParams | None,
    apply: str | os.PathLike,
    output_dir: str | os.PathLike,
    match_radius: float = 3.0,
    *,
    images_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    grid: Mapping[str, Sequence[Any]] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Tune on ``train``, find the points of every image of ``apply``, score them if annotated.

    Writes, all-or-nothing (:func:`emdet.utils.atomic.atomic_write_many`), into
    ``output_dir``:

    * ``params.json``: the parameters (``params``), their training F1, the match radius and
      every setting tried;
    * ``points.csv``: ``image, x, y, score`` (``image`` is the COCO ``file_name``; x, y in COCO
      continuous pixel coordinates; score the difference-of-Gaussians response);
    * ``figures.json`` (when ``apply`` is annotated): :func:`point_figures`.

    Parameters
    ----------
    train : path to a COCO json, or DoGParams
        Annotated training images to tune on, or already tuned parameters (no tuning).
    apply : path to a COCO json
        Images to detect points in; scored when it has annotations.
    output_dir : path
        Output folder (created). Existing output files are an error unless ``overwrite``.
    match_radius : float
        Largest match distance in px for tuning and scoring.
    images_dir : path, optional, keyword-only
        Folder ``file_name`` is relative to (default ``../images`` of each json).
    overwrite : bool, keyword-only
    grid : mapping, optional, keyword-only
        Passed to :func:`tune_points`.
    progress : bool, keyword-only
        Print the tuning progress.

    Returns
    -------
    dict
        ``params`` (DoGParams), ``train_f1`` (None without tuning), ``figures`` (None
        without annotations), ``points`` (per image ``(xy, scores)``), ``names``, ``outputs``.

    Raises
    ------
    PointsBaselineError, emdet.data.cocofile.CocoFormatError, FileNotFoundError
    """
    import json
    import time

    from emdet.utils.atomic import atomic_write_many

    if not (_is_number(match_radius) and math.isfinite(match_radius) and match_radius >= 0):
        raise PointsBaselineError(f"match radius {match_radius!r}: expected a distance >= 0 px")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise PointsBaselineError(f"{out}: --output must be a folder, and this is a file.")
    targets = [out / n for n in OUTPUT_FILES]
    in_the_way = [t for t in targets if t.is_dir()]
    if in_the_way:
        raise PointsBaselineError(f"{in_the_way[0]}: is a folder, so the output file of that "
                                  "name cannot be written; move it or choose another --output.")
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise PointsBaselineError(
            f"{', '.join(map(str, existing))}: already exist{'s' if len(existing) == 1 else ''}"
            " from an earlier run. Pass --overwrite (overwrite=True) to replace, or choose "
            "another --output.")
    say = print if progress else (lambda *a, **k: None)
    train_f1, tried, train_path = None, [], None
    if isinstance(train, DoGParams):
        params = train
    elif train is None:
        raise PointsBaselineError("give training annotations (--train) or tuned --params")
    else:
        train_path = str(train)
        _, images, truths = read_point_dataset(train, images_dir, need_points=True)
        say(f"Tuning on {len(images)} training images ({train}) ...", flush=True)
        t0 = time.perf_counter()
        params, train_f1, tried = tune_points(
            images, truths, match_radius, grid,
            progress=lambda line: say("  " + line, flush=True))
        say(f"Tuned in {time.perf_counter() - t0:.0f} s: training F1 {train_f1:.3f}")
        del images
    names, images, truths = read_point_dataset(apply, images_dir, need_points=False)
    found = [find_points(im, params) for im in images]
    figures = None
    if truths is not None:
        figures = point_figures([xy for xy, _ in found], truths, match_radius, names)
        figures = {"apply": str(apply)} | figures
    files = [(targets[0], json.dumps({"params": params.to_dict(), "train_f1": train_f1,
                                      "train": train_path, "match_radius": float(match_radius),
                                      "tried": tried}, indent=1) + "\n"),
             (targets[1], _points_csv(names, found))]
    if figures is not None:
        files.append((targets[2], json.dumps(figures, indent=1) + "\n"))
    atomic_write_many(files)
    if figures is None and targets[2].exists():  # a replaced run's figures no longer apply
        targets[2].unlink()
    return {"params": params, "train_f1": train_f1, "figures": figures, "points": found,
            "names": names, "outputs": [p for p, _ in files]}
