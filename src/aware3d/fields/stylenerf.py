"""StyleNeRF networks (Gu et al., ICLR 2022; PAPERS.md card 10), built from the StyleGAN2 blocks of
:mod:`aware3d.nets.stylegan2`.

    ForegroundField      style-modulated NeRF MLP: points -> (sigma, [rgb (3), features (F)]); every
                         layer a modulated 1x1 conv (StyleGAN2 synthesis layer without noise); one w
                         per layer: fc_in, n_blocks - 1 hidden, sigma head, feature head
    BackgroundField      NeRF++ inverse-sphere background: (x / |x|, 1 / |x|) encoded, concatenated
                         with its own code z_bg, a plain ReLU MLP (no styles, as the official config)
    render_scene         foreground samples in [near, far] (stratified + hierarchical), background
                         samples beyond ``far`` uniform in inverse depth, composited:
                         C = C_fg + (1 - opacity_fg) C_bg
    render_scene_official  the official renderer (z-depth samples including near and far,
                         hierarchical samples from the inner weights, NeRF++ inverse-sphere
                         background from radius 1 / bg_start outwards, training density noise)
    learned_upsample     the paper's upsampler: nearest(x) + pixel_shuffle(1x1 convs(x)), then a
                         [1, 3, 3, 1] blur ("pixelshuffle"); "nn_cat" is the official release's
                         variant (neighbour averages concatenated, 1x1 convs, blur)
    StyleLayer2D         modulated k x k conv (+ learned 2x upsampling) + bias + leaky ReLU, with the
                         official input magnitude normalisation (EMA of the mean square)
    Upsampler            StyleGAN2 'skip' synthesis blocks from the NeRF resolution to the image
                         resolution; ``skip_up`` runs the same layers without upsampling (the NeRF path)
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nets import stylegan2 as sg
from ..render.encodings import positional_encoding
from ..render.samplers import points_along_rays, sample_pdf, stratified_samples
from ..render.volume import render_weights, volume_render

__all__ = ["BackgroundField", "ForegroundField", "StyleLayer2D", "SynthesisBlock", "Upsampler", "learned_upsample",
           "points_conv", "render_scene", "render_scene_official", "sphere_outside_points"]


def points_conv(layer: nn.Module, x: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """A 1x1 (modulated) conv layer applied to point features x (B, P, C) -> (B, P, C')."""
    y = x.transpose(1, 2).unsqueeze(-1)
    y = layer(y, w) if w is not None else layer(y)
    return y.squeeze(-1).transpose(1, 2)


class ForegroundField(nn.Module):
    """The foreground radiance field: PE(x) (L = ``n_freq``, no raw input; sin / cos(2^k ``pe_scale``
    x), the official encoding has pe_scale pi) -> modulated 1x1 layers (leaky ReLU) -> sigma
    (modulated, no demodulation) and features (F), RGB = 1x1 conv of the features.
    ``forward(points (B, P, 3), ws (B, num_ws, w_dim))`` -> (sigma (B, P), values (B, P, 3 + F)):
    RGB first."""

    def __init__(self, w_dim: int, hidden: int = 128, n_blocks: int = 8, feat_dim: int = 256, n_freq: int = 10,
                 pe_scale: float = 1.0):
        super().__init__()
        self.n_freq, self.pe_scale = n_freq, float(pe_scale)
        d_in = 3 * 2 * n_freq
        self.fc_in = sg.ModulatedConv2d(d_in, hidden, 1, w_dim)
        self.blocks = nn.ModuleList(sg.ModulatedConv2d(hidden, hidden, 1, w_dim) for _ in range(n_blocks - 1))
        self.sigma_out = sg.ToRGB(hidden, 1, w_dim)
        self.feat_out = sg.ToRGB(hidden, feat_dim, w_dim)
        self.to_rgb = sg.Conv2dLayer(feat_dim, 3, 1)
        self.num_ws = n_blocks + 2

    def forward(self, p: torch.Tensor, ws: torch.Tensor):
        h = positional_encoding(p, self.n_freq, scale=self.pe_scale)
        h = points_conv(self.fc_in, h, ws[:, 0])
        for i, layer in enumerate(self.blocks):
            h = points_conv(layer, h, ws[:, i + 1])
        sigma = points_conv(self.sigma_out, h, ws[:, len(self.blocks) + 1])[..., 0]
        feat = points_conv(self.feat_out, h, ws[:, -1])
        rgb = points_conv(self.to_rgb, feat)
        return sigma, torch.cat([rgb, feat], -1)


class BackgroundField(nn.Module):
    """NeRF++ background: x outside the sphere -> (x / |x|, 1 / |x|), PE (L = ``n_freq``) with the
    code z_bg concatenated, ReLU MLP (``n_blocks`` layers of ``hidden``), linear sigma and feature
    heads, RGB = 1x1 conv of the features. Output as :class:`ForegroundField` (``pe_scale`` too)."""

    def __init__(self, z_dim: int = 32, hidden: int = 64, n_blocks: int = 4, feat_dim: int = 256, n_freq: int = 10,
                 pe_scale: float = 1.0):
        super().__init__()
        self.n_freq, self.pe_scale = n_freq, float(pe_scale)
        d_in = 4 * 2 * n_freq + z_dim
        self.fc_in = nn.Linear(d_in, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_blocks - 1))
        self.sigma_out = nn.Linear(hidden, 1)
        self.feat_out = nn.Linear(hidden, feat_dim)
        self.to_rgb = sg.Conv2dLayer(feat_dim, 3, 1)

    def forward(self, p: torch.Tensor, z_bg: torch.Tensor):
        """p (B, P, 3) world points, or (B, P, 4) already (unit direction, inverse radius)."""
        if p.shape[-1] == 4:
            q = p
        else:
            r = p.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            q = torch.cat([p / r, 1.0 / r], -1)
        h = torch.cat([positional_encoding(q, self.n_freq, scale=self.pe_scale), z_bg[:, None].expand(-1, p.shape[1], -1)], -1)
        h = F.relu(self.fc_in(h))
        for layer in self.blocks:
            h = F.relu(layer(h))
        sigma = self.sigma_out(h)[..., 0]
        feat = self.feat_out(h)
        return sigma, torch.cat([points_conv(self.to_rgb, feat), feat], -1)


