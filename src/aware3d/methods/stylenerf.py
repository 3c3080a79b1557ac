"""StyleNeRF (Gu et al., ICLR 2022): a style-based NeRF renders low-resolution features, a
StyleGAN2-like upsampler adds detail (PAPERS.md card 10). Networks in :mod:`aware3d.fields.stylenerf`
and :mod:`aware3d.nets.stylegan2`.

    sample_inputs     z (n, z_dim) -> w by the StyleGAN2 mapping network; z_bg (the background
                      field's own code); a camera ``c2w`` from the prior; in training a second code
                      ``z_mix`` and ``mix_cutoff``: w's from index mix_cutoff on come from z_mix
                      (style mixing, probability ``style_mixing_prob``; one cutoff per batch)
    NeRF              ForegroundField (modulated 1x1 layers, one w each) inside [near, far],
                      BackgroundField (inverse sphere, z_bg) beyond; rendered at ``nerf_res`` with
                      ``n_samples`` + ``n_importance`` foreground and ``n_bg`` background samples:
                      features (F) and RGB (3). ``renderer`` official (the paper presets): the
                      official sampling and compositing (:func:`render_scene_official`: z-depth
                      samples with both ends, background from radius 1 / ``bg_start`` outwards,
                      N(0, 1) density noise in training); v1 (runs saved before): aware3d's first
                      renderer (bin-centre samples, distances along unit rays, background beyond
                      ``far``). The fields' encoding sin / cos(2^k ``pe_scale`` x) (official pi)
    Upsampler         StyleGAN2 skip blocks (1x1 modulated convs as the official config, learned
                      upsampling: 1x1 convs + pixel shuffle + blur) from nerf_res to ``resolution``
    progressive       alpha = clamp((kimg - c0) / (c1 - c0), 0, 1) over ``curriculum`` (c0, c1)
                      in thousands of images: alpha 0 trains the NeRF alone at nerf_res (its RGB is
                      the image); then one upsampler level after another, each faded in (the image
                      blends the previous level's, upsampled); the critic sees the images at the
                      current size and fades in its top block in step
    NeRF-path reg.    the same upsampler layers run on the NeRF features without upsampling (the
                      "NeRF path", nerf_res^2) must match the final image area-downsampled to
                      nerf_res: 2 x mean_b sum_c mean_pixels (diff^2) x ``nerf_path_weight`` (the
                      official factor 2; ``nerf_path_mode`` downsampled, runs saved before). The
                      paper presets use the official form (``nerf_path_mode`` official): a 16 x 16
                      grid of the current image's pixels (stride T / 16, a random offset per sample)
                      rendered by the NeRF keeping every sample, the upsampler's layers without
                      upsampling on each sample's features, composited with the samples' weights,
                      against the image's pixels there (computed in every training forward)

Training: non-saturating loss, lazy R1 (official paper256 spec: gamma 0.5, loss gamma / 2
||grad||^2 every 16 D steps: ``r1_weight`` 0.25, ``r1_interval`` 16), Adam lr 0.0025 betas (0, 0.99)
(the official lazy-regularisation correction: D lr x 16/17, betas ^ 16/17), EMA 20 kimg
(0.5 ^ (64 / 20000) at batch 64). The paper presets add the official path-length penalty (the GAN
engine's PL phase: ``pl_weight`` 2 every ``pl_interval`` 4 steps on half batches, gradient w.r.t.
the ws after style mixing) with G's correction (lr x 4/5, betas ^ 4/5) through ``lazy_correction``;
runs saved before keep D's correction in ``lr_d`` / ``betas`` (shared by G) and no penalty. Real
images go to the training size by OpenCV's Lanczos on 8 bits (``real_resize`` lanczos, official) or
area averaging (runs saved before).
Not implemented: mixed precision (the official upsampler runs its blocks from twice the first
block's resolution on in fp16). Weight transfer against the official modules (stylenerf_ffhq +
paper256, CPU float32): BENCHMARKS.md "StyleNeRF weight transfer against the official code".
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.stylenerf import (
    BackgroundField,
    ForegroundField,
    Upsampler,
    render_scene,
    render_scene_official,
)
from ..nets.stylegan2 import MappingNetwork, StyleGAN2Discriminator
from ..programs.gan import programs_for
from ..render.cameras import image_rays, intrinsics_from_fov
from ..train.gan import discriminator_loss, generator_loss, r1_penalty
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "stylenerf"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class StyleNeRFConfig(gc.RunSettings):
    """Every setting of a StyleNeRF run (plain data; written to the run folder's config)."""

    resolution: int = 64                # output image size
    nerf_res: int = 32                  # NeRF feature map size (official resolution_vol 32)
    # camera: on a sphere looking at the origin; yaw = azimuth, pitch = elevation (degrees)
    camera_dist: str = "gaussian"       # gaussian (faces) | uniform
    yaw_mean: float = 0.0               # mean yaw of the Gaussian prior (degrees)
    pitch_mean: float = 0.0             # mean pitch of the Gaussian prior (degrees)
    yaw_std: float = math.degrees(0.3)      # official range_u [-0.3, 0.3], gaussian
    pitch_std: float = math.degrees(0.155)  # official range_v pi/2 +- 0.155, gaussian
    yaw_range: tuple = (-180.0, 180.0)  # uniform
    pitch_range: tuple = (20.0, 60.0)   # uniform
    radius: float = 1.0                 # camera distance (official range_radius 1)
    fov: float = 12.0                   # degrees (official 12)
    depth_range: tuple = (0.88, 1.12)   # foreground near, far along the ray (official)
    n_samples: int = 14                 # foreground stratified samples (official n_ray_samples 14)
    n_importance: int = 14              # hierarchical samples (official hierarchical: True)
    n_bg: int = 4                       # background samples (official n_bg_samples 4)
    background: bool = True             # the NeRF++ background field
    renderer: str = "v1"                # v1 (runs saved before) | official (the official sampling and compositing)
    bg_start: float = 0.5               # official renderer: the background's first inverse radius
    # networks (official stylenerf_ffhq)
    z_dim: int = 512                    # code of the mapping network
    w_dim: int = 512                    # style size
    map_layers: int = 8                 # mapping network depth (spec map 8), lr multiplier 0.01
    nerf_hidden: int = 128              # foreground MLP width
    nerf_blocks: int = 8                # foreground modulated layers (fc_in + 7)
    feat_dim: int = 256                 # rendered feature channels (official rgb_out_dim 256)
    n_freq: int = 10                    # positional encoding frequencies of the fields
    pe_scale: float = 1.0               # fields' encoding sin / cos(2^k pe_scale x) (official pi)
    z_bg_dim: int = 32                  # background code (official z_dim_bg 32)
    bg_hidden: int = 64                 # background MLP width
    bg_blocks: int = 4                  # background MLP layers
    channel_base: int = 32768           # upsampler channels min(base / res, max) (official 1 x 32768)
    channel_max: int = 1024             # (official 1024)
    kernel_size: int = 1                # upsampler conv kernel (official 1: per-pixel, 3D-consistent)
    upsample_mode: str = "pixelshuffle"  # pixelshuffle (the paper) | nn_cat (the official release)
    magnitude_ema_beta: float = 0.999   # upsampler input magnitude normalisation (official 0.999)
    conv_clamp: float = 0.0             # upsampler layers / tRGBs and critic convs clamp to +-this (0: off; official 256)
    d_channel_base: int = 16384         # critic channels min(base / res, d_channel_max) (fmaps 0.5)
    d_channel_max: int = 512            # most critic channels per layer
    mbstd_group: int = 8                # minibatch-std group (spec mbstd 8)
    # losses and schedule
    style_mixing_prob: float = 0.9      # official 0.9
    nerf_path_weight: float = 1.0       # x the official 2 x L2 of the NeRF path regulariser
    nerf_path_mode: str = "downsampled"  # downsampled (runs saved before) | official (per-sample, pixel grid)
    nerf_path_samples: int = 16         # official n_reg_samples: the grid is n x n pixels
    real_resize: str = "area"           # real images to the training size: area | lanczos (official, 8-bit cv2)
    progressive: bool = True            # official progressive: True
    curriculum: tuple = (500.0, 5000.0)  # kimg: alpha 0 -> 1 (official [500, 5000])
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 64                # official mb 64 (8 GPUs)
    optimizer: str = "adam"             # official Adam
    lr_g: float = 0.0025                # generator learning rate (official lrate 0.0025)
    lr_d: float = 0.0025 * 16 / 17      # official lrate_disc x mb_ratio (lazy R1 every 16)
    betas: tuple = (0.0, 0.99 ** (16 / 17))  # Adam betas (official (0, 0.99), lazy-R1 corrected)
    ema_beta: float = 0.5 ** (64 / 20000)   # official ema 20 kimg at batch 64
    r1_weight: float = 0.25             # official gamma / 2 with gamma 0.5 (paper256)
    r1_interval: int = 16               # official D_reg_interval
    lazy_correction: bool = False       # engine: lr x k/(k+1), betas ** (k/(k+1)) (official: D k 16 R1, G k 4 PL)
    pl_weight: float = 0.0              # path-length penalty (official pl_weight 2 in the paper presets; 0: off)
    pl_interval: int = 4                # its own G step every 4 steps, weight x 4 (official G_reg_interval)
    pl_decay: float = 0.01              # running mean decay of the path lengths (official pl_decay)
    pl_batch_shrink: int = 2            # its batch: batch_size // 2 (official pl_batch_shrink)
    preset: str = "ffhq256"
    # render-time only
    mesh_extent: float = 0.15           # half side of the mesh export cube (world units)
    chunk: int = 4096                   # NeRF rays per field call at inference, over the whole batch


# official settings a run saved before their config keys keeps at the old values (dataclass defaults)
_OFFICIAL = {"pe_scale": math.pi, "conv_clamp": 256.0, "renderer": "official", "nerf_path_mode": "official",
             "real_resize": "lanczos",
             # official optimisers: lr 0.0025, betas (0, 0.99), corrected by the engine for lazy R1 (D) and
             # the path-length penalty (G: lr x 4/5, betas ** (4/5))
             "lr_g": 0.0025, "lr_d": 0.0025, "betas": (0.0, 0.99), "lazy_correction": True, "pl_weight": 2.0}
_OBJECTS = dict(camera_dist="uniform", yaw_range=(-180.0, 180.0), pitch_range=(20.0, 60.0), radius=6.0,
                fov=40.0, depth_range=(3.5, 8.5), mesh_extent=2.5)
_CPU = dict(resolution=64, nerf_res=32, n_samples=10, n_importance=0, n_bg=2, z_dim=64, w_dim=64, map_layers=4,
            nerf_hidden=64, nerf_blocks=4, feat_dim=32, n_freq=6, z_bg_dim=8, bg_hidden=32, bg_blocks=2,
            channel_base=2048, channel_max=64, d_channel_base=2048, d_channel_max=64, mbstd_group=4,
            curriculum=(2.0, 20.0), batch_size=16, lr_g=0.002, lr_d=0.002 * 16 / 17, ema_beta=0.995,
            sample_every=200, checkpoint_every=500)
PRESETS: dict[str, dict] = {
    "ffhq256": dict(resolution=256, nerf_res=32, **_OFFICIAL),   # official stylenerf_ffhq + spec paper256
    "ffhq256_release": dict(resolution=256, nerf_res=32, upsample_mode="nn_cat", **_OFFICIAL),
    "cpu64": dict(_CPU),
    "cpu64_objects": dict(_CPU, **_OBJECTS),
    "cpu32": dict(_CPU, resolution=32, nerf_res=16, curriculum=(1.0, 10.0)),
    "cpu32_objects": dict(_CPU, **_OBJECTS, resolution=32, nerf_res=16, curriculum=(1.0, 10.0)),
    # tests: tens of thousands of parameters; every progressive phase within 20 steps
    "tiny": dict(_CPU, **_OBJECTS, resolution=32, nerf_res=8, n_samples=6, n_bg=2, z_dim=16, w_dim=16,
                 map_layers=2, nerf_hidden=16, nerf_blocks=2, feat_dim=8, n_freq=4, z_bg_dim=4, bg_hidden=8,
                 bg_blocks=2, channel_base=256, channel_max=16, d_channel_base=256, d_channel_max=32,
                 curriculum=(0.01, 0.06), batch_size=4, r1_interval=4, sample_every=10, checkpoint_every=10,
                 log_every=5),
}
PRESETS["cpu"] = PRESETS["cpu64"]
DEFAULT_PRESET = "cpu64"

Config = StyleNeRFConfig


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> StyleNeRFConfig:
    return gc.make_config(Config, PRESETS, preset, **overrides)


def config_from_dict(d: dict) -> StyleNeRFConfig:
    return gc.config_from_dict(Config, d)


# --------------------------------------------------------------------------------------------------
# Inputs


def camera_from_angles(cfg: StyleNeRFConfig, yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) of the spherical camera prior (:func:`aware3d.methods.gan_common.sphere_camera`)."""
    return gc.sphere_camera(cfg, yaw_deg, pitch_deg)


def sample_pose(cfg: StyleNeRFConfig, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) (n,) degrees from the camera prior (:func:`aware3d.methods.gan_common.sample_sphere_angles`)."""
    return gc.sample_sphere_angles(cfg, n, generator)


def num_ws(cfg: StyleNeRFConfig) -> int:
    n_up = int(math.log2(cfg.resolution)) - int(math.log2(cfg.nerf_res))
    return cfg.nerf_blocks + 2 + (2 * n_up + 1 if n_up > 0 else 0)


def sample_inputs(cfg: StyleNeRFConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> dict:
    """z, z_bg ~ N(0, I), a prior camera; in training z_mix and mix_cutoff (n,) (all equal: one
    cutoff per batch, num_ws = no mixing)."""
    yaw, pitch = sample_pose(cfg, n, generator)
    out = {"z": torch.randn(n, cfg.z_dim, generator=generator),
           "z_bg": torch.randn(n, cfg.z_bg_dim, generator=generator),
           "c2w": camera_from_angles(cfg, yaw, pitch)}
    if train and cfg.style_mixing_prob > 0:
        L = num_ws(cfg)
        u = torch.rand(2, generator=generator)
        cut = 1 + int(u[0] * (L - 1)) if float(u[1]) < cfg.style_mixing_prob else L
        out["z_mix"] = torch.randn(n, cfg.z_dim, generator=generator)
        out["mix_cutoff"] = torch.full((n,), cut, dtype=torch.long)
    return out


# --------------------------------------------------------------------------------------------------
# Networks


def level_state(alpha: float, n_levels: int):
    """(end_l, frac): upsampler blocks in use and the fade of the last one, from the global
    progress alpha (-1 or >= 1: all, no fade; 0: none), as the official synthesis network."""
    if alpha < 0 or alpha >= 1 or n_levels == 0:
        return n_levels, 1.0
    if alpha == 0:
        return 0, 1.0
    frac, idx = math.modf(alpha * n_levels)
    return int(idx) + 1, frac


class StyleNeRFGenerator(nn.Module):
    """G(inputs) -> image (B, 3, S, S) in about [-1, 1] (smaller while growing in training; in eval
    mode always resized to S)."""

    def __init__(self, cfg: StyleNeRFConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.map_layers, lr_mul=0.01)
        self.fg = ForegroundField(cfg.w_dim, cfg.nerf_hidden, cfg.nerf_blocks, cfg.feat_dim, cfg.n_freq, cfg.pe_scale)
        self.bg = BackgroundField(cfg.z_bg_dim, cfg.bg_hidden, cfg.bg_blocks, cfg.feat_dim, cfg.n_freq,
                                  cfg.pe_scale) if cfg.background else None
        self.upsampler = Upsampler(cfg.feat_dim, cfg.w_dim, cfg.nerf_res, cfg.resolution, cfg.channel_base,
                                   cfg.channel_max, cfg.kernel_size, cfg.upsample_mode, cfg.magnitude_ema_beta,
                                   cfg.conv_clamp if cfg.conv_clamp > 0 else None)
        self.num_ws = self.fg.num_ws + self.upsampler.num_ws
        if cfg.nerf_path_mode not in ("downsampled", "official"):
            raise ValueError(f"nerf_path_mode: expected downsampled or official, got {cfg.nerf_path_mode!r}")
        if cfg.nerf_path_mode == "official" and (cfg.renderer != "official" or cfg.kernel_size != 1):
            raise ValueError("nerf_path_mode official needs renderer official and kernel_size 1 (per-sample layers)")
        self.register_buffer("alpha", torch.tensor(-1.0))   # progressive state (-1: fully grown)

    def styles(self, inputs: dict, truncation_psi: float = 1.0) -> torch.Tensor:
        """ws (B, num_ws, w_dim), with style mixing where ``inputs`` has ``z_mix`` / ``mix_cutoff``."""
        w = self.mapping(inputs["z"], truncation_psi)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if "z_mix" in inputs and "mix_cutoff" in inputs:
            cut = int(inputs["mix_cutoff"].reshape(-1)[0])
            if cut < self.num_ws:
                w2 = self.mapping(inputs["z_mix"], truncation_psi, update_w_avg=False)
                ws = torch.cat([ws[:, :cut], w2.unsqueeze(1).expand(-1, self.num_ws - cut, -1)], 1)
        return ws

    def camera_rays(self, c2w: torch.Tensor, r: int):
        c2w = c2w.to(self.alpha.device, torch.float32)
        K = intrinsics_from_fov(self.cfg.fov, r, r).to(c2w)
        o, d = image_rays(K.expand(c2w.shape[0], 3, 3), c2w, r, r)
        return o.reshape(c2w.shape[0], r * r, 3), d.reshape(c2w.shape[0], r * r, 3)

    def _fields(self, ws: torch.Tensor, inputs: dict):
        ws_fg = ws[:, :self.fg.num_ws]
        z_bg = inputs.get("z_bg")
        bg_fn = (lambda p: self.bg(p, z_bg.to(p))) if self.bg is not None else None
        return (lambda p: self.fg(p, ws_fg)), bg_fn

    def _render_official(self, fg_fn, bg_fn, c2w: torch.Tensor, o: torch.Tensor, d: torch.Tensor,
                         return_samples: bool = False) -> dict:
        """:func:`render_scene_official` of rays o, d (B, R, 3) (unit d; rescaled to camera depth 1)."""
        c = self.cfg
        if bg_fn is not None and c.radius > 1.0 + 1e-6:
            raise ValueError(f"renderer official: its inverse-sphere background needs the cameras inside the "
                             f"unit sphere (radius <= 1, official 1), got radius {c.radius}")
        fwd = -c2w.to(d)[:, :3, 2]
        d = d / (d * fwd[:, None]).sum(-1, keepdim=True)
        return render_scene_official(fg_fn, bg_fn, o, d, c.depth_range[0], c.depth_range[1], c.n_samples,
                                     c.n_importance > 0, c.n_bg, c.bg_start, perturb=self.training,
                                     sigma_noise=self.training, return_samples=return_samples)

    def render_nerf(self, ws: torch.Tensor, inputs: dict, return_opacity: bool = False):
        """Features (B, F, r, r), RGB (B, 3, r, r), depth (B, r, r: expected distance along the ray)
        of the NeRF (and its foreground opacity (B, r, r) with ``return_opacity``)."""
        c, r = self.cfg, self.cfg.nerf_res
        o, d = self.camera_rays(inputs["c2w"], r)
        B = o.shape[0]
        fg_fn, bg_fn = self._fields(ws, inputs)
        step = o.shape[1] if torch.is_grad_enabled() else max(1, c.chunk // B)
        if c.renderer == "official":     # directions at camera depth 1: samples are z-depths
            def render(oo, dd):
                return self._render_official(fg_fn, bg_fn, inputs["c2w"], oo, dd)
        elif c.renderer == "v1":
            def render(oo, dd):
                return render_scene(fg_fn, bg_fn, oo, dd, c.depth_range[0], c.depth_range[1], c.n_samples,
                                    c.n_importance, c.n_bg, perturb=self.training)
        else:
            raise ValueError(f"renderer: expected v1 or official, got {c.renderer!r}")
        parts = [render(o[:, a:a + step], d[:, a:a + step]) for a in range(0, o.shape[1], step)]
        vals = torch.cat([p["values"] for p in parts], 1).reshape(B, r, r, -1).permute(0, 3, 1, 2)
        depth = torch.cat([p["depth"] for p in parts], 1).reshape(B, r, r)
        if return_opacity:
            return vals[:, 3:], vals[:, :3], depth, torch.cat([p["opacity"] for p in parts], 1).reshape(B, r, r)
        return vals[:, 3:], vals[:, :3], depth

    def official_nerf_path(self, ws: torch.Tensor, inputs: dict, img: torch.Tensor, end_l: int, frac: float,
                           offsets: torch.Tensor | None = None):
        """Both sides of the official NeRF-path regulariser (``nerf_path_mode`` official): a
        ``nerf_path_samples``^2 grid of pixels of the current image ``img`` (B, 3, T, T) (stride
        T // n, one offset per sample drawn in [0, stride)^2 unless ``offsets`` (B, 2) (x, y)), their
        rays rendered by the NeRF keeping every sample; the upsampler's first ``end_l`` blocks
        without upsampling on each sample's features and RGB (faded by ``frac`` as the image), then
        composited with the samples' weights. Returns (path, the image's pixels there), each
        (B, 3, n, n)."""
        c = self.cfg
        B, T = img.shape[0], img.shape[-1]
        pace = max(T // c.nerf_path_samples, 1)
        idx = torch.arange(0, T, pace, device=img.device)
        if offsets is None:
            offsets = (torch.rand(B, 2, device=img.device) * pace).floor().long()
        offsets = offsets.to(img.device).long()
        ix, iy = idx[None] + offsets[:, :1], idx[None] + offsets[:, 1:]
        flat = (ix[:, None, :] + iy[:, :, None] * T).reshape(B, -1)              # row-major (y, x)
        o, d = self.camera_rays(inputs["c2w"], T)
        o, d = (t.gather(1, flat[..., None].expand(-1, -1, 3)) for t in (o, d))
        out = self._render_official(*self._fields(ws, inputs), inputs["c2w"], o, d, return_samples=True)
        sv, sw = out["sample_values"].permute(0, 3, 1, 2), out["sample_weights"]   # (B, C, R, S), (B, R, S)
        rgb = sv[:, :3]
        paths = [rgb] + self.upsampler(sv[:, 3:], rgb, ws[:, self.fg.num_ws:], end_l, skip_up=True)
        path = paths[-1] if frac >= 1 else paths[-2] * (1 - frac) + paths[-1] * frac
        m = idx.numel()
        path = (path * sw[:, None]).sum(-1).reshape(B, 3, m, m)
        target = img.flatten(2).gather(2, flat[:, None].expand(-1, img.shape[1], -1)).reshape(B, -1, m, m)
        return path, target

    def forward(self, inputs: dict, return_aux: bool = False, truncation_psi: float = 1.0,
                with_nerf_path: bool = True):
        """Image; with ``return_aux`` a dict: ``image``, ``nerf`` (the NeRF's RGB), ``nerf_path``
        (the upsampler's layers without upsampling on the NeRF, None before the upsampler is on or
        without ``with_nerf_path``; ``nerf_path_mode`` official: the composited per-sample path at the
        regulariser's pixels, in training only, and ``nerf_path_target`` the image there), ``depth``,
        ``opacity`` (the foreground's), ``ws``."""
        ws = self.styles(inputs, truncation_psi)
        x, img_nerf, depth, opacity = self.render_nerf(ws, inputs, return_opacity=True)
        ws_up = ws[:, self.fg.num_ws:]
        n_levels = len(self.upsampler.blocks)
        end_l, frac = level_state(float(self.alpha), n_levels)
        img, nerf_path, target = img_nerf, None, None
        if end_l > 0:
            imgs = [img_nerf] + self.upsampler(x, img_nerf, ws_up, end_l)
            img = imgs[-1]
            if frac < 1:
                img = F.interpolate(imgs[-2], scale_factor=2, mode="bilinear", align_corners=False) * (1 - frac) + img * frac
            if self.cfg.nerf_path_mode == "official":
                # in every training forward, as the official generator (its layers' magnitude EMAs see it too)
                if self.training:
                    nerf_path, target = self.official_nerf_path(ws, inputs, img, end_l, frac)
            elif return_aux and with_nerf_path:
                paths = [img_nerf] + self.upsampler(x, img_nerf, ws_up, end_l, skip_up=True)
                nerf_path = paths[-1] if frac >= 1 else paths[-2] * (1 - frac) + paths[-1] * frac
        if not self.training and img.shape[-1] != self.cfg.resolution:
            img = F.interpolate(img, size=(self.cfg.resolution,) * 2, mode="bilinear", align_corners=False)
        if not return_aux:
            return img
        return {"image": img, "nerf": img_nerf, "nerf_path": nerf_path, "nerf_path_target": target, "depth": depth,
                "opacity": opacity, "ws": ws}

    def density(self, points: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Raw foreground density at world points (B, P, 3) for codes z (B, z_dim)."""
        w = self.mapping(z, update_w_avg=False)
        return self.fg(points, w.unsqueeze(1).expand(-1, self.fg.num_ws, -1))[0]


@functools.lru_cache(maxsize=32)
def _lanczos4_taps(dst: int, src: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_LANCZOS4 taps for resizing ``src`` samples to ``dst``: source indices (dst, 8),
    clamped at the borders (OpenCV repeats the edge pixel), and the 8-bit path's fixed-point weights
    (float32 coefficients normalised to sum 1, then rounded to shorts at scale 2^11)."""
    fx = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    sx = np.floor(fx).astype(np.int64)
    fx = (fx - sx).astype(np.float32)
    s45 = 0.70710678118654752440084436210485
    cs = ((1, 0), (-s45, -s45), (0, 1), (s45, -s45), (-1, 0), (s45, s45), (0, -1), (-s45, s45))
    weights = np.empty((dst, 8), np.int64)
    for d in range(dst):
        x = float(fx[d])
        y0 = -(x + 3) * math.pi * 0.25
        s0, c0 = math.sin(y0), math.cos(y0)
        row = np.empty(8, np.float32)
        for i in range(8):
            t = np.float32(x + 3 - i)
            if abs(t) >= 1e-6:
                y = -float(t) * math.pi * 0.25
                row[i] = (cs[i][0] * s0 + cs[i][1] * c0) / (y * y)
            else:
                row[i] = 1e30
        total = np.float32(0)
        for v in row:                               # float32 running sum, in OpenCV's order
            total = np.float32(total + v)
        row = row * (np.float32(1) / total)
        weights[d] = np.rint(row * 2048)            # saturate_cast<short>: round half to even
    index = np.clip(sx[:, None] + np.arange(-3, 5)[None], 0, src - 1)
    return index, weights


def lanczos4_resize_u8(image: np.ndarray, size: int) -> np.ndarray:
    """An 8-bit image (H, W, C) -> (size, size, C), pixel for pixel what OpenCV's
    ``cv2.resize(image, (size, size), interpolation=cv2.INTER_LANCZOS4)`` gives (its fixed-point
    8-bit path: horizontal then vertical 8-tap passes, weights at 2^11, rounding at 2^22;
    ``tests/test_stylenerf_official.py`` checks it against OpenCV where OpenCV is installed)."""
    iy, wy = _lanczos4_taps(size, image.shape[0])
    ix, wx = _lanczos4_taps(size, image.shape[1])
    a = image.astype(np.int64)
    rows = (a[:, ix] * wx[None, :, :, None]).sum(2)             # (H, size, C)
    val = (rows[iy] * wy[:, :, None, None]).sum(1)              # (size, size, C)
    return np.clip((val + (1 << 21)) >> 22, 0, 255).astype(np.uint8)


def lanczos_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] that came from 8-bit data -> (B, C, size, size): back to 8 bits,
    OpenCV's Lanczos (INTER_LANCZOS4, 8-bit result; :func:`lanczos4_resize_u8`) per image, as the
    official training loop resizes real images to the current size (``resize_real_early``);
    unchanged at the same size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    u8 = ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([lanczos4_resize_u8(im, size) for im in u8])
    return (torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(x.device, x.dtype)


def nerf_path_loss(final: torch.Tensor, nerf_path: torch.Tensor) -> torch.Tensor:
    """2 x mean_b sum_c mean_pixels (down(final) - nerf_path)^2, the final image area-downsampled to
    the NeRF path's size (the official L2 with its factor 2)."""
    small = gc.resize_images(final, nerf_path.shape[-1])
    return 2.0 * (small - nerf_path).square().sum(1).flatten(1).mean(1).mean()


class StyleNeRFDiscriminator(nn.Module):
    """StyleGAN2 'skip' critic that takes the images at the current training size and fades in its
    top block with the buffer ``fade`` (set by :meth:`StyleNeRFMethod.set_step`)."""

    def __init__(self, cfg: StyleNeRFConfig):
        super().__init__()
        self.net = StyleGAN2Discriminator(cfg.resolution, cfg.d_channel_base, cfg.d_channel_max,
                                          architecture="skip", mbstd_group_size=cfg.mbstd_group,
                                          conv_clamp=cfg.conv_clamp if cfg.conv_clamp > 0 else None)
        self.register_buffer("fade", torch.tensor(-1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = float(self.fade)
        return self.net(x, alpha=f if 0 < f < 1 else None)


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class StyleNeRFMethod:
    name = NAME
    image_range = (-1.0, 1.0)
    latent_groups = {"latent": ["z", "z_bg"], "foreground": ["z"], "background": ["z_bg"]}

    def __init__(self, cfg: StyleNeRFConfig):
        self.cfg = cfg
        self.generator = StyleNeRFGenerator(cfg)
        self.discriminator = StyleNeRFDiscriminator(cfg)
        self.train_res = cfg.resolution

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def camera_from_angles(self, yaw_deg, pitch_deg):
        return camera_from_angles(self.cfg, yaw_deg, pitch_deg)

    def angle_ranges(self) -> dict:
        return gc.sphere_angle_ranges(self.cfg)

    # -- progressive schedule ------------------------------------------------------------------
    def alpha_at(self, step: int) -> float:
        c = self.cfg
        if not c.progressive:
            return -1.0
        kimg = step * c.batch_size / 1000.0
        c0, c1 = c.curriculum
        return min(1.0, max(0.0, (kimg - c0) / max(c1 - c0, 1e-9)))

    def set_step(self, step: int, engine=None) -> None:
        """Progress alpha of ``step`` into G (and the engine's EMA G), the critic's fade and the
        size the real images are resized to."""
        a = self.alpha_at(step)
        n = len(self.generator.upsampler.blocks)
        end_l, frac = level_state(a, n)
        self.train_res = self.cfg.nerf_res * 2 ** end_l
        for G in (self.generator, getattr(engine, "G_ema", None)):
            if G is not None:
                G.alpha.fill_(a)
        self.discriminator.fade.fill_(frac if end_l > 0 and frac < 1 else -1.0)

    def wrap_dataset(self, dataset):
        """Real images resized to the current training size: area averaging (``real_resize`` area) or
        the official Lanczos resize of the 8-bit images (``real_resize`` lanczos)."""
        if self.cfg.real_resize == "lanczos":
            return gc.MappedImages(dataset, lambda x, g: lanczos_resize(x, self.train_res))
        if self.cfg.real_resize != "area":
            raise ValueError(f"real_resize: expected area or lanczos, got {self.cfg.real_resize!r}")
        return gc.MappedImages(dataset, lambda x, g: gc.resize_images(x, self.train_res))

    # -- objectives ----------------------------------------------------------------------------
    def generator_objective(self, G, D, inputs: dict):
        out = G(inputs, return_aux=True)
        loss = l_gan = generator_loss(D(out["image"]))
        scalars = {"loss_G": l_gan.detach()}
        if self.cfg.nerf_path_weight > 0 and out["nerf_path"] is not None:
            target = out["nerf_path_target"] if out.get("nerf_path_target") is not None else out["image"]
            reg = nerf_path_loss(target, out["nerf_path"])
            loss = loss + self.cfg.nerf_path_weight * reg
            scalars["nerf_path"] = reg.detach()
        return loss, scalars

    def discriminator_objective(self, G, D, real: torch.Tensor, inputs: dict, r1_weight: float):
        with torch.no_grad():
            fake = G(inputs)
        x_real = gc.resize_images(real.detach(), fake.shape[-1]).requires_grad_(r1_weight > 0)
        d_real, d_fake = D(x_real), D(fake)
        l_real, l_fake = discriminator_loss(d_real, d_fake)
        loss = l_real + l_fake
        out = {"loss_D": loss.detach(), "loss_D_real": l_real.detach(), "loss_D_fake": l_fake.detach(),
               "D_real": d_real.detach().mean(), "D_fake": d_fake.detach().mean(),
               "fake_std": fake.detach().float().std()}
        if r1_weight > 0:
            pen = r1_penalty(d_real, x_real)
            loss = loss + r1_weight * pen
            out["R1"] = pen.detach()
        return loss, out

    @staticmethod
    def path_length_forward(G: StyleNeRFGenerator, inputs: dict):
        """The engine's path-length phase: (images at the current training size, ws (B, num_ws,
        w_dim) after style mixing, in the graph; official: the gradient w.r.t. the mapping's ws)."""
        out = G(inputs, return_aux=True, with_nerf_path=False)
        return out["image"], out["ws"]

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)


def build(cfg: StyleNeRFConfig, seed: int | None = None) -> StyleNeRFMethod:
    torch.manual_seed(cfg.seed if seed is None else seed)
    return StyleNeRFMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Mesh export and the method surface


@torch.no_grad()
def export_mesh(run, seed: int = 0, resolution: int = 128, out_path=None, threshold: float | None = None) -> dict:
    """Marching cubes on the foreground density of the sample drawn from ``seed`` over
    [-mesh_extent, mesh_extent]^3; writes a PLY (default RUN/mesh_seed<seed>.ply)."""
    cfg, G = run.config, run.G
    z = run.sample(seed)["z"].to(run.device)
    out = Path(out_path) if out_path is not None else run.path / f"mesh_seed{seed}.ply"
    ext = float(cfg.mesh_extent)
    res = gc.export_density_mesh(lambda p: G.density(p.unsqueeze(0).to(run.device), z[:1])[0], -ext, ext, out,
                                 resolution=resolution, threshold=threshold)
    res["extent"] = ext
    return res


PRESET_DESCRIPTIONS = {
    "ffhq256": "the official FFHQ 256x256 networks (NeRF at 32x32, paper's pixel-shuffle upsampler)",
    "ffhq256_release": "ffhq256 with the official release's nn_cat upsampler",
    "cpu64": "narrow networks for a CPU, NeRF at 32x32 upsampled to 64x64, faces' poses (the default)",
    "cpu": "the same as cpu64",
    "cpu64_objects": "the CPU networks on synth objects at 64x64",
    "cpu32": "the CPU networks at 32x32 (NeRF at 16x16)",
    "cpu32_objects": "the CPU networks on synth objects at 32x32",
    "tiny": "test-sized networks at 32x32 (NeRF at 8x8), every progressive phase within 20 steps",
}

METHOD = GenerativeMethod(NAME, "StyleNeRF", StyleNeRFConfig, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
                          programs=programs_for(StyleNeRFMethod.latent_groups), mesh=export_mesh,
                          paper="Gu et al., ICLR 2022")
PROGRAMS = tuple(METHOD.programs)
