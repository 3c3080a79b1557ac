"""Multiresolution hash encoding: index formulas, the reference, and the compiled kernels.

The compiled backend is built once per session into the shared build cache (later runs load it in
about a second). Tests of the compiled kernels skip only when no C++ compiler exists; a build that
fails for another reason fails them.
"""
from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from aware3d.kernels import _build
from aware3d.kernels.hashgrid import (HashGrid, corner_indices, dense_index, grid_resolutions,
                                      hash_encode, hash_encode_reference, hash_index,
                                      level_is_dense, level_table_sizes)


@pytest.fixture(scope="module")
def compiled():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine: the compiled backend cannot be built")
    return _build.require_extension("cpu")


def test_grid_resolutions_paper_values():
    # L=16, N_min=16, N_max=2048: b = exp(ln(128)/15) = 1.3819; N_l = floor(16 b^l).
    # By hand: 16 b^1 = 22.11 -> 22, 16 b^2 = 30.56 -> 30, 16 b^5 = 80.0... -> 80, last = 2048.
    res = grid_resolutions(16, 16, 2048)
    assert len(res) == 16
    assert res[:3] == [16, 22, 30]
    assert res[5] == 80
    assert res[-1] == 2048  # exactly N_max (a naive float power gives 2047)
    assert grid_resolutions(16, 16, 2048, scale=2.0)[-1] == 4096


def test_dense_levels_and_table_sizes():
    # T = 2^19 = 524288. (58+1)^3 = 205379 <= T: dense; (80+1)^3 = 531441 > T: hashed.
    assert level_is_dense(58, 2 ** 19)
    assert not level_is_dense(80, 2 ** 19)
    res = grid_resolutions(16, 16, 2048)
    dense = [level_is_dense(r, 2 ** 19) for r in res]
    assert dense == [True] * 5 + [False] * 11
    assert level_table_sizes([16, 2048], 2 ** 19) == [17 ** 3, 2 ** 19]  # 4913 rows, then T


def test_hash_index_matches_hand_computation():
    # h = x*1 xor (y*2654435761 mod 2^32) xor (z*805459861 mod 2^32), then mod T.
    # (3,5,7): 5*2654435761 mod 2^32 = 387276917, 7*805459861 mod 2^32 = 1343251731,
    #          3 ^ 387276917 ^ 1343251731 = 1191511397; mod 2^19 = 329061; mod 1000003 = 507824.
    # (1,1,1): 1 ^ 2654435761 ^ 805459861 = 2922720805; mod 2^19 = 339493.
    # (2047,2048,1000): 2047 ^ 3150809088 ^ 2300976648 = 854299127; mod 2^19 = 233975.
    v = torch.tensor([[3, 5, 7], [1, 1, 1], [2047, 2048, 1000]])
    assert hash_index(v, 2 ** 19).tolist() == [329061, 339493, 233975]
    assert hash_index(v[:1], 1000003).tolist() == [507824]  # non-power-of-two T


def test_dense_index_and_corner_rows():
    # Resolution 16 (17 vertices per axis): vertex (2, 3, 4) -> 2 + 3*17 + 4*289 = 1209.
    assert dense_index(torch.tensor([2, 3, 4]), 16).item() == 1209
    # x = (2.25, 3.5, 4.75)/16 lies in cell (2, 3, 4); corner 7 = (3, 4, 5) -> 3 + 68 + 1445 = 1516
    # with weight 0.25 * 0.5 * 0.75 = 0.09375; corner 0 weight 0.75 * 0.5 * 0.25 = 0.09375.
    x = torch.tensor([[2.25, 3.5, 4.75]]) / 16
    rows, w = corner_indices(x, 16, 2 ** 19)
    assert rows[0, 0].item() == 1209 and rows[0, 7].item() == 1516
    assert w[0, 7].item() == pytest.approx(0.09375) and w[0, 0].item() == pytest.approx(0.09375)
    assert w.sum().item() == pytest.approx(1.0)


