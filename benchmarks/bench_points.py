"""Atom finding from a dozen labels: heatmap U-Net (shipped, fine-tuned, scratch) against DoG.

    python benchmarks/bench_points.py [--output output/bench_points] [--only classical ...]
        [--fresh]

No real atom images ship with the project or lie in ../shared/data, so this benchmark is on
synthetic images the model was NOT trained on (new seeds) of two kinds:

* ``haadf`` (seed 1): the same simulator as the pre-training set of
  ``emdet://haadf-atoms-unet`` (probe tails, scan distortion, amorphous support, 3-60 e- per
  atom peak), new images: how well the shipped model and a fine-tuned one do in-domain;
* ``atoms`` (seed 1): Leibovich et al.'s low-dose columns of a faceted particle (about one
  electron per background pixel, a lattice, no support or scan distortion), a simulator the
  shipped model never saw: the domain shift a real data set brings.

Each has 12 train / 10 val / 20 test images of 256 px, every point of class ``atom`` (the
``atoms`` kind's three column heights pooled). Per kind, like a user would:

1. ``tools/classical_points.py`` tunes difference-of-Gaussians + peak_local_max on the 12
   training images (``emdet.classical_points``) and is scored on the 20 test images;
2. the shipped model as it is (no labels), its peak threshold as shipped;
3. ``tools/train_unet.py --config-file configs/real/points_heatmap_cpu.yaml`` from the shipped
   weights (``em-pretrained``) and from random weights (``scratch``) on the 12, keeping
   ``model_best.pth`` by val F1 with its val-calibrated threshold;
4. every method's points on the test images scored by the same
   ``emdet.classical_points.point_figures`` (one-to-one matching within 3 px): precision,
   recall, F1, count error (mean per image, and of the whole split), training minutes.

Results: OUTPUT/results.json and results.md. Steps whose outputs exist are reused.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/real/points_heatmap_cpu.yaml"
SPLIT = "train=12,val=10,test=20"
KINDS = ("haadf", "atoms")
RADIUS = 3.0
STEPS = ("classical", "shipped", "em-pretrained", "scratch")


def _run(cmd: list[str], log: Path) -> float:
    """Run a tool with its output to ``log``; return wall minutes. A failure stops the run."""
    print("$ " + " ".join(map(str, cmd)), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if proc.returncode:
        sys.exit(f"bench_points: failed (exit {proc.returncode}); see {log}:\n"
                 + "".join(log.read_text().splitlines(True)[-15:]))
    return (time.perf_counter() - t0) / 60


def _data(kind: str, root: Path) -> Path:
    from emdet.data.synthetic import make_synthetic

    folder = root / f"{kind}_fewshot"
    if not (folder / "annotations" / "test.json").is_file():
        make_synthetic(kind, num=42, size=256, seed=1, output=folder, split=SPLIT)
    _one_class(folder)
    return folder


def _one_class(folder: Path) -> None:
    """Pool the classes into one, ``atom``, as an atom finder sees them (the ``atoms`` kind
    classes its columns by height: height_1..3)."""
    import yaml

    from emdet.utils.atomic import atomic_write

    for path in sorted((folder / "annotations").glob("*.json")):
        coco = json.loads(path.read_text())
        if [c["name"] for c in coco["categories"]] == ["atom"]:
            continue
        coco["categories"] = [{"id": 1, "name": "atom", "supercategory": ""}]
        for ann in coco["annotations"]:
            ann["category_id"] = 1
        atomic_write(path, json.dumps(coco))
    spec = yaml.safe_load((folder / "dataset.yaml").read_text())
    if spec.get("classes") != ["atom"]:
        spec["classes"] = ["atom"]
        spec.pop("stuff_classes", None)
        atomic_write(folder / "dataset.yaml", yaml.safe_dump(spec, sort_keys=False))


def _score_model(ds: Path, weights: str) -> dict:
    """Points of the model on the test images, scored like the classical baseline."""
    from emdet.classical_points import point_figures, read_point_dataset
    from emdet.dense.config import load_unet_config
    from emdet.dense.predict import DensePredictor

    cfg = load_unet_config(CONFIG, ["DATASET.DIR", str(ds), "MODEL.DEVICE", "cpu"])
    predictor = DensePredictor(cfg, weights=weights)
    names, images, truths = read_point_dataset(ds / "annotations" / "test.json")
    preds = [predictor.points(image)[0] for image in images]
    figures = point_figures(preds, truths, RADIUS, names)
    figures["threshold"] = predictor.thresholds
    return figures


def classical(ds: Path, out: Path) -> dict:
    target = out / "classical"
    timing = out / "classical_timing.json"
    if not (target / "figures.json").is_file() or not timing.is_file():
        minutes = _run([sys.executable, "tools/classical_points.py",
                        "--train", ds / "annotations/train.json",
                        "--apply", ds / "annotations/test.json", "--output", target,
                        "--match-radius", RADIUS, "--overwrite", "--quiet"],
                       out / "classical.log")
        timing.write_text(json.dumps({"minutes": minutes, "load": os.getloadavg()[0]}))
    minutes = json.loads(timing.read_text())["minutes"]
    figures = json.loads((target / "figures.json").read_text())
    return {"method": "DoG + peak_local_max, tuned on the 12", "init": "-",
            "train_minutes": minutes, **figures}


def shipped(ds: Path, out: Path) -> dict:
    return {"method": "emdet://haadf-atoms-unet as shipped (no labels)", "init": "pretrained",
            "train_minutes": 0.0, **_score_model(ds, "emdet://haadf-atoms-unet")}


def learned(ds: Path, out: Path, init: str) -> dict:
    target = out / init
    timing = target / "timing.json"
    if not timing.is_file():
        weights = "emdet://haadf-atoms-unet" if init == "em-pretrained" else ""
        minutes = _run([sys.executable, "tools/train_unet.py", "--config-file", CONFIG,
                        "--quiet", "DATASET.DIR", ds, "OUTPUT_DIR", target,
                        "MODEL.WEIGHTS", weights, "DATASET.TEST_SPLITS", "[]"],
                       out / f"train_{init}.log")
        timing.write_text(json.dumps({"minutes": minutes, "load": os.getloadavg()[0]}))
    t = json.loads(timing.read_text())
    best = _best_iteration(target / "model_best.pth")
    return {"method": "heatmap U-Net (configs/real/points_heatmap_cpu.yaml)", "init": init,
            "train_minutes": t["minutes"], "best_iteration": best,
            **_score_model(ds, str(target / "model_best.pth"))}


def _best_iteration(path: Path) -> int:
    from emdet.dense.predict import load_checkpoint

    return int(load_checkpoint(path)["iteration"]) + 1


def table(rows: list[dict]) -> str:
    head = ("| data | method | init | train min | precision | recall | F1 | found / annotated "
            "| count error: per image, all |\n" + "| --- " * 9 + "|\n")
    lines = []
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['method']} | {r['init']} | {r['train_minutes']:.1f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
            f"{r['n_found']} / {r['n_annotated']} | {100 * r['count_error']:.0f} %, "
            f"{100 * r['count_error_total']:.0f} % |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/bench_points", type=Path)
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--only", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--fresh", action="store_true", help="redo every step")
    args = p.parse_args(argv)
    out = args.output.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    rows = []
    print(f"bench_points: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    for kind in args.kinds:
        ds = _data(kind, out / "datasets")
        kout = out / kind
        kout.mkdir(parents=True, exist_ok=True)
        for step in args.only:
            if step == "classical":
                row = classical(ds, kout)
            elif step == "shipped":
                row = shipped(ds, kout)
            else:
                row = learned(ds, kout, step)
            row = {"kind": kind, **{k: v for k, v in row.items() if k != "per_image"}}
            print(f"{kind} {row['init']}: F1 {row['f1']:.3f} (P {row['precision']:.3f}, "
                  f"R {row['recall']:.3f}), count error {100 * row['count_error']:.0f} %",
                  flush=True)
            rows.append(row)
    from emdet.utils.atomic import atomic_write

    atomic_write(out / "results.json", json.dumps(rows, indent=2) + "\n")
    atomic_write(out / "results.md", table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
