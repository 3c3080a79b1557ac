"""Occupancy grid, ray marching to packed samples, and packed volume-rendering weights
(Instant-NGP, Mueller et al. 2022, Sec. 5.2 / App. E).

- :class:`OccupancyGrid`: a res^3 grid over an axis-aligned box holding an exponential moving
  average of density (refreshed every 16 steps from the decayed value and new density samples)
  and the bitfield of cells above a threshold.
- :func:`march_rays`: steps along each ray inside the box and keeps the samples whose midpoint is
  in an occupied cell; returns them *packed* (``ray_indices, t_starts, t_ends``, sorted by ray then
  t). The compiled kernel jumps over empty cells; it emits exactly the reference's samples.
- :func:`render_weights_packed`: transmittance and weights of packed samples (segmented exclusive
  scan per ray), forward and backward compiled, plus :func:`alive_mask` for early termination
  (T < 1e-4), which the renderer applies.

Sample definition (shared by both backends, float32): with t_min/t_max the ray's [near, far]
clipped to the box and dt the step,
``t0_k = t_min + k * dt`` (constant step) or ``t0_{k+1} = t0_k + clamp(cone * t0_k, dt, dt_max)``
(exponential stepping, ``cone_angle > 0``), ``t1_k = min(t0_k + step, t_max)``, kept while
``t0_k < t_max`` and the cell of ``o + (t0_k + t1_k) / 2 * d`` is occupied, at most
``max_samples_per_ray`` per ray.

Contracted grids (``OccupancyGrid(..., contract=True)``, unbounded scenes): the grid covers
mip-NeRF 360's contracted space (Barron et al. 2022, L-inf version as in nerfacto) of
``u = (x - c) / h`` (c, h: centre and half side of the inner box),
``contract(u) = u`` for ``||u||_inf <= 1``, else ``(2 - 1/||u||_inf) u / ||u||_inf``: the cube
[-2, 2]^3 holds all of space. Rays are not clipped to a box ([near, far] as given); the steps are
``t0_{k+1} = t0_k + clamp(max(cone * t0_k, dt * max(||u(t0_k)||_inf, 1)^2), dt, dt_max)``
(``contract_steps=True``: beyond the inner box a step grows as ||u||^2, so it is roughly uniform
in contracted space, as the derivative of 2 - 1/r is 1/r^2; ``False``: only the cone term), and a
sample is kept when the cell of ``contract(u(tm))`` is occupied.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from aware3d.kernels import _build
from aware3d.render._checks import ShapeError, check_leading, check_tensor
from aware3d.render.volume import render_weights_packed_reference as _core_packed_reference

__all__ = ["contract", "uncontract", "contraction_jacobian", "OccupancyGrid", "ray_aabb_intersect", "march_rays", "march_rays_reference",
           "ray_offsets", "render_weights_packed", "render_weights_packed_reference",
           "alive_mask"]


def _backend_ok(backend: str) -> None:
    if backend not in ("auto", "compiled", "reference"):
        raise ValueError(f"backend must be 'auto', 'compiled' or 'reference', got {backend!r}")


def _use_compiled(backend: str, device: torch.device) -> bool:
    _backend_ok(backend)
    if backend == "reference":
        return False
    if backend == "compiled":
        _build.require_extension(device)
        return True
    return _build.get_extension(device) is not None


# --------------------------------------------------------------------------------------------
# Scene contraction
# --------------------------------------------------------------------------------------------
def contract(u: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's contraction with the L-inf norm: ``u`` where ``||u||_inf <= 1``, else
    ``(2 - 1/||u||_inf) * u / ||u||_inf``; maps R^3 into the cube [-2, 2]^3, continuously.
    The float32 operations are those of the marching kernels."""
    n = u.abs().amax(dim=-1, keepdim=True)
    safe = n.clamp_min(1.0)
    return torch.where(n > 1, ((2 - 1 / safe) * u) / safe, u)


