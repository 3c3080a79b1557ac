"""Fields of dynamic scenes (PAPERS.md card 12): D-NeRF's deformation into a canonical NeRF, the
T-NeRF baseline that takes time as an input, and coordinate-aware modulation with time as the
priority coordinate (CAM, card 9).

- :class:`DeformationMLP` (D-NeRF's time network): gamma(x) (L = 10, keeping x) and gamma(t)
  (L = 10, keeping t) -> 8 x 256 ReLU with gamma(x) re-concatenated after the 5th layer -> dx (3).
  ``zero_canonical``: dx = 0 at t = 0, so the scene at t = 0 is the canonical space (D-NeRF's rule;
  its code applies it to whole batches of one time, here it holds per sample).
- :class:`TimeNeRFMLP`: the NeRF MLP (8 x 256, skip after the 5th layer, 256-d feature + gamma(d)
  -> 128 -> RGB), optionally with gamma(t) (L = 10) appended to its input (T-NeRF), optionally with
  a CAM per trunk layer: one scale and one shift (shared by all the layer's channels, as in CAM's
  dynamic-NeRF code) read from a 1-D grid over 2t - 1 (5 points, scale 1 / shift 0 at start),
  applied to the layer's pre-activation without feature normalisation, as that code does.
- :class:`DynamicField`: ``variant="dnerf"`` (deformation + canonical NeRF) or ``"tnerf"``;
  ``field(x, d, t) -> (raw sigma, rgb)``, ``density(x, t)``.
- :class:`DynamicHashField`: the same two variants on aware3d's hash-grid field
  (:class:`aware3d.fields.nerf.HashGridField`). D-NeRF: a small deformation MLP ahead of the grid,
  CAM's nerfacc warp (gamma(x) L = 4 and gamma(t) L = 4, 4 x 64 ReLU with the whole input
  re-concatenated after the 3rd layer, output weights uniform in [0, 1e-4] so dx starts ~0, and
  dx = 0 at t = 0). T-NeRF: the grid's features concatenated with gamma(t) (L = 4) before the density
  MLP: the grid stays 3-D and shared over time, the 64-wide density MLP (the only part that sees t)
  makes the geometry features time-dependent; a 4-D grid would need a 4-D hash kernel, and
  concatenation costs 9 more inputs to one layer. ``cam_res``: time CAM on the density MLP's hidden
  pre-activation (the only hidden layer before the density; CAM's T-NeRF code modulates the density
  trunk, not the colour branch). ``field(x, d, t) -> (sigma, rgb)`` with sigma already activated
  (trunc_exp), ``density(x, t)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.encodings import nerf_encoding, positional_encoding_dim
from .cam import CAM
from .nerf import HashGridField, NeRFMLP, trunc_exp


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
                 zero_canonical: bool = True, skip_time: bool = False, out_init: float | None = None):
        super().__init__()
        self.pos_freqs, self.time_freqs, self.skips = pos_freqs, time_freqs, tuple(skips)
        self.zero_canonical, self.skip_time = bool(zero_canonical), bool(skip_time)
        in_x = positional_encoding_dim(3, pos_freqs, True)
        in_t = positional_encoding_dim(1, time_freqs, True)
        skip_in = in_x + (in_t if self.skip_time else 0)
        layers = []
        for i in range(depth):
            fan_in = in_x + in_t if i == 0 else width + (skip_in if (i - 1) in self.skips else 0)
            layers.append(nn.Linear(fan_in, width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, 3)
        if out_init is not None:  # CAM's nerfacc warp: output weights uniform in [0, out_init], bias 0
            nn.init.uniform_(self.out.weight, 0.0, float(out_init))
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ex = nerf_encoding(x, self.pos_freqs)
        h = torch.cat([ex, nerf_encoding(t, self.time_freqs)], -1)
        skip = h if self.skip_time else ex
        for i, layer in enumerate(self.layers):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([skip, h], -1)
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
        self.cams = nn.ModuleList([CAM(width, 1, cam_res, normalize=False, shared=True) for _ in range(depth)]) if cam_res else None

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


class DynamicHashField(HashGridField):
    """:class:`HashGridField` of a dynamic scene (see the module docstring): ``variant`` "dnerf"
    (a :class:`DeformationMLP` into the canonical hash field) or "tnerf" (gamma(t) beside the grid's
    features), ``cam_res`` time CAM on the density MLP's hidden layer. Parameter names are the hash
    field's (``grid.*`` is the hash table) plus ``deform.*`` and ``time_cam.*``."""

    def __init__(self, aabb, *, variant: str = "dnerf", pos_freqs: int = 4, time_freqs: int = 4,
                 deform_depth: int = 4, deform_width: int = 64, zero_canonical: bool = True,
                 cam_res: int | None = None, deform_init: float = 1e-4, **hash_kw):
        super().__init__(aabb, **hash_kw)
        if variant not in ("dnerf", "tnerf"):
            raise ValueError(f"variant: expected 'dnerf' or 'tnerf', got {variant!r}")
        self.variant, self.time_freqs = variant, int(time_freqs)
        self.deform = DeformationMLP(deform_depth, deform_width, skips=(max(deform_depth // 2, 1),),
                                     pos_freqs=pos_freqs, time_freqs=time_freqs, zero_canonical=zero_canonical,
                                     skip_time=True, out_init=deform_init) if variant == "dnerf" else None
        if variant == "tnerf":
            first = self.density_mlp[0]
            self.density_mlp[0] = nn.Linear(first.in_features + positional_encoding_dim(1, self.time_freqs, True),
                                            first.out_features)
        hidden = self.density_mlp[0].out_features
        self.time_cam = CAM(hidden, 1, cam_res, normalize=False, shared=True) if cam_res else None

    def warp(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Points in the space the grid sees: x + dx(x, t) (D-NeRF) or x."""
        return x if self.deform is None else x + self.deform(x, t)

    def _geometry_t(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape[:-1]
        x = x.reshape(-1, 3)
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        tt = t.reshape(1, 1).expand(x.shape[0], 1) if t.numel() == 1 else t.reshape(x.shape[0], 1)
        enc = self.grid(self.normalize(self.warp(x, tt)))
        if self.deform is None:
            enc = torch.cat([enc, nerf_encoding(tt, self.time_freqs)], -1)
        with self._autocast():
            pre = self.density_mlp[0](enc)
        if self.time_cam is not None:
            pre = self.time_cam(pre.float(), 2 * tt - 1)
        with self._autocast():
            h = self.density_mlp[2](F.relu(pre))
        h = h.float()
        sigma = trunc_exp(h[:, 0] - 1.0)
        return sigma.reshape(shape), h[:, 1:].reshape(*shape, h.shape[-1] - 1)

    def density(self, x: torch.Tensor, t=0.0) -> torch.Tensor:
        return self._geometry_t(x, t)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor, t=0.0):
        from ..render.encodings import spherical_harmonics

        sigma, geo = self._geometry_t(x, t)
        sh = spherical_harmonics(d.reshape(-1, 3), 4).reshape(*d.shape[:-1], 16)
        with self._autocast():
            rgb = self.color_mlp(torch.cat([geo, sh], -1))
        return sigma, torch.sigmoid(rgb.float())
