"""CIPS-3D (Zhou et al. 2021): a shallow NeRF for shape, a deep per-pixel INR for appearance
(PAPERS.md card 8). Networks in :mod:`aware3d.fields.cips`.

    sample_inputs         z_shape, z_app, camera c2w (yaw / pitch prior), the rays that backprop
    camera_rays           one ray per NeRF pixel (render/cameras.image_rays)
    render_features       ShallowFeatureNerf volume-rendered with stratified + hierarchical
                          samples (render_official / gan_common.render_radiance) -> feature map (B, F, r, r)
    aux RGB               linear + tanh on the NeRF features: the shallow branch's own image
    CIPSDecoder           per pixel (features bilinearly upsampled to S x S when r < S): ModFC
                          blocks conditioned on w(z_app), tRGB summed -> image (B, 3, S, S) in [-1, 1]

Training (official ``ffhq_exp`` settings in the presets): non-saturating GAN loss + R1 on the final
image (the official D loss adds 0.5 r1_lambda ||grad||^2 with r1_lambda 10: ``r1_weight`` 5), and an
auxiliary discriminator on the NeRF's own RGB at the NeRF resolution (the fix for the
mirror-symmetry problem: the NeRF itself must look like a face, not only after the 2D network);
the official losses are means over the main and auxiliary batches together (``aux_average``: half
of main + aux); D steps before G (``d_first``); gradient norms clipped at 10 (``grad_clip``);
density noise 1 -> 0 over 5000 steps (``density_noise``); Adam betas (0, 0.999), lr G 2e-4 / D 2e-3.
Runs saved before these keys existed keep their old behaviour (no averaging, G before D, no
clipping, no noise).

Networks (``arch``): ``"official"`` (the paper presets) are the official ``GeneratorNerfINR``
modules, weight-transferred against them (BENCHMARKS.md): the NeRF's FiLM frequencies and phases
are per-layer linear maps of one style from a 4 x 128 mapping, no view directions, a half-width FiLM
colour layer (:class:`aware3d.fields.cips.CipsFilmNerf`); the per-pixel network has 9 blocks of
two style-modulated FC layers (no bias), residual sums from block 4, plain linear tRGBs from block 3
(:class:`aware3d.fields.cips.CipsNetDecoder`), its style from an 8 x 512 mapping with LayerNorm.
``"v1"`` (the default: runs saved before the key) are aware3d's earlier networks (pi-GAN's
mapping and colour layer, 5 StyleGAN2 ModFC blocks with a modulated tRGB after each).
Critics (``d_arch``): ``"msd"`` (the paper presets) are the official StyleGAN2-style multi-scale
residual critics (``Discriminator_MultiScale_Aux``: channel multiplier 2, the auxiliary one
downsampling in the first conv of each block, no minibatch std; fade-in ``alpha`` = step /
``d_fade_steps``, 0: alpha 1 throughout, as the official ``train_ffhq`` whose ``warmup_D`` is
off) in :mod:`aware3d.nets.stylegan2_msd`; ``"dcgan"`` (the default) is :class:`Cips3DDiscriminator`.
Sampling (``sampling``): ``"official"`` (the paper presets) casts the pixel rays as the official
``get_initial_rays_trig`` (linspace(-1, 1, r) x tan(fov / 2): the outer pixels' rays on the fov's
edges) and draws depths linspace(near, far, n) + U(-d/2, d/2) in training (and, as the official,
at inference too with ``eval_jitter``); ``"v1"``: pixel centres and n equal bins of [near, far].
Hierarchical samples (``fine_sampling``): ``"official"`` (the paper presets) as the official
``get_fine_points_and_direction`` (:func:`render_official`: inverse-CDF samples between the midpoints
of the jittered coarse depths from their inner weights + 1e-5, the density noise drawn again for
the composite); ``"v1"``: :func:`gan_common.render_radiance` (bins of the coarse samples).
``eval_jitter`` (the paper presets): jittered coarse depths and random fine levels outside training
too, as the official renders, from a generator seeded 0 at each call (a render is reproducible;
the draws depend on the batch's size, not on ``chunk``); off: unjittered depths, evenly spaced levels.
Partial gradient backpropagation: per image only ``grad_rays``
randomly chosen NeRF rays are rendered with autograd, the others under ``no_grad`` (so the memory
and time of the NeRF's backward scale with ``grad_rays``); the 2D decoder sees every pixel.

Controls: shape = z_shape (NeRF), appearance = z_app (INR); camera yaw / pitch.
``METHOD`` is its surface (:class:`aware3d.methods.base.GenerativeMethod`): train, load, render,
evaluate, :func:`export_mesh`, and as programs the shared GAN controls plus ``aux``
(:func:`render_aux`). The engine runs its own G / D objectives (``generator_objective`` /
``discriminator_objective``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.cips import (CIPSDecoder, CipsFilmNerf, CipsMapping, CipsNetDecoder, ShallowFeatureNerf,
                           StyleMapping, _frequency_init_)
from ..render.cameras import image_rays, intrinsics, intrinsics_from_fov
from ..train.gan import discriminator_loss, generator_loss, r1_penalty
from ..programs import Program
from ..programs.gan import programs_for
from ..nets.discriminators import DCDiscriminator
from ..nets.stylegan2_msd import MultiScaleDiscriminator, msd_channels
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "cips3d"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Cips3DConfig(gc.RunSettings):
    """Every setting of a CIPS-3D run (plain data; written to the run folder's config)."""

    resolution: int = 64                # output image size
    nerf_res: int = 64                  # NeRF feature map size (official: the output size)
    # camera: on a sphere looking at the origin; yaw = azimuth, pitch = elevation (degrees)
    camera_dist: str = "gaussian"       # gaussian (faces: pi-GAN prior) | uniform
    yaw_mean: float = 0.0               # mean yaw, azimuth from +x towards +y (degrees; gaussian prior)
    pitch_mean: float = 0.0             # mean pitch, elevation above the xy-plane (degrees; gaussian prior)
    yaw_std: float = math.degrees(0.3)      # official h_stddev 0.3 rad
    pitch_std: float = math.degrees(0.155)  # official v_stddev 0.155 rad
    yaw_range: tuple = (-180.0, 180.0)  # uniform
    pitch_range: tuple = (20.0, 60.0)   # uniform: elevation above the xy-plane (degrees), (min, max)
    radius: float = 1.0                 # camera distance from the origin (world units)
    fov: float = 12.0                   # field of view of the square NeRF image (degrees)
    depth_range: tuple = (0.88, 1.12)   # near, far ray bounds (distance from the camera, world units)
    n_samples: int = 12                 # coarse samples per ray
    n_importance: int = 12              # hierarchical samples per ray (0: off)
    box_scale: float = 2 / 0.24         # points x box_scale before the SIREN (UniformBoxWarp(0.24))
    # networks (official ffhq_exp)
    z_shape_dim: int = 256              # shape code z_s size (input of the NeRF's mapping network)
    z_app_dim: int = 512                # appearance code z_a size (input of the z_a -> w mapping)
    nerf_hidden: int = 128              # width of the shallow NeRF's FiLM-SIREN layers
    nerf_layers: int = 2                # FiLM-SIREN layers of the shallow NeRF
    nerf_map_hidden: int = 128          # NeRF mapping network width (z_s -> frequencies and phase shifts)
    nerf_map_layers: int = 4            # NeRF mapping network hidden layers
    feat_dim: int = 32                  # channels of the NeRF's feature map (input of the INR decoder)
    inr_hidden: int = 512               # width of the INR decoder's modulated FC layers
    inr_blocks: int = 5                 # blocks of the INR (official arch: 9, one per octave 4..1024, at every size)
    w_dim: int = 512                    # style w size (modulates the INR decoder)
    inr_map_layers: int = 8             # linear + LeakyReLU layers of the z_a -> w mapping
    d_feat: int = 512                   # channels at 4x4 of both discriminators (main and auxiliary)
    # losses and partial backprop
    aux_weight: float = 1.0             # auxiliary discriminator on the NeRF's RGB
    grad_rays: int = 256                # rays per image that backprop through the NeRF (official 256)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 32                # global batch: images per step (split over ranks)
    optimizer: str = "adam"             # adam | rmsprop (the paper: Adam)
    lr_g: float = 2e-4                  # generator learning rate
    lr_d: float = 2e-3                  # discriminator learning rate
    betas: tuple = (0.0, 0.999)         # Adam (beta1, beta2)
    r1_weight: float = 10.0             # R1: D loss += r1_weight E||grad_x D(x)||^2 (aux D: x aux_weight);
    #                                     the presets: 5 = 0.5 x the official r1_lambda 10
    # fidelity to the official code (PeterouZh/CIPS-3D ffhq_exp). The defaults are aware3d's earlier
    # behaviour, which runs saved without these keys keep; every preset sets the official value.
    aux_average: bool = False           # official: G and D losses are the mean over the main and the
    #                                     auxiliary batch, (main + aux_weight aux) / 2; False: main + aux_weight aux
    d_first: bool = False               # each step trains D, then G (official); False: G, then D
    grad_clip: float = 0.0              # clip the gradient norm of G and of D (official 10); 0: off
    density_noise: float = 0.0          # N(0, s^2) on the NeRF's raw densities in training, s decays
    noise_anneal_steps: int = 5000      # ... linearly to 0 over these steps (official nerf_noise 1 -> 0)
    arch: str = "v1"                    # networks: "official" (GeneratorNerfINR) | "v1" (aware3d's earlier ones)
    inr_rgb_from: int = 3               # official arch: tRGBs from this block on (official 3)
    inr_skip_from: int = 4              # official arch: residual sums from this block on (official 4)
    d_arch: str = "dcgan"               # critics: "msd" (official multi-scale StyleGAN2-style) | "dcgan"
    d_channel_multiplier: int = 2       # msd: the main critic's channel multiplier (official 2)
    d_mbstd_group: int = 0              # msd: minibatch-std group size, 0: none (official stddev_group 0)
    d_fade_steps: int = 0               # msd: alpha = min(1, step / d_fade_steps); 0: alpha 1 (official
    #                                     train_ffhq: warmup_D off; train_ffhq_high: 10000)
    sampling: str = "v1"                # "official": pixel rays on linspace(-1, 1, r) x tan(fov / 2) (the outer
    #                                     pixels' rays on the fov's edges) and depths linspace(near, far, n)
    #                                     + U(-d/2, d/2) (d their spacing); "v1": rays through pixel centres
    #                                     of the fov, depths jittered in n equal bins of [near, far]
    fine_sampling: str = "v1"           # "official": hierarchical depths (sample_pdf) between the midpoints of the
    #                                     coarse depths from their inner weights + 1e-5, density noise drawn
    #                                     afresh for the final composite (official get_fine_points_and_direction);
    #                                     "v1": gan_common.render_radiance (the coarse bins, all weights)
    eval_jitter: bool = False           # jittered coarse depths and random fine levels outside training too (the
    #                                     official renders so), drawn from a generator seeded 0 at each call;
    #                                     False: unjittered coarse depths, evenly spaced fine levels
    preset: str = "cpu"
    # render-time only
    mesh_extent: float = 0.15           # half side of the mesh export cube (world units)
    chunk: int = 2048                   # NeRF rays per field call at inference, over the whole batch
    decode_chunk: int = 16384           # pixels per decoder call at inference, over the whole batch


# The built-in synthetic objects (data.synth.synth_objects defaults): camera radius 6, fov 40,
# elevation U[20, 60], any azimuth; objects within ~2 units of the origin.
_OBJECTS = dict(camera_dist="uniform", yaw_range=(-180.0, 180.0), pitch_range=(20.0, 60.0), radius=6.0,
                fov=40.0, depth_range=(3.5, 8.5), box_scale=1 / 2.5, mesh_extent=2.5)
# 2-core CPU: narrow networks, NeRF at 32^2 upsampled to 64^2, no hierarchical samples, EMA 0.995
_CPU = dict(resolution=64, nerf_res=32, n_samples=12, n_importance=0, z_shape_dim=64, z_app_dim=64,
            nerf_hidden=64, nerf_map_hidden=64, nerf_map_layers=3, feat_dim=16, inr_hidden=64,
            inr_blocks=3, w_dim=64, inr_map_layers=3, d_feat=128, grad_rays=256, batch_size=16,
            lr_g=2e-4, lr_d=2e-4, ema_beta=0.995, sample_every=200, checkpoint_every=500)

PRESETS: dict[str, dict] = {
    "ffhq64": dict(resolution=64, nerf_res=64),            # official train_ffhq_r64 (FFHQ / CelebA faces)
    "ffhq128": dict(resolution=128, nerf_res=128),
    "objects64": dict(_OBJECTS, resolution=64, nerf_res=64),
    "cpu": dict(_CPU),
    "cpu_objects": dict(_CPU, **_OBJECTS),
    "cpu32": dict(_CPU, resolution=32, nerf_res=16, grad_rays=64),
    "cpu32_objects": dict(_CPU, **_OBJECTS, resolution=32, nerf_res=16, grad_rays=64),
    # tests: a few thousand parameters
    "tiny": dict(_OBJECTS, resolution=32, nerf_res=8, n_samples=6, n_importance=0, z_shape_dim=8,
                 z_app_dim=8, nerf_hidden=16, nerf_layers=2, nerf_map_hidden=16, nerf_map_layers=1,
                 feat_dim=8, inr_hidden=16, inr_blocks=2, w_dim=16, inr_map_layers=1, d_feat=32,
                 grad_rays=16, batch_size=4, sample_every=10, checkpoint_every=10, log_every=5),
}
PRESETS["celeba64"] = PRESETS["ffhq64"]
# the official training settings (train_ffhq): every preset. The official grad_points 256 is squared
# (256^2 rays per image): every NeRF ray backprops at the paper sizes; the CPU presets keep aware3d's
# partial backprop (grad_rays), a speed setting of theirs.
_OFFICIAL = dict(aux_average=True, d_first=True, grad_clip=10.0, density_noise=1.0, r1_weight=5.0)
for _name, _p in PRESETS.items():
    if "aux_average" not in _p:
        _p.update(_OFFICIAL)
for _name in ("ffhq64", "ffhq128", "objects64"):
    PRESETS[_name]["grad_rays"] = 256 * 256
    # the official networks and critics; the official INR runs its 9 blocks at every image size
    PRESETS[_name].update(arch="official", inr_blocks=9, d_arch="msd", d_fade_steps=0, sampling="official",
                          fine_sampling="official", eval_jitter=True)
DEFAULT_PRESET = "cpu"


Config = Cips3DConfig  # the name aware3d.methods.gan_common looks for


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> Cips3DConfig:
    """A preset's config with ``overrides`` (field names of :class:`Cips3DConfig`)."""
    return gc.make_config(Config, PRESETS, preset, **overrides)


replace_config = gc.replace_config


def config_from_dict(d: dict) -> Cips3DConfig:
    """Rebuild a config from the plain data written to a run folder."""
    return gc.config_from_dict(Config, d)


# --------------------------------------------------------------------------------------------------
# Inputs: latents, camera, ray depths, gradient rays


def camera_from_angles(cfg: Cips3DConfig, yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) of the spherical camera prior (:func:`aware3d.methods.gan_common.sphere_camera`)."""
    return gc.sphere_camera(cfg, yaw_deg, pitch_deg)


def sample_pose(cfg: Cips3DConfig, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) (n,) degrees from the camera prior (:func:`aware3d.methods.gan_common.sample_sphere_angles`)."""
    return gc.sample_sphere_angles(cfg, n, generator)


def sample_inputs(cfg: Cips3DConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> dict:
    """z_shape (n, Zs), z_app (n, Za) ~ N(0, I); a camera ``c2w`` (n, 4, 4) from the prior; in
    training ``ray_perm`` (n, r^2): a random permutation of the NeRF rays per image, whose first
    ``grad_rays`` backprop through the NeRF."""
    R = cfg.nerf_res * cfg.nerf_res
    yaw, pitch = sample_pose(cfg, n, generator)
    out = {"z_shape": torch.randn(n, cfg.z_shape_dim, generator=generator),
           "z_app": torch.randn(n, cfg.z_app_dim, generator=generator),
           "c2w": camera_from_angles(cfg, yaw, pitch)}
    if train and 0 < cfg.grad_rays < R:
        out["ray_perm"] = torch.argsort(torch.rand(n, R, generator=generator), dim=1)
    return out


# --------------------------------------------------------------------------------------------------
# Generator


def official_fine_depths(t: torch.Tensor, sigma: torch.Tensor, n_fine: int, *, deterministic: bool = False,
                         generator: torch.Generator | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """The official hierarchical depths (``get_fine_points_and_direction``): ``n_fine`` inverse-CDF
    samples (:func:`aware3d.render.samplers.sample_pdf`) over the bins between the midpoints of the
    coarse depths t (B, R, N), weighted by the coarse weights of the raw densities ``sigma`` (B, R, N)
    without the first and the last, + 1e-5. ``u`` (B, R, n_fine): the CDF levels (else drawn from
    ``generator``; evenly spaced with ``deterministic``). Detached (B, R, n_fine)."""
    from ..render.samplers import sample_pdf
    from ..render.volume import render_weights

    with torch.no_grad():
        w = render_weights(sigma, t)[0]
        mids = 0.5 * (t[..., 1:] + t[..., :-1])
        return sample_pdf(mids, w[..., 1:-1] + 1e-5, n_fine, deterministic=deterministic, generator=generator, u=u)


def render_official(field_fn, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far, n_samples: int,
                    n_importance: int, *, perturb: bool = False, noise_std: float = 0.0,
                    generator: torch.Generator | None = None, chunk: int | None = None,
                    u_coarse: torch.Tensor | None = None, u_fine: torch.Tensor | None = None) -> dict:
    """The official CIPS-3D render of rays (B, R, 3) through ``field_fn(points (B, M, 3), dirs
    (B, M, 3)) -> (sigma raw (B, M), features (B, M, C))`` (``GeneratorNerfINR.points_forward``).

    ``n_samples`` coarse depths in equal bins of [near, far] (uniform in each with ``perturb``, else
    the bin centres; with the bounds widened by half a spacing these are the official
    linspace(near, far, n) + U(-d/2, d/2)); then :func:`official_fine_depths` from the coarse
    densities + N(0, noise_std^2) (one draw), evaluated and merged with the coarse samples, sorted;
    the composite adds a fresh N(0, noise_std^2) to every density (the official draws the density
    noise again in its final ``fancy_integration``). The random draws, in the official order: the
    jitter, the pdf noise, the CDF levels, the final noise (``generator`` for the uniform ones, the
    global generator for the noise; ``u_coarse`` (B, R, n_samples) / ``u_fine`` (B, R, n_importance)
    given instead). ``chunk`` bounds the rays per field call over the batch (inference); the
    uniform draws of the whole batch come first then, so a render does not depend on ``chunk``.
    Returns ``{"color" (B, R, C), "depth" (B, R) sum_i w_i t_i, "opacity" (B, R)}``."""
    from ..render.samplers import points_along_rays, stratified_samples
    from ..render.volume import volume_render

    B, R = rays_o.shape[:2]
    dt, dev = rays_o.dtype, rays_o.device
    if chunk is not None and B * R > chunk and R > 1:
        step = max(1, int(chunk) // B)
        if perturb and u_coarse is None:
            u_coarse = torch.rand((B, R, n_samples), dtype=dt, device=dev, generator=generator)
        if perturb and n_importance > 0 and u_fine is None:
            u_fine = torch.rand((B, R, n_importance), dtype=dt, device=dev, generator=generator)
        parts = [render_official(field_fn, rays_o[:, a:a + step], rays_d[:, a:a + step], near, far, n_samples,
                                 n_importance, perturb=perturb, noise_std=noise_std, generator=generator,
                                 u_coarse=None if u_coarse is None else u_coarse[:, a:a + step],
                                 u_fine=None if u_fine is None else u_fine[:, a:a + step])
                 for a in range(0, R, step)]
        return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}

    def evaluate(t):
        N = t.shape[-1]
        pts = points_along_rays(rays_o, rays_d, t).reshape(B, R * N, 3)
        s, c = field_fn(pts, rays_d.unsqueeze(2).expand(B, R, N, 3).reshape(B, R * N, 3))
        up = torch.promote_types(s.dtype, torch.float32)      # low-precision fields composite in float32
        return s.to(up).reshape(B, R, N), c.to(up).reshape(B, R, N, -1)

    def noisy(s):
        return s + noise_std * torch.randn_like(s) if noise_std > 0 else s

    t, _ = stratified_samples(near, far, n_samples, batch_shape=(B, R), perturb=perturb, dtype=dt, device=dev,
                              generator=generator, u=u_coarse)
    sigma, values = evaluate(t)
    if n_importance > 0:
        t_f = official_fine_depths(t, noisy(sigma), n_importance, deterministic=not perturb,
                                   generator=generator, u=u_fine)
        s_f, v_f = evaluate(t_f)
        t, order = torch.sort(torch.cat([t_f, t], -1), -1)          # official: fine first, then sorted
        sigma = torch.gather(torch.cat([s_f, sigma], -1), -1, order)
        values = torch.cat([v_f, values], -2)
        values = torch.gather(values, -2, order.unsqueeze(-1).expand(*order.shape, values.shape[-1]))
    out = volume_render(noisy(sigma), values, t)
    return {"color": out["color"], "depth": out["depth"], "opacity": out["opacity"]}


def _gather_rays(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, R, ...) rows ``idx`` (B, K) -> (B, K, ...)."""
    view = idx.reshape(*idx.shape, *([1] * (x.dim() - 2))).expand(*idx.shape, *x.shape[2:])
    return x.gather(1, view)


def _scatter_rays(parts, R: int) -> torch.Tensor:
    """[(idx (B, K_i), values (B, K_i, C))] covering 0..R-1 -> (B, R, C), differentiable in values."""
    v0 = parts[0][1]
    out = v0.new_zeros(v0.shape[0], R, v0.shape[-1])
    for idx, v in parts:
        out = out.scatter(1, idx.unsqueeze(-1).expand(-1, -1, v.shape[-1]), v)
    return out


class Cips3DGenerator(nn.Module):
    """G(inputs) = CIPSDecoder(upsample(volume_render(ShallowFeatureNerf)), w(z_app))."""

    def __init__(self, cfg: Cips3DConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.arch == "official":
            self.nerf = CipsFilmNerf(feat_dim=cfg.feat_dim, z_dim=cfg.z_shape_dim, hidden=cfg.nerf_hidden,
                                     n_layers=cfg.nerf_layers, map_hidden=cfg.nerf_map_hidden,
                                     map_layers=cfg.nerf_map_layers, box_scale=cfg.box_scale)
            self.mapping = CipsMapping(cfg.z_app_dim, cfg.w_dim, cfg.inr_map_layers, layer_norm=True, norm_out=True)
            self.decoder = CipsNetDecoder(cfg.feat_dim, cfg.inr_hidden, cfg.inr_blocks, cfg.w_dim,
                                          rgb_from=min(cfg.inr_rgb_from, cfg.inr_blocks - 1),
                                          skip_from=cfg.inr_skip_from)
            self.aux_to_rgb = _frequency_init_(nn.Linear(cfg.feat_dim, 3), 25.0)
        elif cfg.arch == "v1":
            self.nerf = ShallowFeatureNerf(feat_dim=cfg.feat_dim, z_dim=cfg.z_shape_dim, hidden=cfg.nerf_hidden,
                                           n_layers=cfg.nerf_layers, map_hidden=cfg.nerf_map_hidden,
                                           map_layers=cfg.nerf_map_layers, box_scale=cfg.box_scale)
            self.mapping = StyleMapping(cfg.z_app_dim, cfg.w_dim, cfg.inr_map_layers)
            self.decoder = CIPSDecoder(cfg.feat_dim, cfg.inr_hidden, cfg.inr_blocks, cfg.w_dim)
            self.aux_to_rgb = nn.Linear(cfg.feat_dim, 3)
        else:
            raise ValueError(f"arch: expected official or v1, got {cfg.arch!r}")
        if cfg.fine_sampling not in ("official", "v1"):
            raise ValueError(f"fine_sampling: expected official or v1, got {cfg.fine_sampling!r}")
        if cfg.eval_jitter and cfg.fine_sampling != "official" and cfg.n_importance > 0:
            raise ValueError("eval_jitter: needs fine_sampling='official' with hierarchical samples (n_importance > 0)")
        self.density_noise = 0.0        # training regulariser, set per step by Cips3DMethod.set_step

    def camera_rays(self, c2w: torch.Tensor):
        """(rays_o, rays_d) (B, r^2, 3) of the NeRF pixels."""
        r = self.cfg.nerf_res
        c2w = c2w.to(self.aux_to_rgb.weight)
        if self.cfg.sampling == "official":  # NDC linspace(-1, 1, r): focal (r - 1) / 2 / tan(fov / 2)
            f = 0.5 * (r - 1) / math.tan(0.5 * math.radians(self.cfg.fov))
            K = intrinsics(f, f, r / 2.0, r / 2.0).to(c2w)
        else:
            K = intrinsics_from_fov(self.cfg.fov, r, r).to(c2w)
        o, d = image_rays(K.expand(c2w.shape[0], 3, 3), c2w, r, r)
        return o.reshape(c2w.shape[0], r * r, 3), d.reshape(c2w.shape[0], r * r, 3)

    def render_rays(self, o: torch.Tensor, d: torch.Tensor, freqs, phases,
                    generator: torch.Generator | None = None):
        """Volume-rendered features (B, K, F) and depth (B, K) of rays o, d (B, K, 3): stratified
        samples (jittered in training, and outside it with ``eval_jitter``) + ``n_importance``
        hierarchical ones (``fine_sampling``: the official scheme, :func:`render_official`, or
        :func:`gan_common.render_radiance`'s). ``generator`` draws the jitter and fine levels of
        :func:`render_official` (default the global one)."""
        c = self.cfg
        near, far = c.depth_range
        if c.sampling == "official" and c.n_samples > 1:
            # linspace(near, far, n) + U(-d/2, d/2) = n equal bins of [near - d/2, far + d/2]
            half = 0.5 * (far - near) / (c.n_samples - 1)
            near, far = near - half, far + half

        def field(p, dirs):
            return self.nerf(p, dirs, freqs=freqs, phases=phases)

        noise = self.density_noise if self.training else 0.0
        chunk = None if torch.is_grad_enabled() else c.chunk
        if c.fine_sampling == "official" or c.eval_jitter:
            out = render_official(field, o, d, near, far, c.n_samples, c.n_importance,
                                  perturb=self.training or bool(c.eval_jitter), noise_std=noise,
                                  generator=generator, chunk=chunk)
        else:
            out = gc.render_radiance(field, o, d, near, far, c.n_samples, c.n_importance,
                                     perturb=self.training, noise_std=noise, chunk=chunk)
        return out["color"], out["depth"]

    def render_features(self, inputs: dict):
        """NeRF feature map (B, F, r, r) and depth (B, r, r). With ``ray_perm`` in ``inputs`` and
        autograd on, only its first ``grad_rays`` rays are rendered with gradients (partial
        gradient backpropagation); the others are rendered under ``no_grad``."""
        cfg, r = self.cfg, self.cfg.nerf_res
        freqs, phases = self.nerf.modulation(inputs["z_shape"])
        o, d = self.camera_rays(inputs["c2w"])
        B, R = o.shape[:2]
        gen = None
        if cfg.eval_jitter and not self.training:  # random samples, the same at every call (reproducible renders)
            gen = torch.Generator(device=o.device).manual_seed(0)
        perm = inputs.get("ray_perm")
        if perm is None or not torch.is_grad_enabled():
            feat, depth = self.render_rays(o, d, freqs, phases, gen)
        else:
            g_idx, n_idx = perm[:, :cfg.grad_rays], perm[:, cfg.grad_rays:]
            fg, dg = self.render_rays(_gather_rays(o, g_idx), _gather_rays(d, g_idx), freqs, phases, gen)
            with torch.no_grad():
                fn, dn = self.render_rays(_gather_rays(o, n_idx), _gather_rays(d, n_idx), freqs, phases, gen)
            feat = _scatter_rays([(g_idx, fg), (n_idx, fn)], R)
            depth = _scatter_rays([(g_idx, dg.unsqueeze(-1)), (n_idx, dn.unsqueeze(-1))], R)[..., 0]
        return feat.reshape(B, r, r, -1).permute(0, 3, 1, 2), depth.reshape(B, r, r)

    def decode(self, fmap: torch.Tensor, z_app: torch.Tensor) -> torch.Tensor:
        """Per-pixel ModFC decoder: feature map (B, F, r, r) -> image (B, 3, S, S) in [-1, 1]."""
        S = self.cfg.resolution
        if fmap.shape[-1] != S:
            fmap = F.interpolate(fmap, size=(S, S), mode="bilinear", align_corners=False)
        B, C = fmap.shape[:2]
        feats, w = fmap.permute(0, 2, 3, 1).reshape(B, S * S, C), self.mapping(z_app)
        n = S * S if torch.is_grad_enabled() else max(1, self.cfg.decode_chunk // B)
        if n >= S * S:
            rgb = self.decoder(feats, w)
        else:  # inference: pixels are independent; bounded working set (1.5x faster at batch 16)
            rgb = torch.cat([self.decoder(feats[:, a:a + n], w) for a in range(0, S * S, n)], 1)
        return rgb.reshape(B, S, S, 3).permute(0, 3, 1, 2)

    def aux_image(self, fmap: torch.Tensor) -> torch.Tensor:
        """The shallow branch's own RGB (B, 3, r, r) in [-1, 1]."""
        return torch.tanh(self.aux_to_rgb(fmap.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)

    def forward(self, inputs: dict, return_aux: bool = False):
        """Image (B, 3, S, S) in [-1, 1]; with ``return_aux`` a dict with ``image``, ``aux``
        (B, 3, r, r), ``features`` (B, F, r, r) and ``depth`` (B, r, r)."""
        fmap, depth = self.render_features(inputs)
        img = self.decode(fmap, inputs["z_app"])
        if not return_aux:
            return img
        return {"image": img, "aux": self.aux_image(fmap), "features": fmap, "depth": depth}

    def density(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        """Raw NeRF density at world points (B, P, 3) for codes (B, Zs)."""
        return self.nerf.density(points, z_shape)


class Cips3DDiscriminator(nn.Module):
    """The main critic on S x S images and the auxiliary one on the NeRF's r x r RGB (both
    DCGAN-style, :class:`aware3d.nets.discriminators.DCDiscriminator`). ``forward`` is the main one."""

    def __init__(self, cfg: Cips3DConfig):
        super().__init__()
        self.main = DCDiscriminator(n_feat=cfg.d_feat, img_size=cfg.resolution)
        self.aux = DCDiscriminator(n_feat=cfg.d_feat, img_size=cfg.nerf_res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Cips3DMSDiscriminator(nn.Module):
    """The official critics (``Discriminator_MultiScale_Aux``): the main one on S x S images
    (channel table ``main`` x ``d_channel_multiplier``), the auxiliary one on the NeRF's r x r RGB
    (table ``aux``, downsampling in the first conv of each block). Both fade with ``alpha`` (set per
    step by :meth:`Cips3DMethod.set_step`). ``forward`` is the main one."""

    def __init__(self, cfg: Cips3DConfig):
        super().__init__()
        self.main = MultiScaleDiscriminator(cfg.resolution, msd_channels("main", cfg.d_channel_multiplier),
                                            first_downsample=False, mbstd_group=cfg.d_mbstd_group)
        self.aux = MultiScaleDiscriminator(cfg.nerf_res, msd_channels("aux"), first_downsample=True,
                                           mbstd_group=cfg.d_mbstd_group)
        self.set_alpha(1.0)

    def set_alpha(self, alpha: float) -> None:
        self.alpha = self.main.alpha = self.aux.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def make_discriminator(cfg: Cips3DConfig) -> nn.Module:
    if cfg.d_arch == "msd":
        return Cips3DMSDiscriminator(cfg)
    if cfg.d_arch == "dcgan":
        return Cips3DDiscriminator(cfg)
    raise ValueError(f"d_arch: expected msd or dcgan, got {cfg.d_arch!r}")


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class Cips3DMethod:
    """Networks, inputs and objectives (the GAN engine runs its ``generator_objective`` and
    ``discriminator_objective``)."""

    name = NAME
    image_range = (-1.0, 1.0)
    # controls (gan_common): NeRF code, INR code, both
    latent_groups = {"shape": ["z_shape"], "appearance": ["z_app"], "latent": ["z_shape", "z_app"]}

    def __init__(self, cfg: Cips3DConfig):
        self.cfg = cfg
        self.generator = Cips3DGenerator(cfg)
        self.discriminator = make_discriminator(cfg)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def camera_from_angles(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        return camera_from_angles(self.cfg, yaw_deg, pitch_deg)

    def angle_ranges(self) -> dict:
        return gc.sphere_angle_ranges(self.cfg)

    def generator_objective(self, G, D, inputs: dict):
        out = G(inputs, return_aux=True)
        l_gan = generator_loss(D.main(out["image"]))
        loss, scalars = l_gan, {"loss_G": l_gan.detach()}
        if self.cfg.aux_weight > 0:
            l_aux = generator_loss(D.aux(out["aux"]))
            loss = loss + self.cfg.aux_weight * l_aux
            scalars["loss_G_aux"] = l_aux.detach()
            if self.cfg.aux_average:  # official: softplus(-D(.)) averaged over the 2B main + aux images
                loss = 0.5 * loss
        return loss, scalars

    def discriminator_objective(self, G, D, real: torch.Tensor, inputs: dict, r1_weight: float):
        with torch.no_grad():
            fake = G(inputs, return_aux=True)
        x_real = real.detach().requires_grad_(r1_weight > 0)
        d_real, d_fake = D.main(x_real), D.main(fake["image"])
        l_real, l_fake = discriminator_loss(d_real, d_fake)
        loss = l_real + l_fake
        out = {"loss_D": loss.detach(), "loss_D_real": l_real.detach(), "loss_D_fake": l_fake.detach(),
               "D_real": d_real.detach().mean(), "D_fake": d_fake.detach().mean(),
               "fake_std": fake["image"].detach().float().std()}
        if r1_weight > 0:
            pen = r1_penalty(d_real, x_real)
            loss = loss + r1_weight * pen
            out["R1"] = pen.detach()
        if self.cfg.aux_weight > 0:
            r = self.cfg.nerf_res
            small = real.detach() if real.shape[-1] == r else F.interpolate(real.detach(), size=(r, r), mode="area")
            small = small.requires_grad_(r1_weight > 0)
            a_real, a_fake = D.aux(small), D.aux(fake["aux"])
            la_real, la_fake = discriminator_loss(a_real, a_fake)
            loss = loss + self.cfg.aux_weight * (la_real + la_fake)
            out["loss_D_aux"] = (la_real + la_fake).detach()
            if r1_weight > 0:
                pen_a = r1_penalty(a_real, small)
                loss = loss + self.cfg.aux_weight * r1_weight * pen_a
                out["R1_aux"] = pen_a.detach()
            if self.cfg.aux_average:  # official: every term averaged over the 2B main + aux images
                loss = 0.5 * loss
        return loss, out

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)

    def set_step(self, step: int, engine=None) -> None:
        """The density noise of ``step``: density_noise * max(0, 1 - step / noise_anneal_steps); the
        critics' fade-in alpha: min(1, step / d_fade_steps) (1 with d_fade_steps 0)."""
        c = self.cfg
        self.generator.density_noise = c.density_noise * max(0.0, 1.0 - step / max(c.noise_anneal_steps, 1))
        if hasattr(self.discriminator, "set_alpha"):
            self.discriminator.set_alpha(fade_alpha(step, c.d_fade_steps))


def fade_alpha(step: int, fade_steps: int) -> float:
    """The official fade-in: min(1, step / fade_steps); 1 when fade_steps is 0 (no fade-in)."""
    return 1.0 if fade_steps <= 0 else min(1.0, step / fade_steps)


def build(cfg: Cips3DConfig, seed: int | None = None) -> Cips3DMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return Cips3DMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Extra render, mesh export and the method surface


@torch.no_grad()
def render_aux(run, seed: int = 0, n_samples: int = 4, out_path=None) -> Path:
    """The final images beside the shallow NeRF's own RGB (upsampled), one row per sample, of a
    loaded run: the check of the mirror-symmetry fix. Writes a PNG (default
    RUN/render/aux_seed<seed>.png)."""
    from ..train.io import make_grid, save_png

    method, G = run.gan, run.G
    x = {k: v.to(run.device) for k, v in run.sample(seed, n_samples).items()}
    o = G(x, return_aux=True)
    aux = F.interpolate(o["aux"], size=o["image"].shape[-2:], mode="nearest")
    pairs = torch.stack([o["image"], aux], 1).flatten(0, 1)
    out = Path(out_path) if out_path is not None else run.path / "render" / f"aux_seed{seed}.png"
    return save_png(out, make_grid(gc.to_unit(pairs, method.image_range).permute(0, 2, 3, 1).cpu(), nrow=2))


@torch.no_grad()
def export_mesh(run, seed: int = 0, resolution: int = 128, out_path=None,
                threshold: float | None = None) -> dict:
    """Marching cubes on the shallow NeRF's density for the shape code drawn from ``seed`` (as the
    first sample of :func:`sample_inputs`), over the cube [-mesh_extent, mesh_extent]^3 (world
    units), at ``threshold`` (default: the level of :func:`aware3d.train.recon.mesh_level`).
    Writes a binary PLY (default RUN/mesh_seed<seed>.ply); returns a summary."""
    cfg, G = run.config, run.G
    z = run.sample(seed)["z_shape"].to(run.device)
    out = Path(out_path) if out_path is not None else run.path / f"mesh_seed{seed}.ply"
    ext = float(cfg.mesh_extent)
    res = gc.export_density_mesh(lambda p: G.density(p.unsqueeze(0).to(run.device), z)[0], -ext, ext, out,
                                 resolution=resolution, threshold=threshold)
    res["extent"] = ext
    return res


def _aux_program(run, out_dir, seed: int = 0, samples: int | None = None) -> dict:
    return {"png": str(render_aux(run, seed=seed, n_samples=samples or 4,
                                  out_path=Path(out_dir) / f"aux_seed{seed}.png"))}


PRESET_DESCRIPTIONS = {
    "ffhq64": "the official FFHQ setting at 64x64 (faces)",
    "celeba64": "the same as ffhq64",
    "ffhq128": "the official setting at 128x128 (6 INR blocks)",
    "objects64": "the paper's networks on `aware3d data synth objects` at 64x64",
    "cpu": "narrow networks for a CPU, NeRF at 32x32 upsampled to 64x64, faces' poses (the default)",
    "cpu_objects": "the CPU networks on synth objects at 64x64",
    "cpu32": "the CPU networks at 32x32 (NeRF at 16x16)",
    "cpu32_objects": "the CPU networks on synth objects at 32x32",
    "tiny": "test-sized networks at 32x32",
}

METHOD = GenerativeMethod(
    NAME, "CIPS-3D", Cips3DConfig, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=programs_for(Cips3DMethod.latent_groups) + (
        Program("aux", "the final images beside the shallow NeRF's own RGB, one row per sample",
                _aux_program),),
    mesh=export_mesh, paper="Zhou et al., 2021")
PROGRAMS = tuple(METHOD.programs)
