"""mAP of each task's quick schedule on its synthetic set, as a user would run it.

    python benchmarks/quick_map.py [--iters 300] [--output output/quick_map]

For each task (vesicles: Mask R-CNN, merons: Faster R-CNN small boxes) it generates a seeded
synthetic dataset (16 images of 256 px, split 60/20/20), runs ``tools/train_net.py`` with the
task's quick-schedule config, and prints a markdown table of box/mask AP with the seed papers'
numbers beside them (they are on real micrographs: a reference, not a like-for-like target).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = {
    "vesicles": ("configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml",
                 "segm: 86.64 (vesicle_large), 63.71 (vesicle_small) on validation (Zhong et al.)"),
    "merons": ("configs/quick_schedules/merons_faster_rcnn_instant_test.yaml",
               "U-Net heatmaps: precision/recall ~0.7 (Lin et al.; no box AP reported)"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--output", default="output/quick_map")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    args = parser.parse_args(argv)
    out = Path(args.output).resolve()
    rows = []
    for task in args.tasks:
        config, paper = TASKS[task]
        data = out / "datasets"
        if not (data / f"{task}_synth").is_dir():
            subprocess.run([sys.executable, str(REPO / "tools/make_synthetic.py"), "--kind", task,
                            "--num", "16", "--size", "256", "--seed", "0", "--quiet",
                            "--output", str(data / f"{task}_synth")], check=True)
        run_dir = out / task
        t0 = time.time()
        subprocess.run(
            [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(REPO / config),
             "OUTPUT_DIR", str(run_dir), "SOLVER.MAX_ITER", str(args.iters),
             "SOLVER.STEPS", f"({int(args.iters * 0.8)},)", "TEST.EVAL_PERIOD", "0"],
            check=True, env=dict(os.environ, EMDET_DATASETS=str(data)),
        )
        minutes = (time.time() - t0) / 60
        results = {}
        for line in (run_dir / "metrics.json").read_text().splitlines():
            record = json.loads(line)
            results.update({k: v for k, v in record.items() if k.startswith(("bbox/", "segm/"))})
        rows.append((task, config, args.iters, minutes, results, paper))
    print("| task | config | iters | CPU min | box AP / AP50 | mask AP / AP50 | paper |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task, config, iters, minutes, r, paper in rows:
        box = f"{r.get('bbox/AP', float('nan')):.1f} / {r.get('bbox/AP50', float('nan')):.1f}"
        segm = (f"{r['segm/AP']:.1f} / {r['segm/AP50']:.1f}" if "segm/AP" in r else "-")
        print(f"| {task} | `{Path(config).name}` | {iters} | {minutes:.1f} | {box} | {segm} | "
              f"{paper} |")
    (out / "quick_map.json").write_text(json.dumps([r[:5] for r in rows], indent=1))


if __name__ == "__main__":
    main()
