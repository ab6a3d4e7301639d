"""Measurements against golden values: disks, rectangles, rotated boxes, units and NaNs."""

import math

import numpy as np
import pandas as pd
import pytest

from emdet.stats import (
    StatsError,
    images_table,
    measure_coco,
    measure_labels,
    measure_masks,
    unit_suffix,
)
from emdet.stats.measure import feret_diameter_max


@pytest.mark.parametrize("r,p", [(40, 0.5), (12, 2.0), (100, 0.137)])
def test_disk_golden_values(shapes, r, p):
    mask = shapes.disk(260, 260, 130, 125, r)
    row = measure_masks([mask], pixel_size=p, unit="nm").iloc[0]
    rel = 0.02 if r < 20 else 0.005  # discretisation
    assert row["area_nm2"] == pytest.approx(math.pi * r**2 * p**2, rel=rel)
    assert row["area_px"] == mask.sum()
    assert row["equivalent_diameter_nm"] == pytest.approx(2 * r * p, rel=rel)
    assert row["major_axis_nm"] == pytest.approx(2 * r * p, rel=0.02)
    assert row["minor_axis_nm"] == pytest.approx(2 * r * p, rel=0.02)
    assert row["aspect_ratio"] == pytest.approx(1, abs=0.02)
    assert row["perimeter_nm"] == pytest.approx(2 * math.pi * r * p, rel=0.03)
    assert row["circularity"] == pytest.approx(1, abs=0.05)
    assert row["feret_diameter_max_nm"] == pytest.approx(2 * r * p, abs=1.5 * p)
    assert (row["centroid_x_px"], row["centroid_y_px"]) == pytest.approx((125, 130), abs=0.01)
    assert not row["border"]


def test_rectangle_axes_and_orientation_golden_values():
    mask = np.zeros((100, 140), bool)
    mask[40:60, 30:90] = True  # 60 x 20 px, long side along x
    row = measure_masks([mask], pixel_size=2.0, unit="nm").iloc[0]
    assert row["area_px"] == 1200 and row["area_nm2"] == 4800
    # The ellipse with the rectangle's second moments: axis = 4 sqrt(variance), and n pixel
    # centres along a side have variance (n**2 - 1) / 12 (-> side * 4 / sqrt(12) for large n).
    assert row["major_axis_nm"] == pytest.approx(4 * math.sqrt((60**2 - 1) / 12) * 2, rel=1e-9)
    assert row["minor_axis_nm"] == pytest.approx(4 * math.sqrt((20**2 - 1) / 12) * 2, rel=1e-9)
    assert row["aspect_ratio"] == pytest.approx(3, rel=0.01)
    assert row["orientation_deg"] == pytest.approx(0, abs=1e-6)
    # Crofton's perimeter is unbiased over orientations; axis-parallel edges read 6 % short.
    assert row["perimeter_nm"] == pytest.approx(2 * (60 + 20) * 2, rel=0.07)
    assert row["circularity"] == pytest.approx(4 * math.pi * 1200 / 160**2, rel=0.15)
    assert row["feret_diameter_max_nm"] == pytest.approx(2 * math.hypot(60, 20))
    assert feret_diameter_max(np.ones((1, 1), bool)) == pytest.approx(math.sqrt(2))


def test_perimeter_is_unbiased_over_orientations(shapes):
    perimeters = [
        measure_masks([shapes.rotated_rect(200, 200, (100, 100, 120, 40, a + 0.3))])
        .iloc[0]["perimeter_px"]
        for a in range(0, 90, 5)
    ]
    assert np.mean(perimeters) == pytest.approx(2 * (120 + 40), rel=0.01)


@pytest.mark.parametrize("angle", [-75, -45, -20, 0, 30, 60, 89])
def test_orientation_is_counter_clockwise_on_screen_like_rbox(shapes, angle):
    mask = shapes.rotated_rect(200, 200, (100, 100, 120, 24, angle))
    row = measure_masks([mask], pixel_size=1.0, unit="px").iloc[0]
    diff = (row["orientation_deg"] - angle + 90) % 180 - 90
    assert abs(diff) < 1.0
    assert -90 <= row["orientation_deg"] < 90


def test_rbox_length_width_angle(predictions):
    predictions["annotations"].append(
        {"id": 99, "image_id": 1, "category_id": 2, "rbox": [100, 100, 10, 40, 20],
         "bbox": [0, 0, 1, 1], "score": 0.99}
    )  # no segmentation: measured as the rasterised rotated box
    table = measure_coco(predictions)
    rods = table[table["category"] == "rod"].set_index("annotation_id")
    # w < h: the length is h, along the height axis, i.e. at 20 + 90 = 110 = -70 degrees
    assert rods.loc[99, "rbox_length_nm"] == pytest.approx(40 * 0.5)
    assert rods.loc[99, "rbox_width_nm"] == pytest.approx(10 * 0.5)
    assert rods.loc[99, "rbox_angle_deg"] == pytest.approx(-70)
    assert rods.loc[99, "area_nm2"] == pytest.approx(400 * 0.25, rel=0.06)
    assert (rods.loc[99, "orientation_deg"] + 70 + 90) % 180 - 90 == pytest.approx(0, abs=1.5)
    assert rods.loc[3, "rbox_length_nm"] == pytest.approx(30) and rods.loc[3, "rbox_angle_deg"] == 0
    particles = table[table["category"] == "particle"]
    assert particles["rbox_length_nm"].isna().all()


