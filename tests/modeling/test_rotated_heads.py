"""EMRROIHeads with EMRRPN / HRPN: shapes, losses, canonical outputs, and bad annotations.

Shape glossary: N images, G ground-truth rods per image, R sampled ROIs, K classes, D detections.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import emdet  # noqa: F401

# isort: split
from detectron2.modeling import build_model
from detectron2.structures import Instances, RotatedBoxes
from detectron2.utils.events import EventStorage

import emdet.modeling  # noqa: F401  (registers the heads)
from emdet.config import load_config
from emdet.modeling import EMRROIHeads

REPO_CFG = "configs/quick_schedules/nanorods_rotated_instant_test.yaml"
SIZE = 64
HRPN = ["MODEL.PROPOSAL_GENERATOR.NAME", "HRPN", "MODEL.ANCHOR_GENERATOR.NAME",
        "DefaultAnchorGenerator", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.25, 1.0, 4.0]]",
        "MODEL.RPN.BBOX_REG_WEIGHTS", "(1.0, 1.0, 1.0, 1.0)"]
TINY = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
        "MODEL.DEVICE", "cpu"]


def _model(proposals: str, *opts):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / REPO_CFG, TINY + (HRPN if proposals == "HRPN" else []) + list(opts))
    torch.manual_seed(0)
    return build_model(cfg), cfg


def _inputs(n: int = 2, seed: int = 0, boxes=None) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        g = 5
        rods = boxes if boxes is not None else np.column_stack(
            [rng.uniform(16, 48, g), rng.uniform(16, 48, g), rng.uniform(14, 30, g),
             rng.uniform(4, 7, g), rng.uniform(-90, 90, g)])
        inst = Instances((SIZE, SIZE))
        inst.gt_boxes = RotatedBoxes(torch.tensor(rods, dtype=torch.float32))
        inst.gt_classes = torch.zeros(len(rods), dtype=torch.int64)
        image = torch.tensor(rng.integers(0, 255, (3, SIZE, SIZE)), dtype=torch.uint8)
        out.append({"image": image, "instances": inst, "height": SIZE, "width": SIZE,
                    "image_id": i})
    return out


@pytest.fixture(scope="module", params=["EMRRPN", "HRPN"])
def model(request):
    return _model(request.param)


def test_registered_pieces_and_matching(model):
    m, cfg = model
    assert isinstance(m.roi_heads, EMRROIHeads)
    assert type(m.proposal_generator).__name__ == cfg.MODEL.PROPOSAL_GENERATOR.NAME
    expected = "enclosing" if cfg.MODEL.PROPOSAL_GENERATOR.NAME == "HRPN" else "rotated"
    assert m.roi_heads.matching == expected
    assert m.roi_heads.box_predictor.box2box_transform.period == 90.0


def test_training_forward_backward_shapes(model):
    m, cfg = model
    m.train()
    batch = _inputs()
    with EventStorage():
        images = m.preprocess_image(batch)
        gt = [b["instances"] for b in batch]
        features = m.backbone(images.tensor)
        proposals, rpn_losses = m.proposal_generator(images, features, gt)
        assert all(isinstance(p.proposal_boxes, RotatedBoxes) for p in proposals)
        sampled = m.roi_heads.label_and_sample_proposals(proposals, gt)
        r = sum(len(p) for p in sampled)
        box_features = m.roi_heads.box_pooler(
            [features[f] for f in m.roi_heads.box_in_features], [p.proposal_boxes for p in sampled]
        )
        assert box_features.shape == (r, 32, 7, 7)  # (R, C, P, P)
        logits, deltas = m.roi_heads.box_predictor(m.roi_heads.box_head(box_features))
        k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        assert logits.shape == (r, k + 1) and deltas.shape == (r, 5 * k)
        losses = m(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in m.roi_heads.box_predictor.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    m.zero_grad()


def test_inference_gives_canonical_rotated_boxes(model):
    m, cfg = model
    m.eval()
    m.roi_heads.box_predictor.test_score_thresh = 0.0  # an untrained model scores low
    try:
        with torch.no_grad():
            out = m([{k: v for k, v in b.items() if k != "instances"} for b in _inputs(1)])
    finally:
        m.roi_heads.box_predictor.test_score_thresh = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    inst = out[0]["instances"]
    assert isinstance(inst.pred_boxes, RotatedBoxes) and len(inst) > 0
    t = inst.pred_boxes.tensor
    assert t.shape == (len(inst), 5) and inst.scores.shape == (len(inst),)
    assert (t[:, 2] >= t[:, 3]).all() and (t[:, 4] >= -90).all() and (t[:, 4] < 90).all()
    assert len(inst) <= cfg.TEST.DETECTIONS_PER_IMAGE


def test_rotated_nms_at_test_time(model):
    """Two copies of one box are one detection after rotated NMS; crossing rods stay two."""
    from detectron2.modeling.roi_heads.rotated_fast_rcnn import fast_rcnn_inference_rotated

    m, _ = model
    pred = m.roi_heads.box_predictor
    boxes = torch.tensor([[30, 30, 40, 6, 45], [30.5, 30, 40, 6, 44], [30, 30, 40, 6, -45]],
                         dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    inst, _ = fast_rcnn_inference_rotated([boxes], [scores], [(64, 64)], 0.05,
                                          pred.test_nms_thresh, 100)
    assert len(inst[0]) == 2 and inst[0].scores.tolist() == pytest.approx([0.9, 0.7])


def _bad_targets() -> np.ndarray:
    return np.array([
        [30.0, 30.0, 20.0, 5.0, 0.6],     # an angle in radians (wrong but harmless)
        [30.0, 30.0, 0.0, 5.0, 30.0],     # zero length
        [20.0, 40.0, 25.0, 0.0, -20.0],   # zero width
        [60.0, 32.0, 40.0, 6.0, 10.0],    # sticks out of the 64 x 64 image
        [-30.0, -30.0, 20.0, 5.0, 10.0],  # entirely outside
    ])


@pytest.mark.parametrize("proposals", ["EMRRPN", "HRPN"])
def test_a_few_steps_on_bad_annotations_keep_losses_finite(proposals, tmp_path):
    """Zero-size rods, radians and boxes outside the image go through the real mapper."""
    from detectron2.data import transforms as T
    from PIL import Image

    from emdet.data.mapper import EMDatasetMapper

    m, cfg = _model(proposals, "INPUT.EM.ROTATED", "True")
    img = tmp_path / "bad.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (SIZE, SIZE), np.uint8)).save(img)
    from detectron2.structures import BoxMode

    record = {"file_name": str(img), "height": SIZE, "width": SIZE, "image_id": 0,
              "annotations": [{"bbox": list(b), "bbox_mode": BoxMode.XYWHA_ABS,
                               "category_id": 0} for b in _bad_targets()]}
    mapper = EMDatasetMapper(cfg, is_train=True)
    mapper.augmentations = T.AugmentationList([])
    mapped = mapper(record)
    gt = mapped["instances"].gt_boxes.tensor
    assert len(gt) == 2  # zero-size and outside rods dropped
    assert gt[1, 2] < 40  # the one sticking out is shortened
    empty = dict(mapper(dict(record, annotations=[])))  # an image without rods
    opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9)
    m.train()
    with EventStorage():
        for _ in range(3):
            losses = m([mapped, empty])
            assert all(torch.isfinite(v) for v in losses.values()), losses
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()


def test_matching_option_is_checked():
    with pytest.raises(ValueError, match="MODEL.ROTATED.MATCHING"):
        _model("EMRRPN", "MODEL.ROTATED.MATCHING", "diagonal")


def test_enclosing_matching_finds_diagonal_rods_for_horizontal_proposals():
    """A horizontal box around a 45-degree rod: rotated IoU < 0.5, enclosing IoU = 1."""
    m, _ = _model("HRPN")
    rod = RotatedBoxes(torch.tensor([[32.0, 32.0, 40.0, 6.0, 45.0]]))
    side = (40 + 6) / math.sqrt(2)
    prop = RotatedBoxes(torch.tensor([[32.0, 32.0, side, side, 0.0]]))
    assert m.roi_heads.match_quality(rod, prop).item() == pytest.approx(1.0, abs=1e-5)
    m.roi_heads.matching = "rotated"
    assert m.roi_heads.match_quality(rod, prop).item() < 0.3
