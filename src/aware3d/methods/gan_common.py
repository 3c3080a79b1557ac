"""Pieces the 3D-aware GAN methods share on top of the GAN engine (:mod:`aware3d.train.gan`) and
the method surface (:class:`aware3d.methods.base.GenerativeMethod`, which trains and loads them):

- **configs**: presets as dicts over a method's config dataclass (:func:`make_config`,
  :func:`replace_config`, :func:`config_from_dict`; command-line strings are parsed as YAML by
  :func:`coerce_value`);
- **data**: the image folder of a run (:func:`image_dataset`, :func:`real_images`) and
  :class:`MappedImages`, a wrapper that transforms every real batch the engine draws (resizing for
  progressive growing, GRAF's patches) with the engine's own random generator, so a resumed run
  continues exactly;
- **training settings**: :class:`RunSettings` (the bookkeeping fields of every GAN config) and
  :func:`gan_config_from` (the engine settings of a method config);
- **evaluation**: :func:`evaluate_generator` (FID / KID of a loaded run, ``RUN/eval/metrics.json``
  with ``{"fid5k", "kid5k", ...}``);
- **rendering**: :func:`render_radiance`, volume rendering of a conditional radiance field with
  stratified + hierarchical sampling (one network for both passes, as pi-GAN);
- **geometry**: :func:`density_grid` / :func:`export_density_mesh` (marching cubes -> PLY),
  :func:`export_sample_mesh` (the mesh of one generated sample) and
  :func:`depth_reprojection_error` (3D consistency of two rendered views).

The controls every GAN shares (camera sweeps, latent interpolation, seed grids) are render programs
in :mod:`aware3d.programs.gan` (re-exported here: :func:`program_names`,
:func:`render_program_frames`, :func:`render_program`, :func:`sweep_values`).

The object a method's ``build(cfg)`` returns is what the GAN engine needs
(:class:`~aware3d.train.gan.GanMethod`) plus ``gan_config(**kw) -> GanConfig`` and, optionally,

- ``wrap_dataset(dataset) -> dataset`` (e.g. ``MappedImages(dataset, fn)``),
- ``set_step(step, engine=None)``: put the method (and the engine: batch size, learning rates) in
  the state of training step ``step`` (0-based, the step about to run),
- ``prepare_inference()``: called after a run's weights are loaded,
- ``generator_objective`` / ``discriminator_objective``: its own phase losses (HoloGAN, CIPS-3D),
- for the controls: ``camera_from_angles(yaw_deg, pitch_deg) -> c2w (B, 4, 4)``,
  ``angle_ranges() -> {"yaw": (lo, hi, mean), "pitch": (lo, hi, mean)}`` (degrees; yaw is the
  azimuth about the world z axis, pitch the elevation above the xy-plane) and ``latent_groups``
  (``{"shape": ["z_shape"], "appearance": ["z_app"]}``: input keys each interpolation changes).
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..programs.gan import (program_names, render_program, render_program_frames,  # noqa: F401
                            sweep_values)
from ..train.gan import to_unit  # noqa: F401

__all__ = [
    "coerce_value", "make_config", "replace_config", "config_from_dict", "image_dataset",
    "real_images", "MappedImages", "resize_images", "RunSettings", "gan_config_from",
    "checkpoint_step", "evaluate_generator", "fid_of_generator", "write_eval_metrics", "to_unit",
    "render_radiance", "program_names", "render_program_frames", "render_program",
    "density_grid", "export_density_mesh", "export_sample_mesh", "depth_reprojection_error",
    "sweep_values",
]

# --------------------------------------------------------------------------------------------------
# Configs


def coerce_value(value, current):
    """Override values from the command line come as strings: parse them like YAML, then match
    the type of the default ``current`` (tuples from lists, floats from ints)."""
    if isinstance(value, str) and not isinstance(current, str):
        import yaml
        value = yaml.safe_load(value)
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(current, bool):
        return bool(value)
    if isinstance(current, float) and isinstance(value, (int, float)):
        return float(value)
    if isinstance(current, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def replace_config(cfg, **overrides):
    """``dataclasses.replace`` with command-line values checked against each field's type
    (:func:`aware3d.utils.settings.check_setting`: strings parsed as YAML, ``--set lr=abc`` a clear
    error); ``None`` values are ignored and unknown names raise ``ValueError`` listing the known
    ones (the message names the config by its class attribute ``settings_name`` if it has one, else
    by its class name)."""
    from ..utils.settings import check_setting, field_types

    names = {f.name for f in dataclasses.fields(cfg)}
    bad = sorted(set(overrides) - names)
    what = getattr(type(cfg), "settings_name", type(cfg).__name__)
    if bad:
        raise ValueError(f"unknown {what} setting(s) {bad}; known: {sorted(names)}")
    hints = field_types(type(cfg))
    vals = {k: check_setting(k, v, hints[k], getattr(cfg, k), what) for k, v in overrides.items()
            if v is not None}
    return dataclasses.replace(cfg, **vals)


def make_config(config_cls, presets: Mapping[str, dict], preset: str, **overrides):
    """``config_cls(**presets[preset], preset=preset)`` with ``overrides``."""
    if preset not in presets:
        raise ValueError(f"preset: expected one of {sorted(presets)}, got {preset!r}")
    return replace_config(config_cls(**presets[preset], preset=preset), **overrides)


def config_from_dict(config_cls, d: Mapping[str, Any]):
    """Rebuild a config from the plain data written to a run folder (unknown keys ignored)."""
    base = config_cls()
    names = {f.name for f in dataclasses.fields(config_cls)}
    return dataclasses.replace(base, **{k: coerce_value(v, getattr(base, k)) for k, v in d.items()
                                        if k in names})


# --------------------------------------------------------------------------------------------------
# Data


def image_dataset(path, resolution: int, flip: bool = True, progress: bool = False):
    """The GAN image folder dataset (:class:`aware3d.data.imagefolder.ImageFolderDataset`):
    ``sample(n, generator)`` -> (n, 3, S, S) in [-1, 1]."""
    from ..data.imagefolder import ImageFolderDataset

    return ImageFolderDataset(str(path), resolution, flip=flip, progress=progress)


def real_images(data, resolution: int) -> torch.Tensor:
    """All real images of the folder ``data`` at the training resolution: uint8 (N, 3, S, S)."""
    from ..data.imagefolder import ImageFolderDataset

    ds = ImageFolderDataset(str(data), resolution, flip=False)
    images = getattr(ds, "images", None)
    if images is None:
        images = torch.stack([ds.uint8(i) for i in range(len(ds))])
    return images


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size): area averaging when shrinking by an integer factor,
    antialiased bilinear otherwise."""
    h = x.shape[-1]
    if h == size:
        return x
    if h > size and h % size == 0:
        return F.avg_pool2d(x, h // size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=h > size)


class MappedImages:
    """Wraps a dataset so that ``sample(n, generator)`` returns ``fn(dataset.sample(n, generator),
    generator)``: every random draw of the mapping comes from the engine's generator (resume-exact,
    identical on every data-parallel rank). ``len`` and indexing pass through."""

    def __init__(self, dataset, fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]):
        self.dataset, self.fn = dataset, fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.fn(torch.as_tensor(self.dataset.sample(n, generator)).float(), generator)


