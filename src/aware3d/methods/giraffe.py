"""GIRAFFE (Niemeyer & Geiger, CVPR 2021): compositional generative neural feature fields.

The generator is a pipeline of separate pieces (PAPERS.md card 6), each callable and testable alone:

    sample_inputs         latent codes, object poses k_i, camera, ray depths, density noise
    camera_rays           one ray per feature pixel (render/cameras.image_rays)
    world_to_object       k^-1(x) = diag(1/s) R'^T (x - t) into each object's canonical box, with
                          R' = R^T (the official R (x - t)) or R (rotation_convention)
    evaluate_object       object feature field, only at the samples inside its box (packed)
    evaluate_background   background feature field at every sample
    render_feature_map    composition (render/compose) + volume rendering (render/volume)
    NeuralRenderer        2D conv upsampler: features 16^2 -> RGB 64^2 (or 256^2)

``GiraffeGenerator`` chains them; the networks are in :mod:`aware3d.fields.giraffe` (feature fields,
``NeuralRenderer``) and :mod:`aware3d.nets.discriminators` (``DCDiscriminator``, the DCGAN-style
critic); the GAN engine (:mod:`aware3d.train.gan`) owns the training loop. ``METHOD`` is its
surface (:class:`aware3d.methods.base.GenerativeMethod`: train, load, render, evaluate,
:func:`export_object_mesh`) with the controls of :mod:`aware3d.programs.giraffe` as programs.

Conventions: world z-up, OpenGL cameras (docs/CONVENTIONS.md); object poses k(x) = R' diag(s) x + t
with R' = R^T for the sampled rotation R about z in the presets (the official code's world-to-object
map R (x - t)), R' = R in runs saved before (``rotation_convention``); generated images are in [0, 1] (final sigmoid) and real images are
mapped to [0, 1] as in the official code, so R1 is measured on the same scale as theirs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.giraffe import Blur, FeatureField, NeuralRenderer  # noqa: F401  (Blur: re-exported)
from ..nets.discriminators import DCDiscriminator
from ..render.cameras import (image_rays, intrinsics_from_fov, look_at, rotation_z, sample_poses_sphere,
                              spherical_to_cartesian)
from ..render.compose import EPS as COMPOSE_EPS
from ..render.compose import compose
from ..render.samplers import points_along_rays, stratified_samples
from ..render.volume import accumulate_packed, render_weights, volume_render
from ..utils.autocast import bf16_autocast
from ..programs.giraffe import PROGRAMS as GIRAFFE_PROGRAMS
from . import gan_common as gc
from .base import GenerativeMethod

NAME = "giraffe"

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class GiraffeConfig(gc.RunSettings):
    """Every setting of a GIRAFFE run (plain data; written to the run folder's config)."""

    settings_name = "GIRAFFE"           # not a field: how error messages name these settings

    # image and rendering
    resolution: int = 64                # output image size (square)
    feature_res: int = 16               # volume-rendered feature map size
    n_samples: int = 64                 # samples per ray
    depth_range: tuple = (0.5, 6.0)     # near, far (distance along the ray)
    # camera (degrees; elevation above the xy-plane, azimuth from +x towards +y)
    fov: float = 49.13                  # field of view of the square image (degrees)
    radius: tuple = (2.732, 2.732)      # camera distance from the origin (world units): (min, max), uniform
    elevation_range: tuple = (19.47, 19.47)  # camera elevation above the xy-plane (degrees): (min, max)
    azimuth_range: tuple = (0.0, 0.0)   # camera azimuth from +x towards +y (degrees): (min, max), uniform
    uniform_area: bool = True           # official: uniform on the spherical band
    # objects: k(x) = R diag(s) x + t
    n_objects: int = 1                  # objects per scene (feature fields besides the background)
    scale_min: tuple = (0.21, 0.21, 0.21)  # lower bound of the scale s per axis (box half-size, world units)
    scale_max: tuple = (0.21, 0.21, 0.21)  # upper bound of the scale s per axis (box half-size, world units)
    fix_scale_ratio: bool = True        # one scale per object (isotropic when min/max are)
    translation_min: tuple = (0.0, 0.0, 0.0)  # object translation t per axis, lower bound (world units)
    translation_max: tuple = (0.0, 0.0, 0.0)  # object translation t per axis, upper bound (world units)
    rotation_range: tuple = (0.0, 0.0)  # about z, degrees
    object_on_plane: bool = False       # t_z = plane_z (+ s_z with plane_offset_by_scale)
    plane_z: float = 0.0                # height of the ground plane (world units), with object_on_plane
    plane_offset_by_scale: bool = False  # t_z = plane_z + s_z: objects rest on the plane, not centred in it
    check_collision: bool = False       # redraw the translations of scenes whose object boxes overlap
    collision_padding: float = 0.1      # gap required between two objects' boxes on some axis (world units)
    box_padding: float = 0.1            # objects live in [-1 - pad, 1 + pad]^3 of their box
    bg_rotation_range: tuple = (0.0, 0.0)  # background rotation about z (degrees): (min, max), uniform
    # networks
    z_dim: int = 256                    # size of each object's shape and appearance codes z_s, z_a
    z_dim_bg: int = 128                 # size of the background's shape and appearance codes
    feature_dim: int = 128              # M_f
    obj_hidden: int = 128               # width of the object feature field's hidden layers
    obj_blocks: int = 8                 # ReLU layers of the object field's density trunk
    obj_skips: tuple = (4,)             # trunk layers (1-based) after which z_s and gamma(x) enter again
    obj_downscale: float = 2.0          # points, directions / this before gamma (object box [-1, 1]^3)
    bg_hidden: int = 64                 # width of the background feature field's hidden layers
    bg_blocks: int = 4                  # ReLU layers of the background field's density trunk
    bg_skips: tuple = ()                # background trunk layers after which z_s, gamma(x) enter again
    bg_downscale: float = 12.0          # background points / directions divided by this before gamma
    n_freq_pos: int = 10                # positional-encoding frequencies L of the points (both fields)
    n_freq_dir: int = 4                 # positional-encoding frequencies L of view directions (both fields)
    nr_min_feat: int = 32               # neural renderer's fewest channels (halving per 2x upsampling)
    d_feat: int = 512                   # discriminator channels at 4x4 (halving per layer towards the image)
    # training (engine settings; see aware3d.train.gan.GanConfig)
    batch_size: int = 32                # global batch: images per step (split over ranks)
    optimizer: str = "rmsprop"          # rmsprop | adam (the paper: RMSprop; adam uses betas (0, 0.99))
    lr_g: float = 5e-4                  # generator learning rate
    lr_d: float = 1e-4                  # discriminator learning rate
    r1_weight: float = 10.0             # R1: D loss += r1_weight E||grad_x D(x)||^2 on the reals (no 1/2)
    density_noise: float = 1.0          # N(0, 1) added to raw densities in training (official)
    bf16: bool = True                   # bf16 autocast for the generator (fields + 2D renderer)
    bf16_d: bool = False                # bf16 autocast for the discriminator too (faster, noisier R1)
    # fidelity to the official code (autonomousvision/giraffe). The defaults are aware3d's earlier
    # behaviour, which runs saved without these keys keep; every preset sets "official".
    rotation_convention: str = "transpose"  # official: world -> object R (x - t) / s and background R x
    #                                         (a rotation by +a turns the scene by -a about z);
    #                                         transpose: diag(1/s) R^T (x - t) (turns by +a)
    ray_sampling: str = "unit"          # official: rays through the official pixel grid (outermost
    #                                     pixel centres on the fov edges) with camera-space z = -1,
    #                                     unnormalised, so depth_range is planar depth; depths
    #                                     linspace(near, far, N) jittered between midpoints.
    #                                     unit: unit rays through pixel centres, depth_range is the
    #                                     distance along the ray, stratified bins (midpoints at eval)
    compose_guard: str = "eps"          # official: feature = sum sigma_i f_i / sum sigma_i with the
    #                                     sum set to 1e-4 where it is 0; eps: / (sum + 1e-8) everywhere
    preset: str = "cpu32"

    @property
    def n_entities(self) -> int:
        return self.n_objects + 1


#: what every preset sets: the official code's conventions (see GiraffeConfig)
_OFFICIAL = dict(rotation_convention="official", ray_sampling="official", compose_guard="official")
_CHOICES = {"rotation_convention": ("official", "transpose"), "ray_sampling": ("official", "unit"),
            "compose_guard": ("official", "eps")}


def _check_choices(cfg: GiraffeConfig) -> None:
    for name, allowed in _CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {getattr(cfg, name)!r}")


def _deg_from_v(v: float) -> float:
    """Official camera range v in [0, 1] (polar angle arccos(1 - 2v)) -> elevation in degrees."""
    return math.degrees(math.asin(1 - 2 * v))


# Face datasets (celeba, cats): fov 10, one object of scale 0.21 rotated within
# [0.40278, 0.59722] of a full turn, elevation v in [0.4167, 0.5] (official configs).
_FACES = dict(fov=10.0, elevation_range=(0.0, round(_deg_from_v(0.4167), 4)), azimuth_range=(0.0, 0.0),
              n_objects=1, scale_min=(0.21,) * 3, scale_max=(0.21,) * 3,
              rotation_range=(0.40278 * 360, 0.59722 * 360))
# Clevr-2: 2 objects of scale 0.17 on the plane z = 0.1665, translation in [-0.713, 0.713]^2,
# camera elevation v = 1/3 (19.47 degrees), fov 49.13.
_CLEVR2 = dict(fov=49.13, elevation_range=(19.47, 19.47), n_objects=2, scale_min=(0.17,) * 3,
               scale_max=(0.17,) * 3, translation_min=(-0.713, -0.713, 0.0),
               translation_max=(0.713, 0.713, 0.0), rotation_range=(0.0, 0.0), object_on_plane=True,
               plane_z=0.1665, check_collision=True)
# The built-in synthetic objects (aware3d.data.synth.synth_objects defaults): camera at radius 6,
# fov 40, elevation uniform in [20, 60], any azimuth; 1-2 primitives of half size 0.3-0.6 on the
# floor z = 0 within 1.4 of the origin. Boxes of scale 0.45-0.75 (a rotated cube of half side 0.6
# needs 0.6 * sqrt 2 ~ 0.85 in x/y; the padding covers the rest) resting on the floor.
_OBJECTS = dict(fov=40.0, radius=(6.0, 6.0), elevation_range=(20.0, 60.0), azimuth_range=(0.0, 360.0),
                uniform_area=False, depth_range=(3.0, 9.5), n_objects=2, scale_min=(0.45,) * 3,
                scale_max=(0.75,) * 3, translation_min=(-1.4, -1.4, 0.0), translation_max=(1.4, 1.4, 0.0),
                rotation_range=(0.0, 360.0), object_on_plane=True, plane_z=0.0,
                plane_offset_by_scale=True, check_collision=True)
# Small networks that learn on a 2-core CPU in minutes: ~600 steps (9 minutes on one busy core)
# give objects of the right colours and sizes on the floor. The paper's RMSprop at 5e-4 / 1e-4
# with R1 = 10 barely moves in that budget; Adam (0, 0.99) at 1e-3 / 2e-3, R1 = 1 and a shorter
# EMA (0.99: the sample grids follow training within ~100 steps) do.
_CPU = dict(resolution=32, feature_res=8, n_samples=24, z_dim=32, z_dim_bg=16, feature_dim=32,
            obj_hidden=64, obj_blocks=4, obj_skips=(2,), bg_hidden=32, bg_blocks=2, n_freq_pos=6,
            n_freq_dir=2, nr_min_feat=16, d_feat=128, batch_size=16, optimizer="adam", lr_g=1e-3,
            lr_d=2e-3, r1_weight=1.0, ema_beta=0.99, sample_every=100, checkpoint_every=200)

PRESETS: dict[str, dict] = {
    "celeba64": dict(_FACES, resolution=64),
    "cats": dict(_FACES, elevation_range=(0.0, round(_deg_from_v(0.41667), 4)), resolution=64),
    "clevr2": dict(_CLEVR2, resolution=64),
    "objects64": dict(_OBJECTS, resolution=64),
    # 256^2 (official 256 configs): M_f = 256, 4 neural-renderer blocks, lr G 2.5e-4
    "celebahq256": dict(_FACES, rotation_range=(0.375 * 360, 0.625 * 360), resolution=256,
                        feature_dim=256, lr_g=2.5e-4),
    "clevr2_256": dict(_CLEVR2, resolution=256, feature_dim=256, lr_g=2.5e-4),
    "objects256": dict(_OBJECTS, resolution=256, feature_dim=256, lr_g=2.5e-4),
    # CPU presets: the scene priors of a dataset, networks small enough for minutes on 2 cores
    "cpu32": dict(_OBJECTS, **_CPU),
    "cpu32_faces": dict(_FACES, **_CPU),
    # the CPU networks at 64x64 on objects: with cpu32's D (Adam 2e-3, R1 = 1) the discriminator won
    # at ~step 4,600 and the generator's sigmoid saturated to black for good; D at G's rate with the
    # paper's R1 = 10 trained through 60 minutes (BENCHMARKS.md)
    "cpu64": dict(_OBJECTS, **dict(_CPU, resolution=64, lr_d=1e-3, r1_weight=10.0)),
}
# Tests and smoke runs: 16^2 images from 8^2 features, a few thousand parameters per field.
PRESETS["tiny16"] = dict(_OBJECTS, resolution=16, feature_res=8, n_samples=8, z_dim=8, z_dim_bg=4,
                         feature_dim=8, obj_hidden=16, obj_blocks=3, obj_skips=(1,), bg_hidden=8,
                         bg_blocks=2, n_freq_pos=3, n_freq_dir=1, nr_min_feat=4, d_feat=16,
                         batch_size=4, sample_every=10, checkpoint_every=10, log_every=5)
PRESETS["faces256"] = PRESETS["celebahq256"]
# "tiny": the name every other method gives its smallest preset (test-sized runs)
PRESETS["tiny"] = PRESETS["tiny16"]
for _p in PRESETS.values():
    if "rotation_convention" not in _p:
        _p.update(_OFFICIAL)
DEFAULT_PRESET = "cpu32"


def make_config(preset: str = DEFAULT_PRESET, **overrides) -> GiraffeConfig:
    """A preset's config with ``overrides`` (field names of :class:`GiraffeConfig`)."""
    return gc.make_config(GiraffeConfig, PRESETS, preset, **overrides)


replace_config = gc.replace_config


def config_from_dict(d: dict) -> GiraffeConfig:
    """Rebuild a config from the plain data written to a run folder."""
    return gc.config_from_dict(GiraffeConfig, d)


# --------------------------------------------------------------------------------------------------
# Pose sampling: object transforms k_i and the camera


def _lerp_range(lo, hi, u: torch.Tensor) -> torch.Tensor:
    lo = torch.as_tensor(lo, dtype=u.dtype)
    hi = torch.as_tensor(hi, dtype=u.dtype)
    return lo + u * (hi - lo)


def object_pose(cfg: GiraffeConfig, scale_u, translation_u, rotation_u):
    """Deterministic poses from unit values in [0, 1] (0.5 = middle of each range), as the official
    ``get_transformations``: scale_u (..., 3) (or (..., 1) with ``fix_scale_ratio``), translation_u
    (..., 3), rotation_u (...,). Returns ``(scale (..., 3), translation (..., 3), rotation (..., 3, 3))``."""
    scale_u = torch.as_tensor(scale_u, dtype=torch.float32)
    translation_u = torch.as_tensor(translation_u, dtype=torch.float32)
    rotation_u = torch.as_tensor(rotation_u, dtype=torch.float32)
    if cfg.fix_scale_ratio:
        scale_u = scale_u[..., :1]
    s = _lerp_range(cfg.scale_min, cfg.scale_max, scale_u)
    s = s.expand(*s.shape[:-1], 3).clone()
    t = _lerp_range(cfg.translation_min, cfg.translation_max, translation_u)
    if cfg.object_on_plane:
        t = t.clone()
        t[..., 2] = cfg.plane_z + (s[..., 2] if cfg.plane_offset_by_scale else 0.0)
    R = rotation_z(_lerp_range(cfg.rotation_range[0], cfg.rotation_range[1], rotation_u))
    return s, t, R


def _collides(s: torch.Tensor, t: torch.Tensor, pad: float) -> torch.Tensor:
    """(B, K) boxes: True for scenes where two boxes overlap on every axis (official test)."""
    K = s.shape[1]
    bad = torch.zeros(s.shape[0], dtype=torch.bool)
    for i in range(K):
        for j in range(i + 1, K):
            free = ((t[:, i] - t[:, j]).abs() >= (s[:, i] + s[:, j]) + pad).any(-1)
            bad |= ~free
    return bad


def sample_object_poses(cfg: GiraffeConfig, n: int, generator: torch.Generator | None = None,
                        n_objects: int | None = None, max_tries: int = 100):
    """Random k_i for ``n`` scenes of ``n_objects`` (default cfg.n_objects) objects:
    ``(scale (n, K, 3), translation (n, K, 3), rotation (n, K, 3, 3))``. With ``check_collision``
    colliding scenes redraw their translations (as the official bounding-box generator)."""
    K = cfg.n_objects if n_objects is None else n_objects
    su = torch.rand(n, K, 3, generator=generator)
    tu = torch.rand(n, K, 3, generator=generator)
    ru = torch.rand(n, K, generator=generator)
    s, t, R = object_pose(cfg, su, tu, ru)
    if cfg.check_collision and K > 1:
        for _ in range(max_tries):
            bad = _collides(s, t, cfg.collision_padding)
            if not bad.any():
                break
            tu_new = torch.rand(n, K, 3, generator=generator)
            _, t_new, _ = object_pose(cfg, su, tu_new, ru)
            t = torch.where(bad[:, None, None], t_new, t)
    return s, t, R


def camera_pose(cfg: GiraffeConfig, elevation_deg, azimuth_deg, radius=None) -> torch.Tensor:
    """c2w (..., 4, 4) of cameras looking at the origin from the given angles (degrees)."""
    r = sum(cfg.radius) / 2 if radius is None else radius
    return look_at(spherical_to_cartesian(r, elevation_deg, azimuth_deg))


def sample_camera(cfg: GiraffeConfig, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` cameras from the dataset's elevation / azimuth / radius ranges (c2w (n, 4, 4))."""
    r = tuple(cfg.radius) if cfg.radius[0] != cfg.radius[1] else float(cfg.radius[0])
    return sample_poses_sphere(n, r, cfg.elevation_range, cfg.azimuth_range,
                               uniform_area=cfg.uniform_area, generator=generator)


def sample_latents(cfg: GiraffeConfig, n: int, generator: torch.Generator | None = None,
                   n_objects: int | None = None) -> dict:
    """z_shape and z_app per entity, N(0, I)."""
    K = cfg.n_objects if n_objects is None else n_objects
    return {"z_shape_obj": torch.randn(n, K, cfg.z_dim, generator=generator),
            "z_app_obj": torch.randn(n, K, cfg.z_dim, generator=generator),
            "z_shape_bg": torch.randn(n, cfg.z_dim_bg, generator=generator),
            "z_app_bg": torch.randn(n, cfg.z_dim_bg, generator=generator)}


def sample_depths(cfg: GiraffeConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True) -> torch.Tensor:
    """Sample depths (n, R, N) on [near, far], R = feature_res^2 rays. ``ray_sampling``
    "official": linspace(near, far, N), jittered between midpoints in training, planar depths
    (camera-space -z); "unit": stratified bins (jittered in training, midpoints otherwise),
    distances along unit rays."""
    R = cfg.feature_res * cfg.feature_res
    if cfg.ray_sampling == "official":
        # official: di = linspace(near, far, N); in training each di is drawn uniformly between
        # the midpoints to its neighbours (the first / last from near / far)
        near, far = (float(v) for v in cfg.depth_range)
        di = near + torch.linspace(0.0, 1.0, cfg.n_samples) * (far - near)
        di = di.expand(n, R, cfg.n_samples)
        if not train:
            return di.contiguous()
        mid = 0.5 * (di[..., 1:] + di[..., :-1])
        hi = torch.cat([mid, di[..., -1:]], -1)
        lo = torch.cat([di[..., :1], mid], -1)
        return lo + (hi - lo) * torch.rand(lo.shape, generator=generator)
    t, _ = stratified_samples(float(cfg.depth_range[0]), float(cfg.depth_range[1]), cfg.n_samples,
                              batch_shape=(n, R), perturb=train, generator=generator)
    return t


def sample_inputs(cfg: GiraffeConfig, n: int, generator: torch.Generator | None = None,
                  train: bool = True, n_objects: int | None = None) -> dict:
    """Everything random the generator consumes, batch first (so a data-parallel rank can take its
    slice of one global draw): latents, object poses, background rotation, camera, ray depths and,
    in training, the density noise."""
    K = cfg.n_objects if n_objects is None else n_objects
    out = sample_latents(cfg, n, generator, K)
    s, t, R = sample_object_poses(cfg, n, generator, K)
    out.update(obj_scale=s, obj_translation=t, obj_rotation=R)
    lo, hi = cfg.bg_rotation_range
    out["bg_rotation"] = rotation_z(_lerp_range(lo, hi, torch.rand(n, generator=generator)))
    out["c2w"] = sample_camera(cfg, n, generator)
    out["t"] = sample_depths(cfg, n, generator, train)
    if train and cfg.density_noise > 0:
        R_ = cfg.feature_res ** 2
        out["sigma_noise"] = cfg.density_noise * torch.randn(n, K + 1, R_, cfg.n_samples, generator=generator)
    return out


# --------------------------------------------------------------------------------------------------
# Rays and the object transform


def camera_rays(cfg: GiraffeConfig, c2w: torch.Tensor):
    """One ray per feature pixel: ``(rays_o, rays_d)`` each (B, R, 3), R = feature_res^2, row-major
    (top row first). ``ray_sampling`` "unit": unit directions through pixel centres;
    "official": the official ``pixels_world - camera_world``, camera-space (x, y, -1) with x, y in
    tan(fov / 2) * linspace(-1, 1, res) (the outermost pixel centres on the fov edges), not
    normalised, so ``o + t d`` puts t at planar depth (see :func:`rays_and_depths`)."""
    res = cfg.feature_res
    if cfg.ray_sampling == "official":
        half = math.tan(0.5 * math.radians(float(cfg.fov)))
        lin = torch.linspace(-1.0, 1.0, res, dtype=c2w.dtype, device=c2w.device) * half
        y, x = torch.meshgrid(-lin, lin, indexing="ij")
        d_cam = torch.stack([x, y, -torch.ones_like(x)], -1).reshape(res * res, 3)
        d = torch.einsum("bij,rj->bri", c2w[:, :3, :3], d_cam)
        o = c2w[:, None, :3, 3].expand(-1, res * res, 3)
        return o, d
    K = intrinsics_from_fov(cfg.fov, res, dtype=c2w.dtype, device=c2w.device)
    o, d = image_rays(K.expand(c2w.shape[0], 3, 3), c2w, res, res)
    return o.reshape(c2w.shape[0], res * res, 3), d.reshape(c2w.shape[0], res * res, 3)


def rays_and_depths(cfg: GiraffeConfig, c2w: torch.Tensor, t: torch.Tensor):
    """``(rays_o, unit rays_d (B, R, 3), distances along the rays (B, R, N))`` for the generator's
    depths ``t`` (B, R, N). With ``ray_sampling`` "official" the depths are planar and become
    t * |d| on the official unnormalised rays d (the same points o + t d, and the official volume
    weights' spacings dt |d|); "unit" depths already are distances."""
    o, d = camera_rays(cfg, c2w)
    if cfg.ray_sampling != "official":
        return o, d, t
    n = d.norm(dim=-1, keepdim=True)
    return o, d / n, t * n


def frame_rotation(cfg: GiraffeConfig, rotation: torch.Tensor) -> torch.Tensor:
    """The matrix R' with which :func:`world_to_object` (diag(1/s) R'^T (x - t)),
    :func:`object_to_world` (R' diag(s) x + t) and :func:`evaluate_background` realise an entity's
    sampled ``rotation`` R: R itself with ``rotation_convention`` "transpose", R^T with "official"
    (the official code maps world to object by R (x - t), so an object rotated by +a about z turns
    by -a seen from above)."""
    return rotation.transpose(-1, -2) if cfg.rotation_convention == "official" else rotation


def object_to_world(x: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor,
                    rotation: torch.Tensor) -> torch.Tensor:
    """k(x) = R diag(s) x + t. x (B, ..., 3); scale, translation (B, 3); rotation (B, 3, 3)."""
    extra = x.dim() - 2
    view = (x.shape[0],) + (1,) * extra
    xs = x * scale.reshape(*view, 3)
    return torch.einsum("bij,b...j->b...i", rotation, xs) + translation.reshape(*view, 3)


def world_to_object(x: torch.Tensor, scale: torch.Tensor, translation: torch.Tensor,
                    rotation: torch.Tensor, *, direction: bool = False) -> torch.Tensor:
    """k^-1(x) = diag(1/s) R^T (x - t) (for a direction: no translation). Shapes as
    :func:`object_to_world`."""
    extra = x.dim() - 2
    view = (x.shape[0],) + (1,) * extra
    if not direction:
        x = x - translation.reshape(*view, 3)
    xr = torch.einsum("bji,b...j->b...i", rotation, x)  # R^T x
    return xr / scale.reshape(*view, 3)


# --------------------------------------------------------------------------------------------------
# Field evaluation


#: packed object samples are padded to a multiple of this many rows (see evaluate_object_packed)
PACK_BUCKET = 1024


def evaluate_object_packed(field: FeatureField, rays_o, rays_d, t, z_shape, z_app, scale, translation,
                           rotation, *, noise: torch.Tensor | None = None, padding: float = 0.1,
                           bf16: bool = False, return_hidden: bool = False):
    """One object's feature field at the ray samples inside its box only (packed layout).

    rays (B, R, 3), t (B, R, N), codes (B, Z), pose (B, 3) / (B, 3, 3), noise (B, R, N) or None.
    Points are mapped into the canonical box by k^-1; samples outside [-1 - pad, 1 + pad]^3 have
    zero density (the official code masks them) and are never evaluated. Returns ``(flat (S,)
    indices into the B * R * N samples, sigma (S,) raw + noise, feature (S, M_f))`` (the last
    hidden layer instead of the feature with ``return_hidden``), float32 except the hidden layer.
    """
    B, R, N = t.shape
    o_box = world_to_object(rays_o, scale, translation, rotation)
    d_box = world_to_object(rays_d, scale, translation, rotation, direction=True)
    p_box = points_along_rays(o_box, d_box, t)  # (B, R, N, 3): = k^-1(o + t d)
    inside = (p_box.abs() <= 1.0 + padding).all(-1)
    flat = inside.reshape(-1).nonzero().squeeze(1)
    # The count of inside samples changes every call; oneDNN builds (JIT-compiles) a bf16 matmul
    # for each new shape, so pad the packed rows up to a multiple of PACK_BUCKET and drop the pad.
    n = flat.numel()
    n_pad = max(PACK_BUCKET, -(-n // PACK_BUCKET) * PACK_BUCKET) - n
    rows = F.pad(flat, (0, n_pad))
    pts = p_box.reshape(-1, 3).index_select(0, rows)
    ray = torch.div(rows, N, rounding_mode="floor")
    index = torch.div(rows, R * N, rounding_mode="floor")
    with bf16_autocast(bf16, pts.device):
        sigma, feat = field(pts, d_box.reshape(-1, 3), z_shape, z_app, index=index, dir_index=ray,
                            return_hidden=return_hidden)
    sigma, feat = sigma[:n].float(), feat[:n]
    if noise is not None:
        sigma = sigma + noise.reshape(-1).index_select(0, flat)
    return flat, sigma, (feat if return_hidden else feat.float())


def evaluate_object(field: FeatureField, rays_o, rays_d, t, z_shape, z_app, scale, translation,
                    rotation, *, noise: torch.Tensor | None = None, padding: float = 0.1,
                    bf16: bool = False):
    """:func:`evaluate_object_packed` scattered to the padded layout: ``(sigma (B, R, N), feature
    (B, R, N, M_f))`` with zeros outside the box."""
    B, R, N = t.shape
    flat, s_in, f_in = evaluate_object_packed(field, rays_o, rays_d, t, z_shape, z_app, scale,
                                              translation, rotation, noise=noise, padding=padding,
                                              bf16=bf16)
    sigma = t.new_zeros(B * R * N).index_copy(0, flat, s_in)
    feat = t.new_zeros(B * R * N, field.feature_dim).index_copy(0, flat, f_in)
    return sigma.reshape(B, R, N), feat.reshape(B, R, N, -1)


def evaluate_background(field: FeatureField, rays_o, rays_d, t, z_shape, z_app, rotation, *,
                        noise: torch.Tensor | None = None, bf16: bool = False, return_hidden: bool = False):
    """Background feature field at every sample; the background frame is the world rotated by
    ``rotation`` (B, 3, 3) about z. Returns ``(sigma (B, R, N), feature (B, R, N, M_f))`` (the last
    hidden layer, not cast, with ``return_hidden``)."""
    B, R, N = t.shape
    o = torch.einsum("bji,brj->bri", rotation, rays_o)
    d = torch.einsum("bji,brj->bri", rotation, rays_d)
    p = points_along_rays(o, d, t).reshape(B * R * N, 3)
    # packed layout (flat points, per-point batch index, one direction per ray): on CPU the 2-D
    # matmuls and gathers run about twice as fast as broadcasting over (B, R, N, H) tensors
    index = torch.arange(B, device=t.device).repeat_interleave(R * N)
    ray = torch.arange(B * R, device=t.device).repeat_interleave(N)
    with bf16_autocast(bf16, p.device):
        sigma, feat = field(p, d.reshape(B * R, 3), z_shape, z_app, index=index, dir_index=ray,
                            return_hidden=return_hidden)
    sigma = sigma.float().reshape(B, R, N)
    if noise is not None:
        sigma = sigma + noise
    feat = feat.reshape(B, R, N, -1)
    return sigma, (feat if return_hidden else feat.float())


#: the official composition's stand-in for a density sum of exactly 0
OFFICIAL_ZERO_SUM = 1e-4


def compose_density_sum(total: torch.Tensor, guard: str = "eps") -> torch.Tensor:
    """The denominator of the composed feature: ``total`` with 1e-4 where it is 0 (``guard``
    "official", as the official ``composite_function``) or total + 1e-8 everywhere ("eps")."""
    if guard == "official":
        return torch.where(total == 0, torch.full_like(total, OFFICIAL_ZERO_SUM), total)
    return total + COMPOSE_EPS


def render_feature_map(sigmas: torch.Tensor, features: torch.Tensor, t: torch.Tensor, res: int,
                       guard: str = "eps"):
    """Compose E entities (GIRAFFE eq. 6) and volume-render them (the reference path).

    sigmas (E, B, R, N), features (E, B, R, N, C), t (B, R, N) distances along unit rays ->
    ``(feature map (B, C, res, res) (channels-last memory), opacity (B, res, res))``. ``guard``: see
    :func:`compose_density_sum`."""
    if guard == "official":
        s = sigmas.clamp_min(0)
        sigma = s.sum(0)
        feat = (s.unsqueeze(-1) * features).sum(0) / compose_density_sum(sigma, guard).unsqueeze(-1)
    else:
        sigma, feat = compose(sigmas, features)
    out = volume_render(sigma, feat, t)
    B, C = t.shape[0], feat.shape[-1]
    fmap = out["color"].reshape(B, res, res, C).permute(0, 3, 1, 2)
    return fmap, out["opacity"].reshape(B, res, res)


def render_feature_map_packed(objects: Sequence[tuple], background: tuple | None, t: torch.Tensor,
                              res: int, guard: str = "eps"):
    """The same composition and volume rendering as :func:`render_feature_map`, without dense
    per-sample features (the fast path of the generator).

    The rendered feature is sum_i w_i f_i with f_i = sum_e sigma_e,i f_e,i / sigma_i (eq. 6), i.e.
    sum_e sum_i a_e,i f_e,i with per-sample entity weights a_e,i = w_i sigma_e,i / sigma_i. Since
    each f_e = W_e h_e + b_e is affine in the field's last hidden layer h_e, it equals
    sum_e (W_e (sum_i a_e,i h_e,i) + b_e sum_i a_e,i): the hidden layers are accumulated per ray
    (objects only at their packed samples) and each output layer runs once per ray.

    objects: ``(flat (S,), raw sigma (S,), hidden (S, H), feat_out nn.Linear)`` per object (from
    :func:`evaluate_object_packed`); background: ``(raw sigma (B, R, N), hidden (B, R, N, H),
    feat_out)`` or None; t (B, R, N); ``guard``: see :func:`compose_density_sum`. Returns ``(feature map (B, C, res, res), opacity (B, res, res))``.
    """
    B, R, N = t.shape
    total = t.new_zeros(B * R * N)
    for flat, s, _, _ in objects:
        total = total.index_add(0, flat, s.clamp_min(0))
    if background is not None:
        total = total + background[0].clamp_min(0).reshape(-1)
    w, _, _ = render_weights(total.reshape(B, R, N), t)
    coef = w.reshape(-1) / compose_density_sum(total, guard)  # w_i / sigma_i
    fmap = None
    for flat, s, h, head in objects:
        a = coef.index_select(0, flat) * s.clamp_min(0)
        ray = torch.div(flat, N, rounding_mode="floor")
        hsum = accumulate_packed(a.unsqueeze(-1) * h.float(), ray, B * R)
        part = F.linear(hsum, head.weight) + accumulate_packed(a, ray, B * R).unsqueeze(-1) * head.bias
        fmap = part if fmap is None else fmap + part
    if background is not None:
        s, h, head = background
        a = (coef.reshape(B, R, N) * s.clamp_min(0)).reshape(B * R, 1, N)
        hsum = torch.bmm(a.to(h.dtype), h.reshape(B * R, N, -1)).reshape(B * R, -1).float()
        part = F.linear(hsum, head.weight) + a.sum(-1).float() * head.bias
        fmap = part if fmap is None else fmap + part
    C = fmap.shape[-1]
    return fmap.reshape(B, res, res, C).permute(0, 3, 1, 2), w.sum(-1).reshape(B, res, res)


# --------------------------------------------------------------------------------------------------
# The generator pipeline


class GiraffeGenerator(nn.Module):
    """G(inputs) = NeuralRenderer(volume_render(compose(object fields, background field))).

    ``inputs`` is a dict from :func:`sample_inputs` (any number K of objects)."""

    def __init__(self, cfg: GiraffeConfig):
        super().__init__()
        _check_choices(cfg)
        self.cfg = cfg
        self.object_field = FeatureField(
            hidden=cfg.obj_hidden, n_blocks=cfg.obj_blocks, skips=cfg.obj_skips, z_shape_dim=cfg.z_dim,
            feature_dim=cfg.feature_dim, n_freq_pos=cfg.n_freq_pos, n_freq_dir=cfg.n_freq_dir,
            downscale=cfg.obj_downscale)
        self.background_field = FeatureField(
            hidden=cfg.bg_hidden, n_blocks=cfg.bg_blocks, skips=cfg.bg_skips, z_shape_dim=cfg.z_dim_bg,
            feature_dim=cfg.feature_dim, n_freq_pos=cfg.n_freq_pos, n_freq_dir=cfg.n_freq_dir,
            downscale=cfg.bg_downscale)
        self.neural_renderer = NeuralRenderer(
            n_feat=cfg.feature_dim, input_dim=cfg.feature_dim, min_feat=cfg.nr_min_feat,
            img_size=cfg.resolution, feature_res=cfg.feature_res)

    @property
    def bf16(self) -> bool:
        return bool(self.cfg.bf16)

    def entity_fields(self, inputs: dict, objects: Sequence[int] | None = None, background: bool = True):
        """Densities and features of the chosen entities at the ray samples:
        ``(sigmas (E, B, R, N), features (E, B, R, N, C), t (B, R, N))``."""
        o, d, t = rays_and_depths(self.cfg, inputs["c2w"], inputs["t"])
        K = inputs["z_shape_obj"].shape[1]
        objects = range(K) if objects is None else list(objects)
        noise = inputs.get("sigma_noise")
        rot = frame_rotation(self.cfg, inputs["obj_rotation"])
        sig, feat = [], []
        for i in objects:
            s, f = evaluate_object(
                self.object_field, o, d, t, inputs["z_shape_obj"][:, i], inputs["z_app_obj"][:, i],
                inputs["obj_scale"][:, i], inputs["obj_translation"][:, i], rot[:, i],
                noise=None if noise is None or i >= noise.shape[1] - 1 else noise[:, i],
                padding=self.cfg.box_padding, bf16=self.bf16)
            sig.append(s)
            feat.append(f)
        if background:
            s, f = evaluate_background(self.background_field, o, d, t, inputs["z_shape_bg"],
                                       inputs["z_app_bg"], frame_rotation(self.cfg, inputs["bg_rotation"]),
                                       noise=None if noise is None else noise[:, -1], bf16=self.bf16)
            sig.append(s)
            feat.append(f)
        if not sig:
            raise ValueError("nothing to render: no objects selected and background=False")
        return torch.stack(sig), torch.stack(feat), t

    def feature_map(self, inputs: dict, objects: Sequence[int] | None = None, background: bool = True,
                    packed: bool = True):
        """Volume-rendered feature map (B, M_f, res, res) and opacity (B, res, res).

        ``packed`` (default) composites per-ray hidden layers (:func:`render_feature_map_packed`);
        ``packed=False`` is the reference path through dense features, :func:`compose` and
        :func:`volume_render` (same result to float round-off, more memory)."""
        if not packed:
            sigmas, feats, t = self.entity_fields(inputs, objects, background)
            return render_feature_map(sigmas, feats, t, self.cfg.feature_res, self.cfg.compose_guard)
        o, d, t = rays_and_depths(self.cfg, inputs["c2w"], inputs["t"])
        K = inputs["z_shape_obj"].shape[1]
        objects = range(K) if objects is None else list(objects)
        noise = inputs.get("sigma_noise")
        rot = frame_rotation(self.cfg, inputs["obj_rotation"])
        parts = []
        for i in objects:
            flat, s, h = evaluate_object_packed(
                self.object_field, o, d, t, inputs["z_shape_obj"][:, i], inputs["z_app_obj"][:, i],
                inputs["obj_scale"][:, i], inputs["obj_translation"][:, i], rot[:, i],
                noise=None if noise is None or i >= noise.shape[1] - 1 else noise[:, i],
                padding=self.cfg.box_padding, bf16=self.bf16, return_hidden=True)
            parts.append((flat, s, h, self.object_field.feat_out))
        bg = None
        if background:
            s, h = evaluate_background(self.background_field, o, d, t, inputs["z_shape_bg"],
                                       inputs["z_app_bg"], frame_rotation(self.cfg, inputs["bg_rotation"]),
                                       noise=None if noise is None else noise[:, -1], bf16=self.bf16,
                                       return_hidden=True)
            bg = (s, h, self.background_field.feat_out)
        if not parts and bg is None:
            raise ValueError("nothing to render: no objects selected and background=False")
        return render_feature_map_packed(parts, bg, t, self.cfg.feature_res, self.cfg.compose_guard)

    def forward(self, inputs: dict, objects: Sequence[int] | None = None, background: bool = True,
                return_alpha: bool = False):
        """Images (B, 3, S, S) in [0, 1]; with ``return_alpha`` a dict with ``image``, ``alpha``
        (B, 1, S, S: opacity of the rendered entities, bilinearly upsampled), ``features`` and
        ``opacity`` (B, res, res)."""
        fmap, acc = self.feature_map(inputs, objects, background)
        with bf16_autocast(self.bf16, fmap.device):
            img = self.neural_renderer(fmap).float()
        if not return_alpha:
            return img
        alpha = F.interpolate(acc[:, None], size=img.shape[-2:], mode="bilinear", align_corners=False)
        return {"image": img, "alpha": alpha.clamp(0, 1), "features": fmap, "opacity": acc}

    def object_density(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        """Raw density of the object field at canonical box points (B, P, 3) for codes (B, Z)."""
        return self.object_field.density(points, z_shape)


# --------------------------------------------------------------------------------------------------
# The method as the GAN engine sees it


class GiraffeMethod:
    """What :func:`aware3d.train.gan.train_gan` needs: the two networks, how to draw the
    generator's inputs, the image range and the optimiser settings."""

    name = NAME
    image_range = (0.0, 1.0)

    def __init__(self, cfg: GiraffeConfig):
        self.cfg = cfg
        self.generator = GiraffeGenerator(cfg)
        self.discriminator = DCDiscriminator(n_feat=cfg.d_feat, img_size=cfg.resolution, bf16=cfg.bf16_d)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None, train: bool = True) -> dict:
        return sample_inputs(self.cfg, n, generator, train)

    def gan_config(self, **kw):
        return gc.gan_config_from(self.cfg, **kw)

    # what the render programs (aware3d.programs.giraffe) use
    def sample_latents(self, n: int, generator: torch.Generator | None = None, n_objects: int | None = None) -> dict:
        return sample_latents(self.cfg, n, generator, n_objects)

    def sample_object_poses(self, n: int, generator: torch.Generator | None = None,
                            n_objects: int | None = None, **prior):
        """:func:`sample_object_poses` with the config's pose prior changed by ``prior`` (fields of
        :class:`GiraffeConfig`, e.g. a wider ``translation_min`` / ``translation_max``)."""
        return sample_object_poses(dataclasses.replace(self.cfg, **prior), n, generator, n_objects)

    def camera_pose(self, elevation_deg, azimuth_deg, radius=None) -> torch.Tensor:
        return camera_pose(self.cfg, elevation_deg, azimuth_deg, radius)


def build(cfg: GiraffeConfig, seed: int | None = None) -> GiraffeMethod:
    """Networks initialised from ``seed`` (default cfg.seed), identically on every rank."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return GiraffeMethod(cfg)


# --------------------------------------------------------------------------------------------------
# Mesh export and the method surface


@torch.no_grad()
def object_density_grid(G: GiraffeGenerator, z_shape: torch.Tensor, resolution: int = 128,
                        extent: float = 1.1, chunk: int = 65536) -> torch.Tensor:
    """Density (relu of the raw field output) of one object on a ``resolution``^3 grid spanning
    [-extent, extent]^3 of its canonical box, indexed (x, y, z). z_shape: (Z,)."""
    dev = next(G.parameters()).device
    z = z_shape.reshape(1, -1).float().to(dev)
    return gc.density_grid(lambda p: G.object_density(p.to(dev).unsqueeze(0), z)[0], -extent, extent,
                           resolution, chunk)


def export_object_mesh(run, seed: int = 0, object_index: int = 0, resolution: int = 128,
                       out_path=None, threshold: float | None = None, world: bool = True) -> dict:
    """Marching cubes (skimage) on object ``object_index`` of the scene drawn from ``seed``: its
    density in the canonical box [-1.1, 1.1]^3 (zero outside, as in the generator), at ``threshold`` (default: the level
    :func:`aware3d.train.recon.mesh_level` picks; an empty mesh is an error naming a level to try). Vertices are mapped to the world with the object's
    pose k(x) = R diag(s) x + t unless ``world=False``. ``run``: a loaded GIRAFFE run. Writes a
    binary PLY (default ``RUN/mesh_seed<seed>_object<k>.ply``) and returns a summary."""
    from ..train.recon import level_hint, mesh_level
    from ..utils.mesh import marching_cubes_mesh, write_ply

    cfg, G = run.config, run.G
    if not 0 <= object_index < cfg.n_objects:
        raise ValueError(f"object_index: expected 0..{cfg.n_objects - 1}, got {object_index}")
    x = run.sample(seed)
    ext = 1.0 + cfg.box_padding
    vol = object_density_grid(G, x["z_shape_obj"][0, object_index], resolution, ext)
    vmax = float(vol.max())
    # the object has no density outside its box (the generator masks it): a layer of zeros
    # closes surfaces that reach the box walls
    step = 2 * ext / (resolution - 1)
    padded = torch.nn.functional.pad(vol, (1, 1, 1, 1, 1, 1))
    # the level rule of every mesh export (aware3d.train.recon.mesh_level); never an empty mesh
    level = mesh_level(padded, threshold)
    if not float(padded.min()) < level < vmax:
        raise ValueError(f"no surface at density level {level:g}: {level_hint(padded)}")
    verts, faces = marching_cubes_mesh(padded.numpy(), level, (-ext - step,) * 3, (ext + step,) * 3)
    if len(faces) == 0:
        raise ValueError(f"no surface at density level {level:g}: {level_hint(padded)}")
    if world and len(verts):
        v = torch.from_numpy(verts).unsqueeze(0)
        verts = object_to_world(v, x["obj_scale"][:, object_index], x["obj_translation"][:, object_index],
                                   frame_rotation(cfg, x["obj_rotation"][:, object_index]))[0].numpy()
    out = Path(out_path) if out_path is not None else run.path / f"mesh_seed{seed}_object{object_index}.ply"
    write_ply(out, verts, faces)
    return {"path": str(out), "n_vertices": int(len(verts)), "n_faces": int(len(faces)),
            "threshold": level, "density_max": vmax, "resolution": resolution,
            "frame": "world" if world else "canonical box"}


PRESET_DESCRIPTIONS = {
    "celeba64": "the paper's CelebA setting at 64x64 (one object, fov 10)",
    "cats": "the paper's Cats setting at 64x64",
    "clevr2": "the paper's Clevr-2 setting at 64x64 (two objects on a plane)",
    "objects64": "the paper's networks on `aware3d data synth objects` at 64x64",
    "celebahq256": "the paper's CelebA-HQ setting at 256x256 (M_f = 256)",
    "faces256": "the same as celebahq256",
    "clevr2_256": "the paper's Clevr-2 setting at 256x256",
    "objects256": "the paper's networks on synth objects at 256x256",
    "cpu32": "small networks for a CPU, synth objects at 32x32 (the default)",
    "cpu32_faces": "small networks for a CPU, the faces' priors at 32x32",
    "cpu64": "the CPU networks on synth objects at 64x64 (D at G's rate, R1 10)",
    "tiny16": "test-sized networks at 16x16",
    "tiny": "the same as tiny16",
}

METHOD = GenerativeMethod(
    NAME, "GIRAFFE", GiraffeConfig, build, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET,
    programs=GIRAFFE_PROGRAMS, mesh=export_object_mesh, paper="Niemeyer & Geiger, CVPR 2021")
PROGRAMS = tuple(METHOD.programs)
