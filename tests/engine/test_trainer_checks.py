"""EMTrainer and its checks, in process: class counts, empty images, divergence, evaluators."""
import argparse
import json
from pathlib import Path

import pytest

import emdet  # noqa: F401
from emdet.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("datasets")
    make_synthetic("vesicles", num=4, size=128, seed=5, output=root / "vesicles_synth",
                   split={"train": 0.5, "val": 0.5})
    return root


def _cfg(data_root, tmp_path, *opts):
    from emdet.engine.trainer import setup_cfg

    args = argparse.Namespace(
        config_file=str(QUICK), resume=False, eval_only=False, num_gpus=1,
        opts=["EMDET.DATASETS_ROOT", str(data_root), "OUTPUT_DIR", str(tmp_path / "out"),
              "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128", *opts],
    )
    return setup_cfg(args, default_setup_enabled=False)


def test_class_count_mismatch_names_the_key(data_root, tmp_path):
    with pytest.raises(ConfigError, match=r"MODEL.ROI_HEADS.NUM_CLASSES is 5 .* has 3 classes"):
        _cfg(data_root, tmp_path, "MODEL.ROI_HEADS.NUM_CLASSES", "5")


def test_training_set_without_any_annotation_is_an_error(tmp_path, data_root):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(data_root / "vesicles_synth", root / "bare")
    for split in ("train", "val"):
        path = root / "bare" / "annotations" / f"{split}.json"
        coco = json.loads(path.read_text())
        coco["annotations"] = []
        path.write_text(json.dumps(coco))
    with pytest.raises(Exception, match="annotation"):
        _cfg(root, tmp_path, "DATASETS.TRAIN", "('bare_train',)", "DATASETS.TEST", "()")


def test_diverging_loss_names_iteration_and_suggests_lower_lr(data_root, tmp_path):
    from emdet.engine import EMTrainer

    cfg = _cfg(data_root, tmp_path, "SOLVER.BASE_LR", "1e6", "SOLVER.WARMUP_ITERS", "0",
               "SOLVER.MAX_ITER", "30")
    trainer = EMTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"diverged at iteration \d+.*lower learning rate"):
        trainer.train()


def test_point_datasets_are_evaluated_as_boxes(tmp_path):
    from detectron2.data import MetadataCatalog

    from emdet.config import load_config
    from emdet.data.datasets import register_all_from_root
    from emdet.data.synthetic import make_synthetic
    from emdet.engine import EMTrainer

    make_synthetic("merons", num=2, size=96, seed=1, output=tmp_path / "merons_tiny",
                   split={"train": 0.5, "val": 0.5})
    register_all_from_root(tmp_path)
    assert MetadataCatalog.get("merons_tiny_val").evaluator_type == "points"
    cfg = load_config(REPO / "configs/quick_schedules/merons_faster_rcnn_instant_test.yaml")
    ev = EMTrainer.build_evaluator(cfg, "merons_tiny_val", output_folder=str(tmp_path / "ev"))
    assert ev._tasks == ("bbox",)
    assert ev._max_dets_per_image[2] == cfg.TEST.DETECTIONS_PER_IMAGE == 1000


def test_metrics_of_iterations_a_resumed_run_repeats_are_dropped(tmp_path):
    import json

    from emdet.engine.trainer import trim_metrics

    path = tmp_path / "metrics.json"
    records = [{"iteration": i, "total_loss": 1.0 / (i + 1)} for i in (4, 9, 14, 19)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"iteration": 2')  # torn
    with open(path, "a") as writer:  # detectron2's JSONWriter holds the file open for appending
        assert trim_metrics(str(path), 10) == 3
        writer.write(json.dumps({"iteration": 10}) + "\n")
    assert [json.loads(x)["iteration"] for x in path.read_text().splitlines()] == [4, 9, 10]
    assert trim_metrics(str(tmp_path / "absent.json"), 0) == 0
