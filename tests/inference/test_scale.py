"""Prediction sees images at the scale evaluation and training do.

``tools/predict.py`` once cut tiles of ``INPUT.MIN_SIZE_TEST`` image pixels and fed them at full
scale while the config had trained on images resized by half: mask AP 4.8 instead of the 40.3
that ``--eval-only`` measured on the same images. Now an image of the training images' size is
predicted whole at evaluation's scale (same detections as ``--eval-only``), and a montage much
larger than them is cut into tiles resized by the training scale.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import emdet  # noqa: F401
from emdet.config import load_config
from emdet.inference.predictor import EMPredictor, eval_scale, training_input_scale

from .conftest import QUICK


@pytest.fixture(scope="module")
def resized(tmp_path_factory):
    """A config that halves its 256 px training images, its registered data and a model."""
    from detectron2.modeling import build_model

    from emdet.data.datasets import register_all_from_root
    from emdet.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("scale_data")
    make_synthetic("vesicles", num=4, size=256, seed=5, output=root / "scale_vesicles",
                   split={"train": 0.5, "val": 0.5})
    register_all_from_root(root)
    cfg = load_config(QUICK, [
        "DATASETS.TRAIN", "('scale_vesicles_train',)", "DATASETS.TEST", "('scale_vesicles_val',)",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "256", "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    ])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return cfg, model


def test_training_scale_is_what_evaluation_does_to_the_training_images(resized):
    cfg, _ = resized
    assert training_input_scale(cfg) == 0.5
    assert eval_scale(256, 256, cfg) == 0.5
    assert eval_scale(100, 600, cfg) == pytest.approx(256 / 600)  # MAX_SIZE_TEST caps it
    unknown = cfg.clone()
    unknown.DATASETS.TRAIN = ("not_registered_train",)
    assert training_input_scale(unknown) is None
    native = cfg.clone()
    native.INPUT.MIN_SIZE_TEST = 0  # detectron2: no resize at all, whatever MAX_SIZE_TEST says
    assert eval_scale(256, 256, native) == eval_scale(300, 5000, native) == 1.0
    assert training_input_scale(native) == 1.0


def test_predict_gives_the_detections_of_eval_only(resized):
    """The val images through the evaluation data path and through EMPredictor, same model."""
    from detectron2.data import DatasetCatalog

    from emdet.data.io import read_image
    from emdet.data.mapper import EMDatasetMapper

    cfg, model = resized
    mapper = EMDatasetMapper(cfg, is_train=False)
    predictor = EMPredictor(cfg, model=model, input_scale=training_input_scale(cfg))
    records = DatasetCatalog.get("scale_vesicles_val")
    assert records
    compared = 0
    for record in records:
        assert predictor.tiles(record["height"], record["width"]) == [
            (0, 0, record["height"], record["width"])]
        with torch.inference_mode():
            expected = model([mapper(record)])[0]["instances"].to("cpu")
        image, _ = read_image(record["file_name"])
        got = predictor(image)
        order = np.argsort(-got.scores, kind="stable")
        want = np.argsort(-expected.scores.numpy(), kind="stable")
        assert len(got.scores) == len(expected) > 0
        np.testing.assert_allclose(got.scores[order], expected.scores.numpy()[want], atol=1e-5)
        np.testing.assert_allclose(got.boxes[order], expected.pred_boxes.tensor.numpy()[want],
                                   atol=1e-3)
        compared += 1
    assert compared == len(records)


def test_a_montage_is_tiled_at_the_training_scale(resized):
    cfg, model = resized
    predictor = EMPredictor(cfg, model=model, input_scale=0.5)  # tile 128 model px
    assert predictor.image_scale(256, 256) == 0.5           # like the training images
    assert predictor.image_scale(1024, 1024) == 0.5         # eval would squeeze it to 0.125
    rects = predictor.tiles(1024, 1024)
    assert {(y1 - y0, x1 - x0) for y0, x0, y1, x1 in rects} == {(256, 256)}  # 128 / 0.5
    assert len(rects) > 4
    seen = []
    real = predictor._to_model

    def spy(crop, scale=None):
        seen.append((crop.shape[:2], scale))
        return real(crop, scale)

    predictor._to_model = spy
    predictor(np.random.default_rng(0).integers(0, 4000, (1024, 1024)).astype(np.uint16))
    assert seen and all(shape == (256, 256) and scale == 0.5 for shape, scale in seen)
    without = EMPredictor(cfg, model=model)  # no scale known: the old image-pixel tiles
    assert {(y1 - y0) for y0, _, y1, _ in without.tiles(1024, 1024)} == {128}


def test_predict_batch_measures_the_scale_and_matches_eval(resized, tmp_path):
    import json

    from detectron2.data import DatasetCatalog

    from emdet.data.mapper import EMDatasetMapper
    from emdet.inference.batch import PredictOptions, predict_batch

    cfg, model = resized
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = str(weights)
    record = DatasetCatalog.get("scale_vesicles_val")[0]
    out = tmp_path / "out"
    predict_batch([record["file_name"]], out, cfg,
                  PredictOptions(overlays=False, progress=False, score_threshold=0.0))
    coco = json.loads((out / "predictions.json").read_text())
    assert coco["info"]["settings"]["input_scale"] == 0.5
    with torch.inference_mode():
        expected = model([EMDatasetMapper(cfg, is_train=False)(record)])[0]["instances"]
    got = sorted(a["score"] for a in coco["annotations"])
    want = sorted(expected.scores.tolist())
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_predict_uses_the_threshold_calibrated_beside_the_weights(resized, tmp_path):
    import json

    from detectron2.data import DatasetCatalog

    from emdet.evaluation.threshold import THRESHOLD_FILE
    from emdet.inference.batch import PredictOptions, predict_batch

    cfg, model = resized
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({"threshold": 0.3}))
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = str(weights)
    image = DatasetCatalog.get("scale_vesicles_val")[0]["file_name"]
    runs = {}
    for name, given in (("calibrated", None), ("given", 0.0)):
        predict_batch([image], tmp_path / name, cfg,
                      PredictOptions(overlays=False, progress=False, score_threshold=given))
        runs[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert runs["calibrated"]["info"]["settings"]["score_threshold"] == 0.3
    assert runs["given"]["info"]["settings"]["score_threshold"] == 0.0  # the flag wins
    low = [a["score"] for a in runs["given"]["annotations"]]
    kept = [a["score"] for a in runs["calibrated"]["annotations"]]
    assert sorted(kept) == sorted(s for s in low if s >= 0.3)
    assert len(kept) < len(low)


@pytest.mark.parametrize("settings", [
    {},  # INPUT_DTYPE "auto": float32 for this 16-bit file
    {"INPUT.EM.BACKGROUND": "rolling_ball_dark", "INPUT.EM.BACKGROUND_RADIUS": 30.0,
     "INPUT.EM.MEDIAN_BLUR": 3},
    {"INPUT.EM.INPUT_DTYPE": "uint8", "INPUT.EM.BACKGROUND": "highpass"},
])
def test_training_and_predict_feed_the_model_the_same_array(tmp_path, settings):
    """A 16-bit TIFF reaches the network identically through the training/--eval-only mapper and
    through predict's prepare_image, whatever the INPUT.EM intensity settings."""
    from emdet.data.io import read_image, write_tiff
    from emdet.data.mapper import EMDatasetMapper
    from emdet.inference.predictor import prepare_image

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :128]
    image = 20000 + 80 * xx + rng.normal(0, 300, (96, 128))  # uneven illumination
    image[(yy - 40) ** 2 + (xx - 60) ** 2 < 15 ** 2] -= 6000  # one dark particle
    path = write_tiff(tmp_path / "deep.tif", np.clip(image, 0, 65535).astype(np.uint16))
    overrides = ["INPUT.MIN_SIZE_TEST", "0", "MODEL.DEVICE", "cpu"]
    for key, value in settings.items():
        overrides += [key, str(value)]
    cfg = load_config(QUICK, overrides)
    record = {"file_name": str(path), "height": 96, "width": 128, "image_id": 1}
    mapped = EMDatasetMapper(cfg, is_train=False)(record)["image"]
    prepared = prepare_image(read_image(path)[0], cfg)
    want_dtype = np.uint8 if settings.get("INPUT.EM.INPUT_DTYPE") == "uint8" else np.float32
    assert prepared.dtype == want_dtype and mapped.shape == (3, 96, 128)
    np.testing.assert_array_equal(mapped.numpy(), np.repeat(prepared[None], 3, axis=0))