def render_scene(fg_fn, bg_fn, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float,
                 n_samples: int, n_importance: int, n_bg: int, perturb: bool = False) -> dict:
    """Volume rendering of a foreground field on [near, far] and a background beyond ``far``.

    Rays (B, R, 3); ``fg_fn(points (B, M, 3))`` and ``bg_fn(points)`` -> (sigma raw (B, M), values
    (B, M, C)). Foreground: ``n_samples`` stratified + ``n_importance`` inverse-CDF samples, the last
    interval ending at ``far`` (so the background shows through). Background: ``n_bg`` samples
    uniform in inverse depth on (0, 1 / far]. Returns ``{"values" (B, R, C), "depth" (B, R),
    "opacity" (B, R)}`` (depth and opacity of the foreground)."""
    B, R = rays_o.shape[:2]
    kw = dict(dtype=rays_o.dtype, device=rays_o.device)

    def evaluate(fn, t):
        N = t.shape[-1]
        s, v = fn(points_along_rays(rays_o, rays_d, t).reshape(B, R * N, 3))
        return s.float().reshape(B, R, N), v.float().reshape(B, R, N, -1)

    def deltas(t, end):
        return torch.cat([t[..., 1:] - t[..., :-1], (end - t[..., -1:]).clamp_min(1e-4)], -1)

    t, bins = stratified_samples(near, far, n_samples, batch_shape=(B, R), perturb=perturb, **kw)
    sigma, values = evaluate(fg_fn, t)
    if n_importance > 0:
        with torch.no_grad():
            w = render_weights(sigma, deltas=deltas(t, far))[0]
        t_f = sample_pdf(bins, w, n_importance, deterministic=not perturb)
        s_f, v_f = evaluate(fg_fn, t_f)
        t, order = torch.sort(torch.cat([t, t_f], -1), -1)
        sigma = torch.gather(torch.cat([sigma, s_f], -1), -1, order)
        v = torch.cat([values, v_f], -2)
        values = torch.gather(v, -2, order.unsqueeze(-1).expand(*order.shape, v.shape[-1]))
    background = None
    if bg_fn is not None and n_bg > 0:
        u = (torch.arange(n_bg, **kw) + (torch.rand(B, R, n_bg, **kw) if perturb else 0.5)) / n_bg
        u = u.expand(B, R, n_bg)
        s = (1.0 - u) / far                                       # inverse depth, far -> 0 (far first)
        t_bg = 1.0 / s.clamp_min(1e-3 / far)
        sb, vb = evaluate(bg_fn, t_bg)
        background = volume_render(sb, vb, t_bg)["color"]         # last interval to infinity
    out = volume_render(sigma, values, t, deltas=deltas(t, far), background=background)
    return {"values": out["color"], "depth": out["depth"], "opacity": out["opacity"]}


