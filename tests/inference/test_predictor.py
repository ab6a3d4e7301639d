"""EMPredictor: DefaultPredictor's answer on whole images, EM intensities, clear errors."""

import numpy as np
import pytest
import torch

from emdet.config import load_config
from emdet.inference.coco import annotations_to_detections, detections_to_annotations
from emdet.inference.predictor import EMPredictor, PredictError, prepare_image


@pytest.fixture(scope="module")
def quick_cfg(random_weights, h):
    return load_config(h.QUICK, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(random_weights),
                                 "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                 "INPUT.EM.CLIP_PERCENTILES", "[]"])


def test_whole_image_equals_detectron2_default_predictor(quick_cfg):
    """Untiled, EMPredictor is DefaultPredictor plus mask cropping (same boxes, scores)."""
    from detectron2.engine import DefaultPredictor

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (192, 224)).astype(np.uint8)
    image[0, 0], image[0, 1] = 0, 255  # min-max stretch is then the identity
    ours = EMPredictor(quick_cfg, tile=0)(image)
    theirs = DefaultPredictor(quick_cfg)(np.repeat(image[..., None], 3, axis=2))["instances"]
    keep = theirs.pred_masks.flatten(1).any(1).numpy()  # EMPredictor drops empty masks
    assert len(ours) == keep.sum() > 10
    np.testing.assert_allclose(ours.scores, theirs.scores.numpy()[keep], rtol=1e-6)
    np.testing.assert_allclose(ours.boxes, theirs.pred_boxes.tensor.numpy()[keep], atol=1e-4)
    first = theirs.pred_masks[np.flatnonzero(keep)[0]].numpy()
    crop = ours.masks[0]
    assert crop.area == first.sum()
    ys, xs = np.nonzero(first)
    assert (crop.y0, crop.x0) == (ys.min(), xs.min())


def test_prepare_image_stretches_any_dtype(quick_cfg):
    image = np.linspace(0, 60000, 64 * 80).reshape(64, 80).astype(np.uint16)
    out = prepare_image(image, quick_cfg)  # INPUT.EM.INPUT_DTYPE "auto": 16-bit -> float32
    assert out.dtype == np.float32 and out.shape == (64, 80)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) > 1000  # not cut to 256 levels
    cfg = quick_cfg.clone()
    cfg.INPUT.EM.INPUT_DTYPE = "uint8"
    out8 = prepare_image(image, cfg)
    assert out8.dtype == np.uint8 and len(np.unique(out8)) == 256
    np.testing.assert_array_equal(out8, np.rint(out))
    assert prepare_image(out8, quick_cfg).dtype == np.uint8  # 8-bit files stay uint8
    with pytest.raises(ValueError, match="one \\(H, W\\) frame"):
        prepare_image(np.zeros((3, 8, 8, 2), np.uint16), quick_cfg)


def test_missing_or_empty_weights_are_explained(h, tmp_path):
    cfg = load_config(h.QUICK, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS",
                                str(tmp_path / "nope.pth")])
    with pytest.raises(PredictError, match="nope.pth does not exist"):
        EMPredictor(cfg)
    cfg = load_config(h.QUICK, ["MODEL.DEVICE", "cpu"])
    with pytest.raises(PredictError, match="MODEL.WEIGHTS is empty"):
        EMPredictor(cfg)


def test_overlap_must_be_smaller_than_the_tile(h):
    with pytest.raises(ValueError, match="overlap must be between 0 and tile - 1"):
        EMPredictor(h.oracle_cfg(), model=h.OracleModel(), tile=64, overlap=64)


def test_tiles_are_batched(h):
    model = h.OracleModel()
    predictor = EMPredictor(h.oracle_cfg(), model=model, tile=128, overlap=32, batch_size=4)
    image = h.blob_scene(300, 300, 10, 0)
    predictor(image)
    n_tiles = len(predictor.tiles(300, 300))
    assert model.tiles == n_tiles == 9 and model.calls == 3


def test_annotations_round_trip(h):
    image = h.blob_scene(200, 260, 15, 2)
    det = EMPredictor(h.oracle_cfg("INPUT.MIN_SIZE_TEST", "96"), model=h.OracleModel(),
                      tile=96, overlap=32)(image)
    anns = detections_to_annotations(det, 200, 260, [7, 9])
    assert {a["category_id"] for a in anns} <= {7, 9}
    assert all(a["area"] == m.area for a, m in zip(anns, det.masks, strict=True))
    back = annotations_to_detections(anns, 200, 260, {7: 0, 9: 1})
    assert h.mask_set(back) == h.mask_set(det)
    np.testing.assert_allclose(back.scores, det.scores, atol=1e-5)


def test_rotated_annotations_have_rbox_and_rle(h):
    image = h.blob_scene(200, 200, 8, 4, rods=True)
    det = EMPredictor(h.oracle_cfg(), model=h.OracleModel(rotated=True, masks=False),
                      tile=128, overlap=48)(image)
    anns = detections_to_annotations(det, 200, 200, [1, 2])
    assert anns and all(len(a["rbox"]) == 5 and a["segmentation"]["size"] == [200, 200]
                        for a in anns)
    assert all(a["rbox"][2] >= a["rbox"][3] and -90 <= a["rbox"][4] < 90 for a in anns)
    back = annotations_to_detections(anns, 200, 200, {1: 0, 2: 1})
    assert back.rotated and len(back) == len(det)


def test_real_rotated_model_plugs_in(h):
    """A detectron2 rotated R-CNN (random weights) runs tiled and its boxes stay rotated."""
    cfg_file = h.REPO / "configs/quick_schedules/nanorods_rotated_instant_test.yaml"
    if not cfg_file.is_file():
        pytest.skip("no rotated quick config in this checkout")
    from detectron2.modeling import build_model

    import emdet.modeling  # noqa: F401  (registers the rotated heads)

    cfg = load_config(cfg_file, ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3",
                                 "INPUT.MIN_SIZE_TEST", "128"])
    torch.manual_seed(0)
    model = build_model(cfg)
    det = EMPredictor(cfg, model=model.eval(), tile=128, overlap=32)(
        np.random.default_rng(1).integers(0, 4000, (200, 200)).astype(np.uint16)
    )
    assert det.rotated
    anns = detections_to_annotations(det, 200, 200, [1])
    assert all("rbox" in a for a in anns)
