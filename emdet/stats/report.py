"""One self-contained HTML page from the statistics tables: plots, tables, overlays, settings.

:func:`write_report` only renders what it is given: the tables of :mod:`emdet.stats.measure`
(instances, summary, images), example overlay pictures and a dict of settings. Plots are drawn
with matplotlib and embedded, like the overlays, as base64 PNG, and the styles are inline: the
page opens from disk in any browser, with no server, no scripts and nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emdet.inference.overlay import class_colour
from emdet.stats.measure import size_columns
from emdet.utils.atomic import atomic_write

__all__ = [
    "axis_label",
    "histogram_bins",
    "plot_counts_over_time",
    "plot_counts_per_image",
    "plot_size_histograms",
    "render_report",
    "write_report",
]

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1200px; color: #222; background: #fff; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px;
     border-bottom: 1px solid #ccc; padding-bottom: 4px; }
p.meta { color: #555; margin-top: 0; } .warn { background: #fff4d6; border: 1px solid #e0c060;
     padding: 8px 12px; margin: 8px 0; }
nav a { margin-right: 14px; color: #333; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { white-space: normal; overflow-wrap: break-word; }
th { background: #eee; } td.l, th.l { text-align: left; }
img.plot { max-width: 100%; display: block; margin: 8px 0; }
.overlays { display: flex; flex-wrap: wrap; gap: 12px; }
.overlays figure { margin: 0; max-width: 560px; } .overlays img { max-width: 100%; }
figcaption { font-size: 12px; color: #555; }
"""


def _rgb(index: int) -> tuple[float, float, float]:
    r, g, b = class_colour(index)
    return r / 255, g / 255, b / 255


def _png(fig, export: dict[str, bytes] | None = None, name: str = "") -> bytes:
    """The figure as the report's PNG (100 dpi); with ``export``, also ``name.png`` at 300 dpi
    and ``name.svg`` into it, for papers."""
    def save(fmt: str, dpi: int) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")  # no clipped labels
        return buf.getvalue()

    import matplotlib.pyplot as plt

    png = save("png", 100)
    if export is not None and name:
        export[f"{name}.png"] = save("png", 300)
        export[f"{name}.svg"] = save("svg", 300)
    plt.close(fig)
    return png


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), layout="constrained")


#: Unit suffixes of the measurement columns and how an axis names them.
_UNITS = {"nm2": "nm²", "um2": "µm²", "px2": "px²", "nm": "nm", "um": "µm", "px": "px",
          "deg": "°", "s": "s"}


def axis_label(column: str) -> str:
    """A column name as an axis label with quantity and unit:
    ``"equivalent_diameter_nm"`` -> ``"equivalent diameter (nm)"``, ``"area_nm2"`` ->
    ``"area (nm²)"``, ``"aspect_ratio"`` -> ``"aspect ratio"``."""
    stem, _, suffix = column.rpartition("_")
    if stem and suffix in _UNITS:
        return f"{stem.replace('_', ' ')} ({_UNITS[suffix]})"
    return column.replace("_", " ")


