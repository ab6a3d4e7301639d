"""Hostile and broken input given to ``tools/convert_annotations.py``, in every format it reads.

Each format has one valid base input (a labelme JSON, a LabelImg VOC or roLabelImg XML, a YOLO or
LabelImg-KITTI txt, a COCO file for ``--to labelme``); the cases are tables of mutations applied
to it, grouped by family (malformed syntax, wrong types, missing fields, non-finite numbers,
coordinates outside the image or huge, XML bombs and external entities, path tricks in
``imagePath``, image files that are bombs or broken, duplicate ids, wrong RLE, outputs that exist,
are folders or cannot be written). Every case must be refused with a message that names the file
and the field, leave every file under the test folder as it was (inputs unchanged, no output,
no ``*.emdet-tmp`` temporary file), and never end in a traceback.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emdet.utils.atomic import TEMP_SUFFIX
from tests.badinput.harness import assert_refused, run_tool, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

W, H = 64, 48


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def png_bytes(w: int = W, h: int = H, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), value).save(buf, format="PNG")
    return buf.getvalue()


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header declares ``w x h`` pixels, with almost no pixel data (a bomb when
    large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff_header(w: int, h: int) -> bytes:
    """A 200-byte TIFF whose first IFD declares a ``w x h`` 8-bit image."""
    entries = [(256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 200),
               (277, 3, 1), (278, 4, h), (279, 4, (w * h) & 0xFFFFFFFF)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def shape(label, points, stype="polygon", group_id=None) -> dict:
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": stype, "flags": {}}


def labelme_base() -> dict:
    return {
        "version": "5.2.1",
        "flags": {},
        "shapes": [
            shape("cell", [[10, 10], [30, 10], [30, 20], [10, 20]]),
            shape("rod", [[40, 30], [50, 40]], "rectangle"),
            shape("particle", [[20, 30], [23, 34]], "circle"),
            shape("particle", [[5, 40]], "point"),
            shape("cell", [[50, 5], [60, 5], [60, 12]], group_id=1),
            shape("cell", [[50, 14], [60, 14], [60, 20]], group_id=1),
        ],
        "imagePath": "a.png",
        "imageData": None,
        "imageHeight": H,
        "imageWidth": W,
    }


def bndbox(name: str, x0, y0, x1, y1) -> str:
    return (f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def robndbox(name: str, cx, cy, w, h, angle) -> str:
    return (f"<object><type>robndbox</type><name>{name}</name><robndbox><cx>{cx}</cx>"
            f"<cy>{cy}</cy><w>{w}</w><h>{h}</h><angle>{angle}</angle></robndbox></object>")


def voc_xml(objects: str, *, head: str = "", w=W, h=H) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?>{head}<annotation><folder>in</folder>'
            f"<filename>a.png</filename><size><width>{w}</width><height>{h}</height>"
            f"<depth>1</depth></size><segmented>0</segmented>{objects}</annotation>")


VOC_BASE = voc_xml(bndbox("rod", 10, 12, 30, 20) + bndbox("cell", 40, 30, 50, 44))
RO_BASE = voc_xml(robndbox("rod", 32, 24, 20, 8, 0.5) + bndbox("cell", 40, 30, 50, 44))
YOLO_BASE = "0 0.5 0.5 0.25 0.25\n1 0.2 0.2 0.1 0.1\n"
KITTI_BASE = "0 32 24 20 8 0.5 bent rod\n1 10 10 6 6 0\n"
CLASSES = "rod\ncell\n"


def rle_of(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def coco_base() -> dict:
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 20:40] = 1
    return {
        "info": {"description": "predictions"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": W, "height": H},
            {"id": 2, "file_name": "b.png", "width": W, "height": H},
        ],
        "categories": [{"id": 1, "name": "rod"}, {"id": 2, "name": "particle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10],
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]], "score": 0.9},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 5, 20, 10],
             "segmentation": rle_of(mask), "score": 0.8},
            {"id": 3, "image_id": 2, "category_id": 1, "rbox": [30, 20, 16, 6, 30],
             "bbox": [22, 14, 16, 12], "segmentation": [], "score": 0.7},
            {"id": 4, "image_id": 2, "category_id": 2, "circle": [10, 10, 4],
             "bbox": [6, 6, 8, 8], "score": 0.6},
            {"id": 5, "image_id": 2, "category_id": 2, "point": [40, 40], "bbox": [37, 37, 6, 6]},
            {"id": 6, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]},
        ],
    }


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------
def _keys(path: str) -> list:
    return [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]


def set_(path: str, value: Any) -> Callable[[Any], Any]:
    """A mutation that sets ``path`` (``shapes.0.points.1.0``) to ``value``."""

    def mutate(data):
        *head, last = _keys(path)
        node = data
        for k in head:
            node = node[k]
        node[last] = value
        return data

    return mutate


def del_(path: str) -> Callable[[Any], Any]:
    def mutate(data):
        *head, last = _keys(path)
        node = data
        for k in head:
            node = node[k]
        del node[last]
        return data

    return mutate


def sub(old: str, new: str) -> Callable[[str], str]:
    """A text mutation replacing the first ``old`` with ``new``."""

    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return mutate


def write_json(path: Path, data: Any, mutate: Any) -> None:
    if isinstance(mutate, bytes):
        path.write_bytes(mutate)
    else:
        # json.dumps writes NaN / Infinity literals for the non-finite cases, as a careless tool
        # would, and \\ud800 escapes for lone surrogates
        path.write_text(json.dumps(mutate(copy.deepcopy(data)) if mutate else data))


def write_text(path: Path, base: str, mutate: Any) -> None:
    if isinstance(mutate, bytes):
        path.write_bytes(mutate)
    elif callable(mutate):
        path.write_text(mutate(base), encoding="utf-8")
    else:
        path.write_text(base if mutate is None else mutate, encoding="utf-8")


@dataclass(frozen=True)
class M:
    """One mutation: of the base file (a function, replacement text, or raw bytes), words the
    message must contain besides the file name, and optionally a ``setup(tmp)`` run after the
    base is written and extra CLI arguments (``{tmp}`` is replaced by the test folder)."""

    mutate: Any
    needles: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    args: tuple[str, ...] = ()
    file: str | None = None  # the file the message must name, if not the base file


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], list]  # writes the inputs under tmp; returns the CLI arguments
    needles: tuple[str, ...]


CASES: dict[str, Case] = {}


def _args(extra: tuple[str, ...], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in extra]


def image_as(name: str, data: bytes) -> Callable[[Path], None]:
    """Setup that replaces ``in/<name>`` with ``data``."""

    def setup(tmp: Path) -> None:
        (tmp / "in" / name).write_bytes(data)

    return setup


def labelme_case(m: M) -> Case:
    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        write_json(src / "a.json", labelme_base(), m.mutate)
        if m.setup:
            m.setup(tmp)
        return ["--format", "labelme", "--input", src, "--output", tmp / "out" / "all.json",
                "--point-box-size", "6", *_args(m.args, tmp)]

    return Case(build, (m.file or "a.json", *m.needles))


def xml_case(fmt: str, base: str, m: M) -> Case:
    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        write_text(src / "a.xml", base, m.mutate)
        if m.setup:
            m.setup(tmp)
        return ["--format", fmt, "--input", src, "--output", tmp / "out" / "all.json",
                *_args(m.args, tmp)]

    return Case(build, (m.file or "a.xml", *m.needles))


def txt_case(fmt: str, base: str, m: M, classes: str | bytes | None = CLASSES) -> Case:
    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        write_text(src / "a.txt", base, m.mutate)
        if isinstance(classes, bytes):
            (src / "classes.txt").write_bytes(classes)
        elif classes is not None:
            (src / "classes.txt").write_text(classes)
        if m.setup:
            m.setup(tmp)
        return ["--format", fmt, "--input", src, "--output", tmp / "out" / "all.json",
                *_args(m.args, tmp)]

    return Case(build, (m.file or "a.txt", *m.needles))


def coco_case(m: M) -> Case:
    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        (src / "b.png").write_bytes(png_bytes(value=60))
        write_json(src / "coco.json", coco_base(), m.mutate)
        if m.setup:
            m.setup(tmp)
        return ["--to", "labelme", "--input", src / "coco.json", "--output", tmp / "out",
                "--images", src, *_args(m.args, tmp)]

    return Case(build, (m.file or "coco.json", *m.needles))


# --------------------------------------------------------------------------------------------
# labelme
# --------------------------------------------------------------------------------------------
def _existing_other_image(tmp: Path) -> None:
    """--images holds a different a.png; a.json names a missing a.tif and embeds a PNG."""
    (tmp / "imgs").mkdir()
    (tmp / "imgs" / "a.png").write_bytes(png_bytes(value=200))
    (tmp / "in" / "a.png").unlink()


LABELME = {
    # malformed syntax
    "not_json": M(b"shapes: []\n", ("JSON",)),
    "truncated_json": M(b'{"shapes": [{"label": "rod", "points": [[1, ', ("JSON",)),
    "empty_file": M(b"", ("JSON",)),
    "not_utf8": M(b'{"shapes": [], "imagePath": "\xff\xfe.png"}', ("UTF-8",)),
    "deeply_nested": M(b"[" * 100_000 + b"]" * 100_000, ("JSON",)),
    "top_level_list": M(b"[]", ("JSON object", "shapes")),
    "top_level_string": M(b'"labelme"', ("JSON object", "shapes")),
    # missing fields and wrong types
    "shapes_missing": M(del_("shapes"), ("shapes",)),
    "shapes_object": M(set_("shapes", {"0": {}}), ("shapes",)),
    "shape_not_object": M(set_("shapes.0", 5), ("shapes",)),
    "shape_list": M(set_("shapes.1", ["rod", [[1, 2]]]), ("shapes",)),
    "label_missing": M(del_("shapes.0.label"), ("label",)),
    "label_number": M(set_("shapes.0.label", 5), ("label",)),
    "label_empty": M(set_("shapes.0.label", "  "), ("label",)),
    "label_lone_surrogate": M(set_("shapes.0.label", "\ud800rod"), ("label", "surrogate")),
    "label_not_in_classes": M(None, ("label", "classes"),
                              setup=lambda t: (t / "classes.txt").write_text("vesicle\n"),
                              args=("--classes", "{tmp}/classes.txt")),
    "shape_type_unknown": M(set_("shapes.0.shape_type", "ellipse"), ("shape_type",)),
    "shape_type_list": M(set_("shapes.0.shape_type", ["polygon"]), ("shape_type",)),
    "group_id_list": M(set_("shapes.4.group_id", [1]), ("group_id",)),
    "group_id_object": M(set_("shapes.4.group_id", {"id": 1}), ("group_id",)),
    "group_id_float": M(set_("shapes.4.group_id", 1.5), ("group_id",)),
    "group_id_bool": M(set_("shapes.4.group_id", True), ("group_id",)),
    "points_missing": M(del_("shapes.0.points"), ("points",)),
    "points_text": M(set_("shapes.0.points", "10,10 30,10 30,20"), ("points",)),
    "point_pair_of_three": M(set_("shapes.0.points.1", [30, 10, 0]), ("points",)),
    "points_string_number": M(set_("shapes.0.points.0.0", "10"), ("points",)),
    "points_bool": M(set_("shapes.0.points.0.1", True), ("points",)),
    "points_null": M(set_("shapes.1.points.0.0", None), ("points",)),
    "points_nested": M(set_("shapes.1.points.0.0", [40]), ("points",)),
    # non-finite numbers
    "points_nan": M(set_("shapes.0.points.1.0", float("nan")), ("points", "NaN")),
    "points_infinity": M(set_("shapes.1.points.0.1", float("inf")), ("points", "Infinity")),
    "points_minus_infinity": M(set_("shapes.2.points.0.0", float("-inf")), ("points",)),
    "points_overflow": M(json.dumps(labelme_base()).replace("[40, 30]", "[1e999, 30]").encode(),
                         ("points", "1e999")),
    "points_huge_int": M(json.dumps(labelme_base()).replace("[40, 30]", f"[{'9' * 400}, 30]")
                         .encode(), ("points",)),
    "image_width_nan": M(set_("imageWidth", float("nan")), ("imageWidth",)),
    # shape geometry
    "polygon_two_points": M(set_("shapes.0.points", [[1, 1], [5, 5]]), ("points",)),
    "polygon_no_points": M(set_("shapes.0.points", []), ("points",)),
    "rectangle_three_points": M(set_("shapes.1.points", [[1, 1], [5, 5], [9, 9]]), ("points",)),
    "rectangle_zero_size": M(set_("shapes.1.points", [[40, 30], [40, 40]]), ("points",)),
    "circle_one_point": M(set_("shapes.2.points", [[20, 30]]), ("points",)),
    "circle_zero_radius": M(set_("shapes.2.points", [[20, 30], [20, 30]]), ("points",)),
    "point_two_points": M(set_("shapes.3.points", [[5, 40], [6, 41]]), ("points",)),
    # out of the image, huge
    "polygon_outside": M(set_("shapes.0.points.1.0", 90), ("points", "outside")),
    "rectangle_negative": M(set_("shapes.1.points.0", [-30, -30]), ("points", "outside")),
    "point_outside": M(set_("shapes.3.points.0", [500, 40]), ("points", "outside")),
    "circle_outside": M(set_("shapes.2.points.0", [200, 300]), ("points", "outside")),
    "polygon_huge": M(set_("shapes.0.points.2", [1e12, 1e12]), ("points",)),
    "polygon_max_float": M(set_("shapes.0.points.2", [1.7e308, -1.7e308]), ("points",)),
    "group_outside": M(set_("shapes.5.points.1", [600, 14]), ("points",)),
    # image size fields
    "image_width_mismatch": M(set_("imageWidth", W + 1), ("imageWidth",)),
    "image_height_text": M(set_("imageHeight", "48"), ("imageHeight",)),
    "image_height_bool": M(set_("imageHeight", False), ("imageHeight",)),
    # imagePath tricks (path traversal must not reach a file it can use, nor crash)
    "image_path_number": M(set_("imagePath", 5), ("imagePath",)),
    "image_path_missing": M(set_("imagePath", "nope.png"), ("imagePath",),
                            setup=lambda t: (t / "in" / "a.png").unlink()),
    "image_path_traversal": M(set_("imagePath", "../../../../../../../../etc/passwd"),
                              ("imagePath",)),
    "image_path_absolute": M(set_("imagePath", "/etc/passwd"), ("imagePath",)),
    "image_path_nul": M(set_("imagePath", "a.png\x00.txt"), ("imagePath",)),
    "image_path_too_long": M(set_("imagePath", "x" * 5000 + ".png"), ("imagePath",)),
    "image_path_folder": M(set_("imagePath", "sub"), ("imagePath",),
                           setup=lambda t: (t / "in" / "sub").mkdir()),
    "image_path_proc": M(set_("imagePath", "/proc/self/environ"), ("imagePath",)),
    # image files: bombs, truncated, not images
    "image_png_bomb": M(None, ("imagePath", "EMDET_MAX_PIXELS"),
                        setup=image_as("a.png", png_header(30000, 30000))),
    "image_tiff_header_bomb": M(set_("imagePath", "a.tif"), ("imagePath", "EMDET_MAX_PIXELS"),
                                setup=image_as("a.tif", tiff_header(100000, 100000))),
    "image_over_env_limit": M(None, ("imagePath", "EMDET_MAX_PIXELS"),
                              setup=lambda t: os.environ.__setitem__("EMDET_MAX_PIXELS", "1000")),
    "image_truncated_header": M(None, ("imagePath",), setup=image_as("a.png", png_bytes()[:20])),
    "image_truncated_tiff": M(set_("imagePath", "a.tif"), ("imagePath",),
                              setup=image_as("a.tif", tiff_header(W, H)[:30])),
    "image_empty": M(None, ("imagePath",), setup=image_as("a.png", b"")),
    "image_is_text": M(None, ("imagePath",), setup=image_as("a.png", b"not an image\n" * 9)),
    "image_bmp_bomb": M(set_("imagePath", "a.bmp"), ("imagePath", "EMDET_MAX_PIXELS"),
                        setup=image_as("a.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
                                       + struct.pack("<IiiHHIIiiII", 40, 60000, 60000, 1, 8, 0,
                                                     0, 0, 0, 0, 0))),
    # imageData: not base64, not an image, bombs, and a different image in the way
    "image_data_not_base64": M(lambda d: set_("imageData", "!!not base64!!")(
        set_("imagePath", "gone.png")(d)), ("imageData",)),
    "image_data_number": M(lambda d: set_("imageData", 12345)(set_("imagePath", "gone.png")(d)),
                           ("imageData",)),
    "image_data_not_image": M(lambda d: set_("imageData", b64(b"hello"))(
        set_("imagePath", "gone.png")(d)), ("imageData",)),
    "image_data_bomb": M(lambda d: set_("imageData", b64(png_header(30000, 30000)))(
        set_("imagePath", "gone.png")(d)), ("imageData", "EMDET_MAX_PIXELS")),
    "image_data_truncated": M(lambda d: set_("imageData", b64(png_bytes()[:20]))(
        set_("imagePath", "gone.png")(d)), ("imageData",)),
    "image_data_over_different_image": M(
        lambda d: set_("imageData", b64(png_bytes()))(set_("imagePath", "a.tif")(d)),
        ("imageData", "imgs/a.png"), setup=_existing_other_image, args=("--images", "{tmp}/imgs"),
    ),
}


# --------------------------------------------------------------------------------------------
# LabelImg VOC and roLabelImg XML
# --------------------------------------------------------------------------------------------
LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
          '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;'
          '&lol3;&lol3;">]>')
XXE = '<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'

XML_COMMON = {
    "malformed": M(sub("</annotation>", ""), ("XML",)),
    "empty_file": M(b"", ("XML",)),
    "not_xml": M("rod 10 12 30 20\n", ("XML",)),
    "not_utf8": M(VOC_BASE.replace("rod", "r\udcffd").encode("utf-8", "surrogateescape"),
                  ("XML",)),
    "wrong_root": M("<labels><object/></labels>", ("<annotation>",)),
    "billion_laughs": M(lambda t: voc_xml(bndbox("&lol4;", 10, 12, 30, 20), head=LAUGHS),
                        ("DOCTYPE",)),
    "xxe_file": M(lambda t: voc_xml(bndbox("&xxe;", 10, 12, 30, 20), head=XXE), ("DOCTYPE",)),
    "xxe_utf16": M(voc_xml(bndbox("&xxe;", 10, 12, 30, 20), head=XXE)
                   .replace('encoding="utf-8"', 'encoding="utf-16"').encode("utf-16"),
                   ("DOCTYPE",)),
    "size_width_mismatch": M(sub("<width>64</width>", "<width>65</width>"), ("<size><width>",)),
    "size_height_text": M(sub("<height>48</height>", "<height>tall</height>"),
                          ("<size><height>",)),
    "name_empty": M(sub("<name>cell</name>", "<name> </name>"), ("<name>",)),
    "name_missing": M(sub("<name>cell</name>", ""), ("<name>",)),
    "bndbox_missing": M(sub("<bndbox><xmin>40</xmin><ymin>30</ymin><xmax>50</xmax><ymax>44"
                            "</ymax></bndbox>", ""), ("<bndbox>",)),
    "xmin_missing": M(sub("<xmin>40</xmin>", ""), ("<xmin>",)),
    "xmin_text": M(sub("<xmin>40</xmin>", "<xmin>forty</xmin>"), ("<xmin>",)),
    "xmin_empty": M(sub("<xmin>40</xmin>", "<xmin></xmin>"), ("<xmin>",)),
    "xmin_nan": M(sub("<xmin>40</xmin>", "<xmin>nan</xmin>"), ("<xmin>",)),
    "xmax_inf": M(sub("<xmax>50</xmax>", "<xmax>1e999</xmax>"), ("<xmax>",)),
    "box_inverted": M(sub("<xmax>50</xmax>", "<xmax>20</xmax>"), ("<bndbox>", "xmax")),
    "box_outside": M(sub("<ymax>44</ymax>", "<ymax>90</ymax>"), ("<bndbox>", "outside")),
    "box_huge": M(sub("<xmax>50</xmax>", "<xmax>1e300</xmax>"), ("<bndbox>",)),
    "box_negative": M(sub("<xmin>40</xmin>", "<xmin>-1e9</xmin>"), ("<bndbox>",)),
    "filename_missing_image": M(sub("<filename>a.png</filename>", "<filename>b.png</filename>"),
                                ("<filename>",), setup=lambda t: (t / "in" / "a.png").unlink()),
    "filename_too_long": M(sub("<filename>a.png</filename>",
                               f"<filename>{'y' * 5000}.png</filename>"), ("<filename>",)),
    "image_png_bomb": M(None, ("<filename>", "EMDET_MAX_PIXELS"),
                        setup=image_as("a.png", png_header(30000, 30000))),
    "image_truncated": M(None, ("<filename>",), setup=image_as("a.png", png_bytes()[:24])),
}

VOC_ONLY = {
    "rotated_box_in_voc": M(lambda t: voc_xml(robndbox("rod", 32, 24, 20, 8, 0.5)),
                            ("<robndbox>", "rolabelimg")),
}

ROLABELIMG_ONLY = {
    "angle_degrees": M(sub("<angle>0.5</angle>", "<angle>45</angle>"), ("<angle>", "degrees")),
    "angle_minus_90": M(sub("<angle>0.5</angle>", "<angle>-90</angle>"), ("<angle>",)),
    "angle_360": M(sub("<angle>0.5</angle>", "<angle>360</angle>"), ("<angle>",)),
    "angle_nan": M(sub("<angle>0.5</angle>", "<angle>NaN</angle>"), ("<angle>",)),
    "angle_text": M(sub("<angle>0.5</angle>", "<angle>half</angle>"), ("<angle>",)),
    "angle_missing": M(sub("<angle>0.5</angle>", ""), ("<angle>",)),
    "cx_missing": M(sub("<cx>32</cx>", ""), ("<cx>",)),
    "cy_infinite": M(sub("<cy>24</cy>", "<cy>inf</cy>"), ("<cy>",)),
    "w_zero": M(sub("<w>20</w>", "<w>0</w>"), ("<w>",)),
    "h_negative": M(sub("<h>8</h>", "<h>-8</h>"), ("<h>",)),
    "robndbox_outside": M(sub("<cx>32</cx>", "<cx>70</cx>"), ("<robndbox>", "outside")),
    "robndbox_huge": M(sub("<cx>32</cx>", "<cx>1e12</cx>"), ("<robndbox>",)),
}


# --------------------------------------------------------------------------------------------
# YOLO and LabelImg-KITTI txt
# --------------------------------------------------------------------------------------------
TXT_COMMON = {
    "not_utf8": M(b"0 0.5 0.5 0.25 0.25 \xff\xfe\n", ("UTF-8",)),
    "image_missing": M(None, ("image not found",), setup=lambda t: (t / "in" / "a.png").unlink()),
    "image_png_bomb": M(None, ("image", "EMDET_MAX_PIXELS"),
                        setup=image_as("a.png", png_header(30000, 30000))),
    "image_truncated": M(None, ("image",), setup=image_as("a.png", png_bytes()[:20])),
    "image_is_html": M(None, ("image",), setup=image_as("a.png", b"<html>404</html>")),
}

YOLO_ONLY = {
    "too_few_values": M("0 0.5 0.5 0.25\n", ("class cx cy w h",)),
    "too_many_values": M("0 0.5 0.5 0.25 0.25 0.1\n", ("class cx cy w h",)),
    "class_name": M("rod 0.5 0.5 0.25 0.25\n", ("class",)),
    "class_float": M("0.0 0.5 0.5 0.25 0.25\n", ("class",)),
    "pixels": M("0 32 24 16 12\n", ("cx cy w h", "pixels")),
    "cx_text": M("0 half 0.5 0.25 0.25\n", ("cx",)),
    "cy_nan": M("0 0.5 nan 0.25 0.25\n", ("cy",)),
    "w_infinite": M("0 0.5 0.5 inf 0.25\n", ("field w",)),
    "h_overflow": M("0 0.5 0.5 0.25 1e999\n", ("field h",)),
    "w_zero": M("0 0.5 0.5 0 0.25\n", ("field w",)),
    "h_negative": M("0 0.5 0.5 0.25 -0.25\n", ("field h",)),
    "outside": M("0 1.2 0.5 0.25 0.25\n", ("cx cy w h", "outside")),
    "negative_outside": M("0 -0.4 0.5 0.25 0.25\n", ("cx cy w h", "outside")),
    "class_negative": M("-1 0.5 0.5 0.25 0.25\n", ("classes.txt", "-1")),
    "class_index_out_of_range": M("7 0.5 0.5 0.25 0.25\n", ("classes.txt", "7")),
}

KITTI_ONLY = {
    "rotation_degrees": M("0 32 24 20 8 30 rod\n", ("rotation", "degrees")),
    "class_index_out_of_range": M("7 32 24 20 8 0.5\n", ("classes.txt", "7")),
    "rotation_720": M("0 32 24 20 8 720\n", ("rotation",)),
    "rotation_minus_45": M("0 32 24 20 8 -45\n", ("rotation",)),
    "rotation_nan": M("0 32 24 20 8 nan\n", ("rotation",)),
    "rotation_text": M("0 32 24 20 8 half\n", ("rotation",)),
    "too_few_values": M("0 32 24 20 8\n", ("rotation",)),
    "cx_infinite": M("0 inf 24 20 8 0.5\n", ("cx",)),
    "w_zero": M("0 32 24 0 8 0.5\n", ("field w",)),
    "h_negative": M("0 32 24 20 -8 0.5\n", ("field h",)),
    "outside": M("0 80 24 20 8 0.5\n", ("cx cy w h rotation", "outside")),
    "huge": M("0 1e15 24 20 8 0.5\n", ("cx cy w h rotation",)),
    "corners_nan": M("10,10,30,10,30,20,nan,20,rod\n", ("corners",)),
    "corners_text": M("10,10,30,10,30,20,ten,20,rod\n", ("corners",)),
    "corners_outside": M("10,10,300,10,300,20,10,20,rod\n", ("corners", "outside")),
    "corners_no_label": M("10,10,30,10,30,20,10,20,\n", ("class",)),
}


def _add_txt_classes_cases() -> None:
    """classes.txt problems, for both formats."""
    for fmt, base in (("yolo", YOLO_BASE), ("labelimg-kitti", KITTI_BASE)):
        CASES[f"{fmt}/classes_not_utf8"] = txt_case(
            fmt, base, M(None, ("UTF-8",), file="classes.txt"), classes=b"rod\n\xff\xfe\n")
        CASES[f"{fmt}/classes_duplicate"] = txt_case(
            fmt, base, M(None, ("rod",), file="classes.txt"), classes="rod\nrod\n")
        CASES[f"{fmt}/classes_empty"] = txt_case(
            fmt, base, M(None, ("empty",), file="classes.txt"), classes="\n")
    CASES["yolo/classes_missing"] = txt_case(
        "yolo", YOLO_BASE, M(None, ("--classes",), file="classes.txt"), classes=None)
    CASES["labelimg-kitti/classes_missing"] = txt_case(
        "labelimg-kitti", KITTI_BASE, M(None, ("class index 0",)), classes=None)


# --------------------------------------------------------------------------------------------
# COCO -> labelme (--to labelme)
# --------------------------------------------------------------------------------------------
def _dup_image_id(d):
    d["images"][1]["id"] = 1
    return d


def _dup_annotation_id(d):
    d["annotations"][1]["id"] = 1
    return d


def _existing_labelme(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "a.json").write_text('{"shapes": [], "note": "hand corrected"}')


COCO = {
    # syntax and structure
    "not_json": M(b"images: []\n", ("JSON",)),
    "not_utf8": M(b'{"images": "\xff\xfe"}', ("UTF-8",)),
    "truncated": M(b'{"images": [{"id": 1, "width": 6', ("JSON",)),
    "nan_literal": M(b'{"images": [], "categories": [], "x": NaN}', ("x", "NaN")),
    "top_level_string": M(b'"coco"', ("JSON object",)),
    "detections_without_dataset": M(lambda d: d["annotations"], ("--dataset",)),
    "images_not_list": M(set_("images", {"1": "a.png"}), ("images",)),
    "annotations_not_list": M(set_("annotations", {"1": {}}), ("annotations",)),
    "annotation_not_object": M(set_("annotations.0", [1, 2, 3]), ("annotations[0]",)),
    # images
    "duplicate_image_id": M(_dup_image_id, ("images[1]", "id")),
    "image_id_float": M(set_("images.0.id", 1.5), ("images[0]", "id")),
    "image_without_height": M(del_("images.0.height"), ("images[0]", "height")),
    "image_width_zero": M(set_("images.0.width", 0), ("images[0]", "width")),
    "image_width_text": M(set_("images.0.width", "64"), ("images[0]", "width")),
    "image_width_nan": M(set_("images.1.width", float("nan")), ("images[1]", "width")),
    "image_huge": M(set_("images.0.width", 10**8), ("images[0]", "width")),
    "file_name_missing": M(del_("images.0.file_name"), ("images[0]", "file_name")),
    "file_name_number": M(set_("images.0.file_name", 7), ("images[0]", "file_name")),
    "file_name_empty": M(set_("images.0.file_name", ""), ("images[0]", "file_name")),
    "file_name_nul": M(set_("images.0.file_name", "a\x00.png"), ("images[0]", "file_name")),
    "file_name_dots": M(set_("images.0.file_name", "../.."), ("images[0]", "file_name")),
    "file_name_surrogate": M(set_("images.0.file_name", "\udc80.png"),
                             ("images[0]", "file_name", "surrogate")),
    # categories and references
    "category_without_name": M(del_("categories.0.name"), ("categories[0]", "name")),
    "duplicate_category_id": M(set_("categories.1.id", 1), ("categories[1]", "id")),
    "image_id_unknown": M(set_("annotations.0.image_id", 99), ("annotations[0]", "image_id")),
    "category_id_unknown": M(set_("annotations.0.category_id", 5),
                             ("annotations[0]", "category_id")),
    "duplicate_annotation_id": M(_dup_annotation_id, ("annotations[1]", "id")),
    # polygons
    "polygon_nan": M(set_("annotations.0.segmentation.0.3", float("nan")),
                     ("annotations[0]", "segmentation")),
    "polygon_infinity": M(set_("annotations.0.segmentation.0.0", float("inf")),
                          ("annotations[0]", "segmentation")),
    "polygon_huge": M(set_("annotations.0.segmentation.0.2", 1e12),
                      ("annotations[0]", "segmentation")),
    "polygon_string": M(set_("annotations.0.segmentation.0.4", "30"),
                        ("annotations[0]", "segmentation")),
    "polygon_odd": M(set_("annotations.0.segmentation.0", [1, 2, 3, 4, 5, 6, 7]),
                     ("annotations[0]", "segmentation")),
    "segmentation_number": M(set_("annotations.0.segmentation", 7),
                             ("annotations[0]", "segmentation")),
    # RLE
    "rle_wrong_size": M(set_("annotations.1.segmentation.size", [H // 2, W]),
                        ("annotations[1]", "size")),
    "rle_huge_size": M(set_("annotations.1.segmentation.size", [10**6, 10**6]),
                       ("annotations[1]", "size")),
    "rle_size_missing": M(del_("annotations.1.segmentation.size"), ("annotations[1]", "size")),
    "rle_not_rle_string": M(set_("annotations.1.segmentation.counts", "\x00\x01zz~~~"),
                            ("annotations[1]", "counts")),
    "rle_counts_too_long": M(set_("annotations.1.segmentation.counts", [0, 100, 9000]),
                             ("annotations[1]", "counts")),
    "rle_counts_negative": M(set_("annotations.1.segmentation.counts", [0, -100, W * H + 100]),
                             ("annotations[1]", "counts")),
    "rle_counts_number": M(set_("annotations.1.segmentation.counts", 12),
                           ("annotations[1]", "counts")),
    # boxes, circles, points, scores
    "bbox_nan": M(set_("annotations.5.bbox.2", float("nan")), ("annotations[5]", "bbox")),
    "bbox_short": M(set_("annotations.5.bbox", [1, 2, 3]), ("annotations[5]", "bbox")),
    "bbox_text": M(set_("annotations.5.bbox.0", "1"), ("annotations[5]", "bbox")),
    "bbox_huge": M(set_("annotations.5.bbox.0", 1e12), ("annotations[5]", "bbox")),
    "rbox_infinity": M(set_("annotations.2.rbox.4", float("inf")), ("annotations[2]", "rbox")),
    "rbox_huge": M(set_("annotations.2.rbox.0", -1e9), ("annotations[2]", "rbox")),
    "circle_nan": M(set_("annotations.3.circle.2", float("nan")), ("annotations[3]", "circle")),
    "circle_text": M(set_("annotations.3.circle", "10 10 4"), ("annotations[3]", "circle")),
    "circle_negative_radius": M(set_("annotations.3.circle.2", -4), ("annotations[3]", "circle")),
    "circle_outside": M(set_("annotations.3.circle.0", 1e6), ("annotations[3]", "circle")),
    "point_string": M(set_("annotations.4.point.0", "40"), ("annotations[4]", "point")),
    "point_huge": M(set_("annotations.4.point", [40, 1e15]), ("annotations[4]", "point")),
    "score_nan": M(set_("annotations.0.score", float("nan")), ("annotations[0]", "score")),
    "score_text": M(set_("annotations.0.score", "high"), ("annotations[0]", "score")),
    # outputs
    "existing_labelme_file": M(None, ("--overwrite",), setup=_existing_labelme, file="a.json"),
    "output_is_a_file": M(None, ("--output",), file="out",
                          setup=lambda t: (t / "out").write_text("not a folder")),
    "labelme_target_is_a_folder": M(None, ("folder",), file="a.json",
                                    setup=lambda t: (t / "out" / "a.json").mkdir(parents=True),
                                    args=("--overwrite",)),
    "min_score_nan": M(None, ("nan",), args=("--min-score", "nan"), file="--min-score"),
}


def add_detections(name: str, mutate_dataset: Any, needles: tuple[str, ...],
                   mutate_detections: Any = None, file: str = "dataset.json") -> None:
    """A detections list (``coco_instances_results.json``) with its ``--dataset``."""

    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        base = coco_base()
        dets = [{k: v for k, v in a.items() if k != "id"} for a in base.pop("annotations")]
        write_json(src / "results.json", dets, mutate_detections)
        write_json(src / "dataset.json", base, mutate_dataset)
        return ["--to", "labelme", "--input", src / "results.json", "--dataset",
                src / "dataset.json", "--output", tmp / "out", "--images", src]

    CASES[f"coco/detections_{name}"] = Case(build, (file, *needles))


# --------------------------------------------------------------------------------------------
# Options and outputs (--output, --overwrite, --split, ...)
# --------------------------------------------------------------------------------------------
def add_output_case(name: str, needles: tuple[str, ...],
                    prepare: Callable[[Path], list]) -> None:
    """A valid labelme input; ``prepare(tmp)`` sets up the outputs and returns the options."""

    def build(tmp: Path) -> list:
        src = tmp / "in"
        src.mkdir()
        (src / "a.png").write_bytes(png_bytes())
        (src / "b.png").write_bytes(png_bytes(value=90))
        write_json(src / "a.json", labelme_base(), None)
        write_json(src / "b.json", labelme_base(), set_("imagePath", "b.png"))
        return ["--format", "labelme", "--input", src, "--point-box-size", "6", *prepare(tmp)]

    CASES[f"output/{name}"] = Case(build, needles)


def _existing(*names: str, split: bool = True, overwrite: bool = False):
    def prepare(tmp: Path) -> list:
        (tmp / "out").mkdir()
        for n in names:
            (tmp / "out" / n).write_text('{"hand": "edited"}')
        return ["--output", tmp / "out" / "all.json",
                *(["--split", "train=0.5,val=0.5"] if split else []),
                *(["--overwrite"] if overwrite else [])]

    return prepare


def _output_is(kind: str):
    def prepare(tmp: Path) -> list:
        if kind == "folder":
            (tmp / "out" / "all.json").mkdir(parents=True)
            return ["--output", tmp / "out" / "all.json"]
        if kind == "plain_folder":
            (tmp / "out").mkdir()
            return ["--output", tmp / "out"]
        if kind == "under_a_file":
            (tmp / "out").write_text("a file")
            return ["--output", tmp / "out" / "all.json"]
        if kind == "not_json":
            return ["--output", tmp / "out" / "all.csv"]
        if kind == "split_is_output":
            return ["--output", tmp / "out" / "train.json", "--split", "train=0.5,val=0.5"]
        raise AssertionError(kind)

    return prepare


def _option(*args: str):
    def prepare(tmp: Path) -> list:
        return ["--output", tmp / "out" / "all.json", *_args(args, tmp)]

    return prepare


def _split_folder(tmp: Path) -> list:
    """all.json and train.json exist (with --overwrite), but val.json is a folder."""
    args = _existing("all.json", "train.json", overwrite=True)(tmp)
    (tmp / "out" / "val.json").mkdir()
    return args


def _empty_input(tmp: Path) -> list:
    (tmp / "empty").mkdir()
    return ["--output", tmp / "out" / "all.json", "--input", tmp / "empty"]


def _add_output_cases() -> None:
    add_output_case("existing_output", ("all.json", "--overwrite"), _existing("all.json",
                                                                              split=False))
    add_output_case("existing_split_file", ("train.json", "--overwrite"), _existing("train.json"))
    add_output_case("existing_all_and_val", ("val.json", "--overwrite"),
                    _existing("all.json", "val.json"))
    add_output_case("split_target_is_a_folder", ("val.json", "folder"), _split_folder)
    add_output_case("output_is_a_folder", ("all.json", "--output", "folder"),
                    _output_is("folder"))
    add_output_case("output_is_a_plain_folder", ("out", "--output", "folder"),
                    _output_is("plain_folder"))
    add_output_case("output_under_a_file", ("out", "--output"), _output_is("under_a_file"))
    add_output_case("output_not_json", ("all.csv", "--output"), _output_is("not_json"))
    add_output_case("split_named_like_output", ("train.json", "all.json"),
                    _output_is("split_is_output"))
    add_output_case("split_bad_text", ("--split", "train:0.8"), _option("--split", "train:0.8"))
    add_output_case("split_not_one", ("--split", "1.2"), _option("--split", "train=0.9,val=0.3"))
    add_output_case("split_nan", ("--split", "nan"), _option("--split", "train=nan,val=0.5"))
    add_output_case("point_box_infinite", ("--point-box-size", "inf"),
                    lambda t: ["--output", t / "out" / "all.json", "--point-box-size", "inf"])
    add_output_case("classes_missing", ("nope.txt", "--classes"),
                    _option("--classes", "{tmp}/nope.txt"))
    add_output_case("classes_is_a_folder", ("in", "--classes"), _option("--classes", "{tmp}/in"))
    add_output_case("images_missing", ("nope", "--images"), _option("--images", "{tmp}/nope"))
    add_output_case("input_is_a_file", ("a.json", "--input"),
                    lambda t: ["--output", t / "out" / "all.json", "--input", t / "in" / "a.json"])
    add_output_case("input_missing", ("nope", "--input"),
                    lambda t: ["--output", t / "out" / "all.json", "--input", t / "nope"])
    add_output_case("input_without_files", ("--input", "--format"), _empty_input)


# --------------------------------------------------------------------------------------------
# The table of cases
# --------------------------------------------------------------------------------------------
BASES: dict[str, Case] = {
    "labelme": labelme_case(M(None, ())),
    "voc": xml_case("voc", VOC_BASE, M(None, ())),
    "rolabelimg": xml_case("rolabelimg", RO_BASE, M(None, ())),
    "yolo": txt_case("yolo", YOLO_BASE, M(None, ())),
    "labelimg-kitti": txt_case("labelimg-kitti", KITTI_BASE, M(None, ())),
    "coco": coco_case(M(None, ())),
}
for _name, _m in LABELME.items():
    CASES[f"labelme/{_name}"] = labelme_case(_m)
for _fmt, _base, _table in (("voc", VOC_BASE, VOC_ONLY), ("rolabelimg", RO_BASE, ROLABELIMG_ONLY)):
    for _name, _m in {**XML_COMMON, **_table}.items():
        CASES[f"{_fmt}/{_name}"] = xml_case(_fmt, _base, _m)
for _fmt, _base, _table in (("yolo", YOLO_BASE, YOLO_ONLY),
                            ("labelimg-kitti", KITTI_BASE, KITTI_ONLY)):
    for _name, _m in {**TXT_COMMON, **_table}.items():
        CASES[f"{_fmt}/{_name}"] = txt_case(_fmt, _base, _m)
_add_txt_classes_cases()
for _name, _m in COCO.items():
    CASES[f"coco/{_name}"] = coco_case(_m)
add_detections("dataset_duplicate_image_id", _dup_image_id, ("images[1]", "id"))
add_detections("dataset_without_height", del_("images.0.height"), ("images[0]", "height"))
add_detections("dataset_is_a_list", lambda d: d["images"], ("--dataset",))
add_detections("dataset_nan", set_("images.0.width", float("nan")), ("width", "NaN"))
add_detections("entry_not_object", None, ("annotations[0]",),
               mutate_detections=set_("0", "rod"), file="results.json")
add_detections("rle_wrong_size", None, ("annotations[1]", "size"),
               mutate_detections=set_("1.segmentation.size", [W, H]), file="results.json")
add_detections("rotated_bbox_nan", None, ("[2]", "NaN"),
               mutate_detections=set_("2.bbox", [30, 20, 16, 6, float("nan")]),
               file="results.json")
add_detections("image_id_unknown", None, ("annotations[0]", "image_id"),
               mutate_detections=set_("0.image_id", 3), file="results.json")
_add_output_cases()


@pytest.fixture
def _pixel_limit_env():
    old = os.environ.get("EMDET_MAX_PIXELS")
    yield
    if old is None:
        os.environ.pop("EMDET_MAX_PIXELS", None)
    else:
        os.environ["EMDET_MAX_PIXELS"] = old


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_naming_file_and_field(tmp_path, name, _pixel_limit_env):
    case = CASES[name]
    args = case.build(tmp_path)
    before = snapshot(tmp_path)
    outcome = run_tool("convert_annotations", [*args, "--no-progress"],
                       case=f"converters/{name}")
    assert_refused(outcome, *case.needles)
    assert snapshot(tmp_path) == before, "an input changed or an output was left"
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}")), "a temporary file was left"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 120, len(CASES)
    families = {name.split("/")[0] for name in CASES}
    assert families == {"labelme", "voc", "rolabelimg", "yolo", "labelimg-kitti", "coco",
                        "output"}


# --------------------------------------------------------------------------------------------
# The bases are valid, and hostile-but-valid input converts without leaking
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(BASES))
def test_every_base_is_accepted(tmp_path, family):
    outcome = run_tool("convert_annotations", [*BASES[family].build(tmp_path), "--no-progress"],
                       case=f"converters/{family}/valid_base")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    written = snapshot(tmp_path / "out")
    assert written and not [n for n in written if n.endswith(TEMP_SUFFIX)]
    if family == "coco":
        doc = json.loads((tmp_path / "out" / "b.json").read_text())
        assert [s["shape_type"] for s in doc["shapes"]] == ["polygon", "circle", "point",
                                                             "rectangle"]
    else:
        doc = json.loads((tmp_path / "out" / "all.json").read_text())
        assert len(doc["annotations"]) == (5 if family == "labelme" else 2)


def test_image_path_traversal_cannot_place_the_embedded_image_elsewhere(tmp_path):
    src = tmp_path / "data" / "in"
    src.mkdir(parents=True)
    doc = labelme_base()
    doc["imagePath"] = "../../../victim/a.png"
    doc["imageData"] = b64(png_bytes())
    (src / "a.json").write_text(json.dumps(doc))
    out = tmp_path / "data" / "out" / "all.json"
    outside = snapshot(tmp_path / "victim")
    outcome = run_tool("convert_annotations", [
        "--format", "labelme", "--input", src, "--output", out, "--point-box-size", "6",
        "--no-progress"], case="converters/labelme/image_path_traversal_with_image_data")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    assert (out.parent / "all_images" / "a.png").read_bytes() == png_bytes()
    assert snapshot(tmp_path / "victim") == outside == {}
    assert sorted(snapshot(tmp_path)) == ["data/in/a.json", "data/out/all.json",
                                          "data/out/all_images/a.png"]


def test_an_identical_embedded_image_is_used_and_not_rewritten(tmp_path):
    src, imgs = tmp_path / "in", tmp_path / "imgs"
    src.mkdir()
    imgs.mkdir()
    (imgs / "a.png").write_bytes(png_bytes())
    os.utime(imgs / "a.png", (1_000_000, 1_000_000))
    doc = labelme_base()
    doc["imagePath"], doc["imageData"] = "gone/a.png", b64(png_bytes())
    (src / "a.json").write_text(json.dumps(doc))
    outcome = run_tool("convert_annotations", [
        "--format", "labelme", "--input", src, "--output", tmp_path / "all.json", "--images", imgs,
        "--point-box-size", "6", "--no-progress"], case="converters/labelme/identical_image_data")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    assert (imgs / "a.png").stat().st_mtime == 1_000_000
    assert json.loads((tmp_path / "all.json").read_text())["images"][0]["file_name"] == "a.png"


def test_a_failed_rename_leaves_every_earlier_output_as_it_was(tmp_path, monkeypatch):
    build = CASES["output/existing_all_and_val"].build
    args = build(tmp_path)
    (tmp_path / "out" / "train.json").write_text('{"old": "train"}')
    before = snapshot(tmp_path)
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    outcome = run_tool("convert_annotations", [*args, "--overwrite", "--no-progress"],
                       case="converters/output/second_rename_fails")
    assert_refused(outcome, "all.json", "No space left", "unchanged")
    assert len(calls) >= 2
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))
