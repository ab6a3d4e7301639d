"""Statistics of detected or annotated objects, as tables, and the HTML report that shows them.

* :mod:`.measure`: DataFrames from COCO files (:func:`measure_coco`, :func:`images_table`),
  label images (:func:`measure_labels`) or masks (:func:`measure_masks`) plus a pixel size;
  :func:`summarize` gives counts, densities and size statistics per image and category.
* :mod:`.report`: :func:`write_report` renders those tables as one self-contained HTML page.
* :mod:`.pipeline`: :func:`run_stats_report`, COCO file -> CSVs + report (tools/stats_report.py).
"""

from emdet.stats.measure import (
    StatsError,
    density_unit,
    images_table,
    load_coco,
    measure_coco,
    measure_labels,
    measure_masks,
    size_columns,
    summarize,
    unit_suffix,
)
from emdet.stats.pipeline import StatsOutputs, run_stats_report
from emdet.stats.report import write_report

__all__ = [
    "StatsError",
    "StatsOutputs",
    "density_unit",
    "images_table",
    "load_coco",
    "measure_coco",
    "measure_labels",
    "measure_masks",
    "run_stats_report",
    "size_columns",
    "summarize",
    "unit_suffix",
    "write_report",
]
