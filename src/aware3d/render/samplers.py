"""Ray samplers: near/far bounds, stratified samples, hierarchical (inverse-CDF) importance samples.

Sample positions are distances ``t`` along unit-direction rays (see :mod:`aware3d.render.cameras`).
Stratified sampling returns the bin edges it used too, so the hierarchical sampler can build a
piecewise-constant PDF over the same bins (NeRF section 5.2).
"""
from __future__ import annotations

import torch

from ._checks import ShapeError, check_tensor


def near_far_aabb(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb, *, min_near: float = 0.0):
    """Slab test against an axis-aligned box ``aabb`` = (xmin, ymin, zmin, xmax, ymax, zmax).

    Returns ``(near, far, hit)`` each (...,); rays that miss get far = near and hit False.
    ``near`` is clamped to ``min_near`` (camera inside the box)."""
    check_tensor("rays_o", rays_o, (3,), floating=True)
    check_tensor("rays_d", rays_d, (3,), floating=True)
    box = torch.as_tensor(aabb, dtype=rays_o.dtype, device=rays_o.device)
    if box.shape != (6,):
        raise ShapeError(f"aabb: expected shape (6,) = (xmin, ymin, zmin, xmax, ymax, zmax), got {tuple(box.shape)}")
    inv = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (box[:3] - rays_o) * inv
    t1 = (box[3:] - rays_o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(min_near)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    far = torch.where(hit, far, near)
    return near, far, hit


def near_far_sphere(rays_o: torch.Tensor, rays_d: torch.Tensor, radius: float, center=(0.0, 0.0, 0.0),
                    *, min_near: float = 0.0):
    """Intersection of unit-direction rays with a sphere. Returns ``(near, far, hit)`` (...,)."""
    check_tensor("rays_o", rays_o, (3,), floating=True)
    check_tensor("rays_d", rays_d, (3,), floating=True)
    c = torch.as_tensor(center, dtype=rays_o.dtype, device=rays_o.device)
    oc = rays_o - c
    b = (oc * rays_d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    hit = disc > 0
    sq = disc.clamp_min(0).sqrt()
    near = (-b - sq).clamp_min(min_near)
    far = torch.where(hit, (-b + sq), near)
    hit = hit & (far > near)
    return near, far, hit


def stratified_samples(near, far, n_samples: int, *, batch_shape=None, perturb: bool = True,
                       lindisp: bool = False, generator: torch.Generator | None = None,
                       dtype=torch.float32, device=None, u: torch.Tensor | None = None,
                       endpoints: bool = False):
    """``n_samples`` stratified positions per ray in [near, far] (NeRF eq. 2).

    ``near``/``far``: tensors (...,) or numbers (then give ``batch_shape``). The interval is cut into
    ``n_samples`` equal bins (equal in disparity with ``lindisp``); with ``perturb`` one uniform
    sample per bin (jitter), otherwise bin midpoints. Returns ``(t (..., N), bins (..., N + 1))``.
    ``u`` (..., N): the jitter's uniform draws, given instead of drawn here (with ``perturb``).

    ``endpoints=True`` is the NeRF code's ``render_rays``: N points ``linspace(near, far, N)`` (ends
    included), used as they are without ``perturb``; with it, each is redrawn uniformly between the
    midpoints to its neighbours (the first and last intervals end at near and far). ``bins`` are then
    those intervals' edges (near, the midpoints, far).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples: expected >= 1, got {n_samples}")
    if isinstance(near, torch.Tensor):
        dtype, device = near.dtype, near.device
    near = torch.as_tensor(near, dtype=dtype, device=device)
    far = torch.as_tensor(far, dtype=dtype, device=device)
    shape = torch.broadcast_shapes(near.shape, far.shape, tuple(batch_shape or ()))
    near, far = near.expand(shape), far.expand(shape)
    if endpoints:
        s = torch.linspace(0, 1, n_samples, dtype=dtype, device=device)
        if lindisp:
            z = 1.0 / (1.0 / near.unsqueeze(-1) * (1 - s) + 1.0 / far.unsqueeze(-1) * s)
        else:
            z = near.unsqueeze(-1) * (1 - s) + far.unsqueeze(-1) * s
        mids = 0.5 * (z[..., 1:] + z[..., :-1])
        bins = torch.cat([z[..., :1], mids, z[..., -1:]], -1)
        if not perturb:
            return z, bins
        lo, hi = bins[..., :-1], bins[..., 1:]
        if u is None:
            u = torch.rand(lo.shape, dtype=dtype, device=device, generator=generator)
        return lo + (hi - lo) * u, bins
    s = torch.linspace(0, 1, n_samples + 1, dtype=dtype, device=device)
    if lindisp:
        bins = 1.0 / (1.0 / near.unsqueeze(-1) * (1 - s) + 1.0 / far.unsqueeze(-1) * s)
    else:
        bins = near.unsqueeze(-1) + (far - near).unsqueeze(-1) * s
    lo, hi = bins[..., :-1], bins[..., 1:]
    if perturb:
        if u is None:
            u = torch.rand(lo.shape, dtype=dtype, device=device, generator=generator)
    else:
        u = torch.full_like(lo, 0.5)
    return lo + (hi - lo) * u, bins


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, *,
               deterministic: bool = False, generator: torch.Generator | None = None,
               eps: float = 1e-5, u: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF sampling of a piecewise-constant PDF (NeRF eq. 5, hierarchical sampling).

    bins (..., M + 1) edges, weights (..., M) non-negative (not necessarily normalised).
    Returns ``n_samples`` sorted positions (..., n_samples), detached (the NeRF code stops the
    gradient through the proposal). ``deterministic`` uses evenly spaced CDF levels; ``u``
    (..., n_samples) gives the random CDF levels instead of drawing them here.
    """
    check_tensor("bins", bins, (None,), floating=True)
    check_tensor("weights", weights, (bins.shape[-1] - 1,), floating=True)
    if weights.shape[:-1] != bins.shape[:-1]:
        raise ShapeError(f"weights: expected shape {(*bins.shape[:-1], bins.shape[-1] - 1)}, "
                         f"got {tuple(weights.shape)}")
    bins, weights = bins.detach(), weights.detach()
    w = weights.clamp_min(0) + eps  # avoids NaN on all-zero rays: falls back to uniform
    pdf = w / w.sum(-1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)  # (..., M + 1)
    shape = (*cdf.shape[:-1], n_samples)
    if u is not None and not deterministic:
        u = u.to(bins.dtype)
    elif deterministic:
        u = torch.linspace(0, 1, n_samples, dtype=bins.dtype, device=bins.device).expand(shape)
    else:
        u = torch.rand(shape, dtype=bins.dtype, device=bins.device, generator=generator)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    c0, c1 = cdf.gather(-1, below), cdf.gather(-1, above)
    b0, b1 = bins.gather(-1, below), bins.gather(-1, above)
    denom = torch.where(c1 - c0 < 1e-10, torch.ones_like(c0), c1 - c0)
    return b0 + (u - c0) / denom * (b1 - b0)


def hierarchical_samples(t_coarse: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor,
                         n_fine: int, *, deterministic: bool = False,
                         generator: torch.Generator | None = None):
    """Fine samples from the coarse weights, merged with the coarse ones and sorted (NeRF's fine
    network sees all N_c + N_f samples). Returns ``(t_all (..., N_c + N_f), t_fine (..., N_f))``."""
    t_fine = sample_pdf(bins, weights, n_fine, deterministic=deterministic, generator=generator)
    t_all, _ = torch.sort(torch.cat([t_coarse.detach(), t_fine], -1), -1)
    return t_all, t_fine


def points_along_rays(rays_o: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x = o + t d: rays (..., 3), t (..., N) -> points (..., N, 3)."""
    check_tensor("rays_o", rays_o, (3,), floating=True)
    check_tensor("rays_d", rays_d, (3,), floating=True)
    check_tensor("t", t, (None,), floating=True)
    if t.shape[:-1] != rays_o.shape[:-1]:
        raise ShapeError(f"t: expected shape {(*rays_o.shape[:-1], 'N')} (rays + samples), got {tuple(t.shape)}")
    return rays_o.unsqueeze(-2) + t.unsqueeze(-1) * rays_d.unsqueeze(-2)
