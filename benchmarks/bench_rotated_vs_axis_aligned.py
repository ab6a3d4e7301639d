"""Rotated vs axis-aligned Faster R-CNN on synthetic overlapping nanorods, same training budget.

Generates a seeded synthetic nanorod data set (HAADF look, heavily overlapping rods, like Zhong
et al.'s 19 training images with ~1300 rods), trains

* the rotated model, ``configs/nanorods/faster_rcnn_rotated_R_18_FPN_cpu.yaml`` (EMRRPN +
  EMRROIHeads), and
* the axis-aligned Faster R-CNN, ``configs/nanorods/faster_rcnn_axis_aligned_R_18_FPN_cpu.yaml``
  (same backbone, input size, schedule and sampling; trained on the boxes enclosing the rods),
* the rotated model with horizontal proposals instead of rotated anchors,
  ``configs/nanorods/faster_rcnn_rotated_hrpn_R_18_FPN_cpu.yaml`` (HRPN + EMRROIHeads), the
  measurement behind the choice of proposal generator,

each with ``tools/train_net.py`` in its own process (two at a time, one thread each), then
evaluates them on the validation split:

* AP50 / AP by **rotated IoU** (the axis-aligned boxes taken as angle-0 rotated boxes);
* AP50 by **axis-aligned IoU** of enclosing boxes (the axis-aligned model's own metric; the
  rotated model's boxes replaced by their enclosing boxes), cross-checked for the axis-aligned
  model with detectron2's ``COCOEvaluator`` on the json's ``bbox``;
* how many **overlapping rods** each separates: recall at IoU 0.5, score >= 0.5, on rods whose
  rotated IoU with another rod exceeds 0.1, by rotated IoU and by enclosing-box IoU.

``run(quick=True)`` is a smoke run (tiny data, a few iterations); the full run is the longer CPU
variant (see ``FULL``; about an hour on 2 shared CPU cores). Set ``EMDET_BENCH_KEEP`` to a folder
to keep the data, models and logs there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import row

NAME = "rotated_vs_axis_aligned"
REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "rotated": REPO / "configs/nanorods/faster_rcnn_rotated_R_18_FPN_cpu.yaml",
    "axis-aligned": REPO / "configs/nanorods/faster_rcnn_axis_aligned_R_18_FPN_cpu.yaml",
    "rotated-HRPN": REPO / "configs/nanorods/faster_rcnn_rotated_hrpn_R_18_FPN_cpu.yaml",
}
#: Trainings run at once, one thread each.
PARALLEL = 2
#: Data and schedule. The schedule of the full run is the configs' own.
FULL = dict(num=24, size=256, split={"train": 0.75, "val": 0.25}, opts=["TEST.EVAL_PERIOD", "500"])
QUICK = dict(
    num=4,
    size=128,
    split={"train": 0.5, "val": 0.5},
    opts=["SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(3,)",
          "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128"],
)
#: Zhong et al. (seed paper 002), real HAADF nanorods, rotated Faster R-CNN (their in-house
#: rotated-box code): mAP in percent.
PAPER = {"train mAP": 91.36, "val mAP": 50.51}


def _train(model: str, root: Path, out: Path, opts: list[str], threads: int) -> subprocess.Popen:
    env = dict(os.environ, EMDET_DATASETS=str(root), OMP_NUM_THREADS=str(threads),
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    cmd = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file",
           str(CONFIGS[model]), "OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "100000",
           *opts]
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out.parent)


def _seconds_per_iter(out: Path) -> float:
    import json

    rows = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    times = [r["time"] for r in rows if "time" in r]
    return float(np.median(times)) if times else float("nan")


def _predict(model: str, out: Path, opts: list[str], dataset: str):
    """Per image: (image_id, predicted boxes (D, 5|4), scores (D,)); and the config."""
    import torch

    from emdet.config import load_config
    from emdet.engine import EMTrainer
    from emdet.engine.checkpoint import AtomicCheckpointer

    cfg = load_config(CONFIGS[model], [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS",
                                       str(out / "model_final.pth")])
    net = EMTrainer.build_model(cfg)
    AtomicCheckpointer(net).load(cfg.MODEL.WEIGHTS)
    net.eval()
    preds = []
    with torch.no_grad():
        for batch in EMTrainer.build_test_loader(cfg, dataset):
            for inp, o in zip(batch, net(batch), strict=True):
                inst = o["instances"].to("cpu")
                preds.append((inp["image_id"], inst))
    return preds, cfg


def _metrics(preds, gt_coco: dict, *, enclosing: bool) -> dict[str, float]:
    from emdet.evaluation.rotated import (
        _as_rboxes,
        evaluate_rotated,
        instances_to_rotated_json,
        overlap_recall,
    )

    def encl(boxes: np.ndarray) -> np.ndarray:
        from emdet.data.geometry import rbox_to_xywh

        xywh = rbox_to_xywh(_as_rboxes(boxes)).reshape(-1, 4)
        return np.c_[xywh[:, :2] + xywh[:, 2:] / 2, xywh[:, 2:], np.zeros(len(xywh))]

    gt = {img["id"]: [] for img in gt_coco["images"]}
    for a in gt_coco["annotations"]:
        gt[a["image_id"]].append(a["bbox"])
    results, found, total = [], 0, 0
    for img_id, inst in preds:
        rs = instances_to_rotated_json(inst, img_id)
        boxes = np.array([r["rbox"] for r in rs]).reshape(-1, 5)
        scores = np.array([r["score"] for r in rs])
        if enclosing:
            for r, b in zip(rs, encl(boxes), strict=True):
                r["rbox"] = b.tolist()
        results += rs
        f, t = overlap_recall(np.array(gt[img_id]).reshape(-1, 5), boxes, scores,
                              enclosing=enclosing)
        found, total = found + f, total + t
    coco = gt_coco
    if enclosing:
        coco = dict(gt_coco, annotations=[dict(a, bbox=encl(np.array([a["bbox"]]))[0].tolist())
                                           for a in gt_coco["annotations"]])
    ev = evaluate_rotated(coco, results)
    ap, ap50 = (ev.stats[0] * 100, ev.stats[1] * 100) if ev is not None else (0.0, 0.0)
    return {"AP": ap, "AP50": ap50, "R50_overlap": 100.0 * found / max(total, 1),
            "overlapping": total}


def _coco_ap50(model: str, out: Path, opts: list[str], dataset: str, preds) -> float:
    """detectron2's COCOEvaluator (axis-aligned, the json's bbox) on axis-aligned predictions."""
    from detectron2.evaluation import COCOEvaluator

    ev = COCOEvaluator(dataset, output_dir=str(out / "coco_eval"), use_fast_impl=False,
                       distributed=False, max_dets_per_image=1000)
    ev.reset()
    for img_id, inst in preds:
        ev.process([{"image_id": img_id}], [{"instances": inst}])
    return float(ev.evaluate()["bbox"]["AP50"])


def run(quick: bool = False) -> list[dict]:
    """Rows: rotated-IoU AP50/AP, enclosing-box AP50, overlapping-rod recall, s/iteration."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import emdet  # noqa: F401
    from emdet.data import register_dataset, unregister_dataset
    from emdet.data.synthetic import make_synthetic
    from emdet.evaluation.rotated import dataset_dicts_to_rotated_coco

    spec = QUICK if quick else FULL
    keep = os.environ.get("EMDET_BENCH_KEEP")
    tmp = None if keep else tempfile.TemporaryDirectory(prefix="emdet-bench-rods-")
    work = Path(keep or tmp.name)
    root = work / "datasets"
    data = root / "nanorods_synth"
    if not (data / "annotations" / "val.json").is_file():
        make_synthetic("nanorods", num=spec["num"], size=spec["size"], seed=0, output=data,
                       split=spec["split"], progress=False)
    opts = list(spec["opts"])
    outs = {m: work / f"{'quick-' if quick else ''}{m}" for m in CONFIGS}
    start = time.time()
    todo = [m for m, out in outs.items() if not (out / "model_final.pth").is_file()]
    todo_all = list(todo)
    running: dict[str, subprocess.Popen] = {}
    while todo or running:
        # PARALLEL at once, one thread each: the same CPU as one after the other with more
        # threads, and no model gets a quieter machine than another
        while todo and len(running) < PARALLEL:
            model = todo.pop(0)
            outs[model].mkdir(parents=True, exist_ok=True)
            running[model] = _train(model, root, outs[model], opts, threads=1)
        time.sleep(1.0)
        for model, p in list(running.items()):
            if p.poll() is None:
                continue
            del running[model]
            if p.returncode != 0:
                for q in running.values():
                    q.kill()
                log = (outs[model].parent / f"{outs[model].name}.log").read_text()[-3000:]
                raise RuntimeError(f"training the {model} model failed:\n{log}")
    # with EMDET_BENCH_KEEP a rerun evaluates the kept models; report the first run's wall time
    timing = work / f"{'quick-' if quick else ''}train_seconds.txt"
    if todo_all:
        timing.write_text(f"{time.time() - start:.1f}\n")
    train_s = float(timing.read_text()) if timing.is_file() else time.time() - start

    names = register_dataset("nanorods_synth", data, evaluator_type="rotated")
    val = next(n for n in names if n.endswith("_val"))
    try:
        gt = dataset_dicts_to_rotated_coco(DatasetCatalog.get(val),
                                           MetadataCatalog.get(val).thing_classes)
        m, own, iters = {}, {}, {}
        for model, out in outs.items():
            preds, cfg = _predict(model, out, opts, val)
            m[model] = _metrics(preds, gt, enclosing=False)
            own[model] = _metrics(preds, gt, enclosing=True)
            iters[model] = (cfg.SOLVER.MAX_ITER, _seconds_per_iter(out))
            if model == "axis-aligned":
                own[model]["coco_AP50"] = _coco_ap50(model, out, opts, val, preds)
    finally:
        unregister_dataset("nanorods_synth")
        if tmp is not None:
            tmp.cleanup()

    r, a, h = "rotated", "axis-aligned", "rotated-HRPN"
    n_iter = iters[r][0]
    budget = (f"{spec['num']} images of {spec['size']} px ({len(gt['annotations'])} val rods), "
              f"{n_iter} iterations each, {train_s / 60:.0f} min wall for the {len(outs)} "
              f"trainings, {PARALLEL} at a time")
    paper = (f"paper (Zhong et al., real HAADF, rotated Faster R-CNN): train mAP "
             f"{PAPER['train mAP']}, val mAP {PAPER['val mAP']}")
    rows = [
        row(NAME, "AP50 %, rotated IoU (rotated vs axis-aligned as angle 0)", m[r]["AP50"],
            "AP50", baseline=m[a]["AP50"], note=f"{budget}; {paper}"),
        row(NAME, "AP %, rotated IoU 0.5:0.95", m[r]["AP"], "AP", baseline=m[a]["AP"],
            note=paper),
        row(NAME, "AP50 %, axis-aligned IoU of enclosing boxes", own[r]["AP50"], "AP50",
            baseline=own[a]["AP50"],
            note=f"axis-aligned model by detectron2 COCOEvaluator: AP50 {own[a]['coco_AP50']:.1f}"),
        row(NAME, f"overlapping rods found %, rotated IoU ({m[r]['overlapping']} rods)",
            m[r]["R50_overlap"], "recall", baseline=m[a]["R50_overlap"],
            note="recall at IoU 0.5, score >= 0.5, rods with rotated IoU > 0.1 with another"),
        row(NAME, "overlapping rods found %, enclosing-box IoU", own[r]["R50_overlap"],
            "recall", baseline=own[a]["R50_overlap"],
            note="each model's boxes and the rods as enclosing axis-aligned boxes"),
        row(NAME, "training time per iteration", iters[r][1], "s/iter", baseline=iters[a][1],
            higher_is_better=False, note=f"1 thread each, {PARALLEL} trainings at once"),
        # proposal generator: rotated anchors (EMRRPN) vs horizontal proposals (HRPN)
        row(NAME, "EMRRPN vs HRPN proposals: AP50 %, rotated IoU", m[r]["AP50"], "AP50",
            baseline=m[h]["AP50"], note="baseline: the same rotated head fed by HRPN"),
        row(NAME, "EMRRPN vs HRPN proposals: AP %, rotated IoU", m[r]["AP"], "AP",
            baseline=m[h]["AP"]),
        row(NAME, "EMRRPN vs HRPN proposals: overlapping rods found %", m[r]["R50_overlap"],
            "recall", baseline=m[h]["R50_overlap"]),
        row(NAME, "EMRRPN vs HRPN proposals: time per iteration", iters[r][1], "s/iter",
            baseline=iters[h][1], higher_is_better=False),
    ]
    return rows


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    from run_all import format_table

    print(format_table(run(quick=quick)))
