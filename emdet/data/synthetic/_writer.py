"""Write seeded synthetic data sets in the layout of real ones (see ``datasets/README.md``).

::

    <output>/
        dataset.yaml                 classes, evaluator_type, pixel_size, unit, provenance
        images/<kind>_0000.tif       uint16 ImageJ TIFF, pixel size in the resolution tags
        annotations/{train,val,test}.json   COCO, one per non-empty split
        masks/<kind>_0000.png        uint8 per-pixel labels (graphene, atoms, merons)
        instances/<kind>_0000.png    uint16 instance ids (vesicles)
        labelme/<kind>_0000.json     labelme shapes (vesicles polygons, merons/atoms points)

Everything is written into a hidden temporary folder beside ``output`` and renamed into place
at the end, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
import yaml
from tqdm import tqdm

from emdet.data.synthetic._base import SYNTHETIC_KINDS, SyntheticImage, SyntheticKind

__all__ = ["DEFAULT_SPLIT", "generate_image", "make_synthetic", "parse_split"]

DEFAULT_SPLIT: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
IMAGE_FORMATS = ("tiff", "png")
LABELME_VERSION = "5.1.1"

_NM_PER_UNIT = {
    "pm": 1e-3,
    "A": 0.1,
    "Å": 0.1,
    "angstrom": 0.1,
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
}
_IMAGEJ_UNIT = {"um": "micron", "µm": "micron", "Å": "A", "angstrom": "A"}
_MAX_SCALE = 4.0


def _kind(kind: str) -> SyntheticKind:
    try:
        return SYNTHETIC_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown synthetic kind {kind!r}; choose one of {', '.join(sorted(SYNTHETIC_KINDS))}"
        ) from None


#: Largest synthetic image side: a simulated 16k x 16k image already takes minutes and GBs.
MAX_SYNTHETIC_SIZE = 16384


def _check_size(size: int) -> None:
    if not 64 <= size <= MAX_SYNTHETIC_SIZE:
        raise ValueError(f"image size (--size) must be between 64 and {MAX_SYNTHETIC_SIZE} "
                         f"pixels, got {size}")


def _resolve_pixel_size(
    spec: SyntheticKind, pixel_size: float | None, unit: str | None
) -> tuple[float, str, float]:
    """``(pixel_size, unit, scale)``: scale is pixels per default pixel of the kind."""
    unit = unit or spec.unit
    if unit not in _NM_PER_UNIT:
        raise ValueError(
            f"unit {unit!r} is not a length unit emdet knows; use one of {', '.join(_NM_PER_UNIT)}"
        )
    default_nm = spec.pixel_size * _NM_PER_UNIT[spec.unit]
    if pixel_size is None:
        return float(f"{default_nm / _NM_PER_UNIT[unit]:.12g}"), unit, 1.0
    if not pixel_size > 0:
        raise ValueError(f"pixel size must be > 0, got {pixel_size}")
    scale = default_nm / (pixel_size * _NM_PER_UNIT[unit])
    if abs(scale - 1.0) < 1e-9:
        scale = 1.0
    if not 1 / _MAX_SCALE <= scale <= _MAX_SCALE:
        lo = default_nm / _MAX_SCALE / _NM_PER_UNIT[unit]
        hi = default_nm * _MAX_SCALE / _NM_PER_UNIT[unit]
        raise ValueError(
            f"pixel size {pixel_size} {unit} makes {spec.name} features {scale:.2g} times their "
            f"default size in pixels; choose a pixel size between {lo:.3g} and {hi:.3g} {unit}"
        )
    return float(pixel_size), unit, scale


def generate_image(
    kind: str,
    seed: int = 0,
    index: int = 0,
    size: int = 256,
    *,
    pixel_size: float | None = None,
    unit: str | None = None,
) -> SyntheticImage:
    """Draw one synthetic micrograph without writing anything.

    Image ``index`` of ``make_synthetic(kind, seed=seed, size=size, ...)`` is exactly this image.

    Parameters
    ----------
    kind : {"vesicles", "nanorods", "merons", "graphene", "atoms"}
    seed, index : int
        Non-negative; the image depends only on ``(kind, seed, index, size, pixel size)``.
    size : int
        Side of the square image in pixels (>= 64).
    pixel_size, unit : keyword-only
        Physical pixel size; objects keep their physical size (default: the kind's own).

    Returns
    -------
    SyntheticImage
    """
    spec = _kind(kind)
    _check_size(size)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index, zlib.crc32(kind.encode())])
    _, _, scale = _resolve_pixel_size(spec, pixel_size, unit)
    return spec.generate(rng, size, scale)


def parse_split(text: str | Mapping[str, float] | None) -> dict[str, float]:
    """Split fractions from ``"train=0.6,val=0.2,test=0.2"`` (or a mapping), normalised to 1."""
    if text is None:
        return dict(DEFAULT_SPLIT)
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in text.split(","):
            name, sep, value = part.partition("=")
            try:
                items.append((name.strip(), float(value)))
            except ValueError:
                sep = ""
            if not sep:
                raise ValueError(
                    f"--split {text!r}: expected NAME=FRACTION pairs separated by commas, "
                    "e.g. train=0.6,val=0.2,test=0.2"
                ) from None
    fractions: dict[str, float] = {}
    for name, value in items:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError(f"split name {name!r}: use letters, digits, '_' or '-'")
        if name in fractions:
            raise ValueError(f"split {name!r} is given twice")
        if not value >= 0:
            raise ValueError(f"split {name!r}: fraction must be >= 0, got {value}")
        fractions[name] = float(value)
    total = sum(fractions.values())
    if total <= 0:
        raise ValueError("split fractions add up to 0; give at least one positive fraction")
    return {k: v / total for k, v in fractions.items()}


def _allocate(num: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Image counts per split (largest remainder, ties in the given order)."""
    exact = {k: f * num for k, f in fractions.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    left = num - sum(counts.values())
    for k in sorted(exact, key=lambda k: -(exact[k] - counts[k]))[:left]:
        counts[k] += 1
    return counts


def _write_image(path: Path, image: np.ndarray, pixel_size: float, unit: str, fmt: str) -> None:
    if fmt == "tiff":
        tifffile.imwrite(
            path,
            image,
            imagej=True,
            resolution=(1.0 / pixel_size, 1.0 / pixel_size),
            metadata={"unit": _IMAGEJ_UNIT.get(unit, unit)},
        )
    else:
        lo, hi = np.percentile(image, [0.1, 99.9])
        scaled = np.clip((image - lo) / max(hi - lo, 1.0) * 255.0 + 0.5, 0, 255)
        _imwrite_png(path, scaled.astype(np.uint8))


def _imwrite_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def _write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def _labelme(sample: SyntheticImage, shape_type: str, image_path: str) -> dict[str, Any]:
    shapes = []
    for n, inst in enumerate(sample.instances):
        if shape_type == "point":
            parts = [[inst.extra["point"]]]
        else:
            parts = [np.reshape(p, (-1, 2)).tolist() for p in inst.segmentation]
        for points in parts:
            shapes.append(
                {
                    "label": inst.category,
                    "points": points,
                    "group_id": n if len(parts) > 1 else None,
                    "shape_type": shape_type,
                    "flags": {},
                }
            )
    h, w = sample.image.shape
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(h),
        "imageWidth": int(w),
    }


def _prepare_output(output: Path, overwrite: bool) -> None:
    if output.exists():
        if not output.is_dir():
            raise FileExistsError(f"output {output} exists and is not a folder")
        if any(output.iterdir()) and not overwrite:
            raise FileExistsError(
                f"output folder {output} is not empty; choose another --output or pass "
                "--overwrite (overwrite=True) to replace it"
            )


def _move_into_place(tmp: Path, output: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.rename(output, old)
        try:
            os.rename(tmp, output)
        except BaseException:
            os.rename(old, output)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, output)


def make_synthetic(
    kind: str,
    num: int = 5,
    size: int = 256,
    seed: int = 0,
    output: str | os.PathLike[str] | None = None,
    *,
    split: str | Mapping[str, float] | None = None,
    pixel_size: float | None = None,
    unit: str | None = None,
    image_format: str = "tiff",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a seeded synthetic data set in the real-data layout.

    Parameters
    ----------
    kind : {"vesicles", "nanorods", "merons", "graphene", "atoms"}
        See :data:`SYNTHETIC_KINDS` for classes and defaults.
    num : int
        Number of images (>= 1), shared out over the splits.
    size : int
        Side of the square images in pixels (>= 64).
    seed : int
        Same seed, same arguments: byte-identical files (on the same platform).
    output : path, optional
        Data set folder, e.g. ``datasets/vesicles_synth``; its name becomes the registered
        data set name. Default ``<datasets root>/<kind>_synth``.
    split : str or mapping, keyword-only
        Fractions per split, default ``train=0.6,val=0.2,test=0.2``. Images are assigned in
        order; a split that gets no image gets no json.
    pixel_size, unit : keyword-only
        Physical pixel size written to the metadata (default: the kind's own, e.g. 2.0 nm for
        vesicles). Objects keep their physical size, so they get bigger or smaller in pixels.
    image_format : {"tiff", "png"}, keyword-only
        ``tiff``: uint16 counts as from a camera, ImageJ TIFF with the pixel size; ``png``:
        8-bit, contrast-stretched per image (pixel size only in the json and yaml).
    overwrite : bool, keyword-only
        Replace a non-empty ``output`` (otherwise an error).
    progress : bool, keyword-only
        Show a tqdm progress bar.

    Returns
    -------
    Path
        The written data set folder.
    """
    from emdet.data.datasets import get_datasets_root

    spec = _kind(kind)
    if num < 1:
        raise ValueError(f"num (--num) must be at least 1 image, got {num}")
    _check_size(size)
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    fractions = parse_split(split)
    pixel_size, unit, _ = _resolve_pixel_size(spec, pixel_size, unit)
    output = Path(output) if output is not None else get_datasets_root() / f"{kind}_synth"
    _prepare_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)

    counts = _allocate(num, fractions)
    split_of = [name for name, n in counts.items() for _ in range(n)]
    categories = [
        {"id": i + 1, "name": c, "supercategory": kind} for i, c in enumerate(spec.classes)
    ]
    cat_id = {c["name"]: c["id"] for c in categories}
    ext = ".tif" if image_format == "tiff" else ".png"
    info = {
        "description": f"emdet synthetic {kind}: {spec.description}",
        "version": "1",
        "contributor": "emdet.data.synthetic",
        "seed": seed,
        "pixel_size": pixel_size,
        "unit": unit,
    }
    coco: dict[str, dict[str, Any]] = {
        name: {
            "info": info,
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": categories,
        }
        for name, n in counts.items()
        if n > 0
    }

    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent))
    try:
        for sub in ("images", "annotations"):
            (tmp / sub).mkdir()
        ann_id = 0
        for index in tqdm(
            range(num), desc=f"{kind} -> {output}", unit="image", disable=not progress
        ):
            sample = generate_image(kind, seed, index, size, pixel_size=pixel_size, unit=unit)
            stem = f"{kind}_{index:04d}"
            _write_image(
                tmp / "images" / f"{stem}{ext}", sample.image, pixel_size, unit, image_format
            )
            entry: dict[str, Any] = {
                "id": index + 1,
                "file_name": f"{stem}{ext}",
                "height": int(sample.image.shape[0]),
                "width": int(sample.image.shape[1]),
                "pixel_size": pixel_size,
                "unit": unit,
            }
            if sample.sem_seg is not None:
                (tmp / "masks").mkdir(exist_ok=True)
                _imwrite_png(tmp / "masks" / f"{stem}.png", sample.sem_seg.astype(np.uint8))
                entry["sem_seg_file_name"] = f"{stem}.png"
            if sample.instance_mask is not None:
                (tmp / "instances").mkdir(exist_ok=True)
                _imwrite_png(
                    tmp / "instances" / f"{stem}.png", sample.instance_mask.astype(np.uint16)
                )
                entry["instance_mask_file_name"] = f"{stem}.png"
            if sample.info:
                entry["synthetic"] = sample.info
            if spec.labelme:
                (tmp / "labelme").mkdir(exist_ok=True)
                doc = _labelme(sample, spec.labelme, f"../images/{stem}{ext}")
                _write_json(tmp / "labelme" / f"{stem}.json", doc, indent=2)
            data = coco[split_of[index]]
            data["images"].append(entry)
            for inst in sample.instances:
                ann_id += 1
                data["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": index + 1,
                        "category_id": cat_id[inst.category],
                        "bbox": [float(v) for v in inst.bbox],
                        "area": float(inst.area),
                        "segmentation": inst.segmentation,
                        "iscrowd": 0,
                        **inst.extra,
                    }
                )
        for name, data in coco.items():
            _write_json(tmp / "annotations" / f"{name}.json", data)
        meta: dict[str, Any] = {
            "kind": kind,
            "description": spec.description,
            "classes": list(spec.classes),
            "evaluator_type": spec.evaluator_type,
            "rotated": spec.rotated,
            "pixel_size": pixel_size,
            "unit": unit,
        }
        if spec.stuff_classes:
            meta["stuff_classes"] = list(spec.stuff_classes)
        meta["splits"] = {k: v for k, v in counts.items() if v > 0}
        meta["synthetic"] = {"seed": seed, "num": num, "size": size, "image_format": image_format}
        with open(tmp / "dataset.yaml", "w", encoding="utf-8") as f:
            f.write(
                "# Written by emdet.data.synthetic (tools/make_synthetic.py); read by\n"
                "# emdet.data.register_all_from_root. See datasets/README.md.\n"
            )
            yaml.safe_dump(meta, f, sort_keys=False, allow_unicode=True)
        _prepare_output(output, overwrite)
        _move_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output
