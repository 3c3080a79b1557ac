"""Multiresolution hash encoding (Instant-NGP, Mueller et al. 2022, Sec. 3).

A point x in [0, 1]^3 is looked up on L grids of growing resolution N_l. On each level the 8
vertices of the cell holding x index a table of F-dim feature vectors: densely (one row per vertex)
on coarse levels where (N_l + 1)^3 <= T, through the spatial hash
``h(v) = (v_x * 1) xor (v_y * 2654435761) xor (v_z * 805459861) mod T`` (uint32 arithmetic)
elsewhere. The features are trilinearly interpolated and the L levels concatenated: (N, L*F).

Two implementations with the same results:

- :func:`hash_encode_reference`: pure PyTorch, readable, differentiable by autograd (table and x);
- the compiled kernels (``csrc/hashgrid_cpu.cpp``, CUDA twin ``csrc/hashgrid_cuda.cu``) wrapped
  in :class:`HashEncodeFunction`, built on first use (see :mod:`aware3d.kernels._build`).

:func:`hash_encode` picks one (``backend="auto"`` prefers the compiled kernels and falls back to
the reference with one warning); :class:`HashGrid` is the module with the paper's defaults.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import nn

from aware3d.kernels import _build
from aware3d.render._checks import ShapeError, check_tensor

__all__ = [
    "HASH_PRIMES", "grid_resolutions", "level_table_sizes", "level_is_dense", "hash_index",
    "dense_index", "clamp_unit", "corner_indices", "hash_encode_reference", "hash_encode",
    "HashEncodeFunction", "HashGrid",
]

#: Per-axis primes of the spatial hash (pi_1 = 1 keeps neighbouring x in nearby rows).
HASH_PRIMES = (1, 2654435761, 805459861)
_U32 = 0xFFFFFFFF


def grid_resolutions(levels: int = 16, base_res: int = 16, max_res: int = 2048,
                     scale: float = 1.0) -> list[int]:
    """Per-level grid resolutions N_l = floor(N_min * b^l), b = exp((ln N_max - ln N_min)/(L-1)).

    ``max_res`` is multiplied by ``scale`` (the paper's N_max = 2048 x scene scale). The exponent
    is evaluated in float64 with a 1e-9 tolerance so the last level is exactly N_max (a plain
    ``16 * b**15`` lands on 2047.9999...).
    """
    if levels < 1 or base_res < 1:
        raise ValueError(f"levels and base_res must be >= 1, got {levels}, {base_res}")
    n_max = max_res * scale
    if n_max < base_res:
        raise ValueError(f"max_res * scale ({n_max}) must be >= base_res ({base_res})")
    if levels == 1:
        return [int(base_res)]
    log_b = (math.log(n_max) - math.log(base_res)) / (levels - 1)
    return [int(math.floor(base_res * math.exp(l * log_b) + 1e-9)) for l in range(levels)]


def level_is_dense(resolution: int, table_size: int) -> bool:
    """A level indexes its table densely when all its (N_l + 1)^3 vertices fit in T rows."""
    return (resolution + 1) ** 3 <= table_size


def level_table_sizes(resolutions: Sequence[int], table_size: int) -> list[int]:
    """Rows each level actually uses: (N_l + 1)^3 for dense levels, T for hashed ones.

    The table tensor is still (L, T, F); rows beyond a dense level's size are never read.
    """
    return [min((int(r) + 1) ** 3, int(table_size)) for r in resolutions]


def hash_index(v: torch.Tensor, table_size: int) -> torch.Tensor:
    """Spatial hash of integer vertices ``v (..., 3)``: xor_i (v_i * pi_i) mod T.

    Products are taken in int64 and reduced to their low 32 bits, which is exactly the wrap-around
    of the paper's uint32 arithmetic (the vertex coordinates are < 2^24, so nothing overflows int64).
    """
    v = v.long()
    h = (v[..., 0] * HASH_PRIMES[0]) & _U32
    h = h ^ ((v[..., 1] * HASH_PRIMES[1]) & _U32)
    h = h ^ ((v[..., 2] * HASH_PRIMES[2]) & _U32)
    return h % table_size


def dense_index(v: torch.Tensor, resolution: int) -> torch.Tensor:
    """Row of vertex ``v (..., 3)`` on a dense level: x + y (N+1) + z (N+1)^2 (x fastest)."""
    v = v.long()
    side = resolution + 1
    return v[..., 0] + v[..., 1] * side + v[..., 2] * side * side


def clamp_unit(x: torch.Tensor) -> torch.Tensor:
    """x clamped to [0, 1] with an explicit gradient rule: 1 where 0 <= x <= 1 (the faces x = 0
    and x = 1 included), 0 outside (and for NaN).

    The compiled kernels use the same rule. It is written out rather than taken from
    ``torch.clamp``, whose gradient exactly at the bounds changed between torch versions (2.13
    passes it, 2.14 gives 0). Passing it at the faces gives the one-sided derivative from inside
    the box: x = 1 lies in the last cell, whose interpolation is differentiable up to its face.
    """
    inside = (x >= 0) & (x <= 1)
    return torch.where(inside, x, x.detach().clamp(0.0, 1.0))


def corner_indices(x: torch.Tensor, resolution: int, table_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows and trilinear weights of the 8 cell corners of points ``x (N, 3)`` on one level.

    Returns ``rows (N, 8)`` int64 and ``weights (N, 8)``; corner c has offset (c & 1, c >> 1 & 1,
    c >> 2 & 1). x is clamped to [0, 1]; x = 1 falls in the last cell with weight 1 on its upper
    corner. The weights are differentiable w.r.t. x (through the fractional position), with the
    rule of :func:`clamp_unit`: the gradient passes where 0 <= x <= 1 (faces included), 0 outside.
    """
    pos = clamp_unit(x) * resolution
    base = torch.floor(pos).detach().clamp(max=resolution - 1)
    frac = pos - base  # (N, 3), in [0, 1]
    dense = level_is_dense(resolution, table_size)
    rows, weights = [], []
    for c in range(8):
        offset = torch.tensor([c & 1, (c >> 1) & 1, (c >> 2) & 1], device=x.device)
        v = base.long() + offset
        rows.append(dense_index(v, resolution) if dense else hash_index(v, table_size))
        w = [frac[:, a] if offset[a] else 1.0 - frac[:, a] for a in range(3)]
        weights.append(w[0] * w[1] * w[2])
    return torch.stack(rows, dim=1), torch.stack(weights, dim=1)


def _check_inputs(x: torch.Tensor, table: torch.Tensor, resolutions: Sequence[int] | torch.Tensor
                  ) -> list[int]:
    check_tensor("x", x, (3,), floating=True)
    check_tensor("table", table, (None, None, None), floating=True)
    if table.dim() != 3:
        raise ShapeError(f"table: expected shape (L, T, F), got {tuple(table.shape)}")
    res = [int(r) for r in (resolutions.tolist() if torch.is_tensor(resolutions) else resolutions)]
    if len(res) != table.shape[0]:
        raise ShapeError(f"resolutions: expected {table.shape[0]} values (one per level of table "
                         f"{tuple(table.shape)}), got {len(res)}")
    return res


def hash_encode_reference(x: torch.Tensor, table: torch.Tensor,
                          resolutions: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Hash encoding in plain PyTorch (the reference the compiled kernels are tested against).

    Args:
        x: (..., 3) points in [0, 1]^3 (clamped).
        table: (L, T, F) feature tables.
        resolutions: L grid resolutions N_l (see :func:`grid_resolutions`).

    Returns:
        (..., L*F) features, level-major (level 0's F features first). Differentiable w.r.t.
        ``table`` and ``x`` by autograd; the x gradient is 0 outside [0, 1] and passes on the
        faces x = 0 and x = 1 (:func:`clamp_unit`), as in the compiled kernels.
    """
    res = _check_inputs(x, table, resolutions)
    lead = x.shape[:-1]
    xf = x.reshape(-1, 3).to(table.dtype)
    T = table.shape[1]
    feats = []
    for level, r in enumerate(res):
        rows, w = corner_indices(xf, r, T)  # (N, 8)
        corner_feats = table[level][rows]  # (N, 8, F)
        feats.append((w.unsqueeze(-1) * corner_feats).sum(dim=1))  # Eq. trilinear interpolation
    return torch.cat(feats, dim=-1).reshape(*lead, len(res) * table.shape[2])


class HashEncodeFunction(torch.autograd.Function):
    """Autograd wrapper of the compiled kernels: forward, and backward to ``table`` (and ``x``).

    The CPU table gradient is accumulated level by level (one thread per level, no atomics);
    the CUDA one uses atomic adds.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, table: torch.Tensor, resolutions: torch.Tensor
                ) -> torch.Tensor:
        ops = _build.require_extension(x.device)
        x = x.contiguous()
        table = table.contiguous()
        ctx.save_for_backward(x, table, resolutions)
        return ops.hash_encode_forward(x, table, resolutions)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, table, resolutions = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_x or need_table):
            return None, None, None
        ops = _build.require_extension(x.device)
        g_table, g_x = ops.hash_encode_backward(grad_out.contiguous(), x, table, resolutions,
                                                need_table, need_x)
        return (g_x if need_x else None), (g_table if need_table else None), None


@functools.lru_cache(maxsize=64)
def _resolution_tensor(res: tuple[int, ...]) -> torch.Tensor:
    # Always a CPU tensor: both the CPU kernels and the CUDA launches read the L resolutions on
    # the host (the CUDA op refuses a GPU tensor), so no call copies them from the GPU.
    return torch.tensor(res, dtype=torch.int64)


def hash_encode(x: torch.Tensor, table: torch.Tensor, resolutions: Sequence[int] | torch.Tensor,
                backend: str = "auto") -> torch.Tensor:
    """Multiresolution hash encoding of ``x (..., 3)`` with ``table (L, T, F)`` -> (..., L*F).

    ``backend``: "compiled" (raise :class:`~aware3d.kernels._build.CompiledBackendUnavailable` if
    the kernels cannot be built), "reference" (pure PyTorch), or "auto" (compiled when it builds,
    else the reference with one warning per process). Results agree to ~1e-6 (float32).
    """
    if backend not in ("auto", "compiled", "reference"):
        raise ValueError(f"backend must be 'auto', 'compiled' or 'reference', got {backend!r}")
    res = _check_inputs(x, table, resolutions)
    if backend == "reference":
        return hash_encode_reference(x, table, res)
    if x.device != table.device:
        raise ShapeError(f"x and table must be on one device: x on {x.device}, table on "
                         f"{table.device}")
    if backend == "auto" and _build.get_extension(x.device) is None:
        return hash_encode_reference(x, table, res)
    lead = x.shape[:-1]
    xf = x.reshape(-1, 3).to(table.dtype)
    out = HashEncodeFunction.apply(xf, table, _resolution_tensor(tuple(res)))
    return out.reshape(*lead, out.shape[-1])


class HashGrid(nn.Module):
    """Learned multiresolution hash grid (paper defaults: L=16, F=2, T=2^19, N_min=16,
    N_max=2048 x scale, table init U(-1e-4, 1e-4)).

    ``forward(x)`` maps points in [0, 1]^3 (..., 3) to (..., out_dim) features, out_dim = L*F.
    Points in a scene's box are mapped to [0, 1]^3 by the caller (e.g. a field with an aabb).
    """

    def __init__(self, levels: int = 16, features_per_level: int = 2, log2_table_size: int = 19,
                 base_res: int = 16, max_res: int = 2048, scale: float = 1.0,
                 init_scale: float = 1e-4, backend: str = "auto"):
        super().__init__()
        self.levels = levels
        self.features_per_level = features_per_level
        self.table_size = 2 ** log2_table_size
        self.backend = backend
        self.resolutions = grid_resolutions(levels, base_res, max_res, scale)
        self.register_buffer("_res", torch.tensor(self.resolutions, dtype=torch.int64),
                             persistent=False)
        self.table = nn.Parameter(
            torch.empty(levels, self.table_size, features_per_level).uniform_(-init_scale,
                                                                              init_scale))

    @property
    def out_dim(self) -> int:
        return self.levels * self.features_per_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the Python list, not the _res buffer: reading a GPU buffer would sync every call
        return hash_encode(x, self.table, self.resolutions, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, features_per_level={self.features_per_level}, "
                f"table_size=2^{int(math.log2(self.table_size))}, "
                f"resolutions={self.resolutions[0]}..{self.resolutions[-1]}, "
                f"backend={self.backend!r}")
