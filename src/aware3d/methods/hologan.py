"""HoloGAN (Nguyen-Phuoc et al., ICCV 2019): unsupervised 3D feature volumes, rigidly rotated,
projected and decoded to images (PAPERS.md card 7).

Pieces (networks in :mod:`aware3d.fields.hologan`):

    sample_inputs       z ~ U[-1, 1]^Z (official ``sample_z: uniform``) as z_shape = z_app, and a
                        yaw / pitch from the prior carried as a look-at camera ``c2w``
    HoloGenerator       constant 4^3 -> 3D AdaIN blocks -> rotate -> 3D convs -> projection -> 2D AdaIN
    HoloDiscriminator   IN + spectral-norm critic with style heads and a z head
    losses              GAN (non-saturating) + multi-scale style losses + identity ||z^ - z||^2

Training: Adam (lr 1e-4, beta1 0.5, beta2 0.999) for both networks, no R1 (the official code uses
spectral + instance norm instead). The style losses enter both D's and G's objective (paper eq. 4:
each style classifier is a discriminator); the identity term is minimised by both networks
(official ``q_loss``). The paper presets follow the official released config, which turns both off
(``style_disc`` false, ``lambda_latent`` 0); the CPU presets keep them. D steps before G
(``d_first``), and G takes two steps per D step (``g_steps`` 2: the official code runs its G optimiser
twice "to make sure that d_loss does not go to zero").

The engine's phases (:mod:`aware3d.train.gan`) take their objective from the method where it has
one: :meth:`HoloGANMethod.generator_objective` / :meth:`HoloGANMethod.discriminator_objective`
(CIPS-3D has its own too).

Controls: shape = the code of the 3D AdaIN layers, appearance = the code of the 2D AdaIN layers
(one z in training, two codes at render time); camera yaw / pitch rotate the volume.
``METHOD`` is its surface (:class:`aware3d.methods.base.GenerativeMethod`): train, load, render,
evaluate and the shared GAN controls as programs (no mesh: the volume holds features, not density).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..fields.hologan import HoloDiscriminator, HoloGenerator
from ..render.cameras import look_at, spherical_to_cartesian
from ..programs.gan import programs_for
from ..train.gan import discriminator_loss, generator_loss, r1_penalty
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "hologan"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class HoloGANConfig(gc.RunSettings):
    """Every setting of a HoloGAN run (plain data; written to the run folder's config)."""

    resolution: int = 64                  # output image size (square): 4 * 2^(len(ch3d) - 1) * 2^len(ch2d)
    # pose prior (degrees): yaw about the vertical axis, pitch about the horizontal one, uniform
    yaw_range: tuple = (-50.0, 50.0)      # official celebA: azimuth 220..320 = 270 +- 50
    pitch_range: tuple = (-20.0, 20.0)    # official celebA: elevation 70..110 = 90 +- 20
    # networks
    z_dim: int = 128                      # latent z size, z ~ U[-1, 1] (one z feeds every AdaIN layer)
    w_dim: int = 256                      # style vector w size (output of the z -> w MLP)
    mlp_layers: int = 2                   # linear + LeakyReLU layers of the z -> w MLP (0: w = z)
    ch3d: tuple = (512, 256, 128)         # constant 4^3 x 512 -> 8^3 x 256 -> 16^3 x 128
    ch3d_post: tuple = (64, 64)           # 3D convs after the rotation
    proj_ch: int = 1024                   # projection unit output (official 64^2: gf_dim * 16)
    ch2d: tuple = (256, 64)               # 2D AdaIN blocks: 16 -> 32 -> 64
    d_ch: int = 64                        # discriminator channels of the first conv (doubling per layer)
    d_max_ch: int = 512                   # discriminator channels at most
    # losses
    style_weight: float = 1.0             # multi-scale style discriminators (DStyle_lambda)
    identity_weight: float = 1.0          # ||z^ - z||^2 (lambda_latent)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 32                  # global batch: images per step (split over ranks)
    optimizer: str = "adam"               # adam | rmsprop (the paper: Adam)
    lr_g: float = 1e-4                    # generator learning rate
    lr_d: float = 1e-4                    # discriminator learning rate
    betas: tuple = (0.5, 0.999)           # Adam (beta1, beta2)
    r1_weight: float = 0.0                # R1: D loss += r1_weight E||grad_x D(x)||^2 (the paper: none)
    d_first: bool = False                 # each step trains D, then G (official; every preset); False:
    #                                       G, then D (runs saved before this key)
    g_steps: int = 1                      # G steps per D step (official 2; every preset); 1: runs saved before this key
    preset: str = "cpu"


_OBJECTS = dict(yaw_range=(-180.0, 180.0), pitch_range=(-20.0, 20.0))
# 2-core CPU: the same architecture, about 1/8 of the channels (learns in minutes at 64^2); EMA
# beta 0.995 so that sample grids of runs of a few thousand steps show the trained weights
_CPU = dict(z_dim=64, w_dim=128, ch3d=(64, 32, 16), ch3d_post=(16, 16), proj_ch=128, ch2d=(64, 32),
            d_ch=32, d_max_ch=128, batch_size=16, lr_g=2e-4, lr_d=2e-4, ema_beta=0.995, sample_every=200,
            checkpoint_every=500)
# 32^2: an 8^3 volume (one 3D up-block fewer)
_CPU32 = dict(_CPU, resolution=32, ch3d=(64, 32), ch3d_post=(16,), ch2d=(64, 32))

PRESETS: dict[str, dict] = {
    "celeba64": dict(resolution=64),                       # the paper's CelebA setting
    "objects64": dict(_OBJECTS, resolution=64),
    # 128^2 (official generator_AdaIN_res128): one more 2D block, projection 512
    "celeba128": dict(resolution=128, proj_ch=512, ch2d=(256, 64, 32)),
    "cpu": dict(_CPU, resolution=64),
    "cpu_objects": dict(_CPU, **_OBJECTS),
    "cpu32": dict(_CPU32),
    "cpu32_objects": dict(_CPU32, **_OBJECTS),
    # tests: a few thousand parameters
    "tiny": dict(_OBJECTS, resolution=32, z_dim=8, w_dim=16, mlp_layers=1, ch3d=(16, 8),
                 ch3d_post=(8,), proj_ch=16, ch2d=(16, 8), d_ch=8, d_max_ch=16, batch_size=4,
                 sample_every=10, checkpoint_every=10, log_every=5),
}
# The official code (thunguyenphuoc/HoloGAN, config_HoloGAN.json) trains D, then G; its released
# CelebA config turns the style discriminators (style_disc false) and the identity loss
# (lambda_latent 0) off: the paper presets follow it; the CPU and test presets keep the paper's losses.
for _name, _p in PRESETS.items():
    _p.setdefault("d_first", True)
    _p.setdefault("g_steps", 2)
for _name in ("celeba64", "objects64", "celeba128"):
    PRESETS[_name].update(style_weight=0.0, identity_weight=0.0)
DEFAULT_PRESET = "cpu"


Config = HoloGANConfig  # the name aware3d.methods.gan_common looks for


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> HoloGANConfig:
    """A preset's config with ``overrides`` (field names of :class:`HoloGANConfig`)."""
    return gc.make_config(Config, PRESETS, preset, **overrides)


replace_config = gc.replace_config


def config_from_dict(d: dict) -> HoloGANConfig:
    """Rebuild a config from the plain data written to a run folder."""
    return gc.config_from_dict(Config, d)


# --------------------------------------------------------------------------------------------------
# Inputs


def sample_pose(cfg: HoloGANConfig, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) (n,) degrees, uniform in the configured ranges."""
    u = torch.rand(2, n, generator=generator)
    yaw = cfg.yaw_range[0] + (cfg.yaw_range[1] - cfg.yaw_range[0]) * u[0]
    pitch = cfg.pitch_range[0] + (cfg.pitch_range[1] - cfg.pitch_range[0]) * u[1]
    return yaw, pitch


def camera_from_angles(yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) of a unit-distance camera looking at the origin from azimuth ``yaw`` and
    elevation ``pitch`` (degrees; world z up). HoloGAN has no camera: the pose is carried as this
    c2w (one convention with the other GANs' controls) and read back by
    :func:`aware3d.fields.hologan.angles_from_c2w`."""
    return look_at(spherical_to_cartesian(1.0, pitch_deg, yaw_deg))


def sample_inputs(cfg: HoloGANConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> dict:
    """One z ~ U[-1, 1]^Z (official ``sample_z: uniform``) given as both ``z_shape`` (3D AdaIN)
    and ``z_app`` (2D AdaIN), and a pose from the prior as ``c2w`` (n, 4, 4)."""
    z = torch.rand(n, cfg.z_dim, generator=generator) * 2 - 1
    yaw, pitch = sample_pose(cfg, n, generator)
    return {"z_shape": z, "z_app": z.clone(), "c2w": camera_from_angles(yaw, pitch)}


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


def style_losses(style_logits, real: bool) -> torch.Tensor:
    """Sum over layers of the non-saturating loss of each style classifier (label ``real``)."""
    sign = -1.0 if real else 1.0
    return sum(F.softplus(sign * s).mean() for s in style_logits)


def identity_loss(z_pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L_identity = mean ||z^ - z||^2 (official ``q_loss``: mean over batch and dimensions)."""
    return (z_pred - z).pow(2).mean()


class HoloGANMethod:
    """What the GAN engine needs, plus HoloGAN's objectives (see :class:`ObjectiveEngine`)."""

    name = NAME
    image_range = (-1.0, 1.0)
    # controls (gan_common): the code of the 3D AdaIN layers, of the 2D ones, both
    latent_groups = {"shape": ["z_shape"], "appearance": ["z_app"], "latent": ["z_shape", "z_app"]}

    def __init__(self, cfg: HoloGANConfig):
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = HoloDiscriminator(resolution=cfg.resolution, ch=cfg.d_ch,
                                               max_ch=cfg.d_max_ch, z_dim=cfg.z_dim)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def camera_from_angles(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        return camera_from_angles(yaw_deg, pitch_deg)

    def angle_ranges(self) -> dict:
        (y0, y1), (p0, p1) = self.cfg.yaw_range, self.cfg.pitch_range
        return {"yaw": (y0, y1, 0.5 * (y0 + y1)), "pitch": (p0, p1, 0.5 * (p0 + p1))}

    def generator_objective(self, G, D, inputs: dict):
        d = D.forward_all(G(inputs))
        l_gan = generator_loss(d["logit"])
        l_style = style_losses(d["style_logits"], real=True)
        l_id = identity_loss(d["z_pred"], inputs["z_shape"])
        loss = l_gan + self.cfg.style_weight * l_style + self.cfg.identity_weight * l_id
        return loss, {"loss_G": l_gan.detach(), "loss_G_style": l_style.detach(),
                      "loss_identity_G": l_id.detach()}

    def discriminator_objective(self, G, D, real: torch.Tensor, inputs: dict, r1_weight: float):
        x_real = real.detach().requires_grad_(r1_weight > 0)
        dr = D.forward_all(x_real)
        with torch.no_grad():
            fake = G(inputs)
        df = D.forward_all(fake)
        l_real, l_fake = discriminator_loss(dr["logit"], df["logit"])
        l_style = style_losses(dr["style_logits"], real=True) + style_losses(df["style_logits"], real=False)
        l_id = identity_loss(df["z_pred"], inputs["z_shape"])
        loss = l_real + l_fake + self.cfg.style_weight * l_style + self.cfg.identity_weight * l_id
        out = {"loss_D": (l_real + l_fake).detach(), "loss_D_real": l_real.detach(),
               "loss_D_fake": l_fake.detach(), "loss_D_style": l_style.detach(),
               "loss_identity_D": l_id.detach(), "D_real": dr["logit"].detach().mean(),
               "D_fake": df["logit"].detach().mean(), "fake_std": fake.detach().float().std()}
        if r1_weight > 0:
            pen = r1_penalty(dr["logit"], x_real)
            loss = loss + r1_weight * pen
            out["R1"] = pen.detach()
        return loss, out

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)


gan_config_from = gc.gan_config_from  # kept under its former name here


def build_generator(cfg: HoloGANConfig) -> HoloGenerator:
    return HoloGenerator(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mlp_layers=cfg.mlp_layers,
                         ch3d=tuple(cfg.ch3d), ch3d_post=tuple(cfg.ch3d_post), proj_ch=cfg.proj_ch,
                         ch2d=tuple(cfg.ch2d), resolution=cfg.resolution)


def build(cfg: HoloGANConfig, seed: int | None = None) -> HoloGANMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return HoloGANMethod(cfg)


# --------------------------------------------------------------------------------------------------
# The method surface

PRESET_DESCRIPTIONS = {
    "celeba64": "the paper's CelebA setting at 64x64",
    "objects64": "the paper's networks on `aware3d data synth objects` (full yaw turn, pitch +-20)",
    "celeba128": "the official 128x128 generator (one more 2D block, projection 512)",
    "cpu": "about 1/8 of the channels for a CPU, faces' pose prior at 64x64 (the default)",
    "cpu_objects": "the CPU networks on synth objects at 64x64",
    "cpu32": "the CPU networks at 32x32 (an 8^3 volume)",
    "cpu32_objects": "the CPU networks on synth objects at 32x32",
    "tiny": "test-sized networks at 32x32",
}

METHOD = GenerativeMethod(
    NAME, "HoloGAN", HoloGANConfig, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=programs_for(HoloGANMethod.latent_groups),
    no_mesh_reason="its 3D representation is a learnt feature volume, not a density; mesh export "
                   "exists for nerf, ngp, nerfw, giraffe, graf, pigan and cips3d",
    paper="Nguyen-Phuoc et al., ICCV 2019")
PROGRAMS = tuple(METHOD.programs)
