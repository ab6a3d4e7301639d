"""Shared pieces of the annotation converters: errors, strict JSON, validation, image sizes,
all-or-nothing writes."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emdet.utils import strictjson
from emdet.utils.atomic import atomic_write_many, is_temp_file

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

#: Largest rotation angle in radians taken as such (roLabelImg ``<angle>``, LabelImg-KITTI
#: ``rotation``); a larger magnitude is almost surely degrees and is refused, not wrapped.
MAX_ANGLE_RAD = 2 * math.pi

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
    ``"polygon"``, ``"box"`` (axis-aligned rectangle), ``"rbox"``, ``"circle"``, ``"point"`` or
    ``"mask"`` (a pixel mask; ``polygons`` then hold its box, for messages).
    ``field`` and ``label_field`` name, for messages, the fields of the file the coordinates
    and the class name came from (``"points"``, ``"<robndbox>"``, ``"cx cy w h"``...).
    """

    label: str
    polygons: list[np.ndarray]
    where: str
    kind: str = "polygon"
    field: str = "points"
    label_field: str = "label"
    rbox: RBox | None = None
    point: tuple[float, float] | None = None
    circle: tuple[float, float, float] | None = None
    #: ``kind == "mask"``: a boolean mask of the box starting at pixel ``mask_origin`` (x, y)
    mask: np.ndarray | None = None
    mask_origin: tuple[int, int] = (0, 0)


@dataclass
class ImageRecord:
    """An image and the objects annotated on it."""

    source: Path  # the annotation file
    image: Path  # absolute path of the image (may be a still-to-be-written extracted image)
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    pixel_size: float | None = None  # of the image file, when calibrated (written to COCO)
    unit: str | None = None


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
    info: dict[str, Any] = field(default_factory=dict)  # added to the COCO info (mask_kind...)

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
    except OSError as exc:
        raise ConversionError(
            f"{path}: classes file cannot be read ({exc.strerror or exc}). Check --classes: a "
            "text file with one class name per line."
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
    """Parse a number from text (XML, txt), or raise an :class:`AnnotationError` naming the
    field."""
    try:
        out = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except (TypeError, ValueError, OverflowError):
        raise AnnotationError(
            file, f"field {field_name} is {value!r:.60}; expected a number.", obj=obj
        ) from None
    if not math.isfinite(out):
        raise AnnotationError(
            file, f"field {field_name} is {value!r:.60}; expected a finite number.", obj=obj
        )
    return out


def json_number(value: Any, file: Path, obj: str, field_name: str) -> float:
    """A number from parsed JSON: an int or float that is finite; text, ``true``/``false`` and
    ``null`` are refused (labelme never writes them), naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnnotationError(
            file,
            f"field {field_name} holds {value!r:.60} ({type(value).__name__}); expected a "
            "number, not text, true/false or null.",
            obj=obj,
        )
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise AnnotationError(
            file, f"field {field_name} is {value!r:.60}; expected a finite number.", obj=obj
        )
    return out


def check_radians(value: float, file: Path, obj: str, field_name: str) -> float:
    """Refuse a rotation angle outside ``[-2π, 2π]``: the format stores radians, so a larger
    value is almost surely degrees, and wrapping it would silently turn the box."""
    if not -MAX_ANGLE_RAD <= value <= MAX_ANGLE_RAD:
        raise AnnotationError(
            file,
            f"field {field_name} is {value:g}, outside -2π..2π (±{MAX_ANGLE_RAD:.4f}); the "
            "format stores the angle in radians, so this looks like degrees.",
            obj=obj,
            hint=f"Convert the angles to radians ({value:g}° is {math.radians(value):.4f} rad) "
            "or re-save the file from the annotation tool.",
        )
    return value


def load_json(path: Path, what: str) -> Any:
    """Read a UTF-8 JSON file strictly, or raise an :class:`AnnotationError` naming the file.

    ``NaN``, ``Infinity`` and numbers too large for a float are refused with the field that
    holds them (``shapes[0].points[1][0]``), as is text that is not valid Unicode.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnnotationError(path, f"{what} not found.") from None
    except IsADirectoryError:
        raise AnnotationError(path, f"is a folder; expected the {what} (a .json file).") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            path, f"is not UTF-8 text (byte {exc.start}), so it is not a {what} (JSON)."
        ) from None
    except OSError as exc:
        raise AnnotationError(path, f"{what} cannot be read ({exc.strerror or exc}).") from None
    try:
        data = strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        text_problem = "text" in exc.problem
        raise AnnotationError(
            path,
            f"field {exc.where} is {exc.problem}" + ("." if text_problem else " (strict JSON)."),
            hint="Retype the text in the annotation tool." if text_problem
            else "Write a finite number (or remove the object).",
        ) from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            path,
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            hint="Re-save it from the tool that wrote it, or repair it in a text editor.",
        ) from None
    except RecursionError:
        raise AnnotationError(path, f"is JSON nested too deeply to be a {what}.") from None
    except ValueError as exc:
        raise AnnotationError(path, f"is not valid JSON for a {what} ({exc}).") from None
    return data


