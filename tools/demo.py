#!/usr/bin/env python
"""The emdet demo on built-in synthetic data: make vesicle micrographs, train, evaluate, measure.

    python tools/demo.py [--output output/demo] [--iters 300] [--num-images 16]

Steps (each prints where its output is):
1. generate a seeded synthetic vesicle dataset (TEM bright-field look, 3 classes, 16-bit TIFF
   with pixel size) in ``<output>/datasets/vesicles_synth`` unless it is already there;
2. train Mask R-CNN with the quick schedule (``configs/quick_schedules/...instant_test.yaml``)
   on CPU (or the GPU when there is one); rerunning resumes from the last checkpoint;
3. evaluate on the validation split: box and mask AP per class (COCO metrics);
4. predict the held-out test images as ``tools/predict.py`` does (``predictions.json``,
   overlays);
5. measure the predictions and the test annotations as ``tools/stats_report.py`` does
   (``instances.csv``, ``summary.csv``, ``report.html``) and print predicted vs annotated
   counts and sizes in nm.
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
    parser.add_argument("--score-threshold", type=float, default=0.5,
                        help="predictions kept for the statistics")
    return parser.parse_args(argv)


def _test_images(dataset: Path) -> tuple[list[Path], Path]:
    """The held-out images (test split, else val) of a synthetic data set, and their COCO file."""
    for split in ("test", "val"):
        path = dataset / "annotations" / f"{split}.json"
        if path.is_file():
            coco = json.loads(path.read_text())
            return [dataset / "images" / im["file_name"] for im in coco["images"]], path
    raise SystemExit(f"[demo] {dataset} has no test or val split")


def _compare(pred, gt) -> None:
    """Print predicted vs annotated count and median equivalent diameter per class."""
    col = next((c for c in pred.instances.columns if c.startswith("equivalent_diameter_")
                and c != "equivalent_diameter_px"), "equivalent_diameter_px")
    unit = col.rsplit("_", 1)[1]
    print(f"[demo]   {'class':14s} {'predicted':>9s} {'annotated':>9s}   median diameter "
          f"({unit}) predicted / annotated")
    names = sorted(set(gt.instances["category"]) | set(pred.instances["category"]))
    for name in names:
        p = pred.instances[pred.instances["category"] == name]
        g = gt.instances[gt.instances["category"] == name]
        pd_, gd = (x[col].median() if len(x) else float("nan") for x in (p, g))
        print(f"[demo]   {name:14s} {len(p):9d} {len(g):9d}   {pd_:.1f} / {gd:.1f}")


def main(argv=None) -> None:
    args = parse_args(argv)
    import emdet
    from emdet.data.datasets import register_all_from_root
    from emdet.data.synthetic import make_synthetic
    from emdet.engine import EMTrainer
    from emdet.engine.trainer import setup_cfg
    from emdet.inference.batch import PredictOptions, predict_batch
    from emdet.stats import run_stats_report

    out = Path(args.output).resolve()
    data_root = out / "datasets"
    dataset = data_root / "vesicles_synth"
    t0 = time.time()
    print(f"[demo] {emdet.detectron2_status()}")
    if not (dataset / "annotations").is_dir():
        print(f"[demo] 1/5 generating {args.num_images} synthetic vesicle images -> {dataset}")
        make_synthetic("vesicles", num=args.num_images, size=args.size, seed=args.seed,
                       output=dataset)
    else:
        print(f"[demo] 1/5 using the synthetic dataset already in {dataset}")
    os.environ["EMDET_DATASETS"] = str(data_root)
    register_all_from_root(data_root)

    train_dir = out / "train"
    cfg_args = argparse.Namespace(
        config_file=str(QUICK_CONFIG),
        opts=["OUTPUT_DIR", str(train_dir), "SOLVER.MAX_ITER", str(args.iters),
              "SOLVER.STEPS", f"({int(args.iters * 0.8)},)", "EMDET.DATASETS_ROOT", str(data_root)],
        resume=False, eval_only=False, num_gpus=1, num_machines=1, machine_rank=0,
    )
    print(f"[demo] 2/5 training {args.iters} iterations -> {train_dir} (environment, config "
          f"and model in {train_dir / 'log.txt'})", flush=True)
    cfg = setup_cfg(cfg_args)
    trainer = EMTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    print(f"[demo] 3/5 evaluating on {cfg.DATASETS.TEST[0]}")
    results = EMTrainer.test(cfg, trainer.model)
    metrics_file = out / "metrics.json"
    from emdet.utils.atomic import atomic_write

    atomic_write(metrics_file, json.dumps(results, indent=2, default=float))
    for task in ("bbox", "segm"):
        r = results.get(cfg.DATASETS.TEST[0], results).get(task, {})
        if r:
            per_class = ", ".join(f"{k[3:]} {v:.1f}" for k, v in r.items() if k.startswith("AP-"))
            print(f"[demo] {task}: AP {r['AP']:.1f}  AP50 {r['AP50']:.1f}  ({per_class})")
    print(f"[demo] model: {train_dir / 'model_final.pth'}")
    print(f"[demo] metrics: {metrics_file}")

    images, gt_json = _test_images(dataset)
    predict_dir = out / "predict"
    print(f"[demo] 4/5 predicting {len(images)} held-out images -> {predict_dir}")
    pred_cfg = cfg.clone()
    pred_cfg.defrost()
    pred_cfg.MODEL.WEIGHTS = str(train_dir / "model_final.pth")
    result = predict_batch(images, predict_dir, pred_cfg,
                           PredictOptions(score_threshold=0.05, overwrite=True))
    print(f"[demo] predictions: {result.predictions} ({result.images_per_second:.2f} images/s)")
    print(f"[demo] overlays: {predict_dir / 'overlays'}")

    print(f"[demo] 5/5 statistics (score >= {args.score_threshold}) -> {out / 'stats'}")
    pred = run_stats_report(result.predictions, out / "stats",
                            score_threshold=args.score_threshold,
                            title="emdet demo: predicted vesicles and holes")
    gt = run_stats_report(gt_json, out / "stats_ground_truth",
                          title="emdet demo: annotated vesicles and holes")
    _compare(pred, gt)
    print(f"[demo] report: {pred.report}")
    print(f"[demo] tables: {pred.instances_csv}, {pred.summary_csv}")
    print(f"[demo] ground-truth report: {gt.report}")
    print(f"[demo] done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