def test_each_frame_of_a_stack_in_a_coco_file_reaches_the_model(tmp_path):
    """A COCO file listing the frames of one stack (``frame``/``n_frames``, as predict writes
    them) loads as data set dicts that read their own frame, not the first or the whole stack."""
    import json

    from emdet.data.datasets import load_em_coco_json
    from emdet.data.io import read_image, write_tiff
    from emdet.data.mapper import EMDatasetMapper
    from emdet.inference.predictor import prepare_image

    yy, xx = np.mgrid[:48, :64]
    stack = np.stack([(1000 * (k + 1) + 10 * (xx if k % 2 else yy)) for k in range(3)])
    (tmp_path / "images").mkdir()
    write_tiff(tmp_path / "images" / "stack.tif", stack.astype(np.uint16), pixel_size=1.0)
    images = [{"id": 10 + k, "file_name": "stack.tif", "height": 48, "width": 64,
               "frame": k, "n_frames": 3} for k in range(3)]
    anns = [{"id": k + 1, "image_id": 10 + k, "category_id": 1, "bbox": [5, 5, 10, 10],
             "area": 100, "iscrowd": 0,
             "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]} for k in range(3)]
    json_file = tmp_path / "stack.json"
    json_file.write_text(json.dumps({"images": images, "annotations": anns,
                                     "categories": [{"id": 1, "name": "p"}]}))
    records = load_em_coco_json(json_file, tmp_path / "images")
    assert [r["frame"] for r in records] == [0, 1, 2]
    cfg = load_config(QUICK, ["INPUT.MIN_SIZE_TEST", "0", "MODEL.DEVICE", "cpu"])
    mapper = EMDatasetMapper(cfg, is_train=False)
    for k, record in enumerate(records):
        mapped = mapper(record)["image"].numpy()
        frame = prepare_image(read_image(tmp_path / "images" / "stack.tif", page=k)[0], cfg)
        np.testing.assert_array_equal(mapped, np.repeat(frame[None], 3, axis=0))
    assert not np.array_equal(mapper(records[0])["image"], mapper(records[1])["image"])