def posix_relpath(path: Path, start: Path) -> str:
    """``os.path.relpath`` with ``/`` separators (as COCO and labelme files use)."""
    return Path(os.path.relpath(path, start)).as_posix()


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def is_file(path: Path, file: Path, field_name: str) -> bool:
    """``path.is_file()``, but a path the system cannot even look up (too long, a NUL byte) is
    an :class:`AnnotationError` naming ``file`` and ``field_name`` instead of a crash."""
    try:
        return path.is_file()
    except (OSError, ValueError) as exc:
        raise AnnotationError(
            file,
            f"field {field_name} gives the path {str(path)!r:.80}, which is not a usable file "
            f"name ({exc}).",
        ) from None


def _pil_header(source: Any, name: str) -> tuple[int, int, str]:
    """``(width, height, format)`` from a Pillow header (a path or a file object) under emdet's pixel
    limit; raises :class:`emdet.data.io.ImageReadError` / ``ImageTooLargeError``."""
    from PIL import Image, UnidentifiedImageError

    from emdet.data.io import MAX_PIXELS_ENV, ImageReadError, ImageTooLargeError, max_image_pixels

    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # one limit, as emdet.data.io sets it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as im:
                width, height, fmt = int(im.size[0]), int(im.size[1]), im.format or "PNG"
        except Image.DecompressionBombError:
            width = height = -1
            fmt = ""
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            detail = f" ({exc})" if isinstance(source, str | os.PathLike) else ""
            raise ImageReadError(f"{name} is not an image Pillow can open{detail}.") from None
    if width < 0 or width * height > limit:
        size = f"{width} x {height} px, more than" if width >= 0 else "more than twice"
        raise ImageTooLargeError(
            f"{name} declares {size} the pixel limit of {limit:,} ({MAX_PIXELS_ENV}); "
            f"refused before decoding (a decompression bomb, or a montage too large: raise "
            f"{MAX_PIXELS_ENV} if the machine has the memory)."
        )
    if width < 1 or height < 1:
        raise ImageReadError(f"{name} declares a size of {width} x {height} px, without pixels.")
    return width, height, fmt


def image_size(
    path: Path, *, source: Path | None = None, field_name: str = "image"
) -> tuple[int, int]:
    """``(width, height)`` of an image file, reading only its header where the format allows.

    Uses :func:`emdet.data.io.image_size` (TIFF, PNG, JPEG, EM formats) and Pillow for the
    other extensions (BMP, GIF), both under the pixel limit ``EMDET_MAX_PIXELS``, so neither a
    decompression bomb nor a broken file gets further than a message.

    Raises
    ------
    AnnotationError
        Naming ``source`` (the annotation file) and ``field_name`` (the field that names the
        image) when given, else the image, with what is wrong.
    """
    from emdet.data import io as emio

    try:
        if path.suffix.lower() in emio.SUPPORTED_EXTENSIONS:
            height, width = emio.image_size(path)
        else:
            width, height, _ = _pil_header(path, f"'{path}'")
    except Exception as exc:  # noqa: BLE001 - image readers raise many types
        reason = str(exc) or type(exc).__name__
        if source is None:
            raise AnnotationError(path, f"cannot read the image ({reason})") from None
        raise AnnotationError(
            source,
            f"field {field_name}: the image {path} cannot be used: {reason}",
            hint="Replace the image, or correct the field if it names the wrong file.",
        ) from None
    return int(width), int(height)


