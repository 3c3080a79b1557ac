"""Volume rendering (NeRF eq. 3), padded layout (..., N) and packed layout (S,) with ray indices.

Notation (../shared/docs/PAPERS.md): samples t_1 < ... < t_N along a ray, spacings delta_i,
alpha_i = 1 - exp(-sigma_i delta_i), exclusive transmittance T_i = prod_{j<i} (1 - alpha_j),
weights w_i = T_i alpha_i, composite C = sum_i w_i c_i + (1 - sum_i w_i) * background.
"""
from __future__ import annotations

import torch

from ._checks import ShapeError, check_tensor

_LOW = (torch.float16, torch.bfloat16)


def _accum_dtype(x: torch.Tensor) -> torch.Tensor:
    """Transmittance is a long product: keep it in fp32 even when a bf16/fp16 network fed it."""
    return x.float() if x.dtype in _LOW else x


#: spacing given to the last sample of a padded ray: "to infinity" as in the NeRF code.
FAR_DELTA = 1e10


def deltas_from_t(t: torch.Tensor, last: float = FAR_DELTA) -> torch.Tensor:
    """Spacings delta_i = t_{i+1} - t_i (..., N); the last sample gets ``last``."""
    check_tensor("t", t, (None,), floating=True)
    d = t[..., 1:] - t[..., :-1]
    return torch.cat([d, torch.full_like(t[..., :1], last)], -1)