def uncontract(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`contract` for ``||y||_inf < 2``: ``u = y / (n (2 - n))`` where n > 1."""
    n = y.abs().amax(dim=-1, keepdim=True)
    safe = n.clamp(1.0, 2.0 - 1e-6)
    return torch.where(n > 1, y / (safe * (2 - safe)), y)


def contraction_jacobian(y: torch.Tensor) -> torch.Tensor:
    """(...,) radial stretch of world length per contracted length at contracted points ``y``
    (..., 3), in units of the inner box's half side: ``max(||u||_inf, 1)^2`` (the derivative of
    ``2 - 1/r`` is ``1/r^2``). A world density times this is the density per contracted length
    (times h), what a contracted occupancy grid keeps."""
    n = y.abs().amax(dim=-1).clamp(1.0, 2.0 - 1e-6)
    r = 1.0 / (2.0 - n)
    return r * r


# --------------------------------------------------------------------------------------------
# Occupancy grid
# --------------------------------------------------------------------------------------------
class OccupancyGrid(nn.Module):
    """Density EMA grid and occupancy bitfield over ``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)``.

    Buffers: ``aabb (6,)``, ``density (res, res, res)`` (EMA of sigma, indexed [ix, iy, iz]),
    ``binary (res, res, res)`` bool. Every cell starts occupied so marching before the first
    :meth:`update` samples the whole box.

    ``contract=True`` (unbounded scenes): ``aabb`` is the inner box (world; buffer ``inner``) and
    the grid covers the contracted space [-2, 2]^3 of ``u = (x - c) / h`` (see :func:`contract`;
    ``self.aabb`` is then (-2, -2, -2, 2, 2, 2), in grid coordinates); ``density`` keeps
    ``sigma * contraction_jacobian``, the density per contracted length, so one threshold on
    ``density * dt`` fits steps that grow as ||u||^2.
    """

    def __init__(self, aabb: Sequence[float] | torch.Tensor = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0),
                 resolution: int = 128, contract: bool = False):
        super().__init__()
        aabb_t = torch.as_tensor(aabb, dtype=torch.float32).flatten()
        if aabb_t.numel() != 6 or not bool((aabb_t[3:] > aabb_t[:3]).all()):
            raise ValueError(f"aabb must be (xmin, ymin, zmin, xmax, ymax, zmax) with max > min, "
                             f"got {aabb_t.tolist()}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution = int(resolution)
        self.contract = bool(contract)
        r = self.resolution
        if self.contract:
            self.register_buffer("inner", aabb_t)
            aabb_t = torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0])
        self.register_buffer("aabb", aabb_t)
        self.register_buffer("density", torch.zeros(r, r, r))
        self.register_buffer("binary", torch.ones(r, r, r, dtype=torch.bool))

    # -- geometry ------------------------------------------------------------------------
    @property
    def center_inv_half(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,), (3,) float32 centre c and 1 / half side of the inner box (contracted grids)."""
        lo, hi = self.inner[:3], self.inner[3:]
        return (lo + hi) * 0.5, 2.0 / (hi - lo)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Grid coordinates of world points: ``contract((x - c) / h)`` or ``x`` itself."""
        if not self.contract:
            return x
        c, ih = self.center_inv_half
        return contract((x.float() - c) * ih)

    def from_grid(self, y: torch.Tensor) -> torch.Tensor:
        """World points of grid coordinates (inverse of :meth:`to_grid`)."""
        if not self.contract:
            return y
        c, ih = self.center_inv_half
        return uncontract(y) / ih + c

    @property
    def cell_scale(self) -> torch.Tensor:
        """(3,) float32 cells per unit length, res / (max - min): cell = floor((x - min) * scale)."""
        return torch.tensor(float(self.resolution), dtype=torch.float32,
                            device=self.aabb.device) / (self.aabb[3:] - self.aabb[:3])

    def cell_indices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell (ix, iy, iz) of points ``x (..., 3)`` (clamped into the grid) and an inside mask."""
        check_tensor("x", x, (3,), floating=True)
        lo, hi = self.aabb[:3], self.aabb[3:]
        x = self.to_grid(x.float())
        ijk = torch.floor((x - lo) * self.cell_scale).long().clamp(0, self.resolution - 1)
        inside = ((x >= lo) & (x <= hi)).all(dim=-1)
        return ijk, inside

    def is_occupied(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) bool: the cell holding each point of ``x (..., 3)`` is occupied (False outside)."""
        ijk, inside = self.cell_indices(x)
        return self.binary[ijk[..., 0], ijk[..., 1], ijk[..., 2]] & inside

    def cell_centers(self) -> torch.Tensor:
        """(res, res, res, 3) world positions of the cell centres."""
        r = self.resolution
        g = (torch.arange(r, device=self.aabb.device, dtype=torch.float32) + 0.5) / r
        u = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1)
        return self.from_grid(self.aabb[:3] + u * (self.aabb[3:] - self.aabb[:3]))

    # -- refresh -------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], step: int, *,
               update_every: int = 16, decay: float = 0.95, threshold: float = 0.01,
               warmup_steps: int = 256, generator: torch.Generator | None = None,
               chunk: int = 2 ** 18, dense_warmup: bool = False) -> bool:
        """Refresh the grid at training ``step`` if ``step % update_every == 0``; return whether it did.

        Paper (App. E.2): every cell's density is decayed by ``decay``; the chosen cells take
        ``max(decayed, sigma(x))`` at one uniformly random point x inside the cell. During the
        first ``warmup_steps`` steps every cell is chosen; afterwards res^3/4 uniformly random
        cells plus res^3/4 random occupied cells. A cell is occupied when its density exceeds
        ``min(threshold, mean density)`` (the mean keeps sparse scenes from emptying out early).
        ``density_fn`` maps world points (M, 3) to densities (M,) or (M, 1); it is called under
        ``no_grad`` in chunks of ``chunk`` points (contracted grids: the points are drawn in
        contracted space and mapped back, and the densities are scaled by the Jacobian).

        ``dense_warmup``: every cell stays occupied until ``warmup_steps`` (densities are still
        tracked), so rays keep sampling the whole box while the field is faint. Slower early steps;
        it keeps a short run on a small, tight scene from pruning a region that would have grown.
        """
        if update_every < 1 or step % update_every != 0:
            return False
        r, dev = self.resolution, self.density.device
        n_cells = r ** 3
        if step < warmup_steps:
            cells = torch.arange(n_cells, device=dev)
        else:
            n = max(1, n_cells // 4)
            uniform = torch.randint(0, n_cells, (n,), device=dev, generator=generator)
            occupied = torch.nonzero(self.binary.flatten()).flatten()
            if occupied.numel() > 0:
                pick = torch.randint(0, occupied.numel(), (n,), device=dev, generator=generator)
                cells = torch.cat([uniform, occupied[pick]])
            else:
                cells = uniform
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], dim=-1).float()
        jitter = torch.rand(ijk.shape, device=dev, generator=generator)
        pts = self.aabb[:3] + (ijk + jitter) / r * (self.aabb[3:] - self.aabb[:3])
        sigma = torch.cat([density_fn(self.from_grid(p)).reshape(-1).float() for p in pts.split(chunk)])
        if self.contract:
            sigma = sigma * contraction_jacobian(pts)
        if sigma.numel() != cells.numel():
            raise ShapeError(f"density_fn: expected {cells.numel()} densities for "
                             f"{cells.numel()} points, got {sigma.numel()}")
        flat = self.density.flatten() * decay
        flat = flat.scatter_reduce(0, cells, sigma, reduce="amax", include_self=True)
        self.density.copy_(flat.view(r, r, r))
        if dense_warmup and step < warmup_steps:
            self.binary.fill_(True)
        else:
            thr = min(float(threshold), float(self.density.mean()))
            self.binary.copy_(self.density > thr)
        return True


# --------------------------------------------------------------------------------------------
# Ray marching
# --------------------------------------------------------------------------------------------
def ray_aabb_intersect(rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit t of rays (R, 3) with the box ``aabb (6,)`` (slab test); t_exit < t_entry
    (or inf) when a ray misses. Axis-parallel rays (d_i = 0) are handled without NaNs."""
    lo, hi = aabb[:3], aabb[3:]
    zero = rays_d == 0
    safe_d = torch.where(zero, torch.ones_like(rays_d), rays_d)
    t1, t2 = (lo - rays_o) / safe_d, (hi - rays_o) / safe_d
    inside = (rays_o >= lo) & (rays_o <= hi)
    inf = torch.full_like(t1, math.inf)
    t_lo = torch.where(zero, torch.where(inside, -inf, inf), torch.minimum(t1, t2))
    t_hi = torch.where(zero, torch.where(inside, inf, -inf), torch.maximum(t1, t2))
    return t_lo.amax(dim=-1), t_hi.amin(dim=-1)


