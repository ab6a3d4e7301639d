"""tools/train_net.py with the rotated nanorod quick schedule: trains and reports rotated AP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs/quick_schedules/nanorods_rotated_instant_test.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("datasets")
    make_synthetic("nanorods", num=4, size=128, seed=3, output=root / "nanorods_synth",
                   split={"train": 0.5, "val": 0.5}, progress=False)
    return root


def test_rotated_quick_schedule_trains_and_reports_rotated_ap(tmp_path, data_root):
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(QUICK),
           "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "2", "OUTPUT_DIR", str(out),
           "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "50",
           "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
           "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "100"]
    env = dict(os.environ, EMDET_DATASETS=str(data_root), PYTHONUNBUFFERED="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    losses = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()
              if '"total_loss"' in line]
    assert losses[-1]["iteration"] == 2 and all(math.isfinite(x["total_loss"]) for x in losses)
    assert "copypaste: Task: rbox" in log
    header, values = log.split("copypaste: Task: rbox")[1].splitlines()[1:3]
    names = header.split("copypaste: ")[1].split(",")
    assert names[:3] == ["AP", "AP50", "AP75"] and "R50_overlap" in names
    assert len(values.split("copypaste: ")[1].split(",")) == len(names)
    preds = json.loads((out / "inference/nanorods_synth_val/coco_instances_results.json")
                       .read_text())
    assert preds and {"rbox", "segmentation", "bbox", "score", "category_id"} <= set(preds[0])
    assert len(preds[0]["rbox"]) == 5 and len(preds[0]["segmentation"][0]) == 8
