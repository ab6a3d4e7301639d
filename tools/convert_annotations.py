#!/usr/bin/env python
"""Convert annotation folders or label images to COCO JSON, or a COCO file (e.g. predictions) back
to labelme or to instance-ID label images.

Examples::

    # roLabelImg XML -> COCO, with a reproducible 80/20 train/val split
    python tools/convert_annotations.py --format rolabelimg --input labels/ \\
        --output datasets/rods/annotations/all.json --images datasets/rods/images/ \\
        --split train=0.8,val=0.2 --seed 0
    # writes all.json, train.json and val.json in datasets/rods/annotations/

    # labelme points become 24 px boxes; skip broken shapes instead of stopping
    python tools/convert_annotations.py --format labelme --input particles/ \\
        --output coco/particles.json --point-box-size 24 --skip-invalid

    # a second run over the same outputs must say so: hand edits are never lost silently
    python tools/convert_annotations.py --format rolabelimg --input labels/ \\
        --output datasets/rods/annotations/all.json --split train=0.8,val=0.2 --overwrite

    # predictions -> one labelme file per image, to correct them in labelme
    python tools/convert_annotations.py --to labelme --input output/coco_instances_results.json \\
        --dataset coco/nanorods_val.json --output to_correct/ --min-score 0.5

    # 16-bit instance-ID maps (0 background, one id per particle) -> COCO RLE, 80/20 split
    python tools/convert_annotations.py --format masks --input emps/segmaps/ \\
        --images emps/images/ --output datasets/emps/annotations/all.json \\
        --mask-class-name particle --split train=0.8,val=0.2

    # whole numbers are image counts, taken first: a 12/10/44 few-shot split, the rest 93/7
    python tools/convert_annotations.py --format masks --input emps/segmaps/ \\
        --images emps/images/ --output datasets/emps/annotations/all.json \\
        --mask-class-name particle --overwrite \\
        --split fewshot_train=12,fewshot_val=10,fewshot_test=44,pretrain_train=0.93,pretrain_val=0.07

    # binary masks (0/255): connected components, touching particles cut by a watershed
    python tools/convert_annotations.py --format masks --input masks/ --images images/ \\
        --output coco/particles.json --mask-kind binary --split-touching

    # colour masks, yellow where a vesicle and a hole overlap (given to both)
    python tools/convert_annotations.py --format masks --input rgb/ --images images/ \\
        --output coco/ves.json --mask-classes "255,0,0=vesicle;0,255,0=hole;255,255,0=vesicle+hole"

    # predictions -> one 16-bit instance-ID PNG per image (+ instances.csv) for Fiji / napari
    python tools/convert_annotations.py --to masks --input output/predictions.json \\
        --output label_images/ --min-score 0.5

All logic lives in :mod:`emdet.data.converters`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from emdet.data.converters import (
    FORMATS,
    MASK_KINDS,
    ConversionError,
    coco_to_labelme,
    coco_to_masks,
    convert_annotations,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Convert labelme / LabelImg / roLabelImg annotations or label images (masks) "
        "to COCO JSON, or a COCO file back to labelme (--to labelme) or to 16-bit instance-ID "
        "PNGs (--to masks).",
        epilog="examples:" + __doc__.split("Examples::", 1)[1].split("All logic", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--format", choices=list(FORMATS), help="format of the input annotations")
    mode.add_argument(
        "--to",
        choices=["labelme", "masks"],
        help="convert the COCO file given as --input to this format",
    )
    p.add_argument(
        "--input",
        required=True,
        help="folder of annotation files (label images for --format masks); with --to: the COCO "
        "JSON file",
    )
    p.add_argument(
        "--output",
        required=True,
        help="COCO JSON file to write; with --to: folder for the labelme files / PNGs",
    )
    p.add_argument(
        "--images",
        default=None,
        help="folder with the images (COCO file_name is relative to it); default: the "
        "input folder (with --to labelme: the COCO file's info.image_root or its folder); "
        "required for --format masks (masks pair with images by file name)",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="text file with one class name per line; fixes category ids 1..N in this "
        "order (default: sorted names found)",
    )
    masks = p.add_argument_group("label images (--format masks)")
    masks.add_argument(
        "--mask-kind",
        choices=list(MASK_KINDS),
        default=None,
        help="instances: each non-zero id is one object; binary: connected components "
        "(8-connectivity) of the non-zero pixels; rgb: colours named by --mask-classes "
        "(default: chosen from the masks and logged)",
    )
    masks.add_argument(
        "--mask-classes",
        default=None,
        metavar="R,G,B=NAME;...",
        help="class of each colour of rgb masks, e.g. \"255,0,0=vesicle;0,255,0=hole\"; "
        "R,G,B=a+b marks overlap pixels given to both touching objects; =background for a "
        "background colour other than black",
    )
    masks.add_argument(
        "--mask-class-name",
        default=None,
        metavar="NAME",
        help="class of the objects of instance and binary masks (default: object)",
    )
    masks.add_argument(
        "--split-touching",
        action="store_true",
        help="binary masks: cut touching objects apart (watershed of the distance transform)",
    )
    masks.add_argument(
        "--split-min-distance",
        type=int,
        default=None,
        metavar="PX",
        help="with --split-touching: least distance between object centres (default 5 px)",
    )
    p.add_argument(
        "--point-box-size",
        type=float,
        default=None,
        metavar="PX",
        help="side in pixels of the square box around labelme points",
    )
    p.add_argument(
        "--pixel-size",
        type=float,
        default=None,
        metavar="SIZE",
        help="pixel size of every image (per pixel, in --unit), instead of what the image "
        "files carry (TIFF tags, DM, MRC, SER, EMD); a warning names each file that disagrees",
    )
    p.add_argument("--unit", default="nm", help="unit of --pixel-size (default nm; um, A, pm)")
    p.add_argument(
        "--split",
        default=None,
        metavar="NAME=N|FRAC,...",
        help="also write NAME.json beside --output per split: a fraction (train=0.8,val=0.2) "
        "or a whole number of images, taken first; fractions share the rest "
        "(few_train=12,few_val=10,pre_train=0.9,pre_val=0.1)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the shuffle for --split (default 0)"
    )
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad objects/files, list them at the end and in the output's info",
    )
    p.add_argument(
        "--clip-to-image",
        action="store_true",
        help="clip objects that extend outside the image instead of stopping",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="with --to: COCO file with the images and categories of a detections "
        "list (detectron2's coco_instances_results.json)",
    )
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="with --to: leave out annotations with a lower score",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (the COCO file and its split files; with --to: the "
        "labelme files); without it an existing output is an error. Images in --images are "
        "never replaced",
    )
    p.add_argument(
        "--keep-databar",
        action="store_true",
        help="keep the databar of FEI/Thermo SEM images in the image size (by default it is "
        "cropped, as predict and training read the images; coordinates do not change)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from emdet.data.io import set_keep_databar

    set_keep_databar(args.keep_databar)
    try:
        if args.to == "masks":
            if args.images is not None:
                logging.getLogger("emdet.data.converters").warning(
                    "--images is not used by --to masks (sizes come from the COCO file)."
                )
            written = coco_to_masks(
                args.input,
                args.output,
                dataset=args.dataset,
                min_score=args.min_score,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
            print(
                f"Wrote {len(written) - 1} instance-ID PNG(s) and {written[-1].name} to "
                f"{args.output}"
            )
            return
        if args.to:
            written = coco_to_labelme(
                args.input,
                args.output,
                images_dir=args.images,
                dataset=args.dataset,
                min_score=args.min_score,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
            print(f"Wrote {len(written)} labelme file(s) to {args.output}")
            return
        report = convert_annotations(
            args.input,
            args.output,
            args.format,
            images_dir=args.images,
            classes=args.classes,
            point_box_size=args.point_box_size,
            split=args.split,
            seed=args.seed,
            skip_invalid=args.skip_invalid,
            clip_to_image=args.clip_to_image,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            pixel_size=args.pixel_size,
            unit=args.unit,
            **_mask_args(args),
        )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:  # the system refused a read or write the checks could not foresee
        print(f"error: {exc}; nothing was written.", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        f"Wrote {report.num_images} image(s), {report.num_annotations} annotation(s): "
        + ", ".join(map(str, report.outputs))
    )
    if report.extracted_images:
        print(
            f"Wrote {len(report.extracted_images)} images embedded in labelme files to "
            f"{report.extracted_images[0].parent}"
        )
    if report.skipped:
        print(
            f"Skipped {len(report.skipped)} invalid objects/files (also listed in the output's "
            "info.skipped):",
            file=sys.stderr,
        )
        for s in report.skipped:
            print(f"  {s}", file=sys.stderr)


def _mask_args(args: argparse.Namespace) -> dict:
    """The mask options that were given (the other formats refuse them)."""
    given = {
        "mask_kind": args.mask_kind,
        "mask_classes": args.mask_classes,
        "mask_class_name": args.mask_class_name,
        "split_min_distance": args.split_min_distance,
    }
    out = {k: v for k, v in given.items() if v is not None}
    if args.split_touching:
        out["split_touching"] = True
    return out


if __name__ == "__main__":
    main()
