"""emdet.dense.train: a tiny training of a few steps, resume after an interruption, CV tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emdet.dense import train as train_module
from emdet.dense.config import load_unet_config
from emdet.dense.data import DenseDataError, load_dense_samples, sample_batch
from emdet.dense.predict import CheckpointError, DensePredictor, load_checkpoint
from emdet.dense.train import evaluate, run_training, train_model

TINY = ["MODEL.BLOCKS", "3", "MODEL.FEATURES", "4", "MODEL.BATCH_NORM", "False",
        "MODEL.DEVICE", "cpu", "INPUT.CROP_SIZE", "32", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3"]


@pytest.fixture(scope="module")
def graphene_dir(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    return make_synthetic("graphene", num=4, size=64, seed=1,
                          output=tmp_path_factory.mktemp("data") / "graphene_synth",
                          split={"train": 0.5, "val": 0.5})


@pytest.fixture(scope="module")
def merons_dir(tmp_path_factory):
    from emdet.data.synthetic import make_synthetic

    return make_synthetic("merons", num=2, size=64, seed=1,
                          output=tmp_path_factory.mktemp("data") / "merons_synth",
                          split={"train": 0.5, "val": 0.5})


def _cfg(name, data_dir, out, *extra):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    return load_unet_config(repo / "configs" / "unet" / name,
                            ["DATASET.DIR", str(data_dir), "OUTPUT_DIR", str(out), *TINY,
                             *extra])


def test_loads_samples_with_targets(graphene_dir, merons_dir, tmp_path):
    cfg = _cfg("graphene_contamination.yaml", graphene_dir, tmp_path)
    samples, classes = load_dense_samples(cfg, splits=["train"])
    assert classes == ("vacuum", "lattice", "contamination") and len(samples) == 2
    s = samples[0]
    assert s.image.dtype == np.float32 and s.labels.shape == s.image.shape
    assert abs(float(s.image.mean())) < 1e-3  # flat field + standardisation (eq. 1-3)
    cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path)
    samples, classes = load_dense_samples(cfg)
    assert classes == ("meron", "antimeron") and sum(len(s.points) for s in samples) > 0
    batch = sample_batch(samples, np.random.default_rng(0), task="heatmap", num_classes=2,
                         batch_size=3, crop=32, multiple=2)
    assert batch["image"].shape == (3, 1, 32, 32) and batch["target"].shape == (3, 2, 32, 32)
    assert batch["target"].max() <= 1.0


def test_missing_dataset_says_how_to_make_it(tmp_path):
    cfg = _cfg("graphene_contamination.yaml", tmp_path / "graphene_synth", tmp_path)
    with pytest.raises(DenseDataError, match="make_synthetic.py --kind graphene"):
        load_dense_samples(cfg)


def test_tiny_training_resumes_to_the_same_weights(graphene_dir, tmp_path, monkeypatch):
    cfg = _cfg("graphene_contamination.yaml", graphene_dir, tmp_path)
    samples, classes = load_dense_samples(cfg, splits=["train"])
    torch.set_num_threads(1)  # bit-identical runs
    straight = train_model(cfg, samples, classes, tmp_path / "a", progress=False)

    real = train_module.sample_batch
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # iterations 0-3 ran; model_last.pth holds iteration 2
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "sample_batch", dying)
    with pytest.raises(Killed):
        train_model(cfg, samples, classes, tmp_path / "b", progress=False)
    last = load_checkpoint(tmp_path / "b" / "model_last.pth")
    assert last["iteration"] == 2 and not (tmp_path / "b" / "model_final.pth").exists()
    monkeypatch.setattr(train_module, "sample_batch", real)
    resumed = train_model(cfg, samples, classes, tmp_path / "b", resume=True, progress=False)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    final = load_checkpoint(tmp_path / "b" / "model_final.pth")
    assert final["classes"] == list(classes) and final["arch"]["blocks"] == 3
    assert not (tmp_path / "b" / "model_last.pth").exists()
    assert not list((tmp_path / "b").glob(".tmp-*"))


def test_resume_with_a_higher_max_iter_trains_on_from_the_finished_run(graphene_dir, tmp_path):
    """6 iterations, then --resume with SOLVER.MAX_ITER 10: the same weights as 10 at once."""
    cfg10 = _cfg("graphene_contamination.yaml", graphene_dir, tmp_path, "SOLVER.MAX_ITER", "10")
    samples, classes = load_dense_samples(cfg10, splits=["train"])
    torch.set_num_threads(1)  # bit-identical runs
    straight = train_model(cfg10, samples, classes, tmp_path / "a", progress=False)
    cfg6 = _cfg("graphene_contamination.yaml", graphene_dir, tmp_path, "SOLVER.MAX_ITER", "6")
    six = train_model(cfg6, samples, classes, tmp_path / "b", progress=False)
    again = train_model(cfg6, samples, classes, tmp_path / "b", resume=True, progress=False)
    for a, b in zip(six.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # finished: loaded as it is
    longer = train_model(cfg10, samples, classes, tmp_path / "b", resume=True, progress=False)
    assert load_checkpoint(tmp_path / "b" / "model_final.pth")["iteration"] == 9
    for (k, a), b in zip(straight.state_dict().items(), longer.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_cross_validation_writes_mean_and_spread_and_resumes(graphene_dir, tmp_path, capsys):
    cfg = _cfg("graphene_contamination.yaml", graphene_dir, tmp_path, "SOLVER.MAX_ITER", "2")
    result = run_training(cfg, folds=2, progress=False)
    assert len(result["folds"]) == 2
    summary = result["summary"]
    assert {"mean", "std", "min", "max"} <= set(summary.columns)
    assert {"jaccard", "accuracy", "balanced_accuracy", "f1", "precision", "recall",
            "jaccard_lattice", "mean_jaccard"} <= set(summary.index)
    assert (tmp_path / "cv_summary.csv").is_file() and (tmp_path / "cv_folds.csv").is_file()
    capsys.readouterr()
    run_training(cfg, folds=2, progress=False, resume=True)
    assert capsys.readouterr().out.count("already done") == 2


def test_heatmap_training_and_point_metrics(merons_dir, tmp_path):
    cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path, "SOLVER.MAX_ITER", "2")
    samples, classes = load_dense_samples(cfg)
    model = train_model(cfg, samples, classes, tmp_path, progress=False)
    metrics, table = evaluate(cfg, model, samples, classes)
    assert {"f1", "precision", "recall", "fp_rate", "fn_rate", "f1_meron",
            "recall_antimeron"} <= set(metrics)
    assert set(table["class"]) == {"meron", "antimeron", "all"}
    predictor = DensePredictor(cfg, weights=tmp_path / "model_final.pth")
    xy, cls, scores = predictor.points(np.random.default_rng(0).poisson(50, (70, 66)))
    assert xy.shape[1] == 2 and len(cls) == len(scores) == len(xy)


def test_point_lengths_in_nm_follow_each_images_pixel_size(merons_dir, tmp_path):
    """At the synthetic 0.5 nm pixels, HEATMAP.SIGMA_NM 1.25, MIN_DISTANCE_NM 1.5 and
    EVAL.MATCH_RADIUS_NM 2.5 are the px config's 2.5, 3 and 5 px, so the same seed trains the
    same model to the same figures; matched distances come out in nm."""
    from emdet.dense.units import point_lengths

    px = _cfg("merons_heatmap.yaml", merons_dir, tmp_path / "px", "SOLVER.MAX_ITER", "3")
    nm = _cfg("merons_heatmap.yaml", merons_dir, tmp_path / "nm", "SOLVER.MAX_ITER", "3",
              "HEATMAP.SIGMA", "99.0", "HEATMAP.SIGMA_NM", "1.25", "HEATMAP.MIN_DISTANCE_NM",
              "1.5", "EVAL.MATCH_RADIUS_NM", "2.5")  # the px SIGMA is overridden
    assert point_lengths(nm, 0.5) == point_lengths(px, None)
    assert point_lengths(nm, 0.25).sigma == pytest.approx(5.0)  # twice the magnification
    results = {}
    for name, cfg in (("px", px), ("nm", nm)):
        samples, classes = load_dense_samples(cfg)
        assert [s.pixel_size for s in samples] == [0.5, 0.5]
        torch.manual_seed(0)
        model = train_model(cfg, samples, classes, tmp_path / name, progress=False)
        results[name], results[name + "_table"] = evaluate(cfg, model, samples, classes)
        predictor = DensePredictor(cfg, weights=tmp_path / name / "model_final.pth")
        results[name + "_points"] = predictor.points(samples[0].image, 0.5)[0]
    for key in ("f1", "precision", "recall"):
        assert results["nm"][key] == results["px"][key]
    t_px, t_nm = results["px_table"], results["nm_table"]
    assert t_nm["tp"].tolist() == t_px["tp"].tolist() and t_px["tp"].sum() > 0
    np.testing.assert_allclose(t_nm["mean_distance"], 0.5 * t_px["mean_distance"])
    np.testing.assert_array_equal(results["nm_points"], results["px_points"])
    # an uncalibrated image cannot take lengths in nm: the error names it and the key
    with pytest.raises(ValueError, match="x.tif: has no pixel size, but HEATMAP.MIN_DISTANCE_NM"):
        DensePredictor(nm, weights=tmp_path / "nm" / "model_final.pth").points(
            samples[0].image, None, where="x.tif")


def test_heatmap_thresholds_are_calibrated_stored_and_used(merons_dir, tmp_path):
    from emdet.dense.heatmap import calibrate_thresholds
    from emdet.dense.predict import predict_probabilities

    cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path, "SOLVER.MAX_ITER", "4")
    samples, classes = load_dense_samples(cfg)
    model = train_model(cfg, samples, classes, tmp_path, progress=False)
    stored = load_checkpoint(tmp_path / "model_final.pth")["heatmap_thresholds"]
    probs = [predict_probabilities(model, s.image, task="heatmap", device="cpu")
             for s in samples]
    expected = calibrate_thresholds(probs, [s.points for s in samples],
                                    [s.point_classes for s in samples],
                                    radius=cfg.EVAL.MATCH_RADIUS,
                                    min_distance=cfg.HEATMAP.MIN_DISTANCE)
    assert stored == pytest.approx(expected.tolist()) and model.heatmap_thresholds == stored
    assert DensePredictor(cfg, weights=tmp_path / "model_final.pth").thresholds == stored
    manual = _cfg("merons_heatmap.yaml", merons_dir, tmp_path, "HEATMAP.CALIBRATE", "False",
                  "HEATMAP.THRESHOLD", "0.45")
    assert DensePredictor(manual, weights=tmp_path / "model_final.pth").thresholds == 0.45
    # resuming a finished run gives the model back with its thresholds
    again = train_model(cfg, samples, classes, tmp_path, resume=True, progress=False)
    assert again.heatmap_thresholds == stored


def test_checkpoints_are_loaded_without_running_code(tmp_path):
    import datetime

    torch.save({"model": {}, "extra": datetime.timedelta(1)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused: Unsupported global"):
        load_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth")


def test_validation_keeps_the_best_weights_and_calibrates_on_val(merons_dir, tmp_path, capsys):
    """SOLVER.EVAL_PERIOD scores the val split on the starting weights and every period; the
    best F1 is kept as model_best.pth with thresholds calibrated on val, and returned."""
    from emdet.dense.heatmap import calibrate_thresholds
    from emdet.dense.predict import predict_probabilities

    first = tmp_path / "first"
    cfg = _cfg("merons_heatmap.yaml", merons_dir, first, "SOLVER.MAX_ITER", "4")
    train, classes = load_dense_samples(cfg, splits=["train"])
    train_model(cfg, train, classes, first, progress=False)
    out = tmp_path / "tuned"
    cfg = _cfg("merons_heatmap.yaml", merons_dir, out, "SOLVER.MAX_ITER", "6",
               "SOLVER.EVAL_PERIOD", "3", "DATASET.VAL_SPLITS", "['val']",
               "MODEL.WEIGHTS", str(first / "model_final.pth"))
    val, _ = load_dense_samples(cfg, splits=["val"])
    model = train_model(cfg, train, classes, out, progress=False, val_samples=val)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "validation at" in ln]
    assert [ln.split("validation at ")[1].split(":")[0] for ln in lines] == [
        "the starting weights", "iteration 3", "iteration 6"]
    values = [float(ln.split("f1 ")[1].split()[0]) for ln in lines]
    best = load_checkpoint(out / "model_best.pth")
    assert best["best_metric"] == "f1" and best["best_value"] == pytest.approx(max(values),
                                                                                abs=1e-4)
    assert best["iteration"] == [-1, 2, 5][int(np.argmax(values))]
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, best["model"][key])
    # the thresholds stored with the best weights are those calibrated on val for them
    probs = [predict_probabilities(model, s.image, task="heatmap", device="cpu") for s in val]
    expected = calibrate_thresholds(probs, [s.points for s in val],
                                    [s.point_classes for s in val],
                                    radius=cfg.EVAL.MATCH_RADIUS,
                                    min_distance=cfg.HEATMAP.MIN_DISTANCE)
    assert best["heatmap_thresholds"] == pytest.approx(expected.tolist())
    assert model.heatmap_thresholds == best["heatmap_thresholds"]


def test_eval_period_without_val_splits_is_a_config_error(tmp_path):
    from emdet.config import ConfigError

    with pytest.raises(ConfigError, match="SOLVER.EVAL_PERIOD.*DATASET.VAL_SPLITS"):
        _cfg("merons_heatmap.yaml", tmp_path, tmp_path, "SOLVER.EVAL_PERIOD", "5")


def test_a_dense_model_shipped_as_safetensors_predicts_as_its_checkpoint(merons_dir, tmp_path):
    from emdet.engine.weights import export_to_zoo

    cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path, "SOLVER.MAX_ITER", "3")
    samples, classes = load_dense_samples(cfg)
    train_model(cfg, samples, classes, tmp_path, progress=False)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    entry = export_to_zoo(tmp_path / "model_final.pth", "tiny-merons",
                          config="configs/unet/merons_heatmap.yaml", zoo_dir=zoo)
    shipped = DensePredictor(cfg, weights=zoo / entry["file"])
    trained = DensePredictor(cfg, weights=tmp_path / "model_final.pth")
    assert shipped.classes == trained.classes == classes
    assert shipped.thresholds == pytest.approx(trained.thresholds)
    image = np.random.default_rng(1).poisson(50, (64, 64))
    # fp16 storage: heatmaps agree to about 1e-3
    np.testing.assert_allclose(shipped.probabilities(image), trained.probabilities(image),
                               atol=5e-3)


def test_the_shipped_atom_finder_finds_the_atoms_of_new_haadf_images():
    """emdet://haadf-atoms-unet is in the repository (sha256-checked), loads by name through
    configs/real/points_heatmap_cpu.yaml with its calibrated threshold, and finds the atoms of
    synthetic AC-HAADF images it was not trained on (seed 11) far better than chance."""
    from pathlib import Path

    from emdet.data.synthetic import generate_image
    from emdet.dense.config import load_unet_config
    from emdet.engine.weights import model_zoo, resolve_weights
    from emdet.evaluation.points import point_metrics

    entry = model_zoo()["haadf-atoms-unet"]
    assert Path(resolve_weights("emdet://haadf-atoms-unet")).stat().st_size == entry["bytes"]
    repo = Path(__file__).resolve().parents[2]
    cfg = load_unet_config(repo / "configs/real/points_heatmap_cpu.yaml", ["MODEL.DEVICE", "cpu"])
    predictor = DensePredictor(cfg)
    assert predictor.classes == ("atom",) and 0 < predictor.thresholds[0] < 1
    preds, truths = [], []
    for index in range(3):
        sample = generate_image("haadf", seed=11, index=index, size=192)
        preds.append(predictor.points(sample.image)[0])
        truths.append(np.array([a.extra["point"] for a in sample.instances]))
    pooled = point_metrics(preds, truths, radius=3.0).loc["pooled"]
    assert pooled["f1"] > 0.85, pooled.to_dict()


def test_fine_tuning_to_other_classes_restarts_only_the_output_layer(merons_dir, tmp_path,
                                                                   capsys, monkeypatch):
    """A two-class heatmap model (meron, antimeron) as the start of a one-class one: every
    layer but the 1x1 output head is copied; a network of another width is a clear error."""
    from emdet.dense.train import TrainingError

    cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path / "two", "SOLVER.MAX_ITER", "2")
    samples, classes = load_dense_samples(cfg)
    two = train_model(cfg, samples, classes, tmp_path / "two", progress=False)
    one_cfg = _cfg("merons_heatmap.yaml", merons_dir, tmp_path / "one", "SOLVER.MAX_ITER", "1",
                   "DATASET.CLASSES", "['meron']", "MODEL.WEIGHTS",
                   str(tmp_path / "two" / "model_final.pth"), "HEATMAP.CALIBRATE", "False")
    one_samples, one_classes = load_dense_samples(one_cfg)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: None)  # no update
    one = train_model(one_cfg, one_samples, one_classes, tmp_path / "one", progress=False)
    assert "output layer starts afresh for the classes ['meron']" in capsys.readouterr().out
    theirs, ours = two.state_dict(), one.state_dict()
    assert ours["head.weight"].shape[0] == 1 and theirs["head.weight"].shape[0] == 2
    for key, value in ours.items():
        if not key.startswith("head."):
            torch.testing.assert_close(value, theirs[key], rtol=0, atol=0, msg=key)
    wide = _cfg("merons_heatmap.yaml", merons_dir, tmp_path / "wide", "SOLVER.MAX_ITER", "1",
                "MODEL.FEATURES", "8", "MODEL.WEIGHTS", str(tmp_path / "two" / "model_final.pth"))
    with pytest.raises(TrainingError, match="do not fit this network.*MODEL.FEATURES"):
        train_model(wide, samples, classes, tmp_path / "wide", progress=False)
