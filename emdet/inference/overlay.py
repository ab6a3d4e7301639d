"""Overlay pictures: an 8-bit micrograph with the outline of every detection, coloured by class.

Outlines are drawn at the overlay's resolution (the image is shrunk to ``max_size`` first), so a
4k image with thousands of objects is drawn in well under a second. Each outline is at least
2 px wide over a black halo, so it shows on bright and on dark particles alike; a calibrated
image gets a scale bar (a round length, about a fifth of the width) at the bottom right.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from emdet.inference.tiling import Detections
from emdet.utils.atomic import atomic_write

__all__ = ["CLASS_COLOURS", "class_colour", "draw_overlay", "draw_scale_bar", "scale_bar_length",
           "write_png"]

#: RGB colours per class index (matplotlib's tab10), repeated for more classes.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def class_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of class ``index`` (the same in overlays and report plots)."""
    return CLASS_COLOURS[int(index) % len(CLASS_COLOURS)]


def draw_overlay(
    image: np.ndarray,
    det: Detections,
    class_names: Sequence[str],
    *,
    max_size: int = 2048,
    legend: bool = True,
    pixel_size: float | None = None,
    unit: str | None = "nm",
) -> np.ndarray:
    """Draw detections on an image.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W) or (H, W, 3)
        The micrograph as the model saw it (:func:`emdet.inference.predictor.prepare_image`);
        colour images are taken as RGB.
    det : Detections
        In the image's pixel coordinates.
    class_names : sequence of str
        Name of each class index, for the legend.
    max_size : int, default 2048
        The overlay's longer side is at most this many pixels (0: full size).
    legend : bool, default True
        Write each class's name and count in its colour at the top left.
    pixel_size, unit : optional
        The image's pixel size (``unit`` per pixel, nm by default): draws a scale bar.

    Returns
    -------
    ndarray of uint8, shape (h, w, 3)
        RGB overlay.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"draw_overlay needs a uint8 image, got {image.dtype}")
    height, width = image.shape[:2]
    scale = 1.0
    if max_size and max(height, width) > max_size:
        scale = max_size / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    canvas = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB) if small.ndim == 2 else small.copy()
    thickness = max(2, round(min(size) / 500))
    shift = 4  # sub-pixel precision of the drawn outlines
    outlines = []
    for k in range(len(det)):
        # Continuous coordinates -> pixel indices of the overlay (index i is centred at i + 0.5).
        pts = [
            np.round((p * scale - 0.5) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
            for p in _outlines(det, k)
        ]
        outlines.append((pts, class_colour(det.classes[k])))
    for pts, _ in outlines:  # a black halo first, so outlines show on any background
        if pts:
            cv2.polylines(canvas, pts, True, (0, 0, 0), thickness + 2, cv2.LINE_AA, shift)
    for pts, colour in outlines:
        if pts:
            cv2.polylines(canvas, pts, True, colour, thickness, cv2.LINE_AA, shift)
    if pixel_size:
        draw_scale_bar(canvas, pixel_size / scale, unit or "nm")
    if legend and len(class_names):
        counts = np.bincount(det.classes, minlength=len(class_names)) if len(det) else None
        font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(size) / 1400)
        lines = []
        for index, name in enumerate(class_names):
            n = int(counts[index]) if counts is not None and index < len(counts) else 0
            lines.append((f"{name}: {n}", class_colour(index)))
        (tw, th), base = cv2.getTextSize(max((t for t, _ in lines), key=len), font, font_scale, 1)
        step = th + base + 4
        cv2.rectangle(canvas, (0, 0), (tw + 16, step * len(lines) + 8), (0, 0, 0), -1)
        for row, (text, colour) in enumerate(lines):
            cv2.putText(canvas, text, (8, 4 + th + row * step), font, font_scale, colour, 1,
                        cv2.LINE_AA)
    return canvas


def scale_bar_length(pixel_size: float, width_px: int, fraction: float = 0.2) -> float:
    """A round length (1, 2 or 5 x 10^n, in the pixel size's unit) near ``fraction`` of an
    image ``width_px`` pixels wide."""
    target = pixel_size * width_px * fraction
    decade = 10 ** np.floor(np.log10(target))  # <= target, so step 1 always fits
    return float(next(step * decade for step in (5, 2, 1) if step * decade <= target))


def _length_text(length: float, unit: str) -> str:
    """``"200 nm"``, ``"5 um"`` (OpenCV's fonts have no µ)."""
    if unit == "nm" and length >= 1000:
        return f"{length / 1000:g} um"
    return f"{length:g} {unit}"


def draw_scale_bar(canvas: np.ndarray, pixel_size: float, unit: str = "nm") -> np.ndarray:
    """Draw a scale bar on an RGB ``canvas`` whose pixels are ``pixel_size`` ``unit`` wide:
    a white bar with a black border and its length written above, at the bottom right."""
    height, width = canvas.shape[:2]
    length = scale_bar_length(pixel_size, width)
    bar = max(1, round(length / pixel_size))
    thick = max(3, round(height / 120))
    margin = max(6, round(width / 40))
    x1, y1 = width - margin, height - margin
    x0, y0 = x1 - bar, y1 - thick
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(width, height) / 1000)
    text = _length_text(length, unit)
    (tw, th), base = cv2.getTextSize(text, font, font_scale, 1)
    tx, ty = x0 + (bar - tw) // 2, y0 - 6
    cv2.rectangle(canvas, (min(x0, tx) - 4, ty - th - 4), (max(x1, tx + tw) + 4, y1 + 3),
                  (0, 0, 0), -1)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1), (255, 255, 255), -1)  # corners inclusive
    cv2.putText(canvas, text, (tx, ty), font, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _outlines(det: Detections, k: int) -> list[np.ndarray]:
    """Outlines of detection ``k`` as ``(n, 2)`` float arrays of image ``(x, y)``."""
    if det.masks is not None and det.masks[k].mask.size:
        crop = det.masks[k]
        padded = np.pad(crop.mask, 1).astype(np.uint8)
        contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # Contour points are pixel indices; +0.5 puts them on pixel centres, -1 undoes the pad.
        return [
            c.reshape(-1, 2).astype(np.float64) + [crop.x0 - 0.5, crop.y0 - 0.5]
            for c in contours
        ]
    box = det.boxes[k]
    if det.rotated:
        from emdet.data.geometry import rbox_to_polygon

        return [rbox_to_polygon(box)]
    x0, y0, x1, y1 = box
    return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)]


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 array as PNG atomically (:mod:`emdet.utils.atomic`)."""
    path = Path(path)
    array = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"could not encode {path.name} as PNG")
    atomic_write(path, data.tobytes())
