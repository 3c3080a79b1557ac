"""The discriminators of the 3D-aware GANs, each as its paper's official code builds it:

- :class:`DCDiscriminator`: GIRAFFE's DCGAN-style critic (also CIPS-3D's two critics);
- :class:`PatchDiscriminator`: GRAF's patch critic (spectral + instance norm);
- :class:`ProgressiveDiscriminator`: pi-GAN's progressive CoordConv residual critic.

HoloGAN's critic, with its style and latent heads, sits with its generator in
:mod:`aware3d.fields.hologan`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.autocast import bf16_autocast

__all__ = ["DCDiscriminator", "PatchDiscriminator", "ProgressiveDiscriminator", "CoordConv",
           "ResidualCoordConvBlock", "StridedResidualBlock", "add_coords"]


class DCDiscriminator(nn.Module):
    """DCGAN-style critic: log2(S) - 2 stride-2 4x4 convs (channels doubling up to ``n_feat`` at
    4x4), leaky ReLU 0.2, a final 4x4 conv to one logit (official ``DCDiscriminator``)."""

    def __init__(self, in_dim: int = 3, n_feat: int = 512, img_size: int = 64, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16  # bf16 autocast (about 2x faster on CPU; R1 then carries ~1% noise)
        n_layers = int(round(math.log2(img_size))) - 2
        if 2 ** (n_layers + 2) != img_size or n_layers < 1:
            raise ValueError(f"img_size: expected a power of 2 >= 8, got {img_size}")
        ch = [in_dim] + [n_feat // 2 ** (n_layers - 1 - i) for i in range(n_layers)]
        self.blocks = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1, bias=False) for i in range(n_layers))
        self.conv_out = nn.Conv2d(n_feat, 1, 4, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with bf16_autocast(self.bf16, x.device):
            for layer in self.blocks:
                x = F.leaky_relu(layer(x), 0.2)
            out = self.conv_out(x).reshape(x.shape[0], 1)
        return out.float()


class PatchDiscriminator(nn.Module):
    """GRAF's patch critic (official ``Discriminator``): stride-2 4x4 convs with spectral norm and
    instance norm, LeakyReLU 0.2, channels doubling to 8 ndf at 4x4, then a 4x4 conv to one logit.
    The same network judges patches of every scale (it sees K x K images only)."""

    def __init__(self, ndf: int = 64, imsize: int = 32, in_dim: int = 3):
        super().__init__()
        n = int(round(math.log2(imsize))) - 2
        if 2 ** (n + 2) != imsize or n < 1:
            raise ValueError(f"imsize: expected a power of 2 >= 8, got {imsize}")
        sn = nn.utils.parametrizations.spectral_norm
        ch = [in_dim] + [8 * ndf // 2 ** (n - 1 - i) for i in range(n)]
        layers = []
        for i in range(n):
            layers.append(sn(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1, bias=False)))
            if i > 0 or n <= 3:  # official: no norm on the first layer at 64^2 and 128^2
                layers.append(nn.InstanceNorm2d(ch[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(sn(nn.Conv2d(8 * ndf, 1, 4, 1, 0, bias=False)))
        self.main = nn.Sequential(*layers)
        self.imsize = imsize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.imsize or x.shape[-2] != self.imsize:
            raise ValueError(f"x: expected patches of {self.imsize} x {self.imsize}, got {tuple(x.shape)}")
        return self.main(x).reshape(x.shape[0], 1)


def add_coords(x: torch.Tensor) -> torch.Tensor:
    """CoordConv input: x (B, C, H, W) with two channels of x and y pixel coordinates in [-1, 1]."""
    B, _, H, W = x.shape
    ys = torch.linspace(-1, 1, H, dtype=x.dtype, device=x.device).view(1, 1, H, 1).expand(B, 1, H, W)
    xs = torch.linspace(-1, 1, W, dtype=x.dtype, device=x.device).view(1, 1, 1, W).expand(B, 1, H, W)
    return torch.cat([x, xs, ys], 1)


class CoordConv(nn.Conv2d):
    """Conv2d on [x, x-coordinate, y-coordinate] (Liu et al. 2018). The official pi-GAN code puts
    the row coordinate first (its ``AddCoords``): the same network up to the order of the two
    coordinate input channels of the weight."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, **kw):
        super().__init__(in_ch + 2, out_ch, kernel_size, padding=kernel_size // 2, **kw)

    def forward(self, x):
        return super().forward(add_coords(x))


class ResidualCoordConvBlock(nn.Module):
    """Two 3x3 CoordConvs (LeakyReLU 0.2, Kaiming init), 2x average-pool downsampling, residual
    connection (1x1 projection when the width changes), sum scaled by 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool = True):
        super().__init__()
        self.conv1, self.conv2 = CoordConv(in_ch, out_ch), CoordConv(out_ch, out_ch)
        for c in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(c.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        self.proj = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.downsample = downsample

    def forward(self, x):
        y = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)
        if self.downsample:
            y, x = F.avg_pool2d(y, 2), F.avg_pool2d(x, 2)
        if self.proj is not None:
            x = self.proj(x)
        return (y + x) / math.sqrt(2)


class StridedResidualBlock(nn.Module):
    """pi-GAN's strided residual blocks (official ``ResidualCCBlock`` with ``coord=True``,
    ``StridedResidualConvBlock`` without): a 3x3 conv, LeakyReLU 0.2, a stride-2 3x3 conv,
    LeakyReLU 0.2 (both Kaiming-initialised), plus an always-present stride-2 1x1 projection of
    the input; the sum scaled by 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, coord: bool = True):
        super().__init__()
        conv = CoordConv if coord else (lambda i, o, k=3, **kw: nn.Conv2d(i, o, k, padding=k // 2, **kw))
        self.conv1, self.conv2 = conv(in_ch, out_ch), conv(out_ch, out_ch, stride=2)
        for c in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(c.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        self.proj = nn.Conv2d(in_ch, out_ch, 1, stride=2)

    def forward(self, x):
        y = F.leaky_relu(self.conv2(F.leaky_relu(self.conv1(x), 0.2)), 0.2)
        return (y + self.proj(x)) / math.sqrt(2)


class ProgressiveDiscriminator(nn.Module):
    """pi-GAN's progressive residual critic.

    One residual block per resolution from ``max_res`` down to 2 (each halves it), an RGB adapter
    (1x1 conv + LeakyReLU) per resolution and a final 2x2 conv to one logit; widths
    min(d_max, d_base * 512 / r) at resolution r (official: 16 at 512 ... 400 from 32 down). An image
    of size S enters at the adapter of S; while ``alpha`` < 1 the output of the first block is
    blended with the adapter of S/2 applied to the 2x average-pooled image (fade-in of a new
    resolution). ``alpha`` is set by the method per step.

    ``block`` picks the official block of each dataset: ``"avgpool"`` (``ProgressiveDiscriminator``
    / ``ProgressiveEncoderDiscriminator``, CARLA: :class:`ResidualCoordConvBlock`, stride-1
    CoordConvs, 2x average pooling, a 1x1 projection only where the width changes), ``"ccs"``
    (``CCSEncoderDiscriminator``, CelebA: :class:`StridedResidualBlock` with CoordConvs) or
    ``"strided"`` (``StridedDiscriminator``, Cats: plain convs). ``n_out`` outputs: 1 (a logit) or
    1 + z_dim + 2 (the encoder critics: logit, predicted latent, predicted (pitch, yaw)).
    ``fade``: how the image is halved for the fading-in adapter, ``"nearest"`` (official
    ``F.interpolate(scale_factor=0.5, mode="nearest")``) or ``"avg"`` (2x average pooling, runs saved
    before the fix)."""

    def __init__(self, max_res: int = 128, d_base: int = 16, d_max: int = 400, block: str = "avgpool",
                 n_out: int = 1, fade: str = "avg"):
        super().__init__()
        n = int(round(math.log2(max_res)))
        if 2 ** n != max_res or n < 2:
            raise ValueError(f"max_res: expected a power of 2 >= 4, got {max_res}")
        self.resolutions = [2 ** k for k in range(n, 0, -1)]  # max_res, ..., 2
        width = {r: int(min(d_max, max(1, d_base * 512 // r))) for r in self.resolutions}
        if block not in ("avgpool", "ccs", "strided"):
            raise ValueError(f"block: expected avgpool, ccs or strided, got {block!r}")
        if fade not in ("avg", "nearest"):
            raise ValueError(f"fade: expected avg or nearest, got {fade!r}")
        if block == "avgpool":
            self.blocks = nn.ModuleList(ResidualCoordConvBlock(width[r], width[r // 2])
                                        for r in self.resolutions[:-1])
        else:
            self.blocks = nn.ModuleList(StridedResidualBlock(width[r], width[r // 2], coord=block == "ccs")
                                        for r in self.resolutions[:-1])
        self.from_rgb = nn.ModuleList(nn.Conv2d(3, width[r], 1) for r in self.resolutions)
        self.final = nn.Conv2d(width[2], int(n_out), 2)
        self.block, self.n_out, self.fade = block, int(n_out), fade
        self.alpha = 1.0

    def adapter(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.from_rgb[i](x), 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x.shape[-1]
        if res not in self.resolutions[:-1] or x.shape[-2] != res:
            raise ValueError(f"x: expected square images of size {self.resolutions[:-1]}, got {tuple(x.shape)}")
        start = self.resolutions.index(res)
        h = self.adapter(start, x)
        for i, block in enumerate(self.blocks[start:]):
            if i == 1 and self.alpha < 1:
                half = F.avg_pool2d(x, 2) if self.fade == "avg" else x[..., ::2, ::2]
                h = self.alpha * h + (1 - self.alpha) * self.adapter(start + 1, half)
            h = block(h)
        return self.final(h).reshape(x.shape[0], self.n_out)
