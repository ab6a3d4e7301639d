#!/usr/bin/env python
"""Predict EM images (any size, any format emdet reads) into one COCO file with overlays.

    python tools/predict.py --config-file CFG --input images/ --output out/ \\
        MODEL.WEIGHTS output/x/model_final.pth
    python tools/predict.py --config-file CFG --input "runs/*/grid*.dm4" series.tif \\
        --output out/ --tile 512 --overlap 128 --score-threshold 0.5 --labelme \\
        MODEL.WEIGHTS output/x/model_final.pth
    python tools/predict.py ... --num-gpus 4          # same command, files shared by 4 GPUs

Writes out/predictions.json (COCO with RLE masks and scores; rbox for rotated models),
out/failures.csv, out/overlays/*.png and, with --labelme, out/labelme/*.json. Rerunning the
same command resumes: finished files are skipped. See emdet/inference/batch.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

from emdet.config import ConfigError, load_config  # importing emdet completes detectron2
from emdet.inference.batch import PredictError, PredictOptions, predict_batch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH",
                        help="image files, folders or glob patterns (quote globs)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="tile side in model-input pixels (default INPUT.MIN_SIZE_TEST; 0: "
                        "no tiling). Images of about the training images' size are predicted "
                        "whole, as --eval-only does; larger ones in tiles")
    parser.add_argument("--input-scale", type=float, default=None, metavar="S",
                        help="model-input pixels per image pixel for large images (default: "
                        "measured from the config's training images; 0: tiles at the image's "
                        "own scale)")
    parser.add_argument("--overlap", type=int, default=None, metavar="PX",
                        help="overlap of neighbouring tiles (default tile/4); at least the "
                        "size of most objects")
    parser.add_argument("--score-threshold", type=float, default=None, metavar="T",
                        help="keep detections scoring at least T (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="tiles per forward pass (default 1 on CPU, 4 on GPU)")
    parser.add_argument("--labelme", action="store_true",
                        help="also write labelme files (with an 8-bit PNG) to correct")
    parser.add_argument("--classes", default=None, metavar="A,B,...",
                        help="category names (default: from the config's data sets)")
    parser.add_argument("--no-overlays", action="store_true", help="do not draw overlays")
    parser.add_argument("--overlay-size", type=int, default=2048, metavar="PX",
                        help="longer side of overlay PNGs (default 2048; 0: full size)")
    parser.add_argument("--recursive", action="store_true", help="search sub-folders too")
    parser.add_argument("--keep-databar", action="store_true",
                        help="keep the databar of FEI/Thermo SEM images (by default it is cropped "
                        "as the image is read, from the height in the file's metadata)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard earlier results in --output instead of resuming "
                        "(labelme files of re-predicted images are replaced)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--num-gpus", type=int, default=1, help="GPUs per machine")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto",
                        help="initialisation URL for several machines, e.g. tcp://host:port")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth")
    return parser


def options_from_args(args: argparse.Namespace) -> PredictOptions:
    return PredictOptions(
        tile=args.tile,
        overlap=args.overlap,
        score_threshold=args.score_threshold,
        batch_size=args.batch_size,
        overlays=not args.no_overlays,
        overlay_max_size=args.overlay_size,
        labelme=args.labelme,
        overwrite=args.overwrite,
        recursive=args.recursive,
        class_names=[c.strip() for c in args.classes.split(",")] if args.classes else None,
        progress=not args.quiet,
        input_scale=args.input_scale,
    )


def main(args: argparse.Namespace) -> None:
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    setup_logger(name="emdet", distributed_rank=comm.get_rank())
    logging.getLogger("emdet").setLevel(logging.INFO)
    cfg = load_config(args.config_file, args.opts or ())
    from emdet.data.datasets import register_all_from_root
    from emdet.data.io import set_keep_databar

    set_keep_databar(args.keep_databar)

    try:  # data sets only supply class names here
        register_all_from_root(cfg.EMDET.DATASETS_ROOT or None)
    except (OSError, ValueError) as e:
        logging.getLogger("emdet").warning("data sets not registered: %s", e)
    result = predict_batch(args.input, args.output, cfg, options_from_args(args))
    if comm.is_main_process():
        print(
            f"predicted {result.frames_predicted} images in {result.seconds:.1f} s "
            f"({result.images_per_second:.2f} images/s), {result.files_skipped} files already "
            f"done, {len(result.failed)} failures\n"
            f"wrote {result.predictions}\nwrote {result.failures}"
        )


def cli(argv: list[str] | None = None) -> None:
    from detectron2.engine import launch

    args = build_parser().parse_args(argv)
    try:
        options_from_args(args)  # impossible flags stop here, before a process or model starts
    except PredictError as e:
        sys.exit(f"predict: {e}")
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            timeout=timedelta(hours=4),
        )
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except PredictError as e:
        sys.exit(f"predict: {e}")


if __name__ == "__main__":
    cli()
