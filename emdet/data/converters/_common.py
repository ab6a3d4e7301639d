"""Shared pieces of the annotation converters: errors, validation, image sizes, atomic writes."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._geometry import RBox, clip_polygons, polygons_area

logger = logging.getLogger("emdet.data.converters")

#: Coordinates up to this far outside the image (in pixels) are clamped onto the border silently;
#: further out is an error (or clipped with ``clip_to_image=True``).
EDGE_TOLERANCE_PX = 1.0

#: Extensions tried, in this order, when an image is found by the annotation file's name.
IMAGE_EXTENSIONS = (
    ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
    ".dm3", ".dm4", ".mrc", ".emd", ".ser",
)  # fmt: skip

_SKIP_HINT = "rerun with --skip-invalid (skip_invalid=True) to skip it and convert the rest."


class ConversionError(ValueError):
    """An option or input that the converters cannot use; the message says what to do."""


class AnnotationError(ConversionError):
    """A problem in one annotation file.

    Attributes
    ----------
    file : str
        The annotation (or image) file.
    object : str or None
        The object inside the file (``"shape 3 ('rod', polygon)"``, ``"line 7"``); None when the
        whole file is unusable.
    reason : str
        What is wrong, in a sentence.
    """

    def __init__(
        self,
        file: str | os.PathLike,
        reason: str,
        *,
        obj: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file)
        self.object = obj
        self.reason = reason
        self.hint = hint
        where = f"{self.file}, {obj}" if obj else self.file
        super().__init__(f"{where}: {reason}" + (f" {hint}" if hint else ""))


@dataclass(frozen=True)
class Skipped:
    """One object or file left out by ``skip_invalid=True``."""

    file: str
    object: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "object": self.object, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.file}: {self.object}: {self.reason}"


@dataclass
class Instance:
    """One object read from an annotation file, before validation against the image.

    ``polygons`` are ``(N, 2)`` float64 arrays of ``(x, y)`` pixel coordinates. ``kind`` is
    ``"polygon"``, ``"box"`` (axis-aligned rectangle), ``"rbox"``, ``"circle"`` or ``"point"``.
    """

    label: str
    polygons: list[np.ndarray]
    where: str
    kind: str = "polygon"
    rbox: RBox | None = None
    point: tuple[float, float] | None = None
    circle: tuple[float, float, float] | None = None


@dataclass
class ImageRecord:
    """An image and the objects annotated on it."""

    source: Path  # the annotation file
    image: Path  # absolute path of the image (may be a still-to-be-written extracted image)
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Run:
    """Options and bookkeeping shared by the readers during one conversion."""

    fmt: str
    input_dir: Path
    images_dir: Path | None
    extract_dir: Path
    classes: list[str] | None
    point_box_size: float | None
    skip_invalid: bool
    clip_to_image: bool
    txt_classes: list[str] | None = None  # classes.txt of the yolo / kitti input
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extracted: dict[Path, bytes] = field(default_factory=dict)

    def problem(self, err: AnnotationError) -> None:
        """Raise ``err`` (default), or record it as skipped with ``skip_invalid``."""
        if not self.skip_invalid:
            if err.hint is None or "--skip-invalid" not in err.hint:
                hint = f"{err.hint} Or {_SKIP_HINT}" if err.hint else f"Fix it, or {_SKIP_HINT}"
                err = AnnotationError(err.file, err.reason, obj=err.object, hint=hint)
            raise err from None
        self.skipped.append(Skipped(err.file, err.object or "(whole file)", err.reason))

    def warn(self, message: str) -> None:
        logger.warning(message)
        self.warnings.append(message)


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------
def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored), in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise ConversionError(
            f"{path}: classes file not found. Check the path given to "
            "--classes (one class name per line)."
        ) from None
    except UnicodeDecodeError:
        raise ConversionError(
            f"{path}: classes file is not UTF-8 text; save it as plain text "
            "with one class name per line."
        ) from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise ConversionError(f"{path}: classes file is empty; write one class name per line.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConversionError(
            f"{path}: class names listed more than once: {', '.join(dupes)}. "
            "Each class must appear on exactly one line."
        )
    return names


def to_float(value: Any, file: Path, obj: str, field_name: str) -> float:
    """Parse a number, or raise an :class:`AnnotationError` naming the field."""
    try:
        out = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except (TypeError, ValueError):
        raise AnnotationError(
            file, f"field {field_name} is {value!r}; expected a number.", obj=obj
        ) from None
    if not np.isfinite(out):
        raise AnnotationError(
            file, f"field {field_name} is {value!r}; expected a finite number.", obj=obj
        )
    return out


def posix_relpath(path: Path, start: Path) -> str:
    """``os.path.relpath`` with ``/`` separators (as COCO and labelme files use)."""
    return Path(os.path.relpath(path, start)).as_posix()


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header where possible.

    TIFF via tifffile (first page), other common formats via Pillow, EM formats (dm3/dm4/mrc/...)
    via ``emdet.data.io.read_image`` when that module is available.
    """
    from PIL import Image, UnidentifiedImageError

    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        except Exception as exc:  # tifffile raises several types for damaged files
            raise AnnotationError(
                path,
                f"cannot read this TIFF image ({exc}).",
                hint="Check that the file opens in Fiji/ImageJ.",
            ) from None
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        pass
    try:
        from emdet.data.io import read_image  # owned by the I/O module; optional here
    except ImportError:
        read_image = None
    if read_image is not None:
        try:
            array, _meta = read_image(path, page=0)  # (H, W) grey frame
            return int(array.shape[1]), int(array.shape[0])
        except Exception as exc:
            raise AnnotationError(path, f"cannot read the image ({exc}).") from None
    raise AnnotationError(
        path,
        "cannot read the image size: not an image format Pillow or tifffile can open.",
        hint="Convert it to TIFF or PNG.",
    )


