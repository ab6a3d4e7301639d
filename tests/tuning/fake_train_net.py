"""Stands in for tools/train_net.py in tuning tests: same command line, instant, known metric.

Reads the ``KEY VALUE`` overrides only (no torch import, so a trial takes milliseconds):
bbox/AP = 100 - 1e6 * (BASE_LR - 0.004)**2 + BATCH_SIZE_PER_IMAGE / 1000, and BASE_LR > 0.015
"diverges" (exit 1). Sleeps $FAKE_TRAIN_SLEEP seconds so tests can kill a study mid-way, and
writes its pid to $FAKE_TRAIN_PIDS/<pid> first so they can watch the process.
"""
import ast
import json
import os
import sys
import time
from pathlib import Path

args = sys.argv[1:]
i = args.index("--config-file")
opts = args[:i] + args[i + 2:]
values = {k: ast.literal_eval(v) if v[:1] in "0123456789-[(.'\"" else v
          for k, v in zip(opts[::2], opts[1::2], strict=True)}
if os.environ.get("FAKE_TRAIN_PIDS"):
    pids = Path(os.environ["FAKE_TRAIN_PIDS"])
    pids.mkdir(parents=True, exist_ok=True)
    (pids / f".{os.getpid()}").write_text(str(os.getpid()))
    os.replace(pids / f".{os.getpid()}", pids / str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_TRAIN_SLEEP", "0")))
lr = values["SOLVER.BASE_LR"]
if lr > 0.015:
    sys.exit("FloatingPointError: Training diverged at iteration 3")
out = Path(values["OUTPUT_DIR"])
out.mkdir(parents=True, exist_ok=True)
ap = 100 - 1e6 * (lr - 0.004) ** 2 + values["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"] / 1000
(out / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n"
                                  + json.dumps({"iteration": 1, "bbox/AP": ap}) + "\n")
