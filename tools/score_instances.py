#!/usr/bin/env python
"""Score instance predictions against annotations: the figures to publish, one scorer for all.

    python tools/score_instances.py --annotations datasets/mydata/annotations/test.json \\
        --predictions output/mydata/predict/predictions.json
    python tools/score_instances.py --annotations test.json \\
        --predictions output/mydata/classical/predictions.json --score-threshold 0

Prints mask AP and AP50 (pycocotools, all detections, up to --max-dets per image), and at the
score threshold (default: the one calibrated for MODEL.WEIGHTS when --weights is given, else
0.5) precision, recall and F1 of objects matched one-to-one at mask IoU 0.5, the mean per-image
count error and the median equivalent-diameter error. Predictions pair with annotated images by
file name. The same scorer (emdet.evaluation.instances) serves tools/classical_baseline.py and
benchmarks/bench_real.py. --json FILE also writes the figures; --results FILE writes the
predictions as a COCO results list in the annotations' image ids, for pycocotools:
COCOeval(COCO("test.json"), COCO("test.json").loadRes("results.json"), "segm").
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotations", required=True, metavar="COCO_JSON")
    p.add_argument("--predictions", required=True, metavar="JSON",
                   help="predictions.json of predict, or a COCO results list")
    p.add_argument("--score-threshold", type=float, default=None, metavar="T")
    p.add_argument("--weights", default=None,
                   help="weights whose calibrated threshold to use (model_best.pth, emdet://...)")
    p.add_argument("--max-dets", type=int, default=1000)
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="also write the predictions in the annotations' image ids (a COCO "
                   "results list for pycocotools' loadRes)")
    args = p.parse_args(argv)
    from emdet.data.cocofile import CocoFormatError
    from emdet.evaluation.instances import InstanceScoreError, aligned_results, score_instances
    from emdet.evaluation.threshold import read_threshold
    from emdet.utils.atomic import atomic_write

    threshold = args.score_threshold
    if threshold is None and args.weights:
        threshold = read_threshold(args.weights)
        if threshold is None:
            sys.exit(f"score_instances: {args.weights} carries no calibrated threshold; give "
                     "--score-threshold")
    threshold = 0.5 if threshold is None else threshold
    if not 0 <= threshold <= 1 or args.max_dets < 1:
        sys.exit("score_instances: --score-threshold must be 0..1 and --max-dets >= 1")
    try:
        # with --results, the predictions are read and paired once and scored as that list
        results = aligned_results(args.annotations, args.predictions) if args.results else None
        f = score_instances(args.annotations, args.predictions if results is None else results,
                            score_threshold=threshold, max_dets=args.max_dets)
    except (InstanceScoreError, CocoFormatError, FileNotFoundError, KeyError) as e:
        sys.exit(f"score_instances: {e}")
    print(f"{f['n_images']} images: mask AP {f['ap']:.1f}, AP50 {f['ap50']:.1f}; at score >= "
          f"{threshold:.3f}: F1 {f['f1']:.3f} (precision {f['precision']:.3f}, recall "
          f"{f['recall']:.3f}), {f['n_found']} found / {f['n_annotated']} annotated, count "
          f"error {100 * f['count_error']:.1f} %, median diameter {f['median_diameter_found']:.1f}"
          f" px vs {f['median_diameter_annotated']:.1f} px "
          f"({100 * f['median_diameter_error']:.1f} %)")
    if args.json:
        atomic_write(args.json, json.dumps(f, indent=1) + "\n")
    if results is not None:
        atomic_write(args.results, json.dumps(results) + "\n")
        print(f"wrote {len(results)} predictions in the annotations' image ids to {args.results}")


if __name__ == "__main__":
    main()