def _interval_jitter(s: torch.Tensor) -> torch.Tensor:
    """One uniform draw per sample between the midpoints to its neighbours (the first from s_0, the
    last up to s_N-1), as the official ``add_noise_to_interval``."""
    mid = 0.5 * (s[..., 1:] + s[..., :-1])
    hi, lo = torch.cat([mid, s[..., -1:]], -1), torch.cat([s[..., :1], mid], -1)
    return lo + (hi - lo) * torch.rand_like(lo)


def _pdf_samples(bins: torch.Tensor, weights: torch.Tensor, n: int, det: bool, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples as the official ``sample_pdf``: weights + eps, left searchsorted, bins
    whose CDF step is below eps count as width 1. bins (..., M + 1), weights (..., M)."""
    w = weights + eps
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    shape = (*cdf.shape[:-1], n)
    u = torch.linspace(0, 1, n, dtype=bins.dtype, device=bins.device).expand(shape) if det else \
        torch.rand(shape, dtype=bins.dtype, device=bins.device)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous())
    below, above = (idx - 1).clamp_min(0), idx.clamp_max(weights.shape[-1])
    c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
    b0, b1 = bins.gather(-1, below), bins.gather(-1, above)
    denom = torch.where(c1 - c0 < eps, torch.ones_like(c0), c1 - c0)
    return b0 + (u - c0) / denom * (b1 - b0)


def _weights_official(sigma: torch.Tensor, dists: torch.Tensor, last_opaque: bool):
    """alpha = 1 - exp(-relu(sigma) dist) (the last sample fully opaque with ``last_opaque``),
    T_i = prod_{j<i} (1 - alpha_j + 1e-10); returns (weights, T after the last sample but one x
    (1 - alpha_last): the transmittance left for the background)."""
    alpha = 1.0 - torch.exp(-F.relu(sigma) * dists)
    if last_opaque:
        alpha = torch.cat([alpha[..., :-1], torch.ones_like(alpha[..., -1:])], -1)
    T = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], -1), -1)[..., :-1]
    return alpha * T, T[..., -1]


def sphere_outside_points(rays_o: torch.Tensor, rays_d: torch.Tensor, inv_r: torch.Tensor) -> torch.Tensor:
    """NeRF++'s inverse-sphere points: for rays starting inside the unit sphere (unit ``rays_d``
    (..., 3)) the point where the ray meets the sphere of radius 1 / ``inv_r`` (..., N), as (unit
    direction of the point, inv_r) (..., N, 4); inv_r = 0 is the ray's direction at infinity."""
    o, d = rays_o.unsqueeze(-2).expand(*inv_r.shape, 3), rays_d.unsqueeze(-2).expand(*inv_r.shape, 3)
    d1 = -(d * o).sum(-1) / (d * d).sum(-1)
    p_mid = o + d1.unsqueeze(-1) * d
    m = p_mid.norm(dim=-1)
    d2 = torch.sqrt(1.0 - m * m) / d.norm(dim=-1)
    p_sphere = o + (d1 + d2).unsqueeze(-1) * d
    axis = F.normalize(torch.cross(o, p_sphere, dim=-1), dim=-1)
    angle = (torch.asin(m) - torch.asin(m * inv_r)).unsqueeze(-1)
    p = p_sphere * torch.cos(angle) + torch.cross(axis, p_sphere, dim=-1) * torch.sin(angle) + \
        axis * (axis * p_sphere).sum(-1, keepdim=True) * (1.0 - torch.cos(angle))
    return torch.cat([F.normalize(p, dim=-1), inv_r.unsqueeze(-1)], -1)