def _prepare(rays_o, rays_d, near, far, occ_grid, step_size, max_step):
    check_tensor("rays_o", rays_o, (3,), floating=True)
    check_tensor("rays_d", rays_d, (3,), floating=True)
    check_leading("rays_o", rays_o, "rays_d", rays_d, 1, 1)
    if rays_o.dim() != 2:
        raise ShapeError(f"rays_o: expected shape (R, 3), got {tuple(rays_o.shape)}")
    if not isinstance(occ_grid, OccupancyGrid):
        raise TypeError(f"occ_grid: expected an OccupancyGrid, got {type(occ_grid).__name__}")
    o, d = rays_o.float().contiguous(), rays_d.float().contiguous()
    R = o.shape[0]
    aabb = occ_grid.aabb.to(o.device)
    near_t = torch.as_tensor(near, dtype=torch.float32, device=o.device).expand(R)
    far_t = torch.as_tensor(far, dtype=torch.float32, device=o.device).expand(R)
    if occ_grid.contract:  # the contracted grid covers all of space: no clipping
        t_min, t_max = near_t.contiguous(), far_t.contiguous()
        inner = _host_copy(occ_grid.inner)  # host copy: no device-to-host sync per call
        side = float((inner[3:] - inner[:3]).max())
        dt_max_default = 1e30
    else:
        t_in, t_out = ray_aabb_intersect(o, d, aabb)
        t_min = torch.maximum(t_in, near_t).contiguous()
        t_max = torch.minimum(t_out, far_t).contiguous()
        box = _host_copy(occ_grid.aabb)  # host copy: no device-to-host sync per call
        side = float((box[3:] - box[:3]).max())
        dt_max_default = math.sqrt(3.0) * side / occ_grid.resolution
    dt = step_size if step_size is not None else math.sqrt(3.0) / 1024.0 * side
    dt_max = max_step if max_step is not None else dt_max_default
    if not dt > 0:
        raise ValueError(f"step_size must be > 0, got {dt}")
    lo = aabb[:3].contiguous()
    scale = occ_grid.cell_scale.to(o.device).contiguous()
    return o, d, t_min, t_max, float(dt), float(max(dt_max, dt)), lo, scale


