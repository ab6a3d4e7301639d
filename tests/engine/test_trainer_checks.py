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


def test_best_checkpoint_keeps_the_best_eval_with_its_threshold_across_a_resume(tmp_path):
    from types import SimpleNamespace

    import torch
    from detectron2.utils.events import EventStorage

    from emdet.engine.checkpoint import AtomicCheckpointer
    from emdet.engine.trainer import BestCheckpointer
    from emdet.engine.weights import load_weights_file
    from emdet.evaluation.threshold import read_threshold

    model = torch.nn.Linear(2, 1)
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    best = tmp_path / "model_best.pth"
    (tmp_path / "score_threshold.json").write_text('{"threshold": 0.9}')  # the last eval's

    def evaluate(hook, storage, iteration, ap, threshold):
        storage.iter = iteration
        storage.put_scalar("segm/AP", ap, smoothing_hint=False)
        storage.put_scalar("score_threshold/threshold", threshold, smoothing_hint=False)
        with torch.no_grad():
            model.bias.fill_(ap)  # weights that say which evaluation they come from
        hook._best_checking()

    with EventStorage(0) as storage:
        hook = BestCheckpointer(10, checkpointer, "segm/AP")
        hook.trainer = SimpleNamespace(storage=storage, start_iter=0)
        hook.before_train()
        evaluate(hook, storage, 9, 10.0, 0.3)
        evaluate(hook, storage, 19, 5.0, 0.4)   # worse: model_best.pth stays
        assert float(load_weights_file(best)["model"]["bias"]) == 10.0
        evaluate(hook, storage, 29, 20.0, 0.6)
    saved = load_weights_file(best)
    assert float(saved["model"]["bias"]) == 20.0 and saved["iteration"] == 29
    assert saved["best_metric"] == 20.0 and saved["val_metric"] == "segm/AP"
    assert read_threshold(best) == pytest.approx(0.6)  # its own, not the file's 0.9
    with EventStorage(30) as storage:  # --resume: the best before the restart still counts
        hook = BestCheckpointer(10, checkpointer, "segm/AP")
        hook.trainer = SimpleNamespace(storage=storage, start_iter=30)
        hook.before_train()
        assert hook.best_metric == 20.0 and hook.best_iter == 29
        evaluate(hook, storage, 39, 15.0, 0.7)
    assert float(load_weights_file(best)["model"]["bias"]) == 20.0


def test_the_starting_weights_are_the_best_until_fine_tuning_beats_them(tmp_path):
    """EMDET.EVAL_START: fine-tuning a good shipped model on a dozen images can make it worse
    on the validation set (EMPS: val mask AP 77.6 for the shipped model, 75.8 at best after
    600 iterations); then model_best.pth must stay the start."""
    from types import SimpleNamespace

    import torch
    from detectron2.engine import hooks
    from detectron2.utils.events import EventStorage

    from emdet.engine.checkpoint import AtomicCheckpointer
    from emdet.engine.trainer import BestCheckpointer
    from emdet.engine.weights import load_weights_file

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.bias.fill_(77.0)  # the starting weights
    checkpointer = AtomicCheckpointer(model, str(tmp_path))
    best = tmp_path / "model_best.pth"

    class FakeEval(hooks.EvalHook):
        def __init__(self, storage):
            super().__init__(10, lambda: {})
            self.storage = storage

        def _do_eval(self):  # what EvalHook records: the metric of the current weights
            self.storage.put_scalar("segm/AP", float(model.bias), smoothing_hint=False)

    with EventStorage(0) as storage:
        hook = BestCheckpointer(10, checkpointer, "segm/AP", eval_start=True)
        hook.trainer = SimpleNamespace(storage=storage, start_iter=0,
                                       _hooks=[FakeEval(storage), hook])
        hook.before_train()
        saved = load_weights_file(best)
        assert saved["iteration"] == 0 and saved["best_metric"] == 77.0
        for iteration, ap in ((9, 75.0), (19, 76.0)):  # fine-tuning, never better on val
            storage.iter = iteration
            with torch.no_grad():
                model.bias.fill_(ap)
            hook.trainer._hooks[0]._do_eval()
            hook._best_checking()
    saved = load_weights_file(best)
    assert float(saved["model"]["bias"]) == 77.0 and saved["iteration"] == 0


