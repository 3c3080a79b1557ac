"""D-NeRF and T-NeRF (Pumarola et al., CVPR 2021; PAPERS.md card 12): radiance fields of dynamic
scenes whose frames carry a time in [0, 1] (the D-NeRF format; ``aware3d data synth scene OUT
--dynamic`` writes one).

- ``dnerf``: a deformation MLP maps a point at time t into a canonical space (dx = 0 at t = 0), where
  a NeRF MLP gives density and colour (:class:`aware3d.fields.dynamic.DynamicField`).
- ``tnerf``: the baseline that feeds gamma(t) to the NeRF directly.
- ``--cam``: coordinate-aware modulation of the NeRF trunk with time as the priority coordinate.
- ``--backbone ngp`` (:class:`HashModel`): the same two variants on the hash grid
  (:class:`aware3d.fields.dynamic.DynamicHashField`: CAM's nerfacc warp, 4 x 64, ahead of the grid
  for dnerf; gamma(t) beside the grid's features for tnerf; ``--cam`` on the density MLP's hidden
  layer), rendered by ngp's model (occupancy-grid marching, early termination, packed compositing,
  batches by sample count, its optimiser and learning rates); the occupancy grid holds the union
  over time (refreshed with densities at random moments). Settings that differ between the
  backbones (deformation size, encodings, learning rates, steps) are ``None`` in the presets and
  filled from :data:`BACKBONE_PRESETS`; the hash-grid settings are ngp's presets of the same name.

MLP backbone: sampling and optimisation follow D-NeRF's code: 64 stratified + 128 importance samples per ray,
**one network** for both passes (its default), loss = MSE(coarse) + MSE(fine), Adam (0.9, 0.999) at
5e-4 decaying by 10x over 500k steps (``lrate_decay 500``), white background, 500 rays per step.
One difference, stated: D-NeRF draws each step's 500 rays from one image (``no_batching``, one time
per batch); here rays come from all training images at once, each with its own time (the
deformation handles a time per sample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.dynamic import DynamicField, DynamicHashField
from ..programs.dynamic import PROGRAMS as DYNAMIC_PROGRAMS
from ..render.samplers import (
    hierarchical_samples,
    points_along_rays,
    stratified_samples,
)
from ..render.volume import volume_render
from . import ngp as _ngp
from .base import FieldMethod


@dataclass
class DNeRFConfig:
    """Every setting of a D-NeRF / T-NeRF run (``None``: the chosen backbone's value in the preset of
    the same name, :data:`BACKBONE_PRESETS`)."""

    variant: str = "dnerf"          # dnerf (deformation into a canonical NeRF) or tnerf (time as an input)
    backbone: str = "mlp"           # field backbone: mlp (D-NeRF's MLPs) or ngp (hash grid, --backbone ngp)
    depth: int = 8                  # mlp: layers of the NeRF trunk
    width: int = 256                # mlp: channels per NeRF layer
    deform_depth: int | None = None  # layers of the deformation MLP (dnerf; None: 8 on mlp, 4 on ngp)
    deform_width: int | None = None  # channels per deformation layer (dnerf; None: 256 on mlp, 64 on ngp)
    pos_freqs: int | None = None    # positional-encoding frequencies of x (None: 10 on mlp, 4 on ngp)
    time_freqs: int | None = None   # positional-encoding frequencies of t (None: 10 on mlp, 4 on ngp)
    zero_canonical: bool = True     # dx = 0 at t = 0 (the canonical space is the scene at t = 0)
    n_coarse: int = 64              # mlp: stratified samples per ray
    n_fine: int = 128               # mlp: importance samples per ray (the same network; 0: coarse only)
    batch_size: int = 500           # mlp: rays per step
    lr: float | None = None         # Adam learning rate at step 0 (None: the backbone's)
    lr_final: float | None = None   # learning rate after decay_steps (exponential decay)
    decay_steps: int | None = None  # steps of the learning-rate decay
    chunk: int = 8192               # mlp: rays per network call when rendering
    max_steps: int | None = None    # steps when neither --max-steps nor --max-minutes is given
    precrop_steps: int | None = None  # rays from the central crop of each image for the first N steps
    #                                   (D-NeRF's precrop_iters: 500 on mlp, 0 on ngp; runs saved before: 0)
    precrop_frac: float = 0.5       # side of that crop as a fraction of the image (D-NeRF's 0.5)
    cam: bool = False               # coordinate-aware modulation with time as the priority coordinate (--cam)
    cam_res: int = 5                # cells of CAM's 1-D time grid
    levels: int = 16                # ngp: hash-grid levels
    features: int = 2               # ngp: features per level
    log2_table: int = 19            # ngp: log2 of the hash table size per level
    base_res: int = 16              # ngp: coarsest grid resolution
    max_res: int = 1024             # ngp: finest grid resolution
    hidden: int = 64                # ngp: width of the density and colour MLPs
    occ_res: int = 64               # ngp: occupancy grid cells per side (the union over time)
    step_scale: float = 1.0 / 256   # ngp: marching step, as a fraction of sqrt(3) x the box size
    samples_per_batch: int = 2 ** 16  # ngp: samples per step (the ray count adapts to keep it)
    init_rays: int = 2048           # ngp: rays of the first step
    max_samples_per_ray: int = 512  # ngp: cap on marched samples per ray
    weight_decay: float = 1e-6      # ngp: on the MLPs only
    occ_every: int = 16             # ngp: steps between occupancy-grid refreshes (densities at random times)
    occ_warmup: int = 256           # ngp: steps that refresh every cell (then a random quarter)
    occ_threshold: float = 0.01     # ngp: optical thickness sigma * step above which a cell is occupied
    early_stop_T: float = 1e-4      # ngp: drop samples behind transmittance below this (0: off)
    bf16: bool | Literal["auto"] = False  # ngp: bf16 autocast of the MLPs
    preset: str = "cpu"             # the preset these settings started from


BACKBONES = ("mlp", "ngp")
# the settings that differ between the backbones, per preset (PRESETS holds None for them)
_PER_BACKBONE = ("deform_depth", "deform_width", "pos_freqs", "time_freqs", "lr", "lr_final", "decay_steps",
                 "max_steps", "precrop_steps")
BACKBONE_PRESETS = {
    "mlp": {
        # D-NeRF's settings (configs/*.txt): 8 x 256 networks, 64 + 128 samples, 500 rays, 800k steps
        "paper": dict(deform_depth=8, deform_width=256, pos_freqs=10, time_freqs=10, lr=5e-4, lr_final=5e-5,
                      decay_steps=500_000, max_steps=800_000, precrop_steps=500),
        # the same networks and sampling (the default on a CPU: fewer steps by default)
        "cpu": dict(deform_depth=8, deform_width=256, pos_freqs=10, time_freqs=10, lr=5e-4, lr_final=5e-5,
                    decay_steps=500_000, max_steps=50_000, precrop_steps=500),
        # small networks for tests and quick looks
        "tiny": dict(deform_depth=3, deform_width=64, pos_freqs=10, time_freqs=10, lr=1e-3, lr_final=1e-4,
                     decay_steps=5_000, max_steps=2_000, precrop_steps=500),
    },
    "ngp": {
        # CAM's nerfacc warp (4 x 64, gamma L = 4 for x and t) ahead of ngp's paper settings
        "paper": dict(deform_depth=4, deform_width=64, pos_freqs=4, time_freqs=4, lr=1e-2, lr_final=1e-3,
                      decay_steps=30_000, max_steps=30_000, precrop_steps=0),
        "cpu": dict(deform_depth=4, deform_width=64, pos_freqs=4, time_freqs=4, lr=1e-2, lr_final=1e-3,
                    decay_steps=20_000, max_steps=20_000, precrop_steps=0),
        "tiny": dict(deform_depth=3, deform_width=32, pos_freqs=4, time_freqs=4, lr=1e-2, lr_final=1e-3,
                     decay_steps=2_000, max_steps=2_000, precrop_steps=0),
    },
}
# the hash grid, occupancy and marching settings of the ngp backbone: ngp's presets of the same name
_NGP_KEYS = ("levels", "features", "log2_table", "base_res", "max_res", "hidden", "occ_res", "step_scale",
             "samples_per_batch", "init_rays", "max_samples_per_ray", "weight_decay", "occ_every",
             "occ_warmup", "occ_threshold", "early_stop_T", "bf16")
# the MLP backbone's own settings (unused on ngp)
_MLP = {
    "paper": dict(depth=8, width=256, n_coarse=64, n_fine=128, batch_size=500),
    "cpu": dict(depth=8, width=256, n_coarse=64, n_fine=128, batch_size=500),
    "tiny": dict(depth=4, width=64, n_coarse=32, n_fine=32, batch_size=512),
}


def _preset(name: str) -> dict:
    from . import ngp as _ngp

    cfg = dict(_MLP[name], **{k: _ngp.PRESETS[name][k] for k in _NGP_KEYS})
    cfg.update({k: None for k in _PER_BACKBONE})
    cfg.update(backbone="mlp", cam=False, cam_res=5, variant="dnerf", zero_canonical=True, chunk=8192,
               precrop_frac=0.5)
    return cfg


PRESETS = {name: _preset(name) for name in ("paper", "cpu", "tiny")}
DEFAULT_PRESET = "cpu"


def resolve_config(cfg: dict) -> dict:
    """Fill the ``None`` entries of a D-NeRF / T-NeRF config from the chosen backbone's preset of the
    same name (in place; returns ``cfg``)."""
    backbone = cfg.get("backbone") or "mlp"
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
    cfg["backbone"] = backbone
    cfg.setdefault("precrop_steps", 0)  # runs saved before the setting trained without it
    table = BACKBONE_PRESETS[backbone]
    src = table.get(cfg.get("preset") or DEFAULT_PRESET, table[DEFAULT_PRESET])
    for k, v in src.items():
        if cfg.get(k) is None:
            cfg[k] = v
    return cfg


def build_model(cfg: dict, scene: dict) -> nn.Module:
    """The model of a config: :class:`Model` (MLP backbone; configs without ``backbone``, written
    before it existed, are MLP runs) or :class:`HashModel`."""
    return (HashModel if cfg.get("backbone", "mlp") == "ngp" else Model)(cfg, scene)


class Model(nn.Module):
    uses_times = True  # the training loop passes each ray's frame time

    def __init__(self, cfg: dict, scene: dict):
        super().__init__()
        self.cfg = cfg
        self.near, self.far = float(scene["near"]), float(scene["far"])
        self.register_buffer("background", torch.as_tensor(scene["background"], dtype=torch.float32))
        self.field = DynamicField(cfg["variant"], cfg["depth"], cfg["width"], cfg["deform_depth"],
                                  cfg["deform_width"], cfg["pos_freqs"], cfg["time_freqs"],
                                  cfg["zero_canonical"], cfg["cam_res"] if cfg.get("cam") else None)

    def _render(self, rays_o, rays_d, t, times, bg):
        x = points_along_rays(rays_o, rays_d, t)
        d = rays_d.unsqueeze(-2).expand_as(x)
        sigma, rgb = self.field(x, d, times.reshape(-1, 1).expand(x.shape[:-1]))
        return volume_render(sigma, rgb, t, background=bg)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                background: torch.Tensor | None = None, times: torch.Tensor | float | None = None) -> dict:
        bg = self.background if background is None else background
        shape = rays_o.shape[:-1]
        rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        times = torch.as_tensor(0.0 if times is None else times, dtype=rays_o.dtype, device=rays_o.device)
        times = times.reshape(-1).expand(rays_o.shape[0]) if times.numel() == 1 else times.reshape(-1)
        t, bins = stratified_samples(self.near, self.far, self.cfg["n_coarse"], batch_shape=rays_o.shape[:-1],
                                     perturb=training, dtype=rays_o.dtype, device=rays_o.device)
        coarse = self._render(rays_o, rays_d, t, times, bg)
        out = coarse
        if self.cfg["n_fine"] > 0:
            t_all, _ = hierarchical_samples(t, bins, coarse["weights"], self.cfg["n_fine"],
                                            deterministic=not training)
            out = self._render(rays_o, rays_d, t_all, times, bg)
        res = {k: out[k].reshape(*shape, *out[k].shape[1:]) for k in ("color", "depth", "opacity")}
        res["color_coarse"] = coarse["color"].reshape(*shape, 3)
        return res

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(out["color"], target)
        if self.cfg["n_fine"] > 0:
            loss = loss + F.mse_loss(out["color_coarse"], target)
        return loss

    def density(self, x: torch.Tensor, time: float = 0.0) -> torch.Tensor:
        return F.relu(self.field.density(x, time))

    def point_color(self, x: torch.Tensor, d: torch.Tensor, time: float = 0.0) -> torch.Tensor:
        return self.field(x, d, time)[1]

    def make_optimizer(self):
        from .ngp import fused_adam_kwargs

        return torch.optim.Adam(self.parameters(), lr=self.cfg["lr"], betas=(0.9, 0.999), **fused_adam_kwargs())

    def lr_at(self, step: int) -> float:
        c = self.cfg
        return c["lr"] * (c["lr_final"] / c["lr"]) ** min(step / c["decay_steps"], 1.0)

    def before_step(self, step: int) -> None:
        pass


def _per_ray_times(times, n: int, like: torch.Tensor) -> torch.Tensor:
    times = torch.as_tensor(0.0 if times is None else times, dtype=like.dtype, device=like.device)
    return times.reshape(-1).expand(n) if times.numel() == 1 else times.reshape(-1)


class HashModel(_ngp.Model):
    """D-NeRF / T-NeRF on the hash grid (``--backbone ngp``): a
    :class:`aware3d.fields.dynamic.DynamicHashField` rendered by ngp's model, whose marching,
    early termination, packed compositing, sample-count batches and optimiser it reuses
    (:meth:`aware3d.methods.ngp.Model.render_packed` with each ray's time). The occupancy grid is in
    world space and holds the union over time: each refresh reads densities at uniformly random
    moments, one per point (CAM's T-NeRF code draws them from the batch's timestamps), so a cell
    stays occupied while anything passes through it at some time (the decayed maximum of ngp's grid)."""

    uses_times = True  # the training loop passes each ray's frame time

    def make_field(self, box: torch.Tensor, field_kw: dict) -> nn.Module:
        c = self.cfg
        return DynamicHashField(box, variant=c["variant"], pos_freqs=c["pos_freqs"], time_freqs=c["time_freqs"],
                                deform_depth=c["deform_depth"], deform_width=c["deform_width"],
                                zero_canonical=c["zero_canonical"], cam_res=c["cam_res"] if c.get("cam") else None,
                                **field_kw)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                background: torch.Tensor | None = None, times: torch.Tensor | float | None = None) -> dict:
        n = rays_o.reshape(-1, 3).shape[0]
        return self.render_packed(rays_o, rays_d, background, per_ray=(_per_ray_times(times, n, rays_o),))

    def occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        return self.field.density(x, torch.rand(x.shape[0], dtype=x.dtype, device=x.device))

    def density(self, x: torch.Tensor, time: float = 0.0) -> torch.Tensor:
        return self.field.density(x, time)

    def point_color(self, x: torch.Tensor, d: torch.Tensor, time: float = 0.0) -> torch.Tensor:
        return self.field(x, d, time)[1]


PRESET_DESCRIPTIONS = {
    "paper": "D-NeRF's settings: 8 x 256 deformation and canonical networks, 64 + 128 samples, 500 rays; "
             "--backbone ngp: ngp's paper hash grid behind CAM's 4 x 64 warp",
    "cpu": "the paper's networks and sampling, 50k steps by default (the default); --backbone ngp: ngp's cpu "
           "hash grid (2^16 samples per step, 64^3 occupancy) behind a 4 x 64 warp",
    "tiny": "small networks (4 x 64 NeRF, 3 x 64 deformation), 32 + 32 samples, for tests; --backbone ngp: "
            "ngp's tiny hash grid behind a 3 x 32 warp",
}


def _tnerf_presets():
    return {k: dict(v, variant="tnerf") for k, v in PRESETS.items()}


METHOD = FieldMethod("dnerf", "D-NeRF (deformation into a canonical NeRF)", build_model, PRESETS,
                     PRESET_DESCRIPTIONS, DEFAULT_PRESET, config_cls=DNeRFConfig, resolve_config=resolve_config,
                     programs=DYNAMIC_PROGRAMS, paper="Pumarola et al., CVPR 2021")
TNERF = FieldMethod("tnerf", "T-NeRF (time as an input of the NeRF)", build_model, _tnerf_presets(),
                    {k: v.replace("deformation and canonical networks", "NeRF with time input") for k, v in
                     PRESET_DESCRIPTIONS.items()},
                    DEFAULT_PRESET, config_cls=DNeRFConfig, resolve_config=resolve_config,
                    programs=DYNAMIC_PROGRAMS, paper="Pumarola et al., CVPR 2021 (baseline)")