# --------------------------------------------------------------------------------------------------
# Training


_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_step(run_dir) -> int | None:
    """Step of a run's latest checkpoint (from its file name; the file is read only when the name
    does not tell), None without checkpoints."""
    from ..train.io import latest_checkpoint, load_checkpoint

    p = latest_checkpoint(run_dir)
    if p is None:
        return None
    m = _CKPT_RE.match(p.name)
    return int(m.group(1)) if m else int(load_checkpoint(p)["step"])


# the fields of aware3d.train.gan.GanConfig a method config may carry under the same names
@dataclasses.dataclass
class RunSettings:
    """The bookkeeping fields every GAN method's config shares, with their common defaults (each
    method's config subclasses this and adds its own networks, poses and optimiser settings;
    see :class:`aware3d.train.gan.GanConfig` for what the engine does with them)."""

    ema_beta: float = 0.999             # generator EMA used for samples and evaluation
    r1_interval: int = 1                # 1: R1 in every D step; k > 1: lazy, weight x k every k
    flip: bool = True                   # random horizontal flips of the real images
    sample_every: int = 500             # fixed-seed sample grid every N steps
    checkpoint_every: int = 1000        # write a checkpoint every N steps (and at the end)
    log_every: int = 10                 # scalars to scalars.csv / TensorBoard every N steps
    keep_checkpoints: int = 3           # newest checkpoints kept
    seed: int = 0                       # network initialisation and every random draw
    device: str = "auto"                # auto | cpu | cuda[:k]
    data: str | None = None             # the image folder a run trained on (filled in by train)


