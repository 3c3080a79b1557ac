"""pi-GAN (Chan et al., CVPR 2021): periodic implicit generative adversarial networks.

The generator volume-renders a FiLM-SIREN radiance field (:class:`aware3d.fields.siren.FilmSirenField`:
8 x 256 sine layers whose frequencies and phases come from a 3 x 256 LeakyReLU mapping network of
z in R^256, frequencies starting near 30) from a camera drawn from a pose prior: yaw and pitch
Gaussian around a frontal view for CelebA (std 0.3 / 0.155 rad), camera at distance 1, fov 12 deg,
rays over [0.88, 1.12] with hierarchical sampling (12 coarse + 12 fine samples, one network). The
render resolution grows during training (``stages``: 32 -> 64 -> 128 with the batch shrinking and
the learning rates changing per stage); the discriminator (:class:`ProgressiveDiscriminator`) is a
CoordConv residual network with one RGB adapter per resolution that fades in each new one over
``fade_steps``. Non-saturating loss + R1 (official r1_lambda 0.2 for CelebA: the D loss adds
0.5 r1_lambda E||grad||^2, so ``r1_weight`` 0.1), Adam betas (0, 0.9), lr G 6e-5 / D 2e-4.

``METHOD`` is its surface (:class:`aware3d.methods.base.GenerativeMethod`: train, load, render,
evaluate, :func:`export_mesh`) with the shared GAN controls as programs (camera yaw / pitch sweeps,
latent interpolation, fixed-seed grid).
Images are in [-1, 1]; the world is z-up with OpenGL cameras: pi-GAN's yaw is our azimuth about z
(frontal view at 90 degrees, the camera on +y) and its pitch our elevation (0 = level).

The presets follow the official curricula (marcoamonteiro/pi-GAN): CelebA's
``CCSEncoderDiscriminator`` (``d_block="ccs"``: CoordConv stride 2 and a stride-2 1x1 projection in
every block; ``d_latent_pose``: 1 + z_dim + 2 outputs, the position loss with ``pos_lambda`` 15),
Cats' ``StridedDiscriminator`` (``"strided"``), CARLA's ``ProgressiveEncoderDiscriminator``
(``"avgpool"``); alpha fades from the start of every stage, the first included, with the image
halved by nearest sampling; D steps before G; gradients clipped (``grad_clip``). The behaviour of
aware3d before it matched the official code stays as options, off in every preset and on for runs
saved without these keys: ``d_block="avgpool"`` without heads, ``fade_avgpool``,
``fade_first_stage=False``, ``d_first=False``, ``grad_clip=0``.

Also as the official code, each a key whose dataclass default is the behaviour before it:
the top-k generator loss (``topk_interval``, ``topk_v``: CelebA / Cats keep the k = ceil(max(0.99^(step
/ 2000), 0.6) n) most realistic fakes of each part of the batch) and the G step in ``batch_split``
parts (gradients summed); the sample placement (``sampling="official"``: linspace(near, far, N) moved by
up to half a spacing, fine samples between the coarse midpoints from the inner weights) and pixel
grid (``ray_grid="edges"``); jitter outside training too (``eval_jitter``, seeded per call), the last
sample taking the missing weight at inference (``eval_last_back``: CelebA, Cats) and
``lock_view_dependence`` (off, as the official scripts' default). The official rendering scripts'
truncation (psi 0.7, mean frequencies of 10,000 latents) is ``run.truncate(inputs, 0.7)``.
Not reproduced: mixed precision (CUDA autocast), the rendering scripts' doubled sample count.

The field is evaluated by :func:`fast_field` (FiLM folded into per-sample weights, one batched
matmul and one sine per layer, the trunk keeping one tensor per layer for backward); the
layer-by-layer :func:`reference_field` is kept beside it (``PiganGenerator.fast = False``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.siren import FilmSirenField
from ..render.cameras import image_rays, intrinsics, intrinsics_from_fov, look_at, spherical_to_cartesian
from ..programs.gan import programs_for
from ..nets.discriminators import ProgressiveDiscriminator
from ..train import gan as gan_losses
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "pigan"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Config(gc.RunSettings):
    """Every setting of a pi-GAN run (plain data; written to the run folder's config)."""

    # progressive schedule: (start step, render resolution, batch size, lr G, lr D) per stage
    stages: tuple = ((0, 64, 56, 6e-5, 2e-4),)
    fade_steps: int = 10000             # new discriminator resolution blended in over these steps
    resolution: int = 64                # final resolution (that of the last stage): eval / render
    # camera: distance `radius` from the origin; yaw = azimuth, pitch = elevation (degrees)
    fov: float = 12.0                   # field of view of the square image (degrees)
    radius: float = 1.0                 # camera distance from the origin (world units)
    ray_start: float = 0.88             # near bound of every ray (distance from the camera, world units)
    ray_end: float = 1.12               # far bound of every ray (distance from the camera, world units)
    pose_dist: str = "gaussian"         # gaussian | uniform (mean +- std) | spherical_uniform
    yaw_mean: float = 90.0              # mean yaw, azimuth from +x towards +y (degrees; 90: camera on +y)
    yaw_std: float = math.degrees(0.3)  # yaw spread (degrees): gaussian std, else half-range
    pitch_mean: float = 0.0             # mean pitch, elevation above the xy-plane (degrees; 0: level)
    pitch_std: float = math.degrees(0.155)  # pitch spread (degrees): gaussian std, else half-range
    n_samples: int = 12                 # coarse samples per ray
    n_importance: int = 12              # hierarchical (fine) samples per ray
    white_background: bool = False      # composite rays onto white (CARLA) instead of black
    chunk: int = 2048                   # rays per field call at inference, over the whole batch
    # networks
    z_dim: int = 256                    # latent z size (input of the mapping network)
    hidden: int = 256                   # width of the FiLM-SIREN layers
    n_layers: int = 8                   # FiLM-SIREN layers on the points (the colour layer not counted)
    map_hidden: int = 256               # mapping network width (z -> frequencies and phase shifts)
    map_layers: int = 3                 # mapping network hidden layers (LeakyReLU 0.2)
    box_scale: float = 2.0 / 0.24       # official UniformBoxWarp(0.24): faces fit a 0.24 box
    init_w0: float = 25.0               # SIREN init frequency of the official code
    d_base: int = 16                    # discriminator channels at resolution r: min(d_max, d_base 512 / r)
    d_max: int = 400                    # discriminator channels at most (official: 400)
    d_block: str = "avgpool"            # avgpool (CARLA) | ccs (CelebA: CoordConv stride 2 + stride-2 projection) | strided (Cats)
    d_latent_pose: bool = False         # D also predicts z and (pitch, yaw): 1 + z_dim + 2 outputs (official CelebA, CARLA)
    z_lambda: float = 0.0               # D and G loss += z_lambda MSE(predicted z, z) on fakes (official: 0)
    pos_lambda: float = 0.0             # D and G loss += pos_lambda MSE(predicted pose, pose) on fakes (CelebA: 15)
    fade_avgpool: bool = True           # fading-in adapter sees the image average-pooled (runs saved before the fix); False: nearest (official)
    fade_first_stage: bool = False      # fade the first stage in too (official: alpha 0 -> 1 from step 0); False: runs saved before the fix
    # official training and rendering details (defaults: the behaviour of runs saved before them)
    topk_interval: float = 0.0          # top-k G loss: keep the k = ceil(max(0.99^(step / interval), topk_v) n) largest critic outputs of each part; 0: off (official 2000 CelebA / Cats, 1000 CARLA)
    topk_v: float = 1.0                 # the smallest fraction top-k keeps (official 0.6 CelebA / Cats, 1 CARLA)
    batch_split: tuple = (1,)           # G step in this many parts, each its own top-k and mean loss, gradients summed (official batch_split); one value, or one per stage
    sampling: str = "bins"              # bins: N stratified bins on [near, far], fine samples from all coarse weights (runs saved before) | official: linspace +- half a spacing, fine samples between midpoints from the inner weights, fresh density noise at the end
    eval_jitter: bool = False           # jittered coarse and random fine samples outside training too (official staged_forward); False: bin centres / evenly spaced CDF levels
    eval_last_back: bool = False        # outside training the last sample takes the ray's missing weight (official eval_last_back: CelebA, Cats)
    ray_grid: str = "centres"           # centres: pixel centres span the fov | edges: the outermost pixel centres lie on the fov's edges (official linspace(-1, 1, res) grid)
    lock_view_dependence: bool = False  # colour sees one fixed direction, that of a level camera at yaw_mean (official --lock_view_dependence, off by default)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int | None = None       # None: the stages' batch sizes; a number overrides all stages
    optimizer: str = "adam"             # adam | rmsprop (the paper: Adam)
    betas: tuple = (0.0, 0.9)           # Adam (beta1, beta2)
    r1_weight: float = 0.1              # R1: D loss += r1_weight E||grad_x D(x)||^2 (= 0.5 official r1_lambda)
    d_first: bool = False               # each step trains D, then G (official); False: G, then D (runs saved before the fix)
    grad_clip: float = 0.0              # clip the gradient norm of G and of D (official: 10 CelebA / Cats, 1 CARLA); 0: off
    density_noise: float = 1.0          # N(0, s^2) on raw densities, s decays linearly to 0 ...
    noise_anneal_steps: int = 5000      # ... over these steps (official nerf_noise schedule)
    mesh_extent: float = 0.15           # export_mesh box [-e, e]^3 (official extract_shapes: 0.3 cube)
    preset: str = "cpu32"


def _r1(r1_lambda: float) -> float:
    """The engine's ``r1_weight`` of an official curriculum's ``r1_lambda``: the official D loss
    adds 0.5 r1_lambda E||grad_x D(x)||^2, the engine r1_weight E||grad_x D(x)||^2."""
    return 0.5 * float(r1_lambda)


# Every preset follows the official code in these; the dataclass defaults are the behaviour of
# aware3d before it matched the official code, which is what a saved config without them means.
_OFFICIAL = dict(d_first=True, fade_first_stage=True, fade_avgpool=False, sampling="official", eval_jitter=True,
                 ray_grid="edges")

# Official CelebA curriculum: 64^2 from the start, batch 56, 12 + 12 samples; CCSEncoderDiscriminator
# with the position loss (pos_lambda 15), gradients clipped at 10; top-k G loss (interval 2000, down
# to 0.6) over each half of the batch (batch_split 2); the last sample takes the missing weight at
# inference (eval_last_back).
_CELEBA = dict(d_block="ccs", d_latent_pose=True, pos_lambda=15.0, grad_clip=10.0, topk_interval=2000.0,
               topk_v=0.6, batch_split=(2,), eval_last_back=True,
               stages=((0, 64, 56, 6e-5, 2e-4),), resolution=64, fov=12.0, ray_start=0.88, ray_end=1.12,
               pose_dist="gaussian", yaw_mean=90.0, yaw_std=math.degrees(0.3), pitch_mean=0.0,
               pitch_std=math.degrees(0.155), n_samples=12, n_importance=12, r1_weight=_r1(0.2))
# The built-in synthetic objects seen from distance 6 (fov 40, elevation 20-60, any azimuth),
# scaled by 1/6: camera at 1, scene within ~0.4 of the origin, rays over [0.5, 1.5].
_OBJECTS = dict(fov=40.0, radius=1.0, ray_start=0.5, ray_end=1.5, pose_dist="uniform", yaw_mean=180.0,
                yaw_std=180.0, pitch_mean=40.0, pitch_std=20.0, box_scale=2.5, flip=False,
                mesh_extent=0.4, r1_weight=1.0)
# CPU: 16 -> 32 progressive growing, small networks (minutes on 2 cores), EMA 0.99 for short runs.
_CPU = dict(stages=((0, 16, 8, 2e-4, 4e-4), (400, 32, 8, 2e-4, 4e-4)), fade_steps=200, resolution=32,
            n_samples=8, n_importance=8, z_dim=64, hidden=64, n_layers=4, map_hidden=64, d_base=2,
            d_max=64, noise_anneal_steps=500, ema_beta=0.99, sample_every=100, checkpoint_every=200,
            batch_split=(1,))

PRESETS: dict[str, dict] = {
    # paper / official curricula
    "celeba64": dict(_CELEBA),
    # 32 -> 64 -> 128 growth with CelebA's camera (schedule shape of the official CARLA curriculum)
    "celeba128": dict(_CELEBA, stages=((0, 32, 56, 6e-5, 2e-4), (10000, 64, 28, 6e-5, 2e-4),
                                       (55000, 128, 10, 2e-5, 1e-4)), resolution=128, batch_split=(2, 2, 5)),
    "cats64": dict(_CELEBA, d_block="strided", d_latent_pose=False, pos_lambda=0.0,
                   stages=((0, 64, 28, 6e-5, 2e-4),), ray_start=0.8, ray_end=1.2,
                   pose_dist="uniform", yaw_std=math.degrees(0.5), pitch_std=math.degrees(0.4),
                   n_samples=24, n_importance=24, batch_split=(4,)),
    "carla128": dict(stages=((0, 32, 30, 4e-5, 4e-4), (10000, 64, 14, 2e-5, 2e-4),
                             (55000, 128, 10, 1e-5, 1e-4)), resolution=128, fov=30.0, ray_start=0.7,
                     ray_end=1.3, pose_dist="spherical_uniform", yaw_mean=90.0, yaw_std=180.0,
                     pitch_mean=45.0, pitch_std=45.0 * 85 / 90, n_samples=48, n_importance=48,
                     r1_weight=_r1(10.0), d_block="avgpool", d_latent_pose=True, grad_clip=1.0,
                     white_background=True, box_scale=1.0, flip=False, mesh_extent=0.5,
                     topk_interval=1000.0, topk_v=1.0, batch_split=(1, 2, 5)),
    "objects64": dict(_OBJECTS, stages=((0, 32, 32, 6e-5, 2e-4), (10000, 64, 16, 6e-5, 2e-4)),
                      resolution=64, n_samples=24, n_importance=24),
    # CPU presets
    "cpu32": dict(_OBJECTS, **_CPU),
    "cpu32_faces": dict(_CELEBA, **_CPU),
}
PRESETS["tiny16"] = dict(_OBJECTS, stages=((0, 8, 4, 2e-4, 4e-4), (10, 16, 4, 2e-4, 4e-4)), fade_steps=5,
                         resolution=16, n_samples=4, n_importance=4, z_dim=8, hidden=16, n_layers=2,
                         map_hidden=16, map_layers=3, d_base=1, d_max=8, noise_anneal_steps=20,
                         sample_every=10, checkpoint_every=10, log_every=5)
# "tiny": the name every other method gives its smallest preset (test-sized runs)
PRESETS["tiny"] = PRESETS["tiny16"]
PRESETS = {k: dict(_OFFICIAL, **v) for k, v in PRESETS.items()}
DEFAULT_PRESET = "cpu32"


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> Config:
    return gc.make_config(Config, PRESETS, preset, **overrides)


def stage_at(cfg: Config, step: int) -> tuple[int, dict]:
    """(index, {"start", "resolution", "batch_size", "lr_g", "lr_d"}) of the stage running at
    ``step``; ``cfg.batch_size`` (if set) overrides the stage's batch size."""
    idx = 0
    for i, st in enumerate(cfg.stages):
        if int(step) >= int(st[0]):
            idx = i
    s, res, bs, lr_g, lr_d = cfg.stages[idx]
    bs = int(cfg.batch_size) if cfg.batch_size is not None else int(bs)
    return idx, {"start": int(s), "resolution": int(res), "batch_size": bs, "lr_g": float(lr_g),
                 "lr_d": float(lr_d)}


def _check_config(cfg: Config) -> None:
    starts = [int(s[0]) for s in cfg.stages]
    if not cfg.stages or starts[0] != 0 or starts != sorted(starts):
        raise ValueError(f"stages: expected (start, resolution, batch, lr_g, lr_d) rows with increasing "
                         f"starts beginning at 0, got {cfg.stages}")
    if len(tuple(cfg.batch_split)) not in (1, len(cfg.stages)):
        raise ValueError(f"batch_split: expected one value or one per stage ({len(cfg.stages)}), got {cfg.batch_split}")
    if cfg.ray_grid not in ("centres", "edges"):
        raise ValueError(f"ray_grid: expected centres or edges, got {cfg.ray_grid!r}")
    if cfg.sampling not in ("bins", "official"):
        raise ValueError(f"sampling: expected bins or official, got {cfg.sampling!r}")
    if int(cfg.stages[-1][1]) != int(cfg.resolution):
        raise ValueError(f"resolution: expected the last stage's resolution {cfg.stages[-1][1]}, "
                         f"got {cfg.resolution}")


# --------------------------------------------------------------------------------------------------
# Camera prior


def sample_angles(cfg: Config, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) in degrees (n,) from the pose prior (official ``sample_camera_positions``)."""
    if cfg.pose_dist == "gaussian":
        yaw = cfg.yaw_mean + cfg.yaw_std * torch.randn(n, generator=generator)
        pitch = cfg.pitch_mean + cfg.pitch_std * torch.randn(n, generator=generator)
    elif cfg.pose_dist == "uniform":
        yaw = cfg.yaw_mean + cfg.yaw_std * (2 * torch.rand(n, generator=generator) - 1)
        pitch = cfg.pitch_mean + cfg.pitch_std * (2 * torch.rand(n, generator=generator) - 1)
    elif cfg.pose_dist == "spherical_uniform":  # uniform over the spherical band of the pitch range
        yaw = cfg.yaw_mean + cfg.yaw_std * (2 * torch.rand(n, generator=generator) - 1)
        lo = math.sin(math.radians(max(cfg.pitch_mean - cfg.pitch_std, -90.0)))
        hi = math.sin(math.radians(min(cfg.pitch_mean + cfg.pitch_std, 90.0)))
        pitch = torch.rad2deg(torch.asin(lo + (hi - lo) * torch.rand(n, generator=generator)))
    else:
        raise ValueError(f"pose_dist: expected gaussian, uniform or spherical_uniform, got {cfg.pose_dist!r}")
    return yaw, pitch.clamp(-89.99, 89.99)


def camera_from_angles(cfg: Config, yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) of a camera at distance ``radius`` looking at the origin."""
    return look_at(spherical_to_cartesian(cfg.radius, pitch_deg, yaw_deg))


def sample_inputs(cfg: Config, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
    """z ~ N(0, I) and a camera from the pose prior (batch first)."""
    z = torch.randn(n, cfg.z_dim, generator=generator)
    yaw, pitch = sample_angles(cfg, n, generator)
    out = {"z": z, "c2w": camera_from_angles(cfg, yaw, pitch)}
    if train and cfg.d_latent_pose:  # the official position target (pitch = polar angle, yaw), radians
        out["pose"] = torch.stack([torch.deg2rad(90.0 - pitch), torch.deg2rad(yaw)], -1)
    return out


# --------------------------------------------------------------------------------------------------
# Rendering: sample placement (both conventions), the field on the samples, compositing
#
# One function places the samples and composites (``render_rays``); the field is evaluated by
# either of two evaluators with the same signature: the reference (:meth:`FilmSirenField.forward`
# on every point, layer by layer as written in the paper) and the fast one (:func:`fast_field`:
# each sample's frequencies folded into its weights, one batched matmul and one sine per layer, the
# trunk's activations kept once for backward). Both see the same random draws, so a test can
# compare them on any setting.


def topk_fraction(cfg: Config, step: int) -> float:
    """The share of each part's fakes the generator loss keeps at ``step`` (official
    ``max(0.99 ** (step / topk_interval), topk_v)``; 1 with top-k off)."""
    if float(cfg.topk_interval) <= 0:
        return 1.0
    return max(0.99 ** (float(step) / float(cfg.topk_interval)), float(cfg.topk_v))


def topk_count(cfg: Config, step: int, n: int) -> int:
    """k of the top-k generator loss over ``n`` fakes: ceil(fraction n) (official), at most n."""
    return min(int(n), math.ceil(topk_fraction(cfg, step) * int(n)))


def batch_split_at(cfg: Config, stage_index: int) -> int:
    """The number of parts of the G step in stage ``stage_index`` (``batch_split``: one value for
    every stage, or one per stage)."""
    bs = tuple(cfg.batch_split) or (1,)
    return max(1, int(bs[stage_index] if len(bs) > 1 else bs[0]))


def _official_weights(sigma: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The official ``fancy_integration`` weights: alpha = 1 - exp(-delta relu(sigma)) with the
    last spacing 1e10, w_i = alpha_i prod_{j<i} (1 - alpha_j + 1e-10)."""
    deltas = torch.cat([t[..., 1:] - t[..., :-1], torch.full_like(t[..., :1], 1e10)], -1)
    alphas = 1 - torch.exp(-deltas * F.relu(sigma))
    shifted = torch.cat([torch.ones_like(alphas[..., :1]), 1 - alphas + 1e-10], -1)
    return alphas * torch.cumprod(shifted, -1)[..., :-1]


def render_rays(evaluate, rays_o: torch.Tensor, rays_d: torch.Tensor, near: float, far: float,
                n_samples: int, n_importance: int, *, sampling: str = "bins", perturb: bool = False,
                noise_std: float = 0.0, background=None, last_back: bool = False,
                generator: torch.Generator | None = None, chunk: int | None = None) -> dict:
    """Render rays (B, R, 3) with ``evaluate(rays_o, rays_d, t (B, R, N)) -> (sigma raw (B, R, N),
    rgb (B, R, N, 3))``. Returns ``{"color" (B, R, 3), "depth" (B, R), "opacity" (B, R)}``.

    ``sampling="bins"`` (runs saved before the official placement): ``n_samples`` stratified bins
    on [near, far] (bin centres without ``perturb``), fine samples from all coarse weights over the
    bin edges, the density noise drawn once per sample (:func:`aware3d.methods.gan_common.
    render_radiance`, the same draws in the same order). ``sampling="official"``: the official
    ``get_initial_rays_trig`` + ``perturb_points``: linspace(near, far, N), each sample moved by
    U(-1/2, 1/2) of the spacing; fine samples (``sample_pdf``) between the midpoints of the coarse
    samples from their inner weights + 1e-5 (the first and last left out); the final pass draws
    its density noise afresh and composites with the official weights. ``last_back``: the last
    sample takes the ray's missing weight (official ``last_back``; the background still adds the
    missing opacity, as the official's ``white_back``). ``generator`` draws the jitter and fine
    levels (the noise always comes from the global generator). ``chunk``: rays per call over the
    batch (inference)."""
    from ..render.samplers import sample_pdf, stratified_samples
    from ..render.volume import render_weights, volume_render

    B, R = rays_o.shape[:2]
    if chunk is not None and B * R > chunk and R > 1:
        step = max(1, int(chunk) // B)
        parts = [render_rays(evaluate, rays_o[:, a:a + step], rays_d[:, a:a + step], near, far, n_samples,
                             n_importance, sampling=sampling, perturb=perturb, noise_std=noise_std,
                             background=background, last_back=last_back, generator=generator)
                 for a in range(0, R, step)]
        return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}
    dtype, dev = rays_o.dtype, rays_o.device
    N = int(n_samples)

    def noisy(s):
        return s + noise_std * torch.randn_like(s) if noise_std > 0 else s

    if sampling == "bins":
        t, bins = stratified_samples(near, far, N, batch_shape=(B, R), perturb=perturb, dtype=dtype,
                                     device=dev, generator=generator)
        sigma, rgb = evaluate(rays_o, rays_d, t)
        sigma = noisy(sigma)
        if n_importance > 0:
            with torch.no_grad():
                w = render_weights(sigma, t)[0]
            t_f = sample_pdf(bins, w, n_importance, deterministic=not perturb, generator=generator)
            s_f, rgb_f = evaluate(rays_o, rays_d, t_f)
            t, order = torch.sort(torch.cat([t, t_f], -1), -1)
            sigma = torch.gather(torch.cat([sigma, noisy(s_f)], -1), -1, order)
            rgb = torch.gather(torch.cat([rgb, rgb_f], -2), -2, order.unsqueeze(-1).expand(*order.shape, 3))
        if not last_back:
            out = volume_render(sigma, rgb, t, background=background)
            return {"color": out["color"], "depth": out["depth"], "opacity": out["opacity"]}
        w = render_weights(sigma, t)[0]
    elif sampling == "official":
        if N < 2:
            raise ValueError(f"n_samples: the official sampling needs >= 2, got {N}")
        t = torch.linspace(near, far, N, dtype=dtype, device=dev).expand(B, R, N)
        if perturb:
            u = torch.rand((B, R, N), dtype=dtype, device=dev, generator=generator)
            t = t + (u - 0.5) * ((far - near) / (N - 1))
        sigma, rgb = evaluate(rays_o, rays_d, t)
        if n_importance > 0:
            with torch.no_grad():
                w = _official_weights(noisy(sigma), t)
                mids = 0.5 * (t[..., 1:] + t[..., :-1])
                t_f = sample_pdf(mids, w[..., 1:-1] + 1e-5, n_importance, deterministic=not perturb,
                                 generator=generator)
            s_f, rgb_f = evaluate(rays_o, rays_d, t_f)
            t, order = torch.sort(torch.cat([t_f, t], -1), -1)  # official: fine first, then sorted
            sigma = torch.gather(torch.cat([s_f, sigma], -1), -1, order)
            rgb = torch.gather(torch.cat([rgb_f, rgb], -2), -2, order.unsqueeze(-1).expand(*order.shape, 3))
        sigma = noisy(sigma)
        w = _official_weights(sigma, t)
    else:
        raise ValueError(f"sampling: expected bins or official, got {sampling!r}")
    acc = w.sum(-1)
    if last_back:
        w = torch.cat([w[..., :-1], (w[..., -1] + 1 - acc).unsqueeze(-1)], -1)
    color = (w.unsqueeze(-1) * rgb).sum(-2)
    if background is not None:
        color = color + (1 - acc).unsqueeze(-1) * torch.as_tensor(background, dtype=color.dtype, device=dev)
    return {"color": color, "depth": (w * t).sum(-1), "opacity": w.sum(-1)}


class _SirenTrunk(torch.autograd.Function):
    """The FiLM-SIREN layers with folded weights, x_i = sin(x_{i-1} A_i^T + c_i) (A_i (B, out, in),
    c_i (B, out) per sample of the batch), keeping only each layer's pre-activation for backward
    (autograd on the plain layers keeps the input, the linear output and the pre-activation):
    backward recomputes each input as the sine of the pre-activation below it."""

    @staticmethod
    def forward(ctx, x0, *wc):
        n = len(wc) // 2
        pres, x = [], x0
        for i in range(n):
            pre = torch.baddbmm(wc[2 * i + 1].unsqueeze(1), x, wc[2 * i].transpose(1, 2))
            pres.append(pre)
            x = torch.sin(pre)
        ctx.save_for_backward(x0, *wc)
        ctx.pres = pres
        return x

    @staticmethod
    def backward(ctx, g):
        x0, *wc = ctx.saved_tensors
        pres, ctx.pres = ctx.pres, None
        n = len(pres)
        grads = [None] * (2 * n)
        for i in reversed(range(n)):
            gpre = pres.pop().cos_().mul_(g)  # the pre-activation is not needed any more
            x = torch.sin(pres[-1]) if i > 0 else x0
            grads[2 * i] = torch.bmm(gpre.transpose(1, 2), x)
            grads[2 * i + 1] = gpre.sum(1)
            if i > 0:
                g = torch.bmm(gpre, wc[2 * i])
            del gpre, x
        return (None, *grads)


def fast_field(field: FilmSirenField, freqs: torch.Tensor, phases: torch.Tensor, lock_dir=None,
               block_points: int = 1024):
    """The evaluator of :func:`render_rays` for ``field`` with modulation (B, L + 1, hidden): the
    same function as :meth:`FilmSirenField.forward` on the points o + t d (directions d, or
    ``lock_dir`` (3,) for every ray), computed with each layer's frequencies folded into its
    weights, sin(f (W x + b) + p) = sin(x (f W)^T + (f b + p)): one batched matmul and one sine per
    layer, the box scale folded into the first layer, the directions' part of the colour layer
    computed once per ray; with gradients the trunk keeps one tensor per layer (:class:`_SirenTrunk`),
    without them each image goes through in blocks of about ``block_points`` points."""
    L = field.n_layers
    A, C = [], []
    for i, layer in enumerate(field.layers):
        w = layer.weight * field.box_scale if i == 0 else layer.weight
        A.append(freqs[:, i].unsqueeze(-1) * w)
        C.append(freqs[:, i] * layer.bias + phases[:, i])
    fc, pc = freqs[:, L], phases[:, L]
    wcol = field.color_film.weight
    A_col = fc.unsqueeze(-1) * wcol[:, 3:]
    c_col = fc * field.color_film.bias + pc
    grad = torch.is_grad_enabled() and (freqs.requires_grad or any(p.requires_grad for p in field.parameters()))

    def evaluate(rays_o, rays_d, t):
        B, R, N = t.shape
        x0 = (rays_o.unsqueeze(2) + t.unsqueeze(-1) * rays_d.unsqueeze(2)).reshape(B, R * N, 3)
        d = rays_d if lock_dir is None else lock_dir.to(rays_d).expand(B, 1, 3)
        dir_term = fc.unsqueeze(1) * F.linear(d, wcol[:, :3])  # (B, R or 1, hidden)
        if grad:
            h = _SirenTrunk.apply(x0, *[v for pair in zip(A, C) for v in pair])
            pre = torch.baddbmm(c_col.unsqueeze(1), h, A_col.transpose(1, 2)).view(B, R, N, -1)
            c = torch.sin(pre + dir_term.unsqueeze(2))
            sigma = F.linear(h, field.sigma_out.weight, field.sigma_out.bias).view(B, R, N)
            return sigma, torch.sigmoid(F.linear(c, field.color_out.weight, field.color_out.bias))
        # without gradients: one image and (on a CPU) a block of rays at a time through every layer,
        # in place, so that the activations stay in the cache between the matmul and the sine
        sigma, rgb = x0.new_empty(B, R, N), x0.new_empty(B, R, N, 3)
        rb = max(1, block_points // N) if x0.device.type == "cpu" else R
        for i in range(B):
            for r0 in range(0, R, rb):
                h = x0[i:i + 1, r0 * N:(r0 + rb) * N]
                for a, b in zip(A, C):
                    h = torch.baddbmm(b[i:i + 1].unsqueeze(1), h, a[i:i + 1].transpose(1, 2)).sin_()
                n = h.shape[1] // N
                c = torch.baddbmm(c_col[i:i + 1].unsqueeze(1), h, A_col[i:i + 1].transpose(1, 2)).view(1, n, N, -1)
                dt = dir_term[i:i + 1, r0:r0 + n] if dir_term.shape[1] > 1 else dir_term[i:i + 1]
                c = c.add_(dt.unsqueeze(2)).sin_()
                sigma[i:i + 1, r0:r0 + n] = F.linear(h, field.sigma_out.weight, field.sigma_out.bias).view(1, n, N)
                rgb[i:i + 1, r0:r0 + n] = torch.sigmoid(F.linear(c, field.color_out.weight, field.color_out.bias))
        return sigma, rgb

    return evaluate


def reference_field(field: FilmSirenField, freqs: torch.Tensor, phases: torch.Tensor, lock_dir=None):
    """The evaluator of :func:`render_rays` that calls :meth:`FilmSirenField.forward` on every
    point (the pure reference of :func:`fast_field`)."""
    def evaluate(rays_o, rays_d, t):
        B, R, N = t.shape
        pts = (rays_o.unsqueeze(2) + t.unsqueeze(-1) * rays_d.unsqueeze(2)).reshape(B, R * N, 3)
        d = rays_d if lock_dir is None else lock_dir.to(rays_d).expand(B, R, 3)
        dirs = d.unsqueeze(2).expand(B, R, N, 3).reshape(B, R * N, 3)
        s, c = field(pts, dirs, freqs=freqs, phases=phases)
        return s.reshape(B, R, N), c.reshape(B, R, N, -1)

    return evaluate


def lock_direction(cfg: Config) -> torch.Tensor:
    """The one viewing direction of ``lock_view_dependence``: that of a level camera at
    ``yaw_mean`` looking at the origin (the official (0, 0, -1) is its frontal camera's)."""
    a = math.radians(cfg.yaw_mean)
    return torch.tensor([-math.cos(a), -math.sin(a), 0.0])


# --------------------------------------------------------------------------------------------------
# Networks


class PiganGenerator(nn.Module):
    """G(inputs) = volume rendering of the FiLM-SIREN field at ``render_resolution`` (set per step
    by progressive growing; the final resolution for inference). ``inputs`` may carry ``freqs`` /
    ``phases`` (B, L + 1, hidden) instead of using the mapping network on ``z``. ``fast`` (True)
    evaluates the field with :func:`fast_field`, False with the layer-by-layer reference."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.field = FilmSirenField(z_dim=cfg.z_dim, hidden=cfg.hidden, n_layers=cfg.n_layers,
                                    map_hidden=cfg.map_hidden, map_layers=cfg.map_layers,
                                    box_scale=cfg.box_scale, init_w0=cfg.init_w0)
        self.render_resolution = int(cfg.stages[0][1])
        self.density_noise = 0.0
        self.fast = True

    def intrinsics(self, res: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """The pinhole matrix of a ``res`` x ``res`` render: pixel centres across the fov, or with
        ``ray_grid="edges"`` the official grid (pixel i at tan(fov / 2) (2 i / (res - 1) - 1))."""
        if self.cfg.ray_grid == "edges" and res > 1:
            f = 0.5 * (res - 1) / math.tan(0.5 * math.radians(float(self.cfg.fov)))
            return intrinsics(f, f, res / 2.0, res / 2.0, dtype=dtype, device=device)
        return intrinsics_from_fov(self.cfg.fov, res, dtype=dtype, device=device)

    def forward(self, inputs: dict, return_dict: bool = False):
        """Images (B, 3, S, S) in [-1, 1], S = ``render_resolution``; with ``return_dict`` also
        ``depth`` (B, S, S; sum w_i t_i) and ``opacity``. Training: jittered samples and density
        noise; outside training jittered only with ``eval_jitter`` (from a generator seeded at each
        call, so that a render is reproducible), the last sample taking the missing weight with
        ``eval_last_back``."""
        c = self.cfg
        c2w = inputs["c2w"]
        B, res = c2w.shape[0], int(self.render_resolution)
        K = self.intrinsics(res, c2w.dtype, c2w.device).expand(B, 3, 3)
        o, d = image_rays(K, c2w, res, res)
        o, d = o.reshape(B, res * res, 3), d.reshape(B, res * res, 3)
        if "freqs" in inputs:
            freqs, phases = inputs["freqs"], inputs["phases"]
        else:
            freqs, phases = self.field.modulation(inputs["z"])
        lock = lock_direction(c) if c.lock_view_dependence else None
        evaluate = (fast_field if self.fast else reference_field)(self.field, freqs, phases, lock)
        gen = None
        if not self.training and c.eval_jitter:
            gen = torch.Generator(device=c2w.device).manual_seed(0)
        bg = (1.0, 1.0, 1.0) if c.white_background else None
        out = render_rays(evaluate, o, d, c.ray_start, c.ray_end, c.n_samples, c.n_importance,
                          sampling=c.sampling, perturb=self.training or bool(c.eval_jitter),
                          noise_std=self.density_noise if self.training else 0.0, background=bg,
                          last_back=bool(c.eval_last_back) and not self.training, generator=gen,
                          chunk=None if torch.is_grad_enabled() else c.chunk)
        img = out["color"].reshape(B, res, res, 3).permute(0, 3, 1, 2) * 2 - 1
        if not return_dict:
            return img
        return {"image": img, "depth": out["depth"].reshape(B, res, res),
                "opacity": out["opacity"].reshape(B, res, res)}


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class PiganMethod:
    """Generator, progressive discriminator, pose prior, progressive schedule (render resolution,
    batch, learning rates, fade-in, density noise) and the controls' camera model."""

    name = NAME
    image_range = (-1.0, 1.0)
    latent_groups = {"latent": ["z"]}

    def __init__(self, cfg: Config):
        _check_config(cfg)
        self.cfg = cfg
        self.generator = PiganGenerator(cfg)
        self.discriminator = ProgressiveDiscriminator(
            max(int(s[1]) for s in cfg.stages), cfg.d_base, cfg.d_max, block=cfg.d_block,
            n_out=1 + cfg.z_dim + 2 if cfg.d_latent_pose else 1, fade="avg" if cfg.fade_avgpool else "nearest")
        self._step = 0
        if cfg.d_latent_pose:  # the encoder critic's losses (else the engine's plain ones)
            self.discriminator_objective = self._discriminator_objective
        if cfg.d_latent_pose or cfg.topk_interval > 0 or any(int(v) != 1 for v in cfg.batch_split):
            self.generator_objective = self._generator_objective

    def _identity_penalty(self, out: torch.Tensor, inputs: dict) -> torch.Tensor:
        """z_lambda MSE(predicted z, z) + pos_lambda MSE(predicted pose, pose) (official)."""
        c, zd = self.cfg, self.cfg.z_dim
        pen = out.new_zeros(())
        if c.z_lambda > 0:
            pen = pen + c.z_lambda * F.mse_loss(out[:, 1:1 + zd], inputs["z"])
        if c.pos_lambda > 0:
            pen = pen + c.pos_lambda * F.mse_loss(out[:, 1 + zd:3 + zd], inputs["pose"])
        return pen

    def generator_parts(self, n: int) -> list[tuple[int, int]]:
        """(start, end) of the parts of a G step of ``n`` fakes (``batch_split`` of the stage)."""
        k = batch_split_at(self.cfg, stage_at(self.cfg, self._step)[0])
        if n % k:
            raise ValueError(f"batch_split: {k} parts do not divide the batch of {n}")
        m = n // k
        return [(a, a + m) for a in range(0, n, m)]

    def _generator_objective(self, G, D, inputs):
        """The official G step: per part of the batch (``batch_split``), the non-saturating loss
        on the k largest critic outputs (top-k) + the identity penalty; the parts' losses are
        summed (the official backpropagates each part and sums the gradients). All parts but the
        last backpropagate here, so that one part's graph is alive at a time; the engine
        backpropagates the returned (last) one."""
        n = inputs["c2w"].shape[0]
        parts = self.generator_parts(n)
        advs, idents, ks = [], [], []
        for j, (a, b) in enumerate(parts):
            sub = {key: (v[a:b] if torch.is_tensor(v) and v.shape[:1] == (n,) else v) for key, v in inputs.items()}
            out = D(G(sub))
            k = topk_count(self.cfg, self._step, b - a)
            pred = torch.topk(out[:, :1], k, dim=0).values if k < b - a else out[:, :1]
            adv = gan_losses.generator_loss(pred)
            ident = self._identity_penalty(out, sub)
            loss = adv + ident
            advs.append(adv.detach()), idents.append(ident.detach()), ks.append(k)
            if j < len(parts) - 1:
                loss.backward()
        scalars = {"loss_G": torch.stack(advs).mean(), "topk": torch.tensor(float(sum(ks)))}
        if self.cfg.d_latent_pose:
            scalars["identity_G"] = torch.stack(idents).mean()
        return loss, scalars

    def _discriminator_objective(self, G, D, real, inputs, r1_weight):
        x_real = real.detach().requires_grad_(r1_weight > 0)
        d_real = D(x_real)[:, :1]
        with torch.no_grad():
            fake = G(inputs)
        out = D(fake)
        l_real, l_fake = gan_losses.discriminator_loss(d_real, out[:, :1])
        ident = self._identity_penalty(out, inputs)
        loss = l_real + l_fake + ident
        scalars = {"loss_D": (l_real + l_fake).detach(), "loss_D_real": l_real.detach(),
                   "loss_D_fake": l_fake.detach(), "D_real": d_real.detach().mean(),
                   "D_fake": out[:, 0].detach().mean(), "identity_D": ident.detach(),
                   "fake_std": fake.detach().float().std()}
        if r1_weight > 0:
            pen = gan_losses.r1_penalty(d_real, x_real)
            loss = loss + r1_weight * pen
            scalars["R1"] = pen.detach()
        return loss, scalars

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def real_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Real images at the current render resolution."""
        return gc.resize_images(images, int(self.generator.render_resolution))

    def wrap_dataset(self, dataset):
        return gc.MappedImages(dataset, self.real_images)

    def set_step(self, step: int, engine=None) -> None:
        c = self.cfg
        self._step = int(step)
        idx, st = stage_at(c, step)
        res = st["resolution"]
        self.generator.render_resolution = res
        fading = idx > 0 or c.fade_first_stage  # official: alpha ramps from each stage's start, the first too
        fade = min(1.0, (step - st["start"]) / max(c.fade_steps, 1)) if fading else 1.0
        self.discriminator.alpha = fade
        self.generator.density_noise = c.density_noise * max(0.0, 1.0 - step / max(c.noise_anneal_steps, 1))
        if engine is not None:
            engine.G_ema.render_resolution = res
            bs = st["batch_size"]
            if bs % engine.world:
                raise ValueError(f"batch_size: stage batch {bs} does not divide over {engine.world} processes")
            engine.cfg.batch_size, engine.local_batch = bs, bs // engine.world
            for opt, lr in ((engine.opt_g, st["lr_g"]), (engine.opt_d, st["lr_d"])):
                for group in opt.param_groups:
                    group["lr"] = lr
        self._stage = st

    def prepare_inference(self) -> None:
        self.generator.render_resolution = int(self.cfg.resolution)
        self.discriminator.alpha = 1.0

    def gan_config(self, **kw):
        st = getattr(self, "_stage", None) or stage_at(self.cfg, 0)[1]
        stage = dict(batch_size=st["batch_size"], lr_g=st["lr_g"], lr_d=st["lr_d"])
        return gc.gan_config_from(self.cfg, **{**stage, **kw})

    # controls
    def camera_from_angles(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        return camera_from_angles(self.cfg, yaw_deg, pitch_deg)

    def angle_ranges(self) -> dict:
        c = self.cfg
        k = 2.0 if c.pose_dist == "gaussian" else 1.0  # gaussian prior: sweep over +- 2 std
        return {"yaw": (c.yaw_mean - k * c.yaw_std, c.yaw_mean + k * c.yaw_std, c.yaw_mean),
                "pitch": (max(c.pitch_mean - k * c.pitch_std, -85.0), min(c.pitch_mean + k * c.pitch_std, 85.0),
                          c.pitch_mean)}


def build(cfg: Config, seed: int | None = None) -> PiganMethod:
    """Networks initialised from ``seed`` (default cfg.seed)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return PiganMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Mesh export and the method surface


@torch.no_grad()
def export_mesh(run, seed: int = 0, resolution: int = 128, out_path=None,
                threshold: float | None = None) -> dict:
    """Marching cubes on the density of the sample drawn from ``seed`` in
    [-mesh_extent, mesh_extent]^3 of a loaded run (threshold 10 by default), vertex colours seen
    from the mean camera; writes a PLY (default ``RUN/mesh_seed<seed>.ply``) and returns a summary."""
    cfg, method, G, dev = run.config, run.gan, run.G, run.device
    x = run.sample(seed)
    freqs, phases = G.field.modulation(x["z"].to(dev))
    eye = method.camera_from_angles(torch.tensor([cfg.yaw_mean]), torch.tensor([cfg.pitch_mean]))[0, :3, 3]

    return gc.export_sample_mesh(run.path, seed, cfg.mesh_extent,
                                 lambda p: G.field.density(p[None].to(dev), freqs=freqs, phases=phases)[0],
                                 lambda v, d: G.field(v.to(dev), d.to(dev), freqs=freqs, phases=phases)[1],
                                 eye, out_path=out_path, resolution=resolution, threshold=threshold)


PRESET_DESCRIPTIONS = {
    "celeba64": "the paper's CelebA curriculum at 64x64 (batch 56, 12 + 12 samples, r1_lambda 0.2)",
    "celeba128": "CelebA growing 32 -> 64 -> 128 (the official CARLA curriculum's shape)",
    "cats64": "the paper's Cats setup at 64x64",
    "carla128": "the paper's CARLA curriculum, 32 -> 64 -> 128 (cars, white background)",
    "objects64": "the paper's networks on `aware3d data synth objects`, 32 -> 64",
    "cpu32": "small networks for a CPU, synth objects growing 16 -> 32 (the default)",
    "cpu32_faces": "small networks for a CPU, CelebA's camera prior, 16 -> 32",
    "tiny16": "test-sized networks growing 8 -> 16",
    "tiny": "the same as tiny16",
}

METHOD = GenerativeMethod(
    NAME, "pi-GAN", Config, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=programs_for(PiganMethod.latent_groups), mesh=export_mesh,
    paper="Chan et al., CVPR 2021")
PROGRAMS = tuple(METHOD.programs)