def march_rays_reference(rays_o, rays_d, t_min, t_max, binary, lo, scale, step, cone_angle,
                         max_step, max_samples, ray_chunk: int = 4096, center=None, inv_half=None,
                         contract_mode: int = 0):
    """Pure-PyTorch marching (the definition of the samples, see the module docstring).

    Arguments as prepared by :func:`march_rays` (float32 tensors, t_min/t_max clipped to the box,
    ``scale = res / (max - min)``). Tests every step's cell, vectorised over rays and steps.
    ``contract_mode``: 0 world grid; 1 contracted grid (``u = (x - center) * inv_half``), cone
    steps; 2 contracted grid, steps also growing as ``max(||u||_inf, 1)^2``.
    """
    dev = rays_o.device
    res = binary.shape[0]
    occ_flat = binary.reshape(-1)
    dt = torch.tensor(step, dtype=torch.float32, device=dev)
    out_r, out_0, out_1 = [], [], []
    if contract_mode:
        center = torch.as_tensor(center, dtype=torch.float32, device=dev)
        inv_half = torch.as_tensor(inv_half, dtype=torch.float32, device=dev)

    def unit(o, d, t):
        # u = (o + t d - c) * ih and ||u||_inf, the kernels' float32 operations
        u = ((o + t.unsqueeze(-1) * d) - center) * inv_half
        return u, u.abs().amax(dim=-1)

    def keep(ray_ids, t0, t1, valid):
        # midpoint cell lookup, identical float32 ops to the C++ kernel
        o, d = rays_o[ray_ids], rays_d[ray_ids]
        tm = (t0 + t1) * 0.5
        x = o.unsqueeze(1) + tm.unsqueeze(-1) * d.unsqueeze(1)
        if contract_mode:
            x = (x - center) * inv_half
            n = x.abs().amax(dim=-1, keepdim=True)
            x = torch.where(n > 1, ((2 - 1 / n) * x) / n, x)
        ijk = torch.floor((x - lo) * scale).long().clamp(0, res - 1)
        flat = (ijk[..., 0] * res + ijk[..., 1]) * res + ijk[..., 2]
        return valid & occ_flat[flat]

    for r0 in range(0, rays_o.shape[0], ray_chunk):
        ids = torch.arange(r0, min(r0 + ray_chunk, rays_o.shape[0]), device=dev)
        tn, tf = t_min[ids], t_max[ids]
        hit = tn < tf
        if not bool(hit.any()):
            continue
        if contract_mode:
            cone = torch.tensor(cone_angle, dtype=torch.float32, device=dev)
            o_c, d_c = rays_o[ids], rays_d[ids]
            cols0, cols1, colsv = [], [], []
            t = tn.clone()
            active = t < tf
            while bool(active.any()):
                stepk = t * cone
                if contract_mode == 2:
                    m = unit(o_c, d_c, t)[1].clamp_min(1.0)
                    stepk = torch.maximum(stepk, dt * (m * m))
                stepk = torch.clamp(stepk, min=step, max=max_step)
                cols0.append(t)
                cols1.append(torch.minimum(t + stepk, tf))
                colsv.append(active)
                nxt = t + stepk
                active = active & (nxt > t) & (nxt < tf)
                t = nxt
            t0, t1, valid = (torch.stack(c, dim=1) for c in (cols0, cols1, colsv))
        elif cone_angle <= 0:
            span = float((tf - tn)[hit].max())
            k_max = int(math.ceil(span / step)) + 2
            k = torch.arange(k_max, device=dev, dtype=torch.float32)
            t0 = tn.unsqueeze(1) + k.unsqueeze(0) * dt  # (R, K): t_min + k * dt
            valid = t0 < tf.unsqueeze(1)
            t1 = torch.minimum(t0 + dt, tf.unsqueeze(1))
        else:
            cone = torch.tensor(cone_angle, dtype=torch.float32, device=dev)
            cols0, cols1, colsv = [], [], []
            t = tn.clone()
            active = t < tf
            while bool(active.any()):
                stepk = torch.clamp(t * cone, min=step, max=max_step)
                cols0.append(t)
                cols1.append(torch.minimum(t + stepk, tf))
                colsv.append(active)
                t = t + stepk
                active = active & (t < tf)
            t0, t1, valid = (torch.stack(c, dim=1) for c in (cols0, cols1, colsv))
        mask = keep(ids, t0, t1, valid)
        mask &= torch.cumsum(mask, dim=1) <= max_samples
        rr, kk = torch.nonzero(mask, as_tuple=True)  # row-major: sorted by ray, then t
        out_r.append(ids[rr])
        out_0.append(t0[rr, kk])
        out_1.append(t1[rr, kk])
    if not out_r:
        empty = torch.zeros(0, device=dev)
        return torch.zeros(0, dtype=torch.long, device=dev), empty, empty.clone()
    return torch.cat(out_r), torch.cat(out_0), torch.cat(out_1)


