"""Losses of the dense models and the U-Net weight map (Ronneberger et al. eq. 2).

* :func:`segmentation_loss`: pixel-wise cross-entropy (Sadre et al.), optionally weighted per
  class and per pixel (spatially weighted cross-entropy, Leibovich et al.).
* :func:`heatmap_loss`: binary cross-entropy of each heatmap channel against Gaussian targets
  (Lin et al.'s heatmaps), weighted ``1 + peak_weight * target`` because peaks are rare.
* :func:`unet_weight_map`: ``w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, with
  ``w_c`` balancing the class frequencies and ``d1``, ``d2`` the distances to the nearest and
  second-nearest object, so the thin gaps between nearby objects count more.

Shapes: logits ``(N, C, H, W)``; labels ``(N, H, W)`` int64 with ``ignore_index`` for padding;
pixel weights ``(N, H, W)`` float32; heatmap targets ``(N, C, H, W)`` float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["heatmap_loss", "segmentation_loss", "unet_weight_map"]

IGNORE_INDEX = -1


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    pixel_weights: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Mean pixel-wise cross-entropy, optionally weighted per class and per pixel.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)``.
    labels : torch.Tensor
        ``(N, H, W)`` int64 in ``0 .. C - 1`` or ``ignore_index``.
    pixel_weights : torch.Tensor, keyword-only
        ``(N, H, W)`` weights (e.g. :func:`unet_weight_map`).
    class_weights : torch.Tensor, keyword-only
        ``(C,)`` weights.
    ignore_index : int, keyword-only, default -1
        Label of pixels that do not count (padding).

    Returns
    -------
    torch.Tensor
        Scalar: ``sum(w * ce) / sum(w)`` over the counted pixels (the plain mean without
        weights).
    """
    ce = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=ignore_index,
                         reduction="none")
    valid = (labels != ignore_index).to(ce.dtype)
    w = valid if pixel_weights is None else pixel_weights.to(ce.dtype) * valid
    if class_weights is not None:  # normalise by the same per-class weights cross_entropy used
        safe = labels.clamp(min=0)
        w_norm = w * class_weights.to(ce.dtype)[safe]
    else:
        w_norm = w
    return (ce * w).sum() / w_norm.sum().clamp(min=1e-12)


def heatmap_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    peak_weight: float = 10.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of heatmap logits against Gaussian targets, peaks weighted up.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)``; ``sigmoid(logits)`` is the predicted heatmap.
    target : torch.Tensor
        ``(N, C, H, W)`` in [0, 1] (:func:`emdet.dense.heatmap.gaussian_heatmap`).
    peak_weight : float, keyword-only, default 10
        Pixel weight ``1 + peak_weight * target``.
    valid : torch.Tensor, keyword-only
        ``(N, H, W)`` bool/float, pixels that count (default all).

    Returns
    -------
    torch.Tensor
        Scalar weighted mean.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = 1.0 + float(peak_weight) * target
    if valid is not None:
        w = w * valid[:, None].to(w.dtype)
    return (bce * w).sum() / w.sum().clamp(min=1e-12)


def unet_weight_map(
    labels: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    background: int = 0,
    class_balance: bool = True,
    ignore: Sequence[int] = (),
) -> np.ndarray:
    """Ronneberger et al.'s pixel weights for a label image.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer labels; objects are the 8-connected regions of non-``background``
        pixels.
    w0 : float, keyword-only, default 10
        Amplitude of the gap term.
    sigma : float, keyword-only, default 5
        Distance scale in pixels.
    background : int, keyword-only, default 0
        Label of the background; the gap term is added on background pixels only.
    class_balance : bool, keyword-only, default True
        ``w_c = N / (K n_c)`` for the ``K`` labels present (mean 1); otherwise ``w_c = 1``.
    ignore : sequence of int, keyword-only
        Labels that are neither objects nor background (they get weight ``w_c`` only).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` float32, ``>= 0``.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"unet_weight_map needs an (H, W) label image, got {labels.shape}.")
    h, w = labels.shape
    if class_balance:
        values, counts = np.unique(labels, return_counts=True)
        lut = {int(v): labels.size / (len(values) * c) for v, c in zip(values, counts,
                                                                         strict=True)}
        wc = np.vectorize(lut.get, otypes=[np.float64])(labels) if len(values) > 1 else np.ones(
            labels.shape)
    else:
        wc = np.ones(labels.shape)
    objects = labels != background
    for v in ignore:
        objects &= labels != v
    regions, n = ndimage.label(objects, structure=np.ones((3, 3)))
    if n < 2 or w0 == 0:
        return wc.astype(np.float32)
    reach = int(np.ceil(4 * sigma))
    d1 = np.full((h, w), np.inf)
    d2 = np.full((h, w), np.inf)
    for k, sl in enumerate(ndimage.find_objects(regions), start=1):
        y0, y1 = max(0, sl[0].start - reach), min(h, sl[0].stop + reach)
        x0, x1 = max(0, sl[1].start - reach), min(w, sl[1].stop + reach)
        window = regions[y0:y1, x0:x1] == k
        d = ndimage.distance_transform_edt(~window)
        a, b = d1[y0:y1, x0:x1], d2[y0:y1, x0:x1]
        d2[y0:y1, x0:x1] = np.minimum(b, np.maximum(a, d))
        d1[y0:y1, x0:x1] = np.minimum(a, d)
    gap = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma * sigma))
    gap[labels != background] = 0.0
    return (wc + np.nan_to_num(gap)).astype(np.float32)
