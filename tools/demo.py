#!/usr/bin/env python
"""The emdet demo on built-in synthetic data: make vesicle micrographs, train, evaluate.

    python tools/demo.py [--output output/demo] [--iters 100] [--num-images 12]

Steps (each prints where its output is):
1. generate a seeded synthetic vesicle dataset (TEM bright-field look, 3 classes) in
   ``<output>/datasets/vesicles_synth`` unless it is already there;
2. train Mask R-CNN with the quick schedule (``configs/quick_schedules/...instant_test.yaml``)
   on CPU (or the GPU when there is one);
3. evaluate on the validation split: box and mask AP per class (COCO metrics).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK_CONFIG = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/demo", help="folder for everything written")
    parser.add_argument("--iters", type=int, default=300, help="training iterations")
    parser.add_argument("--num-images", type=int, default=16, help="synthetic images in all")
    parser.add_argument("--size", type=int, default=256, help="synthetic image size in px")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import emdet
    from emdet.data.datasets import register_all_from_root
    from emdet.data.synthetic import make_synthetic
    from emdet.engine import EMTrainer
    from emdet.engine.trainer import setup_cfg

    out = Path(args.output).resolve()
    data_root = out / "datasets"
    dataset = data_root / "vesicles_synth"
    t0 = time.time()
    print(f"[demo] {emdet.detectron2_status()}")
    if not (dataset / "annotations").is_dir():
        print(f"[demo] 1/3 generating {args.num_images} synthetic vesicle images -> {dataset}")
        make_synthetic("vesicles", num=args.num_images, size=args.size, seed=args.seed,
                       output=dataset)
    else:
        print(f"[demo] 1/3 using the synthetic dataset already in {dataset}")
    os.environ["EMDET_DATASETS"] = str(data_root)
    register_all_from_root(data_root)

    train_dir = out / "train"
    cfg_args = argparse.Namespace(
        config_file=str(QUICK_CONFIG),
        opts=["OUTPUT_DIR", str(train_dir), "SOLVER.MAX_ITER", str(args.iters),
              "SOLVER.STEPS", f"({int(args.iters * 0.8)},)", "EMDET.DATASETS_ROOT", str(data_root)],
        resume=False, eval_only=False, num_gpus=1, num_machines=1, machine_rank=0,
    )
    cfg = setup_cfg(cfg_args)
    print(f"[demo] 2/3 training {args.iters} iterations -> {train_dir}")
    trainer = EMTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    print(f"[demo] 3/3 evaluating on {cfg.DATASETS.TEST[0]}")
    results = EMTrainer.test(cfg, trainer.model)
    metrics_file = out / "metrics.json"
    tmp = metrics_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    os.replace(tmp, metrics_file)
    for task in ("bbox", "segm"):
        r = results.get(cfg.DATASETS.TEST[0], results).get(task, {})
        if r:
            per_class = ", ".join(f"{k[3:]} {v:.1f}" for k, v in r.items() if k.startswith("AP-"))
            print(f"[demo] {task}: AP {r['AP']:.1f}  AP50 {r['AP50']:.1f}  ({per_class})")
    print(f"[demo] model: {train_dir / 'model_final.pth'}")
    print(f"[demo] metrics: {metrics_file}")
    print(f"[demo] done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
