"""Label images -> COCO RLE (``--format masks``), and COCO -> 16-bit instance-ID PNGs
(``--to masks``) for Fiji and napari.

Pairing
-------
A mask pairs with the image of the same file stem in ``images_dir`` (``12.png`` <-> ``12.tif``,
``12.png``, ...; :data:`~._common.IMAGE_EXTENSIONS` in that order when several exist). When no
image has the mask's own stem, one of :data:`MASK_SUFFIXES` (``_mask``, ``_labels``, ``-seg``,
``.instances``..., any case) is taken off it: ``12_mask.png`` <-> ``12.tif``. Mask files are
:data:`MASK_EXTENSIONS` (lossless); a JPEG mask is refused (its edges are no longer exact), other
files in the folder are ignored. A mask without an image is an error (``skip_invalid`` skips it);
images without a mask are listed in a warning and left out.

Mask kinds
----------
``instances``
    An instance-ID map: 0 is background, every other value one object, kept exactly: one id is
    one object even when its pixels lie in several pieces, and its RLE decodes to exactly that
    id's pixels. The id is kept as ``mask_id`` on the annotation. Integer (8/16/32/64-bit) or
    float masks whose values are whole numbers >= 0; palette PNGs are read as their indices
    (as their colours with ``rgb``).
``binary``
    Any non-zero pixel is foreground; objects are its connected components with 8-connectivity
    (pixels touching at a corner belong together). With ``split_touching`` each component is cut
    further by a watershed of the distance transform
    (:func:`skimage.segmentation.watershed` on ``-distance``), seeded at the local maxima of the
    distance transform (:func:`skimage.feature.peak_local_max`) at least ``split_min_distance``
    pixels apart (default :data:`DEFAULT_MIN_DISTANCE`; about the smallest radius of an object
    worth splitting off: smaller values cut elongated or rough objects into pieces).
``rgb``
    A colour mask read with ``mask_classes``: ``"255,0,0=vesicle;0,255,0=hole"``. Each class's
    connected components (8-connectivity, all of its colours together) become objects. A colour
    naming several classes, ``"255,255,0=vesicle+hole"``, marks where objects overlap: each
    connected region of it is added to every object of those classes it touches (8-neighbours),
    so both neighbours keep the shared pixels; a region that touches no object of a class named
    becomes an object of that class itself. Black is background unless named; a colour named
    ``background`` is background too (``"255,255,255=background"`` for white). Transparent
    pixels (alpha 0) are background. A colour in the mask that is not listed is an error that
    reports the colour and its pixel count.

When ``mask_kind`` is not given it is chosen for the whole folder and logged: ``rgb`` when
``mask_classes`` is given; ``binary`` with ``split_touching``; else ``instances`` if any mask is a
16-bit or wider integer image or has more than one non-zero value, ``binary`` if every mask has
at most one (a 0/255 mask). A colour mask without ``mask_classes`` is an error that lists its
colours. A mask without any object keeps its image, without annotations, with a warning.

Output
------
``segmentation`` is COCO RLE (``{"size": [h, w], "counts": str}``, column-major, as
``pycocotools.mask.encode`` writes it), ``bbox`` ``[x, y, w, h]`` the tight pixel box, ``area``
the pixel count. Images get ``pixel_size`` and ``unit`` when the image file is calibrated (read by
:func:`emdet.data.io.read_image`; PNG/JPEG/NumPy files carry no calibration and are only sized).
The category is ``mask_class_name`` (default :data:`DEFAULT_CLASS_NAME`; or the one name of
``classes``) for instance and binary masks, and the ``mask_classes`` names for colour masks.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from ._common import (
    IMAGE_EXTENSIONS,
    AnnotationError,
    ConversionError,
    ImageRecord,
    Run,
    check_output_path,
    image_calibration,
    load_json,
    logger,
    refuse_existing,
    write_outputs,
)

#: Mask kinds read by ``--mask-kind``.
MASK_KINDS = ("instances", "binary", "rgb")

#: Extensions (lower case) read as masks; other files in the mask folder are ignored.
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".npy")

#: Lossy formats refused as masks.
LOSSY_EXTENSIONS = (".jpg", ".jpeg")

#: Endings taken off a mask's stem to find its image when no image has the stem itself.
MASK_SUFFIXES = tuple(
    sep + word
    for word in ("mask", "masks", "label", "labels", "seg", "segmap", "instances", "ids")
    for sep in ("_", "-", ".")
)

#: Class name for instance and binary masks without ``mask_class_name``.
DEFAULT_CLASS_NAME = "object"

#: Default least distance in pixels between watershed seeds with ``split_touching``.
DEFAULT_MIN_DISTANCE = 5

#: Class name in ``mask_classes`` that marks a colour as background.
BACKGROUND = "background"

#: Name of the id -> category table written beside the PNGs by :func:`coco_to_masks`.
INSTANCES_CSV = "instances.csv"

_EIGHT = np.ones((3, 3), bool)  # 8-connectivity for scipy.ndimage.label
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_MAX_UINT16 = 65535


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColourClass:
    """One entry of ``mask_classes``: a colour and the classes it stands for (one class; several
    for an overlap colour; none for background)."""

    colour: tuple[int, int, int]
    names: tuple[str, ...]


@dataclass
class MaskOptions:
    """Validated mask options of one conversion (see :func:`mask_options`)."""

    kind: str | None
    colours: list[ColourClass] | None
    class_name: str
    split_touching: bool
    min_distance: int
    class_names: list[str] = field(default_factory=list)  # categories, in id order


def parse_mask_classes(text: str | Mapping[Any, str]) -> list[ColourClass]:
    """Parse ``"255,0,0=vesicle;0,255,0=hole;255,255,0=vesicle+hole"``.

    Also takes a mapping ``{(255, 0, 0): "vesicle", "0,255,0": "hole"}``. Colours are three
    integers 0..65535 (0..255 for 8-bit masks); names are non-empty and free of ``;=+``; ``+``
    joins the classes of an overlap colour; the name :data:`BACKGROUND` marks a background
    colour.

    Raises
    ------
    ConversionError
        Naming the entry that cannot be read, or a colour given twice.
    """
    flag = "--mask-classes"
    if isinstance(text, Mapping):
        entries = [(k if isinstance(k, str) else ",".join(map(str, k)), v) for k, v in
                   text.items()]
        shown = repr(dict(text))
    elif isinstance(text, str):
        parts = [p.strip() for p in text.split(";") if p.strip()]
        entries = []
        for part in parts:
            colour, sep, names = part.partition("=")
            if not sep:
                raise ConversionError(
                    f"{flag} {text!r}: entry {part!r} has no '='; write colour=class pairs "
                    "separated by ';', e.g. \"255,0,0=vesicle;0,255,0=hole\"."
                )
            entries.append((colour, names))
        shown = repr(text)
    else:
        raise ConversionError(f"{flag}: expected text such as \"255,0,0=vesicle\", got "
                              f"{type(text).__name__}.")
    if not entries:
        raise ConversionError(
            f"{flag} {shown}: no colours given; write colour=class pairs separated by ';', "
            "e.g. \"255,0,0=vesicle;0,255,0=hole\"."
        )
    out: list[ColourClass] = []
    seen: dict[tuple[int, int, int], str] = {}
    for colour_text, names_text in entries:
        entry = f"{colour_text}={names_text}"
        values = [v.strip() for v in str(colour_text).split(",")]
        if len(values) != 3 or not all(re.fullmatch(r"\d{1,5}", v) for v in values) or any(
            int(v) > _MAX_UINT16 for v in values
        ):
            raise ConversionError(
                f"{flag} {shown}: colour {str(colour_text).strip()!r} in {entry!r} is not "
                "R,G,B: three whole numbers 0..255 separated by commas, e.g. 255,0,0."
            )
        colour = (int(values[0]), int(values[1]), int(values[2]))
        names = [n.strip() for n in str(names_text).split("+")]
        if not all(names) or any(re.search(r"[;=]", n) for n in names):
            raise ConversionError(
                f"{flag} {shown}: class name in {entry!r} is empty or holds ';' or '='; write "
                "R,G,B=name, or R,G,B=name1+name2 for an overlap colour."
            )
        names = list(dict.fromkeys(names))
        if BACKGROUND in names and len(names) > 1:
            raise ConversionError(
                f"{flag} {shown}: {entry!r} joins {BACKGROUND!r} with a class; a background "
                "colour cannot also be an object."
            )
        if colour in seen:
            raise ConversionError(
                f"{flag} {shown}: colour {','.join(map(str, colour))} is given twice "
                f"({seen[colour]!r} and {entry!r}); give each colour once."
            )
        seen[colour] = entry
        out.append(ColourClass(colour, () if names == [BACKGROUND] else tuple(names)))
    if not any(c.names for c in out):
        raise ConversionError(f"{flag} {shown}: every colour is background; name a class.")
    return out


def mask_options(
    *,
    kind: str | None = None,
    mask_classes: str | Mapping[Any, str] | None = None,
    class_name: str | None = None,
    classes: Sequence[str] | None = None,
    split_touching: bool = False,
    split_min_distance: int | None = None,
) -> MaskOptions:
    """Check the mask options together, before any file is read; fix the category names.

    Raises
    ------
    ConversionError
        For an unknown kind, bad ``mask_classes`` syntax, options that do not go together
        (``mask_classes`` without ``rgb``, ``split_touching`` on instance maps), a class name
        that is not in ``classes``.
    """
    if kind is not None and kind not in MASK_KINDS:
        raise ConversionError(
            f"--mask-kind {kind!r}: expected one of {', '.join(MASK_KINDS)}."
        )
    colours = parse_mask_classes(mask_classes) if mask_classes is not None else None
    if colours is not None and kind not in (None, "rgb"):
        raise ConversionError(
            f"--mask-classes is for colour masks (--mask-kind rgb), not --mask-kind {kind}; "
            "drop one of them."
        )
    if kind == "rgb" and colours is None:
        raise ConversionError(
            "--mask-kind rgb needs --mask-classes, the class of each colour, e.g. "
            "\"255,0,0=vesicle;0,255,0=hole\"."
        )
    if colours is not None:
        kind = "rgb"
    if split_min_distance is not None and (
        isinstance(split_min_distance, bool)
        or not isinstance(split_min_distance, int | np.integer)
        or split_min_distance < 1
    ):
        raise ConversionError(
            f"--split-min-distance is {split_min_distance!r}; expected a whole number of pixels "
            ">= 1."
        )
    if split_min_distance is not None and not split_touching:
        raise ConversionError("--split-min-distance needs --split-touching.")
    if split_touching:
        if kind in ("instances", "rgb"):
            raise ConversionError(
                f"--split-touching cuts binary masks; it does not apply to --mask-kind {kind} "
                "(instance maps already separate their objects)."
            )
        if kind is None:
            logger.info("--split-touching: reading the masks as binary masks.")
        kind = "binary"
    if class_name is not None:
        class_name = str(class_name).strip()
        if not class_name or re.search(r"[;=+]", class_name):
            raise ConversionError(
                f"--mask-class-name {class_name!r}: expected a class name (not empty, without "
                "';', '=' or '+')."
            )
        if kind == "rgb":
            raise ConversionError(
                "--mask-class-name is for instance and binary masks; colour masks take their "
                "class names from --mask-classes."
            )
    if colours is not None:
        found = list(dict.fromkeys(n for c in colours for n in c.names))
    elif class_name is not None:
        found = [class_name]
    elif classes is not None and len(classes) == 1:
        found = [classes[0]]
    elif classes is not None:
        raise ConversionError(
            f"--classes lists {len(classes)} classes, but instance and binary masks have one; "
            "pass --mask-class-name NAME to say which, or use colour masks (--mask-kind rgb)."
        )
    else:
        found = [DEFAULT_CLASS_NAME]
    if classes is not None:
        missing = [n for n in found if n not in classes]
        if missing:
            raise ConversionError(
                f"class {', '.join(map(repr, missing))} is not in the --classes file (known: "
                f"{', '.join(classes)}); add it there or correct the mask options."
            )
        names = list(classes)
    else:
        names = found
    return MaskOptions(
        kind=kind,
        colours=colours,
        class_name=found[0] if colours is None else "",
        split_touching=split_touching,
        min_distance=int(split_min_distance or DEFAULT_MIN_DISTANCE),
        class_names=names,
    )


@dataclass
class _Object:
    label: str
    crop: np.ndarray  # bool (h, w), tight around the object
    top: int
    left: int
    mask_id: int | None = None


def _annotation(obj: _Object, height: int, width: int) -> dict[str, Any]:
    # imported here: the emdet.inference package loads the predictor and detectron2
    from emdet.data.rle import MaskCrop, crop_to_rle

    h, w = obj.crop.shape
    ann: dict[str, Any] = {
        "label": obj.label,
        "bbox": [float(obj.left), float(obj.top), float(w), float(h)],
        "area": float(np.count_nonzero(obj.crop)),
        # from the crop alone: encoding each object from the full image costs objects x
        # pixels (EMPS map, 512 x 520 px, 128 objects, 2 shared cores: 0.023 s with
        # mask.encode of full masks, 0.006 s from the crops)
        "segmentation": crop_to_rle(MaskCrop(obj.top, obj.left, obj.crop), height, width),
        "iscrowd": 0,
    }
    if obj.mask_id is not None:
        ann["mask_id"] = int(obj.mask_id)
    return ann


def _objects_of_labels(
    labels: np.ndarray, name: str, *, ids: np.ndarray | None = None
) -> list[_Object]:
    """One object per label 1..N of a label image (``ids[k-1]`` is label k's ``mask_id``)."""
    from scipy import ndimage

    out = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        crop = labels[sl] == k
        out.append(_Object(name, crop, sl[0].start, sl[1].start,
                           None if ids is None else int(ids[k - 1])))
    return out


# --------------------------------------------------------------------------------------------
# Reading one mask
# --------------------------------------------------------------------------------------------
def _read_mask(path: Path, *, palette_colours: bool = False) -> np.ndarray:
    """The mask's pixels: ``(H, W)`` or ``(H, W, C)``, as stored; palette PNGs as their
    indices, or as their colours with ``palette_colours``."""
    from emdet.data.io import read_image

    try:
        data, meta = read_image(path, keep_channels=True)
    except Exception as exc:  # noqa: BLE001 - image readers raise many types
        raise AnnotationError(path, f"cannot be read as a mask: {exc}") from None
    if meta.n_frames > 1:
        raise AnnotationError(
            path,
            f"has {meta.n_frames} frames; a mask is one 2-D image.",
            hint="Save one mask per image (a stack needs one mask file per frame).",
        )
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if path.suffix.lower() == ".png" and data.ndim == 3 and not palette_colours:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im)  # palette indices, the ids tools store in them
    if data.ndim == 3 and data.shape[-1] not in (2, 3, 4):
        raise AnnotationError(
            path, f"has shape {data.shape}; expected a 2-D mask (H, W) or colour (H, W, 3)."
        )
    return data