def render_scene_official(fg_fn, bg_fn, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float,
                          n_samples: int, hierarchical: bool, n_bg: int, bg_start: float = 0.5,
                          perturb: bool = False, sigma_noise: bool = False, return_samples: bool = False) -> dict:
    """StyleNeRF's official volume renderer (``renderer: official``).

    ``rays_d`` (B, R, 3) at camera depth 1 (the camera-frame direction (x, y, -1)): samples are
    z-depths. Foreground: ``n_samples`` depths evenly spaced on [near, far] including both ends
    (``perturb``: jittered between midpoints), with ``hierarchical`` as many again drawn from the
    weights of the inner samples over the coarse midpoints (evenly spaced CDF levels unless
    ``perturb``), merged and sorted; intervals z-depth steps x |rays_d|, the last 0 (with a
    background; without one the last sample is opaque). Background (``bg_fn`` of (direction,
    inverse radius) (B, M, 4)): ``n_bg`` inverse radii from ``bg_start`` down to 0 (jittered with
    ``perturb``), intervals in inverse radius, the last opaque, added x the foreground's remaining
    transmittance. ``sigma_noise``: N(0, 1) added to the raw densities (the official training).
    Returns ``{"values", "depth" (distance along the unit ray), "opacity"}``; with ``return_samples``
    also every sample's values (B, R, S, C) and compositing weight (B, R, S) (foreground samples in
    depth order, then the background's with the foreground's remaining transmittance folded in):
    ``"sample_values"``, ``"sample_weights"`` (values = sum of weights x sample values)."""
    B, R = rays_o.shape[:2]
    kw = {"dtype": rays_o.dtype, "device": rays_o.device}
    norm = rays_d.norm(dim=-1, keepdim=True)

    def evaluate(fn, pts):
        N = pts.shape[-2]
        sg_, v = fn(pts.reshape(B, R * N, pts.shape[-1]))
        sg_ = sg_.float().reshape(B, R, N)
        return (sg_ + torch.randn_like(sg_) if sigma_noise else sg_), v.float().reshape(B, R, N, -1)

    def z_of(s):
        return near * (1 - s) + far * s

    last_opaque = bg_fn is None or n_bg <= 0

    def composite(s, sigma):     # (z, weights, the transmittance left for the background)
        z = z_of(s)
        dists = torch.cat([z[..., 1:] - z[..., :-1], torch.full_like(z[..., :1], 1e10 if last_opaque else 0.0)], -1)
        return (z, *_weights_official(sigma, dists * norm, last_opaque))

    s = torch.linspace(0.0, 1.0, n_samples, **kw).expand(B, R, n_samples)
    if perturb:
        s = _interval_jitter(s)
    sigma, values = evaluate(fg_fn, points_along_rays(rays_o, rays_d, z_of(s)))
    z, w, T_bg = composite(s, sigma)
    if hierarchical:
        with torch.no_grad():
            s_f = _pdf_samples(0.5 * (s[..., 1:] + s[..., :-1]), w[..., 1:-1], n_samples, det=not perturb)
        sf, vf = evaluate(fg_fn, points_along_rays(rays_o, rays_d, z_of(s_f)))
        s, order = torch.sort(torch.cat([s_f, s], -1), -1)
        sigma = torch.gather(torch.cat([sf, sigma], -1), -1, order)
        v = torch.cat([vf, values], -2)
        values = torch.gather(v, -2, order.unsqueeze(-1).expand(*order.shape, v.shape[-1]))
        z, w, T_bg = composite(s, sigma)
    color = (w.unsqueeze(-1) * values).sum(-2)
    s_vals, s_w = [values], [w]
    if not last_opaque:
        u = torch.linspace(-1.0, 0.0, n_bg, **kw).expand(B, R, n_bg) * bg_start
        if perturb:
            u = _interval_jitter(u)
        sb, vb = evaluate(bg_fn, sphere_outside_points(rays_o, rays_d / norm, -u))
        db = torch.cat([u[..., 1:] - u[..., :-1], torch.full_like(u[..., :1], 1e10)], -1)
        wb = _weights_official(sb, db, True)[0]
        color = color + T_bg.unsqueeze(-1) * (wb.unsqueeze(-1) * vb).sum(-2)
        s_vals.append(vb)
        s_w.append(T_bg.unsqueeze(-1) * wb)
    out = {"values": color, "depth": (w * z).sum(-1) * norm[..., 0], "opacity": w.sum(-1)}
    if return_samples:
        out["sample_values"], out["sample_weights"] = torch.cat(s_vals, -2), torch.cat(s_w, -1)
    return out


