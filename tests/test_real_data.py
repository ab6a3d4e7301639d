"""The real-data path a user takes, on real EMPS micrographs (``../shared/data/emps_train``).

Label images -> COCO with ``convert_annotations.py --format masks``, the RLE data set trains with
``train_net.py`` without a mask-format setting, and ``predict.py`` with its defaults gives the
detections ``--eval-only``'s data path gives (the config resizes these 512-1088 px images to 256).
Skipped when the shared data are not there; about 30 s on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EMPS = REPO.parent / "shared" / "data" / "emps_train"
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"

pytestmark = pytest.mark.skipif(not (EMPS / "segmaps").is_dir(),
                                reason=f"real EMPS data not found at {EMPS} (see its README)")


def test_label_images_to_trained_model_to_predictions_that_match_evaluation(tmp_path):
    ids = (EMPS / "train_ids.txt").read_text().split()[:8]
    masks = tmp_path / "masks"
    root = tmp_path / "datasets" / "emps8"
    masks.mkdir()
    (root / "images").mkdir(parents=True)
    for i in ids:  # a user's copy; the repository never holds these images
        shutil.copy(EMPS / "segmaps" / f"{i}.png", masks)
        shutil.copy(EMPS / "images" / f"{i}.png", root / "images")
    env = dict(os.environ, EMDET_DATASETS=str(tmp_path / "datasets"), PYTHONUNBUFFERED="1")

    def tool(name, *args):
        result = subprocess.run([sys.executable, str(REPO / "tools" / name), *map(str, args)],
                                env=env, capture_output=True, text=True, cwd=tmp_path,
                                timeout=900)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        return result.stdout + result.stderr

    tool("convert_annotations.py", "--format", "masks", "--input", masks, "--images",
         root / "images", "--output", root / "annotations" / "all.json", "--mask-class-name",
         "particle", "--split", "train=0.75,val=0.25")
    coco = json.loads((root / "annotations" / "all.json").read_text())
    from PIL import Image

    for image in coco["images"]:  # every id of every map became exactly one object
        ids_in_map = np.unique(np.asarray(Image.open(masks / image["file_name"])))
        count = sum(a["image_id"] == image["id"] for a in coco["annotations"])
        assert count == len(ids_in_map[ids_in_map > 0])

    cfg_opts = ["DATASETS.TRAIN", "('emps8_train',)", "DATASETS.TEST", "('emps8_val',)",
                "MODEL.ROI_HEADS.NUM_CLASSES", "1", "MODEL.DEVICE", "cpu"]
    log = tool("train_net.py", "--config-file", QUICK, *cfg_opts, "SOLVER.MAX_ITER", "6",
               "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(5,)",
               "OUTPUT_DIR", tmp_path / "run")
    assert "INPUT.MASK_FORMAT bitmask" in log
    weights = tmp_path / "run" / "model_final.pth"

    val = json.loads((root / "annotations" / "val.json").read_text())
    log = tool("predict.py", "--config-file", QUICK, "--input", root / "images", "--output",
               tmp_path / "pred", "--quiet", "--no-overlays", "--score-threshold", "0",
               *cfg_opts, "MODEL.WEIGHTS", weights)
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert pred["info"]["settings"]["input_scale"] is not None

    # the same model through evaluation's data path, on the val images
    import torch
    from detectron2.data import DatasetCatalog

    import emdet  # noqa: F401
    from emdet.config import load_config
    from emdet.data.datasets import register_all_from_root
    from emdet.data.mapper import EMDatasetMapper
    from emdet.inference.predictor import build_model_for_inference

    register_all_from_root(tmp_path / "datasets")
    cfg = load_config(QUICK, [*cfg_opts, "MODEL.WEIGHTS", str(weights),
                              "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    model = build_model_for_inference(cfg)
    mapper = EMDatasetMapper(cfg, is_train=False)
    by_name = {im["file_name"]: im["id"] for im in pred["images"]}
    for record in DatasetCatalog.get("emps8_val"):
        with torch.inference_mode():
            want = sorted(model([mapper(record)])[0]["instances"].scores.tolist())
        name = os.path.basename(record["file_name"])
        got = sorted(a["score"] for a in pred["annotations"] if a["image_id"] == by_name[name])
        assert len(got) == len(want), name
        np.testing.assert_allclose(got, want, atol=1e-4)
    assert val["images"] and len(DatasetCatalog.get("emps8_val")) == len(val["images"])
