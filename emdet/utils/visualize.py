"""Draw rotated-box predictions on EM images (for ``predict`` and reports).

Images are greyscale EM images of any dtype (or RGB); boxes are detectron2 rotated boxes
``(cx, cy, w, h, angle_deg)`` in image pixels (see :mod:`emdet.data.geometry`), or axis-aligned
``(x0, y0, x1, y1)`` boxes drawn as angle-0 rotated boxes. Drawing uses OpenCV with sub-pixel
vertex positions in emdet's continuous convention (pixel ``(r, c)`` covers
``[c, c + 1] x [r, r + 1]``), so an outline lies on the box edges the model predicted.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from emdet.data.geometry import rbox_to_polygon

__all__ = ["PALETTE", "draw_instances", "draw_rotated_boxes", "to_rgb"]

#: RGB colours per class index (cycled): colour-blind-safe (Okabe-Ito) without black.
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)

_SHIFT = 4  # OpenCV fixed-point bits for sub-pixel vertices


def to_rgb(image: np.ndarray, *, clip_percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB copy of a greyscale or RGB image of any dtype.

    uint8 images are kept as they are; others are mapped to 0..255 between the given
    intensity percentiles (the contrast emdet's loader gives the model).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an (H, W) greyscale or (H, W, 3) RGB image, got {img.shape}")
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        finite = f[np.isfinite(f)]
        lo, hi = np.percentile(finite, clip_percentiles) if finite.size else (0.0, 1.0)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = np.clip(np.nan_to_num((f - lo) * scale), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def draw_rotated_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    scores: Sequence[float] | np.ndarray | None = None,
    classes: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    thickness: int | None = None,
    labels: bool = True,
    colors: Sequence[tuple[int, int, int]] = PALETTE,
) -> np.ndarray:
    """Rotated boxes with class and score drawn on an EM image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, 3)
        Any dtype; see :func:`to_rgb`.
    boxes : ndarray, shape (N, 5) or (N, 4)
        Rotated ``(cx, cy, w, h, angle_deg)`` or axis-aligned ``(x0, y0, x1, y1)`` boxes.
    scores : array_like, shape (N,), optional
        Shown after the class name; boxes below ``score_thresh`` are not drawn.
    classes : array_like of int, shape (N,), optional
        Class indices (colour and name); default all 0.
    class_names : sequence of str, optional
        Names of the class indices; default the index.
    thickness : int, optional
        Line width in pixels; default 1 per 400 pixels of the shorter image side (at least 1).
    labels : bool
        Write ``name score`` beside each box.
    colors : sequence of RGB triples
        Colour of class ``i`` is ``colors[i % len(colors)]``.

    Returns
    -------
    ndarray of uint8, shape (H, W, 3)
        RGB image; the input is not modified.
    """
    out = to_rgb(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return out
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise ValueError(f"boxes must be (N, 5) rotated or (N, 4) XYXY, got shape {boxes.shape}")
    if boxes.shape[1] == 4:
        x0, y0, x1, y1 = boxes.T
        boxes = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, 0 * x0], axis=1)
    n = len(boxes)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    classes = np.zeros(n, dtype=int) if classes is None else np.asarray(classes).astype(int)
    for name, arr in (("scores", scores), ("classes", classes)):
        if arr is not None and len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} entries for {n} boxes")
    h, w = out.shape[:2]
    if thickness is None:
        thickness = max(1, int(round(min(h, w) / 400)))
    font_scale = max(0.3, min(h, w) / 1000)
    corners = rbox_to_polygon(boxes).reshape(-1, 4, 2)
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(n)
    for i in order:  # best last, so it is drawn on top
        if scores is not None and scores[i] < score_thresh:
            continue
        color = tuple(int(c) for c in colors[classes[i] % len(colors)])
        # OpenCV puts pixel (r, c) at (c, r); emdet's pixel covers [c, c + 1] x [r, r + 1]
        pts = np.round((corners[i] - 0.5) * (1 << _SHIFT)).astype(np.int32)
        cv2.polylines(out, [pts], True, color, thickness, cv2.LINE_8, _SHIFT)
        if not labels:
            continue
        name = class_names[classes[i]] if class_names is not None else str(classes[i])
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        top = corners[i][np.argmin(corners[i][:, 1])]
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        x = int(np.clip(top[0] - tw / 2, 0, max(0, w - tw)))
        y = int(np.clip(top[1] - 2, th + base, h - 1))
        cv2.rectangle(out, (x, y - th - base), (x + tw, y), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, color, 1,
                    cv2.LINE_AA)
    return out


def draw_instances(
    image: np.ndarray,
    instances,
    *,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.5,
    **kwargs,
) -> np.ndarray:
    """:func:`draw_rotated_boxes` for detectron2 ``Instances`` (``pred_boxes``, ``scores``,
    ``pred_classes``), e.g. ``model(inputs)[0]["instances"]``."""
    inst = instances.to("cpu")
    return draw_rotated_boxes(
        image,
        inst.pred_boxes.tensor.numpy(),
        scores=inst.scores.numpy() if inst.has("scores") else None,
        classes=inst.pred_classes.numpy() if inst.has("pred_classes") else None,
        class_names=class_names,
        score_thresh=score_thresh,
        **kwargs,
    )
