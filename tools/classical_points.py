#!/usr/bin/env python
"""The classical point detector, tuned on your training images: the baseline for point models.

    # tune on the training split, find and score the points of the test split
    python tools/classical_points.py --train datasets/atoms_synth/annotations/train.json \\
        --apply datasets/atoms_synth/annotations/test.json --output output/classical_points/atoms

    # the tuned settings on other images (scored when they are annotated)
    python tools/classical_points.py --params output/classical_points/atoms/params.json \\
        --apply datasets/other/annotations/all.json --output output/classical_points/other

Difference of Gaussians on the image normalised by its 0.5/99.5 percentiles, then local maxima
(skimage peak_local_max) refined to sub-pixel precision (emdet.classical_points), with sigma,
sigma ratio, threshold, minimum distance and polarity tuned for the best point F1 on the
training images (points matched one-to-one within --match-radius px, by
emdet.evaluation.points, exactly as the learned heatmap models are scored). All annotations
are one class. COCO annotations need a 'point': [x, y] field (as tools/make_synthetic.py writes
for atoms and merons). Writes params.json, points.csv (image, x, y, score) and figures.json
(precision, recall, F1, count errors, per image and pooled). Images are found in the data
set's images/ folder beside annotations/ (--images to say otherwise).
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", metavar="COCO_JSON", help="annotated points to tune on")
    p.add_argument("--params", metavar="JSON", help="params.json of an earlier run (no tuning)")
    p.add_argument("--apply", required=True, metavar="COCO_JSON",
                   help="images to find points in (scored when annotated)")
    p.add_argument("--images", metavar="DIR", help="image folder (default: ../images of the json)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--match-radius", type=float, default=3.0, metavar="PX",
                   help="largest distance (px) of a found point from its annotated one "
                   "(default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run's files")
    p.add_argument("--quiet", action="store_true", help="no tuning progress")
    return p


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from emdet.classical_points import PointsBaselineError, read_params_json, run_points_baseline
    from emdet.data.cocofile import CocoFormatError
    from emdet.data.io import ImageReadError

    if (args.train is None) == (args.params is None):
        sys.exit("classical_points: give exactly one of --train (tune) and --params (reuse)")
    try:
        source = read_params_json(args.params) if args.params else args.train
        result = run_points_baseline(source, args.apply, args.output, args.match_radius,
                                     images_dir=args.images, overwrite=args.overwrite,
                                     progress=not args.quiet)
    except (PointsBaselineError, CocoFormatError, ImageReadError, ValueError, OSError) as e:
        sys.exit(f"classical_points: {e}")
    params = result["params"]
    line = ", ".join(f"{k}={v}" for k, v in params.to_dict().items())
    trained = "" if result["train_f1"] is None else f" (training F1 {result['train_f1']:.3f})"
    print(f"params: {line}{trained}")
    f = result["figures"]
    if f:
        mean = f["mean_per_image"]
        print(f"{args.apply}: F1 {_fmt(f['f1'])} (precision {_fmt(f['precision'])}, recall "
              f"{_fmt(f['recall'])}) at {f['match_radius']:g} px, {f['n_found']} found / "
              f"{f['n_annotated']} annotated in {f['n_images']} images; per-image mean F1 "
              f"{_fmt(mean['f1'])}; count error {_fmt(f['count_error'])} per image, "
              f"{_fmt(f['count_error_total'])} total")
    else:
        n = sum(len(xy) for xy, _ in result["points"])
        print(f"{args.apply}: no annotations, not scored; {n} points found in "
              f"{len(result['names'])} images")
    for path in result["outputs"]:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