def _host_copy(t: torch.Tensor) -> torch.Tensor:
    """CPU copy of a small tensor, kept on the tensor itself until it is changed in place (its
    version counter moves) or replaced (``module.to()`` makes new tensors): one device-to-host
    copy per grid, not per call."""
    if t.device.type == "cpu":
        return t.detach()
    cached = getattr(t, "_aware3d_host_copy", None)
    if cached is not None and cached[0] == t._version:
        return cached[1]
    host = t.detach().to("cpu", torch.float32)
    try:
        t._aware3d_host_copy = (t._version, host)
    except (AttributeError, RuntimeError):  # a tensor type without attributes: copy each call
        pass
    return host


def _host_grid_params(occ_grid: "OccupancyGrid"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``lo, scale, center, inv_half`` of :func:`march_rays` as CPU float32 tensors for the CUDA
    op (which reads them on the host), computed with the same float32 operations as
    ``occ_grid.cell_scale`` / ``center_inv_half`` (so the same values) from host copies of the
    grid's box."""
    aabb = _host_copy(occ_grid.aabb).float()
    lo, hi = aabb[:3], aabb[3:]
    scale = torch.tensor(float(occ_grid.resolution), dtype=torch.float32) / (hi - lo)
    if occ_grid.contract:
        inner = _host_copy(occ_grid.inner).float()
        center, inv_half = (inner[:3] + inner[3:]) * 0.5, 2.0 / (inner[3:] - inner[:3])
    else:
        center, inv_half = torch.zeros(3), torch.ones(3)
    return lo.contiguous(), scale.contiguous(), center.contiguous(), inv_half.contiguous()


def march_rays(rays_o: torch.Tensor, rays_d: torch.Tensor, near: float | torch.Tensor,
               far: float | torch.Tensor, occ_grid: OccupancyGrid, step_size: float | None = None,
               max_samples_per_ray: int = 1024, cone_angle: float = 0.0,
               max_step: float | None = None, backend: str = "auto", contract_steps: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """March rays through the occupancy grid; return packed samples in occupied cells.

    Args:
        rays_o, rays_d: (R, 3) origins and unit directions (world frame, same as the grid's aabb).
        near, far: floats or (R,) tensors; marching is further clipped to the grid's box (not
            for a contracted grid, which covers all of space).
        occ_grid: the :class:`OccupancyGrid` whose ``binary`` decides which cells are sampled.
        step_size: dt; default sqrt(3)/1024 x the box's longest side (1024 steps across the
            diagonal of a cube, as in the paper; contracted grids: the inner box's).
        max_samples_per_ray: at most this many samples per ray (the nearest ones).
        cone_angle: > 0 enables exponential stepping, step = clamp(cone_angle * t, dt, max_step)
            (large scenes; the paper uses 1/256); 0 = constant step.
        max_step: cap of the exponential step; default one cell diagonal (contracted grids: none).
        backend: "auto" | "compiled" | "reference" (same samples).
        contract_steps: contracted grids only: steps grow as ``max(||u||_inf, 1)^2`` beyond the
            inner box (about uniform in contracted space); False: only ``cone_angle`` grows them.

    Returns:
        ``ray_indices (S,) int64, t_starts (S,), t_ends (S,)`` float32, sorted by ray then t.
    """
    o, d, t_min, t_max, dt, dt_max, lo, scale = _prepare(rays_o, rays_d, near, far, occ_grid,
                                                         step_size, max_step)
    if max_samples_per_ray < 1:
        raise ValueError(f"max_samples_per_ray must be >= 1, got {max_samples_per_ray}")
    binary = occ_grid.binary.to(o.device)
    if occ_grid.contract:
        mode = 2 if contract_steps else 1
        center, inv_half = (v.to(o.device).contiguous() for v in occ_grid.center_inv_half)
    else:
        mode, center, inv_half = 0, torch.zeros(3, device=o.device), torch.ones(3, device=o.device)
    if _use_compiled(backend, o.device):
        ops = _build.require_extension(o.device)
        if o.device.type == "cuda":  # the CUDA op reads these 3-vectors on the host
            lo, scale, center, inv_half = _host_grid_params(occ_grid)
        return tuple(ops.march_rays(o, d, t_min, t_max, binary.to(torch.uint8).contiguous(),
                                    lo, scale, center, inv_half, mode, dt, float(cone_angle),
                                    dt_max, int(max_samples_per_ray)))
    return march_rays_reference(o, d, t_min, t_max, binary, lo, scale, dt, float(cone_angle),
                                dt_max, int(max_samples_per_ray), center=center,
                                inv_half=inv_half, contract_mode=mode)


# --------------------------------------------------------------------------------------------
# Packed transmittance and weights
# --------------------------------------------------------------------------------------------
def ray_offsets(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """(n_rays + 1,) int64 start of each ray's samples in a packed array sorted by ray."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, dim=0)])


def _check_packed(sigmas, deltas, ray_indices, n_rays):
    check_tensor("sigmas", sigmas, (None,), floating=True)
    if sigmas.dim() != 1:
        raise ShapeError(f"sigmas: expected shape (S,), got {tuple(sigmas.shape)}")
    for name, t in (("deltas", deltas), ("ray_indices", ray_indices)):
        if not isinstance(t, torch.Tensor) or t.shape != sigmas.shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ShapeError(f"{name}: expected shape {tuple(sigmas.shape)} (like sigmas), "
                             f"got {got}")
    if ray_indices.dtype not in (torch.int32, torch.int64):
        raise ShapeError(f"ray_indices: expected an integer tensor, got {ray_indices.dtype}")
    if ray_indices.numel() and ray_indices.device.type == "cpu":
        ri = ray_indices
        if int(ri.min()) < 0 or int(ri.max()) >= n_rays:
            raise ValueError(f"ray_indices must lie in [0, {n_rays}), got [{int(ri.min())}, "
                             f"{int(ri.max())}]")
        if bool((ri[1:] < ri[:-1]).any()):
            raise ValueError("ray_indices must be sorted (samples of a ray contiguous), as "
                             "march_rays returns them")


def render_weights_packed_reference(sigmas: torch.Tensor, deltas: torch.Tensor,
                                    ray_indices: torch.Tensor, n_rays: int
                                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rendering core's packed weights (:func:`aware3d.render.volume.render_weights_packed_reference`)
    after the same input checks as the compiled kernel."""
    _check_packed(sigmas, deltas, ray_indices, n_rays)
    return _core_packed_reference(sigmas, deltas, ray_indices, n_rays)


class _RenderWeightsPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigmas, deltas, offsets):
        ops = _build.require_extension(sigmas.device)
        sigmas, deltas = sigmas.contiguous(), deltas.contiguous()
        weights, trans = ops.render_weights_packed_forward(sigmas, deltas, offsets)
        ctx.save_for_backward(sigmas, deltas, weights, trans, offsets)
        return weights, trans

    @staticmethod
    def backward(ctx, grad_w, grad_t):
        sigmas, deltas, weights, trans, offsets = ctx.saved_tensors
        grad_w = torch.zeros_like(weights) if grad_w is None else grad_w.contiguous()
        grad_t = torch.zeros_like(trans) if grad_t is None else grad_t.contiguous()
        ops = _build.require_extension(sigmas.device)
        g_s, g_d = ops.render_weights_packed_backward(grad_w, grad_t, sigmas, deltas, weights,
                                                      trans, offsets)
        return (g_s if ctx.needs_input_grad[0] else None,
                g_d if ctx.needs_input_grad[1] else None, None)


def render_weights_packed(sigmas: torch.Tensor, deltas: torch.Tensor, ray_indices: torch.Tensor,
                          n_rays: int, backend: str = "auto"
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Volume-rendering weights of packed samples (NeRF Eq. 3, per ray):

    ``T_i = exp(-sum_{j<i} sigma_j delta_j)`` (= exclusive cumprod of 1 - alpha_j),
    ``alpha_i = 1 - exp(-sigma_i delta_i)``, ``w_i = T_i alpha_i``.

    Args:
        sigmas, deltas: (S,) densities and interval lengths (t_ends - t_starts).
        ray_indices: (S,) int ray of each sample, sorted (samples of a ray contiguous, in t order).
        n_rays: number of rays R (rays without samples are allowed).
        backend: "auto" | "compiled" | "reference".

    Returns:
        ``(weights (S,), transmittance (S,))``; differentiable w.r.t. sigmas (and deltas).
    """
    _backend_ok(backend)
    if not _use_compiled(backend, sigmas.device):
        return render_weights_packed_reference(sigmas, deltas, ray_indices, n_rays)
    _check_packed(sigmas, deltas, ray_indices, n_rays)
    offsets = ray_offsets(ray_indices.long(), n_rays)
    # negative densities count as 0, as in the reference: the same torch op, so the same gradient
    # rule (the kernels themselves take sigma as given)
    return _RenderWeightsPacked.apply(sigmas.clamp_min(0), deltas.to(sigmas.dtype), offsets)


def alive_mask(transmittance: torch.Tensor, threshold: float = 1e-4) -> torch.Tensor:
    """Samples still visible: T_i >= threshold. The paper stops a ray once T < 1e-4, so the
    renderer can skip (e.g. not evaluate colour for) the samples where this is False."""
    return transmittance >= threshold