def image_calibration(path: Path, *, source: Path | None = None
                      ) -> tuple[float | None, str | None]:
    """``(pixel_size, unit)`` an image file carries (TIFF tags, DM/MRC/SER/EMD metadata, read
    by :func:`emdet.data.io.read_image`), or ``(None, None)``: PNG/JPEG/NPY and other files
    without a calibration, or an absurd one (not finite or not positive).

    Raises
    ------
    AnnotationError
        The image cannot be read; naming ``source`` (the annotation file) when given.
    """
    from emdet.data import io as emio

    if emio.SUPPORTED_EXTENSIONS.get(path.suffix.lower()) in (None, "png", "jpeg", "npy"):
        return None, None
    try:
        _, meta = emio.read_image(path, page=0, keep_channels=True)
    except Exception as exc:  # noqa: BLE001 - image readers raise many types
        raise AnnotationError(
            source or path, f"its image {path} cannot be used: {str(exc) or type(exc).__name__}",
            hint="Replace the image, or remove the annotation file.") from None
    if meta.pixel_size is None or not (math.isfinite(meta.pixel_size) and meta.pixel_size > 0):
        return None, None
    return float(meta.pixel_size), meta.unit


def image_bytes_info(data: bytes, source: Path, field_name: str) -> tuple[int, int, str]:
    """``(width, height, Pillow format name)`` of an image held in memory (labelme
    ``imageData``), under the pixel limit; an :class:`AnnotationError` naming ``source`` and
    ``field_name`` otherwise."""
    try:
        return _pil_header(io.BytesIO(data), f"the embedded image ({len(data)} bytes)")
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types
        raise AnnotationError(
            source,
            f"field {field_name}: {exc}",
            hint="Re-save the file from labelme with the image present.",
        ) from None


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
    file, where, fld = rec.source, inst.where, inst.field
    if not inst.label:
        raise AnnotationError(
            file,
            f"has an empty label (field {inst.label_field}).",
            obj=where,
            hint="Give the object a class name.",
        )
    if run.classes is not None and inst.label not in run.classes:
        raise AnnotationError(
            file,
            f"{inst.label_field} {inst.label!r} is not in the classes file (known: "
            f"{', '.join(run.classes)}).",
            obj=where,
            hint="Correct the label, or add the class to the --classes file.",
        )
    if inst.kind == "mask":
        return _mask_annotation(inst, rec, run)
    W, H, tol = float(rec.width), float(rec.height), EDGE_TOLERANCE_PX
    polygons = [np.asarray(p, float).reshape(-1, 2) for p in inst.polygons]
    pts = np.concatenate(polygons)
    if not np.all(np.isfinite(pts)):
        raise AnnotationError(
            file, f"field {fld} has coordinates that are not finite numbers.", obj=where
        )
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    if inst.point is not None:
        px, py = inst.point
        if not (-tol <= px <= W + tol and -tol <= py <= H + tol):
            raise AnnotationError(
                file,
                f"point ({px:g}, {py:g}) in field {fld} lies outside the image ({rec.width} x "
                f"{rec.height} px).",
                obj=where,
                hint="Move or delete the point.",
            )
    outside = x0 < -tol or y0 < -tol or x1 > W + tol or y1 > H + tol
    clipped = False
    if outside and not (run.clip_to_image or inst.point is not None):
        raise AnnotationError(
            file,
            f"extends outside the image (field {fld}): x from {x0:g} to {x1:g}, y from {y0:g} "
            f"to {y1:g}, "
            f"but the image {rec.image.name} is {rec.width} x {rec.height} px (allowed: x 0.."
            f"{rec.width}, y 0..{rec.height}, with {tol:g} px tolerance).",
            obj=where,
            hint="Correct the object in the annotation tool, or pass --clip-to-image to clip it "
            "to the image.",
        )
    if outside and (x1 <= 0 or y1 <= 0 or x0 >= W or y0 >= H):
        raise AnnotationError(
            file,
            f"lies entirely outside the image (field {fld}; the image is {rec.width} x "
            f"{rec.height} px).",
            obj=where,
            hint="Delete it.",
        )
    if outside and inst.kind != "box":
        polygons = clip_polygons(polygons, W, H)
        if not polygons:
            raise AnnotationError(
                file,
                f"lies entirely outside the image (field {fld}; the image is {rec.width} x "
                f"{rec.height} px).",
                obj=where,
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
            f"has zero size (field {fld}: box {bw:g} x {bh:g} px, area {area:g} px²).",
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


def _mask_annotation(inst: Instance, rec: ImageRecord, run: Run) -> dict[str, Any]:
    """A pixel-mask instance (labelme ``mask`` shape) placed in its image, as RLE."""
    from emdet.data.rle import MaskCrop, crop_to_rle

    crop = np.asarray(inst.mask, bool)
    x0, y0 = inst.mask_origin
    h, w = crop.shape
    inside = 0 <= x0 and 0 <= y0 and x0 + w <= rec.width and y0 + h <= rec.height
    if not inside and not run.clip_to_image:
        raise AnnotationError(
            rec.source,
            f"its mask (field {inst.field}: {w} x {h} px at x {x0}, y {y0}) extends outside "
            f"the image {rec.image.name} ({rec.width} x {rec.height} px).",
            obj=inst.where,
            hint="Correct the mask in labelme, or pass --clip-to-image to clip it to the image.",
        )
    top, left = max(y0, 0), max(x0, 0)
    clipped = MaskCrop(y0, x0, crop).window(top, min(y0 + h, rec.height), left,
                                            min(x0 + w, rec.width))
    placed = MaskCrop.from_mask(clipped, y0=top, x0=left)
    if placed.area == 0:
        raise AnnotationError(
            rec.source, f"its mask (field {inst.field}) has no pixel inside the image.",
            obj=inst.where, hint="Delete it or paint it again in labelme.")
    bx0, by0, bx1, by1 = placed.extent
    return {
        "label": inst.label,
        "bbox": [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)],
        "area": float(placed.area),
        "segmentation": crop_to_rle(placed, rec.height, rec.width),
        "iscrowd": 0,
    }


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def check_output_path(
    path: Path, flag: str, *, folder: bool = False, what: str = "the labelme files"
) -> None:
    """Refuse an output path that cannot be written before any work is done: a folder where a
    file is to be written (or a file where a folder is; ``what`` names the files meant for the
    folder), or a parent that is a file."""
    path = Path(path)
    try:
        if folder and path.exists() and not path.is_dir():
            raise ConversionError(f"{path}: {flag} is a file; give the folder to write {what} to.")
        if not folder and path.is_dir():
            example = (
                "move the folder away or choose another name" if path.suffix.lower() == ".json"
                else f"e.g. {flag} {path / 'all.json'}"
            )
            raise ConversionError(
                f"{path}: {flag} is a folder; give the path of the COCO .json file to write "
                f"({example})."
            )
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ConversionError(
                        f"{path}: {flag} cannot be written, because {parent} is a file, not a "
                        "folder."
                    )
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise ConversionError(
                        f"{path}: {flag} cannot be written: no permission to write in {parent}."
                    )
                break
    except OSError as exc:
        raise ConversionError(f"{path}: {flag} is not a usable path ({exc}).") from None


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace existing outputs unless ``overwrite``; a folder in the way is always
    refused."""
    paths = list(paths)
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise ConversionError(
            f"{folders[0]}: is a folder, so the output file of that name cannot be written. "
            "Move the folder, or choose another --output."
        )
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(map(str, existing[:5])) + (" ..." if len(existing) > 5 else "")
        raise ConversionError(
            f"{shown}: already exist{'s' if len(existing) == 1 else ''}. Pass --overwrite to "
            "replace (any hand edits in them are lost), or choose another --output."
        )


def write_outputs(files: Sequence[tuple[Path, bytes]]) -> list[Path]:
    """Write every file or none (:func:`emdet.utils.atomic.atomic_write_many`); a system error
    becomes a :class:`ConversionError` that names the file and says nothing was changed."""
    try:
        return atomic_write_many(files)
    except OSError as exc:
        names = [n for n in (exc.filename2, exc.filename) if n and not is_temp_file(n)]
        shown = names[0] if names else ", ".join(str(t) for t, _ in files)
        raise ConversionError(
            f"{shown}: cannot write the output ({exc.strerror or exc}); nothing was written and "
            "files already there are unchanged. Check --output: that its folder can be written "
            "and has free space."
        ) from None


def json_bytes(obj: Any, *, indent: int | None = None, target: Path | str = "output") -> bytes:
    """Strict JSON (never ``NaN``/``Infinity``) as UTF-8 bytes with a final newline."""
    try:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise ConversionError(
            f"{target}: not written: the data hold a value strict JSON cannot carry ({exc})."
        ) from None
