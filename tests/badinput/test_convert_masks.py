"""Broken label images and mask options given to ``tools/convert_annotations.py --format masks``,
and broken COCO files given to ``--to masks``.

One valid base (a 16-bit instance map ``masks/a.png`` for ``images/a.png``; a COCO file with a
polygon and an RLE for ``--to masks``); each case changes one thing. Every case must be refused
with a message naming the file (or the option) and what is wrong, leave every file under the
test folder as it was (no output, no ``*.emdet-tmp`` file), and never end in a traceback.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from emdet.utils.atomic import TEMP_SUFFIX
from tests.badinput.harness import assert_refused, run_tool, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

W, H = 64, 48


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def png(array: np.ndarray) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.png_encode(np.ascontiguousarray(array)))


def grey_png(w: int = W, h: int = H) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares ``w x h`` pixels with almost no data (a bomb when large)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def tif(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def instance_map(h: int = H, w: int = W) -> np.ndarray:
    ids = np.zeros((h, w), np.uint16)
    ids[5:15, 5:20] = 1
    ids[20:30, 30:50] = 2
    ids[35:45, 2:10] = 3
    return ids


def colour_mask(extra: tuple[int, int, int] | None = None) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[5:15, 5:20] = (255, 0, 0)
    rgb[20:30, 30:50] = (0, 255, 0)
    if extra is not None:
        rgb[40:44, 40:47] = extra
    return rgb


RGB_CLASSES = "255,0,0=vesicle;0,255,0=hole"


def coco_base() -> dict:
    from pycocotools import mask as mask_utils

    m = np.zeros((H, W), np.uint8)
    m[5:15, 20:40] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.tif", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "particle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "score": 0.9,
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]},
            {"id": 2, "image_id": 1, "category_id": 1, "score": 0.8,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
        ],
    }


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """``files``: path under the test folder -> bytes (``None`` deletes a base file);
    ``args``: options added to (or, with ``replace``, instead of) the base command line."""

    needles: tuple[str, ...]
    files: dict[str, bytes | None] | None = None
    args: tuple[str, ...] = ()
    setup: Callable[[Path], None] | None = None
    to_masks: bool = False
    replace: bool = False


def _base_files(case: Case) -> dict[str, bytes]:
    if case.to_masks:
        return {"in/coco.json": json.dumps(coco_base()).encode()}
    return {"masks/a.png": png(instance_map()), "images/a.png": grey_png()}


def _build(tmp: Path, case: Case) -> list:
    files = _base_files(case) | (case.files or {})
    for rel, data in files.items():
        if data is None:
            continue
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if case.setup:
        case.setup(tmp)
    if case.to_masks:
        base = ["--to", "masks", "--input", tmp / "in" / "coco.json", "--output", tmp / "out"]
    else:
        base = ["--format", "masks", "--input", tmp / "masks", "--images", tmp / "images",
                "--output", tmp / "out" / "all.json"]
    extra = [a.replace("{tmp}", str(tmp)) for a in case.args]
    return extra if case.replace else [*base, *extra]


def _coco(mutate: Callable[[dict], object]) -> dict[str, bytes]:
    data = coco_base()
    out = mutate(data)
    return {"in/coco.json": json.dumps(data if out is None else out).encode()}


def _set(path: str, value) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        *head, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in head:
            d = d[k]
        d[last] = value

    return mutate


def _stack() -> bytes:
    return tif(np.stack([instance_map(), instance_map()]))


def _negative() -> bytes:
    ids = instance_map().astype(np.int32)
    ids[0, 0] = -3
    return tif(ids)


def _float(value: float) -> bytes:
    ids = instance_map().astype(np.float32)
    ids[2, 3] = value
    return npy(ids)


def _existing_output(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "all.json").write_text('{"note": "hand edited"}')


def _existing_png(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "a.png").write_bytes(png(instance_map()))


def _classes_file(text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "classes.txt").write_text(text)

    return setup


CASES: dict[str, Case] = {
    # pairing
    "mask_without_image": Case(("masks/b.png", "has no image"),
                               {"masks/b.png": png(instance_map())}),
    "two_masks_for_one_image": Case(("a_mask.png", "already has the mask"),
                                    {"masks/a_mask.png": png(instance_map())}),
    "no_mask_files": Case(("masks", "no mask files"), {"masks/a.png": None},
                          setup=lambda t: (t / "masks").mkdir() or (t / "masks" / "x.txt")
                          .write_text("notes")),
    "no_images": Case(("images", "no images"), {"images/a.png": None},
                      setup=lambda t: (t / "images").mkdir()),
    "images_folder_missing": Case(("nowhere", "--images"),
                                  args=("--format", "masks", "--input", "{tmp}/masks", "--images",
                                        "{tmp}/nowhere", "--output", "{tmp}/out/all.json"),
                                  replace=True),
    "images_option_missing": Case(("--images",),
                                  args=("--format", "masks", "--input", "{tmp}/masks",
                                        "--output", "{tmp}/out/all.json"), replace=True),
    "images_same_as_input": Case(("same folder",),
                                 args=("--format", "masks", "--input", "{tmp}/masks", "--images",
                                       "{tmp}/masks", "--output", "{tmp}/out/all.json"),
                                 replace=True),
    # the mask file
    "mask_size_differs": Case(("masks/a.png", "40 x 30 px", f"{W} x {H} px"),
                              {"masks/a.png": png(instance_map(30, 40))}),
    "mask_jpeg": Case(("a.jpg", "JPEG"), {"masks/a.jpg": grey_png()}),
    "mask_truncated": Case(("masks/a.png", "cannot be read"),
                           {"masks/a.png": png(instance_map())[:60]}),
    "mask_empty_file": Case(("masks/a.png", "empty"), {"masks/a.png": b""}),
    "mask_not_an_image": Case(("masks/a.png", "cannot be read"),
                              {"masks/a.png": b"id,x,y\n1,2,3\n"}),
    "mask_bomb": Case(("masks/a.png", "pixel limit"), {"masks/a.png": png_header(60000, 60000)}),
    "mask_stack": Case(("a.tif", "2 frames"), {"masks/a.png": None, "masks/a.tif": _stack()}),
    "mask_negative_ids": Case(("a.tif", "negative", "x=0, y=0"),
                              {"masks/a.png": None, "masks/a.tif": _negative()}),
    "mask_float_fraction": Case(("a.npy", "whole numbers", "0.5 at x=3, y=2"),
                                {"masks/a.png": None, "masks/a.npy": _float(0.5)}),
    "mask_float_nan": Case(("a.npy", "NaN"), {"masks/a.png": None, "masks/a.npy": _float(np.nan)}),
    "mask_complex": Case(("a.npy", "complex"), {"masks/a.png": None,
                                                "masks/a.npy": npy(instance_map() + 1j)}),
    "colour_mask_as_instances": Case(("masks/a.png", "colour mask", "--mask-kind instances"),
                                     {"masks/a.png": png(colour_mask())},
                                     args=("--mask-kind", "instances")),
    "colour_mask_without_classes": Case(("masks/a.png", "colour mask", "--mask-classes",
                                         "255,0,0"), {"masks/a.png": png(colour_mask())}),
    "rgb_unknown_colour": Case(("masks/a.png", "not in --mask-classes", "12,34,56 (28 px)"),
                               {"masks/a.png": png(colour_mask((12, 34, 56)))},
                               args=("--mask-classes", RGB_CLASSES)),
    "rgb_float_mask": Case(("a.npy", "float"),
                           {"masks/a.png": None,
                            "masks/a.npy": npy(colour_mask().astype(np.float32))},
                           args=("--mask-classes", RGB_CLASSES)),
    # the image
    "image_broken": Case(("masks/a.png", "images/a.png", "cannot be used"),
                         {"images/a.png": grey_png()[:40]}),
    "image_bomb": Case(("images/a.png", "pixel limit"), {"images/a.png": png_header(70000, 70000)}),
    # options
    "mask_classes_no_equals": Case(("--mask-classes", "no '='"),
                                   args=("--mask-classes", "255,0,0 vesicle")),
    "mask_classes_two_numbers": Case(("--mask-classes", "R,G,B"),
                                     args=("--mask-classes", "255,0=vesicle")),
    "mask_classes_out_of_range": Case(("--mask-classes", "R,G,B"),
                                      args=("--mask-classes", "300000,0,0=vesicle")),
    "mask_classes_negative": Case(("--mask-classes", "R,G,B"),
                                  args=("--mask-classes=-1,0,0=vesicle",)),
    "mask_classes_duplicate": Case(("--mask-classes", "given twice"),
                                   args=("--mask-classes", "1,2,3=a;1,2,3=b")),
    "mask_classes_empty_name": Case(("--mask-classes", "empty"),
                                    args=("--mask-classes", "1,2,3=")),
    "mask_classes_only_background": Case(("--mask-classes", "background"),
                                         args=("--mask-classes", "9,9,9=background")),
    "mask_classes_empty": Case(("--mask-classes", "no colours"), args=("--mask-classes", " ; ")),
    "mask_classes_with_instances": Case(("--mask-classes", "--mask-kind instances"),
                                        args=("--mask-kind", "instances", "--mask-classes",
                                              RGB_CLASSES)),
    "rgb_without_classes": Case(("--mask-kind rgb", "--mask-classes"),
                                args=("--mask-kind", "rgb")),
    "split_touching_instances": Case(("--split-touching", "instances"),
                                     args=("--mask-kind", "instances", "--split-touching")),
    "split_min_distance_zero": Case(("--split-min-distance", "0"),
                                    args=("--split-touching", "--split-min-distance", "0")),
    "split_min_distance_alone": Case(("--split-min-distance", "--split-touching"),
                                     args=("--split-min-distance", "4")),
    "class_name_with_rgb": Case(("--mask-class-name", "--mask-classes"),
                                args=("--mask-classes", RGB_CLASSES, "--mask-class-name", "x")),
    "class_name_bad": Case(("--mask-class-name",), args=("--mask-class-name", "a;b")),
    "class_name_not_in_classes": Case(("--classes", "'particle'"),
                                      args=("--mask-class-name", "particle", "--classes",
                                            "{tmp}/classes.txt"),
                                      setup=_classes_file("vesicle\nhole\n")),
    "classes_two_names_for_instances": Case(("--classes", "--mask-class-name"),
                                            args=("--classes", "{tmp}/classes.txt"),
                                            setup=_classes_file("vesicle\nhole\n")),
    "mask_option_other_format": Case(("--format masks", "labelme"),
                                     args=("--format", "labelme", "--input", "{tmp}/masks",
                                           "--output", "{tmp}/out/all.json", "--mask-kind",
                                           "binary"), replace=True),
    "existing_output": Case(("all.json", "--overwrite"), setup=_existing_output),
    "output_not_json": Case(("--output", ".json"),
                            args=("--format", "masks", "--input", "{tmp}/masks", "--images",
                                  "{tmp}/images", "--output", "{tmp}/out/all.txt"),
                            replace=True),
    # --to masks
    "to_masks/not_json": Case(("coco.json", "JSON"), {"in/coco.json": b"images: []"},
                              to_masks=True),
    "to_masks/nan_literal": Case(("coco.json", "NaN"),
                                 {"in/coco.json": json.dumps(coco_base()).replace("0.9", "NaN")
                                  .encode()}, to_masks=True),
    "to_masks/bare_list": Case(("coco.json", "--dataset"),
                               _coco(lambda d: d["annotations"]), to_masks=True),
    "to_masks/rle_wrong_size": Case(("coco.json", "annotations[1]", "size"),
                                    _coco(_set("annotations.1.segmentation.size", [H // 2, W])),
                                    to_masks=True),
    "to_masks/rle_counts_too_long": Case(("coco.json", "annotations[1]", "counts"),
                                         _coco(_set("annotations.1.segmentation.counts",
                                                    [0, 10, 90000])), to_masks=True),
    "to_masks/polygon_huge": Case(("coco.json", "annotations[0]", "segmentation"),
                                  _coco(_set("annotations.0.segmentation.0.2", 1e12)),
                                  to_masks=True),
    "to_masks/image_without_file_name": Case(("coco.json", "images[1]", "file_name"),
                                             _coco(_set("images.1.file_name", None)),
                                             to_masks=True),
    "to_masks/same_stem": Case(("coco.json", "would both be written", "a.png"),
                               _coco(_set("images.1.file_name", "sub/a.tif")), to_masks=True),
    "to_masks/unknown_category": Case(("coco.json", "annotations[0]", "category_id"),
                                      _coco(_set("annotations.0.category_id", 9)),
                                      to_masks=True),
    "to_masks/existing_png": Case(("a.png", "--overwrite"), setup=_existing_png, to_masks=True),
    "to_masks/output_is_a_file": Case(("out", "--output", "instance-ID PNGs"), to_masks=True,
                                      setup=lambda t: (t / "out").write_text("a file")),
    "to_masks/min_score_nan": Case(("--min-score", "nan"), args=("--min-score", "nan"),
                                   to_masks=True),
    "to_masks/dataset_missing": Case(("missing.json", "--dataset"),
                                     _coco(lambda d: d["annotations"]),
                                     args=("--dataset", "{tmp}/missing.json"), to_masks=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_naming_file_and_field(tmp_path, name):
    case = CASES[name]
    args = _build(tmp_path, case)
    before = snapshot(tmp_path)
    outcome = run_tool("convert_annotations", [*args, "--no-progress"], case=f"masks/{name}")
    assert_refused(outcome, *case.needles)
    assert snapshot(tmp_path) == before, "an input changed or an output was left"
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}")), "a temporary file was left"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 25, len(CASES)


@pytest.mark.parametrize("to_masks", [False, True])
def test_the_base_is_accepted(tmp_path, to_masks):
    case = Case((), to_masks=to_masks)
    outcome = run_tool("convert_annotations", [*_build(tmp_path, case), "--no-progress"],
                       case=f"masks/valid_base{'_to_masks' if to_masks else ''}")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    written = snapshot(tmp_path / "out")
    assert written and not [n for n in written if n.endswith(TEMP_SUFFIX)]
    if not to_masks:
        coco = json.loads((tmp_path / "out" / "all.json").read_text())
        assert len(coco["annotations"]) == 3


def test_skip_invalid_leaves_bad_masks_out_and_lists_them(tmp_path):
    case = Case((), {"masks/b.png": png(instance_map(30, 40)), "images/b.png": grey_png(),
                     "masks/c.png": png(instance_map())}, args=("--skip-invalid",))
    outcome = run_tool("convert_annotations", [*_build(tmp_path, case), "--no-progress"],
                       case="masks/skip_invalid")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    coco = json.loads((tmp_path / "out" / "all.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png"]
    skipped = {Path(s["file"]).name: s["reason"] for s in coco["info"]["skipped"]}
    assert set(skipped) == {"b.png", "c.png"}
    assert "has no image" in skipped["c.png"] and "40 x 30 px" in skipped["b.png"]
    assert "b.png" in outcome.stderr and "c.png" in outcome.stderr
