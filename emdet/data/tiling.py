"""Cut large EM images into overlapping tiles and stitch per-tile results back.

:func:`tile_image` covers the whole image, borders included: tiles step by
``tile - overlap`` and the last tile on each axis is shifted back to end flush with the image
edge, so every tile has the full size (unless the image is smaller than a tile) and no padding
is invented. :func:`stitch_tiles` averages overlapping pixels, so
``stitch_tiles(tile_image(img, ...), img.shape)`` returns ``img`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["tile_image", "tile_starts", "stitch_tiles"]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be an int or a (rows, cols) pair of ints, got {value!r}.")
    return int(pair[0]), int(pair[1])


def tile_starts(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Start offsets of tiles along one axis of ``length`` pixels.

    Parameters
    ----------
    length : int
        Axis length in pixels.
    tile : int
        Tile size (> 0).
    overlap : int, default 0
        Pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns
    -------
    list of int
        Sorted unique starts: ``0, s, 2s, ...`` with ``s = tile - overlap``, plus
        ``length - tile`` so the last tile ends at the border. ``[0]`` if ``length <= tile``.

    Examples
    --------
    >>> tile_starts(10, 4, 1)
    [0, 3, 6]
    >>> tile_starts(11, 4, 1)
    [0, 3, 6, 7]
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(
            f"Need tile > 0 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}."
        )
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, tile - overlap))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_image(
    img: np.ndarray, tile: int | tuple[int, int], *, overlap: int | tuple[int, int] = 0
) -> list[tuple[int, int, np.ndarray]]:
    """Cut an image into overlapping tiles that cover all of it.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` or ``(H, W, ...)`` array (trailing axes such as channels are kept whole).
    tile : int or (int, int)
        Tile ``(rows, cols)``; an int gives square tiles. Axes shorter than the tile give one
        tile of the axis length.
    overlap : int or (int, int), default 0
        Overlap in pixels between neighbours, smaller than ``tile``.

    Returns
    -------
    list of (int, int, numpy.ndarray)
        ``(y0, x0, tile_array)`` in row-major order; ``tile_array`` is a read-only view
        ``img[y0:y0 + th, x0:x0 + tw]`` (call ``.copy()`` to modify it).
    """
    img = np.asarray(img)
    if img.ndim < 2:
        raise ValueError(f"tile_image needs an (H, W, ...) array, got shape {img.shape}.")
    th, tw = _pair(tile, "tile")
    oy, ox = _pair(overlap, "overlap")
    tiles = []
    for y0 in tile_starts(img.shape[0], th, oy):
        for x0 in tile_starts(img.shape[1], tw, ox):
            view = img[y0 : y0 + th, x0 : x0 + tw]
            view.flags.writeable = False
            tiles.append((y0, x0, view))
    return tiles


def stitch_tiles(
    tiles: Iterable[tuple[int, int, np.ndarray]],
    shape: tuple[int, int],
    *,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Reassemble tiles into one array, averaging where they overlap.

    Parameters
    ----------
    tiles : iterable of (int, int, numpy.ndarray)
        ``(y0, x0, tile_array)`` as returned by :func:`tile_image`; the tile arrays may be
        per-tile results of the same spatial size with any trailing axes (e.g. class
        probabilities ``(th, tw, K)``), identical across tiles.
    shape : (int, int)
        Output ``(H, W)``; a longer shape is accepted if its trailing axes match the tiles'.
    dtype : numpy.dtype, optional
        Output dtype; default the first tile's. Integer outputs are rounded.

    Returns
    -------
    numpy.ndarray
        ``(H, W, ...)``. Each pixel is the mean of the tiles covering it, computed as a running
        mean so identical overlaps reproduce their value bit for bit.

    Raises
    ------
    ValueError
        No tiles, tiles outside ``shape``, inconsistent trailing axes, or pixels that no tile
        covers.
    """
    tiles = list(tiles)
    if not tiles:
        raise ValueError("stitch_tiles got no tiles.")
    first = np.asarray(tiles[0][2])
    trailing = first.shape[2:]
    height, width = (int(s) for s in shape[:2])
    if tuple(shape[2:]) not in ((), trailing):
        raise ValueError(
            f"shape {tuple(shape)} does not match tiles with trailing axes {trailing}."
        )
    dtype = np.dtype(dtype) if dtype is not None else first.dtype
    work = np.complex128 if np.issubdtype(dtype, np.complexfloating) else np.float64
    mean = np.zeros((height, width) + trailing, dtype=work)
    count = np.zeros((height, width), dtype=np.int64)
    for y0, x0, arr in tiles:
        arr = np.asarray(arr)
        th, tw = arr.shape[:2]
        if arr.shape[2:] != trailing:
            raise ValueError(
                f"Tile at ({y0}, {x0}) has shape {arr.shape}; expected (h, w) + {trailing}."
            )
        if y0 < 0 or x0 < 0 or y0 + th > height or x0 + tw > width:
            raise ValueError(
                f"Tile at ({y0}, {x0}) of size {th}x{tw} lies outside the {height}x{width} output."
            )
        region = (slice(y0, y0 + th), slice(x0, x0 + tw))
        count[region] += 1
        n = count[region].reshape((th, tw) + (1,) * len(trailing))
        mean[region] += (arr - mean[region]) / n
    if (count == 0).any():
        ys, xs = np.nonzero(count == 0)
        raise ValueError(
            f"{ys.size} output pixels are covered by no tile (first at y={ys[0]}, x={xs[0]}); "
            "pass all tiles from tile_image and the original image shape."
        )
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        mean = np.clip(np.rint(mean), info.min, info.max)
    elif dtype.kind == "b":
        mean = mean >= 0.5
    return mean.astype(dtype)
