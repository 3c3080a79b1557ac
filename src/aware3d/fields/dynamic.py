"""Fields of dynamic scenes (PAPERS.md card 12): D-NeRF's deformation into a canonical NeRF, the
T-NeRF baseline that takes time as an input, and coordinate-aware modulation with time as the
priority coordinate (CAM, card 9).

- :class:`DeformationMLP` (D-NeRF's time network): gamma(x) (L = 10, keeping x) and gamma(t)
  (L = 10, keeping t) -> 8 x 256 ReLU with gamma(x) re-concatenated after the 5th layer -> dx (3).
  ``zero_canonical``: dx = 0 at t = 0, so the scene at t = 0 is the canonical space (D-NeRF's rule;
  its code applies it to whole batches of one time, here it holds per sample).
- :class:`TimeNeRFMLP`: the NeRF MLP (8 x 256, skip after the 5th layer, 256-d feature + gamma(d)
  -> 128 -> RGB), optionally with gamma(t) (L = 10) appended to its input (T-NeRF), optionally with
  a CAM per trunk layer: a per-channel scale and shift read from a 1-D grid over 2t - 1 (5 cells,
  scale 1 / shift 0 at start), applied to the layer's pre-activation without feature
  normalisation, as CAM's dynamic-NeRF code does.
- :class:`DynamicField`: ``variant="dnerf"`` (deformation + canonical NeRF) or ``"tnerf"``;
  ``field(x, d, t) -> (raw sigma, rgb)``, ``density(x, t)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.encodings import nerf_encoding, positional_encoding_dim
from .cam import CAM
from .nerf import NeRFMLP


def _time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Times broadcast to the points' leading shape, as (..., 1)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(like.shape[:-1])
    while t.dim() < like.dim() - 1:
        t = t.unsqueeze(-1)
    return t.expand(like.shape[:-1]).unsqueeze(-1)


class DeformationMLP(nn.Module):
    """D-NeRF's deformation network: ``forward(x (..., 3), t (..., 1)) -> dx (..., 3)``."""

    def __init__(self, depth: int = 8, width: int = 256, skips=(4,), pos_freqs: int = 10, time_freqs: int = 10,
                 zero_canonical: bool = True):
        super().__init__()
        self.pos_freqs, self.time_freqs, self.skips = pos_freqs, time_freqs, tuple(skips)
        self.zero_canonical = bool(zero_canonical)
        in_x = positional_encoding_dim(3, pos_freqs, True)
        in_t = positional_encoding_dim(1, time_freqs, True)
        layers = []
        for i in range(depth):
            fan_in = in_x + in_t if i == 0 else width + (in_x if (i - 1) in self.skips else 0)
            layers.append(nn.Linear(fan_in, width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ex = nerf_encoding(x, self.pos_freqs)
        h = torch.cat([ex, nerf_encoding(t, self.time_freqs)], -1)
        for i, layer in enumerate(self.layers):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([ex, h], -1)
        dx = self.out(h)
        if self.zero_canonical:
            dx = dx * (t != 0).to(dx.dtype)
        return dx


class TimeNeRFMLP(NeRFMLP):
    """:class:`NeRFMLP` with optional time input (``time_freqs`` > 0) and optional time CAM on its
    trunk (``cam_res``: cells of the 1-D grid, None = off). With neither it is the NeRF MLP."""

    def __init__(self, depth: int = 8, width: int = 256, *, time_freqs: int = 0, cam_res: int | None = None, **kw):
        super().__init__(depth=depth, width=width, **kw)
        self.time_freqs = int(time_freqs)
        if self.time_freqs:
            in_x = positional_encoding_dim(3, self.pos_freqs, True)
            in_t = positional_encoding_dim(1, self.time_freqs, True)
            skip_in = in_x + in_t
            for i in range(depth):
                fan_in = skip_in if i == 0 else width + (skip_in if (i - 1) in self.skips else 0)
                self.trunk[i] = nn.Linear(fan_in, width)
        self.cams = nn.ModuleList([CAM(width, 1, cam_res, normalize=False) for _ in range(depth)]) if cam_res else None

    def _trunk_t(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ex = nerf_encoding(x, self.pos_freqs)
        if self.time_freqs:
            ex = torch.cat([ex, nerf_encoding(t, self.time_freqs)], -1)
        h = ex
        coord = 2 * t - 1
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if self.cams is not None:
                h = self.cams[i](h, coord)
            h = F.relu(h)
            if i in self.skips:
                h = torch.cat([ex, h], -1)
        return h

    def density_t(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.relu(self.sigma_head(self._trunk_t(x, t))).squeeze(-1)

    def forward_t(self, x: torch.Tensor, d: torch.Tensor, t: torch.Tensor):
        h = self._trunk_t(x, t)
        sigma = self.sigma_head(h).squeeze(-1)
        ed = nerf_encoding(d, self.dir_freqs)
        h = F.relu(self.dir_layer(torch.cat([self.feature(h), ed], -1)))
        return sigma, torch.sigmoid(self.rgb_head(h))


class DynamicField(nn.Module):
    """A dynamic radiance field: ``variant`` "dnerf" (a :class:`DeformationMLP` into a canonical
    :class:`TimeNeRFMLP` without time input) or "tnerf" (a :class:`TimeNeRFMLP` with time input).
    ``cam_res``: time CAM on the (canonical) NeRF's trunk."""

    def __init__(self, variant: str = "dnerf", depth: int = 8, width: int = 256, deform_depth: int = 8,
                 deform_width: int = 256, pos_freqs: int = 10, time_freqs: int = 10,
                 zero_canonical: bool = True, cam_res: int | None = None):
        super().__init__()
        if variant not in ("dnerf", "tnerf"):
            raise ValueError(f"variant: expected 'dnerf' or 'tnerf', got {variant!r}")
        self.variant = variant
        self.deform = DeformationMLP(deform_depth, deform_width, pos_freqs=pos_freqs, time_freqs=time_freqs,
                                     zero_canonical=zero_canonical) if variant == "dnerf" else None
        self.nerf = TimeNeRFMLP(depth, width, pos_freqs=pos_freqs, cam_res=cam_res,
                                time_freqs=time_freqs if variant == "tnerf" else 0)

    def warp(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Points in the space the NeRF sees: x + dx(x, t) (D-NeRF) or x."""
        return x if self.deform is None else x + self.deform(x, t)

    def forward(self, x: torch.Tensor, d: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        tt = _time(t, x)
        return self.nerf.forward_t(self.warp(x, tt), d, tt)

    def density(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        tt = _time(t, x)
        return self.nerf.density_t(self.warp(x, tt), tt)
