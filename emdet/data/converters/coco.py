"""Annotation folders -> COCO instances JSON, and train/val splits.

Output conventions
------------------
* ``images``: ``id`` (1.. in the order of the sorted annotation files), ``file_name`` relative to the
  image root (``images_dir`` when given, else the input folder; ``/`` separators, possibly with
  ``..`` for images elsewhere, e.g. extracted labelme images), ``width``, ``height``.
* ``categories``: ``id`` 1..N in the order of ``classes`` when given, else of the sorted class names
  (for yolo / labelimg-kitti: every name in ``classes.txt``); ``name``; ``supercategory`` ``""``.
* ``annotations``: ``id`` 1.., ``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` (pixels),
  ``area`` (of the segmentation; ``w*h`` for boxes and rotated boxes), ``segmentation`` (list of
  polygons ``[x0, y0, x1, y1, ...]``), ``iscrowd`` 0, and where they apply:
  ``rbox`` ``[cx, cy, w, h, angle]`` in detectron2's convention, canonical (``w >= h``, angle in
  degrees counter-clockwise on screen, in ``[-90, 90)``), with the 4 corners as ``segmentation``
  (rolabelimg and labelimg-kitti: on every annotation, angle 0 for plain boxes);
  ``point`` ``[x, y]`` for labelme points; ``circle`` ``[cx, cy, r]`` for labelme circles.
* ``info``: ``source_format``, ``input_dir``, ``image_root`` (give this to
  ``register_coco_instances``), and ``skipped``: ``[{file, object, reason}]``.
* ``masks`` (label images, :mod:`.masks`): ``segmentation`` is COCO RLE, ``area`` its pixel
  count, ``mask_id`` the id of an instance map; images carry ``pixel_size``/``unit`` when the
  image file is calibrated; ``info`` adds ``mask_kind``.

Bad input
---------
By default the first problem stops the conversion with an :class:`AnnotationError` naming the file,
the object, the field and what is wrong, and nothing is written: JSON is read strictly (``NaN``,
``Infinity`` and text where a number belongs are refused), XML with a ``<!DOCTYPE>`` is refused,
images are sized from their headers under the pixel limit (``EMDET_MAX_PIXELS``), and rotation
angles outside ``[-2π, 2π]`` (degrees where radians belong) are refused rather than wrapped. Objects up to ``EDGE_TOLERANCE_PX`` (1 px)
outside the image are clamped onto it; further out is an error unless ``clip_to_image=True``, which
clips boxes and polygons to the image (an ``rbox`` is kept as annotated; its segmentation is
clipped). Point boxes are always clipped. With ``skip_invalid=True`` bad objects (or whole files) are
left out and listed in ``info.skipped`` and the returned report.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ._common import (
    AnnotationError,
    ConversionError,
    ImageRecord,
    Run,
    Skipped,
    check_output_path,
    image_calibration,
    instance_to_annotation,
    json_bytes,
    logger,
    posix_relpath,
    read_classes,
    refuse_existing,
    write_outputs,
)
from .labelme import read_labelme
from .masks import mask_options, read_masks
from .txt import read_txt
from .voc import read_voc

#: Input formats and the annotation files each reads from the input folder.
FORMATS: dict[str, str] = {
    "labelme": ".json",
    "voc": ".xml",
    "rolabelimg": ".xml",
    "labelimg-kitti": ".txt",
    "yolo": ".txt",
    "masks": ".png .tif .tiff .npy",  # label images, paired with --images by name
}
_READERS: dict[str, Callable[[Path, Run], ImageRecord]] = {
    "labelme": read_labelme,
    "voc": read_voc,
    "rolabelimg": read_voc,
    "labelimg-kitti": read_txt,
    "yolo": read_txt,
}


@dataclass
class Conversion:
    """Result of :func:`to_coco`: the COCO dict plus what the run left out.

    ``extracted_images`` maps paths to image bytes decoded from labelme ``imageData``; they are
    referenced by ``coco`` but not written yet (:func:`convert_annotations` writes them).
    """

    coco: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extracted_images: dict[Path, bytes] = field(default_factory=dict)


@dataclass
class ConversionReport:
    """What :func:`convert_annotations` wrote and left out."""

    outputs: list[Path]
    extracted_images: list[Path]
    num_images: int
    num_annotations: int
    skipped: list[Skipped]
    warnings: list[str]


def to_coco(
    input_dir: str | os.PathLike,
    fmt: str,
    *,
    images_dir: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    point_box_size: float | None = None,
    skip_invalid: bool = False,
    clip_to_image: bool = False,
    extract_dir: str | os.PathLike | None = None,
    exclude: Sequence[str | os.PathLike] = (),
    progress: bool = False,
    mask_kind: str | None = None,
    mask_classes: str | Mapping[Any, str] | None = None,
    mask_class_name: str | None = None,
    split_touching: bool = False,
    split_min_distance: int | None = None,
    pixel_size: float | None = None,
    unit: str = "nm",
) -> Conversion:
    """Read every annotation file of one format in a folder into a COCO dict; write nothing.

    Parameters
    ----------
    input_dir : path
        Folder with the annotation files (not searched recursively).
    fmt : str
        One of :data:`FORMATS`.
    images_dir : path, optional
        Folder with the images; ``file_name`` is relative to it. Default: the input folder.
    classes : path or list of str, optional
        Class names (a file with one per line, or a list) fixing the category ids 1..N; a label
        not in it is an error. Default: the sorted names found.
    point_box_size : float, optional
        Side in pixels of the square box around labelme points; needed only if there are points.
    skip_invalid : bool
        Leave bad objects/files out (listed in ``info.skipped``) instead of raising.
    clip_to_image : bool
        Clip objects partly outside the image instead of raising.
    extract_dir : path, optional
        Where labelme images embedded as ``imageData`` (and missing on disk) are to be written.
        Default: ``images_dir``, else the input folder.
    exclude : paths
        Files in the input folder to ignore (e.g. an earlier output).
    progress : bool
        Show a progress bar over the files.
    mask_kind, mask_classes, mask_class_name, split_touching, split_min_distance
        For ``fmt="masks"`` (label images; ``images_dir`` is then required): ``"instances"``,
        ``"binary"`` or ``"rgb"`` (default: chosen from the masks), the classes of the colours
        (``"255,0,0=vesicle;255,255,0=vesicle+hole"``), the class of instance/binary masks
        (default ``"object"``), and the watershed split of touching binary objects; see
        :mod:`.masks`.
    pixel_size, unit : float and str, optional
        Every image gets ``pixel_size``/``unit`` in COCO from its file (TIFF tags, DM, MRC,
        SER, EMD); this value (e.g. ``0.21`` and ``"nm"``) is used instead for all images, with
        a warning for each image whose file says otherwise. Images left without a pixel size
        are counted in a warning (statistics of them come out in pixels).

    Raises
    ------
    AnnotationError
        For the first bad file or object (unless ``skip_invalid``); the message names the file.
    ConversionError
        For unusable options (unknown format, missing folder, bad classes file).
    """
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    input_dir = Path(input_dir).resolve()
    if not input_dir.is_dir():
        what = "is a file, not a folder" if input_dir.exists() else "input folder not found"
        raise ConversionError(
            f"{input_dir}: {what}. Check --input (the folder of annotation files)."
        )
    img_dir = Path(images_dir).resolve() if images_dir is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise ConversionError(f"{img_dir}: images folder not found. Check --images.")
    class_list = _class_list(classes)
    mask_opts = None
    if fmt == "masks":
        mask_opts = mask_options(
            kind=mask_kind,
            mask_classes=mask_classes,
            class_name=mask_class_name,
            classes=class_list,
            split_touching=split_touching,
            split_min_distance=split_min_distance,
        )
        if img_dir is None:
            raise ConversionError(
                f"{input_dir}: --format masks needs --images, the folder of the images the "
                "masks label (paired by file name)."
            )
        if img_dir == input_dir:
            raise ConversionError(
                f"{input_dir}: --input and --images are the same folder; keep the masks in a "
                "folder of their own (e.g. masks/ beside images/), named like their images."
            )
        class_list = mask_opts.class_names
    elif (mask_kind, mask_classes, mask_class_name, split_min_distance) != (None,) * 4 or (
        split_touching
    ):
        raise ConversionError(
            "--mask-kind, --mask-classes, --mask-class-name and --split-touching are for "
            f"--format masks, not {fmt}."
        )
    if point_box_size is not None and not (
        point_box_size > 0 and math.isfinite(point_box_size)
    ):
        raise ConversionError(
            f"--point-box-size is {point_box_size}; expected a positive number of pixels."
        )
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ConversionError(f"--pixel-size is {pixel_size}; expected a positive number "
                              f"(per pixel, in --unit {unit}).")
    run = Run(
        fmt=fmt,
        input_dir=input_dir,
        images_dir=img_dir,
        extract_dir=Path(extract_dir).resolve()
        if extract_dir is not None
        else (img_dir or input_dir),
        classes=class_list,
        point_box_size=point_box_size,
        skip_invalid=skip_invalid,
        clip_to_image=clip_to_image,
    )
    ext = FORMATS[fmt]
    skip = {Path(p).resolve() for p in exclude}
    if mask_opts is not None:
        records = read_masks(input_dir, img_dir, mask_opts, run, exclude=skip, progress=progress)
        _calibrate(records, run, pixel_size, unit)
        return _assemble(records, run, input_dir, img_dir, class_list)
    files = sorted(
        p
        for p in input_dir.iterdir()
        if p.is_file()
        and p.suffix.lower() == ext
        and p.resolve() not in skip
        and not (ext == ".txt" and p.name.lower() == "classes.txt")
    )
    if not files:
        raise ConversionError(
            f"{input_dir}: no {ext} files found for format {fmt!r}. Check --input and --format."
        )
    if ext == ".txt":
        run.txt_classes = _txt_classes(input_dir, class_list, run)

    records: list[tuple[ImageRecord, list[dict[str, Any]]]] = []
    annotated: dict[Path, Path] = {}
    for path in tqdm(files, desc=f"Converting {fmt}", unit="file", disable=not progress):
        try:
            rec = _READERS[fmt](path, run)
            if rec.image in annotated:
                raise AnnotationError(
                    path,
                    f"its image {rec.image} is already annotated by {annotated[rec.image]}.",
                    hint="Keep one annotation file per image.",
                )
        except AnnotationError as err:
            run.problem(err)
            continue
        annotated[rec.image] = path
        valid = []
        for inst in rec.instances:
            try:
                valid.append(instance_to_annotation(inst, rec, run))
            except AnnotationError as err:
                run.problem(err)
        records.append((rec, valid))
    _calibrate(records, run, pixel_size, unit)
    return _assemble(records, run, input_dir, img_dir, class_list, annotated)


def _calibrate(records: Sequence[tuple[ImageRecord, list[dict[str, Any]]]], run: Run,
               pixel_size: float | None, unit: str) -> None:
    """Give each record the pixel size of its image file, or the one given; warn where the
    two disagree and about images left uncalibrated."""
    from emdet.data.io import normalise_unit as _normalise_unit

    given = _normalise_unit(pixel_size, unit) if pixel_size is not None else (None, None)
    if pixel_size is not None and given[1] != "nm":
        raise ConversionError(f"--unit {unit!r} is not a length unit (nm, um, A, pm, ...).")
    missing = []
    for rec, _ in records:
        if rec.pixel_size is None and rec.image.is_file() and rec.image not in run.extracted:
            try:
                rec.pixel_size, rec.unit = image_calibration(rec.image, source=rec.source)
            except AnnotationError as err:
                run.problem(err)
        if given[0] is not None:
            own = _normalise_unit(rec.pixel_size, rec.unit) if rec.pixel_size else (None, None)
            if own[0] is not None and (own[1] != given[1]
                                       or abs(own[0] - given[0]) > 0.01 * given[0]):
                run.warn(f"{rec.image}: the file says {rec.pixel_size:g} {rec.unit} per pixel, "
                         f"--pixel-size says {pixel_size:g} {unit}; using {pixel_size:g} {unit}.")
            rec.pixel_size, rec.unit = given
        elif rec.pixel_size is None:
            missing.append(rec.image.name)
    if missing:
        run.warn(f"{len(missing)} of {len(records)} images have no pixel size in their file "
                 f"(e.g. {', '.join(missing[:3])}); their sizes will be in pixels. Pass "
                 "--pixel-size and --unit to calibrate them.")


def _assemble(
    records: Sequence[tuple[ImageRecord, list[dict[str, Any]]]],
    run: Run,
    input_dir: Path,
    img_dir: Path | None,
    class_list: list[str] | None,
    annotated: Mapping[Path, Path] | None = None,
) -> Conversion:
    """The COCO dict of the records read by :func:`to_coco` (ids, categories, info)."""
    fmt = run.fmt
    image_root = img_dir or input_dir
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for image_id, (rec, valid) in enumerate(records, start=1):
        entry = {
            "id": image_id,
            "file_name": posix_relpath(rec.image, image_root),
            "width": int(rec.width),
            "height": int(rec.height),
        }
        if rec.pixel_size is not None:
            entry |= {"pixel_size": float(rec.pixel_size), "unit": rec.unit}
        images.append(entry)
        for ann in valid:
            anns.append({"id": len(anns) + 1, "image_id": image_id, **ann})

    names = class_list
    if names is None:
        names = sorted({a["label"] for a in anns} | set(run.txt_classes or []))
        folded: dict[str, list[str]] = {}
        for name in names:
            folded.setdefault(name.casefold().strip(), []).append(name)
        for similar in (v for v in folded.values() if len(v) > 1):
            run.warn(
                f"class names {', '.join(map(repr, similar))} differ only in case; they "
                "become separate categories. If that is a typo, fix the labels or pass "
                "--classes."
            )
    cat_ids = {name: i for i, name in enumerate(names, start=1)}
    for ann in anns:
        ann["category_id"] = cat_ids[ann.pop("label")]
    # Stable key order (id, image_id, category_id, bbox, ...) for readable files.
    order = ("id", "image_id", "category_id", "bbox", "area", "segmentation", "iscrowd")
    anns = [{k: a[k] for k in order} | {k: v for k, v in a.items() if k not in order} for a in anns]
    used = {p for p in run.extracted if p in (annotated or {})}
    coco = {
        "info": {
            "description": f"{fmt} annotations converted to COCO by emdet",
            "source_format": fmt,
            "input_dir": str(input_dir),
            "image_root": str(image_root),
            "skipped": [s.as_dict() for s in run.skipped],
            **run.info,
        },
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in cat_ids.items()],
    }
    return Conversion(
        coco=coco,
        skipped=run.skipped,
        warnings=run.warnings,
        extracted_images={p: run.extracted[p] for p in sorted(used)},
    )


def convert_annotations(
    input_dir: str | os.PathLike,
    output: str | os.PathLike,
    fmt: str,
    *,
    images_dir: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    point_box_size: float | None = None,
    split: str | Mapping[str, float | int] | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
    clip_to_image: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    mask_kind: str | None = None,
    mask_classes: str | Mapping[Any, str] | None = None,
    mask_class_name: str | None = None,
    split_touching: bool = False,
    split_min_distance: int | None = None,
    pixel_size: float | None = None,
    unit: str = "nm",
) -> ConversionReport:
    """Convert a folder of annotations to a COCO JSON file (and optional split files).

    Writes ``output`` (all images); with ``split`` also ``<name>.json`` beside it for each split
    name, e.g. ``--output datasets/rods/annotations/all.json --split train=0.8,val=0.2`` writes
    ``all.json``, ``train.json`` and ``val.json`` there, the layout :mod:`emdet.data.datasets`
    registers (``all.json`` then also becomes a data set ``rods_all``). labelme images
    that exist only as embedded ``imageData`` are written to ``images_dir`` when given, else to
    ``<output stem>_images/`` beside ``output``; an existing different image of that name is
    never replaced (an error), an identical one is used as it is. Everything is written
    all-or-nothing (:func:`emdet.utils.atomic.atomic_write_many`) after the whole conversion
    succeeded: a failed run leaves no output file and the files already there unchanged.
    Existing output files are an error unless ``overwrite``, so hand edits are never lost. See
    :func:`to_coco` for the other parameters (the ``mask_*`` ones for label images) and
    :func:`split_coco` for ``split`` / ``seed``.
    """
    output = Path(output)
    check_output_path(output, "--output")
    if output.suffix.lower() != ".json":
        raise ConversionError(
            f"{output}: --output must be a .json file path "
            "(e.g. --output annotations/nanorods.json)."
        )
    fractions = parse_split(split) if isinstance(split, str) else split
    split_paths = {name: output.with_name(f"{name}.json") for name in (fractions or {})}
    if output.stem in split_paths:
        raise ConversionError(
            f"{output}: the split {output.stem!r} would be written to the output file itself. "
            "Name the output after the whole set instead, e.g. --output "
            f"{output.with_name('all.json')}."
        )
    refuse_existing([output, *split_paths.values()], overwrite)
    extract_dir = images_dir if images_dir is not None else output.parent / f"{output.stem}_images"
    conv = to_coco(
        input_dir,
        fmt,
        images_dir=images_dir,
        classes=classes,
        point_box_size=point_box_size,
        skip_invalid=skip_invalid,
        clip_to_image=clip_to_image,
        extract_dir=extract_dir,
        exclude=[output, *split_paths.values()],
        progress=progress,
        mask_kind=mask_kind,
        mask_classes=mask_classes,
        mask_class_name=mask_class_name,
        split_touching=split_touching,
        split_min_distance=split_min_distance,
        pixel_size=pixel_size,
        unit=unit,
    )
    files: list[tuple[Path, bytes]] = list(conv.extracted_images.items())
    files.append((output, json_bytes(conv.coco, target=output)))
    if fractions:
        for name, part in split_coco(conv.coco, fractions, seed=seed).items():
            files.append((split_paths[name], json_bytes(part, target=split_paths[name])))
    write_outputs(files)
    return ConversionReport(
        outputs=[output, *split_paths.values()],
        extracted_images=list(conv.extracted_images),
        num_images=len(conv.coco["images"]),
        num_annotations=len(conv.coco["annotations"]),
        skipped=conv.skipped,
        warnings=conv.warnings,
    )


def parse_split(text: str) -> dict[str, float | int]:
    """Parse ``--split`` text into ``{name: count or fraction}``, in the order given.

    A value written as a whole number (``12``) is a count of images; a value with a decimal point
    or exponent (``0.8``, ``1.0``) is a fraction of the images that the counts leave. So
    ``"train=0.8,val=0.2"`` is an 80/20 split, and ``"fewshot_train=12,fewshot_val=10,
    pretrain_train=0.9,pretrain_val=0.1"`` takes 12 and 10 images first and splits the rest
    90/10. Names are letters, digits, ``_`` or ``-``; counts are >= 0, fractions > 0 and the
    fractions add up to 1. Without fractions the counts must add up to the number of images
    (checked by :func:`split_coco`, which knows it).
    """
    out: dict[str, float | int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        number: float | int = math.nan
        if re.fullmatch(r"[0-9]+", value):
            number = int(value)
        else:
            try:
                number = float(value)
            except ValueError:
                pass
        ok = number >= 0 if isinstance(number, int) else number > 0 and math.isfinite(number)
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not ok:
            raise ConversionError(
                f"--split {text!r}: cannot read {part.strip()!r}; expected name=value pairs "
                "separated by commas, a value being a fraction (train=0.8,val=0.2) or a "
                "whole number of images (train=12,val=10,rest=1.0)."
            )
        if name in out:
            raise ConversionError(f"--split {text!r}: {name!r} is given twice.")
        out[name] = number
    return _check_fractions(out, text)


def _is_count(value: float | int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fractions(spec: Mapping[str, float | int], text: Any) -> dict[str, float | int]:
    fractions = [v for v in spec.values() if not _is_count(v)]
    total = sum(fractions)
    if not spec or (fractions and abs(total - 1) > 1e-6):
        raise ConversionError(
            f"--split {text!r}: the fractions add up to {total:g}; they must add "
            "up to 1 (e.g. train=0.8,val=0.2, or train=12,val=0.5,test=0.5 for 12 "
            "images and an even split of the rest)."
        )
    return dict(spec)


def split_counts(spec: Mapping[str, float | int], n: int, text: Any = None) -> dict[str, int]:
    """Number of images per part for ``n`` images: counts as given, fractions of the rest.

    Fractions share what the counts leave, rounded by largest remainder (so they add up; ties go
    to the part named first). Raises :class:`ConversionError` when the counts ask for more
    images than there are, or, with no fraction to take the rest, for fewer.
    """
    if text is None:
        text = ",".join(f"{k}={v}" for k, v in spec.items())
    spec = _check_fractions(spec, text)
    fixed = sum(v for v in spec.values() if _is_count(v))
    fractions = {k: v for k, v in spec.items() if not _is_count(v)}
    if fixed > n or (not fractions and fixed != n):
        raise ConversionError(
            f"--split {text!r}: the image counts add up to {fixed}, but there are {n} "
            "images. Change the counts, or add a part with a fraction to take the rest "
            "(e.g. unused=1.0)."
        )
    rest = n - fixed
    raw = {k: f * rest for k, f in fractions.items()}
    shares = {k: math.floor(v) for k, v in raw.items()}
    by_remainder = sorted(raw, key=lambda k: (-(raw[k] - shares[k]), list(raw).index(k)))
    for k in by_remainder[: rest - sum(shares.values())]:
        shares[k] += 1
    return {k: int(v) if _is_count(v) else shares[k] for k, v in spec.items()}


def split_coco(
    coco: Mapping[str, Any], spec: Mapping[str, float | int], *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Split a COCO dict by image into parts of the given counts or fractions, reproducibly.

    Images are sorted by id, shuffled with ``random.Random(seed)``, and cut into consecutive runs
    in the order of ``spec``, sized by :func:`split_counts`. Each part keeps all categories, the
    original image and annotation ids, and ``info`` with ``split``, ``split_spec`` (as given),
    ``split_counts`` (images per part), ``split_fractions`` (each part's share of all images)
    and ``seed`` added.
    """
    images = sorted(coco["images"], key=lambda im: im["id"])
    random.Random(seed).shuffle(images)
    n = len(images)
    counts = split_counts(spec, n)
    parts: dict[str, dict[str, Any]] = {}
    start = 0
    for name, count in counts.items():
        chosen = sorted(images[start : start + count], key=lambda im: im["id"])
        start += count
        if not chosen:
            logger.warning(
                "split %r gets no images (%d images in all, split %s).", name, n, dict(spec)
            )
        ids = {im["id"] for im in chosen}
        info = dict(coco.get("info") or {}) | {
            "split": name,
            "split_spec": dict(spec),
            "split_counts": dict(counts),
            "split_fractions": {k: (c / n if n else 0.0) for k, c in counts.items()},
            "seed": seed,
        }
        parts[name] = {
            "info": info,
            "licenses": list(coco.get("licenses") or []),
            "images": chosen,
            "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in ids],
            "categories": list(coco["categories"]),
        }
    return parts


def _class_list(classes: str | os.PathLike | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str | os.PathLike):
        return read_classes(classes)
    names = [str(c).strip() for c in classes]
    if not names or len(set(names)) != len(names) or not all(names):
        raise ConversionError(f"classes {names!r}: expected distinct, non-empty class names.")
    return names


def _txt_classes(input_dir: Path, class_list: list[str] | None, run: Run) -> list[str] | None:
    """Names of class indices: ``classes.txt`` in the input folder, else ``classes``.

    Missing both is an error for YOLO; LabelImg-KITTI lines may name their class instead, so
    there it is checked per line.
    """
    path = input_dir / "classes.txt"
    if path.is_file():
        try:
            return read_classes(path)
        except ConversionError as exc:
            raise AnnotationError(path, str(exc).split(": ", 1)[-1]) from None
    if class_list is not None:
        run.warn(f"{path} not found; reading class indices against the --classes file instead.")
        return class_list
    if run.fmt != "yolo":
        return None
    raise ConversionError(
        f"{path}: not found. LabelImg writes classes.txt beside its txt files; "
        "its line i names class index i. Restore it, or pass --classes with "
        "the names in index order."
    )
