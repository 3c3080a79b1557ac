"""Hash-grid NeRF in the spirit of Instant-NGP (Mueller et al., SIGGRAPH 2022): the default method.

Multiresolution hash grid + tiny MLPs (:class:`aware3d.fields.nerf.HashGridField`), an occupancy
grid refreshed every 16 steps from decayed densities so marching skips empty space (a cell is
occupied when its optical thickness sigma * step exceeds 0.01, or the grid's mean), early ray
termination (samples behind transmittance < 1e-4 are dropped before the network runs with
gradients), batches sized by sample count rather than ray count, Adam (0.9, 0.99, eps 1e-15) with
lr 1e-2 and weight decay 1e-6 on the MLPs only (PAPERS.md, card 3).

Unbounded real captures (``contract``): the hash grid and the occupancy grid live in mip-NeRF 360's
contracted space (Barron et al. 2022; the L-inf version nerfacto uses): with u = (x - c) / h,
contract(u) = u inside the inner cube, else (2 - 1/||u||_inf) u / ||u||_inf, in [-2, 2]^3. The inner
cube is centred on the scene box's centre with half side h = the cameras' mean distance from the
origin (``scene["orbit_radius"]``), so the cameras sit near its boundary and what they look at is
inside, at full grid resolution. Rays run from near to ``far_scale`` x h, with steps that grow as
||u||^2 beyond the inner cube (about uniform in contracted space; BENCHMARKS.md, "Contraction on real
captures", compares this with exponential cone steps), skipping samples in empty cells.
``background_model="learnt"`` composites the remaining transmittance onto a colour learnt from the
view direction (:class:`aware3d.fields.nerf.DirectionalBackground`). Both default to ``"auto"``: on
for scenes whose training images had no alpha channel (``scene["has_alpha"]`` False: phone captures,
the instant-ngp fox), off otherwise (Blender objects, and runs made before the key existed); the
run's config keeps the resolved values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.nerf import DirectionalBackground, HashGridField
from ..render.samplers import near_far_aabb
from .base import FieldMethod
from ..render.volume import accumulate_packed, apply_background

@dataclass
class NGPConfig:
    """Every setting of an ngp run (the ``cpu`` preset's values as defaults). Runs store it as a
    plain dict (``config`` in the run folder's config.json)."""

    levels: int = 16                # hash-grid levels (L)
    features: int = 2               # features per level (F)
    log2_table: int = 19            # log2 of the hash table size per level (T)
    base_res: int = 16              # coarsest grid resolution (N_min)
    max_res: int = 1024             # finest grid resolution (N_max)
    hidden: int = 64                # width of the density and colour MLPs
    occ_res: int = 64               # occupancy grid cells per side
    step_scale: float = 1.0 / 256   # marching step, as a fraction of sqrt(3) x the box size
    samples_per_batch: int = 2 ** 16  # samples per step (the ray count adapts to keep it)
    init_rays: int = 2048           # rays of the first step
    max_samples_per_ray: int = 512  # cap on marched samples per ray
    lr: float = 1e-2                # Adam learning rate at step 0
    lr_final: float = 1e-3          # learning rate after decay_steps (exponential decay)
    decay_steps: int = 20_000       # steps of the learning-rate decay
    weight_decay: float = 1e-6      # on the MLPs only
    occ_every: int = 16             # steps between occupancy-grid refreshes
    occ_warmup: int = 256           # steps that refresh every cell (then a random quarter)
    occ_threshold: float = 0.01     # optical thickness sigma * step above which a cell is occupied
    early_stop_T: float = 1e-4      # drop samples behind transmittance below this (0: off)
    bf16: bool | Literal["auto"] = False  # bf16 autocast of the MLPs: true, false or auto (CPUs with AMX)
    max_steps: int = 20_000         # steps when neither --max-steps nor --max-minutes is given
    cam: bool = False               # coordinate-aware modulation of the field (--cam)
    cam_res: int = 4                # CAM grid resolution
    occ_dense_warmup: bool = False  # march every cell during the occupancy warm-up
    contract: bool | Literal["auto"] = "auto"  # scene contraction (unbounded captures): true, false or auto (on without alpha)
    background_model: Literal["fixed", "learnt", "auto"] = "auto"  # ray background: fixed colour, learnt from the view direction, or auto (learnt without alpha)
    far_scale: float = 1000.0       # contracted runs: far plane at this many inner half sides
    cone_angle: float = 0.0         # exponential stepping, step >= cone_angle * t (0: off)
    preset: str = "cpu"             # the preset these settings started from


PRESETS = {
    # the paper's settings (2^18 samples per batch, T = 2^19, 128^3 occupancy, step sqrt(3)/1024)
    "paper": dict(levels=16, features=2, log2_table=19, base_res=16, max_res=2048, hidden=64,
                  occ_res=128, step_scale=1.0 / 1024, samples_per_batch=2 ** 18, init_rays=4096,
                  max_samples_per_ray=1024, lr=1e-2, lr_final=1e-3, decay_steps=30_000,
                  weight_decay=1e-6, occ_every=16, occ_warmup=256, occ_threshold=0.01,
                  early_stop_T=1e-4, bf16=False, max_steps=30_000),
    # the same model with CPU-sized batches and a coarser march for a 2-core machine
    # (64^3 occupancy cells: refreshing 128^3 every 16 steps would cost more than the steps)
    "cpu": dict(levels=16, features=2, log2_table=19, base_res=16, max_res=1024, hidden=64,
                occ_res=64, step_scale=1.0 / 256, samples_per_batch=2 ** 16, init_rays=2048,
                max_samples_per_ray=512, lr=1e-2, lr_final=1e-3, decay_steps=20_000,
                weight_decay=1e-6, occ_every=16, occ_warmup=256, occ_threshold=0.01,
                early_stop_T=1e-4, bf16=False, max_steps=20_000),
    # tests and quick looks
    "tiny": dict(levels=8, features=2, log2_table=14, base_res=8, max_res=256, hidden=32,
                 occ_res=32, step_scale=1.0 / 128, samples_per_batch=2 ** 13, init_rays=512,
                 max_samples_per_ray=256, lr=1e-2, lr_final=1e-3, decay_steps=2_000,
                 weight_decay=1e-6, occ_every=16, occ_warmup=64, occ_threshold=0.01,
                 early_stop_T=1e-4, bf16=False, max_steps=2_000),
}
for _p in PRESETS.values():  # --cam: coordinate-aware modulation of the field (off by default)
    _p.update(cam=False, cam_res=4)
    # keep every occupancy cell marched during the warm-up (the demo's short run on a tight box)
    _p.setdefault("occ_dense_warmup", False)
    # contraction and learnt background chosen from the scene (on for captures without alpha)
    _p.update(contract="auto", background_model="auto", far_scale=1000.0, cone_angle=0.0)
DEFAULT_PRESET = "cpu"
# bf16 autocast of the MLPs is off in every preset: measured on a 2-core Sapphire Rapids (AMX), a
# lego step took the same time with and without it (the 64-wide MLPs are a small share of a step),
# and the varying packed sample counts make oneDNN rebuild its bf16 kernels (~30 s of warm-up).
# `--set bf16=true` (or "auto": on where the CPU has AMX/avx512_bf16) turns it on.


def fused_adam_kwargs(device=None) -> dict:
    """``{"fused": True}`` where torch has the fused Adam kernel for the device, else ``{}``: one
    pass over the 16.7M hash-table entries instead of a dozen (about 6x faster per step on the CPU).

    Fused Adam exists on CUDA since torch 2.0 but on the CPU only since 2.4 (older versions accept
    ``fused=True`` and then fail at the first step on CPU tensors), so it is used with torch >= 2.4
    (local/pre-release tags such as ``2.13.0+cpu`` or ``2.4.0a0`` count by their release numbers)
    and on ``device`` "cpu" or "cuda" (None: either, the devices aware3d trains on)."""
    import inspect
    import re

    if device is not None and torch.device(device).type not in ("cpu", "cuda"):
        return {}
    version = str(torch.__version__)
    try:
        from packaging.version import Version

        release = Version(version).release
    except Exception:  # packaging missing (it is not a dependency) or not PEP 440: "major.minor"
        m = re.match(r"\s*(\d+)\.(\d+)", version)
        release = (int(m.group(1)), int(m.group(2))) if m else ()
    if tuple(release[:2]) < (2, 4):
        return {}
    return {"fused": True} if "fused" in inspect.signature(torch.optim.Adam).parameters else {}


def bf16_is_fast() -> bool:
    """bf16 matmuls are worth it on CPUs with AMX or avx512_bf16 (read from /proc/cpuinfo)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def is_real_capture(scene: dict) -> bool:
    """A scene whose training images had no alpha channel (``scene["has_alpha"]`` False); runs
    made before the key existed count as having alpha (they keep rendering as they did)."""
    return not bool(scene.get("has_alpha", True))


def resolve_scene_config(cfg: dict, scene: dict, supported: bool = True) -> dict:
    """Resolve the scene-dependent settings in place (``contract``, ``background_model``: "auto"
    -> on / "learnt" for real captures, off / "fixed" otherwise) and return ``cfg``. Called when the
    model is built, before the training loop writes the run's config, so the run keeps the resolved
    values and a loaded run rebuilds the same model. Keys a config lacks (runs made before these
    settings) stay absent and mean off. ``supported=False`` (a subclass with its own renderer)
    resolves "auto" to off."""
    real = is_real_capture(scene) and supported
    if cfg.get("contract") == "auto":
        cfg["contract"] = real
    if cfg.get("background_model") == "auto":
        cfg["background_model"] = "learnt" if real else "fixed"
    if cfg.get("background_model") not in (None, "fixed", "learnt"):
        raise ValueError(f"background_model: expected fixed, learnt or auto, got {cfg['background_model']!r}")
    return cfg


class Model(nn.Module):
    needs_kernels = True  # the training loop builds the compiled kernels before its clock starts

    def __init__(self, cfg: dict, scene: dict):
        super().__init__()
        from ..kernels.marching import OccupancyGrid

        # contraction and the learnt background live in this forward(); a subclass that renders
        # with its own (NeRF-W) gets "auto" resolved to off
        supported = type(self).forward is Model.forward
        resolve_scene_config(cfg, scene, supported)
        self.cfg = cfg
        aabb = torch.as_tensor(scene["aabb"], dtype=torch.float32)
        self.register_buffer("aabb", aabb.clone())
        self.register_buffer("background", torch.as_tensor(scene["background"], dtype=torch.float32))
        self.near = float(scene.get("near", 0.0))
        bf16 = cfg["bf16"]
        use_bf16 = bf16_is_fast() if bf16 == "auto" else bool(bf16)
        self.contract = bool(cfg.get("contract", False))
        if self.contract:
            if not supported:
                raise ValueError(f"contract: {type(self).__name__} renders with its own forward(), "
                                 "which does not march contracted space; set contract=false")
            # inner cube: centred on the box, half side the cameras' mean distance from the origin
            h = float(scene.get("orbit_radius") or 0.5 * float((aabb[3:] - aabb[:3]).max()))
            c = 0.5 * (aabb[:3] + aabb[3:])
            box = torch.cat([c - h, c + h])
            self.far = float(cfg.get("far_scale", 1000.0)) * h
        else:
            box = aabb
        scale = float((box[3:] - box[:3]).max())
        field_kw = dict(levels=cfg["levels"], features=cfg["features"], log2_table=cfg["log2_table"],
                        base_res=cfg["base_res"], max_res=cfg["max_res"], hidden=cfg["hidden"],
                        autocast_bf16=use_bf16)
        if self.contract:
            field_kw["contract"] = True
        self.field = self.make_field(box, field_kw)
        self.occ = OccupancyGrid(box, resolution=cfg["occ_res"], contract=self.contract)
        self.step_size = math.sqrt(3) * cfg["step_scale"] * scale
        self.bg_model = DirectionalBackground() if cfg.get("background_model") == "learnt" else None
        # contracted marching: steps ~ ||u||^2 beyond the inner cube (False: cone_angle steps only;
        # benchmarks/bench_contraction.py compares the two)
        self.contract_steps = True
        self.n_rays = int(cfg["init_rays"])

    def make_field(self, box: torch.Tensor, field_kw: dict) -> nn.Module:
        """The field over ``box`` (hash-grid settings ``field_kw``): a :class:`HashGridField`, or
        with ``cam`` a :class:`CAMHashGridField`. Subclasses with other hash-grid fields override it
        (dnerf / tnerf on the hash grid)."""
        if self.cfg.get("cam"):
            from ..fields.cam import CAMHashGridField

            return CAMHashGridField(box, cam_res=self.cfg["cam_res"], **field_kw)
        return HashGridField(box, **field_kw)

    # -- rendering -------------------------------------------------------------------------------
    def _march(self, rays_o, rays_d):
        from ..kernels.marching import march_rays

        cone = float(self.cfg.get("cone_angle", 0.0))
        if self.contract:  # all of space: from near to the far plane
            return march_rays(rays_o, rays_d, self.near, self.far, self.occ, step_size=self.step_size,
                              max_samples_per_ray=self.cfg["max_samples_per_ray"], cone_angle=cone,
                              contract_steps=self.contract_steps)
        near, far, hit = near_far_aabb(rays_o, rays_d, self.aabb, min_near=self.near)
        far = torch.where(hit, far, near)
        return march_rays(rays_o, rays_d, near, far, self.occ, step_size=self.step_size,
                          max_samples_per_ray=self.cfg["max_samples_per_ray"], cone_angle=cone)

    def _weights(self, sigmas, deltas, ray_indices, n_rays):
        from ..kernels.marching import render_weights_packed

        return render_weights_packed(sigmas, deltas, ray_indices, n_rays)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                background: torch.Tensor | None = None) -> dict:
        return self.render_packed(rays_o, rays_d, background)

    # -- shared with the hash-grid backbone of dnerf / tnerf (aware3d.methods.dnerf) ---------------
    def render_packed(self, rays_o: torch.Tensor, rays_d: torch.Tensor, background: torch.Tensor | None = None,
                      per_ray: tuple[torch.Tensor, ...] = ()) -> dict:
        """March the occupancy grid, drop samples behind early termination, run the field on the
        packed samples and composite: what :meth:`forward` returns. ``per_ray``: tensors with one
        row per ray whose rows go to the field with each of the ray's samples,
        ``field.density(x, *rows)`` and ``field(x, d, *rows)`` (dnerf / tnerf pass each ray's time);
        empty, the field sees points and directions only."""
        shape = rays_o.shape[:-1]
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        n = rays_o.shape[0]
        per_ray = tuple(p.reshape(n, *p.shape[len(shape):]) for p in per_ray)
        if background is not None:
            bg = background
        elif self.bg_model is not None:
            bg = self.bg_model(rays_d)
        else:
            bg = self.background
        idx, t0, t1 = self._march(rays_o, rays_d)
        if idx.numel() and self.cfg["early_stop_T"] > 0:
            # early ray termination: densities without gradients locate where T drops below 1e-4
            with torch.no_grad():
                x = rays_o[idx] + 0.5 * (t0 + t1)[:, None] * rays_d[idx]
                _, T = self._weights(self.field.density(x, *(p[idx] for p in per_ray)), t1 - t0, idx, n)
                keep = T > self.cfg["early_stop_T"]
            idx, t0, t1 = idx[keep], t0[keep], t1[keep]
        tm = 0.5 * (t0 + t1)
        x = rays_o[idx] + tm[:, None] * rays_d[idx]
        sigma, rgb = self.field(x, rays_d[idx], *(p[idx] for p in per_ray))
        w, _ = self._weights(sigma, t1 - t0, idx, n)
        acc = accumulate_packed(w, idx, n)
        color = apply_background(accumulate_packed(w[:, None] * rgb, idx, n), acc, bg)
        depth = accumulate_packed(w * tm, idx, n)
        return {"color": color.reshape(*shape, 3), "depth": depth.reshape(shape),
                "opacity": acc.reshape(shape), "n_samples": int(idx.numel())}

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(out["color"], target)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.field.density(x)

    def point_color(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """RGB (..., 3) of the field at points x seen along unit directions d (mesh colours)."""
        return self.field(x, d)[1]

    # -- optimisation ----------------------------------------------------------------------------
    def make_optimizer(self):
        c = self.cfg
        mlp = [p for n, p in self.field.named_parameters() if not n.startswith("grid.")]
        if getattr(self, "bg_model", None) is not None:
            mlp += list(self.bg_model.parameters())
        return torch.optim.Adam([
            {"params": list(self.field.grid.parameters()), "weight_decay": 0.0},
            {"params": mlp, "weight_decay": c["weight_decay"]},
        ], lr=c["lr"], betas=(0.9, 0.99), eps=1e-15, **fused_adam_kwargs())

    def lr_at(self, step: int) -> float:
        c = self.cfg
        return c["lr"] * (c["lr_final"] / c["lr"]) ** min(step / c["decay_steps"], 1.0)

    def before_step(self, step: int) -> None:
        c = self.cfg
        # the paper's threshold is an optical thickness (sigma * step = 0.01), not a density
        self.occ.update(self.occupancy_density, step=step, update_every=c["occ_every"],
                        threshold=c["occ_threshold"] / self.step_size, warmup_steps=c["occ_warmup"],
                        dense_warmup=bool(c.get("occ_dense_warmup", False)))

    def occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        """Densities the occupancy grid is refreshed with (dnerf / tnerf: at random moments)."""
        return self.field.density(x)

    def next_batch_rays(self, n_samples: int) -> int:
        """Keep ~samples_per_batch samples per step: rescale the ray count by the last step's
        samples (Instant-NGP batches by sample count, not ray count)."""
        target = self.cfg["samples_per_batch"]
        if n_samples > 0:
            ratio = target / n_samples
            self.n_rays = int(min(max(self.n_rays * ratio, 256), 65536))
        return self.n_rays


PRESET_DESCRIPTIONS = {
    "paper": "the paper's settings: 16 levels, 2^19 entries, 2^18 samples per batch, 128^3 occupancy",
    "cpu": "the same model with CPU-sized batches (2^16 samples) and 64^3 occupancy (the default)",
    "tiny": "8 levels, 2^14 entries, for tests and quick looks",
}

METHOD = FieldMethod("ngp", "Instant-NGP-style hash-grid NeRF", Model, PRESETS, PRESET_DESCRIPTIONS,
                     DEFAULT_PRESET, config_cls=NGPConfig,
                     paper="Mueller et al., SIGGRAPH 2022")