def histogram_bins(values: np.ndarray, *, minimum: int = 5, maximum: int = 60) -> int:
    """Number of histogram bins by the Freedman-Diaconis rule (``numpy.histogram_bin_edges``
    ``"fd"``: width ``2 IQR / n^(1/3)``), kept between ``minimum`` and ``maximum`` and at most
    one bin per object."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size < 2 or np.ptp(values) == 0:
        return 1
    k = len(np.histogram_bin_edges(values, bins="fd")) - 1
    return int(min(values.size, max(minimum, min(maximum, k))))


def plot_size_histograms(
    instances: pd.DataFrame, column: str, categories: Sequence[str], *, bins: int | None = None,
    export: dict[str, bytes] | None = None,
) -> bytes | None:
    """PNG of one histogram of ``column`` per category (colours as in the overlays); bins by
    :func:`histogram_bins` unless ``bins`` is given; ``export`` gets ``sizes_<column>.png``
    (300 dpi) and ``.svg``."""
    if column not in instances:
        return None
    present = [
        c for c in categories if instances.loc[instances["category"] == c, column].notna().any()
    ]
    if not present:
        return None
    n = len(present)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(4.2 * cols, 3.0 * rows)
    for k, cat in enumerate(present):
        ax = fig.add_subplot(rows, cols, k + 1)
        values = instances.loc[instances["category"] == cat, column].dropna().to_numpy()
        colour = _rgb(list(categories).index(cat))
        ax.hist(values, bins=bins or histogram_bins(values), color=colour, edgecolor="white",
                linewidth=0.4)
        ax.axvline(np.median(values), color="#222", linestyle="--", linewidth=1)
        ax.set_title(f"{cat} (n = {values.size}, median {np.median(values):.3g})", fontsize=10)
        ax.set_xlabel(axis_label(column))
        ax.set_ylabel("objects")
    return _png(fig, export, f"sizes_{column}")


def plot_counts_per_image(summary: pd.DataFrame, categories: Sequence[str], *,
                          export: dict[str, bytes] | None = None) -> bytes | None:
    """PNG of object counts per image, stacked by category (a line per category when there are
    more than 60 images); ``export`` gets ``counts_per_image.png`` (300 dpi) and ``.svg``."""
    per = summary[summary["scope"] == "image"]
    if per.empty:
        return None
    table = per.pivot_table(index=["image_id"], columns="category", values="count",
                            aggfunc="sum", sort=False).reindex(columns=list(categories)).fillna(0)
    labels = per.drop_duplicates("image_id").set_index("image_id")
    names = [
        f"{labels.loc[i, 'file_name']}" + (f" [{labels.loc[i, 'frame']}]"
                                           if _n_frames(per, labels.loc[i, "file_name"]) > 1
                                           else "")
        for i in table.index
    ]
    n = len(table)
    fig = _figure(min(14, max(6, 0.35 * n + 3)), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    if n <= 60:
        bottom = np.zeros(n)
        for k, cat in enumerate(categories):
            ax.bar(x, table[cat].to_numpy(), bottom=bottom, color=_rgb(k), label=cat)
            bottom += table[cat].to_numpy()
        ax.set_xticks(x)
        ax.set_xticklabels([s[-28:] for s in names], rotation=60, ha="right", fontsize=8)
    else:
        for k, cat in enumerate(categories):
            ax.plot(x, table[cat].to_numpy(), color=_rgb(k), label=cat, linewidth=1.2)
        ax.set_xlabel("image (in file order)")
    ax.set_ylabel("objects")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig, export, "counts_per_image")


def _n_frames(per: pd.DataFrame, file_name: str) -> int:
    return int(per.loc[per["file_name"] == file_name, "frame"].nunique())


def plot_counts_over_time(
    summary: pd.DataFrame, images: pd.DataFrame, categories: Sequence[str], *,
    export: dict[str, bytes] | None = None,
) -> bytes | None:
    """PNG of counts per frame for every series (a file with several frames), one panel per
    file: against ``time_s`` when known, else the frame index."""
    per = summary[summary["scope"] == "image"]
    series = [f for f, g in images.groupby("file_name", sort=False) if len(g) > 1]
    if not series:
        return None
    shown = series[:6]
    fig = _figure(7.5, 2.8 * len(shown))
    for row, file_name in enumerate(shown):
        ax = fig.add_subplot(len(shown), 1, row + 1)
        imgs = images[images["file_name"] == file_name].sort_values("frame")
        use_time = imgs["time_s"].notna().all()
        xcol = "time_s" if use_time else "frame"
        for k, cat in enumerate(categories):
            counts = per[(per["file_name"] == file_name) & (per["category"] == cat)]
            merged = imgs[["image_id", xcol]].merge(counts[["image_id", "count"]], on="image_id",
                                                    how="left").fillna({"count": 0})
            ax.plot(merged[xcol], merged["count"], marker="o", markersize=3, color=_rgb(k),
                    label=cat)
        ax.set_title(file_name, fontsize=10)
        if not use_time:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("time (s)" if use_time else "frame")
        ax.set_ylabel("objects")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig, export, "counts_over_time")


#: The two sides of a comparison (Okabe-Ito blue and vermillion, safe for colour blindness).
PREDICTED_COLOUR, ANNOTATED_COLOUR = (0.0, 0.447, 0.698), (0.835, 0.369, 0.0)


def compare_counts(summary: pd.DataFrame, reference: pd.DataFrame, column: str | None
                   ) -> pd.DataFrame:
    """Per image (paired by ``file_name`` and ``frame``) and category: predicted and annotated
    counts, their difference, and the median of ``column`` on both sides."""
    keys = ["file_name", "frame", "category"]
    take = ["count"] + ([f"{column}_median"] if column else [])

    def side(df: pd.DataFrame, name: str) -> pd.DataFrame:
        per = df[df["scope"] == "image"].copy()
        per["frame"] = per["frame"].fillna(0).astype(int)
        cols = [c for c in take if c in per.columns]
        return per[keys + cols].rename(columns={c: f"{name}_{c}" for c in cols})

    table = side(summary, "predicted").merge(side(reference, "annotated"), on=keys, how="outer")
    for c in ("predicted_count", "annotated_count"):
        table[c] = table[c].fillna(0).astype(int)
    table["count_difference"] = table["predicted_count"] - table["annotated_count"]
    return table.sort_values(keys).reset_index(drop=True)


def plot_size_comparison(instances: pd.DataFrame, reference: pd.DataFrame, column: str,
                         categories: Sequence[str], *, export: dict[str, bytes] | None = None
                         ) -> bytes | None:
    """Predicted (outline) and annotated (filled) histograms of ``column`` overlaid per
    category, on shared bins; ``export`` gets ``compare_sizes_<column>``."""
    def values(df, cat):
        if column not in df:
            return np.zeros(0)
        return df.loc[df["category"] == cat, column].dropna().to_numpy()

    present = [c for c in categories if len(values(instances, c)) or len(values(reference, c))]
    if not present:
        return None
    cols = min(3, len(present))
    rows = int(np.ceil(len(present) / cols))
    fig = _figure(4.6 * cols, 3.1 * rows)
    for k, cat in enumerate(present):
        ax = fig.add_subplot(rows, cols, k + 1)
        pred, ref = values(instances, cat), values(reference, cat)
        both = np.concatenate([pred, ref])
        edges = np.histogram_bin_edges(both, bins=histogram_bins(both))
        if len(ref):
            ax.hist(ref, bins=edges, color=ANNOTATED_COLOUR, alpha=0.45,
                    label=f"annotated (n = {len(ref)}, median {np.median(ref):.3g})")
        if len(pred):
            ax.hist(pred, bins=edges, histtype="step", color=PREDICTED_COLOUR, linewidth=1.8,
                    label=f"predicted (n = {len(pred)}, median {np.median(pred):.3g})")
        ax.set_title(cat, fontsize=10)
        ax.set_xlabel(axis_label(column))
        ax.set_ylabel("objects")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.28), borderaxespad=0)
    return _png(fig, export, f"compare_sizes_{column}")


def plot_counts_paired(table: pd.DataFrame, *, export: dict[str, bytes] | None = None
                       ) -> bytes | None:
    """Counts per image, predicted beside annotated (summed over categories); with more than
    60 images a scatter of predicted against annotated with the line of equality."""
    if table.empty:
        return None
    per = table.groupby(["file_name", "frame"], sort=True)[["predicted_count",
                                                            "annotated_count"]].sum()
    n = len(per)
    fig = _figure(min(14, max(6, 0.4 * n + 3)) if n <= 60 else 5.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    if n <= 60:
        x = np.arange(n)
        ax.bar(x - 0.2, per["annotated_count"], width=0.4, color=ANNOTATED_COLOUR,
               label="annotated")
        ax.bar(x + 0.2, per["predicted_count"], width=0.4, color=PREDICTED_COLOUR,
               label="predicted")
        files = per.index.get_level_values("file_name")
        names = [f"{f[-28:]}" + (f" [{fr}]" if (files == f).sum() > 1 else "")
                 for f, fr in per.index]
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("objects")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        top = float(max(per.max().max(), 1))
        ax.plot([0, top], [0, top], color="#888", linewidth=1, label="predicted = annotated")
        ax.scatter(per["annotated_count"], per["predicted_count"], s=12,
                   color=PREDICTED_COLOUR, label="images")
        ax.set_xlabel("annotated objects per image")
        ax.set_ylabel("predicted objects per image")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig, export, "compare_counts_per_image")


def _img(png: bytes, alt: str, cls: str = "plot") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    return str(value)


def _table(df: pd.DataFrame, *, max_rows: int = 60) -> str:
    if df.empty:
        return "<p>(empty)</p>"
    shown = df.head(max_rows)
    # "equivalent_diameter_nm_median" -> "equivalent diameter nm median": headers wrap, so the
    # table fits the page instead of scrolling sideways
    head = "".join(
        f'<th class="{"l" if df[c].dtype == object else ""}" title="{html.escape(str(c))}">'
        f'{html.escape(str(c).replace("_", " "))}</th>'
        for c in shown.columns
    )
    body = []
    for row in shown.itertuples(index=False):
        cells = "".join(
            f'<td class="{"l" if isinstance(v, str) else ""}">{html.escape(_fmt(v))}</td>'
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    more = (f"<p>{len(df) - max_rows} more rows in the CSV file.</p>"
            if len(df) > max_rows else "")
    return f'<div class="wide"><table><tr>{head}</tr>{"".join(body)}</table></div>{more}'


def _settings_table(settings: Mapping[str, Any]) -> str:
    rows = []
    for key, value in settings.items():
        text = value if isinstance(value, str) else _json(value)
        rows.append(f'<tr><th class="l">{html.escape(str(key))}</th>'
                    f'<td class="l">{html.escape(str(text))}</td></tr>')
    return f"<table>{''.join(rows)}</table>"


def _json(value: Any) -> str:
    import json

    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def write_report(path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`render_report` ``(**kwargs)`` to ``path`` atomically; return the path."""
    path = Path(path)
    atomic_write(path, render_report(**kwargs))
    return path


