"""Intensity preprocessing for EM images: pure NumPy functions.

Two families live here:

* **Model input** — :func:`normalize_intensity` (robust percentile stretch, shared by the dense
  models) and :func:`to_model_input` (the same stretch to detectron2's 0-255 scale, replicated
  to 3 channels). Every emdet data path uses these, so training and inference see identical
  intensities.
* **Published pipelines** — :func:`lin_preprocess` (Lin et al.: 5-95 % percentile clip,
  min-max normalisation, median blur) and :func:`flatfield_correct` (Sadre et al. eq. 1-3:
  divide by a least-squares Bézier illumination surface, then standardise), built from
  :func:`percentile_clip`, :func:`normalize`, :func:`median_blur`,
  :func:`fit_bezier_coefficients`, :func:`bezier_surface` and :func:`fit_bezier_flatfield`.

Plus :func:`resize`, which keeps the dtype and intensity range. Tiling for large images is in
:mod:`emdet.data.tiling`.

Conventions: images are ``(H, W)`` arrays; functions that accept colour take ``(H, W, C)``.
Functions that return floats give ``float64`` for ``float64`` input and ``float32`` otherwise.
"""

from __future__ import annotations

from math import comb

import numpy as np

__all__ = [
    "bezier_surface",
    "fit_bezier_coefficients",
    "fit_bezier_flatfield",
    "flatfield_correct",
    "lin_preprocess",
    "median_blur",
    "model_input_dtype",
    "model_input_options",
    "normalize",
    "normalize_intensity",
    "percentile_clip",
    "resize",
    "subtract_background",
    "to_model_input",
]


def _float_dtype(dtype: np.dtype) -> type:
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _as_image(img: np.ndarray, name: str, *, colour: bool = False) -> np.ndarray:
    img = np.asarray(img)
    ndims = (2, 3) if colour else (2,)
    if img.ndim not in ndims or img.size == 0 or img.dtype.kind not in "biuf":
        expected = "(H, W) or (H, W, C)" if colour else "(H, W)"
        raise ValueError(
            f"{name} needs a non-empty real-valued {expected} image; got shape {img.shape} "
            f"and dtype {img.dtype}. For a stack of frames, call it on each frame "
            "(emdet.data.io.read_series)."
        )
    return img


def _check_percentiles(low: float, high: float, name: str) -> None:
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(
            f"{name} needs 0 <= low < high <= 100 (percentiles), got low={low}, high={high}."
        )


def _is_small_int(img: np.ndarray) -> bool:
    """8- and 16-bit integer images: histogram percentiles and lookup tables are exact & fast."""
    return img.dtype.kind in "ui" and img.dtype.itemsize <= 2


def _bounds(img: np.ndarray, clip_percentiles: tuple[float, float] | None) -> tuple[float, float]:
    """Intensities at two percentiles (linear interpolation, as :func:`numpy.percentile`)."""
    if clip_percentiles is not None:
        low, high = clip_percentiles
        _check_percentiles(low, high, "clip_percentiles")
    if _is_small_int(img):
        lo_value = int(img.min())
        counts = np.bincount(img.ravel().astype(np.int32) - lo_value)
        if clip_percentiles is None:
            return float(lo_value), float(lo_value + counts.size - 1)
        cumulative = np.cumsum(counts)
        n = int(cumulative[-1])
        out = []
        for q in (low, high):
            position = q / 100.0 * (n - 1)
            k = int(np.floor(position))
            frac = position - k
            below = int(np.searchsorted(cumulative, k, side="right"))
            above = int(np.searchsorted(cumulative, min(k + 1, n - 1), side="right"))
            out.append(lo_value + below + frac * (above - below))
        return float(out[0]), float(out[1])
    x = img.ravel()
    finite = x[np.isfinite(x)] if img.dtype.kind == "f" else x
    if finite.size == 0:
        return 0.0, 0.0
    if clip_percentiles is None:
        return float(finite.min()), float(finite.max())
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# model input


