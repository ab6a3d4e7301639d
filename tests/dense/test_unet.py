"""emdet.dense.unet: one shared base class of checks, subclassed per U-Net variant (as smp)."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from emdet.dense import unet as unet_module
from emdet.dense.unet import UNet, pad_to_multiple


def _expected_parameters(in_channels: int, classes: int, blocks: int, features: int,
                         batch_norm: bool) -> int:
    """Parameter count of the architecture in the module docstring, counted by hand."""

    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + (0 if batch_norm and k == 3 else c_out)

    def block(c_in, c_out):
        bn = 2 * 2 * c_out if batch_norm else 0
        return conv(c_in, c_out, 3) + conv(c_out, c_out, 3) + bn

    depth = (blocks - 1) // 2
    widths = [features * 2**level for level in range(depth + 1)]
    total, c_in = 0, in_channels
    for w in widths:
        total += block(c_in, w)
        c_in = w
    for level in reversed(range(depth)):
        total += widths[level + 1] * widths[level] * 4 + widths[level]  # 2x2 transposed conv
        total += block(2 * widths[level], widths[level])
    return total + widths[0] * classes + classes


class UNetVariant:
    """Checks every U-Net variant must pass; subclasses set the constructor arguments.

    Not collected itself (no ``Test`` prefix); each ``TestX(UNetVariant)`` runs all of them.
    """

    in_channels = 1
    classes = 2
    blocks = 7
    features = 32
    batch_norm = False
    side = 32  # a valid input side for the quick checks
    expected_parameters: int | None = None

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> UNet:
        torch.manual_seed(0)
        return UNet(in_channels=cls.in_channels, classes=cls.classes, blocks=cls.blocks,
                    features=cls.features, batch_norm=cls.batch_norm).eval()

    def test_output_has_input_size_and_classes(self, model):
        x = torch.randn(2, self.in_channels, self.side, self.side + model.size_multiple)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, self.classes, self.side, self.side + model.size_multiple)
        assert torch.isfinite(y).all()

    def test_size_multiple_is_two_to_the_depth(self, model):
        assert model.size_multiple == 2 ** ((self.blocks - 1) // 2)
        assert model.depth == (self.blocks - 1) // 2

    def test_wrong_size_error_says_how_to_pad(self, model):
        m = model.size_multiple
        bad = self.side + m // 2 if m > 1 else None
        if bad is None:
            pytest.skip("every size fits a network without pooling")
        with pytest.raises(ValueError) as err:
            model(torch.zeros(1, self.in_channels, bad, self.side))
        text = str(err.value)
        assert f"multiples of {m}" in text and f"pad_to_multiple(image, {m})" in text
        assert f"{bad}x{self.side}" in text and f"{bad + m // 2}x{self.side}" in text

    def test_pad_to_multiple_fixes_the_size(self, model):
        m = model.size_multiple
        image = np.random.default_rng(0).normal(size=(self.side - 3, self.side + 5))
        padded, crop = pad_to_multiple(image.astype(np.float32), m)
        assert padded.shape[0] % m == 0 and padded.shape[1] % m == 0
        x = torch.from_numpy(padded)[None, None].repeat(1, self.in_channels, 1, 1)
        with torch.no_grad():
            y = model(x)[0, :, crop[0], crop[1]]
        assert y.shape == (self.classes,) + image.shape
        np.testing.assert_array_equal(padded[crop], image.astype(np.float32))

    def test_wrong_channels_and_rank(self, model):
        with pytest.raises(ValueError, match="input channel"):
            model(torch.zeros(1, self.in_channels + 2, self.side, self.side))
        with pytest.raises(ValueError, match=r"image\[None, None\]"):
            model(torch.zeros(self.side, self.side))

    def test_parameter_count(self, model):
        n = sum(p.numel() for p in model.parameters())
        assert n == _expected_parameters(self.in_channels, self.classes, self.blocks,
                                         self.features, self.batch_norm)
        if self.expected_parameters is not None:
            assert n == self.expected_parameters

    def test_gradients_reach_the_first_layer(self):
        torch.manual_seed(0)
        net = UNet(in_channels=self.in_channels, classes=self.classes, blocks=self.blocks,
                   features=min(self.features, 8), batch_norm=self.batch_norm)
        x = torch.randn(2, self.in_channels, self.side, self.side)
        net(x).sum().backward()
        first = net.down[0][0].weight.grad
        assert first is not None and first.abs().sum() > 0


class TestUNetPaper(UNetVariant):
    """Sadre et al.'s best network: 7 blocks, 32 features, two classes."""

    expected_parameters = 1_925_058


class TestUNetOriginal(UNetVariant):
    """Ronneberger's U-Net (9 blocks, 64 features), padded: 31.0 M parameters."""

    blocks, features, side = 9, 64, 16
    expected_parameters = 31_030_658


class TestUNetSmallMultiClassBatchNorm(UNetVariant):
    """The CPU-friendly configs' network: few features, batch norm, four classes."""

    blocks, features, classes, batch_norm, side = 7, 8, 4, True, 24


class TestUNetShallowMultiChannel(UNetVariant):
    """Three blocks (one pooling), three input channels."""

    blocks, features, classes, in_channels, side = 3, 4, 1, 3, 10


@pytest.mark.parametrize("blocks", [2, 4, 1, 0])
def test_even_or_too_few_blocks_are_refused(blocks):
    with pytest.raises(ValueError, match="odd number >= 3"):
        UNet(blocks=blocks)


def test_docstring_examples():
    result = doctest.testmod(unet_module, optionflags=doctest.NORMALIZE_WHITESPACE,
                             extraglobs={"np": np, "torch": torch})
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("shape,multiple", [((250, 256), 8), ((7, 9), 4), ((3, 3), 16),
                                            ((2, 5, 17), 8)])
def test_pad_to_multiple_numpy_and_torch_agree(shape, multiple):
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    padded, crop = pad_to_multiple(image, multiple)
    tpadded, tcrop = pad_to_multiple(torch.from_numpy(image), multiple)
    assert crop == tcrop and padded.shape == tuple(tpadded.shape)
    assert all(s % multiple == 0 for s in padded.shape[-2:])
    np.testing.assert_array_equal(padded, tpadded.numpy())
    np.testing.assert_array_equal(padded[..., crop[0], crop[1]], image)


def test_pad_to_multiple_noop_and_modes():
    image = np.ones((8, 8))
    same, crop = pad_to_multiple(image, 8)
    assert same is image and crop == (slice(0, 8), slice(0, 8))
    zeros, _ = pad_to_multiple(np.ones((6, 6)), 8, mode="constant")
    assert zeros.sum() == 36
    with pytest.raises(ValueError, match="mode"):
        pad_to_multiple(image, 8, mode="wrap")
    with pytest.raises(ValueError, match="positive integer"):
        pad_to_multiple(image, 0)
