"""``EMPredictor``: detectron2's ``DefaultPredictor`` for EM images of any size and dtype.

What differs from ``detectron2.engine.DefaultPredictor``:

* it takes the image as stored (``(H, W)`` of any dtype, as :func:`emdet.data.io.read_image`
  returns it) and normalises it the way training does (``INPUT.EM.CLIP_PERCENTILES``,
  ``INPUT.EM.MEDIAN_BLUR``), once for the whole image, so all tiles share one intensity scale;
* images larger than ``tile`` are cut into overlapping tiles; each tile goes through the model
  exactly as ``DefaultPredictor`` sends a whole image (resized by ``INPUT.MIN_SIZE_TEST`` /
  ``MAX_SIZE_TEST``), several tiles per forward pass (``batch_size``), and the tiles' detections
  are merged (:func:`emdet.inference.tiling.merge_tiles`);
* it returns :class:`~emdet.inference.tiling.Detections` with masks cropped to their boxes, so a
  4k image with thousands of objects needs megabytes, not gigabytes;
* rotated models (``instances.pred_boxes`` is a ``RotatedBoxes``) work unchanged: their
  duplicates across tiles are merged with ``batched_nms_rotated``.

Scale: a tile of ``T`` pixels is resized as a ``T``-pixel image would be. Choose ``tile`` equal to
the size of the training images, so objects appear at the scale the model learnt; the default,
``INPUT.MIN_SIZE_TEST``, runs tiles at the image's own pixel scale.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from emdet.data.tiling import tile_starts
from emdet.inference.rle import MaskCrop
from emdet.inference.tiling import Detections, merge_tiles

__all__ = ["EMPredictor", "PredictError", "instances_to_detections", "prepare_image"]

logger = logging.getLogger(__name__)


class PredictError(RuntimeError):
    """Prediction cannot start or finish (no weights, bad inputs, settings clash); the message
    says what to do."""


def prepare_image(image: np.ndarray, cfg) -> np.ndarray:
    """The model input of a whole image as ``(H, W)`` uint8 grey (or ``(H, W, 3)`` colour).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        As stored (uint8/uint16/float32, ...), e.g. from :func:`emdet.data.io.read_image`.
    cfg : CfgNode
        Uses ``INPUT.EM.CLIP_PERCENTILES`` and ``INPUT.EM.MEDIAN_BLUR``, as
        :class:`emdet.data.mapper.EMDatasetMapper` does for training.

    Returns
    -------
    ndarray of uint8
        ``(H, W)`` for a grey image (channels are added per tile), ``(H, W, 3)`` for colour
        (in ``INPUT.FORMAT`` order).
    """
    from emdet.data import preprocess

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    clip = tuple(cfg.INPUT.EM.CLIP_PERCENTILES) or None
    if image.ndim == 3:
        rgb = image[..., :3]
        if str(cfg.INPUT.FORMAT).upper() == "BGR":
            rgb = rgb[..., ::-1]
        out = preprocess.to_model_input(rgb, clip_percentiles=clip, channels=3)
    elif image.ndim == 2:
        out = preprocess.to_model_input(image, clip_percentiles=clip, channels=1)[..., 0]
    else:
        raise ValueError(
            f"EMPredictor needs one (H, W) frame, got an array of shape {image.shape}; "
            "read one frame of a stack with read_image(path, page=i) or read_series."
        )
    blur = int(cfg.INPUT.EM.MEDIAN_BLUR)
    if blur > 1:
        out = preprocess.median_blur(out, size=blur)
    return np.ascontiguousarray(out)


def instances_to_detections(instances, *, offset: tuple[int, int] = (0, 0)) -> Detections:
    """Convert detectron2 ``Instances`` of one image or tile to :class:`Detections`.

    Parameters
    ----------
    instances : detectron2.structures.Instances
        With ``pred_boxes`` (``Boxes`` or ``RotatedBoxes``), ``scores``, ``pred_classes`` and
        optionally ``pred_masks`` (``(N, h, w)`` bool, pasted at the tile's size).
    offset : (int, int)
        ``(y0, x0)`` of the tile in the image; boxes and masks are shifted by it.

    Returns
    -------
    Detections
        Detections with an empty mask are dropped.
    """
    from detectron2.structures import RotatedBoxes

    y0, x0 = offset
    instances = instances.to("cpu")
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    rotated = isinstance(instances.pred_boxes, RotatedBoxes)
    if rotated:
        boxes[:, 0] += x0
        boxes[:, 1] += y0
    else:
        boxes += [x0, y0, x0, y0]
    scores = instances.scores.numpy()
    classes = instances.pred_classes.numpy()
    masks = None
    if instances.has("pred_masks"):
        pred = instances.pred_masks
        pred = (pred >= 0.5 if pred.dtype.is_floating_point else pred.bool()).numpy()
        masks = [MaskCrop.from_mask(m, y0=y0, x0=x0) for m in pred]
        keep = np.array([m.mask.size > 0 for m in masks], dtype=bool)
        if not keep.all():
            masks = [m for m, k in zip(masks, keep, strict=True) if k]
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    return Detections(boxes, scores, classes, masks)


class EMPredictor:
    """Run a detectron2 model on EM images of any size (see the module docstring).

    Parameters
    ----------
    cfg : CfgNode
        emdet config (:func:`emdet.config.load_config`); ``MODEL.WEIGHTS`` is loaded unless
        ``model`` is given.
    tile : int, optional
        Tile side in pixels; default ``INPUT.MIN_SIZE_TEST``. ``0`` runs every image whole.
    overlap : int, optional
        Pixels shared by neighbouring tiles; default ``tile // 4``. Objects smaller than the
        overlap are seen whole by at least one tile.
    batch_size : int, optional
        Tiles per forward pass; default 1 on CPU, 4 on CUDA.
    join_threshold : float, default 0.5
        See :func:`emdet.inference.tiling.merge_tiles`.
    model : torch.nn.Module, optional
        An already built model (in eval mode); for tests and notebooks.

    Examples
    --------
    >>> cfg = load_config("configs/quick_schedules/vesicles_mask_rcnn_instant_test.yaml",
    ...                   ["MODEL.WEIGHTS", "output/quick/model_final.pth"])  # doctest: +SKIP
    >>> image, meta = read_image("grid3_0042.dm4")  # doctest: +SKIP
    >>> detections = EMPredictor(cfg)(image)  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg,
        *,
        tile: int | None = None,
        overlap: int | None = None,
        batch_size: int | None = None,
        join_threshold: float = 0.5,
        model: torch.nn.Module | None = None,
    ):
        from detectron2.data import transforms as T

        self.cfg = cfg.clone()
        self.cfg.freeze()
        if model is None:
            model = build_model_for_inference(self.cfg)
        self.model = model
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.tile = int(cfg.INPUT.MIN_SIZE_TEST if tile is None else tile)
        if self.tile < 0:
            raise ValueError(f"tile must be >= 0 pixels (0 = no tiling), got {self.tile}")
        self.overlap = int(self.tile // 4 if overlap is None else overlap)
        if self.tile and not 0 <= self.overlap < self.tile:
            raise ValueError(
                f"overlap must be between 0 and tile - 1 = {self.tile - 1} pixels, got "
                f"{self.overlap}; objects larger than the overlap are joined across seams."
            )
        default_batch = 4 if self.device.type == "cuda" else 1
        self.batch_size = max(1, int(batch_size or default_batch))
        self.nms_threshold = float(cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST)
        self.join_threshold = float(join_threshold)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = str(cfg.INPUT.FORMAT).upper()
        #: Called after every forward pass with the number of tiles done and in total.
        self.on_tiles: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------------------------
    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y0, x0, y1, x1)`` of the tiles of an image, row by row."""
        if not self.tile or (height <= self.tile and width <= self.tile):
            return [(0, 0, height, width)]
        return [
            (y0, x0, min(y0 + self.tile, height), min(x0 + self.tile, width))
            for y0 in tile_starts(height, self.tile, self.overlap)
            for x0 in tile_starts(width, self.tile, self.overlap)
        ]

    def _to_model(self, crop: np.ndarray) -> dict:
        if crop.ndim == 2:
            crop = crop[..., None]
        if self.input_format != "L" and crop.shape[2] == 1:
            crop = np.repeat(crop, 3, axis=2)
        elif self.input_format == "L" and crop.shape[2] == 3:
            crop = crop.mean(axis=2, keepdims=True).astype(np.uint8)
        height, width = crop.shape[:2]
        resized = self.aug.get_transform(crop).apply_image(crop)
        if resized.ndim == 2:
            resized = resized[..., None]
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor, "height": height, "width": width}

    @torch.inference_mode()
    def predict_crops(self, crops: Sequence[np.ndarray]) -> list:
        """detectron2 ``Instances`` (on the CPU) for prepared image crops, in crop coordinates.

        ``crops`` are ``(h, w)`` or ``(h, w, C)`` uint8 arrays from :func:`prepare_image`.
        """
        inputs = [self._to_model(c) for c in crops]
        outputs = self.model(inputs)
        return [o["instances"].to("cpu") for o in outputs]

    def predict_prepared(self, prepared: np.ndarray) -> Detections:
        """Detections of a whole image given its :func:`prepare_image` output."""
        height, width = prepared.shape[:2]
        rects = self.tiles(height, width)
        results: list[tuple[tuple[int, int, int, int], Detections]] = []
        for start in range(0, len(rects), self.batch_size):
            batch = rects[start : start + self.batch_size]
            crops = [prepared[y0:y1, x0:x1] for y0, x0, y1, x1 in batch]
            for rect, inst in zip(batch, self.predict_crops(crops), strict=True):
                results.append((rect, instances_to_detections(inst, offset=rect[:2])))
            if self.on_tiles is not None:
                self.on_tiles(start + len(batch), len(rects))
        return merge_tiles(
            results,
            (height, width),
            nms_threshold=self.nms_threshold,
            join_threshold=self.join_threshold,
        )

    def __call__(self, image: np.ndarray) -> Detections:
        """Detections of one image as stored: ``(H, W)`` any dtype, or ``(H, W, 3)`` colour."""
        return self.predict_prepared(prepare_image(image, self.cfg))


def build_model_for_inference(cfg) -> torch.nn.Module:
    """Build the model of ``cfg`` and load ``MODEL.WEIGHTS`` (which must be set)."""
    import importlib

    from detectron2.modeling import build_model

    from emdet.engine.checkpoint import AtomicCheckpointer

    for module in ("emdet.modeling", "emdet.dense"):  # register emdet's heads, if present
        try:
            importlib.import_module(module)
        except ImportError:  # not there in this install
            pass
    if not cfg.MODEL.WEIGHTS:
        raise PredictError(
            "MODEL.WEIGHTS is empty: prediction needs trained weights, e.g. append "
            "'MODEL.WEIGHTS output/quick/vesicles_mask_rcnn/model_final.pth' to the command."
        )
    weights = str(cfg.MODEL.WEIGHTS)
    if "://" not in weights and not os.path.isfile(weights):
        # fvcore would log a warning and go on with random weights.
        raise PredictError(
            f"MODEL.WEIGHTS {weights} does not exist; give the model_final.pth (or another "
            "checkpoint) that tools/train_net.py wrote."
        )
    model = build_model(cfg)
    model.eval()
    from emdet.engine.weights import WeightsError

    try:
        AtomicCheckpointer(model).load(weights)  # the one safe loader of every tool
    except WeightsError as e:
        raise PredictError(str(e)) from None
    return model
