"""``EMDatasetMapper``: detectron2's DatasetMapper reading EM files, with the seeds' augmentations.

What differs from ``detectron2.data.DatasetMapper``:

* images are read by :func:`emdet.data.io.load_for_detectron2` (16/32-bit TIFF, dm3/dm4, MRC, ...),
  with one intensity normalisation (``INPUT.EM.CLIP_PERCENTILES``) and optional median blur;
* training adds random 90-degree rotations and vertical flips (exact, no interpolation),
  brightness/contrast/gamma jitter, Gaussian noise and random crops, all from ``INPUT.EM.*``;
* rotated boxes (``BoxMode.XYWHA_ABS``) follow every geometric transform.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from emdet.data.transforms import build_em_augmentations

__all__ = ["EMDatasetMapper"]


class EMDatasetMapper(DatasetMapper):
    """DatasetMapper for EM images; see the module docstring."""

    @configurable
    def __init__(self, is_train: bool = True, *, clip_percentiles=(0.5, 99.5), median_blur=0, **kw):
        super().__init__(is_train, **kw)
        self.clip_percentiles = tuple(clip_percentiles) or None
        self.median_blur = int(median_blur)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["augmentations"] = build_em_augmentations(cfg, is_train)
        ret["clip_percentiles"] = tuple(cfg.INPUT.EM.CLIP_PERCENTILES)
        ret["median_blur"] = cfg.INPUT.EM.MEDIAN_BLUR
        return ret

    def read(self, file_name: str, page: int | None = None) -> np.ndarray:
        """HxWx3 uint8 image for the model, from any format emdet reads (``page`` of a stack)."""
        from emdet.data.io import load_for_detectron2

        image = load_for_detectron2(
            file_name,
            format=self.image_format,
            page=page,
            clip_percentiles=self.clip_percentiles,
            median_blur=self.median_blur,
        )
        return image if image.flags.writeable else image.copy()

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self.read(dataset_dict["file_name"], dataset_dict.get("page"))
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = utils.read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
