"""Augmentations for EM training: exact 90-degree turns, flips, photometric jitter, noise.

Geometric transforms act on images, polygons/points (``apply_coords``), axis-aligned boxes and
rotated boxes ``(cx, cy, w, h, angle_deg)`` in detectron2's convention (angle counter-clockwise as
displayed, image y pointing down). Coordinates are continuous: pixel ``(r, c)`` covers
``[c, c+1] x [r, r+1]``.
"""

from __future__ import annotations

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from fvcore.transforms.transform import CropTransform, Transform, VFlipTransform

__all__ = [
    "GammaAugmentation",
    "GaussianNoiseAugmentation",
    "RandomRot90",
    "Rot90Transform",
    "build_em_augmentations",
]


def _normalize_angle(angle: np.ndarray) -> np.ndarray:
    """Angles in degrees to [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


class Rot90Transform(Transform):
    """Rotate by ``k`` quarter turns counter-clockwise as displayed (``np.rot90``), exactly.

    A point ``(x, y)`` of an ``h x w`` image goes to ``(y, w - x)`` for ``k = 1``; the output
    image is ``w x h``. Rotated boxes keep their size and gain ``90 k`` degrees.
    """

    def __init__(self, k: int, h: int, w: int):
        super().__init__()
        self._set_attributes({"k": int(k) % 4, "h": int(h), "w": int(w)})

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        x, y = coords[:, 0].copy(), coords[:, 1].copy()
        h, w = self.h, self.w
        if self.k == 1:
            x, y = y, w - x
        elif self.k == 2:
            x, y = w - x, h - y
        elif self.k == 3:
            x, y = h - y, x
        return np.stack([x, y], axis=1).astype(coords.dtype, copy=False)

    def apply_rotated_box(self, rotated_boxes: np.ndarray) -> np.ndarray:
        out = np.asarray(rotated_boxes, dtype=np.float64).copy()
        out[:, :2] = self.apply_coords(out[:, :2])
        out[:, 4] = _normalize_angle(out[:, 4] + 90.0 * self.k)
        return out

    def inverse(self) -> Transform:
        nh, nw = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform(-self.k, nh, nw)


def _vflip_rotated_box(transform: VFlipTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(rotated_boxes, dtype=np.float64).copy()
    out[:, 1] = transform.height - out[:, 1]
    out[:, 4] = _normalize_angle(-out[:, 4])
    return out


def _crop_rotated_box(transform: CropTransform, rotated_boxes: np.ndarray) -> np.ndarray:
    out = np.asarray(rotated_boxes, dtype=np.float64).copy()
    out[:, 0] -= transform.x0
    out[:, 1] -= transform.y0
    return out


VFlipTransform.register_type("rotated_box", _vflip_rotated_box)
CropTransform.register_type("rotated_box", _crop_rotated_box)


class RandomRot90(T.Augmentation):
    """Rotate by a uniformly drawn 0, 1, 2 or 3 quarter turns."""

    def get_transform(self, image):
        h, w = image.shape[:2]
        return Rot90Transform(int(np.random.randint(4)), h, w)


class GammaAugmentation(T.Augmentation):
    """Gamma correction with gamma drawn uniformly from ``[low, high]`` on 0..255 images."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        gamma = float(np.random.uniform(self.low, self.high))

        def op(img: np.ndarray) -> np.ndarray:
            out = 255.0 * np.power(np.clip(img.astype(np.float32) / 255.0, 0, 1), gamma)
            return out.astype(img.dtype) if img.dtype == np.uint8 else out

        return T.ColorTransform(op)


class GaussianNoiseAugmentation(T.Augmentation):
    """Additive Gaussian noise of standard deviation ``std`` (0..255 units), clipped."""

    def __init__(self, std: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        seed = int(np.random.randint(2**31 - 1))

        def op(img: np.ndarray) -> np.ndarray:
            noise = np.random.default_rng(seed).normal(0.0, self.std, img.shape)
            out = np.clip(img.astype(np.float32) + noise, 0, 255)
            return out.astype(img.dtype) if img.dtype == np.uint8 else out

        return T.ColorTransform(op)


def build_em_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """detectron2's resize/flip plus the ``INPUT.EM`` augmentations for training.

    Order: random crop of large images, resize, flips and quarter turns, photometric jitter.
    """
    em = cfg.INPUT.EM
    augs: list[T.Augmentation] = []
    if is_train and em.CROP_SIZE > 0:
        augs.append(T.RandomCrop("absolute", (em.CROP_SIZE, em.CROP_SIZE)))
    augs.extend(utils.build_augmentation(cfg, is_train))
    if not is_train:
        return augs
    if em.VFLIP:
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    if em.ROT90:
        augs.append(RandomRot90())
    if em.BRIGHTNESS > 0:
        augs.append(T.RandomBrightness(1 - em.BRIGHTNESS, 1 + em.BRIGHTNESS))
    if em.CONTRAST > 0:
        augs.append(T.RandomContrast(1 - em.CONTRAST, 1 + em.CONTRAST))
    low, high = em.GAMMA
    if (low, high) != (1.0, 1.0):
        augs.append(GammaAugmentation(low, high))
    if em.NOISE_STD > 0:
        augs.append(GaussianNoiseAugmentation(em.NOISE_STD))
    return augs