# --------------------------------------------------------------------------------------------------
# The 2D upsampler


def learned_upsample(x: torch.Tensor, adapter: nn.Module, f: torch.Tensor, mode: str = "pixelshuffle",
                     blur: bool = True) -> torch.Tensor:
    """2x learned upsampling of x (B, C, H, W) -> (B, C, 2H, 2W).

    ``pixelshuffle`` (the paper): nearest(x) + pixel_shuffle(adapter(x)) (adapter: 1x1 convs to 4C
    channels), then the FIR blur ``f``. ``nn_cat`` (the official release): the four averages of
    the 4-neighbours (left + up, up + right, left + down, right + down) / 2 pixel-shuffled into the
    2x grid, concatenated with nearest(x), adapter (1x1 convs 2C -> C), residual on nearest(x),
    blur."""
    xa = F.interpolate(x, scale_factor=2, mode="nearest")
    if mode == "pixelshuffle":
        y = xa + F.pixel_shuffle(adapter(x), 2)
    elif mode == "nn_cat":
        xp = F.pad(x, [1, 1, 1, 1])
        xl, xu, xd, xr = xp[..., 1:-1, :-2], xp[..., :-2, 1:-1], xp[..., 2:, 1:-1], xp[..., 1:-1, 2:]
        xb = torch.stack([xl + xu, xu + xr, xl + xd, xr + xd], 2) / 2
        xb = F.pixel_shuffle(xb.reshape(x.shape[0], -1, *x.shape[-2:]), 2)
        y = xa + adapter(torch.cat([xa, xb], 1))
    else:
        raise ValueError(f"upsample_mode: expected pixelshuffle or nn_cat, got {mode!r}")
    return sg.filter2d(y, f) if blur else y


