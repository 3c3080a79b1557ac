"""CIPS-3D's critics: StyleGAN2-style multi-scale residual discriminators with a fade-in between
the top resolution and the one below (the official ``Discriminator_MultiScale`` /
``Discriminator_MultiScale_Aux`` of PeterouZh/CIPS-3D), built from :mod:`aware3d.nets.stylegan2`
(equalised-lr layers, FIR [1, 3, 3, 1] downsampling, minibatch std).

    ResBlock(in, out, first_downsample)   two 3x3 convs (the second, or with ``first_downsample``
                                          the first, downsamples 2x), a 1x1 downsampling skip;
                                          (main + skip) / sqrt 2
    MultiScaleDiscriminator(resolution, channels, first_downsample, mbstd_group)
        x = ResBlock_S(fromRGB_S(img)); with alpha < 1 x = alpha x + (1 - alpha) fromRGB_{S/2}(down(img))
        (down: bilinear 2x, the official ``F.interpolate(scale_factor=0.5)``); ResBlocks to 4x4,
        (minibatch std), 3x3 conv, FC + LeakyReLU, FC -> logit (B, 1)
    msd_channels(kind, channel_multiplier)  the official channel tables: ``"main"`` (512 up to 32^2,
                                          256 x m at 64^2, 128 x m at 128^2, ...) and ``"aux"`` (256 up
                                          to 128^2)

The official builds every size up to ``max_size`` 1024 (fromRGB at 9 sizes, blocks from 1024 down);
only the layers an image of ``resolution`` reaches are built here (the fromRGB at ``resolution``
and ``resolution / 2`` and the blocks from ``resolution`` down).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import Conv2dLayer, FullyConnectedLayer, MinibatchStd

__all__ = ["MultiScaleDiscriminator", "ResBlock", "msd_channels"]


def msd_channels(kind: str = "main", channel_multiplier: int = 2) -> dict:
    """Channels per resolution of the official critics (``kind`` main or aux)."""
    m = channel_multiplier
    if kind == "main":
        return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}
    if kind == "aux":  # the official aux critic fixes its multiplier at 2
        return {4: 256, 8: 256, 16: 256, 32: 256, 64: 256, 128: 256, 256: 128, 512: 64, 1024: 32}
    raise ValueError(f"kind: expected main or aux, got {kind!r}")


class ResBlock(nn.Module):
    """conv1 3x3 (in -> in), conv2 3x3 (in -> out), both bias + LeakyReLU x sqrt 2; one of them
    downsamples 2x (conv2, or conv1 with ``first_downsample``); skip: 1x1 without bias, downsampled.
    Returns (conv2(conv1(x)) + skip(x)) / sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int, first_downsample: bool = False):
        super().__init__()
        self.conv1 = Conv2dLayer(in_channels, in_channels, 3, activation="lrelu", down=2 if first_downsample else 1)
        self.conv2 = Conv2dLayer(in_channels, out_channels, 3, activation="lrelu", down=1 if first_downsample else 2)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class MultiScaleDiscriminator(nn.Module):
    """The official multi-scale critic at one ``resolution`` (see the module docstring).
    ``mbstd_group`` 0: no minibatch std (the official ffhq setting, ``stddev_group: 0``)."""

    def __init__(self, resolution: int, channels: dict | None = None, first_downsample: bool = False,
                 mbstd_group: int = 0):
        super().__init__()
        log2 = round(math.log2(resolution))
        if 2 ** log2 != resolution or resolution < 8:
            raise ValueError(f"resolution: expected a power of 2 >= 8, got {resolution}")
        ch = channels or msd_channels("main")
        self.resolution, self.channels = resolution, ch
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        self.conv_in = nn.ModuleDict({str(r): Conv2dLayer(3, ch[r], 1, activation="lrelu")
                                      for r in (resolution, resolution // 2)})
        self.blocks = nn.ModuleDict({str(r): ResBlock(ch[r], ch[r // 2], first_downsample)
                                     for r in self.block_resolutions})
        self.mbstd = MinibatchStd(mbstd_group, 1) if mbstd_group > 0 else None
        self.final_conv = Conv2dLayer(ch[4] + (1 if self.mbstd is not None else 0), ch[4], 3, activation="lrelu")
        self.fc = FullyConnectedLayer(ch[4] * 16, ch[4], activation="lrelu")
        self.out = FullyConnectedLayer(ch[4], 1)
        self.alpha = 1.0                # the fade-in used when forward gets no alpha

    def forward(self, img: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        alpha = self.alpha if alpha is None else float(alpha)
        if img.shape[-1] != self.resolution:
            raise ValueError(f"image size: expected {self.resolution}, got {img.shape[-1]}")
        R = self.resolution
        x = self.blocks[str(R)](self.conv_in[str(R)](img))
        if alpha < 1:
            down = F.interpolate(img, scale_factor=0.5, mode="bilinear")
            x = alpha * x + (1 - alpha) * self.conv_in[str(R // 2)](down)
        for r in self.block_resolutions[1:]:
            x = self.blocks[str(r)](x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.out(self.fc(self.final_conv(x).flatten(1)))
