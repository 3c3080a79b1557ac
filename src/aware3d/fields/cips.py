"""CIPS-3D networks (Zhou et al. 2021; PAPERS.md card 8): a shallow FiLM-SIREN NeRF that renders
features, and a deep per-pixel network of modulated fully connected layers (CIPS / StyleGAN2).

    ShallowFeatureNerf   pi-GAN's FiLM-SIREN field (:mod:`aware3d.fields.siren`) with a feature head:
                         (points, dirs, z_shape) -> (sigma, features (F)), no sigmoid
    modulated_fc         y = x (W diag(s))^T, rows of W diag(s) demodulated to unit norm
    ModulatedFC          style affine + modulated_fc + bias + LeakyReLU (gain sqrt 2)
    ToRGB                modulated FC to RGB without demodulation
    StyleMapping         z_app -> w (StyleGAN mapping: pixel norm, LeakyReLU MLP)
    CIPSDecoder          per pixel: blocks of two ModulatedFC, a tRGB after each block, RGB = tanh(sum)

The official networks (PeterouZh/CIPS-3D ``GeneratorNerfINR``, ``arch="official"`` in
:mod:`aware3d.methods.cips3d`; weight-transferred against the official modules, BENCHMARKS.md):

    CipsMapping          z -> style: pixel norm, Linear (+ LayerNorm) + LeakyReLU 0.2 layers, the last
                         Linear without activation (+ LayerNorm: ``norm_out``); one style for every layer
    CipsFilmNerf         FiLM-SIREN layers whose frequencies / phases are per-layer linear maps of
                         one shared style (15 g + 30, b), no view directions, a FiLM colour layer
                         of half width and a linear feature head
    style_mod_fc         y = x (W (s + 1)), columns demodulated (the official ``SinStyleMod``, no bias)
    StyleModFC           style_mod_fc with its own style affine
    CipsNetDecoder       per pixel: blocks of two StyleModFC + LeakyReLU 0.2 (a residual sum from
                         block ``skip_from`` on), plain linear tRGBs summed from block ``rgb_from`` on,
                         RGB = tanh(sum); the official builds and runs 9 blocks at every image size
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .siren import FilmSirenField
from ..render.encodings import film_siren, siren_init_

__all__ = ["modulated_fc", "ModulatedFC", "ToRGB", "StyleMapping", "CIPSDecoder", "ShallowFeatureNerf",
           "CipsMapping", "CipsFilmNerf", "style_mod_fc", "StyleModFC", "CipsNetDecoder"]


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


# --------------------------------------------------------------------------------------------------
# The official networks (arch="official")


@torch.no_grad()
def _frequency_init_(linear: nn.Linear, freq: float) -> nn.Linear:
    """W ~ U(-sqrt(6/n)/freq, sqrt(6/n)/freq), n = fan-in (the official ``frequency_init``)."""
    n = linear.weight.shape[-1]
    linear.weight.uniform_(-math.sqrt(6 / n) / freq, math.sqrt(6 / n) / freq)
    return linear


@torch.no_grad()
def _kaiming_leaky_(weight: torch.Tensor) -> torch.Tensor:
    return nn.init.kaiming_normal_(weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")


class CipsMapping(nn.Module):
    """z (B, Z) -> style (B, hidden): pixel norm of z, then ``n_layers`` Linear layers, each but the
    last followed by (LayerNorm with ``layer_norm``) and LeakyReLU 0.2; LayerNorm after the last
    with ``norm_out`` (the official ``MultiHeadMappingNetwork`` with ``head_layers`` 0: every head
    reads the same style). Kaiming-normal weights for LeakyReLU 0.2."""

    def __init__(self, z_dim: int, hidden: int, n_layers: int, layer_norm: bool = False, norm_out: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers: expected >= 1, got {n_layers}")
        layers, d = [], z_dim
        for i in range(n_layers):
            lin = nn.Linear(d, hidden)
            _kaiming_leaky_(lin.weight)
            layers.append(lin)
            if i != n_layers - 1:
                if layer_norm:
                    layers.append(nn.LayerNorm(hidden))
                layers.append(nn.LeakyReLU(0.2))
            d = hidden
        if norm_out:
            layers.append(nn.LayerNorm(hidden))
        self.net = nn.Sequential(*layers)
        self.z_dim, self.out_dim = z_dim, hidden

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8))


class CipsFilmNerf(nn.Module):
    """The official shallow NeRF (``NeRFNetwork`` of ``GeneratorNerfINR``).

    s = CipsMapping(z) (``map_layers`` x ``map_hidden``); for each FiLM layer i (``n_layers`` of width
    ``hidden`` on the points, then the colour layer of width hidden / 2 on h_L):
    freq_i = 15 G_i s + 30, phase_i = P_i s (G_i, P_i linear), h_i = sin(freq_i (W_i h + b_i) + phase_i);
    sigma = w_s . h_L + b_s (raw), features = W_f h_c + b_f (``feat_dim``). Points are scaled by
    ``box_scale`` first (the official ``UniformBoxWarp(0.24)``); view directions are not used.

    ``forward(points, dirs, z | freqs, phases)`` -> ``(sigma (B, P), features (B, P, F))``; ``freqs`` and
    ``phases`` are tuples with one (B, width_i) tensor per FiLM layer (colour last), from
    :meth:`modulation`."""

    def __init__(self, feat_dim: int = 32, z_dim: int = 256, hidden: int = 128, n_layers: int = 2,
                 map_hidden: int = 128, map_layers: int = 4, box_scale: float = 2 / 0.24, in_dim: int = 3,
                 init_w0: float = 25.0):
        super().__init__()
        self.feat_dim, self.z_dim, self.hidden, self.n_layers = feat_dim, z_dim, hidden, n_layers
        self.box_scale = float(box_scale)
        self.mapping = CipsMapping(z_dim, map_hidden, map_layers)
        widths = [hidden] * n_layers + [hidden // 2]
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden)] + [nn.Linear(hidden, hidden) for _ in range(n_layers - 1)])
        self.color_film = nn.Linear(hidden, hidden // 2)
        self.gain = nn.ModuleList(nn.Linear(map_hidden, w) for w in widths)
        self.shift = nn.ModuleList(nn.Linear(map_hidden, w) for w in widths)
        self.sigma_out = nn.Linear(hidden, 1)
        self.color_out = nn.Linear(hidden // 2, feat_dim)
        with torch.no_grad():  # the official initialisation
            for lin in list(self.layers) + [self.color_film]:
                _frequency_init_(lin, init_w0)
            for lin in list(self.gain) + list(self.shift):
                lin.weight.mul_(0.25)
            _kaiming_leaky_(self.color_out.weight)

    def modulation(self, z: torch.Tensor):
        """(freqs, phases): tuples of (B, width_i), one per FiLM layer (colour last)."""
        s = self.mapping(z)
        return tuple(g(s) * 15.0 + 30.0 for g in self.gain), tuple(p(s) for p in self.shift)

    def _mod(self, z, freqs, phases):
        if freqs is None or phases is None:
            if z is None:
                raise ValueError("CipsFilmNerf: pass z or both freqs and phases")
            return self.modulation(z)
        return freqs, phases

    def trunk(self, points: torch.Tensor, freqs, phases) -> torch.Tensor:
        h = points * self.box_scale
        for i, layer in enumerate(self.layers):
            h = film_siren(h, layer.weight, layer.bias, freqs[i], phases[i])
        return h

    def forward(self, points, dirs=None, z=None, *, freqs=None, phases=None):
        freqs, phases = self._mod(z, freqs, phases)
        h = self.trunk(points, freqs, phases)
        sigma = self.sigma_out(h).squeeze(-1)
        c = film_siren(h, self.color_film.weight, self.color_film.bias, freqs[-1], phases[-1])
        return sigma, self.color_out(c)

    def density(self, points: torch.Tensor, z: torch.Tensor | None = None, *, freqs=None, phases=None) -> torch.Tensor:
        """Raw density (B, P) only (mesh extraction)."""
        freqs, phases = self._mod(z, freqs, phases)
        return self.sigma_out(self.trunk(points, freqs, phases)).squeeze(-1)


def style_mod_fc(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The official ``SinStyleMod`` (bmm form): W'_{b,i,o} = W_{i,o} (s_{b,i} + 1), each output column
    divided by sqrt(sum_i W'^2_{b,i,o} + eps); y = x W'. x (B, N, in), weight (in, out), style
    (B, in) -> (B, N, out). No bias."""
    w = weight.unsqueeze(0) * (style.unsqueeze(-1) + 1.0)                  # (B, in, out)
    w = w * torch.rsqrt(w.pow(2).sum(1, keepdim=True) + eps)
    return torch.bmm(x, w)