_ENGINE_FIELDS = ("batch_size", "optimizer", "lr_g", "lr_d", "betas", "ema_beta", "r1_weight",
                  "r1_interval", "sample_every", "checkpoint_every", "log_every", "keep_checkpoints",
                  "seed", "device", "d_first", "grad_clip", "g_steps", "lazy_correction", "pl_weight",
                  "pl_interval", "pl_decay", "pl_batch_shrink")


def gan_config_from(cfg, **kw):
    """:class:`~aware3d.train.gan.GanConfig` from the engine settings of the method config ``cfg``
    (those of its fields named as GanConfig's; the others keep GanConfig's defaults), then ``kw``."""
    from ..train.gan import GanConfig

    names = {f.name for f in dataclasses.fields(cfg)}
    base = {k: getattr(cfg, k) for k in _ENGINE_FIELDS if k in names}
    if "betas" in base:
        base["betas"] = tuple(base["betas"])
    base.update(kw)
    return GanConfig(**base)


# --------------------------------------------------------------------------------------------------
# Loading and evaluation


def evaluate_generator(run, n_gen: int = 5000, data=None, seed: int = 0, batch_size: int = 50,
                       extractor: Callable | None = None, **fid_kw) -> dict:
    """FID and KID of a loaded run's EMA generator (:class:`aware3d.methods.base.GenerativeRun`) on
    ``n_gen`` images (prior cameras and latents drawn from ``seed``) against the real images of
    ``data`` (default the run's training folder) at the run's resolution. Writes
    ``RUN/eval/metrics.json`` (``{"fid5k", "kid5k", "kid5k_std", ...}``, names from the number of
    images; ``metrics_step_XXXXXXXX.json`` when the run was loaded at a chosen checkpoint) and
    returns it."""
    g = torch.Generator().manual_seed(int(seed))
    method, G, dev = run.gan, run.G, run.device

    @torch.no_grad()
    def generate(n: int) -> torch.Tensor:
        x = method.sample_inputs(n, g, train=False)
        x = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in x.items()}
        return to_unit(G(x), method.image_range).cpu()

    fid_kw.setdefault("use_cache", extractor is None)
    return fid_of_generator(run.path, generate, data or run.config.data, run.config.resolution, n_gen,
                            batch_size=batch_size, checkpoint=run.checkpoint,
                            extra={"method": run.method.name}, extractor=extractor, **fid_kw)


def fid_of_generator(run_dir, generate: Callable[[int], torch.Tensor], data, resolution: int, n_gen: int,
                     batch_size: int = 50, checkpoint=None, extra: dict | None = None, **fid_kw) -> dict:
    """FID and KID of ``generate(n)`` (a batch of ``n`` images in [0, 1]) on ``n_gen`` images
    against the real images of ``data`` at ``resolution``, written for the run by
    :func:`write_eval_metrics` (with ``extra``). ``fid_kw`` go to
    :func:`aware3d.metrics.fid.compute_fid_kid` (``extractor``, ``use_cache``, ``n_real``...)."""
    from ..metrics.fid import compute_fid_kid

    if data is None:
        raise ValueError(f"{run_dir}: no training data path in the run config; pass data=")
    real = real_images(str(data), resolution)
    fid_kw.setdefault("cache_key", f"{Path(data).resolve()}@{resolution}")
    res = compute_fid_kid(generate, real, n_gen, batch_size=batch_size, **fid_kw)
    metrics = {k: float(v) for k, v in res.items()}
    metrics.update(n_gen=int(n_gen), n_real=int(real.shape[0]), resolution=int(resolution),
                   generator="ema", data=str(data), **(extra or {}))
    return write_eval_metrics(run_dir, metrics, checkpoint)


def write_eval_metrics(run_dir, metrics: dict, checkpoint=None) -> dict:
    """``metrics`` (plus the checkpoint's step) into ``run_dir/eval/metrics.json``, or
    ``metrics_step_XXXXXXXX.json`` when a particular checkpoint was measured; returns them."""
    from ..train.io import _CKPT_RE, atomic_write_text, checkpoint_file

    f = checkpoint_file(run_dir, checkpoint)
    m = _CKPT_RE.match(f.name)
    if m:
        metrics["step"] = int(m.group(1))
    name = "metrics.json" if checkpoint is None else (
        f"metrics_step_{metrics['step']:08d}.json" if "step" in metrics else f"metrics_{f.stem}.json")
    out = Path(run_dir) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / name, json.dumps(metrics, indent=2) + "\n")
    metrics["path"] = str(out / name)
    return metrics


