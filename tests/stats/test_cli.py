"""tools/stats_report.py as a user runs it."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_stats_report_cli(predictions_file, tmp_path):
    out = tmp_path / "stats"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/stats_report.py"), "--input", str(predictions_file),
         "--output", str(out), "--pixel-size", "0.25", "--unit", "nm", "--score-threshold",
         "0.5"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "9 objects in 4 images" in result.stdout
    instances = pd.read_csv(out / "instances.csv")
    for col in ("image_id", "category", "score", "area_px", "area_nm2", "equivalent_diameter_nm",
                "major_axis_nm", "minor_axis_nm", "aspect_ratio", "orientation_deg",
                "perimeter_nm", "circularity", "rbox_length_nm", "rbox_width_nm",
                "rbox_angle_deg"):
        assert col in instances.columns, col
    # --pixel-size overrides the images' own 0.5 and 2 nm
    first = instances.iloc[0]
    assert first["equivalent_diameter_nm"] == pytest.approx(2 * 20 * 0.25, rel=0.01)
    summary = pd.read_csv(out / "summary.csv")
    assert {"count", "density_per_um2", "equivalent_diameter_nm_median"} <= set(summary.columns)
    assert (out / "report.html").stat().st_size > 10_000
    # every figure also for papers: 300 dpi PNG (3x the embedded 100 dpi) and SVG
    from PIL import Image

    names = sorted(p.name for p in (out / "figures").iterdir())
    assert "sizes_equivalent_diameter_nm.png" in names and "counts_per_image.svg" in names
    assert len(names) % 2 == 0 and {n.rsplit(".", 1)[1] for n in names} == {"png", "svg"}
    with Image.open(out / "figures" / "sizes_equivalent_diameter_nm.png") as im:
        assert im.info["dpi"][0] == pytest.approx(300, abs=1) and im.width > 1000
    svg = (out / "figures" / "counts_per_image.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_stats_report_says_on_the_console_when_sizes_are_in_pixels(shapes, tmp_path):
    import json

    data = shapes.make_predictions()
    for image in data["images"]:
        image.pop("pixel_size", None)
        image.pop("unit", None)
    path = tmp_path / "uncalibrated.json"
    path.write_text(json.dumps(data))
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/stats_report.py"), "--input", str(path),
         "--output", str(tmp_path / "stats")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: No image is calibrated: sizes are in pixels" in result.stdout


def test_stats_report_cli_explains_bad_input(tmp_path):
    spec = importlib.util.spec_from_file_location("stats_tool", REPO / "tools/stats_report.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    bad = tmp_path / "list.json"
    bad.write_text("[]")
    with pytest.raises(SystemExit, match="list.json: expected a JSON object with .images."):
        tool.main(["--input", str(bad), "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="does not exist"):
        tool.main(["--input", str(tmp_path / "nope.json"), "--output", str(tmp_path / "o")])
