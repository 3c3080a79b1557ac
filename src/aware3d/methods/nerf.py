"""NeRF (Mildenhall et al., ECCV 2020): the reference reconstruction method.

Coarse 64 stratified samples + fine 128 importance samples; the fine network sees all 192;
loss = MSE(coarse) + MSE(fine); 4096 rays per batch; Adam (0.9, 0.999, eps 1e-7), lr 5e-4 decaying
exponentially to 5e-5 over the run (PAPERS.md, card 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fields.nerf import NeRFMLP
from ..render.samplers import hierarchical_samples, points_along_rays, stratified_samples
from .base import FieldMethod
from ..render.volume import volume_render

@dataclass
class NeRFConfig:
    """Every setting of a NeRF run (the ``cpu`` preset's values as defaults). Runs store it as a
    plain dict (``config`` in the run folder's config.json)."""

    depth: int = 8                  # layers of the MLP trunk
    width: int = 256                # channels per layer
    n_coarse: int = 64              # stratified samples per ray (coarse network)
    n_fine: int = 128               # importance samples per ray (fine network; 0: coarse only)
    batch_size: int = 1024          # rays per step
    lr: float = 5e-4                # Adam learning rate at step 0
    lr_final: float = 5e-5          # learning rate after decay_steps (exponential decay)
    decay_steps: int = 50_000       # steps of the learning-rate decay
    chunk: int = 8192               # rays per network call when rendering
    max_steps: int = 50_000         # steps when neither --max-steps nor --max-minutes is given
    cam: bool = False               # coordinate-aware modulation of the field (--cam)
    cam_res: int = 4                # CAM grid resolution
    preset: str = "cpu"             # the preset these settings started from


PRESETS = {
    # the paper's settings
    "paper": dict(depth=8, width=256, n_coarse=64, n_fine=128, batch_size=4096, lr=5e-4,
                  lr_final=5e-5, decay_steps=250_000, chunk=16384, max_steps=200_000),
    # same architecture and sampling, a smaller batch so a 2-core CPU takes steps every second
    "cpu": dict(depth=8, width=256, n_coarse=64, n_fine=128, batch_size=1024, lr=5e-4,
                lr_final=5e-5, decay_steps=50_000, chunk=8192, max_steps=50_000),
    # a narrow network for tests and quick looks
    "tiny": dict(depth=4, width=64, n_coarse=32, n_fine=32, batch_size=512, lr=1e-3,
                 lr_final=1e-4, decay_steps=5_000, chunk=8192, max_steps=2_000),
}
for _p in PRESETS.values():  # --cam: coordinate-aware modulation of the field (off by default)
    _p.update(cam=False, cam_res=4)
DEFAULT_PRESET = "cpu"


class Model(nn.Module):
    def __init__(self, cfg: dict, scene: dict):
        super().__init__()
        self.cfg = cfg
        self.near, self.far = float(scene["near"]), float(scene["far"])
        self.register_buffer("background", torch.as_tensor(scene["background"], dtype=torch.float32))
        def mlp():
            if cfg.get("cam"):
                from ..fields.cam import CAMNeRFMLP

                return CAMNeRFMLP(depth=cfg["depth"], width=cfg["width"], cam_res=cfg["cam_res"])
            return NeRFMLP(depth=cfg["depth"], width=cfg["width"])

        self.coarse = mlp()
        self.fine = mlp() if cfg["n_fine"] > 0 else None

    # -- rendering -------------------------------------------------------------------------------
    def _render(self, net, rays_o, rays_d, t, bg):
        x = points_along_rays(rays_o, rays_d, t)
        d = rays_d.unsqueeze(-2).expand_as(x)
        sigma, rgb = net(x, d)
        return volume_render(sigma, rgb, t, background=bg)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                background: torch.Tensor | None = None) -> dict:
        bg = self.background if background is None else background
        t, bins = stratified_samples(self.near, self.far, self.cfg["n_coarse"],
                                     batch_shape=rays_o.shape[:-1], perturb=training,
                                     dtype=rays_o.dtype, device=rays_o.device)
        coarse = self._render(self.coarse, rays_o, rays_d, t, bg)
        if self.fine is None:
            return {**coarse, "color_coarse": coarse["color"]}
        # fine-sampling PDF from the coarse weights of the interior samples (bins between them)
        t_all, _ = hierarchical_samples(t, bins, coarse["weights"], self.cfg["n_fine"],
                                        deterministic=not training)
        fine = self._render(self.fine, rays_o, rays_d, t_all, bg)
        return {**fine, "color_coarse": coarse["color"]}

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(out["color"], target)
        if self.fine is not None:
            loss = loss + F.mse_loss(out["color_coarse"], target)
        return loss

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fine or self.coarse).density(x)

    def point_color(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """RGB (..., 3) of the field at points x seen along unit directions d (mesh colours)."""
        return (self.fine or self.coarse)(x, d)[1]

    # -- optimisation ----------------------------------------------------------------------------
    def make_optimizer(self):
        from .ngp import fused_adam_kwargs

        return torch.optim.Adam(self.parameters(), lr=self.cfg["lr"], betas=(0.9, 0.999), eps=1e-7,
                                **fused_adam_kwargs())

    def lr_at(self, step: int) -> float:
        c = self.cfg
        return c["lr"] * (c["lr_final"] / c["lr"]) ** min(step / c["decay_steps"], 1.0)

    def before_step(self, step: int) -> None:
        pass


PRESET_DESCRIPTIONS = {
    "paper": "the paper's settings: 8 x 256 MLP, 64 + 128 samples, 4096 rays per batch",
    "cpu": "the paper's network and sampling with 1024 rays per batch (the default)",
    "tiny": "a 4 x 64 network with 32 + 32 samples, for tests and quick looks",
}

METHOD = FieldMethod("nerf", "NeRF", Model, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET, config_cls=NeRFConfig,
                     paper="Mildenhall et al., ECCV 2020")