def alphas_from_densities(sigmas: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """alpha_i = 1 - exp(-sigma_i delta_i); negative densities count as 0."""
    check_tensor("sigmas", sigmas, (None,), floating=True)
    if sigmas.shape != deltas.shape:
        raise ShapeError(f"deltas: expected shape {tuple(sigmas.shape)} (that of sigmas), "
                         f"got {tuple(deltas.shape)}")
    return -torch.expm1(-(sigmas.clamp_min(0) * deltas))


def transmittance(alphas: torch.Tensor) -> torch.Tensor:
    """Exclusive transmittance T_i = prod_{j<i} (1 - alpha_j) along the last dim.

    Computed as exp(-cumsum(-log1p(-alpha))) shifted by one: the product form in log space is
    stable for long rays and has a clean gradient."""
    check_tensor("alphas", alphas, (None,), floating=True)
    log_t = torch.cumsum(torch.log1p(-alphas.clamp(max=1 - 1e-7)), -1)
    log_t = torch.cat([torch.zeros_like(log_t[..., :1]), log_t[..., :-1]], -1)
    return torch.exp(log_t)


def render_weights(sigmas: torch.Tensor, t: torch.Tensor | None = None, *,
                   deltas: torch.Tensor | None = None):
    """Weights w_i = T_i alpha_i from densities (..., N) and either sample positions ``t`` (..., N)
    (last spacing to infinity) or explicit ``deltas``. Returns ``(weights, transmittance, alphas)``."""
    if deltas is None:
        if t is None:
            raise ValueError("render_weights: pass sample positions t or spacings deltas")
        check_tensor("t", t, (None,), floating=True)
        if t.shape != sigmas.shape:
            raise ShapeError(f"t: expected shape {tuple(sigmas.shape)} (that of sigmas), got {tuple(t.shape)}")
        deltas = deltas_from_t(t)
    a = alphas_from_densities(_accum_dtype(sigmas), _accum_dtype(deltas))
    T = transmittance(a)
    return T * a, T, a


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i v_i: weights (..., N), values (..., N, C) of any channel count -> (..., C)."""
    check_tensor("weights", weights, (None,), floating=True)
    check_tensor("values", values, (weights.shape[-1], None), floating=True)
    if values.shape[:-1] != weights.shape:
        raise ShapeError(f"values: expected shape {(*weights.shape, 'C')} (weights + channels), "
                         f"got {tuple(values.shape)}")
    return (_accum_dtype(weights).unsqueeze(-1) * _accum_dtype(values)).sum(-2)


def expected_depth(weights: torch.Tensor, t: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
    """sum_i w_i t_i (..., ). With ``normalize`` divides by the opacity (depth of the surface the
    ray did hit, ignoring the missing mass)."""
    check_tensor("t", t, tuple(weights.shape[-1:]), floating=True)
    d = (_accum_dtype(weights) * _accum_dtype(t)).sum(-1)
    return d / weights.sum(-1).clamp_min(1e-10) if normalize else d


def opacity(weights: torch.Tensor) -> torch.Tensor:
    """Accumulated opacity sum_i w_i in [0, 1]."""
    return weights.sum(-1)


def apply_background(color: torch.Tensor, acc: torch.Tensor, background) -> torch.Tensor:
    """C + (1 - opacity) * background; ``background`` broadcasts to color (e.g. (3,) or (..., 3))."""
    bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
    return color + (1 - acc).unsqueeze(-1) * bg


def volume_render(sigmas: torch.Tensor, values: torch.Tensor, t: torch.Tensor, *,
                  deltas: torch.Tensor | None = None, background=None) -> dict:
    """Full padded render: ``{"color", "depth", "opacity", "weights", "transmittance"}``.

    sigmas (..., N), values (..., N, C), t (..., N) sample positions (distances along unit rays).
    ``color`` is (..., C); background (if given) is added with the missing opacity.
    """
    w, T, _ = render_weights(sigmas, t, deltas=deltas)
    acc = opacity(w)
    color = composite(w, values)
    if background is not None:
        color = apply_background(color, acc, background)
    return {"color": color, "depth": expected_depth(w, t), "opacity": acc, "weights": w,
            "transmittance": T}


# ---------------------------------------------------------------------------------------------
# Packed layout: samples of all rays in one flat array, sorted by ray, ``ray_indices`` (S,).


def render_weights_packed_reference(sigmas: torch.Tensor, deltas: torch.Tensor,
                                    ray_indices: torch.Tensor, n_rays: int):
    """Packed weights (the pure-PyTorch reference of the compiled kernel in
    :mod:`aware3d.kernels.marching`). sigmas, deltas, ray_indices: (S,), samples sorted by ray.
    Returns ``(weights, transmittance)`` each (S,).

    The samples are scattered into a padded (n_rays, max_len) layout so the exclusive cumulative
    optical depth is a per-row cumsum (a global cumsum minus per-ray offsets would lose precision
    over millions of samples), then gathered back. Differentiable by autograd."""
    check_tensor("sigmas", sigmas, (None,), floating=True)
    for name, v in (("deltas", deltas), ("ray_indices", ray_indices)):
        if v.shape != sigmas.shape:
            raise ShapeError(f"{name}: expected shape {tuple(sigmas.shape)} (that of sigmas), got {tuple(v.shape)}")
    ray_indices = ray_indices.long()
    counts = torch.bincount(ray_indices, minlength=n_rays)
    offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    pos = torch.arange(sigmas.numel(), device=sigmas.device) - offsets[ray_indices]
    max_len = int(counts.max()) if sigmas.numel() else 0
    tau = sigmas.clamp_min(0) * deltas.to(sigmas.dtype)
    padded = tau.new_zeros(n_rays, max_len + 1).index_put((ray_indices, pos + 1), tau)
    T = torch.exp(-torch.cumsum(padded, dim=1)[ray_indices, pos])  # exp(-sum_{j<i} sigma_j delta_j)
    return T * (-torch.expm1(-tau)), T


def accumulate_packed(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Sum per ray: values (S,) or (S, C) -> (n_rays,) or (n_rays, C)."""
    out = values.new_zeros((n_rays, *values.shape[1:]))
    return out.index_add(0, ray_indices, values)


def volume_render_packed(sigmas: torch.Tensor, values: torch.Tensor, t_starts: torch.Tensor,
                         t_ends: torch.Tensor, ray_indices: torch.Tensor, n_rays: int, *,
                         background=None, weights_fn=None) -> dict:
    """Packed render: per-sample sigmas (S,), values (S, C), intervals [t_starts, t_ends) (S,).
    Returns per-ray ``color`` (n_rays, C), ``depth``, ``opacity`` and per-sample ``weights``.
    ``weights_fn`` swaps in a compiled weights kernel with the reference's signature."""
    check_tensor("values", values, (None,), floating=True)
    if values.shape[0] != sigmas.shape[0]:
        raise ShapeError(f"values: expected shape ({sigmas.shape[0]}, C), got {tuple(values.shape)}")
    fn = weights_fn or render_weights_packed_reference
    w, T = fn(sigmas, t_ends - t_starts, ray_indices, n_rays)
    acc = accumulate_packed(w, ray_indices, n_rays)
    color = accumulate_packed(w.unsqueeze(-1) * values, ray_indices, n_rays)
    depth = accumulate_packed(w * 0.5 * (t_starts + t_ends), ray_indices, n_rays)
    if background is not None:
        color = apply_background(color, acc, background)
    return {"color": color, "depth": depth, "opacity": acc, "weights": w, "transmittance": T}
