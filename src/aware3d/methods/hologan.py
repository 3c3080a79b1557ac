"""HoloGAN (Nguyen-Phuoc et al., ICCV 2019): unsupervised 3D feature volumes, rigidly rotated,
projected and decoded to images (PAPERS.md card 7).

Pieces (networks in :mod:`aware3d.fields.hologan`):

    sample_inputs       z ~ U[-1, 1]^Z (official ``sample_z: uniform``), yaw / pitch from the prior
    HoloGenerator       constant 4^3 -> 3D AdaIN blocks -> rotate -> 3D convs -> projection -> 2D AdaIN
    HoloDiscriminator   IN + spectral-norm critic with style heads and a z head
    losses              GAN (non-saturating) + multi-scale style losses + identity ||z^ - z||^2

Training: Adam (lr 1e-4, beta1 0.5, beta2 0.999) for both networks, no R1 (the official code uses
spectral + instance norm instead). The style losses enter both D's and G's objective (paper eq. 4:
each style classifier is a discriminator); the identity term is minimised by both networks
(official ``q_loss``). The official code takes two G steps per D step; one each here.

The engine (:mod:`aware3d.train.gan`) has no hook for extra loss terms: :class:`ObjectiveEngine`
subclasses it so the G and D phases take their objective from the method
(``generator_objective`` / ``discriminator_objective``), and :func:`train` installs it with
:func:`engine_class` until ``train_gan`` accepts an engine class (see the function).

Controls: shape = the code of the 3D AdaIN layers, appearance = the code of the 2D AdaIN layers
(one z in training, two codes at render time); camera yaw / pitch rotate the volume.
Entry points: :func:`train`, :func:`evaluate`, :data:`PROGRAMS`, :func:`render`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..fields.hologan import HoloDiscriminator, HoloGenerator
from ..train.gan import GanEngine, discriminator_loss, ema_update, generator_loss, r1_penalty

NAME = "hologan"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class HoloGANConfig:
    """Every setting of a HoloGAN run (plain data; written to the run folder's config)."""

    resolution: int = 64
    # pose prior (degrees): yaw about the vertical axis, pitch about the horizontal one, uniform
    yaw_range: tuple = (-50.0, 50.0)      # official celebA: azimuth 220..320 = 270 +- 50
    pitch_range: tuple = (-20.0, 20.0)    # official celebA: elevation 70..110 = 90 +- 20
    # networks
    z_dim: int = 128
    w_dim: int = 256
    mlp_layers: int = 2
    ch3d: tuple = (512, 256, 128)         # constant 4^3 x 512 -> 8^3 x 256 -> 16^3 x 128
    ch3d_post: tuple = (64, 64)           # 3D convs after the rotation
    proj_ch: int = 1024                   # projection unit output (official 64^2: gf_dim * 16)
    ch2d: tuple = (256, 64)               # 2D AdaIN blocks: 16 -> 32 -> 64
    d_ch: int = 64
    d_max_ch: int = 512
    # losses
    style_weight: float = 1.0             # multi-scale style discriminators (DStyle_lambda)
    identity_weight: float = 1.0          # ||z^ - z||^2 (lambda_latent)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 32
    optimizer: str = "adam"
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple = (0.5, 0.999)
    ema_beta: float = 0.999
    r1_weight: float = 0.0
    r1_interval: int = 1
    flip: bool = True
    sample_every: int = 500
    checkpoint_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "auto"
    preset: str = "cpu"
    data: str | None = None


_OBJECTS = dict(yaw_range=(-180.0, 180.0), pitch_range=(-20.0, 20.0))
# 2-core CPU: the same architecture, about 1/8 of the channels (learns in minutes at 64^2)
_CPU = dict(z_dim=64, w_dim=128, ch3d=(64, 32, 16), ch3d_post=(16, 16), proj_ch=128, ch2d=(64, 32),
            d_ch=32, d_max_ch=128, batch_size=16, lr_g=2e-4, lr_d=2e-4, sample_every=200,
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
DEFAULT_PRESET = "cpu"


def _coerce(value, current):
    from .giraffe import _coerce as coerce  # one parser for command-line overrides

    return coerce("", value, current)


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> HoloGANConfig:
    """A preset's config with ``overrides`` (field names of :class:`HoloGANConfig`)."""
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    return replace_config(HoloGANConfig(**PRESETS[preset], preset=preset), **overrides)


def replace_config(cfg, **overrides):
    """``dataclasses.replace`` with unknown names refused and command-line strings parsed."""
    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown {type(cfg).__name__} setting(s) {bad}; known: {sorted(names)}")
    vals = {k: _coerce(v, getattr(cfg, k)) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **vals)


def config_from_dict(d: dict, cls=HoloGANConfig):
    """Rebuild a config from the plain data written to a run folder."""
    names = {f.name for f in dataclasses.fields(cls)}
    base = cls()
    return dataclasses.replace(base, **{k: _coerce(v, getattr(base, k)) for k, v in d.items() if k in names})


# --------------------------------------------------------------------------------------------------
# Inputs


def sample_pose(cfg: HoloGANConfig, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) (n,) degrees, uniform in the configured ranges."""
    u = torch.rand(2, n, generator=generator)
    yaw = cfg.yaw_range[0] + (cfg.yaw_range[1] - cfg.yaw_range[0]) * u[0]
    pitch = cfg.pitch_range[0] + (cfg.pitch_range[1] - cfg.pitch_range[0]) * u[1]
    return yaw, pitch


def sample_inputs(cfg: HoloGANConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> dict:
    """``z`` (n, Z) ~ U[-1, 1] and a pose ``yaw``, ``pitch`` (n,) in degrees."""
    z = torch.rand(n, cfg.z_dim, generator=generator) * 2 - 1
    yaw, pitch = sample_pose(cfg, n, generator)
    return {"z": z, "yaw": yaw, "pitch": pitch}


# --------------------------------------------------------------------------------------------------
# Engine hook: phases whose objective the method provides


class ObjectiveEngine(GanEngine):
    """:class:`GanEngine` whose G and D phases take their loss from the method:

    - ``method.generator_objective(G, D, inputs) -> (loss, scalars)``
    - ``method.discriminator_objective(G, D, real, inputs, r1_weight) -> (loss, scalars)``
      (``r1_weight`` is 0 on steps without inline R1)

    Everything else (optimisers, EMA, gradient averaging over processes, lazy R1, checkpoints) is
    the engine's. A method without these two functions trains exactly as with :class:`GanEngine`."""

    def phase_generator(self) -> dict:
        if not hasattr(self.method, "generator_objective"):
            return super().phase_generator()
        self.G.train().requires_grad_(True)
        self.D.train().requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        loss, out = self.method.generator_objective(self.G, self.D, self.draw_inputs(train=True))
        loss.backward()
        self._average_grads(self.G)
        self.opt_g.step()
        ema_update(self.G_ema, self.G, self.cfg.ema_beta)
        return out

    def phase_discriminator(self, real: torch.Tensor, with_r1: bool) -> dict:
        if not hasattr(self.method, "discriminator_objective"):
            return super().phase_discriminator(real, with_r1)
        self.G.train().requires_grad_(False)
        self.D.train().requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        r1 = self.cfg.r1_weight if with_r1 else 0.0
        loss, out = self.method.discriminator_objective(self.G, self.D, real,
                                                        self.draw_inputs(train=True), r1)
        loss.backward()
        self._average_grads(self.D)
        self.opt_d.step()
        return out


@contextlib.contextmanager
def engine_class(cls):
    """Make :func:`aware3d.train.gan.train_gan` build ``cls`` instead of :class:`GanEngine`.

    ``train_gan`` constructs ``GanEngine`` by name; until it takes an ``engine_cls`` argument this
    swaps the module attribute for the duration of the call (restored on exit)."""
    from ..train import gan

    old = gan.GanEngine
    gan.GanEngine = cls
    try:
        yield
    finally:
        gan.GanEngine = old


def run_gan(method, dataset, run_dir, gcfg, *, resume: bool, config: dict, engine_cls=ObjectiveEngine):
    """``train_gan`` with ``engine_cls`` (through its ``engine_cls`` argument when it has one)."""
    from ..train import gan

    if "engine_cls" in inspect.signature(gan.train_gan).parameters:
        return gan.train_gan(method, dataset, run_dir, gcfg, resume=resume, config=config,
                             engine_cls=engine_cls)
    with engine_class(engine_cls):
        return gan.train_gan(method, dataset, run_dir, gcfg, resume=resume, config=config)


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

    def __init__(self, cfg: HoloGANConfig):
        self.cfg = cfg
        self.generator = build_generator(cfg)
        self.discriminator = HoloDiscriminator(resolution=cfg.resolution, ch=cfg.d_ch,
                                               max_ch=cfg.d_max_ch, z_dim=cfg.z_dim)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def generator_objective(self, G, D, inputs: dict):
        d = D.forward_all(G(inputs))
        l_gan = generator_loss(d["logit"])
        l_style = style_losses(d["style_logits"], real=True)
        l_id = identity_loss(d["z_pred"], inputs["z"])
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
        l_id = identity_loss(df["z_pred"], inputs["z"])
        loss = l_real + l_fake + self.cfg.style_weight * l_style + self.cfg.identity_weight * l_id
        out = {"loss_D": (l_real + l_fake).detach(), "loss_D_real": l_real.detach(),
               "loss_D_fake": l_fake.detach(), "loss_D_style": l_style.detach(),
               "loss_identity_D": l_id.detach(), "D_real": dr["logit"].detach().mean(),
               "D_fake": df["logit"].detach().mean()}
        if r1_weight > 0:
            pen = r1_penalty(dr["logit"], x_real)
            loss = loss + r1_weight * pen
            out["R1"] = pen.detach()
        return loss, out

    def gan_config(self, **kw):
        return gan_config_from(self.cfg, **kw)


def gan_config_from(c, **kw):
    """GanConfig from a method config's engine fields (shared by HoloGAN and CIPS-3D)."""
    from ..train.gan import GanConfig

    base = dict(batch_size=c.batch_size, optimizer=c.optimizer, lr_g=c.lr_g, lr_d=c.lr_d,
                betas=tuple(c.betas), ema_beta=c.ema_beta, r1_weight=c.r1_weight,
                r1_interval=c.r1_interval, sample_every=c.sample_every,
                checkpoint_every=c.checkpoint_every, log_every=c.log_every,
                keep_checkpoints=c.keep_checkpoints, seed=c.seed, device=c.device)
    base.update(kw)
    return GanConfig(**base)


def build_generator(cfg: HoloGANConfig) -> HoloGenerator:
    return HoloGenerator(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mlp_layers=cfg.mlp_layers,
                         ch3d=tuple(cfg.ch3d), ch3d_post=tuple(cfg.ch3d_post), proj_ch=cfg.proj_ch,
                         ch2d=tuple(cfg.ch2d), resolution=cfg.resolution)


def build(cfg: HoloGANConfig, seed: int | None = None) -> HoloGANMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return HoloGANMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Entry points


def _train(module, data, out, preset, max_steps, max_minutes, resume, seed, batch_size, overrides) -> Path:
    """The train() of HoloGAN and CIPS-3D: ``module`` provides make_config, replace_config,
    config_from_dict and build (GIRAFFE's pattern)."""
    from ..data.imagefolder import ImageFolderDataset
    from ..train.io import latest_checkpoint, load_run_config

    run_dir = Path(out)
    if resume and latest_checkpoint(run_dir) is not None:
        cfg = module.config_from_dict(load_run_config(run_dir))
        cfg = module.replace_config(cfg, batch_size=batch_size, **overrides)
    else:
        cfg = module.make_config(preset, seed=seed, batch_size=batch_size, **overrides)
    cfg = dataclasses.replace(cfg, data=str(data))
    dataset = ImageFolderDataset(str(data), cfg.resolution, flip=cfg.flip)
    method = module.build(cfg)
    gcfg = method.gan_config(max_steps=max_steps, max_minutes=max_minutes)
    return run_gan(method, dataset, run_dir, gcfg, resume=resume, config=dataclasses.asdict(cfg))


def train(data: str, out: str, preset: str = DEFAULT_PRESET, max_steps: int | None = None,
          max_minutes: float | None = None, resume: bool = False, seed: int = 0,
          batch_size: int | None = None, **overrides) -> Path:
    """Train HoloGAN on an image folder ``data``; returns the run folder ``out``.

    ``overrides`` are :class:`HoloGANConfig` fields (strings are parsed as YAML). With ``resume``
    the stored config of ``out`` is used (overrides still apply) and training continues from the
    latest checkpoint. Multi-process: ``torchrun --nproc_per_node N`` (global batch split)."""
    import sys

    return _train(sys.modules[__name__], data, out, preset, max_steps, max_minutes, resume, seed,
                  batch_size, overrides)


def load_generator(run_dir, ema: bool = True, device: str | torch.device = "cpu"):
    """(config, generator) of a run's latest checkpoint; the EMA generator by default."""
    from ..train.io import load_checkpoint, load_run_config

    cfg = config_from_dict(load_run_config(run_dir))
    state = load_checkpoint(run_dir, map_location="cpu")
    G = build_generator(cfg)
    G.load_state_dict(state["G_ema" if ema and "G_ema" in state else "G"])
    return cfg, G.to(device).eval().requires_grad_(False)


def _evaluate(run_dir, n_gen, data, seed, batch_size, cfg, generate_inputs, G, image_range) -> dict:
    """FID/KID of ``G`` (shared by HoloGAN and CIPS-3D); writes ``run_dir/eval/metrics.json``."""
    import json

    from ..metrics.fid import compute_fid_kid
    from ..train.io import atomic_write_text
    from .giraffe import _real_images

    data = data or cfg.data
    if data is None:
        raise ValueError(f"{run_dir}: no training data path in the run config; pass data=")
    real = _real_images(str(data), cfg.resolution)
    g = torch.Generator().manual_seed(seed)
    lo, hi = image_range

    @torch.no_grad()
    def generate(n: int) -> torch.Tensor:
        return ((G(generate_inputs(cfg, n, g, train=False)) - lo) / (hi - lo)).clamp(0, 1)

    res = compute_fid_kid(generate, real, n_gen, batch_size=batch_size,
                          cache_key=f"{Path(data).resolve()}@{cfg.resolution}")
    metrics = {k: float(v) for k, v in res.items()}
    metrics.update(n_gen=int(n_gen), n_real=int(real.shape[0]), resolution=cfg.resolution,
                   generator="ema", data=str(data))
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate(run_dir, n_gen: int = 5000, data: str | None = None, seed: int = 0,
             batch_size: int = 50) -> dict:
    """FID and KID of the EMA generator on ``n_gen`` images against ``data`` (default the run's
    training folder); writes ``run_dir/eval/metrics.json`` with ``{"fid5k", "kid5k", ...}``."""
    cfg, G = load_generator(run_dir)
    return _evaluate(run_dir, n_gen, data, seed, batch_size, cfg, sample_inputs, G, HoloGANMethod.image_range)


# --------------------------------------------------------------------------------------------------
# Render programs

PROGRAMS = ("yaw", "pitch", "interpolate_shape", "interpolate_appearance", "interpolate", "grid")


def _pingpong(n: int) -> torch.Tensor:
    """n values 0 -> 1 -> 0 (a loop for GIFs)."""
    return 0.5 * (1 - torch.cos(2 * math.pi * torch.arange(n, dtype=torch.float32) / n))


def _sweep(n: int) -> torch.Tensor:
    """n values in [-1, 1]: 0 -> 1 -> 0 -> -1 -> 0."""
    return torch.sin(2 * math.pi * torch.arange(n, dtype=torch.float32) / n)


def sweep_angles(lo: float, hi: float, n: int, margin: float = 0.0) -> torch.Tensor:
    """n angles looping over [lo - margin, hi + margin]: a full turn when the range is >= 360."""
    if hi - lo >= 360:
        return lo + 360.0 * torch.arange(n, dtype=torch.float32) / n
    mid, amp = 0.5 * (lo + hi), 0.5 * (hi - lo) + margin
    return mid + amp * _sweep(n)


def program_inputs(cfg: HoloGANConfig, program: str, seed: int, n_frames: int, n_samples: int):
    """The frames' inputs of a program: a list of dicts (z_shape, z_app, yaw, pitch)."""
    if program not in PROGRAMS:
        raise ValueError(f"program: expected one of {list(PROGRAMS)}, got {program!r}")
    g = torch.Generator().manual_seed(int(seed))
    if program == "grid":
        n_samples = n_samples * n_samples
    a = sample_inputs(cfg, n_samples, g, train=False)
    b = sample_inputs(cfg, n_samples, g, train=False)
    zero = torch.zeros(n_samples)
    base = {"z_shape": a["z"], "z_app": a["z"], "yaw": zero, "pitch": zero}
    frames = []
    if program == "grid":
        return [dict(base, yaw=a["yaw"], pitch=a["pitch"])]
    for k in range(n_frames):
        x = dict(base)
        w = float(_pingpong(n_frames)[k])
        if program == "yaw":
            x["yaw"] = torch.full((n_samples,), float(sweep_angles(*cfg.yaw_range, n_frames, 15.0)[k]))
        elif program == "pitch":
            x["pitch"] = torch.full((n_samples,), float(sweep_angles(*cfg.pitch_range, n_frames, 10.0)[k]))
        elif program == "interpolate_shape":
            x["z_shape"] = torch.lerp(a["z"], b["z"], w)
        elif program == "interpolate_appearance":
            x["z_app"] = torch.lerp(a["z"], b["z"], w)
        else:
            x["z_shape"] = x["z_app"] = torch.lerp(a["z"], b["z"], w)
        frames.append(x)
    return frames


def write_program(frames: torch.Tensor, out: Path, stem: str, fps: float = 16.0, grid: bool = False) -> dict:
    """Frames (T, B, H, W, 3) in [0, 1] -> ``{stem}.gif``, ``{stem}.mp4`` (each frame a row of the
    samples) and ``{stem}.png`` (rows = samples, columns = up to 8 evenly spaced frames). With
    ``grid`` (T = 1): a square PNG grid only."""
    from ..train.io import make_grid, save_png, save_video

    out.mkdir(parents=True, exist_ok=True)
    T, B, H, W, C = frames.shape
    if grid:
        return {"png": save_png(out / f"{stem}.png", make_grid(frames[0], nrow=int(math.ceil(math.sqrt(B)))))}
    rows = [make_grid(frames[k], nrow=B) for k in range(T)]
    files = {"gif": save_video(out / f"{stem}.gif", rows, fps=fps),
             "mp4": save_video(out / f"{stem}.mp4", rows, fps=fps)}
    cols = min(T, 8)
    idx = torch.linspace(0, T - 1, cols).round().long()
    sel = frames[idx].permute(1, 0, 2, 3, 4).reshape(B * cols, H, W, C)
    files["png"] = save_png(out / f"{stem}.png", make_grid(sel, nrow=cols, pad_value=1.0))
    return files


@torch.no_grad()
def render_frames(G: HoloGenerator, cfg: HoloGANConfig, program: str, seed: int = 0,
                  n_frames: int = 32, n_samples: int = 4) -> torch.Tensor:
    """(T, n, H, W, 3) in [0, 1]."""
    out = []
    for x in program_inputs(cfg, program, seed, n_frames, n_samples):
        out.append(((G(x).float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1))
    return torch.stack(out)


def render(run_dir, program: str, out_dir=None, seed: int = 0, n_frames: int | None = None,
           n_samples: int = 4, fps: float = 16.0) -> dict:
    """Render ``program`` (one of :data:`PROGRAMS`) with the run's EMA generator; returns the
    written files ``{"gif", "mp4", "png"}`` (``grid``: ``{"png"}``, n_samples^2 samples)."""
    cfg, G = load_generator(run_dir)
    frames = render_frames(G, cfg, program, seed, n_frames or 32, n_samples)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "render" / program
    return write_program(frames, out, f"{program}_seed{seed}", fps, grid=program == "grid")
