"""``EMPredictor``: detectron2's ``DefaultPredictor`` for EM images of any size and dtype.

What differs from ``detectron2.engine.DefaultPredictor``:

* it takes the image as stored (``(H, W)`` of any dtype, as :func:`emdet.data.io.read_image`
  returns it) and normalises it with training's function and settings (``INPUT.EM.*``:
  percentiles, float32 for 16/32-bit data, background, median blur), once for the whole image,
  so all tiles share one intensity scale;
* images larger than ``tile`` are cut into overlapping tiles; each tile goes through the model
  exactly as ``DefaultPredictor`` sends a whole image (resized by ``INPUT.MIN_SIZE_TEST`` /
  ``MAX_SIZE_TEST``), several tiles per forward pass (``batch_size``), and the tiles' detections
  are merged (:func:`emdet.inference.tiling.merge_tiles`);
* it returns :class:`~emdet.inference.tiling.Detections` with masks cropped to their boxes, so a
  4k image with thousands of objects needs megabytes, not gigabytes;
* rotated models (``instances.pred_boxes`` is a ``RotatedBoxes``) work unchanged: their
  duplicates across tiles are merged with ``batched_nms_rotated``.

Scale: a model finds objects only at about the scale it was trained at. Training resizes each
image by ``ResizeShortestEdge``, and so does evaluation, so an image of the training images' size
is predicted whole at that scale, exactly as ``--eval-only`` does. A much larger image (a
montage, a stitched map) would be squeezed by that rule far below the training scale, so with an
``input_scale`` (model-input pixels per image pixel, measured from the training images by
:func:`training_input_scale`, which ``tools/predict.py`` does by default) such an image is
instead resized by ``input_scale`` and cut into tiles of ``tile`` *model* pixels, each resized by
exactly ``input_scale``. "Much larger" means that evaluation's own resize would shrink it to
less than 2/3 of ``input_scale``. Without an ``input_scale`` (no training set registered) an
image up to ``tile`` pixels is predicted whole as ``DefaultPredictor`` would, and larger ones in
tiles of ``tile`` image pixels at their own pixel scale.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from emdet.data.rle import MaskCrop
from emdet.data.tiling import tile_starts
from emdet.inference.tiling import Detections, merge_tiles

__all__ = [
    "EMPredictor",
    "PredictError",
    "display_image",
    "instances_to_detections",
    "eval_scale",
    "prepare_image",
    "training_input_scale",
]

logger = logging.getLogger(__name__)


class PredictError(RuntimeError):
    """Prediction cannot start or finish (no weights, bad inputs, settings clash); the message
    says what to do."""


def prepare_image(image: np.ndarray, cfg) -> np.ndarray:
    """The model input of a whole image: ``(H, W)`` grey (or ``(H, W, 3)`` colour).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        As stored (uint8/uint16/float32, ...), e.g. from :func:`emdet.data.io.read_image`.
    cfg : CfgNode
        Its ``INPUT.EM`` intensity settings (:func:`emdet.data.preprocess.model_input_options`),
        the same function and settings :class:`emdet.data.mapper.EMDatasetMapper` uses for
        training and ``--eval-only``.

    Returns
    -------
    ndarray of uint8, or float32 on the same 0-255 scale (``INPUT.EM.INPUT_DTYPE``)
        ``(H, W)`` for a grey image (channels are added per tile), ``(H, W, 3)`` for colour
        (in ``INPUT.FORMAT`` order).
    """
    from emdet.data import preprocess

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    options = preprocess.model_input_options(cfg)
    if image.ndim == 3:
        rgb = image[..., :3]
        if str(cfg.INPUT.FORMAT).upper() == "BGR":
            rgb = rgb[..., ::-1]
        out = preprocess.to_model_input(rgb, channels=3, **options)
    elif image.ndim == 2:
        out = preprocess.to_model_input(image, channels=1, **options)[..., 0]
    else:
        raise ValueError(
            f"EMPredictor needs one (H, W) frame, got an array of shape {image.shape}; "
            "read one frame of a stack with read_image(path, page=i) or read_series."
        )
    return np.ascontiguousarray(out)


def display_image(prepared: np.ndarray) -> np.ndarray:
    """:func:`prepare_image`'s output as uint8 for overlays and PNG copies (float32 input is on
    the same 0-255 scale, rounded here)."""
    if prepared.dtype == np.uint8:
        return prepared
    return np.rint(np.clip(prepared, 0, 255)).astype(np.uint8)


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


def eval_scale(height: int, width: int, cfg) -> float:
    """The factor ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` resizes an image by
    (1 for ``MIN_SIZE_TEST`` 0, which detectron2 takes as no resize at all)."""
    if cfg.INPUT.MIN_SIZE_TEST <= 0:
        return 1.0
    short, long = min(height, width), max(height, width)
    scale = float(cfg.INPUT.MIN_SIZE_TEST) / short
    if cfg.INPUT.MAX_SIZE_TEST and long * scale > cfg.INPUT.MAX_SIZE_TEST:
        scale = float(cfg.INPUT.MAX_SIZE_TEST) / long
    return scale


def training_input_scale(cfg) -> float | None:
    """Model-input pixels per image pixel that evaluation gives the training images.

    The median over the images of the registered ``DATASETS.TRAIN`` sets of
    :func:`eval_scale` (what ``--eval-only`` and ``DefaultPredictor`` do to an image of that
    size), rounded to 4 digits; ``None`` if no training set is registered here or none has
    image sizes. A config that resizes its 1024 px training images to 512 gives 0.5: a 4096 px
    montage of the same microscope is then predicted as 2048 model pixels, in tiles, and not
    squeezed to 512 or fed at full scale.
    """
    from detectron2.data import DatasetCatalog

    scales = []
    known = set(DatasetCatalog.list())
    for name in cfg.DATASETS.TRAIN:
        if name not in known:
            continue
        try:
            records = DatasetCatalog.get(name)
        except Exception as e:  # noqa: BLE001 - a broken data set only loses the default
            logger.warning("cannot read training set %s for the input scale: %s", name, e)
            continue
        scales += [eval_scale(int(r["height"]), int(r["width"]), cfg) for r in records
                   if r.get("height") and r.get("width")]
    if not scales:
        return None
    return round(float(np.median(scales)), 4)


class EMPredictor:
    """Run a detectron2 model on EM images of any size (see the module docstring).

    Parameters
    ----------
    cfg : CfgNode
        emdet config (:func:`emdet.config.load_config`); ``MODEL.WEIGHTS`` is loaded unless
        ``model`` is given.
    tile : int, optional
        Tile side in model-input pixels (image pixels when ``input_scale`` is None); default
        ``INPUT.MIN_SIZE_TEST``. ``0`` runs every image whole.
    overlap : int, optional
        Pixels shared by neighbouring tiles (same units as ``tile``); default ``tile // 4``.
        Objects smaller than the overlap are seen whole by at least one tile.
    input_scale : float, optional
        Model-input pixels per image pixel (see the module docstring), e.g. from
        :func:`training_input_scale`; ``None`` keeps each image's own pixel scale for tiles.
        Images near the training size are predicted whole at evaluation's scale either way.
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
        input_scale: float | None = None,
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
        if input_scale is not None and not (np.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"input_scale must be a number > 0, got {input_scale}")
        self.input_scale = None if input_scale is None else float(input_scale)
        self.max_size = int(cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = str(cfg.INPUT.FORMAT).upper()
        #: Called after every forward pass with the number of tiles done and in total.
        self.on_tiles: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------------------------
    def image_scale(self, height: int, width: int) -> float | None:
        """Resize factor of the tiles of an image (``None``: each tile as a whole image)."""
        if self.input_scale is None:
            return None
        own = eval_scale(height, width, self.cfg)
        return self.input_scale if own < self.input_scale / 1.5 else own

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """``(y0, x0, y1, x1)`` of the tiles of an image (image pixels), row by row."""
        whole = [(0, 0, height, width)]
        if not self.tile:
            return whole
        s = self.image_scale(height, width)
        if s is None:
            if height <= self.tile and width <= self.tile:
                return whole
            tile, overlap = self.tile, self.overlap
        else:
            short, long = min(height, width) * s, max(height, width) * s
            if short <= self.tile + 0.5 and long <= max(self.tile, self.max_size) + 0.5:
                return whole  # as --eval-only sees it
            tile = max(1, int(round(self.tile / s)))
            overlap = min(tile - 1, int(round(self.overlap / s)))
        return [
            (y0, x0, min(y0 + tile, height), min(x0 + tile, width))
            for y0 in tile_starts(height, tile, overlap)
            for x0 in tile_starts(width, tile, overlap)
        ]

    def _resize(self, crop: np.ndarray, scale: float | None) -> np.ndarray:
        from detectron2.data import transforms as T

        if scale is None:
            return self.aug.get_transform(crop).apply_image(crop)
        height, width = crop.shape[:2]
        new_h = max(1, int(height * scale + 0.5))
        new_w = max(1, int(width * scale + 0.5))
        if (new_h, new_w) == (height, width):
            return crop
        # the transform ResizeShortestEdge makes, at the given scale
        return T.ResizeTransform(height, width, new_h, new_w, self.aug.interp).apply_image(crop)

    def _to_model(self, crop: np.ndarray, scale: float | None = None) -> dict:
        if crop.ndim == 2:
            crop = crop[..., None]
        if self.input_format != "L" and crop.shape[2] == 1:
            crop = np.repeat(crop, 3, axis=2)
        elif self.input_format == "L" and crop.shape[2] == 3:
            crop = crop.mean(axis=2, keepdims=True).astype(crop.dtype)
        height, width = crop.shape[:2]
        resized = self._resize(crop, scale)
        if resized.ndim == 2:
            resized = resized[..., None]
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor, "height": height, "width": width}

    @torch.inference_mode()
    def predict_crops(self, crops: Sequence[np.ndarray], scale: float | None = None) -> list:
        """detectron2 ``Instances`` (on the CPU) for prepared image crops, in crop coordinates.

        ``crops`` are ``(h, w)`` or ``(h, w, C)`` arrays from :func:`prepare_image`,
        resized by ``scale`` (``None``: each as ``DefaultPredictor`` resizes a whole image).
        """
        inputs = [self._to_model(c, scale) for c in crops]
        outputs = self.model(inputs)
        return [o["instances"].to("cpu") for o in outputs]

    def predict_prepared(self, prepared: np.ndarray) -> Detections:
        """Detections of a whole image given its :func:`prepare_image` output."""
        height, width = prepared.shape[:2]
        rects = self.tiles(height, width)
        scale = self.image_scale(height, width)
        results: list[tuple[tuple[int, int, int, int], Detections]] = []
        for start in range(0, len(rects), self.batch_size):
            batch = rects[start : start + self.batch_size]
            crops = [prepared[y0:y1, x0:x1] for y0, x0, y1, x1 in batch]
            for rect, inst in zip(batch, self.predict_crops(crops, scale), strict=True):
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
