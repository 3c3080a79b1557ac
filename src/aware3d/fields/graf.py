"""GRAF's conditional radiance field (Schwarz et al. 2020, sec. 3.1, fig. 3).

    h    = MLP_trunk([gamma(x), z_s])          ReLU layers, [gamma(x), z_s] concatenated again at skips
    sigma = w_s . h + b_s                      raw density (the renderer clamps it at zero)
    c     = sigmoid(MLP_c([W_f h, gamma(d), z_a]))

The shape code z_s is concatenated with gamma(x) before the density trunk and the appearance code
z_a with gamma(d) before the colour head, so density depends on z_s only and appearance can be
changed alone. gamma is the NeRF code's encoding (raw input kept, no pi; L = 10 for points and 4 for
directions, :func:`aware3d.render.encodings.nerf_encoding`). Defaults are the official ones:
8 x 256 trunk with skip 4, a 128-wide colour layer.

Skips count as in the official NeRF code: skip k concatenates [gamma(x), z_s] to the output of
layer k counted from 0, so with ``skips=(4,)`` the sixth layer takes it (input widths 191, 256,
256, 256, 256, 447, 256, 256 at the paper size). ``early_skip=True`` is the convention of aware3d
before it matched the official code (k counted from 1: the fifth layer takes the input, one layer
early); runs saved with it keep it.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render._checks import ShapeError, check_tensor
from ..render.encodings import nerf_encoding, positional_encoding_dim

__all__ = ["GrafField"]


def _cat_linear(layer: nn.Linear, parts) -> torch.Tensor:
    """``layer(cat(parts, -1))`` without building the concatenation: ``parts`` are
    ``(tensor, per_point)`` in concatenation order, per-point (B, P, d) or per-sample (B, d) (a
    latent code, multiplied once per sample and broadcast over the points)."""
    out, a = None, 0
    for t, per_point in parts:
        d = t.shape[-1]
        y = F.linear(t, layer.weight[:, a:a + d])
        a += d
        y = y if per_point else y.unsqueeze(1)
        out = y if out is None else out + y
    if a != layer.in_features:
        raise ShapeError(f"inputs: expected {layer.in_features} features in all, got {a}")
    return out + layer.bias


class GrafField(nn.Module):
    """f(gamma(x), gamma(d), z_s, z_a) -> (sigma, rgb).

    ``pos_scale`` multiplies points before the encoding (1 in the official configs)."""

    def __init__(self, z_shape_dim: int = 128, z_app_dim: int = 128, hidden: int = 256,
                 n_layers: int = 8, skips=(4,), n_freq_pos: int = 10, n_freq_dir: int = 4,
                 color_hidden: int | None = None, pos_scale: float = 1.0, early_skip: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers: expected >= 1, got {n_layers}")
        self.z_shape_dim, self.z_app_dim = z_shape_dim, z_app_dim
        self.hidden, self.n_layers = hidden, n_layers
        self.n_freq_pos, self.n_freq_dir = n_freq_pos, n_freq_dir
        self.pos_scale = float(pos_scale)
        # skip k: [gamma(x), z_s] is concatenated to the output of layer k (official: counted from
        # 0; early_skip: from 1); self.skips holds the 0-based indices of the layers that take it
        self.early_skip = bool(early_skip)
        off = 0 if self.early_skip else 1
        self.skips = tuple(int(k) + off for k in skips if 1 <= int(k) + off < n_layers)
        pe = positional_encoding_dim(3, n_freq_pos, include_input=True)
        pe_dir = positional_encoding_dim(3, n_freq_dir, include_input=True)
        in_dim = pe + z_shape_dim
        dims_in = [in_dim] + [hidden + (in_dim if k in self.skips else 0) for k in range(1, n_layers)]
        self.dims_in = tuple(dims_in)  # per-layer input widths of the trunk
        self.trunk = nn.ModuleList(nn.Linear(d, hidden) for d in dims_in)
        self.sigma_out = nn.Linear(hidden, 1)
        self.feature = nn.Linear(hidden, hidden)
        ch = hidden // 2 if color_hidden is None else color_hidden
        self.color_hidden = nn.Linear(hidden + pe_dir + z_app_dim, ch)
        self.color_out = nn.Linear(ch, 3)

    def _features(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        check_tensor("points", points, (3,), min_dims=3, floating=True)
        check_tensor("z_shape", z_shape, (self.z_shape_dim,), min_dims=2, floating=True)
        if points.shape[0] != z_shape.shape[0]:
            raise ShapeError(f"points: expected shape ({z_shape.shape[0]}, P, 3) (batch of z_shape), "
                             f"got {tuple(points.shape)}")
        gx = nerf_encoding(points * self.pos_scale, self.n_freq_pos)
        inp = [(gx, True), (z_shape, False)]  # [gamma(x), z_s], never materialised per point
        h = F.relu(_cat_linear(self.trunk[0], inp))
        for k, layer in enumerate(self.trunk[1:], start=1):
            h = F.relu(_cat_linear(layer, inp + [(h, True)]) if k in self.skips else layer(h))
        return h

    def forward(self, points: torch.Tensor, dirs: torch.Tensor, z_shape: torch.Tensor,
                z_app: torch.Tensor):
        """points, dirs (B, P, 3), z_shape (B, Zs), z_app (B, Za) ->
        ``(sigma (B, P) raw, rgb (B, P, 3) in [0, 1])``."""
        check_tensor("z_app", z_app, (self.z_app_dim,), min_dims=2, floating=True)
        if dirs.shape != points.shape:
            raise ShapeError(f"dirs: expected shape {tuple(points.shape)} (that of points), got {tuple(dirs.shape)}")
        h = self._features(points, z_shape)
        sigma = self.sigma_out(h).squeeze(-1)
        gd = nerf_encoding(dirs, self.n_freq_dir)
        c = F.relu(_cat_linear(self.color_hidden, [(self.feature(h), True), (gd, True), (z_app, False)]))
        return sigma, torch.sigmoid(self.color_out(c))

    def density(self, points: torch.Tensor, z_shape: torch.Tensor) -> torch.Tensor:
        """Raw density only (mesh extraction): (B, P). Depends on z_shape alone."""
        return self.sigma_out(self._features(points, z_shape)).squeeze(-1)

    # ---------------------------------------------------------------------------------------------
    # Fast evaluation along rays (the renderer's path; :meth:`forward` is its reference).
    #
    # The same function, rearranged: (1) the latent codes' and the view direction's products are
    # computed once per image / per ray and added as biases (never per point); (2) the feature layer
    # and the colour layer's feature part have no nonlinearity between them, so they are one
    # (hidden -> colour hidden) matrix W_c[:, :H] W_f: 256 x 256 + 256 x 128 multiply-adds per point
    # become 256 x 128; (3) ReLUs and biases in place (no extra copies of the activations).

    def ray_terms(self, dirs: torch.Tensor, z_app: torch.Tensor) -> torch.Tensor:
        """Per-ray part of the colour layer's pre-activation: unit view directions (B, R, 3) and
        z_app (B, Za) -> (B, R, colour hidden): W_d gamma(d) + W_a z_a + W_c[:, :H] b_f + b_c."""
        check_tensor("dirs", dirs, (3,), min_dims=3, floating=True)
        check_tensor("z_app", z_app, (self.z_app_dim,), min_dims=2, floating=True)
        H, W = self.hidden, self.color_hidden.weight
        pe_dir = W.shape[1] - H - self.z_app_dim
        gd = nerf_encoding(dirs, self.n_freq_dir)
        per_image = F.linear(z_app, W[:, H + pe_dir:]) + F.linear(self.feature.bias, W[:, :H]) + self.color_hidden.bias
        return F.linear(gd, W[:, H:H + pe_dir]) + per_image.unsqueeze(1)

    def head_weight(self) -> torch.Tensor:
        """(colour hidden, H): the feature layer fused into the colour layer, W_c[:, :H] W_f."""
        return self.color_hidden.weight[:, :self.hidden] @ self.feature.weight

    def forward_rays(self, points: torch.Tensor, ray_terms: torch.Tensor, z_shape: torch.Tensor,
                     head_weight: torch.Tensor | None = None):
        """points (B, R, N, 3) along rays, ``ray_terms`` (B, R, colour hidden) from :meth:`ray_terms`,
        z_shape (B, Zs) -> ``(sigma (B, R, N) raw, rgb (B, R, N, 3))``; equal to :meth:`forward`
        with each ray's view direction at all its points (up to float rounding)."""
        check_tensor("points", points, (3,), min_dims=4, floating=True)
        B, R, N, _ = points.shape
        gx = nerf_encoding(points.reshape(B, R * N, 3) * self.pos_scale, self.n_freq_pos)
        pe = gx.shape[-1]
        w0 = self.trunk[0].weight
        # the gamma(x) columns of the first and the skip layers in one product
        wx = torch.cat([w0[:, :pe]] + [self.trunk[k].weight[:, :pe] for k in self.skips], 0)
        gxw = F.linear(gx, wx).split(self.hidden, -1)
        # per image: the z_s columns of the first and the skip layers, with their biases
        zb0 = (F.linear(z_shape, w0[:, pe:], self.trunk[0].bias)).unsqueeze(1)
        h = F.relu_(gxw[0] + zb0)
        for k, layer in enumerate(self.trunk[1:], start=1):
            if k in self.skips:
                w = layer.weight
                zb = F.linear(z_shape, w[:, pe:pe + self.z_shape_dim], layer.bias).unsqueeze(1)
                y = F.linear(h, w[:, pe + self.z_shape_dim:]).add_(gxw[1 + self.skips.index(k)]).add_(zb)
            else:
                y = F.linear(h, layer.weight, layer.bias)
            h = F.relu_(y)
        hw = self.head_weight() if head_weight is None else head_weight
        sigma = self.sigma_out(h).reshape(B, R, N)
        c = F.linear(h, hw).reshape(B, R, N, -1)
        c = F.relu_(c.add_(ray_terms.unsqueeze(2).to(c.dtype)))
        return sigma, torch.sigmoid(self.color_out(c))
