"""VolumeGAN's 3D half (Xu et al. 2022, PAPERS.md card 11): the structural feature volume and the
textural field that reads it.

    ModulatedConv3d       StyleGAN2 weight modulation / demodulation of a 3D convolution (the
                          ``modconv`` volume layer; :func:`modulated_conv3d` is the functional form)
    FeatureVolume         a learnt constant (C, r0, r0, r0) grown to (C_out, R, R, R) by stages of
                          [nearest x2 upsample], 3^3 conv, style injection, LeakyReLU 0.2. Style
                          injection ``adain`` (the official code): instance norm, then a per-channel
                          scale and shift from one linear map of w; ``modconv``: ModulatedConv3d
    volume_lookup         trilinear lookup of per-point features in the volume (align_corners=True,
                          clamped at the border: the official ``grid_sample_3d``), written with
                          gathers so that it is twice differentiable (grid_sample's 3D double
                          backward is not available, and a path-length penalty needs it)
    VolumeField           per sample: [volume features(x), gamma(x)] -> modulated FC layers (StyleGAN2
                          modulation / demodulation, one w per layer; the official "FiLM-style"
                          MLP is ModulateConvLayer with 1x1 kernels) -> density (1) and features (F)

Layer sizes of the paper preset follow genforce/volumegan ``volumegan_ffhq_config``: volume 4^3 x 256
-> 32^3 x 32 (channels 256, 128, 64, 32), gamma with 10 octaves and the input (63), 4 layers of
width 256, features 512.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.encodings import positional_encoding, positional_encoding_dim
from .cips import ModulatedFC

__all__ = ["modulated_conv3d", "ModulatedConv3d", "FeatureVolume", "volume_lookup", "to_grid_coords",
           "EqualLinear", "VolumeField"]


# --------------------------------------------------------------------------------------------------
# Modulated 3D convolution


def modulated_conv3d(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, demodulate: bool = True,
                     padding: int | None = None, eps: float = 1e-8) -> torch.Tensor:
    """x (B, I, D, H, W), weight (O, I, k, k, k), style (B, I).

    w'_{b,o,i,...} = s_{b,i} w_{o,i,...}; with ``demodulate`` w'' = w' / sqrt(sum_{i,...} w'^2 + eps)
    (StyleGAN2 eq. 3 in 3D). One grouped convolution over the batch; ``padding`` default k // 2.
    Returns (B, O, D', H', W')."""
    B, I = x.shape[:2]
    O, k = weight.shape[0], weight.shape[-1]
    if weight.shape[1] != I or style.shape != (B, I):
        raise ValueError(f"modulated_conv3d: expected weight (O, {I}, k, k, k) and style ({B}, {I}), got "
                         f"{tuple(weight.shape)} and {tuple(style.shape)}")
    w = weight.unsqueeze(0) * style.reshape(B, 1, I, 1, 1, 1)                  # (B, O, I, k, k, k)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum((2, 3, 4, 5), keepdim=True) + eps)
    y = F.conv3d(x.reshape(1, B * I, *x.shape[2:]), w.reshape(B * O, I, k, k, k),
                 padding=k // 2 if padding is None else padding, groups=B)
    return y.reshape(B, O, *y.shape[2:])


class ModulatedConv3d(nn.Module):
    """s = A w (bias 1: starts as the identity modulation), y = modulated_conv3d(x, W, s) + b.

    W ~ N(0, 1) scaled by 1 / sqrt(I k^3) at run time (equalised learning rate)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.affine = nn.Linear(w_dim, in_ch)
        nn.init.ones_(self.affine.bias)
        self.demodulate = demodulate
        self.scale = 1.0 / math.sqrt(in_ch * kernel ** 3)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        y = modulated_conv3d(x, self.weight * self.scale, self.affine(w), self.demodulate)
        return y + self.bias.reshape(1, -1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------
# Structural feature volume


def _instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Official InstanceNormLayer: (x - mean) / sqrt(mean((x - mean)^2) + eps) over (D, H, W)."""
    x = x - x.mean((2, 3, 4), keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean((2, 3, 4), keepdim=True) + eps)


class FeatureVolume(nn.Module):
    """w (B, w_dim) -> feature volume (B, out_channels, R, R, R), R = ``feat_res``.

    Stages: log2(R / r0) + 1; widths ``base_channels`` halved per stage (not below
    ``out_channels``), the last stage ``out_channels``; the constant starts at ones (official)."""

    def __init__(self, w_dim: int, feat_res: int = 32, init_res: int = 4, base_channels: int = 256,
                 out_channels: int = 32, layer: str = "adain"):
        super().__init__()
        if layer not in ("adain", "modconv"):
            raise ValueError(f"volume layer: expected 'adain' or 'modconv', got {layer!r}")
        n = int(round(math.log2(feat_res // init_res))) + 1
        if init_res * 2 ** (n - 1) != feat_res:
            raise ValueError(f"feat_res {feat_res} must be init_res {init_res} times a power of two")
        self.layer, self.feat_res, self.out_channels = layer, feat_res, out_channels
        self.const = nn.Parameter(torch.ones(1, base_channels, init_res, init_res, init_res))
        chans, c_in, c_out = [], base_channels, base_channels
        self.convs = nn.ModuleList()
        for i in range(n):
            if i == n - 1:
                c_out = out_channels
            if layer == "adain":
                self.convs.append(nn.Conv3d(c_in, c_out, 3, padding=1))   # PyTorch default init (official)
            else:
                self.convs.append(ModulatedConv3d(c_in, c_out, 3, w_dim))
            chans.append(c_out)
            c_in, c_out = c_out, max(c_out // 2, out_channels)
        self.channels = tuple(chans)
        if layer == "adain":
            # one linear map of w to every stage's (scale, shift); kaiming (a=0.2) x 0.25 as official
            self.style = nn.Linear(w_dim, 2 * sum(chans))
            nn.init.kaiming_normal_(self.style.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
            with torch.no_grad():
                self.style.weight.mul_(0.25)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.const.expand(w.shape[0], -1, -1, -1, -1)
        if self.layer == "adain":
            ss = self.style(w)
            scales, shifts = ss[:, :ss.shape[1] // 2], ss[:, ss.shape[1] // 2:]
        a = 0
        for i, conv in enumerate(self.convs):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            if self.layer == "adain":
                c = self.channels[i]
                x = _instance_norm(conv(x))
                x = x * scales[:, a:a + c, None, None, None] + shifts[:, a:a + c, None, None, None]
                a += c
            else:
                x = conv(x, w)
            x = F.leaky_relu(x, 0.2)
        return x


def to_grid_coords(points: torch.Tensor, bounds) -> torch.Tensor:
    """World points (..., 3) -> [-1, 1]^3 over the box ``bounds`` ((lo_x, lo_y, lo_z), (hi_x, hi_y, hi_z)):
    the official ``get_grid_coords``."""
    b = torch.as_tensor(bounds, dtype=points.dtype, device=points.device)
    return (points - b[0]) / (b[1] - b[0]) * 2 - 1


def volume_lookup(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear features (B, P, C) of volume (B, C, D, H, W) at coords (B, P, 3) in [-1, 1]
    (x indexes W, y H, z D), corners aligned (-1, 1 are the centres of the first and last voxels)
    and indices clamped at the border: ``F.grid_sample(..., align_corners=True,
    padding_mode="border")``, but twice differentiable (gathers only)."""
    B, C, D, H, W = volume.shape
    size = torch.tensor([W, H, D], dtype=coords.dtype, device=coords.device)
    # border padding: clamping the continuous position equals clamping the corner indices
    pos = ((coords + 1) * 0.5 * (size - 1)).clamp(min=torch.zeros_like(size), max=size - 1)
    p0 = pos.detach().floor()
    p0 = torch.minimum(p0, (size - 2).clamp_min(0))           # keep p0 + 1 inside (frac 1 at the far edge)
    f = pos - p0                                              # (B, P, 3), differentiable in coords
    i0 = p0.long()
    i1 = torch.minimum(i0 + 1, (size - 1).long())
    flat = volume.reshape(B, C, D * H * W).transpose(1, 2)   # (B, DHW, C)
    out = 0
    for dz in (0, 1):
        z, wz = (i1[..., 2], f[..., 2]) if dz else (i0[..., 2], 1 - f[..., 2])
        for dy in (0, 1):
            y, wy = (i1[..., 1], f[..., 1]) if dy else (i0[..., 1], 1 - f[..., 1])
            for dx in (0, 1):
                x, wx = (i1[..., 0], f[..., 0]) if dx else (i0[..., 0], 1 - f[..., 0])
                idx = (z * H + y) * W + x                      # (B, P)
                v = flat.gather(1, idx.unsqueeze(-1).expand(-1, -1, C))
                out = out + v * (wx * wy * wz).unsqueeze(-1)
    return out


# --------------------------------------------------------------------------------------------------
# Textural field


class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate (official ``DenseLayer``, use_wscale): W ~ N(0, 1)
    times 1 / sqrt(in) at run time, bias 0."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class VolumeField(nn.Module):
    """The generative feature field: ``forward(points (B, M, 3), ws (B, L, w_dim), volume)`` ->
    (raw density (B, M), features (B, M, F)); ws[:, 0] also styles the volume, ws[:, i] the i-th
    MLP layer (``n_layers`` of them)."""

    def __init__(self, w_dim: int = 512, feat_res: int = 32, init_res: int = 4, base_channels: int = 256,
                 volume_channels: int = 32, n_freqs: int = 10, hidden: int = 256, n_layers: int = 4,
                 feat_dim: int = 512, bounds=((-0.19, -0.19, -0.19), (0.19, 0.19, 0.19)),
                 volume_layer: str = "adain"):
        super().__init__()
        self.volume = FeatureVolume(w_dim, feat_res, init_res, base_channels, volume_channels, volume_layer)
        self.n_freqs, self.n_layers, self.feat_dim = n_freqs, n_layers, feat_dim
        self.bounds = tuple(tuple(float(v) for v in b) for b in bounds)
        d = volume_channels + positional_encoding_dim(3, n_freqs, include_input=True)
        self.mlp = nn.ModuleList()
        for _ in range(n_layers):
            self.mlp.append(ModulatedFC(d, hidden, w_dim))
            d = hidden
        self.density_out = EqualLinear(hidden, 1)
        self.feature_out = EqualLinear(hidden, feat_dim)

    @staticmethod
    def _layer_w(ws: torch.Tensor, i: int) -> torch.Tensor:
        return ws[:, i] if ws.dim() == 3 else ws

    def make_volume(self, ws: torch.Tensor) -> torch.Tensor:
        """The feature volume (B, C, R, R, R) of styles ws (B, L, w_dim) or (B, w_dim)."""
        return self.volume(self._layer_w(ws, 0))

    def forward(self, points: torch.Tensor, ws: torch.Tensor, volume: torch.Tensor | None = None):
        if volume is None:
            volume = self.make_volume(ws)
        vf = volume_lookup(volume, to_grid_coords(points, self.bounds))
        h = torch.cat([vf, positional_encoding(points, self.n_freqs, include_input=True)], -1)
        for i, layer in enumerate(self.mlp):
            h = layer(h, self._layer_w(ws, i))
        return self.density_out(h).squeeze(-1), self.feature_out(h)

    def density(self, points: torch.Tensor, ws: torch.Tensor, volume: torch.Tensor | None = None):
        """Raw density (B, M) at world points (B, M, 3)."""
        return self.forward(points, ws, volume)[0]
