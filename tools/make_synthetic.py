#!/usr/bin/env python
"""Write a seeded synthetic EM data set in the real-data layout (see datasets/README.md).

    python tools/make_synthetic.py --kind vesicles --num 20 --size 512 --seed 0 \\
        --output datasets/vesicles_synth
    python tools/make_synthetic.py --kind nanorods --output datasets/nanorods_synth \\
        --split train=0.8,val=0.2 --pixel-size 0.4 --unit nm

The folder name becomes the data set name: configs can then use ``vesicles_synth_train``
once ``emdet.data.register_all_from_root()`` has run.
"""

from __future__ import annotations

import argparse
import sys

from emdet.data.synthetic import SYNTHETIC_KINDS, make_synthetic


def build_parser() -> argparse.ArgumentParser:
    kinds = sorted(SYNTHETIC_KINDS)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", required=True, choices=kinds, help="what to simulate")
    parser.add_argument("--num", type=int, default=5, help="number of images (default 5)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--output", default=None, help="data set folder (default <datasets root>/<kind>_synth)"
    )
    parser.add_argument(
        "--split", default=None, help="fractions per split (default train=0.6,val=0.2,test=0.2)"
    )
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        help="physical pixel size; objects keep their physical size (default: per kind)",
    )
    parser.add_argument("--unit", default=None, help="unit of --pixel-size, e.g. nm (default nm)")
    parser.add_argument(
        "--format",
        dest="image_format",
        choices=("tiff", "png"),
        default="tiff",
        help="tiff: uint16 ImageJ TIFF with pixel size (default); png: 8-bit",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        out = make_synthetic(
            args.kind,
            num=args.num,
            size=args.size,
            seed=args.seed,
            output=args.output,
            split=args.split,
            pixel_size=args.pixel_size,
            unit=args.unit,
            image_format=args.image_format,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (ValueError, FileExistsError) as e:
        sys.exit(f"make_synthetic: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
