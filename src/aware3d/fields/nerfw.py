"""NeRF-W fields (Martin-Brualla et al., CVPR 2021; PAPERS.md card 2) on the two backbones.

A NeRF-W field is its backbone (same layers, same parameter names) plus

- an appearance term: a bias-free linear map of the per-image appearance embedding (GLO, 48-d)
  added to the pre-activation of the *static colour* layer only. This is exactly the paper's
  "concatenate the embedding to the colour layer's input" (a linear layer on a concatenation is the
  sum of linear layers on the parts) and keeps the backbone's weights loadable unchanged;
- a transient head on (geometry feature, per-image transient embedding (16-d)) -> transient
  density (softplus), colour (sigmoid) and uncertainty beta (softplus; ``beta_min`` is added by the
  renderer after compositing, as the paper's released re-implementations do). The head's first layer
  is likewise split into a feature part and an embedding part so the embedding is projected once per
  ray, not once per sample.

Fields take *projected* per-ray terms (``appearance_bias(emb)``, ``transient_bias(emb)``) that
broadcast against the samples, and return a dict::

    {"sigma": raw static density, "rgb": static colour,
     "t_sigma", "t_rgb", "t_beta": transient density, colour, uncertainty (when transient_bias is given)}

The static density keeps its backbone's activation (ReLU at render time for the MLP, truncated exp
for the hash grid).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cam import CAMHashGridField, CAMNeRFMLP


class TransientHead(nn.Module):
    """``depth`` ReLU layers of ``width`` on [feature, transient embedding] -> (sigma, rgb, beta).

    The first layer is stored as ``inp`` (feature part, with bias) and ``emb`` (embedding part, no
    bias): ``inp(f) + emb(e)`` equals one linear layer on ``cat([f, e])``."""

    def __init__(self, in_dim: int, embed_dim: int = 16, width: int = 128, depth: int = 4,
                 sigma_bias: float = -2.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"transient depth: expected >= 1, got {depth}")
        self.inp = nn.Linear(in_dim, width)
        self.emb = nn.Linear(embed_dim, width, bias=False)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 5)  # sigma, rgb (3), beta
        with torch.no_grad():
            # start nearly transparent: softplus(-2) ~ 0.13 per unit length
            self.out.bias[0] = sigma_bias

    def embedding_bias(self, emb: torch.Tensor) -> torch.Tensor:
        return self.emb(emb)

    def forward(self, feat: torch.Tensor, emb_bias: torch.Tensor):
        h = F.relu(self.inp(feat) + emb_bias)
        for layer in self.layers:
            h = F.relu(layer(h))
        o = self.out(h).float()
        return F.softplus(o[..., 0]), torch.sigmoid(o[..., 1:4]), F.softplus(o[..., 4])


class NeRFWMLP(CAMNeRFMLP):
    """NeRF MLP backbone + appearance term on the colour layer + transient head on the 256-d feature
    (the paper's 4 x 128 by default). ``cam_res`` adds CAM to the static colour branch."""

    def __init__(self, depth: int = 8, width: int = 256, *, appearance_dim: int = 48,
                 transient_dim: int = 16, transient_width: int = 128, transient_depth: int = 4,
                 cam_res: int | None = None, **kw):
        super().__init__(depth=depth, width=width, cam_res=cam_res, **kw)
        dir_width = self.dir_layer.out_features
        self.appearance = nn.Linear(appearance_dim, dir_width, bias=False) if appearance_dim else None
        self.transient = TransientHead(width, transient_dim, transient_width, transient_depth) \
            if transient_dim else None

    def appearance_bias(self, emb: torch.Tensor) -> torch.Tensor | None:
        return None if self.appearance is None or emb is None else self.appearance(emb)

    def transient_bias(self, emb: torch.Tensor) -> torch.Tensor | None:
        return None if self.transient is None or emb is None else self.transient.embedding_bias(emb)

    def forward(self, x, d, app_bias=None, transient_bias=None) -> dict:  # type: ignore[override]
        h = self._trunk(x)
        feat = self.feature(h)
        out = {"sigma": self.sigma_head(h).squeeze(-1),
               "rgb": self.color_from_feature(feat, d, app_bias)}
        if transient_bias is not None and self.transient is not None:
            out["t_sigma"], out["t_rgb"], out["t_beta"] = self.transient(feat, transient_bias)
        return out

    def transient_density(self, x: torch.Tensor, transient_bias: torch.Tensor) -> torch.Tensor:
        return self.transient(self.feature(self._trunk(x)), transient_bias)[0]


class NeRFWHashField(CAMHashGridField):
    """Instant-NGP field backbone + appearance term on the colour MLP's first layer + transient head
    on the 15 geometry features (2 x 64 by default, sized like Instant-NGP's own MLPs so the field
    keeps the hash grid's speed; methods.nerfw uses the backbone's ``hidden`` width)."""

    def __init__(self, aabb, *, appearance_dim: int = 48, transient_dim: int = 16,
                 transient_width: int = 64, transient_depth: int = 2, cam_res: int | None = None, **kw):
        super().__init__(aabb, cam_res=cam_res, **kw)
        hidden = self.color_mlp[0].out_features
        geo = self.color_mlp[0].in_features - 16
        self.appearance = nn.Linear(appearance_dim, hidden, bias=False) if appearance_dim else None
        self.transient = TransientHead(geo, transient_dim, transient_width, transient_depth) \
            if transient_dim else None

    appearance_bias = NeRFWMLP.appearance_bias
    transient_bias = NeRFWMLP.transient_bias

    def forward(self, x, d, app_bias=None, transient_bias=None) -> dict:  # type: ignore[override]
        sigma, geo = self._geometry(x)
        out = {"sigma": sigma, "rgb": self.color(geo, d, app_bias)}
        if transient_bias is not None and self.transient is not None:
            with self._autocast():
                out["t_sigma"], out["t_rgb"], out["t_beta"] = self.transient(geo, transient_bias)
        return out

    def transient_density(self, x: torch.Tensor, transient_bias: torch.Tensor) -> torch.Tensor:
        _, geo = self._geometry(x)
        with self._autocast():
            return self.transient(geo, transient_bias)[0]

    def total_density(self, x: torch.Tensor, transient_bias: torch.Tensor | None) -> torch.Tensor:
        """Static + transient density with one hash-grid pass (occupancy, early termination)."""
        sigma, geo = self._geometry(x)
        if transient_bias is None or self.transient is None:
            return sigma
        with self._autocast():
            return sigma + self.transient(geo, transient_bias)[0].float()