def normalize_intensity(
    img: np.ndarray,
    *,
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5),
    out_range: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """Robust intensity stretch: map two percentiles to ``out_range`` and clip outside.

    This is emdet's one intensity normalisation for learned models; :func:`to_model_input`
    is the same mapping onto detectron2's 0-255 scale. Percentiles are taken over all pixels
    (and channels) of the image, ignoring NaN/inf; NaN pixels map to ``out_range[0]``.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` image of any integer or float dtype.
    clip_percentiles : (float, float) or None, default (0.5, 99.5)
        Percentiles mapped to the ends of ``out_range``; ``None`` uses the minimum and maximum.
    out_range : (float, float), default (0.0, 1.0)
        Output interval.

    Returns
    -------
    numpy.ndarray
        Same shape as ``img``, float32 (float64 for float64 input), values in ``out_range``.
        A constant image maps to ``out_range[0]``.
    """
    img = _as_image(img, "normalize_intensity", colour=True)
    lo, hi = _bounds(img, clip_percentiles)
    a, b = (float(v) for v in out_range)
    dtype = _float_dtype(img.dtype)

    def stretch(x: np.ndarray) -> np.ndarray:
        if hi > lo:
            return (np.clip(x, lo, hi) - lo) * ((b - a) / (hi - lo)) + a
        return np.full_like(x, a)

    if _is_small_int(img):  # same formula through a lookup table over the value range
        offset = int(img.min())
        lut = stretch(np.arange(offset, int(img.max()) + 1, dtype=np.float64)).astype(dtype)
        return lut[img.astype(np.int32) - offset]
    x = img.astype(np.float64)
    y = stretch(x)
    y[np.isnan(x)] = a
    return y.astype(dtype)


#: ``INPUT.EM.INPUT_DTYPE`` values: the dtype of the model input (see :func:`model_input_dtype`).
INPUT_DTYPES = ("auto", "uint8", "float32")
#: ``INPUT.EM.BACKGROUND`` values (see :func:`subtract_background`); ``""`` is off.
BACKGROUNDS = ("", "highpass", "rolling_ball", "rolling_ball_dark")


def model_input_dtype(stored: np.dtype, input_dtype: str = "auto") -> np.dtype:
    """The dtype in which an image stored as ``stored`` reaches the network.

    ``"auto"``: uint8 for 8-bit files (the stretch of 256 levels loses nothing worth the memory),
    float32 for everything deeper (16/32-bit integers, floats), so a 16-bit detector image is
    not cut to 256 grey levels. ``"uint8"`` or ``"float32"`` force one.
    """
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"input dtype {input_dtype!r}: expected one of {INPUT_DTYPES} "
                         "(INPUT.EM.INPUT_DTYPE)")
    if input_dtype == "auto":
        return np.dtype(np.uint8) if np.dtype(stored) in (np.uint8, np.int8, np.bool_) \
            else np.dtype(np.float32)
    return np.dtype(input_dtype)


def subtract_background(img: np.ndarray, *, method: str = "highpass",
                        radius: float = 50.0) -> np.ndarray:
    """Remove slowly varying background (uneven illumination, HAADF support, charging).

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image, any real dtype; ``(H, W, C)`` is done channel by channel.
    method : {"highpass", "rolling_ball", "rolling_ball_dark"}
        ``"highpass"``: subtract a Gaussian blur of sigma ``radius`` (either polarity; the
        mean level of a region becomes 0). ``"rolling_ball"``: subtract the background a ball
        of ``radius`` rolled under the intensity surface leaves (Sternberg; bright objects on a
        dark background: HAADF, SEM secondary electrons; :func:`skimage.restoration.rolling_ball`,
        on the image stretched to 0..255 so the ball's shape does not depend on the bit depth).
        ``"rolling_ball_dark"``: the same for dark objects on a bright background
        (bright-field TEM), rolled over the surface.
    radius : float, default 50
        Pixels; larger than the largest object.

    Returns
    -------
    numpy.ndarray
        Same shape, float32 (float64 for float64 input): stored units for ``"highpass"``, the
        0..255 scale for the rolling balls. The model input's percentile stretch follows.
    """
    img = _as_image(img, "subtract_background", colour=True)
    if method not in BACKGROUNDS or not method:
        raise ValueError(f"background method {method!r}: expected one of {BACKGROUNDS[1:]} "
                         "(INPUT.EM.BACKGROUND)")
    if not radius > 0:
        raise ValueError(f"background radius {radius!r}: expected > 0 px "
                         "(INPUT.EM.BACKGROUND_RADIUS)")
    if img.ndim == 3:
        return np.stack([subtract_background(img[..., c], method=method, radius=radius)
                         for c in range(img.shape[2])], -1)
    dtype = _float_dtype(img.dtype)
    x = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if method == "highpass":
        import cv2

        return (x - cv2.GaussianBlur(x, (0, 0), float(radius),
                                     borderType=cv2.BORDER_REFLECT)).astype(dtype)
    # The ball's height is in intensity units: on the stored counts it would be a flat disk
    # for 16-bit data and a curved ball for 8-bit. On the 0..255 scale of the model input it is
    # the same for every bit depth (as in ImageJ on 8-bit images).
    x = normalize_intensity(x, clip_percentiles=(0.5, 99.5), out_range=(0.0, 255.0))
    sign = -1.0 if method == "rolling_ball_dark" else 1.0
    return (sign * (sign * x - _rolling_ball(sign * x, float(radius)))).astype(dtype)


