"""COCO files from anywhere, checked before any pixel is drawn.

COCO files come from other people's tools (CVAT, labelme exports, colleagues' predictions) and
are not trusted. pycocotools trusts them: a polygon with one NaN vertex or one coordinate of
1e12 makes ``frPyObjects`` allocate memory proportional to the coordinate (a 300-byte file grew
a process to 24 GB), and RLE counts that add up to more than ``height x width`` make
``decode`` write past its buffer. :func:`check_coco` refuses such files with a message naming
the file and the field (``annotations[3] (id 17): segmentation[0][5]``) before anything is
decoded; :func:`read_coco` reads strict JSON (``NaN`` and ``Infinity`` literals are refused).

What is checked
---------------
* ``images``, ``categories`` (and ``annotations`` when present) are lists of objects;
* image ``id`` (int or str, unique), ``width``/``height`` (positive integers, at most
  :func:`emdet.data.io.max_image_pixels` pixels), optional ``file_name`` (text),
  ``pixel_size`` (finite, > 0), ``unit`` (text), ``frame`` (integer >= 0);
* category ``id`` (int, unique) and ``name`` (text);
* annotation ``image_id``/``category_id`` that exist, unique ``id`` when given, and every
  number finite: ``bbox`` (4, width/height >= 0), ``rbox`` (5, w/h >= 0), ``point`` (2),
  ``score``; polygon vertices within one image size of the image; RLE ``size`` equal to the
  image's ``[height, width]`` and counts (compressed or not) that are valid and sum to
  ``height x width``.

Crowd annotations (``iscrowd: 1``): in COCO they mark regions of many objects, left out of
training and ignored by evaluation. CVAT writes *every* mask object with ``iscrowd: 1``, so a
CVAT file would train and score nothing. The rule (:func:`crowd_as_objects`): a file whose
annotations are **all** crowd is read as objects (``iscrowd`` 0) with a warning; a file that
mixes 0 and 1 keeps COCO's meaning.

Frames of a stack: an image entry with ``frame`` (and ``n_frames`` > 1) is that frame of the
multi-frame file ``file_name``, as ``tools/predict.py`` writes them. Training, evaluation,
statistics and the converters all read it with :func:`image_frame` and tell images apart by
:func:`image_key`, ``(file_name, frame)``, so the frames of one file never collide.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emdet.utils import strictjson

__all__ = ["CocoFormatError", "check_annotation", "check_coco", "crowd_as_objects", "image_frame",
           "image_key", "read_coco", "rle_counts"]

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()


def image_frame(image: Mapping[str, Any]) -> int:
    """The frame of a multi-frame file that a COCO image entry is (0 for a single image)."""
    return int(image.get("frame") or 0)


def image_key(image: Mapping[str, Any]) -> tuple[str, int]:
    """``(file_name, frame)``: what tells COCO images of files and of frames apart."""
    return str(image.get("file_name", "")), image_frame(image)


def crowd_as_objects(annotations: list, source: str | os.PathLike = "") -> bool:
    """Apply the crowd rule (module docstring) in place: when every annotation has
    ``iscrowd: 1`` (CVAT's masks), set them to 0 and warn once per ``source``. Returns whether
    it changed anything."""
    if not annotations or not all(isinstance(a, Mapping) and a.get("iscrowd", 0) == 1
                                  for a in annotations):
        return False
    for a in annotations:
        a["iscrowd"] = 0
    key = os.fspath(source)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(
            "%s: all %d annotations have iscrowd 1, as CVAT writes mask objects; they are read "
            "as objects (iscrowd 0). To mark crowd regions that training and evaluation "
            "ignore, keep the objects at iscrowd 0 and only those regions at 1.",
            key or "COCO data", len(annotations))
    return True


class CocoFormatError(ValueError):
    """A COCO file is malformed; the message names the file and the field."""


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _finite(x: Any) -> bool:
    return _is_number(x) and math.isfinite(float(x))


def _int_like(x: Any) -> bool:
    return _finite(x) and float(x) == int(x)


def read_coco(path: str | os.PathLike) -> dict[str, Any]:
    """Read and :func:`check_coco` a COCO file.

    Raises
    ------
    FileNotFoundError
        No such file.
    CocoFormatError
        Not UTF-8 JSON (with line and column), ``NaN``/``Infinity`` literals, or any problem
        :func:`check_coco` finds.
    """
    path = Path(path)
    if path.is_dir():
        raise CocoFormatError(f"{path} is a folder; give the COCO .json file")
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CocoFormatError(f"{path}: not a UTF-8 text file (byte {e.start}); is it a COCO "
                              ".json file?") from None
    try:
        data = strictjson.loads(text)
    except strictjson.StrictJSONError as e:
        raise CocoFormatError(f"{path}: {e.where} is {e.problem} in strict JSON; write a "
                              "finite number (or remove the object)") from None
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: "
                              f"{e.msg})") from None
    except RecursionError:
        raise CocoFormatError(f"{path}: JSON nested too deeply to be a COCO file") from None
    data = check_coco(data, path)
    crowd_as_objects(data.get("annotations") or [], path)
    return data


def rle_counts(counts: Any) -> list[int] | None:
    """RLE run lengths from COCO counts (a list of ints or pycocotools' compressed string);
    ``None`` if they are not valid. Hand-written (a port of pycocotools' ``rleFrString``)
    because pycocotools itself does not validate them before decoding."""
    if isinstance(counts, list):
        return counts if all(_int_like(c) and c >= 0 for c in counts) else None
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(counts, str):
        return None
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                return None  # the last number is cut off
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
            if k > 13:  # more than 64 bits
                return None
        if len(out) > 2:
            x += out[-2]
        if x < 0:
            return None
        out.append(x)
    return out


def _where(i: int, ann: Mapping[str, Any]) -> str:
    aid = ann.get("id")
    return f"annotations[{i}] (id {aid!r})" if aid is not None else f"annotations[{i}]"


def _check_polygons(seg: list, where: str, height: float, width: float) -> None:
    for j, poly in enumerate(seg):
        if not isinstance(poly, list):
            raise CocoFormatError(f"{where}: segmentation[{j}] must be a list of x, y numbers "
                                  f"(a polygon), got {type(poly).__name__}")
        if len(poly) % 2 or len(poly) < 6:
            raise CocoFormatError(f"{where}: segmentation[{j}] has {len(poly)} numbers; a polygon "
                                  "needs an even number, at least 6 (3 vertices)")
        for k, v in enumerate(poly):
            if not _finite(v):
                raise CocoFormatError(f"{where}: segmentation[{j}][{k}] is {v!r}, not a finite "
                                      "number")
            limit = width if k % 2 == 0 else height
            if not -limit <= v <= 2 * limit:
                axis = "x" if k % 2 == 0 else "y"
                raise CocoFormatError(
                    f"{where}: segmentation[{j}][{k}] ({axis} = {v:g}) lies more than one image "
                    f"size outside the {int(width)} x {int(height)} px image; the file is "
                    "corrupt or belongs to another image")


def _check_rle(seg: Mapping[str, Any], where: str, height: int, width: int) -> None:
    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_int_like(v) for v in size)):
        raise CocoFormatError(f"{where}: segmentation RLE needs 'size' = [height, width], got "
                              f"{size!r}")
    if [int(size[0]), int(size[1])] != [height, width]:
        raise CocoFormatError(f"{where}: segmentation RLE 'size' {size} is not the image's "
                              f"[height, width] = [{height}, {width}]")
    counts = rle_counts(seg.get("counts"))
    if counts is None:
        raise CocoFormatError(f"{where}: segmentation RLE 'counts' is not valid COCO run-length "
                              "encoding (a list of non-negative integers or pycocotools' string)")
    total = sum(counts)
    if total != height * width:
        raise CocoFormatError(f"{where}: segmentation RLE counts cover {total} pixels, but the "
                              f"image has {height} x {width} = {height * width}")


def _numbers(ann: Mapping[str, Any], key: str, n: int, where: str) -> list[float] | None:
    value = ann.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise CocoFormatError(f"{where}: '{key}' must be a list of {n} numbers, got {value!r}")
    for k, v in enumerate(value):
        if not _finite(v):
            raise CocoFormatError(f"{where}: {key}[{k}] is {v!r}, not a finite number")
    return [float(v) for v in value]


def check_annotation(ann: Any, i: int, image: Mapping[str, Any], *, need_bbox: bool = False,
                     source: str | os.PathLike = "") -> None:
    """Check the geometry and numbers of one annotation against its image (see module doc)."""
    prefix = f"{source}: " if source else ""
    if not isinstance(ann, Mapping):
        raise CocoFormatError(f"{prefix}annotations[{i}] is not an object")
    where = prefix + _where(i, ann)
    height, width = int(image["height"]), int(image["width"])
    bbox = _numbers(ann, "bbox", 4, where)
    if bbox is None and need_bbox:
        raise CocoFormatError(f"{where}: 'bbox' = [x, y, width, height] is missing")
    if bbox is not None and (bbox[2] < 0 or bbox[3] < 0):
        raise CocoFormatError(f"{where}: 'bbox' width and height must be >= 0, got {bbox}")
    rbox = _numbers(ann, "rbox", 5, where)
    if rbox is not None and (rbox[2] < 0 or rbox[3] < 0):
        raise CocoFormatError(f"{where}: 'rbox' w and h must be >= 0, got {rbox}")
    _numbers(ann, "point", 2, where)
    score = ann.get("score")
    if score is not None and not _finite(score):
        raise CocoFormatError(f"{where}: 'score' is {score!r}, not a finite number")
    seg = ann.get("segmentation")
    if seg is None or seg == []:
        return
    if isinstance(seg, list):
        _check_polygons(seg, where, height, width)
    elif isinstance(seg, Mapping):
        _check_rle(seg, where, height, width)
    else:
        raise CocoFormatError(f"{where}: 'segmentation' must be polygons (a list) or RLE (an "
                              f"object with size and counts), got {type(seg).__name__}")


def _check_image(img: Any, i: int, prefix: str) -> None:
    from emdet.data.io import MAX_PIXELS_ENV, max_image_pixels

    if not isinstance(img, Mapping):
        raise CocoFormatError(f"{prefix}images[{i}] is not an object")
    iid = img.get("id")
    where = f"{prefix}images[{i}] (id {iid!r})"
    if isinstance(iid, bool) or not isinstance(iid, (int, str)):
        raise CocoFormatError(f"{prefix}images[{i}]: 'id' must be an integer, got {iid!r}")
    for key in ("height", "width"):
        v = img.get(key)
        if not _int_like(v) or v < 1:
            raise CocoFormatError(f"{where}: '{key}' must be a positive integer (pixels), got "
                                  f"{v!r}")
    pixels = int(img["height"]) * int(img["width"])
    if pixels > max_image_pixels():
        raise CocoFormatError(f"{where}: 'width' x 'height' = {img['width']} x {img['height']} "
                              f"px is more than the pixel limit {max_image_pixels():,} ({MAX_PIXELS_ENV})")
    name = img.get("file_name")
    if name is not None and not isinstance(name, str):
        raise CocoFormatError(f"{where}: 'file_name' must be text, got {name!r}")
    ps = img.get("pixel_size")
    if ps is not None and (not _finite(ps) or ps <= 0):
        raise CocoFormatError(f"{where}: 'pixel_size' must be a positive number or null, got "
                              f"{ps!r}")
    unit = img.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise CocoFormatError(f"{where}: 'unit' must be text such as \"nm\", got {unit!r}")
    for key in ("frame", "n_frames"):
        v = img.get(key)
        if v is not None and (not _int_like(v) or v < 0):
            raise CocoFormatError(f"{where}: '{key}' must be an integer >= 0, got {v!r}")
    t = img.get("time")
    if t is not None and not _finite(t):
        raise CocoFormatError(f"{where}: 'time' must be a finite number of seconds, got {t!r}")


def check_coco(data: Any, source: str | os.PathLike = "", *, need_bbox: bool = False
               ) -> dict[str, Any]:
    """Check a COCO dict (see the module docstring); return it as a ``dict``.

    Parameters
    ----------
    data : object
        Parsed JSON.
    source : str or PathLike
        The file it came from, named in every message.
    need_bbox : bool
        Require ``bbox`` on every annotation (training data); detections may omit it.

    Raises
    ------
    CocoFormatError
    """
    prefix = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise CocoFormatError(f"{prefix}expected a JSON object with 'images', 'categories' and "
                              f"'annotations', got {type(data).__name__} (a bare list of "
                              "detections needs its dataset's COCO file)")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{prefix}'{key}' is missing or not a list (COCO format)")
    anns = data.get("annotations", [])
    if anns is None:
        anns = []
    if not isinstance(anns, list):
        raise CocoFormatError(f"{prefix}'annotations' must be a list, got {type(anns).__name__}")
    images: dict[Any, Mapping[str, Any]] = {}
    for i, img in enumerate(data["images"]):
        _check_image(img, i, prefix)
        if img["id"] in images:
            raise CocoFormatError(f"{prefix}images[{i}]: id {img['id']!r} is used twice; each "
                                  "image needs its own id (annotations would be copied)")
        images[img["id"]] = img
    cats: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, Mapping) or not isinstance(cat.get("id"), int) or isinstance(
                cat.get("id"), bool) or not isinstance(cat.get("name"), str):
            raise CocoFormatError(f"{prefix}categories[{i}] needs an integer 'id' and a text "
                                  f"'name', got {cat!r}")
        if cat["id"] in cats:
            raise CocoFormatError(f"{prefix}categories[{i}]: id {cat['id']} is used twice")
        cats.add(cat["id"])
    ann_ids: set[Any] = set()
    for i, ann in enumerate(anns):
        if not isinstance(ann, Mapping):
            raise CocoFormatError(f"{prefix}annotations[{i}] is not an object")
        where = prefix + _where(i, ann)
        aid = ann.get("id")
        if aid is not None:
            if isinstance(aid, bool) or not isinstance(aid, (int, str)):
                raise CocoFormatError(f"{where}: 'id' must be an integer")
            if aid in ann_ids:
                raise CocoFormatError(f"{where}: id {aid!r} is used twice")
            ann_ids.add(aid)
        iid = ann.get("image_id")
        if isinstance(iid, bool) or not isinstance(iid, (int, str)) or iid not in images:
            raise CocoFormatError(f"{where}: 'image_id' {iid!r} is not an id in 'images'")
        cid = ann.get("category_id")
        if isinstance(cid, bool) or cid not in cats:
            raise CocoFormatError(f"{where}: 'category_id' {cid!r} is not in 'categories' (ids "
                                  f"{sorted(cats)})")
        check_annotation(ann, i, images[iid], need_bbox=need_bbox, source=source)
    return dict(data)