class StyleLayer2D(nn.Module):
    """StyleGAN2 synthesis layer as StyleNeRF's upsampler uses it: (input x rsqrt(EMA of its mean
    square), decay ``magnitude_ema_beta``; off when <= 0), modulated k x k conv at the input size,
    with ``up`` = 2 the learned upsampling (:func:`learned_upsample`), bias, leaky ReLU x sqrt 2,
    clamped to +-``conv_clamp`` (None: no clamp; the official 256)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, up: int = 1,
                 upsample_mode: str = "pixelshuffle", magnitude_ema_beta: float = 0.999,
                 conv_clamp: float | None = None):
        super().__init__()
        self.up, self.mode, self.padding, self.conv_clamp = up, upsample_mode, kernel_size // 2, conv_clamp
        self.affine = sg.FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", sg.setup_filter(), persistent=False)
        if up == 2:
            if upsample_mode == "pixelshuffle":
                self.adapter = nn.Sequential(sg.Conv2dLayer(out_channels, out_channels // 4, 1, activation="lrelu"),
                                             sg.Conv2dLayer(out_channels // 4, out_channels * 4, 1))
            else:
                self.adapter = nn.Sequential(sg.Conv2dLayer(out_channels * 2, out_channels // 4, 1, activation="lrelu"),
                                             sg.Conv2dLayer(out_channels // 4, out_channels, 1))
        self.magnitude_ema_beta = magnitude_ema_beta
        if magnitude_ema_beta > 0:
            self.register_buffer("magnitude", torch.ones([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip_up: bool = False) -> torch.Tensor:
        if self.magnitude_ema_beta > 0:
            if self.training:
                with torch.no_grad():
                    self.magnitude.copy_(x.detach().float().square().mean().lerp(self.magnitude, self.magnitude_ema_beta))
            x = x * self.magnitude.rsqrt()
        x = sg.modulated_conv2d(x, self.weight, self.affine(w), padding=self.padding)
        if self.up == 2 and not skip_up:
            x = learned_upsample(x, self.adapter, self.resample_filter, self.mode)
        return sg.bias_act(x, self.bias, "lrelu", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """conv0 (2x learned upsampling), conv1, tRGB (skip architecture: the running image is
    FIR-upsampled and the block's RGB added). Uses ``num_conv + 1`` consecutive w's. ``conv_clamp``
    bounds the layers' and the tRGB's outputs (None: unbounded)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 upsample_mode: str = "pixelshuffle", magnitude_ema_beta: float = 0.999,
                 conv_clamp: float | None = None):
        super().__init__()
        kw = dict(kernel_size=kernel_size, upsample_mode=upsample_mode, magnitude_ema_beta=magnitude_ema_beta,
                  conv_clamp=conv_clamp)
        self.conv0 = StyleLayer2D(in_channels, out_channels, w_dim, up=2, **kw)
        self.conv1 = StyleLayer2D(out_channels, out_channels, w_dim, **kw)
        self.torgb = sg.ToRGB(out_channels, 3, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", sg.setup_filter(), persistent=False)
        self.num_conv = 2

    def forward(self, x, img, ws, skip_up: bool = False):
        x = self.conv0(x, ws[:, 0], skip_up=skip_up)
        x = self.conv1(x, ws[:, 1])
        if img is not None and img.shape[-1] * 2 == x.shape[-1]:
            img = sg.upsample2d(img, self.resample_filter)
        y = self.torgb(x, ws[:, 2])
        return x, (img + y if img is not None else y)


class Upsampler(nn.Module):
    """One :class:`SynthesisBlock` per octave from ``in_res`` to ``out_res``; channels
    min(channel_base / res, channel_max) (official: base 32768, max 1024); the first block takes
    the NeRF's ``in_channels`` features. ``forward(x, img, ws, n_blocks, skip_up)`` -> the images
    after each of the first ``n_blocks`` blocks."""

    def __init__(self, in_channels: int, w_dim: int, in_res: int, out_res: int, channel_base: int = 32768,
                 channel_max: int = 1024, kernel_size: int = 1, upsample_mode: str = "pixelshuffle",
                 magnitude_ema_beta: float = 0.999, conv_clamp: float | None = None):
        super().__init__()
        self.resolutions = [2 ** i for i in range(int(math.log2(in_res)) + 1, int(math.log2(out_res)) + 1)]
        ch = {r: min(int(channel_base) // r, channel_max) for r in self.resolutions}
        c_in = in_channels
        self.blocks = nn.ModuleList()
        for r in self.resolutions:
            self.blocks.append(SynthesisBlock(c_in, ch[r], w_dim, kernel_size, upsample_mode, magnitude_ema_beta,
                                              conv_clamp))
            c_in = ch[r]
        self.num_ws = 2 * len(self.blocks) + (1 if self.blocks else 0)

    def forward(self, x, img, ws, n_blocks: int | None = None, skip_up: bool = False):
        imgs = []
        for i, block in enumerate(self.blocks[:n_blocks]):
            x, img = block(x, img, ws[:, 2 * i:2 * i + 3], skip_up=skip_up)
            imgs.append(img)
        return imgs