def image_bytes_info(data: bytes) -> tuple[int, int, str]:
    """``(width, height, Pillow format name)`` of an image held in memory."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size[0], im.size[1], (im.format or "PNG")


def find_image_by_stem(stem: str, folders: Iterable[Path]) -> Path | None:
    """First existing ``folder/stem.ext`` for the folders and :data:`IMAGE_EXTENSIONS`."""
    for folder in folders:
        for ext in IMAGE_EXTENSIONS:
            for cand in (folder / (stem + ext), folder / (stem + ext.upper())):
                if cand.is_file():
                    return cand.resolve()
    return None


# --------------------------------------------------------------------------------------------
# Validation: Instance -> COCO annotation
# --------------------------------------------------------------------------------------------
def instance_to_annotation(inst: Instance, rec: ImageRecord, run: Run) -> dict[str, Any]:
    """Validate an instance against its image and build the COCO annotation (without ids).

    Raises :class:`AnnotationError` for an unknown class, a shape outside the image (beyond
    :data:`EDGE_TOLERANCE_PX`, unless clipping) or a zero-size shape.
    """
    file, where = rec.source, inst.where
    if not inst.label:
        raise AnnotationError(
            file, "has an empty label.", obj=where, hint="Give the object a class name."
        )
    if run.classes is not None and inst.label not in run.classes:
        raise AnnotationError(
            file,
            f"label {inst.label!r} is not in the classes file (known: {', '.join(run.classes)}).",
            obj=where,
            hint="Correct the label, or add the class to the --classes file.",
        )
    W, H, tol = float(rec.width), float(rec.height), EDGE_TOLERANCE_PX
    polygons = [np.asarray(p, float).reshape(-1, 2) for p in inst.polygons]
    pts = np.concatenate(polygons)
    if not np.all(np.isfinite(pts)):
        raise AnnotationError(file, "has coordinates that are not finite numbers.", obj=where)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    if inst.point is not None:
        px, py = inst.point
        if not (-tol <= px <= W + tol and -tol <= py <= H + tol):
            raise AnnotationError(
                file,
                f"point ({px:g}, {py:g}) lies outside the image ({rec.width} x {rec.height} px).",
                obj=where,
                hint="Move or delete the point.",
            )
    outside = x0 < -tol or y0 < -tol or x1 > W + tol or y1 > H + tol
    clipped = False
    if outside and not (run.clip_to_image or inst.point is not None):
        raise AnnotationError(
            file,
            f"extends outside the image: x from {x0:g} to {x1:g}, y from {y0:g} to {y1:g}, "
            f"but the image {rec.image.name} is {rec.width} x {rec.height} px (allowed: x 0.."
            f"{rec.width}, y 0..{rec.height}, with {tol:g} px tolerance).",
            obj=where,
            hint="Correct the object in the annotation tool, or pass --clip-to-image to clip it "
            "to the image.",
        )
    if outside and (x1 <= 0 or y1 <= 0 or x0 >= W or y0 >= H):
        raise AnnotationError(
            file,
            f"lies entirely outside the image ({rec.width} x {rec.height} px).",
            obj=where,
            hint="Delete it.",
        )
    if outside and inst.kind != "box":
        polygons = clip_polygons(polygons, W, H)
        if not polygons:
            raise AnnotationError(
                file, f"lies entirely outside the image ({rec.width} x {rec.height} px).", obj=where
            )
        clipped = True
    elif x0 < 0 or y0 < 0 or x1 > W or y1 > H:  # within tolerance, or an axis-aligned box
        polygons = [
            np.column_stack([np.clip(p[:, 0], 0, W), np.clip(p[:, 1], 0, H)]) for p in polygons
        ]
        clipped = True
    pts = np.concatenate(polygons)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    bw, bh = float(x1 - x0), float(y1 - y0)
    if inst.kind == "box":
        area = bw * bh
    elif inst.kind == "rbox" and not clipped and inst.rbox is not None:
        area = inst.rbox[2] * inst.rbox[3]
    else:
        area = polygons_area(polygons)
    if bw <= 1e-6 or bh <= 1e-6 or area <= 1e-9:
        raise AnnotationError(
            file,
            f"has zero size (box {bw:g} x {bh:g} px, area {area:g} px²).",
            obj=where,
            hint="Delete it or redraw it in the annotation tool.",
        )
    ann: dict[str, Any] = {
        "label": inst.label,
        "bbox": [float(x0), float(y0), bw, bh],
        "area": float(area),
        "segmentation": [[float(v) for v in p.ravel()] for p in polygons],
        "iscrowd": 0,
    }
    if inst.rbox is not None:
        ann["rbox"] = [float(v) for v in inst.rbox]
    if inst.point is not None:
        ann["point"] = [float(inst.point[0]), float(inst.point[1])]
    if inst.circle is not None and not clipped:
        ann["circle"] = [float(v) for v in inst.circle]
    return ann


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
def write_files_atomically(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write all files or none: each goes to a temporary file beside its target first, and the
    temporaries are renamed over the targets (``os.replace``) only once every one is written."""
    temps: list[tuple[Path, Path]] = []
    try:
        for target, data in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            temps.append((Path(tmp), target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        for tmp, target in temps:
            os.replace(tmp, target)
    finally:
        for tmp, _ in temps:
            if tmp.exists():
                tmp.unlink()


def json_bytes(obj: Any, *, indent: int | None = None) -> bytes:
    return (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")
