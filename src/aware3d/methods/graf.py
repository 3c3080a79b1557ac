"""GRAF (Schwarz et al., NeurIPS 2020): generative radiance fields trained on K x K patches.

The generator renders a conditional radiance field (:class:`aware3d.fields.graf.GrafField`: z_s
with gamma(x) before the density trunk, z_a with gamma(d) before the colour head) seen from a camera
on a sphere / upper hemisphere looking at the origin (PAPERS.md card 4). In training it renders only
a K x K sparse patch of rays (K = 32): centre u and scale s ~ U[s_min, 1] with s_min annealed, so
the patch covers s of the image width around u; real images are bilinearly sampled at the same kind
of patch (:func:`sample_image_patches`, drawn independently, from the engine's generator). The
discriminator (:class:`PatchDiscriminator`, spectral norm + instance norm as the official code) only
ever sees K x K patches. Non-saturating loss + R1 (10), RMSprop lr G 5e-4 / D 1e-4, EMA 0.999;
each step trains D, then G.

Every preset follows the official code (autonomousvision/graf): the skip input enters the sixth
trunk layer, patch points lie on ``linspace(-1, 1, K) * s + u`` with rays at pixel index
coordinates and real patches sampled with ``align_corners=True``, D steps before G, rays at camera
depth 1 with near / far and the samples as depths along the optical axis (``planar_depth``), samples
at ``linspace(near, far, N)`` jittered between midpoints (``endpoint_samples``). The behaviour of
aware3d before it matched the official code stays as options, off in every preset and on for runs
saved without these keys: ``early_skip`` (the input one layer early), ``centre_patch_grid``
(pixel-centre patch grid, ``align_corners=False``), ``d_first=False`` (G, then D),
``planar_depth=False`` (unit rays, distances), ``endpoint_samples=False`` (N equal bins).

Rendering has a fast path (:func:`render_rays`, the default: latent and view-direction terms once
per image / ray, the feature layer fused into the colour layer, optional activation checkpointing
``grad_chunk`` and bfloat16 ``autocast_bf16``) and its reference (:func:`render_rays_reference`
through :meth:`GrafField.forward`, ``GrafGenerator.reference = True``); they agree to float rounding.

Pieces: :func:`sample_inputs` (latents, camera, patch), :class:`GrafGenerator` (rays ->
:func:`render_rays`, stratified + optional hierarchical samples),
:class:`PatchDiscriminator`, :class:`GrafMethod` (what the GAN engine needs).

``METHOD`` is its surface (:class:`aware3d.methods.base.GenerativeMethod`: train, load, render,
evaluate, :func:`export_mesh`) with the shared GAN controls as programs (camera yaw / pitch sweeps,
shape and appearance interpolation, fixed-seed grid).
Images are in [-1, 1]; the world is z-up with OpenGL cameras (docs/CONVENTIONS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.graf import GrafField
from ..render.cameras import (intrinsics_from_fov, look_at, patch_uv, pixel_grid, rays_from_pixels,
                              sample_poses_sphere, spherical_to_cartesian)
from ..programs.gan import programs_for
from ..nets.discriminators import PatchDiscriminator
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "graf"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class Config(gc.RunSettings):
    """Every setting of a GRAF run (plain data; written to the run folder's config)."""

    # image, patches, rendering
    resolution: int = 64                # full image size (square)
    patch: int = 32                     # K: the patch is K x K rays
    min_scale: float = 0.25             # s ~ U[s_min, max_scale]
    max_scale: float = 1.0              # s_max: upper bound of the patch scale s (patch side / image side)
    centre_patch_grid: bool = True      # patch points at (i + 0.5) / K of the patch, reals sampled with align_corners=False (runs saved before the fix); False: official grid
    scale_anneal: float = 0.0025        # s_min = max(min_scale, exp(-3 (step // anneal_every) a)), <= 0.9
    anneal_every: int = 1000            # s_min decreases every this many steps (official: 1000)
    n_samples: int = 64                 # stratified samples per ray
    n_importance: int = 0               # hierarchical samples per ray (0: official GRAF configs)
    near: float = 7.5                   # ray bounds for the largest camera radius
    far: float = 12.5                   # far ray bound (world units) for the largest camera radius
    white_background: bool = False      # composite rays onto white (Carla) instead of black
    chunk: int = 2048                   # rays per field call at inference, over the whole batch
    endpoint_samples: bool = False      # official: samples at linspace(near, far, N) (ends included), jittered between midpoints (False: N equal bins, midpoints / one uniform draw each; runs saved before the fix)
    planar_depth: bool = False          # official: rays at camera depth 1, near/far and samples are depths along the optical axis (False: unit rays, distances; runs saved before the fix)
    grad_chunk: int = 0                 # training: rays per recomputed chunk (activation checkpointing: one chunk's activations alive, one more forward); 0: all at once
    autocast_bf16: bool = False         # the field's matrix products in bfloat16 (CPU autocast; an approximation, BENCHMARKS.md)
    # camera (degrees; elevation above the xy-plane, azimuth from +x towards +y)
    fov: float = 10.0                   # field of view of the square image (degrees)
    radius: tuple = (9.5, 10.5)         # camera distance from the origin (world units): (min, max), uniform
    elevation_range: tuple = (5.0, 20.0)  # camera elevation above the xy-plane (degrees): (min, max)
    azimuth_range: tuple = (0.0, 90.0)  # camera azimuth from +x towards +y (degrees): (min, max), uniform
    uniform_area: bool = True           # official: uniform on the spherical band (v uniform)
    # networks
    z_shape_dim: int = 128              # shape code z_s size (joins gamma(x) before the density trunk)
    z_app_dim: int = 128                # appearance code z_a size (joins gamma(d) before the colour head)
    hidden: int = 256                   # width of the density trunk (colour layer: hidden / 2)
    n_layers: int = 8                   # ReLU layers of the density trunk
    skips: tuple = (4,)                 # skip k: [gamma(x), z_s] joins the output of trunk layer k (from 0, official)
    early_skip: bool = True             # count skips from 1 (the input enters one layer early; runs saved before the fix)
    n_freq_pos: int = 10                # positional-encoding frequencies L of the points (raw x kept)
    n_freq_dir: int = 4                 # positional-encoding frequencies L of the view directions
    pos_scale: float = 1.0              # points multiplied by this before gamma(x) (official: 1)
    ndf: int = 64                       # patch discriminator base channels (8 ndf at 4x4)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 8                 # global batch: images per step (split over ranks)
    optimizer: str = "rmsprop"          # rmsprop | adam (the paper: RMSprop; adam uses betas (0, 0.99))
    lr_g: float = 5e-4                  # generator learning rate (before lr_anneal)
    lr_d: float = 1e-4                  # discriminator learning rate (before lr_anneal)
    lr_anneal: float = 0.5              # lr *= lr_anneal at each of lr_anneal_steps
    lr_anneal_steps: tuple = (50000, 100000, 200000)  # steps at which lr_g and lr_d *= lr_anneal
    r1_weight: float = 10.0             # R1: D loss += r1_weight E||grad_x D(x)||^2 on real patches
    d_first: bool = False               # each step trains D, then G (official); False: G, then D (runs saved before the fix)
    density_noise: float = 1.0          # N(0, s^2) on raw densities, s decays linearly to 0 ...
    noise_anneal_steps: int = 5000      # ... over these steps (official "decrease_noise")
    mesh_extent: float = 1.0            # export_mesh box [-e, e]^3
    preset: str = "cpu32"


def _elevation_from_v(v: float) -> float:
    """Official camera parameter v (polar angle arccos(1 - 2 v)) -> elevation in degrees."""
    return round(90.0 - math.degrees(math.acos(1 - 2 * v)), 4)


# Every preset follows the official code. The dataclass defaults of these fields are the behaviour of
# aware3d before it matched the official code, which is what a saved config without them means (runs
# saved before the fix load and train as they did); see the options' comments.
_OFFICIAL = dict(early_skip=False, centre_patch_grid=False, d_first=True, planar_depth=True,
                 endpoint_samples=True)

# Faces (celebA, cats): fov 10, radius 10 (+-0.5), rays in [7.5, 12.5], polar angle 70-85 deg.
_FACES = dict(fov=10.0, radius=(9.5, 10.5), near=7.5, far=12.5,
              elevation_range=(_elevation_from_v(0.45642212862617093), _elevation_from_v(0.32898992833716556)),
              azimuth_range=(0.0, 90.0), uniform_area=True, mesh_extent=1.0)
# The built-in synthetic objects (aware3d.data.synth.synth_objects defaults): camera at radius 6,
# fov 40, elevation uniform in [20, 60], any azimuth; objects within ~2 of the origin.
_OBJECTS = dict(fov=40.0, radius=(6.0, 6.0), near=3.0, far=9.5, elevation_range=(20.0, 60.0),
                azimuth_range=(0.0, 360.0), uniform_area=False, pos_scale=0.5, flip=False,
                mesh_extent=2.2)
# Small networks that learn on a 2-core CPU in minutes (EMA 0.99: with 0.999 a few hundred steps
# leave the evaluated generator mostly at its initialisation). gamma(x) with L = 4: with L = 6 the
# small field kept its top frequencies as stripes across every sample for thousands of steps
# (BENCHMARKS.md, "GRAF's CPU presets: 4 position frequencies instead of 6": fid1k after 25
# minutes 336 -> 270 on celeba_10k, 278 -> 226 on synth objects).
_CPU = dict(resolution=32, patch=16, n_samples=16, n_importance=8, z_shape_dim=32, z_app_dim=16,
            hidden=64, n_layers=4, skips=(2,), n_freq_pos=4, n_freq_dir=2, ndf=16, batch_size=8,
            anneal_every=100, noise_anneal_steps=500, ema_beta=0.99, sample_every=100, checkpoint_every=200)

PRESETS: dict[str, dict] = {
    # paper / official configs
    "celeba64": dict(_FACES, resolution=64),
    "cats64": dict(_FACES, resolution=64, radius=(10.0, 10.0), azimuth_range=(0.0, 70.0)),
    "carla128": dict(resolution=128, fov=30.0, radius=(10.0, 10.0), near=7.5, far=12.5,
                     elevation_range=(_elevation_from_v(0.45642212862617093), 90.0),
                     azimuth_range=(0.0, 360.0), white_background=True, flip=False, mesh_extent=1.5),
    "celebahq256": dict(_FACES, resolution=256, min_scale=0.125, scale_anneal=0.0019),
    "objects64": dict(_OBJECTS, resolution=64),
    # CPU presets
    "cpu32": dict(_OBJECTS, **_CPU),
    "cpu32_faces": dict(_FACES, **_CPU),
}
PRESETS["tiny16"] = dict(_OBJECTS, resolution=16, patch=8, n_samples=6, n_importance=4, z_shape_dim=8,
                         z_app_dim=4, hidden=16, n_layers=2, skips=(), n_freq_pos=3, n_freq_dir=1,
                         ndf=4, batch_size=4, anneal_every=5, noise_anneal_steps=20, sample_every=10,
                         checkpoint_every=10, log_every=5)
# "tiny": the name every other method gives its smallest preset (test-sized runs)
PRESETS["tiny"] = PRESETS["tiny16"]
PRESETS = {k: dict(_OFFICIAL, **v) for k, v in PRESETS.items()}
DEFAULT_PRESET = "cpu32"


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> Config:
    return gc.make_config(Config, PRESETS, preset, **overrides)


# --------------------------------------------------------------------------------------------------
# Sampling: camera, latents, patches


def min_scale_at(cfg: Config, step: int) -> float:
    """The annealed lower bound s_min of the patch scale at training step ``step`` (official
    FlexGridRaySampler: exp(-3 (step // 1000) a), at most 0.9, at least ``min_scale``)."""
    if cfg.scale_anneal <= 0:
        return float(cfg.min_scale)
    k = (int(step) // max(int(cfg.anneal_every), 1)) * 3
    return float(min(0.9, max(cfg.min_scale, cfg.max_scale * math.exp(-k * cfg.scale_anneal))))


def sample_patch(n: int, s_min: float, s_max: float = 1.0, generator: torch.Generator | None = None):
    """``(center (n, 2), scale (n,))``: s ~ U[s_min, s_max] and a centre uniform in
    [-(1 - s), 1 - s]^2 (normalised image coordinates), so the patch stays inside the image."""
    s = s_min + (s_max - s_min) * torch.rand(n, generator=generator)
    c = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - s)[:, None]
    return c, s


def official_patch_grid(patch: int, center: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The official FlexGridRaySampler's patch: ``linspace(-1, 1, K)^2 * scale + center``, (B, K, K, 2)
    as (x, y) in grid_sample coordinates with ``align_corners=True`` (-1 and 1 are the centres of
    the first and last pixels)."""
    lin = torch.linspace(-1, 1, patch, dtype=center.dtype, device=center.device)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx, gy], -1)
    return grid * scale.to(center)[:, None, None, None] + center[:, None, None, :]


def official_patch_uv(width: int, height: int, patch: int, center: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (B, K, K, 2) of the official patch points: pixel index coordinates
    ``(g + 1) / 2 (size - 1)``, where the official code casts its rays (its ``get_rays`` puts pixel j's
    ray at u = j, principal point at size / 2)."""
    size = torch.tensor([width, height], dtype=center.dtype, device=center.device)
    return (official_patch_grid(patch, center, scale) + 1) * 0.5 * (size - 1)


def sample_image_patches(images: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                         patch: int, centre_grid: bool = True) -> torch.Tensor:
    """Bilinearly sample real images (B, C, H, W) at K x K patch points -> (B, C, K, K).

    ``centre_grid=False`` (official): the points of :func:`official_patch_grid` with
    ``grid_sample(align_corners=True)``, so at scale 1, centre 0 and K = H = W the patch is the
    image. ``centre_grid=True`` (runs saved before the fix): the points of
    :func:`aware3d.render.cameras.patch_uv` with ``align_corners=False`` (at scale 1, centre 0 and
    K = H = W also the image itself)."""
    B, C, H, W = images.shape
    if not centre_grid:
        grid = official_patch_grid(patch, center.to(images), scale.to(images))
        return F.grid_sample(images, grid, mode="bilinear", align_corners=True, padding_mode="border")
    uv = patch_uv(W, H, patch, center.to(images), scale.to(images))
    size = torch.tensor([W, H], dtype=images.dtype, device=images.device)
    grid = uv / size * 2 - 1
    return F.grid_sample(images, grid, mode="bilinear", align_corners=False, padding_mode="border")


def sample_camera(cfg: Config, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    r = tuple(cfg.radius) if cfg.radius[0] != cfg.radius[1] else float(cfg.radius[0])
    return sample_poses_sphere(n, r, cfg.elevation_range, cfg.azimuth_range,
                               uniform_area=cfg.uniform_area, generator=generator)


def sample_inputs(cfg: Config, n: int, generator: torch.Generator | None = None, train: bool = True,
                  s_min: float | None = None) -> dict:
    """Latents z_s, z_a ~ N(0, I), a camera from the prior and, in training, a patch (centre and
    scale with s ~ U[s_min, max_scale]); without a patch the generator renders the full image."""
    out = {"z_shape": torch.randn(n, cfg.z_shape_dim, generator=generator),
           "z_app": torch.randn(n, cfg.z_app_dim, generator=generator),
           "c2w": sample_camera(cfg, n, generator)}
    if train:
        c, s = sample_patch(n, cfg.min_scale if s_min is None else s_min, cfg.max_scale, generator)
        out["patch_center"], out["patch_scale"] = c, s
    return out


# --------------------------------------------------------------------------------------------------
# Rendering: the reference and the fast path


def render_rays_reference(field_fn, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far, n_samples: int,
                          n_importance: int = 0, *, perturb: bool = False, noise_std: float = 0.0,
                          background=None, chunk: int | None = None, planar: bool = False,
                          endpoints: bool = False) -> dict:
    """GRAF's volume rendering, written plainly: :func:`aware3d.methods.gan_common.render_radiance`
    with the official code's rays (``planar``: unnormalised rays, depths along the optical axis)
    and samples (``endpoints``: ``linspace(near, far, N)`` jittered between midpoints) as options;
    the reference of :func:`render_rays`."""
    return gc.render_radiance(field_fn, rays_o, rays_d, near, far, n_samples, n_importance, perturb=perturb,
                              noise_std=noise_std, background=background, chunk=chunk, planar=planar,
                              endpoints=endpoints)


def _draw_randoms(B: int, R: int, n_samples: int, n_importance: int, perturb: bool, noise_std: float,
                  dtype, device) -> dict:
    """The random draws of one unchunked :func:`render_rays_reference` call, in its order (global RNG):
    the strata jitter, the coarse density noise, the inverse-CDF levels, the fine density noise."""
    r = {}
    if perturb:
        r["u_t"] = torch.rand((B, R, n_samples), dtype=dtype, device=device)
    if noise_std > 0:
        r["noise"] = noise_std * torch.randn((B, R, n_samples), device=device)
    if n_importance > 0:
        if perturb:
            r["u_f"] = torch.rand((B, R, n_importance), dtype=dtype, device=device)
        if noise_std > 0:
            r["noise_f"] = noise_std * torch.randn((B, R, n_importance), device=device)
    return r


#: points per field call of the fast path without gradients (activations of ~16 MB per layer)
_BLOCK_POINTS = 16384


def _render_part(field: GrafField, rays_o, rays_d, near, far, z_shape, z_app, draws: dict, n_samples: int,
                 n_importance: int, perturb: bool, background, planar: bool, endpoints: bool, bf16: bool):
    from ..render.samplers import sample_pdf, stratified_samples
    from ..render.volume import deltas_from_t, render_weights, volume_render

    B, R = rays_o.shape[:2]
    if planar:
        norm = rays_d.norm(dim=-1)
        unit = rays_d / norm.unsqueeze(-1)
    else:
        norm, unit = None, rays_d
    with torch.autocast(rays_o.device.type, dtype=torch.bfloat16, enabled=bf16):
        terms = field.ray_terms(unit, z_app)
        head = field.head_weight()

    def evaluate(t, noise):
        pts = rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2)
        with torch.autocast(rays_o.device.type, dtype=torch.bfloat16, enabled=bf16):
            if torch.is_grad_enabled() or B * R * t.shape[-1] <= _BLOCK_POINTS:
                s, c = field.forward_rays(pts, terms, z_shape, head)
            else:  # without gradients: blocks of rays whose activations stay in the cache
                step = max(1, _BLOCK_POINTS // (B * t.shape[-1]))
                parts = [field.forward_rays(pts[:, a:a + step], terms[:, a:a + step], z_shape, head)
                         for a in range(0, R, step)]
                s, c = torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)
        s = s.float()
        return (s if noise is None else s + noise), c.float()

    def deltas(t):
        d = deltas_from_t(t)
        return d if norm is None else d * norm.unsqueeze(-1)

    t, bins = stratified_samples(near, far, n_samples, batch_shape=(B, R), perturb=perturb,
                                 dtype=rays_o.dtype, device=rays_o.device, u=draws.get("u_t"), endpoints=endpoints)
    sigma, values = evaluate(t, draws.get("noise"))
    if n_importance > 0:
        with torch.no_grad():
            w = render_weights(sigma, deltas=deltas(t))[0]
        t_fine = sample_pdf(bins, w, n_importance, deterministic=not perturb, u=draws.get("u_f"))
        s_f, v_f = evaluate(t_fine, draws.get("noise_f"))
        t, order = torch.sort(torch.cat([t, t_fine], -1), -1)
        sigma = torch.gather(torch.cat([sigma, s_f], -1), -1, order)
        values = torch.cat([values, v_f], -2)
        values = torch.gather(values, -2, order.unsqueeze(-1).expand(*order.shape, values.shape[-1]))
    out = volume_render(sigma, values, t, deltas=deltas(t), background=background)
    depth = out["depth"] if norm is None else out["depth"] * norm
    return out["color"], depth, out["opacity"]


def render_rays(field: GrafField, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far, z_shape: torch.Tensor,
                z_app: torch.Tensor, n_samples: int, n_importance: int = 0, *, perturb: bool = False,
                noise_std: float = 0.0, background=None, chunk: int | None = None, planar: bool = False,
                endpoints: bool = False, grad_chunk: int = 0, bf16: bool = False) -> dict:
    """The fast path of :func:`render_rays_reference` with ``field_fn = field(p, d, z_shape, z_app)``:
    the same samples, random draws (global RNG, in the reference's order) and outputs up to float
    rounding, through :meth:`GrafField.forward_rays` (latent and view-direction terms once per image /
    ray, the feature layer fused into the colour layer).

    ``chunk`` (inference): rays per field call over the whole batch, as the reference. ``grad_chunk``
    (with gradients): rays per image per recomputed piece (activation checkpointing: the forward keeps
    no activations, the backward recomputes one piece at a time; the draws are made for all rays first,
    so the result equals the unchunked one). ``bf16``: the field's matrix products under bfloat16
    autocast (encodings, compositing and the outputs stay float32)."""
    B, R = rays_o.shape[:2]
    kw = {"n_samples": n_samples, "n_importance": n_importance, "perturb": perturb, "background": background,
          "planar": planar, "endpoints": endpoints, "bf16": bf16}
    if chunk is not None and B * R > chunk and R > 1:
        step = max(1, int(chunk) // B)
        parts = []
        for a in range(0, R, step):
            nf = [v[:, a:a + step] if torch.is_tensor(v) and v.dim() == 2 else v for v in (near, far)]
            parts.append(render_rays(field, rays_o[:, a:a + step], rays_d[:, a:a + step], nf[0], nf[1],
                                     z_shape, z_app, noise_std=noise_std, **kw))
        return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}
    draws = _draw_randoms(B, R, n_samples, n_importance, perturb, noise_std, rays_o.dtype, rays_o.device)
    near = torch.as_tensor(near, dtype=rays_o.dtype, device=rays_o.device).expand(B, R)
    far = torch.as_tensor(far, dtype=rays_o.dtype, device=rays_o.device).expand(B, R)
    if grad_chunk and grad_chunk < R and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        parts = []
        for a in range(0, R, int(grad_chunk)):
            sl = slice(a, a + int(grad_chunk))
            dr = {k: v[:, sl] for k, v in draws.items()}
            parts.append(checkpoint(_render_part, field, rays_o[:, sl], rays_d[:, sl], near[:, sl], far[:, sl],
                                    z_shape, z_app, dr, use_reentrant=False, **kw))
        color, depth, acc = (torch.cat(p, 1) for p in zip(*parts))
    else:
        color, depth, acc = _render_part(field, rays_o, rays_d, near, far, z_shape, z_app, draws, **kw)
    return {"color": color, "depth": depth, "opacity": acc}


# --------------------------------------------------------------------------------------------------
# Networks


class GrafGenerator(nn.Module):
    """G(inputs) = volume rendering of the conditional radiance field along the camera's rays:
    K x K patch rays when ``inputs`` has ``patch_center``/``patch_scale``, else every pixel."""

    #: render through :func:`render_rays_reference` and :meth:`GrafField.forward` instead of the
    #: fast path :func:`render_rays` (tests and benchmarks compare the two)
    reference = False

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.field = GrafField(z_shape_dim=cfg.z_shape_dim, z_app_dim=cfg.z_app_dim, hidden=cfg.hidden,
                               n_layers=cfg.n_layers, skips=cfg.skips, n_freq_pos=cfg.n_freq_pos,
                               n_freq_dir=cfg.n_freq_dir, pos_scale=cfg.pos_scale,
                               early_skip=cfg.early_skip)
        self.density_noise = 0.0        # training regulariser, set per step by GrafMethod.set_step

    def intrinsics(self, dtype=torch.float32, device=None) -> torch.Tensor:
        return intrinsics_from_fov(self.cfg.fov, self.cfg.resolution, dtype=dtype, device=device)

    def camera_rays(self, inputs: dict):
        """``(rays_o, rays_d)`` each (B, h, w, 3): the patch's K x K rays or the full image's; unit
        directions, or with ``planar_depth`` directions at camera depth 1 (official)."""
        c2w = inputs["c2w"]
        res = self.cfg.resolution
        K = self.intrinsics(c2w.dtype, c2w.device).expand(c2w.shape[0], 3, 3)
        planar = bool(self.cfg.planar_depth)
        if self.cfg.centre_patch_grid:  # pixel centres (runs saved before the fix)
            if "patch_center" in inputs:
                uv = patch_uv(res, res, self.cfg.patch, inputs["patch_center"], inputs["patch_scale"])
            else:
                uv = pixel_grid(res, res, dtype=c2w.dtype, device=c2w.device).expand(c2w.shape[0], res, res, 2)
        # official: rays at pixel index coordinates (u = j), patches on the official grid
        elif "patch_center" in inputs:
            uv = official_patch_uv(res, res, self.cfg.patch, inputs["patch_center"].to(c2w),
                                   inputs["patch_scale"].to(c2w))
        else:
            uv = pixel_grid(res, res, dtype=c2w.dtype, device=c2w.device).expand(c2w.shape[0], res, res, 2) - 0.5
        return rays_from_pixels(K, c2w, uv, normalize=not planar)

    def near_far(self, c2w: torch.Tensor):
        """Per-camera ray bounds (B, 1): the configured bounds hold for the largest radius; closer
        cameras shift them by their distance to it (official GRAF), so every camera samples the same
        shell around the origin."""
        r = c2w[:, :3, 3].norm(dim=-1, keepdim=True)
        shift = float(max(self.cfg.radius)) - r
        return (self.cfg.near - shift).clamp_min(1e-3), self.cfg.far - shift

    def forward(self, inputs: dict, return_dict: bool = False):
        """Images (B, 3, h, w) in [-1, 1]; with ``return_dict`` also ``depth`` (B, h, w: expected
        distance along the ray, sum w_i t_i, times ||d|| with ``planar_depth``) and ``opacity``."""
        o, d = self.camera_rays(inputs)
        B, h, w, _ = o.shape
        o, d = o.reshape(B, h * w, 3), d.reshape(B, h * w, 3)
        near, far = self.near_far(inputs["c2w"])
        zs, za = inputs["z_shape"], inputs["z_app"]
        c = self.cfg
        bg = (1.0, 1.0, 1.0) if c.white_background else None
        kw = {"perturb": self.training, "noise_std": self.density_noise if self.training else 0.0,
              "background": bg, "chunk": None if torch.is_grad_enabled() else c.chunk,
              "planar": bool(c.planar_depth), "endpoints": bool(c.endpoint_samples)}
        near, far = near.expand(B, h * w), far.expand(B, h * w)
        if self.reference:
            def field(p, dirs):
                return self.field(p, dirs, zs, za)

            out = render_rays_reference(field, o, d, near, far, c.n_samples, c.n_importance, **kw)
        else:
            out = render_rays(self.field, o, d, near, far, zs, za, c.n_samples, c.n_importance,
                              grad_chunk=int(c.grad_chunk), bf16=bool(c.autocast_bf16), **kw)
        img = out["color"].reshape(B, h, w, 3).permute(0, 3, 1, 2) * 2 - 1
        if not return_dict:
            return img
        return {"image": img, "depth": out["depth"].reshape(B, h, w),
                "opacity": out["opacity"].reshape(B, h, w)}


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class GrafMethod:
    """Generator, patch discriminator, input sampling with the annealed patch scale, real patches,
    the per-step schedule (s_min, density noise, lr steps) and the controls' camera model."""

    name = NAME
    image_range = (-1.0, 1.0)
    latent_groups = {"shape": ["z_shape"], "appearance": ["z_app"]}

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.generator = GrafGenerator(cfg)
        self.discriminator = PatchDiscriminator(ndf=cfg.ndf, imsize=cfg.patch)
        self.s_min = min_scale_at(cfg, 0)

    # engine interface
    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train, s_min=self.s_min)

    def real_patches(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Real images (B, 3, H, W) -> K x K patches drawn like the generator's (same s_min)."""
        images = gc.resize_images(images, self.cfg.resolution)
        c, s = sample_patch(images.shape[0], self.s_min, self.cfg.max_scale, generator)
        return sample_image_patches(images, c, s, self.cfg.patch, centre_grid=self.cfg.centre_patch_grid)

    def wrap_dataset(self, dataset):
        return gc.MappedImages(dataset, self.real_patches)

    def set_step(self, step: int, engine=None) -> None:
        c = self.cfg
        self.s_min = min_scale_at(c, step)
        frac = max(0.0, 1.0 - step / max(c.noise_anneal_steps, 1))
        self.generator.density_noise = c.density_noise * frac
        if engine is not None:
            k = sum(1 for s in c.lr_anneal_steps if step >= int(s))
            for opt, lr in ((engine.opt_g, c.lr_g), (engine.opt_d, c.lr_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * c.lr_anneal ** k

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)

    # controls
    def camera_from_angles(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        r = 0.5 * (self.cfg.radius[0] + self.cfg.radius[1])
        return look_at(spherical_to_cartesian(r, pitch_deg, yaw_deg))

    def angle_ranges(self) -> dict:
        (a0, a1), (e0, e1) = self.cfg.azimuth_range, self.cfg.elevation_range
        return {"yaw": (float(a0), float(a1), 0.5 * (a0 + a1)),
                "pitch": (float(e0), float(e1), 0.5 * (e0 + e1))}


def build(cfg: Config, seed: int | None = None) -> GrafMethod:
    """Networks initialised from ``seed`` (default cfg.seed)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return GrafMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Mesh export and the method surface


@torch.no_grad()
def export_mesh(run, seed: int = 0, resolution: int = 128, out_path=None,
                threshold: float | None = None) -> dict:
    """Marching cubes on the density of the sample drawn from ``seed`` (z_s only: density does not
    depend on z_a) in [-mesh_extent, mesh_extent]^3 of a loaded run, vertex colours seen from the
    mean camera; writes a PLY (default ``RUN/mesh_seed<seed>.ply``) and returns a summary."""
    cfg, method, G = run.config, run.gan, run.G
    x = {k: v.to(run.device) for k, v in run.sample(seed).items()}
    r = method.angle_ranges()
    eye = method.camera_from_angles(torch.tensor([r["yaw"][2]]), torch.tensor([r["pitch"][2]]))[0, :3, 3]

    return gc.export_sample_mesh(run.path, seed, cfg.mesh_extent,
                                 lambda p: G.field.density(p[None].to(run.device), x["z_shape"])[0],
                                 lambda v, d: G.field(v.to(run.device), d.to(run.device), x["z_shape"],
                                                      x["z_app"])[1], eye,
                                 out_path=out_path, resolution=resolution, threshold=threshold)


PRESET_DESCRIPTIONS = {
    "celeba64": "the paper's CelebA setup at 64x64 (faces: fov 10, radius 10, patches of 32)",
    "cats64": "the paper's Cats setup at 64x64",
    "carla128": "the paper's Carla setup at 128x128 (cars, full azimuth, white background)",
    "celebahq256": "the paper's CelebA-HQ setup at 256x256 (patch scale annealed to 1/8)",
    "objects64": "the paper's networks on `aware3d data synth objects` at 64x64",
    "cpu32": "small networks for a CPU, synth objects at 32x32 (the default)",
    "cpu32_faces": "small networks for a CPU, the faces' camera prior at 32x32",
    "tiny16": "test-sized networks at 16x16 (seconds per step on a CPU)",
    "tiny": "the same as tiny16",
}

METHOD = GenerativeMethod(
    NAME, "GRAF", Config, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=programs_for(GrafMethod.latent_groups), mesh=export_mesh,
    paper="Schwarz et al., NeurIPS 2020")
PROGRAMS = tuple(METHOD.programs)
