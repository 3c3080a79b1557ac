"""StyleGAN2's path-length regulariser (Karras et al. 2020), as the official VolumeGAN loss computes it.

For a generator image ``x = g(ws)`` (B, C, H, W) and its styles ``ws`` (B, L, w_dim) (or (B, w_dim)):

    y          ~ N(0, I) / sqrt(H W)                       (one image of noise per sample)
    length_i   = sqrt( mean_l  sum_d (J_i^T y_i)[l, d]^2 )  J_i = d x_i / d ws_i
    mean'      = mean + decay (E_i length_i - mean)        (running mean, starts at 0)
    penalty_i  = (length_i - mean')^2

``mean'`` is not detached inside the penalty (official code), so the batch mean's (decay-weighted)
gradient flows into it; the stored running mean is detached. The engine (:mod:`aware3d.train.gan`)
weights the batch mean of the penalty by ``pl_weight x pl_interval`` in its lazy ``PL`` phase.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["path_length_penalty", "path_lengths"]


def path_lengths(images: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor,
                 create_graph: bool = True) -> torch.Tensor:
    """Per-sample ``sqrt(mean over style slots of ||J^T y||^2 over w_dim)`` (B,), ``y = noise /
    sqrt(H W)`` with ``noise`` shaped as ``images``; differentiable (double backward) with
    ``create_graph``. ``ws`` must be in the graph of ``images`` (a slot that does not reach the
    image has gradient 0)."""
    h, w = images.shape[-2:]
    y = noise.to(images) / math.sqrt(h * w)
    (grad,) = torch.autograd.grad((images * y).sum(), ws, create_graph=create_graph, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(ws)
    sq = grad.square().sum(-1)
    if sq.dim() > 1:
        sq = sq.reshape(sq.shape[0], -1).mean(1)
    return sq.sqrt()


def path_length_penalty(images: torch.Tensor, ws: torch.Tensor, pl_mean: torch.Tensor, decay: float,
                        noise: torch.Tensor, batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """``(penalty (B,), lengths (B,), new running mean (detached scalar))``; ``batch_mean(lengths)``
    replaces ``lengths.mean()`` where the batch is split over processes."""
    lengths = path_lengths(images, ws, noise)
    m = lengths.mean() if batch_mean is None else batch_mean(lengths)
    mean = pl_mean.to(lengths).lerp(m, float(decay))
    return (lengths - mean).square(), lengths, mean.detach()
