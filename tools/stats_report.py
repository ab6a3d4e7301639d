#!/usr/bin/env python
"""Counts, size distributions and an HTML report from predictions or annotations (COCO).

    python tools/stats_report.py --input out/predictions.json --output out/stats
    python tools/stats_report.py --input out/predictions.json --output out/stats \\
        --pixel-size 0.5 --unit nm --score-threshold 0.7 --frame-interval 2.5
    python tools/stats_report.py --input datasets/ves/annotations/test.json --output gt_stats
    python tools/stats_report.py --input out/predictions.json --output out/compare \
        --score-threshold 0.7 --annotations datasets/ves/annotations/test.json

Writes instances.csv (one row per object: area, equivalent diameter, axes, orientation,
perimeter, circularity, Feret diameter, rotated-box length/width/angle; columns name their
unit), summary.csv (per image and category: count, density, mean/median/std/percentiles of
size) and report.html (self-contained: open it from disk). Pixel sizes default to what the
images carry (predictions.json and emdet datasets record them).
"""

from __future__ import annotations

import argparse
import logging
import sys

from emdet.stats import StatsError, run_stats_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, metavar="COCO_JSON",
                        help="predictions.json or a COCO annotations file")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--pixel-size", type=float, default=None, metavar="P",
                        help="pixel size for all images (default: each image's own)")
    parser.add_argument("--unit", default=None, help="unit of --pixel-size (default nm)")
    parser.add_argument("--score-threshold", type=float, default=None, metavar="T",
                        help="leave out predictions scoring below T")
    parser.add_argument("--frame-interval", type=float, default=None, metavar="S",
                        help="seconds between frames of a series (counts over time)")
    parser.add_argument("--exclude-border", action="store_true",
                        help="leave out objects touching the image border")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="where the images are, for overlays (default: from the file)")
    parser.add_argument("--max-overlays", type=int, default=4, metavar="N",
                        help="example overlays in the report (default 4)")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--annotations", default=None, metavar="COCO_JSON",
                        help="the annotated COCO of the same images: the report sets "
                        "predicted beside annotated and comparison.csv pairs them per image")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        out = run_stats_report(
            args.input,
            args.output,
            pixel_size=args.pixel_size,
            unit=args.unit,
            score_threshold=args.score_threshold,
            frame_interval=args.frame_interval,
            exclude_border=args.exclude_border,
            images_dir=args.images,
            max_overlays=args.max_overlays,
            title=args.title,
            annotations=args.annotations,
        )
    except StatsError as e:
        sys.exit(f"stats_report: {e}")
    print(f"{len(out.instances)} objects in {len(out.images)} images")
    for note in out.notes:  # the report's banner, also here: e.g. sizes only in pixels
        print(f"note: {note}")
    for path in (out.instances_csv, out.summary_csv, out.report):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