def test_reference_reproduces_linear_function_on_dense_level():
    # Table holds f(v) = 2 + 3 vx/N - 5 vy/N + 7 vz/N at each vertex of a dense level (N = 16);
    # trilinear interpolation of a linear function is exact, so the encoding equals f(x) to
    # float32 rounding (< 1e-5) at any x, including the faces x = 0 and x = 1.
    N, T = 16, 17 ** 3
    g = torch.arange(N + 1, dtype=torch.float64) / N
    vx, vy, vz = torch.meshgrid(g, g, g, indexing="ij")
    f = 2 + 3 * vx - 5 * vy + 7 * vz  # [x, y, z] -> row x + 17 y + 289 z
    table = f.permute(2, 1, 0).reshape(1, T, 1).float()
    x = torch.cat([torch.rand(200, 3, generator=torch.Generator().manual_seed(0)),
                   torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5]])])
    want = 2 + 3 * x[:, 0] - 5 * x[:, 1] + 7 * x[:, 2]
    got = hash_encode_reference(x, table, [N])[:, 0]
    assert torch.allclose(got, want, atol=1e-5)


def test_reference_gradcheck_float64():
    # Tiny table (2 levels: one dense, one hashed, T = 16, F = 2); points away from cell faces so
    # the trilinear weights are smooth in x. Both table and x gradients are checked.
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(2, 16, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    x = (torch.rand(4, 3, dtype=torch.float64, generator=gen) * 0.8 + 0.1).requires_grad_(True)
    res = [1, 3]  # (1+1)^3 = 8 <= 16: dense; (3+1)^3 = 64 > 16: hashed
    assert torch.autograd.gradcheck(lambda t, p: hash_encode_reference(p, t, res), (table, x))


def _random_case(n=3000, seed=0):
    # Paper L, F and resolutions with T = 2^16 (keeps the test light): levels 16-30 dense, the
    # other 13 hashed.
    gen = torch.Generator().manual_seed(seed)
    res = grid_resolutions(16, 16, 2048)
    table = (torch.randn(16, 2 ** 16, 2, generator=gen) * 0.1).requires_grad_(True)
    x = torch.rand(n, 3, generator=gen)
    x[0] = 0.0
    x[1] = 1.0
    x[2, 0], x[3, 1], x[4, 2] = 1.0, 0.0, 1.0  # faces
    x[5] = torch.tensor([0.5, 0.25, 0.125])  # vertices of coarse levels (integer positions)
    return res, table, x.requires_grad_(True)


def test_compiled_matches_reference_forward_and_backward(compiled):
    # Same index arithmetic and float32 weights: forward agrees to 1e-5 (measured ~5e-8), table
    # gradient to 1e-5; the x gradient sums 16 levels of terms scaled by N_l up to 2048, so it is
    # compared relative to its magnitude (1e-5 of the largest entry).
    res, table, x = _random_case()
    ref = hash_encode(x, table, res, backend="reference")
    out = hash_encode(x, table, res, backend="compiled")
    assert out.shape == (3000, 32)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)
    g = torch.randn_like(ref)
    gt_ref, gx_ref = torch.autograd.grad(ref, (table, x), g)
    gt_c, gx_c = torch.autograd.grad(out, (table, x), g)
    assert torch.allclose(gt_c, gt_ref, atol=1e-5, rtol=0)
    assert torch.allclose(gx_c, gx_ref, atol=1e-5 * gx_ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_x_gradient_rule_at_faces_by_hand(request, backend):
    # Gradient rule of the clamp to [0, 1], pinned by hand (not by torch.clamp's gradient, which
    # at the bounds is 1 in torch 2.13 and 0 in 2.14): the x-gradient passes on the faces x = 0
    # and x = 1 and is 0 outside. A dense level (N = 4) holds f(v) = 2 + 3 vx - 5 vy + 7 vz at
    # its vertices; trilinear interpolation of a linear function is exact, so inside the box
    # (faces included) d out / d x = (3, -5, 7); a coordinate outside [0, 1] gets 0.
    if backend == "compiled":
        request.getfixturevalue("compiled")
    N, T = 4, 5 ** 3
    g = torch.arange(N + 1, dtype=torch.float64) / N
    vx, vy, vz = torch.meshgrid(g, g, g, indexing="ij")
    table = (2 + 3 * vx - 5 * vy + 7 * vz).permute(2, 1, 0).reshape(1, T, 1).float()
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.3, 0.0],
                      [-0.25, 1.0, 1.5], [1.5, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    out = hash_encode(x, table, [N], backend=backend)
    (gx,) = torch.autograd.grad(out.sum(), x)
    want = torch.tensor([[3.0, -5.0, 7.0], [3.0, -5.0, 7.0], [3.0, -5.0, 7.0], [3.0, -5.0, 7.0],
                         [0.0, -5.0, 0.0], [0.0, -5.0, 0.0], [3.0, -5.0, 7.0]])
    assert torch.allclose(gx, want, atol=1e-4, rtol=0), gx
    # The forward clamps: (-0.25, 1, 1.5) is looked up at (0, 1, 1) -> 2 - 5 + 7 = 4.
    assert out[4, 0].item() == pytest.approx(4.0, abs=1e-5)


def test_compiled_gradcheck_float64(compiled):
    # The kernels are templated on the dtype; in float64 their analytic table/x gradients pass
    # torch's finite-difference check like the reference's.
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(2, 16, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    x = (torch.rand(4, 3, dtype=torch.float64, generator=gen) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t, p: hash_encode(p, t, [1, 3], backend="compiled"), (table, x))


def test_compiled_table_gradient_is_deterministic(compiled):
    # One thread per level, points summed in order: two runs give bitwise equal gradients.
    res, table, x = _random_case(n=2000, seed=3)
    x = x.detach()
    g = torch.randn(2000, 32)
    a = torch.autograd.grad(hash_encode(x, table, res, backend="compiled"), table, g)[0]
    b = torch.autograd.grad(hash_encode(x, table, res, backend="compiled"), table, g)[0]
    assert torch.equal(a, b)


def test_fallback_when_compiled_backend_unavailable(monkeypatch):
    # Simulate a machine without a compiler: auto falls back to the reference (same numbers),
    # warning exactly once for two calls; "compiled" raises a clear error.
    def no_compiler(kind):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(_build, "_compile", no_compiler)
    _build.reset_cache()
    try:
        res, table, x = _random_case(n=64, seed=4)
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            a = hash_encode(x, table, res)
            b = hash_encode(x, table, res)
        msgs = [str(w.message) for w in rec if "aware3d" in str(w.message)]
        assert len(msgs) == 1 and "falling back" in msgs[0] and "no C++ compiler" in msgs[0]
        assert torch.equal(a, hash_encode_reference(x, table, res)) and torch.equal(a, b)
        with pytest.raises(_build.CompiledBackendUnavailable, match="no C\\+\\+ compiler"):
            hash_encode(x, table, res, backend="compiled")
    finally:
        _build.reset_cache()  # the next user rebuilds/loads the real extension


def test_hashgrid_module_defaults():
    # Paper defaults: L=16, F=2 -> out_dim 32; T=2^19; init in [-1e-4, 1e-4].
    grid = HashGrid(backend="reference")
    assert grid.out_dim == 32
    assert tuple(grid.table.shape) == (16, 2 ** 19, 2)
    assert grid.table.abs().max().item() <= 1e-4
    assert grid.resolutions[0] == 16 and grid.resolutions[-1] == 2048
    y = grid(torch.rand(4, 5, 3))
    assert y.shape == (4, 5, 32)


def test_bad_shapes_name_the_argument():
    from aware3d.render._checks import ShapeError
    with pytest.raises(ShapeError, match="x: expected shape"):
        hash_encode(torch.rand(4, 2), torch.zeros(1, 8, 2), [1], backend="reference")
    with pytest.raises(ShapeError, match="resolutions"):
        hash_encode(torch.rand(4, 3), torch.zeros(2, 8, 2), [1], backend="reference")
