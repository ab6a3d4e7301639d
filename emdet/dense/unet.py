"""U-Net with padded convolutions for single-channel EM images (Sadre et al., Ronneberger et al.).

Glossary of shapes: input ``(N, in_channels, H, W)`` with ``H`` and ``W`` multiples of
:attr:`UNet.size_multiple`; output logits ``(N, classes, H, W)``; level ``l`` of the encoder
has ``features * 2**l`` channels at ``H / 2**l``.

**Blocks.** As in Sadre et al., a *block* is one double-convolution stage, counted over both
paths: the original U-Net has 9 blocks (4 down, the bottom, 4 up) and the paper's best
network has 7 (3 down, the bottom, 3 up) with 32 features in the first block, so
``UNet(blocks=7, features=32)`` is that network and ``UNet(blocks=9, features=64)`` is
Ronneberger's (31.0 M parameters for two classes, padded). ``blocks`` must be odd; the image
is halved ``(blocks - 1) // 2`` times, so its sides must be multiples of
``2 ** ((blocks - 1) // 2)`` (8 for 7 blocks): :func:`pad_to_multiple` pads them.

Each block is two 3x3 convolutions with padding 1, each followed by ReLU (and batch norm
before the ReLU when ``batch_norm=True``); down-sampling is 2x2 max pooling, up-sampling a 2x2
transposed convolution that halves the channels, whose output is concatenated with the
encoder features of the same level; a final 1x1 convolution gives ``classes`` logits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["UNet", "pad_to_multiple"]


def pad_to_multiple(
    image: np.ndarray | torch.Tensor, multiple: int, *, mode: str = "reflect"
) -> tuple[np.ndarray | torch.Tensor, tuple[slice, slice]]:
    """Pad the last two axes of an image up to multiples of ``multiple``.

    Padding is split between both sides (one more pixel after than before when odd), so the
    network sees the image centred.

    Parameters
    ----------
    image : numpy.ndarray or torch.Tensor
        ``(..., H, W)``.
    multiple : int
        E.g. :attr:`UNet.size_multiple`.
    mode : {"reflect", "edge", "constant"}, keyword-only, default "reflect"
        How to fill the border (``"constant"`` fills zeros). Reflection of a side shorter than
        the padding falls back to ``"edge"``.

    Returns
    -------
    padded : numpy.ndarray or torch.Tensor
        ``(..., H', W')``, same type and dtype, ``H'`` and ``W'`` the next multiples.
    crop : (slice, slice)
        ``padded[..., crop[0], crop[1]]`` (or a network output of the padded size indexed the
        same way) is the original extent.

    Examples
    --------
    >>> padded, crop = pad_to_multiple(np.zeros((250, 256)), 8)
    >>> padded.shape, crop
    ((256, 256), (slice(3, 253, None), slice(0, 256, None)))
    """
    if not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}.")
    if mode not in ("reflect", "edge", "constant"):
        raise ValueError(f"mode must be 'reflect', 'edge' or 'constant', got {mode!r}.")
    if image.ndim < 2:
        raise ValueError(
            f"pad_to_multiple needs an (..., H, W) array, got shape {tuple(image.shape)}."
        )
    h, w = int(image.shape[-2]), int(image.shape[-1])
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    pads = ((top, ph - top), (left, pw - left))
    crop = (slice(top, top + h), slice(left, left + w))
    if ph == 0 and pw == 0:
        return image, crop
    too_small = mode == "reflect" and (max(pads[0]) >= h or max(pads[1]) >= w)
    use = "edge" if too_small else mode
    if isinstance(image, torch.Tensor):
        torch_mode = {"reflect": "reflect", "edge": "replicate", "constant": "constant"}[use]
        flat = image.reshape(-1, 1, h, w)
        if torch_mode != "constant" and not flat.dtype.is_floating_point:
            out = nn.functional.pad(flat.float(), (left, pw - left, top, ph - top),
                                    mode=torch_mode).to(flat.dtype)
        else:
            out = nn.functional.pad(flat, (left, pw - left, top, ph - top), mode=torch_mode)
        return out.reshape(*image.shape[:-2], h + ph, w + pw), crop
    arr = np.asarray(image)
    width = [(0, 0)] * (arr.ndim - 2) + list(pads)
    return np.pad(arr, width, mode=use), crop


class _Block(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net whose output has the input's size (padded convolutions).

    Parameters
    ----------
    in_channels : int, keyword-only, default 1
        Image channels (1 for EM images).
    classes : int, keyword-only, default 2
        Output channels: class logits for segmentation, one heatmap per point class.
    blocks : int, keyword-only, default 7
        Double-convolution blocks over both paths (odd, >= 3; 7 is Sadre et al.'s best, 9 the
        original U-Net).
    features : int, keyword-only, default 32
        Channels of the first block; each level down doubles them.
    batch_norm : bool, keyword-only, default False
        Batch normalisation after each convolution (not in the paper; helps short trainings).

    Raises
    ------
    ValueError
        Even or too small ``blocks``, or non-positive sizes.

    Examples
    --------
    >>> net = UNet(blocks=7, features=32, classes=3)
    >>> net.size_multiple
    8
    >>> net(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        classes: int = 2,
        blocks: int = 7,
        features: int = 32,
        batch_norm: bool = False,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("classes", classes),
                            ("features", features)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"UNet {name} must be a positive integer, got {value!r}.")
        if not isinstance(blocks, (int, np.integer)) or blocks < 3 or blocks % 2 == 0:
            raise ValueError(
                f"UNet blocks must be an odd number >= 3 (down blocks + bottom + up blocks, "
                f"e.g. 7 as in Sadre et al. or 9 as the original U-Net); got {blocks!r}."
            )
        self.in_channels = int(in_channels)
        self.classes = int(classes)
        self.blocks = int(blocks)
        self.features = int(features)
        self.batch_norm = bool(batch_norm)
        self.depth = (self.blocks - 1) // 2
        widths = [self.features * 2**level for level in range(self.depth + 1)]
        self.down = nn.ModuleList()
        c_in = self.in_channels
        for width in widths[:-1]:
            self.down.append(_Block(c_in, width, self.batch_norm))
            c_in = width
        self.pool = nn.MaxPool2d(2)
        self.bottom = _Block(widths[-2], widths[-1], self.batch_norm)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for level in reversed(range(self.depth)):
            self.upconv.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2))
            self.up.append(_Block(2 * widths[level], widths[level], self.batch_norm))
        self.head = nn.Conv2d(widths[0], self.classes, 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (``2 ** depth``)."""
        return 2**self.depth

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise a ValueError that says how to pad when ``x`` does not fit the network."""
        if x.ndim != 4:
            raise ValueError(
                f"UNet expects a batch (N, {self.in_channels}, H, W); got shape "
                f"{tuple(x.shape)}. Add the missing axes, e.g. image[None, None]."
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"UNet was built for {self.in_channels} input channel(s) but got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}). EM images are single-channel: convert colour "
                "to greyscale, or build UNet(in_channels=...)."
            )
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = self.size_multiple
        if h % m or w % m:
            nh, nw = -(-h // m) * m, -(-w // m) * m
            raise ValueError(
                f"UNet with {self.blocks} blocks halves the image {self.depth} times, so height "
                f"and width must be multiples of {m}; got {h}x{w}. Pad the input to {nh}x{nw} "
                f"with emdet.dense.pad_to_multiple(image, {m}) and crop the output with the "
                "slices it returns (or crop/resize the image to a multiple of "
                f"{m})."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> logits ``(N, classes, H, W)``."""
        self.check_input_shape(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips), strict=True):
            x = block(torch.cat([upconv(x), skip], dim=1))
        return self.head(x)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, classes={self.classes}, blocks={self.blocks}, "
                f"features={self.features}, batch_norm={self.batch_norm}")
