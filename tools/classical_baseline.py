#!/usr/bin/env python
"""The classical particle pipeline, tuned on your training images: the baseline to beat.

    # tune on the training split, segment and score the test split
    python tools/classical_baseline.py --train datasets/emps/annotations/fewshot_train.json \\
        --apply datasets/emps/annotations/fewshot_test.json --output output/classical/emps

    # the tuned settings on other annotated images
    python tools/classical_baseline.py --params output/classical/emps/params.json \\
        --apply datasets/other/annotations/all.json --output output/classical/other

Otsu or local threshold, hole filling, small-object removal and a distance-transform
watershed for touching particles (emdet.classical), with polarity, blur, threshold window,
split rule and minimum area tuned for the best F1 of objects matched at mask IoU 0.5 on the
training images. Writes params.json, predictions.json (COCO with scores, like
tools/predict.py) and figures.json (mask AP/AP50, F1, count and median-diameter errors,
scored by emdet.evaluation.instances exactly as the learned models are). Images are found in
the data set's images/ folder beside annotations/ (--images to say otherwise).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", metavar="COCO_JSON", help="annotated images to tune on")
    p.add_argument("--params", metavar="JSON", help="params.json of an earlier run (no tuning)")
    p.add_argument("--apply", required=True, metavar="COCO_JSON",
                   help="images to segment (scored when annotated)")
    p.add_argument("--images", metavar="DIR", help="image folder (default: ../images of the json)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's files")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from emdet.classical import BaselineError, ClassicalParams, run_baseline
    from emdet.data.cocofile import CocoFormatError
    from emdet.data.converters import ConversionError
    from emdet.data.io import ImageReadError

    if (args.train is None) == (args.params is None):
        sys.exit("classical_baseline: give exactly one of --train (tune) and --params (reuse)")
    try:
        params = None
        if args.params:
            try:
                data = json.loads(Path(args.params).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise BaselineError(f"{args.params}: not a readable params.json ({e})") from None
            if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
                raise BaselineError(f"{args.params}: no 'params' object; give the params.json "
                                    "that tools/classical_baseline.py wrote")
            params = ClassicalParams.from_dict(data["params"], f"{args.params}: params")
        result = run_baseline(args.train, args.apply, args.output, images_dir=args.images,
                              params=params, overwrite=args.overwrite)
    except (BaselineError, CocoFormatError, ConversionError, ImageReadError, ValueError,
            FileNotFoundError) as e:
        sys.exit(f"classical_baseline: {e}")
    f = result["figures"]
    if f:
        print(f"{args.apply}: mask AP {f['ap']:.1f} / AP50 {f['ap50']:.1f}, F1 {f['f1']:.3f} "
              f"(precision {f['precision']:.3f}, recall {f['recall']:.3f}), "
              f"{f['n_found']} found / {f['n_annotated']} annotated, count error "
              f"{100 * f['count_error']:.0f} %, median diameter error "
              f"{100 * f['median_diameter_error']:.0f} %")
    for path in result["outputs"]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