def _drop_alpha(data: np.ndarray) -> np.ndarray:
    """Colour channels without alpha; transparent pixels (alpha 0) become 0 (background)."""
    if data.ndim != 3 or data.shape[-1] not in (2, 4):
        return data
    colour, alpha = data[..., :-1], data[..., -1]
    if alpha.min() != alpha.max():
        colour = np.where((alpha == 0)[..., None], 0, colour)
    return colour[..., 0] if colour.shape[-1] == 1 else colour


def _grey(data: np.ndarray) -> np.ndarray | None:
    """The one channel of a mask (colour stored with equal channels too); None if coloured."""
    data = _drop_alpha(data)
    if data.ndim == 2:
        return data
    first = data[..., :1]
    if np.array_equal(np.broadcast_to(first, data.shape), data):
        return data[..., 0]
    return None


def _colour_summary(colour: np.ndarray, limit: int = 5) -> tuple[int, str]:
    """``(number of distinct colours, "R,G,B (n px), ...")`` of an ``(N, 3)`` pixel list,
    largest first."""
    values, counts = np.unique(colour.reshape(-1, colour.shape[-1]), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    shown = ", ".join(f"{','.join(map(str, values[i]))} ({int(counts[i])} px)" for i in order)
    return len(values), shown + (", ..." if len(values) > limit else "")


def _pixels(n: Any) -> str:
    return f"{int(n)} pixel{'' if int(n) == 1 else 's'}"


def _as_ids(grey: np.ndarray, path: Path) -> np.ndarray:
    """Integer ids >= 0 of a one-channel mask; float masks must hold whole numbers."""
    if grey.dtype == bool:
        return grey.astype(np.uint8)
    if grey.dtype.kind == "c":
        raise AnnotationError(path, f"holds complex numbers ({grey.dtype}); a mask holds ids.")
    if grey.dtype.kind == "f":
        bad = ~np.isfinite(grey)
        if bad.any():
            y, x = np.argwhere(bad)[0]
            raise AnnotationError(
                path,
                f"holds {_pixels(bad.sum())} that are not finite numbers (NaN or infinity), "
                f"e.g. at x={x}, y={y}; a mask holds whole-number ids.",
            )
        frac = grey != np.round(grey)
        if frac.any():
            y, x = np.argwhere(frac)[0]
            raise AnnotationError(
                path,
                f"is a float mask with {_pixels(frac.sum())} that are not whole numbers, e.g. "
                f"{float(grey[y, x]):g} at x={x}, y={y}; ids must be whole numbers.",
                hint="Save the mask as an integer (8/16/32-bit) image; a mask that was resized "
                "or smoothed no longer holds ids.",
            )
        if grey.size and float(grey.max()) >= 2.0**53:
            raise AnnotationError(path, f"has ids up to {float(grey.max()):g}, beyond exact "
                                        "whole numbers in a float mask.")
        grey = grey.astype(np.int64)
    if grey.dtype.kind == "i" and grey.size and grey.min() < 0:
        neg = grey < 0
        y, x = np.argwhere(neg)[0]
        raise AnnotationError(
            path,
            f"has {_pixels(neg.sum())} with negative ids, e.g. {int(grey[y, x])} at x={x}, "
            f"y={y}; ids are 0 (background) or positive.",
        )
    if grey.dtype.kind not in "ui":
        raise AnnotationError(path, f"has pixels of type {grey.dtype}; a mask holds ids.")
    return grey


def _auto_kind(data: np.ndarray, path: Path) -> tuple[str, np.ndarray | None]:
    """``("instances" | "binary" | "empty", ids)`` for a one-channel mask; a colour mask is an
    error here (it needs ``mask_classes``)."""
    grey = _grey(data)
    if grey is None:
        n, shown = _colour_summary(_drop_alpha(data))
        raise AnnotationError(
            path,
            f"is a colour mask ({n} colours: {shown}); instance and binary masks hold one value "
            "per pixel.",
            hint="Pass --mask-kind rgb with --mask-classes naming the class of each colour, "
            "e.g. --mask-classes \"255,0,0=vesicle;0,255,0=hole\".",
        )
    ids = _as_ids(grey, path)
    if not ids.any():
        return "empty", ids
    if ids.dtype.itemsize >= 2 and grey.dtype.kind in "ui":
        return "instances", ids
    first = ids.flat[np.flatnonzero(ids)[0]]
    return ("instances" if np.any((ids != 0) & (ids != first)) else "binary"), ids


def _instances(ids: np.ndarray, name: str) -> list[_Object]:
    """One object per non-zero id, in increasing id order, ``mask_id`` the id."""
    top = int(ids.max()) if ids.size else 0
    if top == 0:
        return []
    if top <= max(_MAX_UINT16, ids.size):  # label the ids directly
        labels = ids if ids.dtype.itemsize <= 4 else ids.astype(np.int64)
        return _objects_of_labels(labels, name, ids=np.arange(1, top + 1))
    values, inverse = np.unique(ids, return_inverse=True)  # sparse huge ids: number them
    compact = inverse.reshape(ids.shape).astype(np.int64)
    if values[0] != 0:
        compact += 1
        values = np.r_[0, values]
    return _objects_of_labels(compact, name, ids=values[1:])


def _components(fg: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, _ = ndimage.label(fg, structure=_EIGHT)
    return labels


def _split_touching(fg: np.ndarray, min_distance: int) -> np.ndarray:
    """Labels of ``fg`` with touching round objects cut apart (distance-transform watershed)."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    cc = _components(fg)
    if cc.max() == 0:
        return cc
    dist = ndimage.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=cc, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg, connectivity=2)
    lost = fg & (labels == 0)  # a component without a seed keeps itself whole
    if lost.any():
        extra = _components(lost)
        labels = np.where(lost, extra + labels.max(), labels)
        labels[~fg] = 0
    # watershed basins are connected; relabel 1..N in order of first pixel
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def _binary(ids: np.ndarray, name: str, opts: MaskOptions) -> list[_Object]:
    fg = ids != 0
    labels = _split_touching(fg, opts.min_distance) if opts.split_touching else _components(fg)
    return _objects_of_labels(labels, name)


def _colour_codes(colour: np.ndarray) -> np.ndarray:
    c = colour.astype(np.int64)
    return (c[..., 0] << 32) | (c[..., 1] << 16) | c[..., 2]


def _touching(regions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(K, 2)`` unique pairs ``(region, label)`` of 8-neighbouring non-zero pixels."""
    h, w = regions.shape
    pairs = []
    for dy, dx in _NEIGHBOURS:
        a = regions[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
        b = labels[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
        both = (a > 0) & (b > 0)
        pairs.append(np.stack([a[both], b[both]], axis=1))
    return np.unique(np.concatenate(pairs), axis=0)


def _rgb(data: np.ndarray, path: Path, opts: MaskOptions) -> list[_Object]:
    from scipy import ndimage

    assert opts.colours is not None
    colour = _drop_alpha(data)
    if colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=-1)
    if colour.dtype.kind not in "uib":
        raise AnnotationError(path, f"has pixels of type {colour.dtype}; a colour mask holds "
                                    "whole numbers 0..255 per channel.")
    codes = _colour_codes(colour)
    table = {int(_colour_codes(np.array(c.colour))): c for c in opts.colours}
    if (0, 0, 0) not in {c.colour for c in opts.colours}:
        table[0] = ColourClass((0, 0, 0), ())
    values, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.reshape(codes.shape)
    unknown = [i for i, v in enumerate(values.tolist()) if v not in table]
    if unknown:
        bad = np.isin(inverse, unknown)
        n, shown = _colour_summary(colour[bad])
        raise AnnotationError(
            path,
            f"has {n} colour{'s' if n > 1 else ''} not in --mask-classes: {shown}.",
            hint="Add them to --mask-classes (R,G,B=class, or =background); many rare colours "
            "mean the mask was anti-aliased, resized or saved as JPEG, and no longer holds exact "
            "colours.",
        )
    entry_of = [table[v] for v in values.tolist()]
    objects: list[_Object] = []
    for name in opts.class_names:
        pure = [i for i, c in enumerate(entry_of) if c.names == (name,)]
        fg = np.isin(inverse, pure) if pure else np.zeros(codes.shape, bool)
        labels = _components(fg)
        n_pure = int(labels.max())
        extra: dict[int, list[tuple[np.ndarray, tuple[slice, slice], int]]] = {}
        new: list[_Object] = []
        for i, c in enumerate(entry_of):
            if len(c.names) < 2 or name not in c.names:
                continue
            regions, _ = ndimage.label(inverse == i, structure=_EIGHT)
            if regions.max() == 0:
                continue
            slices = ndimage.find_objects(regions)
            pairs = _touching(regions, labels) if n_pure else np.zeros((0, 2), int)
            touched = set(pairs[:, 0].tolist())
            for r, lab in pairs.tolist():
                extra.setdefault(lab, []).append((regions, slices[r - 1], r))
            for r, sl in enumerate(slices, start=1):
                if r not in touched:
                    new.append(_Object(name, regions[sl] == r, sl[0].start, sl[1].start))
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            parts = [(labels, sl, k), *extra.get(k, [])]
            y0 = min(p[1][0].start for p in parts)
            y1 = max(p[1][0].stop for p in parts)
            x0 = min(p[1][1].start for p in parts)
            x1 = max(p[1][1].stop for p in parts)
            box = (slice(y0, y1), slice(x0, x1))
            crop = np.zeros((y1 - y0, x1 - x0), bool)
            for lab_img, _, value in parts:
                crop |= lab_img[box] == value
            objects.append(_Object(name, crop, y0, x0))
        objects.extend(new)
    return objects


# --------------------------------------------------------------------------------------------
# The folder
# --------------------------------------------------------------------------------------------
def _image_index(images_dir: Path) -> dict[str, list[Path]]:
    """``stem -> images`` in ``images_dir`` (ordered as :data:`IMAGE_EXTENSIONS`)."""
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    index: dict[str, list[Path]] = {}
    for p in images_dir.iterdir():
        ext = p.suffix.lower()
        if ext in rank and not p.name.startswith(".") and p.is_file():
            index.setdefault(p.stem, []).append(p)
    for paths in index.values():
        paths.sort(key=lambda p: (rank[p.suffix.lower()], p.name))
    return index


def _pair(mask: Path, index: Mapping[str, list[Path]]) -> str | None:
    """The image stem a mask pairs with: its own, else without a :data:`MASK_SUFFIXES` ending."""
    stem = mask.stem
    if stem in index:
        return stem
    lower = stem.lower()
    for suffix in MASK_SUFFIXES:
        if lower.endswith(suffix) and len(stem) > len(suffix) and stem[: -len(suffix)] in index:
            return stem[: -len(suffix)]
    return None


def _image_info(image: Path, mask: Path) -> tuple[int, int, float | None, str | None]:
    """``(width, height, pixel_size, unit)`` of a mask's image."""
    from emdet.data import io as emio

    try:
        height, width = emio.image_size(image)
    except Exception as exc:  # noqa: BLE001 - image readers raise many types
        raise AnnotationError(
            mask,
            f"its image {image} cannot be used: {str(exc) or type(exc).__name__}",
            hint="Replace the image, or remove the mask.",
        ) from None
    pixel_size, unit = image_calibration(image, source=mask)
    return int(width), int(height), pixel_size, unit


def _convert_one(
    mask: Path, data: np.ndarray, kind: str, opts: MaskOptions, ids: np.ndarray | None
) -> list[_Object]:
    if kind == "rgb":
        return _rgb(data, mask, opts)
    if ids is None:
        grey = _grey(data)
        if grey is None:
            n, shown = _colour_summary(_drop_alpha(data))
            raise AnnotationError(
                mask,
                f"is a colour mask ({n} colours: {shown}), but --mask-kind {kind} expects one "
                "value per pixel.",
                hint="Pass --mask-kind rgb with --mask-classes for colour masks, or save the "
                "mask as a greyscale/16-bit image.",
            )
        ids = _as_ids(grey, mask)
    if kind == "binary":
        return _binary(ids, opts.class_name, opts)
    return _instances(ids, opts.class_name)


def read_masks(
    input_dir: Path,
    images_dir: Path,
    opts: MaskOptions,
    run: Run,
    *,
    exclude: Iterable[Path] = (),
    progress: bool = False,
) -> list[tuple[ImageRecord, list[dict[str, Any]]]]:
    """Read every mask in ``input_dir`` against its image in ``images_dir``.

    Returns ``(record, annotations)`` per mask in file-name order; each annotation has
    ``label``, ``bbox``, ``area``, ``segmentation`` (RLE), ``iscrowd`` (and ``mask_id`` for
    instance maps). Problems of one mask go through ``run.problem`` (raised, or skipped with
    ``skip_invalid``).
    """
    skip = set(exclude)
    candidates = sorted(
        p for p in input_dir.iterdir()
        if p.suffix.lower() in MASK_EXTENSIONS + LOSSY_EXTENSIONS
        and not p.name.startswith(".") and p.is_file() and p.resolve() not in skip
    )
    if not candidates:
        raise ConversionError(
            f"{input_dir}: no mask files ({', '.join(MASK_EXTENSIONS)}) found. Check --input "
            "(the folder of label images) and --format."
        )
    index = _image_index(images_dir)
    if not index:
        raise ConversionError(
            f"{images_dir}: no images found. Check --images (the folder of the images the "
            "masks label)."
        )
    paired: list[tuple[Path, Path]] = []
    owner: dict[str, Path] = {}
    for mask in candidates:
        try:
            if mask.suffix.lower() in LOSSY_EXTENSIONS:
                raise AnnotationError(
                    mask,
                    "is a JPEG; JPEG compression changes the pixel values at every edge, so it "
                    "cannot hold exact ids or colours.",
                    hint="Export the mask as PNG or TIFF.",
                )
            stem = _pair(mask, index)
            if stem is None:
                raise AnnotationError(
                    mask,
                    f"has no image: no file named {mask.stem}.* (or without a mask ending such "
                    f"as _mask) with an image extension in {images_dir}.",
                    hint="Put its image in --images with the same name, or remove the mask.",
                )
            if stem in owner:
                raise AnnotationError(
                    mask,
                    f"its image {index[stem][0].name} already has the mask {owner[stem].name}.",
                    hint="Keep one mask per image.",
                )
        except AnnotationError as err:
            run.problem(err)
            continue
        owner[stem] = mask
        if len(index[stem]) > 1:
            logger.info("%s: several images named %s (%s); using %s.", mask.name, stem,
                        ", ".join(p.name for p in index[stem]), index[stem][0].name)
        paired.append((mask, index[stem][0].resolve()))
    unmasked = sorted(s for s in index if s not in owner)
    if unmasked:
        shown = ", ".join(index[s][0].name for s in unmasked[:10])
        run.warn(
            f"{images_dir}: {len(unmasked)} image(s) without a mask are left out: {shown}"
            + (" ..." if len(unmasked) > 10 else "")
            + ". An image without objects needs an all-zero mask to be kept."
        )

    results: list[tuple[ImageRecord, list[_Object], str]] = []
    for mask, image in tqdm(paired, desc="Converting masks", unit="mask", disable=not progress):
        try:
            width, height, pixel_size, unit = _image_info(image, mask)
            data = _read_mask(mask, palette_colours=opts.kind == "rgb")
            if data.shape[:2] != (height, width):
                raise AnnotationError(
                    mask,
                    f"is {data.shape[1]} x {data.shape[0]} px, but its image {image.name} is "
                    f"{width} x {height} px.",
                    hint="A mask must have its image's size; export it from the full-size "
                    "image (not a resized or cropped view).",
                )
            ids = None
            kind = opts.kind
            if kind is None:
                kind, ids = _auto_kind(data, mask)
            objects = _convert_one(mask, data, "instances" if kind == "empty" else kind, opts, ids)
        except AnnotationError as err:
            run.problem(err)
            continue
        rec = ImageRecord(mask, image, width, height, pixel_size=pixel_size, unit=unit)
        results.append((rec, objects, kind))

    kind = opts.kind
    if kind is None:
        kinds = {k for _, _, k in results}
        kind = "instances" if "instances" in kinds or not kinds - {"empty"} else "binary"
        why = ("16-bit or wider masks, or several ids in a mask" if "instances" in kinds
               else "every mask holds 0 and one other value" if kind == "binary"
               else "every mask is empty")
        logger.info("mask kind: %s (chosen from the masks: %s; --mask-kind sets it)", kind, why)
        if kind == "instances" and "binary" in kinds:
            redo = [i for i, (_, _, k) in enumerate(results) if k == "binary"]
            logger.info("%d mask(s) with a single id are read as instance maps too (one object "
                        "per id); pass --mask-kind binary to split them into connected "
                        "components.", len(redo))
            for i in redo:
                rec, _, _ = results[i]
                ids = _as_ids(_grey(_read_mask(rec.source)), rec.source)
                results[i] = (rec, _instances(ids, opts.class_name), kind)
    else:
        logger.info("mask kind: %s (from the options)", kind)
    run.info["mask_kind"] = kind
    if kind == "binary":
        run.info["connectivity"] = 8
        if opts.split_touching:
            run.info["split_touching"] = {"min_distance": opts.min_distance}
    out = []
    for rec, objects, _ in results:
        if not objects:
            run.warn(f"{rec.source}: no objects (every pixel is background); its image "
                     f"{rec.image.name} is kept without annotations.")
        out.append((rec, [_annotation(o, rec.height, rec.width) for o in objects]))
    return out


# --------------------------------------------------------------------------------------------
# COCO -> instance-ID PNGs
# --------------------------------------------------------------------------------------------
def _load_coco(
    coco: str | os.PathLike | Mapping[str, Any], dataset: str | os.PathLike | Mapping[str, Any]
    | None
) -> tuple[dict[str, Any], str]:
    """The COCO dict (detections merged with ``dataset``), read strictly and checked
    (:func:`emdet.data.cocofile.read_coco` / :func:`~emdet.data.cocofile.check_coco`)."""
    from emdet.data.cocofile import CocoFormatError, check_coco, read_coco

    def read(path: Path, flag: str) -> dict[str, Any]:
        try:
            return read_coco(path)
        except FileNotFoundError:
            raise ConversionError(f"{path}: COCO file not found. Check {flag}.") from None
        except CocoFormatError as exc:
            hint = (" Pass --dataset with the COCO file of those images (e.g. the test-set "
                    "JSON)." if "bare list" in str(exc) and flag == "--input" else "")
            raise ConversionError(f"{exc}.{hint}") from None
        except OSError as exc:
            raise ConversionError(f"{path}: cannot be read ({exc.strerror or exc}). Check "
                                  f"{flag}.") from None

    name = str(coco) if isinstance(coco, str | os.PathLike) else "the COCO input"
    if dataset is None:
        if isinstance(coco, str | os.PathLike):
            return read(Path(coco), "--input"), name
        data = coco
    else:
        base = read(Path(dataset), "--dataset") if isinstance(dataset, str | os.PathLike) \
            else dict(dataset)
        dets: Any = load_json(Path(coco), "detections file") if isinstance(
            coco, str | os.PathLike) else coco
        if isinstance(dets, Mapping):
            logger.warning("%s: is a COCO file with its own images; --dataset is not used.", name)
            data = dets
        else:
            data = {"images": base.get("images"), "categories": base.get("categories"),
                    "info": base.get("info", {}), "annotations": dets}
    try:
        return check_coco(data, name), name
    except CocoFormatError as exc:
        raise ConversionError(f"{exc}.") from None


def _png_name(img: Mapping[str, Any], where: str) -> str:
    fname = img.get("file_name")
    if not isinstance(fname, str) or not fname.strip() or "\x00" in fname:
        raise ConversionError(
            f"{where}: 'file_name' is {fname!r:.60}; the masks are named after the image, so "
            "every image needs its file name."
        )
    stem = PurePosixPath(fname.replace("\\", "/")).stem
    if stem in ("", ".", ".."):
        raise ConversionError(
            f"{where}: 'file_name' {fname!r:.80} has no usable image name to name the mask after."
        )
    if int(img.get("n_frames") or 1) > 1 and img.get("frame") is not None:
        stem += f"_f{int(img['frame']):04d}"
    return stem + ".png"


def coco_to_masks(
    coco: str | os.PathLike | Mapping[str, Any],
    output_dir: str | os.PathLike,
    *,
    dataset: str | os.PathLike | Mapping[str, Any] | None = None,
    min_score: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Write one 16-bit instance-ID PNG per image of a COCO file (e.g. ``predictions.json``),
    for Fiji, napari or any tool that reads label images.

    Each image gets ``<output_dir>/<image stem>.png`` (``<stem>_f0003.png`` for frame 3 of a
    stack): uint16, 0 background, ids 1..N in the order of the image's annotations in the file.
    Objects are drawn in increasing ``score`` (an annotation without one counts as 1.0; equal
    scores in file order), so where objects overlap the pixels go to the higher-scoring one
    (with equal scores, the later one). ``instances.csv`` beside them maps ``file, id`` to
    ``image_id, annotation_id, category_id, category, score, pixels`` (pixels drawn; 0 for an
    object hidden by higher-scoring ones or without segmentation). Polygons and RLE (compressed
    or not) are drawn; annotations with only a box are listed, not drawn, with a warning.

    Parameters
    ----------
    coco : path or dict
        A COCO file, or a list of detections (``coco_instances_results.json``) with ``dataset``.
    output_dir : path
        Folder for the PNGs and ``instances.csv``; created if needed.
    dataset : path or dict, optional
        COCO file with the images and categories of a list of detections.
    min_score : float, optional
        Leave out annotations whose ``score`` is below this.
    overwrite : bool
        Replace existing PNGs / ``instances.csv``; otherwise they are an error.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Path
        The PNGs in image order, then ``instances.csv``; written all or none.

    Raises
    ------
    ConversionError
        Before anything is written: anything :func:`emdet.data.cocofile.check_coco` refuses,
        an image without ``file_name``, two images that would share a PNG name, more than
        65535 annotations on one image, existing outputs without ``overwrite``.
    """
    import imagecodecs

    if min_score is not None and not math.isfinite(min_score):
        raise ConversionError(f"--min-score is {min_score}; expected a finite number (0..1).")
    out_dir = Path(output_dir)
    check_output_path(out_dir, "--output", folder=True, what="the instance-ID PNGs")
    data, name = _load_coco(coco, dataset)
    cats = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[Any, list[Mapping[str, Any]]] = {img["id"]: [] for img in data["images"]}
    for ann in data.get("annotations") or []:
        if min_score is not None and float(ann.get("score", 1.0)) < min_score:
            continue
        by_image[ann["image_id"]].append(ann)

    files: list[tuple[Path, bytes]] = []
    rows: list[list[Any]] = []
    seen: dict[Path, str] = {}
    undrawn = 0
    for i, img in enumerate(tqdm(data["images"], desc="Writing masks", unit="image",
                                 disable=not progress)):
        where = f"{name}: images[{i}] (id {img['id']!r})"
        target = out_dir / _png_name(img, where)
        if target in seen:
            raise ConversionError(
                f"{name}: images {seen[target]!r} and {img['file_name']!r} would both be written "
                f"to {target}; masks are named after the image, so image names must differ."
            )
        seen[target] = img["file_name"]
        anns = by_image[img["id"]]
        if len(anns) > _MAX_UINT16:
            raise ConversionError(
                f"{where}: has {len(anns)} annotations, more than the 65535 ids a 16-bit mask "
                "holds; raise --min-score to keep fewer."
            )
        height, width = int(img["height"]), int(img["width"])
        ids = np.zeros((height, width), np.uint16)
        scores = [float(a.get("score", 1.0)) for a in anns]
        for k in sorted(range(len(anns)), key=lambda j: scores[j]):
            seg = anns[k].get("segmentation")
            if not seg:  # a box-only annotation
                undrawn += 1
                continue
            from emdet.data.rle import segmentation_to_crop  # see _annotation

            crop = segmentation_to_crop(seg, height, width)
            h, w = crop.mask.shape
            ids[crop.y0 : crop.y0 + h, crop.x0 : crop.x0 + w][crop.mask] = k + 1
        pixels = np.bincount(ids.ravel(), minlength=len(anns) + 1)
        for k, ann in enumerate(anns):
            rows.append([target.name, k + 1, img["id"], ann.get("id", ""), ann["category_id"],
                         cats[ann["category_id"]], ann.get("score", ""), int(pixels[k + 1])])
        files.append((target, bytes(imagecodecs.png_encode(ids))))
    if undrawn:
        logger.warning("%s: %d annotation(s) have no segmentation (box only) and are not drawn; "
                       "%s lists them with 0 pixels.", name, undrawn, INSTANCES_CSV)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "id", "image_id", "annotation_id", "category_id", "category",
                     "score", "pixels"])
    writer.writerows(rows)
    files.append((out_dir / INSTANCES_CSV, buf.getvalue().encode("utf-8")))
    refuse_existing([t for t, _ in files], overwrite)
    write_outputs(files)
    return [t for t, _ in files]
