"""Mask R-CNN R-50-FPN: training seconds per iteration and inference seconds per image.

emdet's model is detectron2 0.6 built from ``configs/vesicles/mask_rcnn_R_50_FPN.yaml`` (with
emdet.ops standing in for detectron2's C++ ops when they are missing). The baseline is the same
architecture from torchvision (``maskrcnn_resnet50_fpn``, random weights, 4 classes incl.
background), measured in the same run on the same synthetic vesicle image, batch of one image,
at the same size (512 and 1024 px) and, for training, with the same annotations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import best_time, devices, peak_memory_mb, row

NAME = "mask_rcnn_R50_FPN"
REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/vesicles/mask_rcnn_R_50_FPN.yaml"
SIZES = (512, 1024)


def _sample(size: int):
    """One synthetic vesicle image (HxWx3 uint8) and its instances (boxes xyxy, classes, masks)."""
    from emdet.data.preprocess import to_model_input
    from emdet.data.synthetic import generate_image

    sample = generate_image("vesicles", seed=0, index=0, size=size)
    image = to_model_input(sample.image)
    names = ["vesicle_large", "vesicle_small", "hole"]
    boxes, classes, masks = [], [], []
    for inst in sample.instances:
        x, y, w, h = inst.bbox
        boxes.append([x, y, x + w, y + h])
        classes.append(names.index(inst.category) + 1)
        masks.append(sample.instance_mask == inst.extra["instance_id"])
    return image, np.array(boxes, np.float32), np.array(classes), np.array(masks, np.uint8)


def _emdet_model(size: int, device: str, train: bool):
    import torch

    import emdet  # noqa: F401  (before detectron2)

    # isort: split
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances

    from emdet.config import load_config

    cfg = load_config(CONFIG, ["MODEL.DEVICE", device, "INPUT.MIN_SIZE_TEST", str(size),
                               "INPUT.MAX_SIZE_TEST", str(size)])
    torch.manual_seed(0)
    model = build_model(cfg)
    image, boxes, classes, masks = _sample(size)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy(), device=device)
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.as_tensor(boxes, device=device))
    inst.gt_classes = torch.as_tensor(classes - 1, device=device)
    inst.gt_masks = BitMasks(torch.as_tensor(masks, device=device).bool())
    batch = [{"image": tensor, "height": size, "width": size, "instances": inst}]
    if train:
        from detectron2.utils.events import EventStorage

        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        storage = EventStorage(0)

        def step():
            with storage:
                loss = sum(model(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step
    model.eval()

    def infer():
        with torch.no_grad():
            return model(batch)

    return infer


def _torchvision_model(size: int, device: str, train: bool):
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4,
                                  min_size=size, max_size=size).to(device)
    image, boxes, classes, masks = _sample(size)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy(), device=device).float() / 255
    target = {"boxes": torch.as_tensor(boxes, device=device),
              "labels": torch.as_tensor(classes, device=device),
              "masks": torch.as_tensor(masks, device=device)}
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            loss = sum(model([tensor], [target]).values())
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step
    model.eval()

    def infer():
        with torch.no_grad():
            return model([tensor])

    return infer


def make_case(case: str, quick: bool, device: str):
    """``case`` is ``"train-512"``, ``"infer-1024"``, ...: emdet's call, ready to run."""
    mode, size = case.split("-")
    return _emdet_model(int(size), device, mode == "train")


def run(quick: bool = False) -> list[dict]:
    rows = []
    sizes = SIZES[:1] if quick else SIZES
    for device in devices():
        for size in sizes:
            for mode in ("train", "infer"):
                ours = make_case(f"{mode}-{size}", quick, device)
                theirs = _torchvision_model(size, device, mode == "train")
                repeat = 2 if quick else 3
                t = best_time(ours, repeat=repeat, min_total=0)
                t_base = best_time(theirs, repeat=repeat, min_total=0)
                mem = peak_memory_mb(__file__, f"{mode}-{size}", quick=quick, device=device)
                what = "s/iter (1 image)" if mode == "train" else "s/image"
                rows.append(row(NAME, f"{mode} {size}x{size}", t, what, baseline=t_base,
                                higher_is_better=False, peak_mem_mb=mem, device=device,
                                note="baseline: torchvision maskrcnn_resnet50_fpn"))
    return rows