def render_report(
    *,
    instances: pd.DataFrame,
    summary: pd.DataFrame,
    images: pd.DataFrame,
    categories: Sequence[str],
    settings: Mapping[str, Any] | None = None,
    overlays: Sequence[tuple[str, bytes]] = (),
    title: str = "emdet statistics",
    notes: Sequence[str] = (),
    figures: dict[str, bytes] | None = None,
    reference: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> str:
    """The HTML report: one self-contained page (figures and overlays embedded).

    Parameters
    ----------
    instances, summary, images : pandas.DataFrame
        From :func:`~emdet.stats.measure.measure_coco`, :func:`~emdet.stats.measure.summarize`
        and :func:`~emdet.stats.measure.images_table`.
    categories : sequence of str
        Category names in id order (their colours match the overlays).
    settings : mapping, optional
        Shown as a table: the run's settings (input, thresholds, model, tile, ...).
    overlays : sequence of (caption, PNG bytes)
        Example overlays to show.
    title : str
    notes : sequence of str
        Warnings shown at the top (e.g. uncalibrated images).
    figures : dict, optional
        Gets every figure as ``NAME.png`` (300 dpi) and ``NAME.svg`` bytes, for papers
        (:func:`emdet.stats.run_stats_report` writes them to ``figures/``).
    reference : (instances, comparison), optional
        The annotated objects of the same images and :func:`compare_counts` of the two sides:
        a "Predicted vs annotated" section with the size histograms overlaid and the counts
        per image side by side.
    """
    categories = list(categories)
    sizes = size_columns(instances)
    diameter = next((c for c in sizes if c.startswith("equivalent_diameter_")), None)
    length = next((c for c in sizes if c.startswith("rbox_length_")), None)
    n_images = len(images)
    totals = ", ".join(
        f"{cat}: {int((instances['category'] == cat).sum())}" for cat in categories
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{n_images} images, {len(instances)} objects ({html.escape(totals)}). '
        f"Written {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        '<nav><a href="#sizes">Sizes</a><a href="#counts">Counts</a>'
        + ('<a href="#compare">Predicted vs annotated</a>' if reference is not None else "")
        + '<a href="#summary">Summary</a><a href="#overlays">Overlays</a>'
        '<a href="#settings">Settings</a></nav>',
    ]
    parts += [f'<div class="warn">{html.escape(n)}</div>' for n in notes]

    parts.append('<h2 id="sizes">Size distributions</h2>')
    plotted = False
    for column in [c for c in (diameter, length) if c]:
        png = plot_size_histograms(instances, column, categories, export=figures)
        if png:
            parts.append(_img(png, f"histograms of {column} per category"))
            plotted = True
    if not plotted:
        parts.append("<p>No objects to plot.</p>")

    parts.append('<h2 id="counts">Counts</h2>')
    png = plot_counts_per_image(summary, categories, export=figures)
    parts.append(_img(png, "objects per image") if png else "<p>No images.</p>")
    png = plot_counts_over_time(summary, images, categories, export=figures)
    if png:
        parts.append("<h3>Over time (series)</h3>")
        parts.append(_img(png, "objects per frame of each series"))

    if reference is not None:
        ref_instances, table = reference
        parts.append('<h2 id="compare">Predicted vs annotated</h2>')
        for column in [c for c in (diameter, length) if c]:
            png = plot_size_comparison(instances, ref_instances, column, categories,
                                       export=figures)
            if png:
                parts.append(_img(png, f"predicted and annotated {column}"))
        png = plot_counts_paired(table, export=figures)
        if png:
            parts.append(_img(png, "predicted and annotated objects per image"))
        parts.append("<h3>Per image</h3>" + _table(table, max_rows=60)
                     + "<p>Full table: comparison.csv.</p>")

    parts.append('<h2 id="summary">Summary</h2>')
    overall = summary[summary["scope"] == "all"].drop(columns=["scope", "image_id", "frame"])
    parts.append("<h3>All images</h3>" + _table(_compact(overall)))
    per_image = summary[summary["scope"] == "image"].drop(columns=["scope"])
    parts.append("<h3>Per image</h3>" + _table(_compact(per_image), max_rows=60))
    parts.append("<p>Full tables: summary.csv (per image and category) and instances.csv "
                 "(one row per object).</p>")

    parts.append('<h2 id="overlays">Example overlays</h2>')
    if overlays:
        figs = "".join(
            f"<figure>{_img(png, caption, 'overlay')}<figcaption>{html.escape(caption)}"
            "</figcaption></figure>"
            for caption, png in overlays
        )
        parts.append(f'<div class="overlays">{figs}</div>')
    else:
        parts.append("<p>No overlays available (the images were not found).</p>")

    parts.append('<h2 id="settings">Settings</h2>')
    parts.append(_settings_table(settings or {}))
    parts.append("</body></html>")

    return "\n".join(parts)


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """The columns worth a glance: counts, density, mean/median/std of the sizes."""
    keep = [c for c in df.columns if not any(c.endswith(f"_p{q}") for q in range(100))]
    return df[keep]
