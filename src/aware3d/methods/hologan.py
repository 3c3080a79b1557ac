"""HoloGAN (Nguyen-Phuoc et al., ICCV 2019): unsupervised 3D feature volumes, rigidly rotated,
projected and decoded to images (PAPERS.md card 7).

Pieces (networks in :mod:`aware3d.fields.hologan`):

    sample_inputs       z ~ U[-1, 1]^Z (official ``sample_z: uniform``) as z_shape = z_app, and a
                        yaw / pitch from the prior carried as a look-at camera ``c2w``
    HoloGenerator       constant 4^3 -> 3D AdaIN blocks -> rotate -> 3D convs -> projection -> 2D AdaIN
    HoloDiscriminator   IN + spectral-norm critic with style heads and a z head
    losses              GAN (non-saturating) + multi-scale style losses + identity ||z^ - z||^2

Training: Adam (lr 1e-4, beta1 0.5, beta2 0.999) for both networks, no R1 (the official code uses
spectral + instance norm instead). The style losses enter D's objective, and G's where
``style_loss_g`` (paper eq. 4; the official code has them in D's loss only: the paper presets set
it False); the identity term is minimised by both networks (official ``q_loss``). The 64^2 paper
presets follow the official released config, which turns both off (``style_disc`` false,
``lambda_latent`` 0); the CPU presets keep them.

The paper presets are the official networks layer for layer (``generator_AdaIN`` /
``discriminator_IN`` at 64^2, the ``_res128`` pair at 128^2; keys ``adain_head``, ``g_act``,
``up3d_kernel``, ``rgb_layer``, ``rotation``, ``d_kernel``, ``d_style``, ``pose_prior``; their
defaults are the networks of runs saved before them). A weight transfer from the official
TensorFlow graph gives the same images to 5e-7 (BENCHMARKS.md). D steps before G
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
    # network conventions of the official code (paper presets; the defaults are runs saved before them)
    adain_head: str = "offset"            # offset: gamma = 1 + A w, beta = B w; relu: (gamma, beta) = relu(A w + b)
    #                                       (official z_mapping_function; with mlp_layers 0, one linear of z per layer)
    g_act: str = "lrelu"                  # generator activations: lrelu (0.2) | relu (official 64^2 generator_AdaIN)
    up3d_kernel: int = 4                  # 3D up-convs: 4 (padding 1) | 3 (official deconv3d k 3, TF 'SAME')
    rgb_layer: str = "conv3"              # last layer: conv3 (3x3 conv) | deconv4 (official g_h6: 4x4 stride-1
    #                                       transposed conv, TF 'SAME')
    rotation: str = "centred"             # centred: about the cube's centre, grid_sample, zeros ramp outside |
    #                                       official: tf_3D_transform (centre N/2, 0 outside [0, N-1)),
    #                                       azimuth 270 + yaw, elevation pitch, image layout of transform_voxel_to_match_image
    d_kernel: int = 4                     # discriminator convs: 4 (padding 1) | 5 (official conv2d k 5, TF 'SAME')
    d_style: str = "concat"               # style classifiers: concat Linear(2C, 1) | rows Linear(C, 1) on mean and
    #                                       var as rows (official _style_res128) | none (official discriminator_IN)
    style_loss_g: bool = True             # G's loss has the style terms (paper eq. 4); official: False (only D's has)
    pose_prior: str = "uniform"           # uniform: continuous yaw / pitch; integer: whole degrees as the official
    #                                       generate_random_rotation_translation (np.random.randint(low, high):
    #                                       azimuth 220..319 = yaw -50..49, elevation 90 - (70..109) = pitch -19..20)
    preset: str = "cpu"


_OBJECTS = dict(yaw_range=(-180.0, 180.0), pitch_range=(-20.0, 20.0))
# 2-core CPU: about 1/8 of the channels (learns in minutes at 64^2), with the networks' earlier
# conventions (the new keys' defaults: 4x4 up-convs, a z -> w MLP, LeakyReLU, centred rotation,
# 4x4 D convs with style classifiers; the paper presets below are the official networks); EMA
# beta 0.995 so that sample grids of runs of a few thousand steps show the trained weights
_CPU = dict(z_dim=64, w_dim=128, ch3d=(64, 32, 16), ch3d_post=(16, 16), proj_ch=128, ch2d=(64, 32),
            d_ch=32, d_max_ch=128, batch_size=16, lr_g=2e-4, lr_d=2e-4, ema_beta=0.995, sample_every=200,
            checkpoint_every=500)
# 32^2: an 8^3 volume (one 3D up-block fewer)
_CPU32 = dict(_CPU, resolution=32, ch3d=(64, 32), ch3d_post=(16,), ch2d=(64, 32))

# The official networks (thunguyenphuoc/HoloGAN model_HoloGAN.py; the released config names
# generator_AdaIN8, which does not exist: generator_AdaIN is its 64^2 generator, HoloGAN issue #11):
# generator_AdaIN: 4^3 x 512 -> 8^3 x 128 -> 16^3 x 64 (3D deconvs k 3), rotation, no 3D convs after
# it, projection 1024 -> 1024, 2D 256 -> 64, ReLU; one relu(linear(z)) per AdaIN layer;
# discriminator_IN: 5x5 convs 64 -> 512, no style classifiers. 7,797,251 / 5,381,761 parameters
# (counted from the official TF graph; tests/test_fidelity_hologan.py pins them per layer).
_OFFICIAL = dict(mlp_layers=0, adain_head="relu", up3d_kernel=3, rgb_layer="deconv4", rotation="official",
                 d_kernel=5, style_loss_g=False, pose_prior="integer")
_OFFICIAL64 = dict(_OFFICIAL, resolution=64, ch3d=(512, 128, 64), ch3d_post=(), proj_ch=1024, ch2d=(256, 64),
                   g_act="relu", d_style="none")

PRESETS: dict[str, dict] = {
    "celeba64": dict(_OFFICIAL64),                          # the paper's CelebA setting
    "objects64": dict(_OBJECTS, **_OFFICIAL64),
    # 128^2, official generator_AdaIN_res128 (8^3 x 256 -> 16^3 x 128, two 3D convs after the
    # rotation, projection 512, one more 2D block, LeakyReLU) and discriminator_IN_style_res128
    # (up to 1024 channels; its style classifiers are required: the official code unpacks 7
    # outputs only with style_disc true)
    "celeba128": dict(_OFFICIAL, resolution=128, ch3d=(512, 256, 128), ch3d_post=(64, 64), proj_ch=512,
                      ch2d=(256, 64, 32), g_act="lrelu", d_max_ch=1024, d_style="rows"),
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
PRESETS["celeba128"].update(style_weight=1.0)   # DStyle_lambda 1 with discriminator_IN_style_res128
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
    """(yaw, pitch) (n,) degrees, uniform in the configured ranges (``pose_prior="integer"``: whole
    degrees, yaw in [lo, hi) and pitch in (lo, hi], as the official randint draws)."""
    if cfg.pose_prior == "integer":
        (y0, y1), (p0, p1) = cfg.yaw_range, cfg.pitch_range
        yaw = torch.randint(int(y0), int(y1), (n,), generator=generator).float()
        pitch = -torch.randint(int(-p1), int(-p0), (n,), generator=generator).float()
        return yaw, pitch
    if cfg.pose_prior != "uniform":
        raise ValueError(f"pose_prior: expected 'uniform' or 'integer', got {cfg.pose_prior!r}")
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


def style_losses(style_logits, real: bool, like: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over layers of the non-saturating loss of each style classifier (label ``real``); 0 (a
    tensor like ``like``) for a discriminator without style classifiers."""
    sign = -1.0 if real else 1.0
    if not style_logits:
        return like.new_zeros(()) if like is not None else torch.zeros(())
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
        if cfg.d_style == "none" and cfg.style_weight != 0:
            raise ValueError(f"style_weight {cfg.style_weight}: d_style 'none' has no style classifiers "
                             "(set style_weight 0 or d_style 'rows' / 'concat')")
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = HoloDiscriminator(resolution=cfg.resolution, ch=cfg.d_ch,
                                               max_ch=cfg.d_max_ch, z_dim=cfg.z_dim,
                                               kernel=cfg.d_kernel, style=cfg.d_style)

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
        l_style = style_losses(d["style_logits"], real=True, like=d["logit"])
        l_id = identity_loss(d["z_pred"], inputs["z_shape"])
        loss = l_gan + self.cfg.identity_weight * l_id
        if self.cfg.style_loss_g:     # the official G loss has no style term (style_loss_g False)
            loss = loss + self.cfg.style_weight * l_style
        return loss, {"loss_G": l_gan.detach(), "loss_G_style": l_style.detach(),
                      "loss_identity_G": l_id.detach()}

    def discriminator_objective(self, G, D, real: torch.Tensor, inputs: dict, r1_weight: float):
        x_real = real.detach().requires_grad_(r1_weight > 0)
        dr = D.forward_all(x_real)
        with torch.no_grad():
            fake = G(inputs)
        df = D.forward_all(fake)
        l_real, l_fake = discriminator_loss(dr["logit"], df["logit"])
        l_style = (style_losses(dr["style_logits"], real=True, like=dr["logit"])
                   + style_losses(df["style_logits"], real=False, like=df["logit"]))
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
                         ch2d=tuple(cfg.ch2d), resolution=cfg.resolution, adain_head=cfg.adain_head,
                         act=cfg.g_act, up3d_kernel=cfg.up3d_kernel, rgb_layer=cfg.rgb_layer,
                         rotation=cfg.rotation)


def build(cfg: HoloGANConfig, seed: int | None = None) -> HoloGANMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return HoloGANMethod(cfg)


# --------------------------------------------------------------------------------------------------
# The method surface

PRESET_DESCRIPTIONS = {
    "celeba64": "the paper's CelebA setting at 64x64",
    "objects64": "the paper's networks on `aware3d data synth objects` (full yaw turn, pitch +-20)",
    "celeba128": "the official 128x128 networks (generator_AdaIN_res128, discriminator_IN_style_res128)",
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