def test_best_metric_needs_an_eval_period(data_root, tmp_path, caplog):
    from emdet.engine.trainer import BestCheckpointer, EMTrainer

    cfg = _cfg(data_root, tmp_path, "EMDET.BEST_METRIC", "segm/AP", "TEST.EVAL_PERIOD", "0",
               "DATASETS.TEST", "('vesicles_synth_val',)")
    trainer = EMTrainer(cfg)
    assert not any(isinstance(h, BestCheckpointer) for h in trainer._hooks)
    assert "needs TEST.EVAL_PERIOD > 0" in caplog.text
    cfg = _cfg(data_root, tmp_path, "EMDET.BEST_METRIC", "segm/AP", "TEST.EVAL_PERIOD", "5",
               "DATASETS.TEST", "('vesicles_synth_val',)")
    names = [type(h).__name__ for h in EMTrainer(cfg)._hooks]
    assert names.index("BestCheckpointer") == names.index("EvalHook") + 1


def test_cvat_files_with_every_mask_marked_crowd_train_and_score_as_objects(tmp_path, caplog):
    """CVAT writes every mask object with iscrowd 1; detectron2 would drop every image from
    training and pycocotools ignore every object. All-crowd files are read as objects, in the
    data set and in the evaluator's ground truth; a file mixing 0 and 1 keeps COCO's meaning."""
    import json
    import shutil

    from detectron2.data import DatasetCatalog
    from detectron2.data.build import filter_images_with_only_crowd_annotations

    from emdet.data.cocofile import read_coco
    from emdet.data.synthetic import make_synthetic
    from emdet.engine.trainer import EMTrainer

    root = tmp_path / "datasets"
    make_synthetic("vesicles", num=4, size=128, seed=5, output=root / "cvat_synth",
                   split={"train": 0.5, "val": 0.5})
    val = root / "cvat_synth" / "annotations" / "val.json"
    data = json.loads(val.read_text())
    n = len(data["annotations"])
    shutil.copy(val, tmp_path / "mixed.json")
    for ann in data["annotations"]:
        ann["iscrowd"] = 1
    val.write_text(json.dumps(data))
    cfg = _cfg(root, tmp_path, "DATASETS.TRAIN", "('cvat_synth_val',)",
               "DATASETS.TEST", "('cvat_synth_val',)")
    records = DatasetCatalog.get("cvat_synth_val")
    assert sum(len(r["annotations"]) for r in records) == n > 0
    assert all(a["iscrowd"] == 0 for r in records for a in r["annotations"])
    assert len(filter_images_with_only_crowd_annotations(records)) == len(records)
    assert "all %d annotations have iscrowd 1" in "".join(r.msg for r in caplog.records)
    evaluator = EMTrainer.build_evaluator(cfg, "cvat_synth_val")
    coco_eval = evaluator._evaluators[0] if hasattr(evaluator, "_evaluators") else evaluator
    anns = coco_eval._coco_api.loadAnns(coco_eval._coco_api.getAnnIds())
    assert len(anns) == n and not any(a["iscrowd"] for a in anns)
    # the same rule for tools that read the file themselves
    assert not any(a["iscrowd"] for a in read_coco(val)["annotations"])
    mixed = json.loads((tmp_path / "mixed.json").read_text())
    mixed["annotations"][0]["iscrowd"] = 1
    (tmp_path / "mixed.json").write_text(json.dumps(mixed))
    kept = [a["iscrowd"] for a in read_coco(tmp_path / "mixed.json")["annotations"]]
    assert kept[0] == 1 and sum(kept) == 1