# --------------------------------------------------------------------------------------------------
# Volume rendering of a conditional radiance field


def render_radiance(field_fn: Callable, rays_o: torch.Tensor, rays_d: torch.Tensor, near, far,
                    n_samples: int, n_importance: int = 0, *, perturb: bool = False,
                    noise_std: float = 0.0, background=None, chunk: int | None = None,
                    planar: bool = False, endpoints: bool = False) -> dict:
    """Render rays (B, R, 3) through ``field_fn(points (B, M, 3), dirs (B, M, 3)) -> (sigma (B, M)
    raw, values (B, M, C))``.

    ``n_samples`` stratified samples on [near, far] (numbers or (B, R) tensors; jittered with
    ``perturb``), then, if ``n_importance`` > 0, as many inverse-CDF samples from the coarse
    weights (random with ``perturb``, evenly spaced levels otherwise); the coarse outputs are kept
    and merged with the fine ones, sorted by depth (pi-GAN's scheme: one network for both passes).
    ``noise_std`` adds N(0, noise_std^2) to the raw densities (training regulariser of NeRF / GRAF /
    pi-GAN; global RNG). ``chunk`` bounds the rays of one field call, counted over the whole batch
    (B x rays per image <= ``chunk``, at least one ray per image; inference), so that the working
    set stays the same whatever the batch size.

    GRAF's official rays and samples as options: ``planar=True``: ``rays_d`` are not unit (camera
    depth 1, :func:`aware3d.render.cameras.rays_from_pixels` with ``normalize=False``); ``near`` /
    ``far`` and the samples t are depths along the optical axis, points are o + t d, the field sees
    unit directions, spacings are (t_{i+1} - t_i) ||d|| (the official ``raw2outputs``) and ``depth``
    is returned as a distance along the ray (sum w_i t_i ||d||). ``endpoints=True``: the official
    samples (:func:`aware3d.render.samplers.stratified_samples` with ``endpoints``:
    ``linspace(near, far, N)``, jittered between midpoints).

    Returns ``{"color" (B, R, C), "depth" (B, R) sum_i w_i t_i, "opacity" (B, R)}``.
    """
    from ..render.samplers import points_along_rays, sample_pdf, stratified_samples
    from ..render.volume import deltas_from_t, render_weights, volume_render

    B, R = rays_o.shape[:2]
    if chunk is not None and B * R > chunk and R > 1:
        step = max(1, int(chunk) // B)  # rays per image per call; the latents are per image
        parts = []
        for a in range(0, R, step):
            nf = [v[:, a:a + step] if torch.is_tensor(v) and v.dim() == 2 else v for v in (near, far)]
            parts.append(render_radiance(field_fn, rays_o[:, a:a + step], rays_d[:, a:a + step],
                                         nf[0], nf[1], n_samples, n_importance, perturb=perturb,
                                         noise_std=noise_std, background=background, planar=planar,
                                         endpoints=endpoints))
        return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}
    norm = rays_d.norm(dim=-1) if planar else None
    dirs_unit = rays_d / norm.unsqueeze(-1) if planar else rays_d

    def spacings(t):
        return deltas_from_t(t) * norm.unsqueeze(-1) if planar else None

    def evaluate(t):
        N = t.shape[-1]
        pts = points_along_rays(rays_o, rays_d, t).reshape(B, R * N, 3)
        dirs = dirs_unit.unsqueeze(2).expand(B, R, N, 3).reshape(B, R * N, 3)
        s, c = field_fn(pts, dirs)
        s = s.float().reshape(B, R, N)
        if noise_std > 0:
            s = s + noise_std * torch.randn_like(s)
        return s, c.float().reshape(B, R, N, -1)

    extra = {"endpoints": True} if endpoints else {}
    t, bins = stratified_samples(near, far, n_samples, batch_shape=(B, R), perturb=perturb,
                                 dtype=rays_o.dtype, device=rays_o.device, **extra)
    sigma, values = evaluate(t)
    if n_importance > 0:
        with torch.no_grad():
            w = render_weights(sigma, t, deltas=spacings(t))[0]
        t_fine = sample_pdf(bins, w, n_importance, deterministic=not perturb)
        s_f, v_f = evaluate(t_fine)
        t_all = torch.cat([t, t_fine], -1)
        t, order = torch.sort(t_all, -1)
        sigma = torch.gather(torch.cat([sigma, s_f], -1), -1, order)
        values = torch.cat([values, v_f], -2)
        values = torch.gather(values, -2, order.unsqueeze(-1).expand(*order.shape, values.shape[-1]))
    out = volume_render(sigma, values, t, deltas=spacings(t), background=background)
    depth = out["depth"] * norm if planar else out["depth"]
    return {"color": out["color"], "depth": depth, "opacity": out["opacity"]}