def _rolling_ball(x: np.ndarray, radius: float) -> np.ndarray:
    """Rolling-ball background of ``x`` (float32), computed on a shrunk copy for large radii.

    skimage's kernel costs grow with radius squared: 0.18 s at radius 10, 1.1 s at 25 and 4.3 s
    at 50 on a 512 x 662 image (2-core machine, load 1). As ImageJ's "Subtract Background" does,
    radii above 10 px run on the image shrunk by ``radius / 10`` (area mean) with the radius
    and the intensity scale shrunk alike (the ball stays a ball), and the background is
    resized back; that keeps one call near 0.2 s whatever the radius.
    """
    import cv2
    from skimage.restoration import rolling_ball

    shrink = max(1, int(radius // 10))
    if shrink == 1:
        return rolling_ball(x, radius=radius).astype(np.float32)
    h, w = x.shape
    small = cv2.resize(x, (max(1, w // shrink), max(1, h // shrink)), interpolation=cv2.INTER_AREA)
    bg = rolling_ball(small / shrink, radius=radius / shrink) * shrink
    return cv2.resize(bg.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def to_model_input(
    array: np.ndarray,
    *,
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5),
    out_dtype: type | np.dtype | str = np.uint8,
    channels: int = 3,
    median_blur: int = 0,
    background: str = "",
    background_radius: float = 50.0,
) -> np.ndarray:
    """Turn an EM image of any dtype into a detectron2 ``(H, W, channels)`` input array.

    The one model-input path of emdet's detectron2 models, used by training
    (:func:`emdet.data.io.load_for_detectron2`) and prediction
    (:func:`emdet.inference.predictor.prepare_image`) alike; :func:`model_input_options` reads
    its settings from a config. In order: optional background removal
    (:func:`subtract_background`) on the stored values; the intensities between the two
    percentiles stretched linearly to 0-255 (values outside clipped); an optional median
    filter; the grey image replicated to ``channels``. detectron2 then subtracts
    ``cfg.MODEL.PIXEL_MEAN`` and divides by ``PIXEL_STD``, which assume this 0-255 scale. For a
    grey image the channel order (BGR/RGB) does not matter.

    Parameters
    ----------
    array : numpy.ndarray
        ``(H, W)`` grey image, ``(H, W, 1)``, or ``(H, W, 3)`` colour (normalised jointly and
        returned with its channel order), any real dtype (uint8, uint16, int32, float32, ...).
    clip_percentiles : (float, float) or None, default (0.5, 99.5)
        Percentiles mapped to 0 and 255; ``None`` maps the minimum and maximum. Percentiles
        make the result independent of hot pixels and of the detector's bit depth.
    out_dtype : numpy.uint8, numpy.float32 or "auto", default numpy.uint8
        ``uint8`` rounds to integers; ``float32`` keeps the same 0-255 scale unrounded (the
        full precision of 16/32-bit data); ``"auto"`` picks by the stored dtype
        (:func:`model_input_dtype`).
    channels : {3, 1}, default 3
        Number of output channels.
    median_blur : int, default 0
        Odd window side of a median filter after the stretch (Lin et al.); 0 or 1 is off.
    background, background_radius : str and float, default "" (off) and 50
        :func:`subtract_background` method and radius (px), before the stretch.

    Returns
    -------
    numpy.ndarray
        ``(H, W, channels)`` of ``out_dtype`` with values in [0, 255].

    Examples
    --------
    >>> img = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    >>> to_model_input(img, clip_percentiles=None)[..., 0]
    array([[  0,  23,  46,  70],
           [ 93, 116, 139, 162],
           [185, 209, 232, 255]], dtype=uint8)
    """
    array = _as_image(array, "to_model_input", colour=True)
    out_dtype = (model_input_dtype(array.dtype, out_dtype) if isinstance(out_dtype, str)
                 else np.dtype(out_dtype))
    if out_dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise ValueError(f"out_dtype must be numpy.uint8 or numpy.float32, got {out_dtype}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}.")
    if array.ndim == 3:
        if array.shape[2] == 1:
            array = array[..., 0]
        elif array.shape[2] != 3 or channels != 3:
            raise ValueError(
                f"to_model_input got an image with {array.shape[2]} channels for "
                f"channels={channels}; convert it to greyscale (H, W) first, or pass an "
                "(H, W, 3) colour image with channels=3."
            )
    if background:
        array = subtract_background(array, method=background, radius=background_radius)
    scaled = normalize_intensity(array, clip_percentiles=clip_percentiles, out_range=(0.0, 255.0))
    if out_dtype == np.uint8:
        scaled = np.rint(scaled)
    scaled = scaled.astype(out_dtype)
    if median_blur and median_blur > 1:
        scaled = _median(scaled, int(median_blur))
    if scaled.ndim == 3:
        return np.ascontiguousarray(scaled)
    return np.repeat(scaled[:, :, None], channels, axis=2)


def model_input_options(cfg) -> dict:
    """The :func:`to_model_input` keyword arguments a detectron2 config asks for
    (``INPUT.EM.CLIP_PERCENTILES``, ``INPUT_DTYPE``, ``MEDIAN_BLUR``, ``BACKGROUND``,
    ``BACKGROUND_RADIUS``): the same for the training mapper, ``--eval-only`` and predict."""
    em = cfg.INPUT.EM
    return {
        "clip_percentiles": tuple(em.CLIP_PERCENTILES) or None,
        "out_dtype": str(em.INPUT_DTYPE),
        "median_blur": int(em.MEDIAN_BLUR),
        "background": str(em.BACKGROUND),
        "background_radius": float(em.BACKGROUND_RADIUS),
    }


# --------------------------------------------------------------------------------------------
# Lin et al.


def percentile_clip(img: np.ndarray, *, low: float = 5.0, high: float = 95.0) -> np.ndarray:
    """Clip intensities to the ``low``-th and ``high``-th percentiles.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` image, any integer or float dtype.
    low, high : float, default 5 and 95
        Percentiles (0-100, linear interpolation as :func:`numpy.percentile`), over all
        finite pixels.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``img``. For integer images the bounds are rounded to the
        nearest integer so the dtype is kept.

    Examples
    --------
    >>> percentile_clip(np.arange(101.0).reshape(1, 101), low=5, high=95)[0, [0, 5, 50, 95, 100]]
    array([ 5.,  5., 50., 95., 95.])
    """
    img = _as_image(img, "percentile_clip", colour=True)
    _check_percentiles(low, high, "percentile_clip")
    lo, hi = _bounds(img, (low, high))
    if np.issubdtype(img.dtype, np.integer) or img.dtype.kind == "b":
        lo, hi = np.rint(lo), np.rint(hi)
    return np.clip(img, lo, hi).astype(img.dtype, copy=False)


def normalize(img: np.ndarray, *, method: str = "minmax") -> np.ndarray:
    """Normalise intensities to [0, 1] (``"minmax"``) or to zero mean, unit std (``"zscore"``).

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` image, any integer or float dtype. NaN pixels are ignored in
        the statistics and stay NaN.
    method : {"minmax", "zscore"}, default "minmax"
        ``"minmax"``: ``(I - min) / (max - min)``; ``"zscore"``: ``(I - mean) / std``.

    Returns
    -------
    numpy.ndarray
        Same shape; float32 (float64 for float64 input). A constant image gives zeros.
    """
    img = _as_image(img, "normalize", colour=True)
    x = img.astype(np.float64)
    if method == "minmax":
        lo, hi = np.nanmin(x), np.nanmax(x)
        y = (x - lo) / (hi - lo) if hi > lo else np.where(np.isnan(x), np.nan, 0.0)
    elif method == "zscore":
        mean, std = np.nanmean(x), np.nanstd(x)
        y = (x - mean) / std if std > 0 else np.where(np.isnan(x), np.nan, 0.0)
    else:
        raise ValueError(f"method must be 'minmax' or 'zscore', got {method!r}.")
    return y.astype(_float_dtype(img.dtype))


def median_blur(img: np.ndarray, *, size: int = 3) -> np.ndarray:
    """Median filter with a ``size`` x ``size`` window, keeping the dtype.

    Border pixels see the edge row/column replicated (``scipy.ndimage`` mode ``"nearest"``,
    OpenCV ``BORDER_REPLICATE``). OpenCV's ``medianBlur`` does the work where it supports the
    dtype (uint8; uint16 and float32 for sizes 3 and 5), about 15x faster than SciPy, with
    identical results.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image, or ``(H, W, C)`` filtered channel by channel.
    size : int, default 3
        Odd window side in pixels; 1 returns a copy.

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as ``img``.
    """
    img = _as_image(img, "median_blur", colour=True)
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size!r}.")
    if img.ndim == 3:
        return np.stack([median_blur(img[..., c], size=size) for c in range(img.shape[2])], -1)
    return _median_2d(img, int(size))


def _median(img: np.ndarray, size: int) -> np.ndarray:
    """:func:`median_blur` for callers whose own parameter has that name."""
    return median_blur(img, size=size)


def _median_2d(img: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return img.copy()
    cv2_ok = img.dtype == np.uint8 and size <= 255
    cv2_ok |= img.dtype in (np.uint16, np.float32) and size in (3, 5)
    if cv2_ok and min(img.shape) >= size:
        import cv2

        return cv2.medianBlur(np.ascontiguousarray(img), size)
    from scipy import ndimage

    return ndimage.median_filter(img, size=size, mode="nearest")


def lin_preprocess(
    img: np.ndarray, *, low: float = 5.0, high: float = 95.0, size: int = 3
) -> np.ndarray:
    """Lin et al. preprocessing: percentile clip, min-max normalise, median blur.

    "Raw images ... are preprocessed through a 5%-95% clipping of intensity values, followed by
    normalization and application of a median blur filter for naive noise correction"
    (Lin et al., real-time point-of-interest segmentation of STEM images). The paper does not
    give the filter size; 3 x 3 is the default here.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image, any integer or float dtype.
    low, high : float, default 5 and 95
        Clipping percentiles.
    size : int, default 3
        Median window side (odd).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 (float64 for float64 input) with values in [0, 1].
    """
    img = _as_image(img, "lin_preprocess")
    dtype = _float_dtype(img.dtype)
    x = img.astype(np.float64)  # clip in float so the percentile bounds are exact
    clipped = percentile_clip(x, low=low, high=high)
    return median_blur(normalize(clipped, method="minmax").astype(dtype), size=size)


# --------------------------------------------------------------------------------------------
# Sadre et al. flat field


def _bernstein(n_points: int, degree: int) -> np.ndarray:
    """Bernstein basis ``B[t, i] = C(degree, i) t^i (1 - t)^(degree - i)``, ``t`` in [0, 1].

    Returns ``(n_points, degree + 1)`` float64; rows sum to one.
    """
    t = np.linspace(0.0, 1.0, n_points) if n_points > 1 else np.zeros(1)
    i = np.arange(degree + 1)
    binom = np.array([comb(degree, k) for k in i], dtype=np.float64)
    return binom * t[:, None] ** i * (1.0 - t[:, None]) ** (degree - i)


def _orders(order: int | tuple[int, int]) -> tuple[int, int]:
    m, n = (order, order) if np.isscalar(order) else tuple(order)
    if not all(isinstance(v, (int, np.integer)) and v >= 0 for v in (m, n)):
        raise ValueError(f"order must be a non-negative int or (m, n) pair, got {order!r}.")
    return int(m), int(n)


def bezier_surface(coefficients: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Evaluate a tensor-product Bézier surface on an image grid.

    ``S(u, v) = sum_i sum_j k[i, j] B_i^m(u) B_j^n(v)`` with ``u = row / (H - 1)`` and
    ``v = col / (W - 1)`` (Sadre et al. eq. 1), ``B`` the Bernstein polynomials.

    Parameters
    ----------
    coefficients : numpy.ndarray
        ``(m + 1, n + 1)`` control values ``k[i, j]``, laid out like the image: ``k[0, 0]`` is
        the top-left corner value, ``k[-1, -1]`` the bottom-right.
    shape : (int, int)
        Output ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float64.
    """
    k = np.asarray(coefficients, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"coefficients must be a (m + 1, n + 1) array, got shape {k.shape}.")
    rows, cols = (int(s) for s in shape)
    by = _bernstein(rows, k.shape[0] - 1)
    bx = _bernstein(cols, k.shape[1] - 1)
    return by @ k @ bx.T


def fit_bezier_coefficients(
    img: np.ndarray, *, order: int | tuple[int, int] = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Least-squares Bézier control values ``k[i, j]`` of an image's illumination.

    Minimises ``sum_pixels w (I - S)^2`` over the ``(m + 1)(n + 1)`` coefficients of the
    Bézier surface ``S`` of :func:`bezier_surface` (Sadre et al. eq. 1). The tensor-product
    structure makes the normal equations separable, so memory stays ``O(H W)`` even for
    4k x 4k images.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image, any real dtype. NaN/inf pixels are excluded.
    order : int or (int, int), default 2
        Polynomial degree ``(m, n)`` along rows and columns; an int sets both. Sadre et al.
        use a "2x2 Bézier surface", i.e. ``m = n = 2`` in their eq. 1: 3 x 3 = 9 control
        values, enough for a quadratic illumination fall-off. ``order=1`` is bilinear
        (a 2 x 2 control grid).
    mask : numpy.ndarray of bool, optional
        ``(H, W)``; only ``True`` pixels enter the fit (e.g. exclude holes or the databar).

    Returns
    -------
    numpy.ndarray
        ``(m + 1, n + 1)`` float64 coefficients.

    Raises
    ------
    ValueError
        Too few usable pixels to determine the coefficients.
    """
    img = _as_image(img, "fit_bezier_coefficients")
    m, n = _orders(order)
    y = img.astype(np.float64)
    w = np.isfinite(y)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != img.shape:
            raise ValueError(f"mask has shape {mask.shape}, the image {img.shape}.")
        w &= mask
    y = np.where(w, y, 0.0)
    w = w.astype(np.float64)
    rows, cols = img.shape
    by, bx = _bernstein(rows, m), _bernstein(cols, n)
    # Normal matrix G[(i,j),(k,l)] = sum_yx w B_i(y) B_j(x) B_k(y) B_l(x), computed separably.
    bx_pairs = (bx[:, :, None] * bx[:, None, :]).reshape(cols, -1)  # (W, (n+1)^2)
    t = (w @ bx_pairs).reshape(rows, n + 1, n + 1)  # (H, n+1, n+1)
    gram = np.einsum("yi,yk,yjl->ijkl", by, by, t).reshape((m + 1) * (n + 1), -1)
    rhs = (by.T @ (w * y) @ bx).reshape(-1)
    n_coef = (m + 1) * (n + 1)
    if np.linalg.matrix_rank(gram) < n_coef:
        raise ValueError(
            f"Cannot fit a degree ({m}, {n}) Bézier surface: the {int(w.sum())} usable pixels "
            f"do not determine its {n_coef} coefficients. Use a lower order or a larger mask."
        )
    return np.linalg.solve(gram, rhs).reshape(m + 1, n + 1)


def fit_bezier_flatfield(
    img: np.ndarray, *, order: int | tuple[int, int] = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Fit the smooth illumination ``I_0(r)`` of an image with a Bézier surface.

    Sadre et al. eq. 1: the average local intensity is fitted by least squares with a
    tensor-product Bézier surface of degree ``(m, n)`` (:func:`fit_bezier_coefficients`,
    :func:`bezier_surface`).

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image, any real dtype.
    order : int or (int, int), default 2
        Degree ``(m, n)``; the paper's "2x2 Bézier surface" is ``order=2`` (3 x 3 control
        values).
    mask : numpy.ndarray of bool, optional
        ``(H, W)`` pixels to fit.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float64 fitted illumination.
    """
    coefficients = fit_bezier_coefficients(img, order=order, mask=mask)
    return bezier_surface(coefficients, np.shape(img))


def flatfield_correct(
    img: np.ndarray, *, order: int | tuple[int, int] = 2, mask: np.ndarray | None = None
) -> np.ndarray:
    """Sadre et al. illumination flat-field correction and standardisation (eq. 1-3).

    1. Fit ``I_0(r)`` with a degree-``order`` Bézier surface (eq. 1).
    2. ``I = I_meas / I_0`` (eq. 2); its mean is then close to one.
    3. ``I_out = (I - mu) / sigma`` (eq. 3) with ``mu`` the mean of ``I`` and, as in the paper,
       ``sigma = sqrt(<(I - 1)^2>)``, the RMS deviation from one (equal to the standard
       deviation when the mean is exactly one).

    Statistics use the ``mask`` pixels when a mask is given.

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` image with positive intensities (counts), any real dtype.
    order : int or (int, int), default 2
        Bézier degree (see :func:`fit_bezier_coefficients`).
    mask : numpy.ndarray of bool, optional
        ``(H, W)`` pixels used for the fit and the statistics.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32 (float64 for float64 input), mean 0 and RMS about 1.

    Raises
    ------
    ValueError
        The fitted illumination is not positive everywhere (e.g. dark-offset or
        background-subtracted data), so dividing by it is meaningless.
    """
    img = _as_image(img, "flatfield_correct")
    surface = fit_bezier_flatfield(img, order=order, mask=mask)
    if not np.all(surface > 0):
        raise ValueError(
            "The fitted illumination surface is zero or negative somewhere "
            f"(min {surface.min():.4g}); flat-field division needs positive intensities. "
            "Subtract only the camera's dark level (not the mean), or pass a mask that "
            "excludes empty regions."
        )
    ratio = img.astype(np.float64) / surface
    region = np.isfinite(ratio)
    if mask is not None:
        region &= np.asarray(mask, dtype=bool)
    mu = ratio[region].mean()
    sigma = np.sqrt(np.mean((ratio[region] - 1.0) ** 2))
    out = (ratio - mu) / sigma if sigma > 0 else ratio - mu
    return out.astype(_float_dtype(img.dtype))


# --------------------------------------------------------------------------------------------
# resize


def resize(
    img: np.ndarray,
    *,
    scale: float | tuple[float, float] | None = None,
    shape: tuple[int, int] | None = None,
    order: int = 1,
    anti_aliasing: bool | None = None,
) -> np.ndarray:
    """Resize an image, keeping its dtype and intensity range (no rescaling to [0, 1]).

    Parameters
    ----------
    img : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)`` image (channels are not resized), any real dtype.
    scale : float or (float, float), optional
        Zoom factor(s) for ``(H, W)``; the new size is rounded to whole pixels.
    shape : (int, int), optional
        Output ``(H_out, W_out)``. Give exactly one of ``scale`` and ``shape``.
    order : int, default 1
        Spline order: 0 nearest (use for label images), 1 bilinear, 3 bicubic. Boolean masks
        are always resized with nearest neighbour.
    anti_aliasing : bool, optional
        Gaussian pre-filter when shrinking; default on for ``order > 0``, off for ``order=0``.

    Returns
    -------
    numpy.ndarray
        ``(H_out, W_out)`` or ``(H_out, W_out, C)`` in the input dtype; integer results are
        rounded and clipped to the dtype's range.
    """
    from skimage.transform import resize as sk_resize

    img = _as_image(img, "resize", colour=True)
    if (scale is None) == (shape is None):
        raise ValueError("resize needs exactly one of scale= or shape=.")
    if shape is None:
        sy, sx = (scale, scale) if np.isscalar(scale) else scale
        if not (sy > 0 and sx > 0):
            raise ValueError(f"scale must be positive, got {scale!r}.")
        shape = (max(1, round(img.shape[0] * sy)), max(1, round(img.shape[1] * sx)))
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (H_out, W_out) with positive sizes, got {shape!r}.")
    if img.dtype.kind == "b":  # masks: nearest neighbour keeps them binary
        order, anti_aliasing = 0, False
    if anti_aliasing is None:
        anti_aliasing = order > 0
    out = sk_resize(
        img if img.dtype.kind == "b" else img.astype(np.float64),
        shape + img.shape[2:],
        order=order,
        mode="reflect",
        anti_aliasing=anti_aliasing,
        preserve_range=True,
    )
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(img.dtype)