class StyleModFC(nn.Module):
    """s = A w (a linear map of the style), y = :func:`style_mod_fc` (x, W, s). W (in, out) and A are
    Kaiming-normal for LeakyReLU 0.2 as in the official code."""

    def __init__(self, in_dim: int, out_dim: int, w_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        _kaiming_leaky_(self.weight)
        self.affine = nn.Linear(w_dim, in_dim)
        _kaiming_leaky_(self.affine.weight)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return style_mod_fc(x, self.weight, self.affine(w))


class CipsNetDecoder(nn.Module):
    """The official per-pixel network (``CIPSNet``): features (B, N, F) and style w (B, W) -> RGB
    (B, N, 3) in [-1, 1].

    ``n_blocks`` blocks, each h <- lrelu(StyleModFC(lrelu(StyleModFC(h)))) (slope 0.2, no gain), plus
    the block's input from block ``skip_from`` on (same width); from block ``rgb_from`` on a linear
    tRGB of h is added to the RGB sum; RGB = tanh(sum). The official builds 9 blocks (one per
    octave 4..1024) and runs all of them at every image size, tRGBs from block 3 and residual sums
    from block 4 (its unused tRGBs of blocks 0-2 are not built here)."""

    def __init__(self, in_dim: int, hidden: int = 512, n_blocks: int = 9, w_dim: int = 512,
                 rgb_from: int = 3, skip_from: int = 4):
        super().__init__()
        if not 0 <= rgb_from < n_blocks:
            raise ValueError(f"rgb_from: expected in [0, {n_blocks}), got {rgb_from}")
        self.rgb_from, self.skip_from = rgb_from, skip_from
        self.blocks = nn.ModuleList()
        d = in_dim
        for _ in range(n_blocks):
            self.blocks.append(nn.ModuleList([StyleModFC(d, hidden, w_dim), StyleModFC(hidden, hidden, w_dim)]))
            d = hidden
        self.to_rgb = nn.ModuleList(nn.Linear(hidden, 3) for _ in range(n_blocks - rgb_from))
        for lin in self.to_rgb:
            _frequency_init_(lin, 100.0)

    def forward(self, features: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h, rgb = features, 0.0
        for i, (fc1, fc2) in enumerate(self.blocks):
            out = F.leaky_relu(fc2(F.leaky_relu(fc1(h, w), 0.2), w), 0.2)
            h = out + h if i >= self.skip_from and out.shape[-1] == h.shape[-1] else out
            if i >= self.rgb_from:
                rgb = rgb + self.to_rgb[i - self.rgb_from](h)
        return torch.tanh(rgb)