# --------------------------------------------------------------------------------------------------
# Geometry: meshes and 3D consistency


@torch.no_grad()
def density_grid(density_fn: Callable[[torch.Tensor], torch.Tensor], lo, hi, resolution: int = 128,
                 chunk: int = 65536) -> torch.Tensor:
    """``relu(density_fn(points (P, 3)))`` on a ``resolution``^3 grid spanning the box [lo, hi]
    (numbers or 3-vectors), indexed (x, y, z)."""
    from ..utils.mesh import grid_values

    return grid_values(density_fn, lo, hi, resolution, chunk).clamp_min(0)


def export_density_mesh(density_fn: Callable[[torch.Tensor], torch.Tensor], lo, hi, out_path,
                        resolution: int = 128, threshold: float | None = None,
                        colors_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Marching cubes on :func:`density_grid` at ``threshold`` or at the level the field gives
    (:func:`aware3d.train.recon.mesh_level`, the rule of the reconstruction meshes: 10 where the
    field crosses it, else the middle of its range), written as a binary PLY (vertex colours from
    ``colors_fn(vertices (V, 3)) -> (V, 3)`` in [0, 1] if given). Returns a summary dict. Never
    writes an empty mesh: a field without a surface at the level is a ValueError naming a level to try."""
    from ..train.recon import level_hint, mesh_level
    from ..utils.mesh import marching_cubes_mesh, write_ply

    vol = density_grid(density_fn, lo, hi, resolution)
    vmax = float(vol.max())
    level = mesh_level(vol, threshold)
    if not float(vol.min()) < level < vmax:
        raise ValueError(f"no surface at density level {level:g}: {level_hint(vol)}")
    lo3 = np.broadcast_to(np.asarray(lo, np.float32), (3,))
    hi3 = np.broadcast_to(np.asarray(hi, np.float32), (3,))
    verts, faces = marching_cubes_mesh(vol.numpy(), level, lo3, hi3)
    if len(faces) == 0:
        raise ValueError(f"no surface at density level {level:g}: {level_hint(vol)}")
    colors = None
    if colors_fn is not None and len(verts):
        with torch.no_grad():
            colors = colors_fn(torch.from_numpy(verts)).float().clamp(0, 1).cpu().numpy()
    path = write_ply(out_path, verts, faces, colors)
    return {"path": str(path), "n_vertices": int(len(verts)), "n_faces": int(len(faces)),
            "threshold": level, "density_max": vmax, "resolution": int(resolution),
            "bounds": [lo3.tolist(), hi3.tolist()]}


def export_sample_mesh(run_dir, seed: int, extent: float, density_fn: Callable, color_fn: Callable,
                       eye: torch.Tensor, out_path=None, resolution: int = 128,
                       threshold: float | None = None) -> dict:
    """:func:`export_density_mesh` of one generated sample (drawn from ``seed``) over the cube
    [-extent, extent]^3, vertex colours ``color_fn(points (1, V, 3), dirs (1, V, 3)) -> (1, V, 3)``
    seen from the camera centre ``eye`` (3,); writes ``out_path`` (default
    ``run_dir/mesh_seed<seed>.ply``) and returns the summary with ``seed``."""
    def colors(v):
        d = v - eye
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        return color_fn(v[None], d[None])[0]

    out = Path(out_path) if out_path is not None else Path(run_dir) / f"mesh_seed{seed}.ply"
    e = float(extent)
    info = export_density_mesh(density_fn, -e, e, out, resolution=resolution, threshold=threshold,
                               colors_fn=colors)
    info["seed"] = int(seed)
    return info


def depth_reprojection_error(depth_a: torch.Tensor, depth_b: torch.Tensor, K: torch.Tensor,
                             c2w_a: torch.Tensor, c2w_b: torch.Tensor,
                             mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None
                             ) -> dict:
    """3D consistency of two renders of one scene.

    depth_a, depth_b (H, W): distance along the ray of views a and b (same intrinsics ``K``);
    masks (H, W) bool: pixels with a surface (default all). Every valid pixel of view b is lifted
    to 3D (o + depth_b d), projected into view a and its distance to camera a compared with
    depth_a bilinearly read there (only where the 2 x 2 neighbourhood of view a is valid).
    Returns ``{"mean_abs", "median_abs", "mean_rel" (|error| / depth), "n_valid", "fraction_valid"}``
    (NaN errors when no pixel is valid)."""
    from ..render.cameras import image_rays, project

    H, W = depth_b.shape
    mask_a = torch.ones_like(depth_a, dtype=torch.bool) if mask_a is None else mask_a.bool()
    mask_b = torch.ones_like(depth_b, dtype=torch.bool) if mask_b is None else mask_b.bool()
    o, d = image_rays(K.float(), c2w_b.float(), W, H)
    X = o + depth_b.float().unsqueeze(-1) * d
    uv, dist = project(X, K.float(), c2w_a.float())
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)[None]
    read = F.grid_sample(depth_a.float()[None, None], grid, mode="bilinear", align_corners=False,
                         padding_mode="border")[0, 0]
    valid_a = F.grid_sample(mask_a.float()[None, None], grid, mode="bilinear", align_corners=False,
                            padding_mode="zeros")[0, 0] > 0.999
    inside = (uv[..., 0] >= 0.5) & (uv[..., 0] <= W - 0.5) & (uv[..., 1] >= 0.5) & (uv[..., 1] <= H - 0.5)
    valid = mask_b & valid_a & inside & (dist > 0)
    err = (dist - read).abs()[valid]
    n = int(valid.sum())
    if n == 0:
        nan = float("nan")
        return {"mean_abs": nan, "median_abs": nan, "mean_rel": nan, "n_valid": 0, "fraction_valid": 0.0}
    return {"mean_abs": float(err.mean()), "median_abs": float(err.median()),
            "mean_rel": float((err / dist[valid]).mean()), "n_valid": n,
            "fraction_valid": n / float(mask_b.sum().clamp_min(1))}


# --------------------------------------------------------------------------------------------------
# The spherical camera prior (CIPS-3D, StyleNeRF, VolumeGAN): a camera at ``cfg.radius`` looking at
# the origin, yaw = azimuth from +x towards +y, pitch = elevation (degrees, world z up), drawn from a
# Gaussian (``yaw_mean`` / ``yaw_std``, ``pitch_mean`` / ``pitch_std``) or uniform (``yaw_range``,
# ``pitch_range``) prior according to ``cfg.camera_dist``.


def sphere_camera(cfg, yaw_deg, pitch_deg) -> torch.Tensor:
    """c2w (..., 4, 4) at ``cfg.radius`` looking at the origin from azimuth ``yaw`` and elevation
    ``pitch`` (degrees; world z up)."""
    from ..render.cameras import look_at, spherical_to_cartesian

    return look_at(spherical_to_cartesian(cfg.radius, pitch_deg, yaw_deg))


def sample_sphere_angles(cfg, n: int, generator: torch.Generator | None = None):
    """(yaw, pitch) (n,) degrees from the camera prior (pitch clamped to +-89 under the Gaussian)."""
    if cfg.camera_dist == "gaussian":
        e = torch.randn(2, n, generator=generator)
        return cfg.yaw_mean + cfg.yaw_std * e[0], (cfg.pitch_mean + cfg.pitch_std * e[1]).clamp(-89, 89)
    if cfg.camera_dist == "uniform":
        u = torch.rand(2, n, generator=generator)
        return (cfg.yaw_range[0] + (cfg.yaw_range[1] - cfg.yaw_range[0]) * u[0],
                cfg.pitch_range[0] + (cfg.pitch_range[1] - cfg.pitch_range[0]) * u[1])
    raise ValueError(f"camera_dist: expected 'gaussian' or 'uniform', got {cfg.camera_dist!r}")


def sphere_angle_ranges(cfg) -> dict:
    """``{"yaw": (lo, hi, mean), "pitch": ...}`` the render programs sweep: +-2 std of a Gaussian
    prior, the range of a uniform one."""
    c = cfg
    if c.camera_dist == "gaussian":
        return {"yaw": (c.yaw_mean - 2 * c.yaw_std, c.yaw_mean + 2 * c.yaw_std, c.yaw_mean),
                "pitch": (c.pitch_mean - 2 * c.pitch_std, c.pitch_mean + 2 * c.pitch_std, c.pitch_mean)}
    (y0, y1), (p0, p1) = c.yaw_range, c.pitch_range
    return {"yaw": (y0, y1, 0.5 * (y0 + y1)), "pitch": (p0, p1, 0.5 * (p0 + p1))}