def test_coco_table_columns_scores_and_border(predictions):
    table = measure_coco(predictions)
    assert len(table) == 4 + 6
    assert list(table.columns[:7]) == ["annotation_id", "image_id", "file_name", "frame",
                                       "category_id", "category", "score"]
    for col in ("area_px", "area_nm2", "equivalent_diameter_nm", "major_axis_nm",
                "minor_axis_nm", "aspect_ratio", "orientation_deg", "perimeter_nm",
                "circularity", "feret_diameter_max_nm", "border", "pixel_size", "unit"):
        assert col in table.columns, col
    first = table.iloc[0]
    assert first["equivalent_diameter_nm"] == pytest.approx(2 * 20 * 0.5, rel=0.01)
    series = table[table["file_name"] == "series.tif"]
    assert series["equivalent_diameter_nm"].to_numpy() == pytest.approx(2 * 8 * 2.0, rel=0.03)
    assert table["border"].tolist()[:4] == [False, False, False, True]
    strict = measure_coco(predictions, score_threshold=0.5)
    assert len(strict) == 9 and strict["score"].min() >= 0.5


def test_ground_truth_without_scores_and_polygons(predictions):
    for ann in predictions["annotations"]:
        del ann["score"]
    predictions["annotations"][0]["segmentation"] = [[10.0, 10.0, 50.0, 10.0, 50.0, 30.0,
                                                      10.0, 30.0]]
    table = measure_coco(predictions, score_threshold=0.5)  # no score: nothing is dropped
    assert len(table) == 10 and table["score"].isna().all()
    assert table.iloc[0]["area_px"] == 40 * 20


def test_pixel_size_override_and_unit_names(predictions):
    table = measure_coco(predictions, pixel_size=0.002, unit="µm")
    assert "area_um2" in table.columns and "equivalent_diameter_um" in table.columns
    assert table.iloc[0]["equivalent_diameter_um"] == pytest.approx(2 * 20 * 0.002, rel=0.01)
    assert unit_suffix("1/nm") == "per_nm" and unit_suffix(None) == "px"


def test_uncalibrated_images_get_nan_sizes_or_pixel_units(predictions):
    predictions["images"][0]["pixel_size"] = None
    table = measure_coco(predictions)
    first = table[table["image_id"] == 1]
    assert first["area_nm2"].isna().all() and (first["area_px"] > 0).all()
    assert table[table["image_id"] == 2]["area_nm2"].notna().all()
    for img in predictions["images"]:
        img["pixel_size"], img["unit"] = None, None
    table = measure_coco(predictions)
    assert table["unit"].eq("px").all() and (table["area_px2"] == table["area_px"]).all()


def test_different_units_are_an_error(predictions):
    predictions["images"][1]["unit"] = "1/nm"
    with pytest.raises(StatsError, match="different units"):
        measure_coco(predictions)


def test_labels_and_masks_agree(shapes):
    labels = np.zeros((120, 160), np.int32)
    labels[shapes.disk(120, 160, 40, 40, 15)] = 4
    labels[60:80, 90:150] = 9
    labels[0:5, 0:5] = 2
    by_labels = measure_labels(labels, pixel_size=0.5, unit="nm")
    by_masks = measure_masks([labels == v for v in (2, 4, 9)], pixel_size=0.5, unit="nm")
    assert by_labels["label"].tolist() == [2, 4, 9]
    pd.testing.assert_frame_equal(by_labels.drop(columns="label"), by_masks)
    assert by_labels["border"].tolist() == [True, False, False]


def test_empty_inputs(predictions):
    predictions["annotations"] = []
    table = measure_coco(predictions)
    assert len(table) == 0 and "area_nm2" in table.columns
    assert len(measure_labels(np.zeros((5, 5), np.int32))) == 0
    empty = measure_masks([np.zeros((5, 5), bool)], pixel_size=1.0)
    assert empty["area_px"].tolist() == [0] and empty["area_px2"].isna().all()


def test_synthetic_dataset_areas_match_its_annotations(tmp_path):
    from emdet.data.synthetic import make_synthetic

    root = make_synthetic("vesicles", num=2, size=128, seed=1, output=tmp_path / "ves",
                          split={"train": 1.0}, progress=False)
    json_file = root / "annotations" / "train.json"
    table = measure_coco(json_file)
    import json

    coco = json.loads(json_file.read_text())
    assert len(table) == len(coco["annotations"]) > 5
    assert table["area_px"].tolist() == [a["area"] for a in coco["annotations"]]
    assert table["unit"].eq("nm").all()
    images = images_table(json_file)
    assert images["pixel_size"].eq(2.0).all() and images["area_nm2"].eq(128 * 128 * 4).all()
