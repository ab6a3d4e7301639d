"""Instance masks as small crops, and COCO run-length encoding without full-image arrays.

A 4096 x 4096 micrograph holds thousands of objects of a few hundred pixels each. Keeping every
mask at image size would take 16 MB per object; :class:`MaskCrop` keeps only the pixels of the
object's bounding box plus its offset. :func:`crop_to_rle` and :func:`rle_to_crop` convert
between crops and COCO RLE (column-major runs over the whole ``H x W`` image) in time
proportional to the object, never to the image.

The RLE strings are exactly those of ``pycocotools.mask.encode`` (tested against it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MaskCrop", "crop_to_rle", "rle_area", "rle_to_crop", "segmentation_to_crop",
           "segmentation_to_rle"]


@dataclass
class MaskCrop:
    """A binary mask stored as its bounding box.

    Attributes
    ----------
    y0, x0 : int
        Row and column of ``mask[0, 0]`` in the image.
    mask : ndarray of bool, shape (h, w)
        The object's pixels inside its box; ``h = w = 0`` for an empty mask.
    """

    y0: int
    x0: int
    mask: np.ndarray

    @classmethod
    def from_mask(cls, mask: np.ndarray, *, y0: int = 0, x0: int = 0) -> MaskCrop:
        """Crop a full ``(H, W)`` mask to its pixels; ``(y0, x0)`` is the mask's own offset."""
        mask = np.asarray(mask, dtype=bool)
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return cls(int(y0), int(x0), np.zeros((0, 0), dtype=bool))
        cols = np.flatnonzero(mask.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(int(y0 + r0), int(x0 + c0), np.ascontiguousarray(mask[r0:r1, c0:c1]))

    @property
    def area(self) -> int:
        """Number of pixels in the mask."""
        return int(np.count_nonzero(self.mask))

    @property
    def extent(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the pixel box, ``x1``/``y1`` exclusive."""
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The mask inside image rows ``y0:y1`` and columns ``x0:x1``, as a ``(y1-y0, x1-x0)``
        bool array (False outside the crop)."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=bool)
        h, w = self.mask.shape
        iy0, iy1 = max(y0, self.y0), min(y1, self.y0 + h)
        ix0, ix1 = max(x0, self.x0), min(x1, self.x0 + w)
        if iy0 < iy1 and ix0 < ix1:
            out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.mask[
                iy0 - self.y0 : iy1 - self.y0, ix0 - self.x0 : ix1 - self.x0
            ]
        return out

    @classmethod
    def union(cls, crops: Iterable[MaskCrop]) -> MaskCrop:
        """Pixel-wise OR of several crops (in the same image)."""
        crops = [c for c in crops if c.mask.size]
        if not crops:
            return cls(0, 0, np.zeros((0, 0), dtype=bool))
        x0 = min(c.x0 for c in crops)
        y0 = min(c.y0 for c in crops)
        x1 = max(c.extent[2] for c in crops)
        y1 = max(c.extent[3] for c in crops)
        out = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        for c in crops:
            h, w = c.mask.shape
            out[c.y0 - y0 : c.y0 - y0 + h, c.x0 - x0 : c.x0 - x0 + w] |= c.mask
        return cls(y0, x0, out)


def crop_to_rle(crop: MaskCrop, height: int, width: int) -> dict[str, Any]:
    """Compressed COCO RLE of a crop placed in an ``height x width`` image.

    Parameters
    ----------
    crop : MaskCrop
        Must lie inside the image.
    height, width : int
        Image size.

    Returns
    -------
    dict
        ``{"size": [height, width], "counts": str}``, identical to
        ``pycocotools.mask.encode(np.asfortranarray(full_mask))`` with ``counts`` decoded to str.
    """
    from pycocotools import mask as mask_util

    counts = crop_to_counts(crop, height, width)
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def crop_to_counts(crop: MaskCrop, height: int, width: int) -> list[int]:
    """Uncompressed COCO RLE counts (zeros first) of a crop in an ``height x width`` image."""
    h, w = crop.mask.shape
    if crop.y0 < 0 or crop.x0 < 0 or crop.y0 + h > height or crop.x0 + w > width:
        raise ValueError(
            f"mask crop at (y={crop.y0}, x={crop.x0}) of size {h}x{w} lies outside the "
            f"{height}x{width} image"
        )
    total = int(height) * int(width)
    if not crop.mask.any():
        return [total]
    # One row per image column of the crop, padded so every run has a start and an end.
    cols = np.zeros((w, h + 2), dtype=np.int8)
    cols[:, 1:-1] = crop.mask.T
    col, pos = np.nonzero(np.diff(cols, axis=1))  # row-major: column by column, top to bottom
    base = (crop.x0 + col).astype(np.int64) * height + crop.y0 + pos
    starts, ends = base[0::2], base[1::2]
    # Runs that end at the bottom of one column and restart at the top of the next are one run.
    joined = np.flatnonzero(ends[:-1] == starts[1:])
    if joined.size:
        keep_start = np.ones(starts.size, dtype=bool)
        keep_end = np.ones(ends.size, dtype=bool)
        keep_start[joined + 1] = False
        keep_end[joined] = False
        starts, ends = starts[keep_start], ends[keep_end]
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0] = 0
    edges[1:-1:2] = starts
    edges[2:-1:2] = ends
    edges[-1] = total
    counts = np.diff(edges).tolist()
    if counts[-1] == 0:  # the mask reaches the last pixel: pycocotools writes no empty run
        counts.pop()
    return counts


def _counts_from_string(text: str | bytes) -> list[int]:
    """Decode pycocotools' compressed counts string (:func:`emdet.data.cocofile.rle_counts`)."""
    from emdet.data.cocofile import rle_counts

    counts = rle_counts(text)
    if counts is None:
        raise ValueError("RLE counts are not a valid pycocotools counts string")
    return counts


def rle_to_crop(rle: Mapping[str, Any]) -> MaskCrop:
    """Decode a COCO RLE (compressed or uncompressed counts) into a :class:`MaskCrop`.

    Work and memory are proportional to ``height x (columns the object spans)``, not to the
    image.
    """
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _counts_from_string(counts)
    edges = np.cumsum(np.asarray(counts, dtype=np.int64))
    starts, ends = edges[0::2][: len(edges) // 2], edges[1::2]
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if starts.size == 0:
        return MaskCrop(0, 0, np.zeros((0, 0), dtype=bool))
    if ends[-1] > height * width:
        raise ValueError(f"RLE runs past the {height}x{width} image it claims")
    # Split runs into (column, first row, end row) segments; most runs lie in one column.
    col_s, col_e = starts // height, (ends - 1) // height
    single = col_s == col_e
    cols = [col_s[single]]
    r0s = [starts[single] - col_s[single] * height]
    r1s = [ends[single] - col_s[single] * height]
    multi = ~single
    for s, e, cs, ce in zip(starts[multi], ends[multi], col_s[multi], col_e[multi], strict=True):
        span = np.arange(cs, ce + 1)
        cols.append(span)
        r0s.append(np.maximum(s - span * height, 0))
        r1s.append(np.minimum(e - span * height, height))
    col, r0, r1 = np.concatenate(cols), np.concatenate(r0s), np.concatenate(r1s)
    y0, y1 = int(r0.min()), int(r1.max())
    x0, x1 = int(col.min()), int(col.max()) + 1
    change = np.zeros((y1 - y0 + 1, x1 - x0), dtype=np.int32)
    np.add.at(change, (r0 - y0, col - x0), 1)
    np.add.at(change, (r1 - y0, col - x0), -1)
    return MaskCrop(y0, x0, np.cumsum(change[:-1], axis=0) > 0)


def rle_area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels of a COCO RLE."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _counts_from_string(counts)
    return int(sum(counts[1::2]))


def segmentation_to_rle(
    segmentation: Mapping[str, Any] | Sequence[Sequence[float]], height: int, width: int
) -> dict[str, Any]:
    """A COCO ``segmentation`` as one RLE that pycocotools' ``iou``/``area`` take.

    Compressed RLE is returned as it is, uncompressed RLE (list counts) compressed, and the
    polygons of one object merged into one RLE, rasterised as pycocotools (and detectron2) do.
    """
    from pycocotools import mask as mask_util

    if isinstance(segmentation, Mapping):
        if isinstance(segmentation.get("counts"), str | bytes):
            return dict(segmentation)
        return mask_util.frPyObjects(dict(segmentation), height, width)
    return mask_util.merge(mask_util.frPyObjects([list(p) for p in segmentation], height, width))


def segmentation_to_crop(
    segmentation: Mapping[str, Any] | Sequence[Sequence[float]], height: int, width: int
) -> MaskCrop:
    """A COCO ``segmentation`` (RLE dict or list of polygons) as a :class:`MaskCrop`.

    Polygons are rasterised exactly as pycocotools (and detectron2) do.
    """
    if isinstance(segmentation, Mapping):
        return rle_to_crop(segmentation)
    from pycocotools import mask as mask_util

    polygons = [list(map(float, p)) for p in segmentation if len(p) >= 6]
    if not polygons:
        return MaskCrop(0, 0, np.zeros((0, 0), dtype=bool))
    rles = mask_util.frPyObjects(polygons, height, width)
    return rle_to_crop(mask_util.merge(rles))
