"""summarize: counts, densities and size statistics on a hand-made table."""

import numpy as np
import pandas as pd
import pytest

from emdet.stats import images_table, measure_coco, summarize


@pytest.fixture
def tables():
    instances = pd.DataFrame(
        {
            "image_id": [1, 1, 1, 1, 2, 2],
            "category": ["A", "A", "A", "B", "B", "B"],
            "equivalent_diameter_nm": [10.0, 20.0, 30.0, 5.0, 7.0, 9.0],
            "area_nm2": [100.0, 400.0, 900.0, 25.0, 49.0, 81.0],
        }
    )
    images = pd.DataFrame(
        {
            "image_id": [1, 2],
            "file_name": ["one.tif", "two.tif"],
            "frame": [0, 0],
            "unit": ["nm", "nm"],
            "area_nm2": [10_000.0, 10_000.0],  # 100 x 100 px at 1 nm = 0.01 um2
        }
    )
    return instances, images


def test_per_image_rows_hand_computed(tables):
    instances, images = tables
    summary = summarize(instances, images, categories=["A", "B"])
    assert list(summary.columns[:8]) == ["scope", "image_id", "file_name", "frame", "category",
                                         "count", "image_area_nm2", "density_per_um2"]
    one_a = summary[(summary["scope"] == "image") & (summary["image_id"] == 1)
                    & (summary["category"] == "A")].iloc[0]
    assert one_a["count"] == 3
    assert one_a["density_per_um2"] == pytest.approx(300.0)  # 3 objects in 0.01 um2
    assert one_a["equivalent_diameter_nm_mean"] == pytest.approx(20.0)
    assert one_a["equivalent_diameter_nm_median"] == pytest.approx(20.0)
    assert one_a["equivalent_diameter_nm_std"] == pytest.approx(10.0)  # ddof = 1
    assert one_a["equivalent_diameter_nm_p25"] == pytest.approx(15.0)
    assert one_a["equivalent_diameter_nm_p75"] == pytest.approx(25.0)
    assert one_a["equivalent_diameter_nm_p5"] == pytest.approx(11.0)
    assert one_a["area_nm2_mean"] == pytest.approx(1400 / 3)
    one_b = summary[(summary["image_id"] == 1) & (summary["category"] == "B")].iloc[0]
    assert one_b["count"] == 1 and np.isnan(one_b["equivalent_diameter_nm_std"])
    assert one_b["equivalent_diameter_nm_median"] == 5.0


def test_images_without_objects_count_zero(tables):
    instances, images = tables
    summary = summarize(instances, images, categories=["A", "B"])
    two_a = summary[(summary["image_id"] == 2) & (summary["category"] == "A")].iloc[0]
    assert two_a["count"] == 0 and two_a["density_per_um2"] == 0
    assert np.isnan(two_a["equivalent_diameter_nm_mean"])
    assert len(summary[summary["scope"] == "image"]) == 4


def test_all_images_rows(tables):
    instances, images = tables
    summary = summarize(instances, images, categories=["A", "B"])
    overall = summary[summary["scope"] == "all"].set_index("category")
    assert overall.loc["A", "count"] == 3 and overall.loc["B", "count"] == 3
    assert overall.loc["A", "image_area_nm2"] == 20_000
    assert overall.loc["A", "density_per_um2"] == pytest.approx(150.0)
    assert overall.loc["B", "equivalent_diameter_nm_mean"] == pytest.approx(7.0)
    assert overall.loc["B", "equivalent_diameter_nm_std"] == pytest.approx(2.0)
    assert overall.loc["A", "file_name"] == "(all images)"


def test_summary_of_a_coco_file(predictions):
    images = images_table(predictions, frame_interval=2.5)
    assert images["time_s"].tolist() == [0.0, 0.0, 2.5, 5.0]
    summary = summarize(measure_coco(predictions), images,
                        categories=[c["name"] for c in predictions["categories"]])
    series = summary[(summary["file_name"] == "series.tif") & (summary["category"] == "particle")]
    assert series["count"].tolist() == [1, 2, 3]
    rods = summary[(summary["scope"] == "image") & (summary["category"] == "rod")]
    assert rods["count"].tolist() == [1, 0, 0, 0]
    assert "rbox_length_nm_mean" in summary.columns
