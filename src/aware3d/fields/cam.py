"""Coordinate-aware modulation (CAM, Lee et al. CVPR 2024; PAPERS.md card 9) as a module, and the
reconstruction fields with a CAM in their colour branch.

``CAM(channels, coord_dim, resolution)`` owns two small grids over a *priority coordinate* X in
[-1, 1]^D: a per-channel scale gamma(X) (initialised to 1) and shift beta(X) (initialised to 0), read
by (bi/tri)linear interpolation, and applies F~ = gamma(X) * norm(F) + beta(X)
(:func:`aware3d.render.encodings.cam_modulate`). ``norm`` is a per-sample layer norm over channels
without affine parameters.

What holds at initialisation:

- ``normalize=False``: CAM is the identity (up to the rounding of the interpolation weights of a
  constant grid, below 1e-6 relative);
- ``normalize=True`` (the paper's default): CAM(F) = (F - mean_c F) / sqrt(var_c F + eps), i.e. the
  features are standardised per sample and nothing else; the output is therefore invariant to any
  per-sample positive rescaling and shift of F. The field's output changes at initialisation (the
  next layer sees standardised features) but the function class is the same.

Fields (subclasses of :mod:`aware3d.fields.nerf`, same parameter names, so a backbone's state dict
loads into them with ``strict=False`` and only the ``cam.*`` entries stay at their initial values):

- :class:`CAMNeRFMLP`: NeRF MLP; the colour branch's hidden pre-activation (``dir_layer`` output,
  128 channels) is modulated with the unit view direction as priority coordinate (3-D grid).
- :class:`CAMHashGridField`: Instant-NGP field; the colour MLP's first hidden pre-activation (64
  channels) is modulated the same way.

Both take ``cam_res=None`` to switch CAM off (then they compute exactly what their base class does).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.encodings import cam_modulate, nerf_encoding, spherical_harmonics
from .nerf import HashGridField, NeRFMLP


class CAM(nn.Module):
    """Per-channel scale and shift grids over a ``coord_dim``-D priority coordinate in [-1, 1].

    ``resolution``: grid points per coordinate (an int for all, or one per coordinate, in the
    coordinates' order). Parameters: ``2 * channels * prod(resolution)``.
    ``forward(features (..., C), coords (..., D)) -> (..., C)`` (leading dims must agree).
    """

    def __init__(self, channels: int, coord_dim: int, resolution: int | Sequence[int] = 4,
                 normalize: bool = True, eps: float = 1e-5, shared: bool = False):
        super().__init__()
        if coord_dim not in (1, 2, 3):
            raise ValueError(f"coord_dim: expected 1, 2 or 3, got {coord_dim}")
        res = (int(resolution),) * coord_dim if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if len(res) != coord_dim or min(res) < 2:
            raise ValueError(f"resolution: expected {coord_dim} numbers >= 2, got {resolution}")
        self.channels, self.coord_dim, self.resolution = int(channels), coord_dim, res
        self.normalize, self.eps = bool(normalize), float(eps)
        # grid_sample reads the last grid axis with the first coordinate: store axes reversed
        # shared: one scale and shift per grid point for all channels (CAM's dynamic-NeRF code)
        self.shared = bool(shared)
        shape = (1 if self.shared else self.channels, *reversed(res))
        self.scale = nn.Parameter(torch.ones(shape))
        self.shift = nn.Parameter(torch.zeros(shape))

    def forward(self, features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        if coords.shape[:-1] != lead:
            coords = coords.expand(*lead, coords.shape[-1])
        f = features.reshape(-1, features.shape[-1])
        x = coords.reshape(-1, coords.shape[-1]).to(f.dtype)
        if f.dtype in (torch.float16, torch.bfloat16):
            f, x = f.float(), x.float()
        scale, shift = self.scale, self.shift
        if self.shared:
            scale, shift = scale.expand(f.shape[-1], *scale.shape[1:]), shift.expand(f.shape[-1], *shift.shape[1:])
        out = cam_modulate(f, x, scale, shift, normalize=self.normalize, eps=self.eps)
        return out.reshape(*lead, -1)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, coord_dim={self.coord_dim}, resolution={self.resolution}, "
                f"normalize={self.normalize}" + (", shared" if self.shared else ""))


class CAMNeRFMLP(NeRFMLP):
    """:class:`NeRFMLP` with CAM on the colour branch, priority coordinate = view direction.

    ``color_from_feature(feat, d, extra=None)`` exposes the colour branch so that subclasses can add
    a term to its pre-activation (NeRF-W's appearance embedding)."""

    def __init__(self, depth: int = 8, width: int = 256, *, cam_res: int | None = 4,
                 cam_normalize: bool = True, **kw):
        super().__init__(depth=depth, width=width, **kw)
        self.cam = CAM(self.dir_layer.out_features, 3, cam_res, cam_normalize) if cam_res else None

    def color_pre(self, feat: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """The colour layer's pre-activation (before any appearance term and CAM)."""
        return self.dir_layer(torch.cat([feat, nerf_encoding(d, self.dir_freqs)], -1))

    def color_post(self, pre: torch.Tensor, d: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """pre-activation (+ extra) -> CAM -> ReLU -> RGB head -> sigmoid."""
        if extra is not None:
            pre = pre + extra
        if self.cam is not None:
            pre = self.cam(pre, d)
        return torch.sigmoid(self.rgb_head(F.relu(pre)))

    def color_from_feature(self, feat: torch.Tensor, d: torch.Tensor,
                           extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.color_post(self.color_pre(feat, d), d, extra)

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        h = self._trunk(x)
        sigma = self.sigma_head(h).squeeze(-1)
        return sigma, self.color_from_feature(self.feature(h), d)


class CAMHashGridField(HashGridField):
    """:class:`HashGridField` with CAM on the colour MLP's first hidden layer (view direction).

    ``color(geo, d, extra=None)`` exposes the colour branch (NeRF-W adds its appearance term)."""

    def __init__(self, aabb, *, cam_res: int | None = 4, cam_normalize: bool = True, **kw):
        super().__init__(aabb, **kw)
        hidden = self.color_mlp[0].out_features
        self.cam = CAM(hidden, 3, cam_res, cam_normalize) if cam_res else None

    def color_pre(self, geo: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """The colour MLP's first pre-activation (before any appearance term and CAM)."""
        sh = spherical_harmonics(d.reshape(-1, 3), 4).reshape(*d.shape[:-1], 16)
        with self._autocast():
            return self.color_mlp[0](torch.cat([geo, sh], -1))

    def color_post(self, pre: torch.Tensor, d: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        if extra is not None:
            pre = pre + extra
        if self.cam is not None:
            pre = self.cam(pre, d)
        with self._autocast():
            rgb = self.color_mlp[1:](pre)
        return torch.sigmoid(rgb.float())

    def color(self, geo: torch.Tensor, d: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        return self.color_post(self.color_pre(geo, d), d, extra)

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        sigma, geo = self._geometry(x)
        return sigma, self.color(geo, d)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
