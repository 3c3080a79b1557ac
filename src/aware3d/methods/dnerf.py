"""D-NeRF and T-NeRF (Pumarola et al., CVPR 2021; PAPERS.md card 12): radiance fields of dynamic
scenes whose frames carry a time in [0, 1] (the D-NeRF format; ``aware3d data synth scene OUT
--dynamic`` writes one).

- ``dnerf``: a deformation MLP maps a point at time t into a canonical space (dx = 0 at t = 0), where
  a NeRF MLP gives density and colour (:class:`aware3d.fields.dynamic.DynamicField`).
- ``tnerf``: the baseline that feeds gamma(t) to the NeRF directly.
- ``--cam``: coordinate-aware modulation of the NeRF trunk with time as the priority coordinate.

Sampling and optimisation follow D-NeRF's code: 64 stratified + 128 importance samples per ray,
**one network** for both passes (its default), loss = MSE(coarse) + MSE(fine), Adam (0.9, 0.999) at
5e-4 decaying by 10x over 500k steps (``lrate_decay 500``), white background, 500 rays per step.
One difference, stated: D-NeRF draws each step's 500 rays from one image (``no_batching``, one time
per batch); here rays come from all training images at once, each with its own time (the
deformation handles a time per sample).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.dynamic import DynamicField
from ..programs.dynamic import PROGRAMS as DYNAMIC_PROGRAMS
from ..render.samplers import (
    hierarchical_samples,
    points_along_rays,
    stratified_samples,
)
from ..render.volume import volume_render
from .base import FieldMethod


@dataclass
class DNeRFConfig:
    """Every setting of a D-NeRF / T-NeRF run (the ``cpu`` preset's values as defaults)."""

    variant: str = "dnerf"          # dnerf (deformation into a canonical NeRF) or tnerf (time as an input)
    depth: int = 8                  # layers of the NeRF trunk
    width: int = 256                # channels per NeRF layer
    deform_depth: int = 8           # layers of the deformation MLP (dnerf)
    deform_width: int = 256         # channels per deformation layer (dnerf)
    pos_freqs: int = 10             # positional-encoding frequencies of x
    time_freqs: int = 10            # positional-encoding frequencies of t
    zero_canonical: bool = True     # dx = 0 at t = 0 (the canonical space is the scene at t = 0)
    n_coarse: int = 64              # stratified samples per ray
    n_fine: int = 128               # importance samples per ray (the same network; 0: coarse only)
    batch_size: int = 500           # rays per step
    lr: float = 5e-4                # Adam learning rate at step 0
    lr_final: float = 5e-5          # learning rate after decay_steps (exponential decay)
    decay_steps: int = 500_000      # steps of the learning-rate decay (10x)
    chunk: int = 8192               # rays per network call when rendering
    max_steps: int = 50_000         # steps when neither --max-steps nor --max-minutes is given
    cam: bool = False               # coordinate-aware modulation with time as the priority coordinate (--cam)
    cam_res: int = 5                # cells of CAM's 1-D time grid
    preset: str = "cpu"             # the preset these settings started from


PRESETS = {
    # D-NeRF's settings (configs/*.txt): 8 x 256 networks, 64 + 128 samples, 500 rays, 800k steps
    "paper": dict(depth=8, width=256, deform_depth=8, deform_width=256, n_coarse=64, n_fine=128,
                  batch_size=500, lr=5e-4, lr_final=5e-5, decay_steps=500_000, max_steps=800_000),
    # the same networks and sampling (the default on a CPU: fewer steps by default)
    "cpu": dict(depth=8, width=256, deform_depth=8, deform_width=256, n_coarse=64, n_fine=128,
                batch_size=500, lr=5e-4, lr_final=5e-5, decay_steps=500_000, max_steps=50_000),
    # small networks for tests and quick looks
    "tiny": dict(depth=4, width=64, deform_depth=3, deform_width=64, n_coarse=32, n_fine=32,
                 batch_size=512, lr=1e-3, lr_final=1e-4, decay_steps=5_000, max_steps=2_000),
}
for _p in PRESETS.values():
    _p.update(cam=False, cam_res=5, variant="dnerf", pos_freqs=10, time_freqs=10, zero_canonical=True, chunk=8192)
DEFAULT_PRESET = "cpu"


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


PRESET_DESCRIPTIONS = {
    "paper": "D-NeRF's settings: 8 x 256 deformation and canonical networks, 64 + 128 samples, 500 rays",
    "cpu": "the paper's networks and sampling, 50k steps by default (the default)",
    "tiny": "small networks (4 x 64 NeRF, 3 x 64 deformation), 32 + 32 samples, for tests",
}


def _tnerf_presets():
    return {k: dict(v, variant="tnerf") for k, v in PRESETS.items()}


METHOD = FieldMethod("dnerf", "D-NeRF (deformation into a canonical NeRF)", Model, PRESETS, PRESET_DESCRIPTIONS,
                     DEFAULT_PRESET, config_cls=DNeRFConfig, programs=DYNAMIC_PROGRAMS,
                     paper="Pumarola et al., CVPR 2021")
TNERF = FieldMethod("tnerf", "T-NeRF (time as an input of the NeRF)", Model, _tnerf_presets(),
                    {k: v.replace("deformation and canonical networks", "NeRF with time input") for k, v in
                     PRESET_DESCRIPTIONS.items()},
                    DEFAULT_PRESET, config_cls=DNeRFConfig, programs=DYNAMIC_PROGRAMS,
                    paper="Pumarola et al., CVPR 2021 (baseline)")
