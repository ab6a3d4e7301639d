#!/usr/bin/env python
"""Ship a trained model inside emdet: a compact fp16 file addressed as MODEL.WEIGHTS emdet://NAME.

    python tools/export_weights.py --weights output/pretrain/em_particles_r18/model_final.pth \\
        --name em-particles-r18 --config configs/pretrain/em_particles_r18.yaml \\
        --description "Mask R-CNN R-18-FPN, EMPS pre-training split (279 images)"

Writes emdet/model_zoo/NAME.safetensors (tensors only, float16) and its entry in
emdet/model_zoo/models.json: sha256 (checked whenever the file is used), size, the config that
trained it and the calibrated score threshold (from the checkpoint, or --score-threshold, or
score_threshold.json beside --weights). Commit a new version only when it improves a measured
figure: every committed file stays in the history.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint (.pth) written by train_net")
    p.add_argument("--name", required=True, help="zoo name, e.g. em-particles-r18")
    p.add_argument("--config", required=True, help="the config that trained it (repo path)")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="calibrated threshold (default: the checkpoint's, or the file beside it)")
    p.add_argument("--description", default="", help="one line for models.json")
    p.add_argument("--figures", default=None, metavar="JSON",
                   help="a JSON file of measured figures to record with it")
    p.add_argument("--zoo", default=None, help="zoo folder (default: emdet/model_zoo)")
    args = p.parse_args(argv)
    from emdet.engine.weights import WeightsError, export_to_zoo
    from emdet.evaluation.threshold import read_threshold

    threshold = args.score_threshold
    if threshold is None:
        threshold = read_threshold(args.weights)
    if threshold is not None and not 0 <= threshold <= 1:
        sys.exit(f"export_weights: --score-threshold {threshold}: expected 0..1")
    if not Path(args.config).is_file():
        sys.exit(f"export_weights: --config {args.config}: no such file")
    try:
        figures = json.loads(Path(args.figures).read_text()) if args.figures else None
        entry = export_to_zoo(args.weights, args.name, config=args.config,
                              score_threshold=threshold, description=args.description,
                              figures=figures, zoo_dir=args.zoo)
    except (WeightsError, OSError, ValueError) as e:
        sys.exit(f"export_weights: {e}")
    print(f"emdet://{args.name}: {entry['file']}, {entry['bytes'] / 2**20:.1f} MiB, "
          f"sha256 {entry['sha256']}, score threshold {entry['score_threshold']}")


if __name__ == "__main__":
    main()
