"""Radiance-field networks for reconstruction: the vanilla NeRF MLP and the hash-grid field.

Both map points x (..., 3) and unit view directions d (..., 3) to a raw density and an RGB colour:
``field(x, d) -> (sigma, rgb)``, and expose ``density(x)`` for occupancy grids and meshes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.encodings import nerf_encoding, positional_encoding_dim, spherical_harmonics


class NeRFMLP(nn.Module):
    """NeRF (Mildenhall et al. 2020, fig. 7): PE L=10 (x) / 4 (d) keeping the input, 8 x 256 ReLU
    with the encoded input re-concatenated after the 5th layer, linear density head, a 256-d
    feature + gamma(d) -> 128 -> sigmoid RGB."""

    def __init__(self, depth: int = 8, width: int = 256, skips=(4,), pos_freqs: int = 10,
                 dir_freqs: int = 4, dir_width: int = 128):
        super().__init__()
        self.pos_freqs, self.dir_freqs, self.skips = pos_freqs, dir_freqs, tuple(skips)
        in_x = positional_encoding_dim(3, pos_freqs, True)
        in_d = positional_encoding_dim(3, dir_freqs, True)
        layers = []
        for i in range(depth):
            fan_in = in_x if i == 0 else width + (in_x if (i - 1) in self.skips else 0)
            layers.append(nn.Linear(fan_in, width))
        self.trunk = nn.ModuleList(layers)
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.dir_layer = nn.Linear(width + in_d, dir_width)
        self.rgb_head = nn.Linear(dir_width, 3)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        ex = nerf_encoding(x, self.pos_freqs)
        h = ex
        for i, layer in enumerate(self.trunk):
            h = F.relu(layer(h))
            if i in self.skips:
                h = torch.cat([ex, h], -1)
        return h

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.sigma_head(self._trunk(x))).squeeze(-1)

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        h = self._trunk(x)
        sigma = self.sigma_head(h).squeeze(-1)
        ed = nerf_encoding(d, self.dir_freqs)
        h = F.relu(self.dir_layer(torch.cat([self.feature(h), ed], -1)))
        return sigma, torch.sigmoid(self.rgb_head(h))


class _TruncExp(torch.autograd.Function):
    """exp with a clamped gradient: the density activation of Instant-NGP implementations, stable
    when early-training log-densities overshoot."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(-15, 15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


class HashGridField(nn.Module):
    """Instant-NGP field (Mueller et al. 2022, sec. 5.4): multiresolution hash encoding of x
    normalised to the scene box, density MLP 1 x 64 -> 16 outputs (first = log-density, exp
    activation), colour MLP 2 x 64 on (15 geometry features, degree-4 SH of d) -> sigmoid RGB.

    ``autocast_bf16`` runs the tiny MLPs under bf16 autocast (fast on CPUs with AMX / avx512_bf16);
    the hash grid and the density activation stay fp32.

    ``contract=True`` (unbounded scenes): ``aabb`` is the inner box and the grid encodes
    mip-NeRF 360's contracted space, ``contract((x - c) / h)`` in [-2, 2]^3 (L-inf norm,
    :func:`aware3d.kernels.marching.contract`), so all of space maps into the grid and the inner
    box fills its middle half. Inputs stay world points and the density stays per world length.
    """

    def __init__(self, aabb, levels: int = 16, features: int = 2, log2_table: int = 19,
                 base_res: int = 16, max_res: int = 2048, hidden: int = 64, geo_features: int = 15,
                 autocast_bf16: bool = False, backend: str = "auto", contract: bool = False):
        super().__init__()
        from ..kernels.hashgrid import HashGrid

        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.grid = HashGrid(levels=levels, features_per_level=features, log2_table_size=log2_table,
                             base_res=base_res, max_res=max_res, backend=backend)
        self.density_mlp = nn.Sequential(nn.Linear(self.grid.out_dim, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 1 + geo_features))
        self.color_mlp = nn.Sequential(nn.Linear(geo_features + 16, hidden), nn.ReLU(),
                                       nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        self.autocast_bf16 = autocast_bf16
        self.contract = bool(contract)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """World points -> the hash grid's [0, 1]^3 (through the contraction if ``contract``)."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        if self.contract:
            from ..kernels.marching import contract

            y = contract((x - (lo + hi) * 0.5) / ((hi - lo) * 0.5))
            return ((y + 2.0) * 0.25).clamp(0, 1)
        return ((x - lo) / (hi - lo)).clamp(0, 1)

    def _autocast(self):
        dev = self.aabb.device.type
        return torch.autocast(dev, dtype=torch.bfloat16, enabled=self.autocast_bf16)

    def _geometry(self, x: torch.Tensor):
        shape = x.shape[:-1]
        enc = self.grid(self.normalize(x.reshape(-1, 3)))
        with self._autocast():
            h = self.density_mlp(enc)
        h = h.float()
        sigma = trunc_exp(h[:, 0] - 1.0)  # the -1 bias starts training nearly empty
        return sigma.reshape(shape), h[:, 1:].reshape(*shape, h.shape[-1] - 1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._geometry(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor):
        sigma, geo = self._geometry(x)
        sh = spherical_harmonics(d.reshape(-1, 3), 4).reshape(*d.shape[:-1], 16)
        with self._autocast():
            rgb = self.color_mlp(torch.cat([geo, sh], -1))
        return sigma, torch.sigmoid(rgb.float())


class DirectionalBackground(nn.Module):
    """A learnt background colour that depends on the view direction: degree-4 spherical harmonics
    of d (16) -> ``hidden`` ReLU -> 3 -> sigmoid. What a ray's remaining transmittance composites
    onto for real captures (content everywhere, no alpha), instead of a fixed colour."""

    def __init__(self, hidden: int = 32, degree: int = 4):
        super().__init__()
        self.degree = int(degree)
        self.mlp = nn.Sequential(nn.Linear(self.degree ** 2, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """RGB (..., 3) in [0, 1] for view directions d (..., 3) (normalised here)."""
        shape = d.shape[:-1]
        sh = spherical_harmonics(F.normalize(d.reshape(-1, 3).float(), dim=-1), self.degree)
        return torch.sigmoid(self.mlp(sh)).reshape(*shape, 3)
