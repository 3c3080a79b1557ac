"""CIPS-3D networks (Zhou et al. 2021; PAPERS.md card 8): a shallow FiLM-SIREN NeRF that renders
features, and a deep per-pixel network of modulated fully connected layers (CIPS / StyleGAN2).

    ShallowFeatureNerf   pi-GAN's FiLM-SIREN field (:mod:`aware3d.fields.siren`) with a feature head:
                         (points, dirs, z_shape) -> (sigma, features (F)), no sigmoid
    modulated_fc         y = x (W diag(s))^T, rows of W diag(s) demodulated to unit norm
    ModulatedFC          style affine + modulated_fc + bias + LeakyReLU (gain sqrt 2)
    ToRGB                modulated FC to RGB without demodulation
    StyleMapping         z_app -> w (StyleGAN mapping: pixel norm, LeakyReLU MLP)
    CIPSDecoder          per pixel: blocks of two ModulatedFC, a tRGB after each block, RGB = tanh(sum)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .siren import FilmSirenField
from ..render.encodings import film_siren, siren_init_

__all__ = ["modulated_fc", "ModulatedFC", "ToRGB", "StyleMapping", "CIPSDecoder", "ShallowFeatureNerf"]


# --------------------------------------------------------------------------------------------------
# Modulated fully connected layers (StyleGAN2 eq. 1-3, as CIPS uses them per pixel)


def modulated_fc(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, demodulate: bool = True,
                 eps: float = 1e-8) -> torch.Tensor:
    """Per-sample modulated linear map.

    x (B, N, in), weight (out, in), style (B, in). w'_{b,o,i} = s_{b,i} w_{o,i}; with
    ``demodulate`` w''_{b,o,i} = w'_{b,o,i} / sqrt(sum_i w'^2_{b,o,i} + eps) (StyleGAN2 eq. 3), so
    that unit-variance independent inputs give unit-variance outputs. Returns (B, N, out)."""
    if x.dim() != 3 or x.shape[-1] != weight.shape[1] or style.shape != (x.shape[0], weight.shape[1]):
        raise ValueError(f"modulated_fc: expected x (B, N, {weight.shape[1]}) and style "
                         f"(B, {weight.shape[1]}), got {tuple(x.shape)} and {tuple(style.shape)}")
    w = weight.unsqueeze(0) * style.unsqueeze(1)                      # (B, out, in)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(-1, keepdim=True) + eps)
    return torch.bmm(x, w.transpose(1, 2))


class ModulatedFC(nn.Module):
    """s = A w (bias 1: starts as identity modulation), y = lrelu(modulated_fc(x, W, s) + b) * sqrt 2.

    W ~ N(0, 1) scaled by 1/sqrt(in) at run time (equalised learning rate, StyleGAN2)."""

    def __init__(self, in_dim: int, out_dim: int, w_dim: int, demodulate: bool = True, activation: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.affine = nn.Linear(w_dim, in_dim)
        nn.init.ones_(self.affine.bias)
        self.demodulate, self.activation = demodulate, activation
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = modulated_fc(x, self.weight * self.scale, self.affine(w), self.demodulate) + self.bias
        return F.leaky_relu(y, 0.2) * math.sqrt(2.0) if self.activation else y


class ToRGB(nn.Module):
    """Modulated FC to RGB without demodulation or activation (StyleGAN2's tRGB)."""

    def __init__(self, in_dim: int, w_dim: int, out_dim: int = 3):
        super().__init__()
        self.fc = ModulatedFC(in_dim, out_dim, w_dim, demodulate=False, activation=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.fc(x, w)


class StyleMapping(nn.Module):
    """z (B, Z) -> w (B, W): pixel norm of z, then ``n_layers`` linear + LeakyReLU 0.2."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 8):
        super().__init__()
        layers, d = [], z_dim
        for _ in range(n_layers):
            layers += [nn.Linear(d, w_dim), nn.LeakyReLU(0.2)]
            d = w_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8)
        return self.net(z)


class CIPSDecoder(nn.Module):
    """Per-pixel decoder: features (B, N, F) and a style w (B, W) -> RGB (B, N, 3) in [-1, 1].

    ``n_blocks`` blocks of two :class:`ModulatedFC` (width ``hidden``), a :class:`ToRGB` after
    each block; the tRGB outputs are summed across blocks and squashed by tanh."""

    def __init__(self, in_dim: int, hidden: int = 512, n_blocks: int = 5, w_dim: int = 512):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.to_rgb = nn.ModuleList()
        d = in_dim
        for _ in range(n_blocks):
            self.blocks.append(nn.ModuleList([ModulatedFC(d, hidden, w_dim), ModulatedFC(hidden, hidden, w_dim)]))
            self.to_rgb.append(ToRGB(hidden, w_dim))
            d = hidden

    def forward(self, features: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h, rgb = features, 0.0
        for (fc1, fc2), trgb in zip(self.blocks, self.to_rgb):
            h = fc2(fc1(h, w), w)
            rgb = rgb + trgb(h, w)
        return torch.tanh(rgb)


# --------------------------------------------------------------------------------------------------
# Shallow NeRF


class ShallowFeatureNerf(FilmSirenField):
    """pi-GAN's FiLM-SIREN field, shallow (CIPS-3D: 2 layers of 128), whose colour head outputs
    ``feat_dim`` features (linear, no sigmoid) for the 2D decoder instead of RGB.

    ``forward(points, dirs, z | freqs, phases)`` -> ``(sigma (B, P) raw, features (B, P, F))``."""

    def __init__(self, feat_dim: int = 32, **kw):
        super().__init__(**kw)
        self.feat_dim = feat_dim
        self.color_out = nn.Linear(self.hidden, feat_dim)
        siren_init_(self.color_out.weight, w0=self.init_w0)

    def forward(self, points, dirs, z=None, *, freqs=None, phases=None):
        freqs, phases = self._mod(z, freqs, phases)
        h = self.trunk(points, freqs, phases)
        sigma = self.sigma_out(h).squeeze(-1)
        c = film_siren(torch.cat([dirs, h], -1), self.color_film.weight, self.color_film.bias,
                       freqs[:, -1], phases[:, -1])
        return sigma, self.color_out(c)
