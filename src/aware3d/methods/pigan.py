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

Not reproduced from the official code: top-k generator training (``topk_interval``/``topk_v``),
the jittered samples of its inference code, mixed precision.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.siren import FilmSirenField
from ..render.cameras import image_rays, intrinsics_from_fov, look_at, spherical_to_cartesian
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
_OFFICIAL = dict(d_first=True, fade_first_stage=True, fade_avgpool=False)

# Official CelebA curriculum: 64^2 from the start, batch 56, 12 + 12 samples; CCSEncoderDiscriminator
# with the position loss (pos_lambda 15), gradients clipped at 10.
_CELEBA = dict(d_block="ccs", d_latent_pose=True, pos_lambda=15.0, grad_clip=10.0, stages=((0, 64, 56, 6e-5, 2e-4),), resolution=64, fov=12.0, ray_start=0.88, ray_end=1.12,
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
            d_max=64, noise_anneal_steps=500, ema_beta=0.99, sample_every=100, checkpoint_every=200)

PRESETS: dict[str, dict] = {
    # paper / official curricula
    "celeba64": dict(_CELEBA),
    # 32 -> 64 -> 128 growth with CelebA's camera (schedule shape of the official CARLA curriculum)
    "celeba128": dict(_CELEBA, stages=((0, 32, 56, 6e-5, 2e-4), (10000, 64, 28, 6e-5, 2e-4),
                                       (55000, 128, 10, 2e-5, 1e-4)), resolution=128),
    "cats64": dict(_CELEBA, d_block="strided", d_latent_pose=False, pos_lambda=0.0,
                   stages=((0, 64, 28, 6e-5, 2e-4),), ray_start=0.8, ray_end=1.2,
                   pose_dist="uniform", yaw_std=math.degrees(0.5), pitch_std=math.degrees(0.4),
                   n_samples=24, n_importance=24),
    "carla128": dict(stages=((0, 32, 30, 4e-5, 4e-4), (10000, 64, 14, 2e-5, 2e-4),
                             (55000, 128, 10, 1e-5, 1e-4)), resolution=128, fov=30.0, ray_start=0.7,
                     ray_end=1.3, pose_dist="spherical_uniform", yaw_mean=90.0, yaw_std=180.0,
                     pitch_mean=45.0, pitch_std=45.0 * 85 / 90, n_samples=48, n_importance=48,
                     r1_weight=_r1(10.0), d_block="avgpool", d_latent_pose=True, grad_clip=1.0,
                     white_background=True, box_scale=1.0, flip=False, mesh_extent=0.5),
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
# Networks


class PiganGenerator(nn.Module):
    """G(inputs) = volume rendering of the FiLM-SIREN field at ``render_resolution`` (set per step
    by progressive growing; the final resolution for inference). ``inputs`` may carry ``freqs`` /
    ``phases`` (B, L + 1, hidden) instead of using the mapping network on ``z``."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.field = FilmSirenField(z_dim=cfg.z_dim, hidden=cfg.hidden, n_layers=cfg.n_layers,
                                    map_hidden=cfg.map_hidden, map_layers=cfg.map_layers,
                                    box_scale=cfg.box_scale, init_w0=cfg.init_w0)
        self.render_resolution = int(cfg.stages[0][1])
        self.density_noise = 0.0

    def intrinsics(self, res: int, dtype=torch.float32, device=None) -> torch.Tensor:
        return intrinsics_from_fov(self.cfg.fov, res, dtype=dtype, device=device)

    def forward(self, inputs: dict, return_dict: bool = False):
        """Images (B, 3, S, S) in [-1, 1], S = ``render_resolution``; with ``return_dict`` also
        ``depth`` (B, S, S; sum w_i t_i) and ``opacity``."""
        c2w = inputs["c2w"]
        B, res = c2w.shape[0], int(self.render_resolution)
        K = self.intrinsics(res, c2w.dtype, c2w.device).expand(B, 3, 3)
        o, d = image_rays(K, c2w, res, res)
        o, d = o.reshape(B, res * res, 3), d.reshape(B, res * res, 3)
        if "freqs" in inputs:
            freqs, phases = inputs["freqs"], inputs["phases"]
        else:
            freqs, phases = self.field.modulation(inputs["z"])

        def field(p, dirs):
            return self.field(p, dirs, freqs=freqs, phases=phases)

        bg = (1.0, 1.0, 1.0) if self.cfg.white_background else None
        out = gc.render_radiance(field, o, d, self.cfg.ray_start, self.cfg.ray_end, self.cfg.n_samples,
                                 self.cfg.n_importance, perturb=self.training,
                                 noise_std=self.density_noise if self.training else 0.0, background=bg,
                                 chunk=None if torch.is_grad_enabled() else self.cfg.chunk)
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
        if cfg.d_latent_pose:  # the encoder critic's losses (else the engine's plain ones)
            self.generator_objective = self._generator_objective
            self.discriminator_objective = self._discriminator_objective

    def _identity_penalty(self, out: torch.Tensor, inputs: dict) -> torch.Tensor:
        """z_lambda MSE(predicted z, z) + pos_lambda MSE(predicted pose, pose) (official)."""
        c, zd = self.cfg, self.cfg.z_dim
        pen = out.new_zeros(())
        if c.z_lambda > 0:
            pen = pen + c.z_lambda * F.mse_loss(out[:, 1:1 + zd], inputs["z"])
        if c.pos_lambda > 0:
            pen = pen + c.pos_lambda * F.mse_loss(out[:, 1 + zd:3 + zd], inputs["pose"])
        return pen

    def _generator_objective(self, G, D, inputs):
        out = D(G(inputs))
        adv = gan_losses.generator_loss(out[:, :1])
        ident = self._identity_penalty(out, inputs)
        return adv + ident, {"loss_G": adv.detach(), "identity_G": ident.detach()}

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
