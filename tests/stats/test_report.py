"""report.html: one self-contained page whose plots a browser actually shows."""

import base64
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from emdet.inference.overlay import class_colour
from emdet.stats import images_table, measure_coco, run_stats_report, summarize, write_report


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action"):
                self.refs.append((tag, name, value or ""))


def _report(predictions, path: Path) -> Path:
    images = images_table(predictions)
    instances = measure_coco(predictions)
    categories = [c["name"] for c in predictions["categories"]]
    summary = summarize(instances, images, categories=categories)
    overlay = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    )
    return write_report(path, instances=instances, summary=summary, images=images,
                        categories=categories, settings={"tile": 256, "input": "x.json"},
                        overlays=[("a.tif: 4 objects", overlay)], notes=["a warning"])


def test_report_is_self_contained(predictions, tmp_path):
    path = _report(predictions, tmp_path / "report.html")
    text = path.read_text()
    parser = _Refs()
    parser.feed(text)
    for tag, name, value in parser.refs:
        if name == "href":
            assert value.startswith("#"), (tag, value)
        else:
            assert value.startswith("data:image/png;base64,"), (tag, value[:60])
            assert base64.b64decode(value.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert "url(" not in text and "@import" not in text and "http" not in text
    imgs = [r for r in parser.refs if r[0] == "img"]
    assert len(imgs) == 5  # histograms (diameter, rod length), counts, over time, overlay
    for anchor in ("sizes", "counts", "summary", "overlays", "settings"):
        assert f'id="{anchor}"' in text
    assert "a warning" in text and "series.tif" in text


def test_stats_report_on_predictions_and_ground_truth(predictions_file, tmp_path):
    out = run_stats_report(predictions_file, tmp_path / "stats", score_threshold=0.5,
                           frame_interval=1.5, max_overlays=2)
    assert out.report.is_file() and out.instances_csv.is_file() and out.summary_csv.is_file()
    import pandas as pd

    instances = pd.read_csv(out.instances_csv)
    assert len(instances) == 9 and "equivalent_diameter_nm" in instances.columns
    summary = pd.read_csv(out.summary_csv)
    assert summary.loc[summary["scope"] == "all", "count"].sum() == 9
    assert "touch the image border" not in out.report.read_text()  # the border disk scores 0.3

    import json

    gt = json.loads(predictions_file.read_text())
    for ann in gt["annotations"]:
        ann.pop("score")
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    out = run_stats_report(gt_file, tmp_path / "gt_stats", exclude_border=True)
    assert len(out.instances) == 9 and out.instances["score"].isna().all()
    text = out.report.read_text()
    assert "ground truth" in text
    assert "1 object touches the image border; their sizes are lower bounds and they are left " \
        "out" in text

    # predicted beside annotated: the annotations keep every object, the predictions those
    # scoring >= 0.8; the two sides pair by file and frame, not by image id
    for im in gt["images"]:
        im["id"] += 100
    for ann in gt["annotations"]:
        ann["image_id"] += 100
    gt_file.write_text(json.dumps(gt))
    out = run_stats_report(predictions_file, tmp_path / "compare", score_threshold=0.8,
                           annotations=gt_file, max_overlays=0)
    table = pd.read_csv(tmp_path / "compare" / "comparison.csv")
    assert table["annotated_count"].sum() == len(gt["annotations"])
    assert table["predicted_count"].sum() == len(out.instances) < len(gt["annotations"])
    assert (table["count_difference"] == table["predicted_count"]
            - table["annotated_count"]).all()
    text = out.report.read_text()
    assert 'id="compare"' in text and "predicted and annotated objects per image" in text
    figures = {p.name for p in (tmp_path / "compare" / "figures").iterdir()}
    assert {"compare_sizes_equivalent_diameter_nm.png", "compare_counts_per_image.svg"} <= figures


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _screenshot(browser: str, html_file: Path, png: Path, profile: Path,
                height: int = 2200) -> np.ndarray:
    import cv2

    cmd = [
        browser, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
        f"--window-size=1280,{height}", f"--screenshot={png}", html_file.resolve().as_uri(),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot: {result.stderr[-2000:]}"
    return cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)


def _pixels_like(rgb: np.ndarray, colour) -> np.ndarray:
    return (np.abs(rgb.astype(int) - np.array(colour)).max(axis=2) <= 12)


def test_plots_are_visible_in_headless_chromium(predictions, tmp_path):
    browser = _chromium()
    if browser is None:
        why = ("headless Chromium not found, so the report is not checked in a browser; install "
               "it (Debian/Ubuntu: apt-get install -y chromium) to run this test")
        if os.environ.get("EMDET_REQUIRE_BROWSER"):  # CI installs it and must not skip
            pytest.fail(why + " (EMDET_REQUIRE_BROWSER is set)")
        pytest.skip(why)
    report = _report(predictions, tmp_path / "report.html")
    # The same page without its pictures: what the browser shows if the plots do not render.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', report.read_text()))
    shot = _screenshot(browser, report, tmp_path / "report.png", tmp_path / "profile1")
    control = _screenshot(browser, bare, tmp_path / "bare.png", tmp_path / "profile2")
    assert shot.shape[:2] == (2200, 1280)

    particle, rod = class_colour(0), class_colour(1)  # histogram bar colours
    blue = _pixels_like(shot, particle)
    assert blue.sum() > 2000, "the particle histogram is not visible"
    assert _pixels_like(shot, rod).sum() > 500, "the rod histogram is not visible"
    assert _pixels_like(control, particle).sum() < 50
    # Where the bars are, the plot is drawn: axes and labels (dark pixels) next to them.
    rows = np.flatnonzero(blue.any(axis=1))
    band = shot[rows.min() : rows.max() + 1]
    assert (band.max(axis=2) < 100).sum() > 500
    assert (shot.min(axis=2) < 250).mean() > 0.05  # the page is far from blank

    # predicted beside annotated: the paired count bars and the overlaid histograms show
    from emdet.stats.report import ANNOTATED_COLOUR, PREDICTED_COLOUR, compare_counts

    images = images_table(predictions)
    instances = measure_coco(predictions)
    categories = [c["name"] for c in predictions["categories"]]
    summary = summarize(instances, images, categories=categories)
    fewer = instances[instances["score"] >= 0.8]
    fewer_summary = summarize(fewer, images, categories=categories)
    table = compare_counts(fewer_summary, summary, "equivalent_diameter_nm")
    compare = write_report(tmp_path / "compare.html", instances=fewer, summary=fewer_summary,
                           images=images, categories=categories, reference=(instances, table))
    shot = _screenshot(browser, compare, tmp_path / "compare.png", tmp_path / "profile3",
                       height=4000)
    annotated = tuple(round(255 * v) for v in ANNOTATED_COLOUR)
    predicted = tuple(round(255 * v) for v in PREDICTED_COLOUR)
    assert _pixels_like(shot, annotated).sum() > 500, "the annotated bars are not visible"
    assert _pixels_like(shot, predicted).sum() > 500, "the predicted bars are not visible"


def test_axis_labels_name_quantity_and_unit():
    from emdet.stats.report import axis_label

    assert axis_label("equivalent_diameter_nm") == "equivalent diameter (nm)"
    assert axis_label("area_nm2") == "area (nm²)"
    assert axis_label("rbox_length_px") == "rbox length (px)"
    assert axis_label("orientation_deg") == "orientation (°)"
    assert axis_label("aspect_ratio") == "aspect ratio"


def test_histogram_bins_follow_freedman_diaconis_within_limits():
    from emdet.stats.report import histogram_bins

    rng = np.random.default_rng(0)
    assert histogram_bins(np.array([10.0, 11.0, 12.0, 30.0])) == 4  # 4 objects: not 30 bins
    normal = rng.normal(50, 5, 1000)
    fd = len(np.histogram_bin_edges(normal, bins="fd")) - 1
    assert 5 < fd < 60 and histogram_bins(normal) == fd
    assert histogram_bins(rng.normal(50, 5, 100_000)) == 60  # capped
    assert histogram_bins(np.full(10, 3.0)) == 1 and histogram_bins(np.array([np.nan])) == 1
