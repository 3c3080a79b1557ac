"""GIRAFFE's composition operator (Niemeyer & Geiger 2021, eq. 6).

A scene of E entities (objects + background) evaluated at the same sample points is one field with
density sigma = sum_i sigma_i and feature f = (1 / sigma) sum_i sigma_i f_i.
"""
from __future__ import annotations

import torch

from ._checks import ShapeError, check_tensor

#: guards 0/0 where no entity has density; the feature there is irrelevant (alpha = 0).
EPS = 1e-8


def compose(sigmas: torch.Tensor, features: torch.Tensor, *, eps: float = EPS):
    """Compose E entities. sigmas (E, ...), features (E, ..., C) -> ``(sigma (...), feature (..., C))``.

    Densities are clamped at zero first (a field's raw output may be negative; the renderer would
    clamp them anyway), so an entity with no density contributes nothing.
    """
    check_tensor("sigmas", sigmas, (), min_dims=1, floating=True)
    check_tensor("features", features, (None,), min_dims=2, floating=True)
    if features.shape[:-1] != sigmas.shape:
        raise ShapeError(f"features: expected shape {(*sigmas.shape, 'C')} (sigmas + channels), "
                         f"got {tuple(features.shape)}")
    s = sigmas.clamp_min(0)
    total = s.sum(0)
    feat = (s.unsqueeze(-1) * features).sum(0) / (total.unsqueeze(-1) + eps)
    return total, feat
