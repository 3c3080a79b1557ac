"""VolumeGAN (Xu et al. 2022): a structural feature volume, a textural feature field that reads it,
feature rendering at low resolution and a StyleGAN2-like 2D neural renderer (PAPERS.md card 11).
3D networks in :mod:`aware3d.fields.volumegan`, StyleGAN2 layers in :mod:`aware3d.nets.stylegan2`.

    sample_inputs         z (B, Z) ~ N(0, I), a camera c2w (yaw / pitch prior); in training the
                          style-mixing draw (z_mix, mix_cutoff)
    styles                MappingNetwork z -> w (8 layers, lr x 0.01, w_avg for truncation), one w
                          per layer: ws (B, L, w_dim), L = mlp_layers + 2 (log2(S / r) + 1); style
                          mixing replaces ws[:, cutoff:] (cutoff >= mlp_layers: 2D layers only, as
                          the official code)
    render_features       FeatureVolume(ws[:, 0]) once per image; per sample [trilinear volume
                          features, gamma(x)] -> modulated MLP -> density + features; stratified +
                          hierarchical samples (gan_common.render_radiance) -> (B, F, r, r)
    VolumeGANRenderer     the official SynthesisNetwork: the image at r is the first 3 feature
                          channels; per octave up to S: modulated 1x1 conv with 2x FIR upsampling,
                          modulated 1x1 conv (both with per-pixel noise), a ToRGB added to the 2x
                          upsampled image (StyleGAN2 'skip'); no tanh

Training (official ``volumegan_ffhq256.sh`` in the paper presets): non-saturating loss; lazy R1 on
the reals every 16 steps (official r1_gamma 10, loss += 0.5 gamma ||grad||^2 x 16: ``r1_weight`` 5,
``r1_interval`` 16); StyleGAN2 resnet discriminator with minibatch std (group 4); Adam lr 0.002,
betas (0, 0.99), both corrected for the lazy regularisers as the official config does
(``lazy_correction``: D lr x 16/17 and betas ** (16/17) for R1 every 16 steps, G lr x 4/5 and betas
** (4/5) for the path-length penalty every 4 steps); the path-length penalty (``pl_weight`` 2,
``pl_interval`` 4, ``pl_decay`` 0.01, half batches; the engine's PL phase with respect to ws);
style mixing 0.9; G EMA over 20k images; progressive growing (``use_pg``, official ProgressScheduler:
the level of detail lod goes from log2(S / r) to 0, 750k images per level, then 750k of linear
fade-in, updated every 4 steps, both Adam states cleared where a fade starts or ends): the renderer
runs the octaves up to the level and nearest-upsamples its image to S (blending two levels during a
fade), the critic (:class:`ProgressiveDiscriminator`, the official fromRGB at every resolution)
enters at the level's block through the average-pooled image. Real images are fed at S as in the
official loss. Configs saved without these keys train and render as before (no lazy correction, no
path-length penalty, no progressive growing).

Controls: one latent z (interpolate-latent), camera yaw / pitch; truncation ``truncation_psi``.
``METHOD`` is its surface (:class:`aware3d.methods.base.GenerativeMethod`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.volumegan import VolumeField
from ..nets.stylegan2 import (Conv2dLayer, MappingNetwork, ModulatedConv2d, StyleGAN2Discriminator, ToRGB,
                              bias_act, channels_for, modulated_conv2d, setup_filter, upsample2d)
from ..programs.gan import programs_for
from ..render.cameras import image_rays, intrinsics_from_fov
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "volumegan"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class VolumeGANConfig(gc.RunSettings):
    """Every setting of a VolumeGAN run (plain data; written to the run folder's config)."""

    resolution: int = 256               # output image size
    nerf_res: int = 32                  # feature rendering size (official g_init_res 32)
    # camera: on a sphere looking at the origin; yaw = azimuth, pitch = elevation (degrees)
    camera_dist: str = "gaussian"       # gaussian (faces) | uniform
    yaw_mean: float = 0.0               # mean yaw (degrees; gaussian prior)
    pitch_mean: float = 0.0             # mean pitch (degrees; gaussian prior)
    yaw_std: float = math.degrees(0.3)      # official horizontal_stddev 0.3 rad
    pitch_std: float = math.degrees(0.155)  # official vertical_stddev 0.155 rad
    yaw_range: tuple = (-180.0, 180.0)  # uniform
    pitch_range: tuple = (20.0, 60.0)   # uniform: elevation (min, max) degrees
    radius: float = 1.0                 # camera distance from the origin (world units)
    fov: float = 12.0                   # field of view of the feature image (degrees)
    depth_range: tuple = (0.8, 1.2)     # near, far (distance from the camera; official ray_start / end)
    n_samples: int = 12                 # coarse samples per ray (official num_steps 12)
    n_importance: int = 12              # hierarchical samples per ray (official: as many as coarse)
    # networks (official volumegan_ffhq_config)
    z_dim: int = 512                    # latent z size
    w_dim: int = 512                    # style w size
    map_layers: int = 8                 # mapping network layers (official g_num_mappings 8)
    map_lr_mul: float = 0.01            # mapping network learning-rate multiplier
    volume_res: int = 32                # feature volume side R (official feat_res 32)
    volume_init_res: int = 4            # the learnt constant's side (4^3)
    volume_base: int = 256              # channels of the constant (halved per stage)
    volume_channels: int = 32           # channels of the final volume
    volume_layer: str = "adain"         # adain (official: conv3d + instance norm + w scale/shift) | modconv
    volume_bounds: tuple = ((-0.1956, -0.1886, -0.1671), (0.1872, 0.1887, 0.1692))  # the volume box ((lo), (hi)) xyz, world units
    #                                     ((lo x, y, z), (hi x, y, z)), world units; aware3d's x points at the
    #                                     yaw-0 camera, z up: the official bounds with its (z, x, y) as (x, y, z)
    n_freqs: int = 10                   # positional encoding octaves of x (x itself is also fed)
    mlp_hidden: int = 256               # width of the modulated MLP (official fg_cfg hidden_dim)
    mlp_layers: int = 4                 # modulated MLP layers (official fg_cfg num_layers)
    feat_dim: int = 512                 # rendered feature channels (official out_dim)
    fmaps_base: int = 32768             # 2D renderer channels at res: min(fmaps_base / res, fmaps_max)
    fmaps_max: int = 512                # 2D renderer channels cap
    use_noise: bool = True              # per-pixel noise in the 2D renderer (official spatial noise)
    d_channel_base: int = 32768         # discriminator channels: min(base / res, max)
    d_channel_max: int = 512            # discriminator channels cap
    mbstd_group: int = 4                # minibatch std group size (official d_mbstd_groups)
    # regularisers
    style_mixing: float = 0.9           # probability of style mixing per batch (training)
    w_avg_beta: float = 0.995           # decay of the tracked mean w (official w_moving_decay)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 64                # global batch (official 8 GPUs x 8)
    optimizer: str = "adam"             # adam | rmsprop (official: Adam)
    lr_g: float = 0.002 * 4 / 5         # official g_lr 0.002 x 4/5 (configs saved before lazy_correction;
    lr_d: float = 0.002 * 16 / 17       # official d_lr 0.002 x 16/17   the paper presets: 0.002 and the correction)
    betas: tuple = (0.0, 0.99)          # Adam (beta1, beta2)
    r1_weight: float = 5.0              # 0.5 x the official r1_gamma 10 (D loss += 0.5 gamma ||grad||^2)
    r1_interval: int = 16               # lazy R1 (official r1_interval 16; weight x 16)
    ema_beta: float = 0.5 ** (64 / 20000)  # official g_ema_img 20k images at batch 64
    lazy_correction: bool = False       # engine: lr x k/(k+1), Adam betas ** (k/(k+1)) for a network with a
    #                                     lazy regulariser every k steps (official; paper presets); False: none
    pl_weight: float = 0.0              # path-length penalty (official pl_weight 2 in the paper presets; 0: off)
    pl_interval: int = 4                # its own G step every 4 steps, weight x 4 (official pl_interval)
    pl_decay: float = 0.01              # running mean decay of the path lengths (official pl_decay)
    pl_batch_shrink: int = 2            # its batch: batch_size // 2 (official pl_batch_shrink)
    # progressive growing of the 2D renderer and the critic (official use_pg, ProgressScheduler)
    use_pg: bool = False                # paper presets True; False: full resolution from the start
    pg_training_img: int = 750_000      # images per level before its fade-out (official lod_training_img)
    pg_transition_img: int = 750_000    # images of each fade-in (official lod_transition_img)
    pg_repeats: int = 4                 # the level is updated every 4 steps (official minibatch_repeats)
    pg_reset_optimizer: bool = True     # clear both Adam states where a fade starts / ends (official)
    preset: str = "cpu"
    # render-time only
    truncation_psi: float = 1.0         # w = w_avg + psi (w - w_avg) outside training
    mesh_extent: float = 0.2            # half side of the mesh export cube (world units)
    chunk: int = 4096                   # rays per field call at inference, over the whole batch


# The built-in synthetic objects (data.synth.synth_objects): camera radius 6, fov 40, elevation
# U[20, 60], any azimuth; objects within ~2 units of the origin.
_OBJECTS = dict(camera_dist="uniform", yaw_range=(-180.0, 180.0), pitch_range=(20.0, 60.0), radius=6.0,
                fov=40.0, depth_range=(3.5, 8.5), volume_bounds=((-2.5,) * 3, (2.5,) * 3), mesh_extent=2.5)
# 2-core CPU: features at 16^2 rendered to 64^2, a 16^3 x 16 volume, narrow layers, no
# hierarchical samples, R1 in every D step (short runs), EMA 0.995
_CPU = dict(resolution=64, nerf_res=16, n_samples=12, n_importance=0, z_dim=128, w_dim=128, map_layers=4,
            volume_res=16, volume_base=64, volume_channels=16, n_freqs=6, mlp_hidden=64, mlp_layers=2,
            feat_dim=64, fmaps_base=2048, fmaps_max=128, d_channel_base=2048, d_channel_max=128,
            batch_size=16, lr_g=0.002, lr_d=0.002, r1_weight=5.0, r1_interval=4, ema_beta=0.995,
            sample_every=200, checkpoint_every=500)

# the official training settings (volumegan_ffhq256.sh, volumegan_ffhq_config): the path-length
# penalty (weight 2 every 4 steps on half batches, decay 0.01); lr 0.002 x 16/17 (D) and x 4/5 (G),
# betas (0, 0.99 ** (16/17)) and (0, 0.99 ** (4/5)) by the engine's lazy correction
_PAPER = {"lr_d": 0.002, "lr_g": 0.002, "lazy_correction": True, "pl_weight": 2.0, "use_pg": True}

PRESETS: dict[str, dict] = {
    "ffhq256": dict(_PAPER, resolution=256, nerf_res=32),        # official volumegan_ffhq256.sh
    "celeba128": dict(_PAPER, resolution=128, nerf_res=32),      # the paper's 128^2 (CelebA / Cats) networks
    "objects128": dict(_OBJECTS, **_PAPER, resolution=128, nerf_res=32),
    "cpu": dict(_CPU),
    "cpu_objects": dict(_CPU, **_OBJECTS),
    "cpu32": dict(_CPU, resolution=32, nerf_res=16),
    "cpu32_objects": dict(_CPU, **_OBJECTS, resolution=32, nerf_res=16),
    # tests: a few ten thousand parameters
    "tiny": dict(_OBJECTS, resolution=32, nerf_res=8, n_samples=6, n_importance=0, z_dim=16, w_dim=16,
                 map_layers=2, volume_res=8, volume_base=16, volume_channels=8, n_freqs=4, mlp_hidden=16,
                 mlp_layers=2, feat_dim=16, fmaps_base=256, fmaps_max=16, d_channel_base=256,
                 d_channel_max=32, mbstd_group=2, batch_size=4, lr_g=0.002, lr_d=0.002, r1_interval=4,
                 ema_beta=0.99, sample_every=10, checkpoint_every=10, log_every=5),
}
PRESETS["cpu64"] = PRESETS["cpu"]
DEFAULT_PRESET = "cpu"

Config = VolumeGANConfig  # the name aware3d.methods.gan_common looks for


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> VolumeGANConfig:
    """A preset's config with ``overrides`` (field names of :class:`VolumeGANConfig`)."""
    return gc.make_config(Config, PRESETS, preset, **overrides)


replace_config = gc.replace_config


def config_from_dict(d: dict) -> VolumeGANConfig:
    """Rebuild a config from the plain data written to a run folder."""
    return gc.config_from_dict(Config, d)


# --------------------------------------------------------------------------------------------------
# Inputs


def n_render_layers(cfg: VolumeGANConfig) -> int:
    """Style slots of the 2D renderer: 2 (log2(S / r) + 1) (official num_cnn_layers)."""
    return 2 * (int(round(math.log2(cfg.resolution // cfg.nerf_res))) + 1)


def n_styles(cfg: VolumeGANConfig) -> int:
    """ws per image: the MLP's layers, then the 2D renderer's slots."""
    return cfg.mlp_layers + n_render_layers(cfg)


def pg_lod(cfg: VolumeGANConfig, seen_img: int) -> float:
    """Level of detail after ``seen_img`` training images (official ProgressScheduler): from
    log2(resolution / nerf_res) (the feature image's first 3 channels, nearest-upsampled) down to
    0 (full resolution); each level is trained for ``pg_training_img`` images, then the next is
    faded in linearly over ``pg_transition_img``. 0 without ``use_pg``."""
    if not cfg.use_pg:
        return 0.0
    init_lod = math.log2(cfg.resolution // cfg.nerf_res)
    duration = cfg.pg_training_img + cfg.pg_transition_img
    phase, sub = divmod(int(seen_img), duration)
    lod = init_lod - phase
    if cfg.pg_transition_img:
        lod -= max(sub - cfg.pg_training_img, 0) / cfg.pg_transition_img
    return max(float(lod), 0.0)


def pg_lod_at_step(cfg: VolumeGANConfig, step: int) -> float:
    """The level of 0-based training ``step``: updated every ``pg_repeats`` steps from the images
    seen before the step that updates it (official: at iterations 1, 5, 9, ... of ``minibatch_repeats``
    4)."""
    k = max(int(cfg.pg_repeats), 1)
    return pg_lod(cfg, (int(step) // k) * k * cfg.batch_size)


def sample_inputs(cfg: VolumeGANConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> dict:
    """z (n, Z) ~ N(0, I) and a camera ``c2w`` (n, 4, 4) from the prior; in training with
    ``style_mixing`` > 0 also ``z_mix`` (n, Z) and ``mix_cutoff`` (n,): one draw per batch (as the
    official code) of whether to mix (probability ``style_mixing``) and where (uniform in
    [mlp_layers, L)); L (no mixing) otherwise."""
    yaw, pitch = gc.sample_sphere_angles(cfg, n, generator)
    out = {"z": torch.randn(n, cfg.z_dim, generator=generator), "c2w": camera_from_angles(cfg, yaw, pitch)}
    if train and cfg.style_mixing > 0:
        L = n_styles(cfg)
        u = torch.rand(1, generator=generator)
        c = torch.randint(cfg.mlp_layers, L, (1,), generator=generator)
        cut = c if float(u) < cfg.style_mixing else torch.full((1,), L)
        out["z_mix"] = torch.randn(n, cfg.z_dim, generator=generator)
        out["mix_cutoff"] = cut.expand(n).clone()
    return out


def camera_from_angles(cfg: VolumeGANConfig, yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) at ``cfg.radius`` looking at the origin (as CIPS-3D / pi-GAN)."""
    return gc.sphere_camera(cfg, yaw_deg, pitch_deg)


# --------------------------------------------------------------------------------------------------
# 2D neural renderer


class _UpModConv1x1(ModulatedConv2d):
    """The official 1x1 modulated layer with upsampling: conv at the input size, then 2x FIR
    upsampling (gain 4), noise, bias, lrelu. A 1x1 conv commutes with the per-channel upsampling, so
    this equals ModulatedConv2d(up=2) at a quarter of its cost."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, use_noise: bool):
        super().__init__(in_channels, out_channels, 1, w_dim, up=2, use_noise=use_noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None,
                gain: float = 1.0) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), self.demodulate, 1, 0)
        x = upsample2d(x, self.resample_filter, 2)
        if self.use_noise:
            if noise is None:
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, self.activation, math.sqrt(2.0) * gain, None)


class VolumeGANRenderer(nn.Module):
    """Feature map (B, F, r, r) and ws (B, 2 (n + 1), w_dim) -> image (B, 3, S, S), n = log2(S / r)
    octaves (the official SynthesisNetwork, 'skip' architecture, ``rgb_init_res_out`` False: the
    image at r is the first 3 feature channels). Outside training the noise is a fixed buffer per
    layer (official ``noise_mode='const'``)."""

    def __init__(self, in_channels: int, nerf_res: int, resolution: int, w_dim: int, fmaps_base: int = 32768,
                 fmaps_max: int = 512, use_noise: bool = True, progressive: bool = False):
        super().__init__()
        self.nerf_res, self.resolution, self.progressive = nerf_res, resolution, progressive
        if progressive:  # level of detail (official synthesis.lod): 0 full resolution, n_octaves the feature image
            self.register_buffer("lod", torch.zeros(()))
        self.n_octaves = int(round(math.log2(resolution // nerf_res)))
        if nerf_res * 2 ** self.n_octaves != resolution:
            raise ValueError(f"resolution {resolution} must be nerf_res {nerf_res} times a power of two")
        nf = lambda r: channels_for(r, fmaps_base, fmaps_max)  # noqa: E731
        c_in = in_channels if self.n_octaves == 0 else None
        self.up, self.conv, self.to_rgb = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for k in range(1, self.n_octaves + 1):
            res = nerf_res * 2 ** k
            c_in = nf(res // 2) if k > 1 else in_channels
            self.up.append(_UpModConv1x1(c_in, nf(res), w_dim, use_noise))
            self.conv.append(ModulatedConv2d(nf(res), nf(res), 1, w_dim, use_noise=use_noise))
            self.to_rgb.append(ToRGB(nf(res), 3, w_dim))
            if use_noise:
                self.register_buffer(f"noise_const{2 * k - 1}", torch.randn(1, 1, res, res))
                self.register_buffer(f"noise_const{2 * k}", torch.randn(1, 1, res, res))
        self.use_noise = use_noise
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        if in_channels < 3:
            raise ValueError(f"feat_dim must be at least 3 (the first 3 channels are the {nerf_res}^2 image)")

    def _noise(self, i: int):
        return getattr(self, f"noise_const{i}") if self.use_noise and not self.training else None

    def forward(self, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        lod = float(self.lod) if self.progressive else 0.0
        if lod > 0:
            return self._forward_lod(x, ws, lod)
        img = x[:, :3]
        for k in range(1, self.n_octaves + 1):
            x = self.up[k - 1](x, ws[:, 2 * k - 1], noise=self._noise(2 * k - 1))
            x = self.conv[k - 1](x, ws[:, 2 * k], noise=self._noise(2 * k))
            img = upsample2d(img, self.resample_filter, 2) + self.to_rgb[k - 1](x, ws[:, 2 * k + 1])
        return img

    def _forward_lod(self, x: torch.Tensor, ws: torch.Tensor, lod: float) -> torch.Tensor:
        """The official progressive synthesis: octave k (level n - k) runs while lod < n - k + 1;
        the output is the image of the level ceil(lod), nearest-upsampled to the full size, and
        during a fade (lod between levels) alpha = ceil(lod) - lod of the finer level's image plus
        1 - alpha of the coarser one's, nearest-upsampled."""
        n = self.n_octaves
        cur = x[:, :3]
        image = cur if n - 1 < lod <= n else None
        for k in range(1, n + 1):
            level = n - k
            if lod < level + 1:
                x = self.up[k - 1](x, ws[:, 2 * k - 1], noise=self._noise(2 * k - 1))
                x = self.conv[k - 1](x, ws[:, 2 * k], noise=self._noise(2 * k))
                cur = upsample2d(cur, self.resample_filter, 2) + self.to_rgb[k - 1](x, ws[:, 2 * k + 1])
            if level - 1 < lod <= level:
                image = cur
            elif level < lod < level + 1:
                alpha = math.ceil(lod) - lod
                image = cur * alpha + F.interpolate(image, scale_factor=2, mode="nearest") * (1 - alpha)
            elif lod >= level + 1:
                image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image


# --------------------------------------------------------------------------------------------------
# Generator and discriminator


class VolumeGANGenerator(nn.Module):
    """G(inputs) = VolumeGANRenderer(volume_render(VolumeField), ws)."""

    def __init__(self, cfg: VolumeGANConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.map_layers, lr_mul=cfg.map_lr_mul,
                                      w_avg_beta=cfg.w_avg_beta)
        self.field = VolumeField(w_dim=cfg.w_dim, feat_res=cfg.volume_res, init_res=cfg.volume_init_res,
                                 base_channels=cfg.volume_base, volume_channels=cfg.volume_channels,
                                 n_freqs=cfg.n_freqs, hidden=cfg.mlp_hidden, n_layers=cfg.mlp_layers,
                                 feat_dim=cfg.feat_dim, bounds=cfg.volume_bounds, volume_layer=cfg.volume_layer)
        self.renderer = VolumeGANRenderer(cfg.feat_dim, cfg.nerf_res, cfg.resolution, cfg.w_dim,
                                          cfg.fmaps_base, cfg.fmaps_max, cfg.use_noise, progressive=cfg.use_pg)
        self.n_styles = n_styles(cfg)

    def styles(self, inputs: dict) -> torch.Tensor:
        """ws (B, L, w_dim): w(z) repeated, ws[:, cutoff:] from z_mix where ``mix_cutoff`` < L;
        outside training truncated towards w_avg by ``truncation_psi``."""
        psi = 1.0 if self.training else float(self.cfg.truncation_psi)
        z = inputs["z"].to(self.field.density_out.weight)
        w = self.mapping(z, truncation_psi=psi)
        ws = w.unsqueeze(1).expand(-1, self.n_styles, -1)
        if "mix_cutoff" in inputs and self.training:
            cut = inputs["mix_cutoff"].to(z.device)
            if bool((cut < self.n_styles).any()):
                w2 = self.mapping(inputs["z_mix"].to(z), update_w_avg=False)
                layer = torch.arange(self.n_styles, device=z.device)
                mix = (layer.unsqueeze(0) >= cut.unsqueeze(1)).unsqueeze(-1)       # (B, L, 1)
                ws = torch.where(mix, w2.unsqueeze(1), ws)
        return ws

    def camera_rays(self, c2w: torch.Tensor):
        """(rays_o, rays_d) (B, r^2, 3) of the feature-image pixels."""
        r = self.cfg.nerf_res
        c2w = c2w.to(self.field.density_out.weight)
        K = intrinsics_from_fov(self.cfg.fov, r, r).to(c2w)
        o, d = image_rays(K.expand(c2w.shape[0], 3, 3), c2w, r, r)
        return o.reshape(c2w.shape[0], r * r, 3), d.reshape(c2w.shape[0], r * r, 3)

    def render_features(self, inputs: dict, ws: torch.Tensor | None = None):
        """Rendered features (B, F, r, r), depth (B, r, r) and ws."""
        c, r = self.cfg, self.cfg.nerf_res
        ws = self.styles(inputs) if ws is None else ws
        w_mlp = ws[:, :c.mlp_layers]
        volume = self.field.make_volume(w_mlp)
        o, d = self.camera_rays(inputs["c2w"])
        out = gc.render_radiance(lambda p, dirs: self.field(p, w_mlp, volume), o, d, c.depth_range[0],
                                 c.depth_range[1], c.n_samples, c.n_importance, perturb=self.training,
                                 chunk=None if torch.is_grad_enabled() else c.chunk)
        B = o.shape[0]
        fmap = out["color"].reshape(B, r, r, -1).permute(0, 3, 1, 2)
        return fmap, out["depth"].reshape(B, r, r), ws

    def forward(self, inputs: dict, return_aux: bool = False):
        """Image (B, 3, S, S) (about [-1, 1]); with ``return_aux`` a dict with ``image``,
        ``features`` (B, F, r, r), ``depth`` (B, r, r) and ``ws``."""
        fmap, depth, ws = self.render_features(inputs)
        img = self.renderer(fmap, ws[:, self.cfg.mlp_layers:])
        if not return_aux:
            return img
        return {"image": img, "features": fmap, "depth": depth, "ws": ws}

    def density(self, points: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Raw density at world points (B, P, 3) for latents (B, Z)."""
        ws = self.styles({"z": z})[:, :self.cfg.mlp_layers]
        return self.field.density(points, ws)


class ProgressiveDiscriminator(StyleGAN2Discriminator):
    """The official VolumeGANDiscriminator with progressive growing: StyleGAN2's resnet critic plus a
    fromRGB at every resolution (down to 4x4, as the official layers ``input{i}``) and the buffer
    ``lod``. Block i (resolution / 2^i) is entered through its fromRGB of the image average-pooled
    i times when i <= lod < i + 1; during a fade (i - 1 < lod < i) its fromRGB output is blended
    into the finer block's output with alpha = lod - floor(lod); blocks with i >= lod + 1 are
    skipped. At lod 0 it is the plain critic."""

    def __init__(self, resolution: int, **kw):
        super().__init__(resolution, **kw)
        if self.architecture != "resnet" and self.architecture != "orig":
            raise ValueError("ProgressiveDiscriminator: architecture 'resnet' or 'orig'")
        for r in self.block_resolutions[1:]:
            getattr(self, f"b{r}").fromrgb = Conv2dLayer(3, self.channels[r], 1, activation="lrelu")
        self.b4.fromrgb = Conv2dLayer(3, self.channels[4], 1, activation="lrelu")  # unused, as the official
        self.register_buffer("lod", torch.zeros(()))

    @staticmethod
    def _body(block, x: torch.Tensor) -> torch.Tensor:
        if block.architecture == "resnet":
            y = block.skip(x, gain=math.sqrt(0.5))
            return y + block.conv1(block.conv0(x), gain=math.sqrt(0.5))
        return block.conv1(block.conv0(x))

    def forward(self, img: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        lod = float(self.lod)
        if lod <= 0:
            return super().forward(img, alpha)
        x = None
        for i, r in enumerate(self.block_resolutions):
            block = getattr(self, f"b{r}")
            if i <= lod < i + 1:
                x = block.fromrgb(img)
            elif i - 1 < lod < i:
                a = lod - math.floor(lod)
                x = block.fromrgb(img) * a + x * (1 - a)
            if lod < i + 1:
                x = self._body(block, x)
            if lod > i:
                img = F.avg_pool2d(img, 2)
        return self.b4(x, None)


def build_discriminator(cfg: VolumeGANConfig) -> StyleGAN2Discriminator:
    """StyleGAN2 resnet critic with minibatch std (official VolumeGANDiscriminator); with
    ``use_pg`` the :class:`ProgressiveDiscriminator` (the official fromRGB at every resolution)."""
    cls = ProgressiveDiscriminator if cfg.use_pg else StyleGAN2Discriminator
    return cls(cfg.resolution, channel_base=cfg.d_channel_base, channel_max=cfg.d_channel_max,
               architecture="resnet", mbstd_group_size=cfg.mbstd_group)


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class VolumeGANMethod:
    """Networks and inputs (the engine's default losses: non-saturating + lazy R1)."""

    name = NAME
    image_range = (-1.0, 1.0)
    latent_groups = {"latent": ["z"]}

    def __init__(self, cfg: VolumeGANConfig):
        self.cfg = cfg
        self.generator = VolumeGANGenerator(cfg)
        self.discriminator = build_discriminator(cfg)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    @staticmethod
    def path_length_forward(G: VolumeGANGenerator, inputs: dict):
        """The engine's path-length phase: (images, ws) with ws (B, L, w_dim) the styles every
        layer read (after style mixing), in the graph (official: the gradient w.r.t. ``wp``)."""
        out = G(inputs, return_aux=True)
        return out["image"], out["ws"]

    def camera_from_angles(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        return camera_from_angles(self.cfg, yaw_deg, pitch_deg)

    def angle_ranges(self) -> dict:
        return gc.sphere_angle_ranges(self.cfg)

    def set_step(self, step: int, engine=None) -> None:
        """Progressive growing (``use_pg``): the level of ``step`` (:func:`pg_lod_at_step`) into G,
        the engine's EMA G and D; with an engine and ``pg_reset_optimizer``, both optimiser states
        are cleared where the integer part or the ceiling of the level changes (a fade starts or
        ends), as the official scheduler. Called before the first step and after every step."""
        if not self.cfg.use_pg:
            return
        lod = pg_lod_at_step(self.cfg, step)
        for G in (self.generator, getattr(engine, "G_ema", None)):
            if G is not None:
                G.renderer.lod.fill_(lod)
        self.discriminator.lod.fill_(lod)
        if engine is not None and self.cfg.pg_reset_optimizer and step > 0:
            prev = pg_lod_at_step(self.cfg, step - 1)
            if int(lod) != int(prev) or math.ceil(lod) != math.ceil(prev):
                engine.opt_g.state.clear()
                engine.opt_d.state.clear()

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)


def build(cfg: VolumeGANConfig, seed: int | None = None) -> VolumeGANMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return VolumeGANMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Mesh export and the method surface


@torch.no_grad()
def export_mesh(run, seed: int = 0, resolution: int = 128, out_path=None,
                threshold: float | None = None) -> dict:
    """Marching cubes on the field's density for the latent drawn from ``seed`` (the first sample
    of :func:`sample_inputs`), over the cube [-mesh_extent, mesh_extent]^3 (world units), at
    ``threshold`` (default: the level of :func:`aware3d.train.recon.mesh_level`). Writes a
    binary PLY (default RUN/mesh_seed<seed>.ply); returns a summary."""
    cfg, G = run.config, run.G
    z = run.sample(seed)["z"].to(run.device)
    out = Path(out_path) if out_path is not None else run.path / f"mesh_seed{seed}.ply"
    ext = float(cfg.mesh_extent)
    ws = G.styles({"z": z})[:, :cfg.mlp_layers]
    volume = G.field.make_volume(ws)
    res = gc.export_density_mesh(lambda p: G.field.density(p.unsqueeze(0).to(run.device), ws, volume)[0],
                                 -ext, ext, out, resolution=resolution, threshold=threshold)
    res["extent"] = ext
    return res


PRESET_DESCRIPTIONS = {
    "ffhq256": "the official FFHQ 256x256 setting (features at 32x32, 32^3 volume)",
    "celeba128": "the paper's networks at 128x128 (CelebA / Cats)",
    "objects128": "the paper's networks on `aware3d data synth objects` at 128x128",
    "cpu": "narrow networks for a CPU: features at 16x16 rendered to 64x64, faces' poses (the default)",
    "cpu64": "the same as cpu",
    "cpu_objects": "the CPU networks on synth objects at 64x64",
    "cpu32": "the CPU networks at 32x32 (features at 16x16)",
    "cpu32_objects": "the CPU networks on synth objects at 32x32",
    "tiny": "test-sized networks at 32x32",
}

METHOD = GenerativeMethod(
    NAME, "VolumeGAN", VolumeGANConfig, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=programs_for(VolumeGANMethod.latent_groups), mesh=export_mesh,
    paper="Xu et al., CVPR 2022")
PROGRAMS = tuple(METHOD.programs)
