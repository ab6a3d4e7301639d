#!/usr/bin/env python
"""U-Net against the Bragg filter with k-fold cross-validation on identical folds (Table I).

    python tools/make_synthetic.py --kind graphene --num 25 --size 256 \\
        --output datasets/graphene_synth
    python tools/compare_segmentation.py --config-file configs/unet/graphene_contamination.yaml \\
        --folds 5 --output output/compare_graphene [KEY VALUE ...]

Writes ``table.md`` (markdown, U-Net and Bragg mean ± std over folds, difference in percentage
points), ``bragg_folds.csv``, ``bragg_params.json`` (the Bragg filter tuned on all images; use it
with ``tools/segment.py --method bragg --bragg-params``) and the U-Net cross-validation in
``unet/``. ``--resume`` reuses
finished U-Net folds. Logic: :func:`emdet.dense.compare.compare_unet_bragg`.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="segmentation config (YAML)")
    parser.add_argument("--folds", type=int, default=5, help="k-fold splits (default 5)")
    parser.add_argument("--repeats", type=int, default=1, help="shuffles (paper: 2)")
    parser.add_argument("--output", default=None, help="folder (default OUTPUT_DIR)")
    parser.add_argument("--resume", action="store_true", help="reuse finished U-Net folds")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from emdet.config import ConfigError
    from emdet.dense.compare import compare_unet_bragg
    from emdet.dense.config import load_unet_config
    from emdet.dense.data import DenseDataError

    try:
        cfg = load_unet_config(args.config_file, args.opts)
        compare_unet_bragg(cfg, folds=args.folds, repeats=args.repeats, output=args.output,
                           resume=args.resume, progress=not args.quiet)
    except (ConfigError, DenseDataError, ValueError) as e:
        sys.exit(f"compare_segmentation: {e}")


if __name__ == "__main__":
    main()
