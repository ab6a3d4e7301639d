#!/usr/bin/env python
"""Detect points (merons, antimerons, atomic columns, ...) with a trained U-Net, frame by frame.

    python tools/detect_points.py --config-file configs/unet/merons_heatmap.yaml \\
        MODEL.WEIGHTS output/unet/merons_heatmap/model_final.pth \\
        --input series.tif more/*.tif --output out/points

Writes ``points/<stem>.csv`` (frame, x, y, class, score; x/y in pixels, pixel centres at +0.5),
``overlays/<name>.png`` (``_f0007`` for frame 7 of a multi-page TIFF), ``summary.csv`` and, when
some inputs fail, ``failures.csv``; the other inputs still complete (exit status 1 then).
Heatmap models give the peaks above the per-class thresholds calibrated in training (stored in
the checkpoint; ``HEATMAP.CALIBRATE False HEATMAP.THRESHOLD 0.4`` sets one by hand);
segmentation models the centroids of predicted regions. Logic: :mod:`emdet.dense.apply`, :class:`emdet.dense.DensePredictor`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Overrides (KEY VALUE, e.g. MODEL.WEIGHTS path HEATMAP.CALIBRATE False "
        "HEATMAP.THRESHOLD 0.4) may go "
        "before --input or after --output.",
    )
    parser.add_argument("--config-file", required=True, help="dense-model config (YAML)")
    parser.add_argument("--weights", default=None, help="checkpoint (same as MODEL.WEIGHTS)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from emdet.config import ConfigError
    from emdet.dense.apply import detect_points_files
    from emdet.dense.config import load_unet_config
    from emdet.dense.predict import CheckpointError, DensePredictor

    try:
        cfg = load_unet_config(args.config_file, args.opts)
        predictor = DensePredictor(cfg, weights=args.weights)
    except (ConfigError, CheckpointError, ValueError) as e:
        sys.exit(f"detect_points: {e}")
    result = detect_points_files(predictor.points, args.input, args.output,
                                 classes=predictor.classes, overlays=not args.no_overlays,
                                 progress=not args.quiet)
    n_points = sum(sum(v for k, v in r.items() if k.startswith("n_")) for r in result["summary"])
    print(f"detect_points: {len(result['summary'])} frames, {n_points} points -> {args.output}")
    if result["failures"]:
        print(f"detect_points: {len(result['failures'])} input(s) failed, listed in "
              f"{args.output}/failures.csv", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
