#!/usr/bin/env python
"""Segment EM images with a trained U-Net or the Bragg filter; rank them by useful lattice.

    python tools/segment.py --method unet --config-file configs/unet/graphene_contamination.yaml \\
        --weights output/unet/graphene_contamination/model_final.pth \\
        --input images/ --output out/seg --sort-by-fraction
    python tools/segment.py --method bragg --sigma 0.0156 --g-thresh 0.005 --m-thresh 0.8 \\
        --input images/*.tif --output out/bragg --sort-by-fraction

Writes ``masks/<name>.png`` (uint8 labels), ``overlays/<name>.png``, ``fractions.csv`` (the
fraction of every class per image and frame) and, with ``--sort-by-fraction``, ``ranking.csv``
and ``overview.png`` ordered by decreasing fraction of useful lattice (Sadre et al. Fig. 6).
Bragg masks have two classes, ``lattice`` (0) and ``contamination`` (1). Multi-page TIFFs are
segmented frame by frame. Inputs that fail are listed in ``failures.csv`` and the rest
completes (exit status 1 then). Logic: :mod:`emdet.dense.apply`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from emdet.dense.bragg import BraggFilter

    d = BraggFilter()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Config overrides for --method unet (KEY VALUE) may go before --input or after "
        "--output.",
    )
    parser.add_argument("--method", choices=("unet", "bragg"), required=True)
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sort-by-fraction", action="store_true",
                        help="rank images by the fraction of useful lattice (ranking.csv, "
                        "overview.png)")
    parser.add_argument("--useful-class", default=None,
                        help="class that counts as useful (default: lattice)")
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    unet = parser.add_argument_group("U-Net")
    unet.add_argument("--config-file", help="dense-model config (YAML)")
    unet.add_argument("--weights", help="checkpoint (same as MODEL.WEIGHTS)")
    bragg = parser.add_argument_group("Bragg filter (Sadre et al. eq. 4-6)")
    bragg.add_argument("--sigma", type=float, default=d.sigma,
                       help=f"aperture size in cycles/pixel (default {d.sigma})")
    bragg.add_argument("--g-thresh", type=float, default=d.g_thresh,
                       help=f"Bragg peak threshold (default {d.g_thresh})")
    bragg.add_argument("--m-thresh", type=float, default=d.m_thresh,
                       help=f"mask threshold (default {d.m_thresh})")
    bragg.add_argument("--max-peaks", type=int, default=d.max_peaks,
                       help=f"most Bragg peaks (default {d.max_peaks})")
    bragg.add_argument("--bragg-params", default=None,
                       help="JSON file with sigma, g_thresh, m_thresh (e.g. from "
                       "fit_bragg_filter); overrides the three options above")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides (unet)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from emdet.config import ConfigError
    from emdet.dense.apply import segment_files
    from emdet.dense.bragg import BraggFilter
    from emdet.dense.config import load_unet_config
    from emdet.dense.predict import CheckpointError, DensePredictor

    try:
        if args.method == "unet":
            if not args.config_file:
                raise ValueError("--method unet needs --config-file (and --weights or "
                                 "MODEL.WEIGHTS)")
            predictor = DensePredictor(load_unet_config(args.config_file, args.opts),
                                       weights=args.weights)
            if predictor.task != "segmentation":
                raise ValueError(f"{predictor.weights} is a {predictor.task} model; use "
                                 "tools/detect_points.py for heatmaps")

            def segment(image):
                return predictor.segment(image)[0]

            classes = predictor.classes
        else:
            params = {"sigma": args.sigma, "g_thresh": args.g_thresh, "m_thresh": args.m_thresh}
            if args.bragg_params:
                with open(args.bragg_params, encoding="utf-8") as f:
                    params.update({k: float(v) for k, v in json.load(f).items() if k in params})
            bf = BraggFilter(max_peaks=args.max_peaks, **params)

            def segment(image):
                return bf.predict(image)

            classes = ("lattice", "contamination")
        result = segment_files(segment, args.input, args.output, classes=classes,
                               useful_class=args.useful_class,
                               sort_by_fraction=args.sort_by_fraction,
                               overlays=not args.no_overlays, progress=not args.quiet)
    except (ConfigError, CheckpointError, ValueError, OSError) as e:
        sys.exit(f"segment: {e}")
    print(f"segment: {len(result['fractions'])} frames -> {args.output}")
    if result["failures"]:
        print(f"segment: {len(result['failures'])} input(s) failed, listed in "
              f"{args.output}/failures.csv", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
