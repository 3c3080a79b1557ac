"""The CUDA kernels' bodies, run on the CPU, against the CPU kernels and the references; the CUDA
bindings' device checks; and the CUDA dispatch with ``torch.cuda.is_available`` faked.

``csrc/hashgrid_cuda.cu``, ``csrc/marching_cuda.cu`` and ``csrc/bindings_cuda.cpp`` are compiled
as plain C++ with ``AWARE3D_CUDA_EMULATE`` (``csrc/cuda_compat.h``: ``__global__`` / ``__device__``
dropped, ``threadIdx`` / ``blockIdx`` emulated, every launch runs the grid serially) into an op
library ``torch.ops.aware3d_cuda_emu``: the same kernel code and host code (setup, checks,
two-pass marching with its scan) that nvcc builds, minus the GPU. The build is cached by content
next to the real kernel builds (7 s cold on 2 cores, well under a second afterwards); the
tests skip only when there is no C++ compiler.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings

import pytest
import torch

from aware3d.kernels import _build, marching
from aware3d.kernels.hashgrid import grid_resolutions, hash_encode_reference
from aware3d.kernels.marching import OccupancyGrid, ray_offsets

EMU_NAME = "aware3d_cuda_emu"
# The .cu files are included into .cpp wrappers: torch's builder hands .cu files to nvcc.
WRAPPERS = {"emu_hashgrid.cpp": '#include "hashgrid_cuda.cu"\n',
            "emu_marching.cpp": '#include "marching_cuda.cu"\n',
            "emu_bindings.cpp": '#include "bindings_cuda.cpp"\n'}
# -ffp-contract=off: no fused multiply-add, like nvcc's -fmad=false in the real build.
EMU_CFLAGS = ["-O1", "-ffp-contract=off", "-DAWARE3D_CUDA_EMULATE",
              f"-DAWARE3D_CUDA_OPS_NAMESPACE={EMU_NAME}"]


def _emu_folder():
    files = sorted(p for p in _build.CSRC.iterdir() if p.is_file())
    blob = json.dumps({"csrc": _build._digest_files(files), "wrappers": WRAPPERS,
                       "flags": EMU_CFLAGS, "torch": torch.__version__,
                       "python": list(sys.version_info[:2]), "cxx": _build.os.environ.get("CXX")},
                      sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:12]
    tv = torch.__version__.replace("+", "_").replace(".", "_")
    return _build.ext_root() / f"{EMU_NAME}_{tv}_{key}"


@pytest.fixture(scope="module")
def emu():
    """torch.ops.aware3d_cuda_emu: the CUDA sources built as serial C++ (cached by content)."""
    if not hasattr(torch.ops, EMU_NAME) or not hasattr(getattr(torch.ops, EMU_NAME),
                                                        "march_rays"):
        if shutil.which("c++") is None and shutil.which("g++") is None:
            pytest.skip("no C++ compiler on this machine: the CUDA sources cannot be built as C++")
        folder = _emu_folder()
        lib = folder / f"{EMU_NAME}{_build.LIB_EXT}"
        marker = folder / "built.json"
        if marker.is_file() and lib.is_file():
            torch.ops.load_library(str(lib))
        else:
            from torch.utils import cpp_extension
            folder.mkdir(parents=True, exist_ok=True)
            sources = []
            for name, text in WRAPPERS.items():
                path = folder / name
                if not path.is_file() or path.read_text() != text:
                    path.write_text(text)
                sources.append(str(path))
            cpp_extension.load(name=EMU_NAME, sources=sources, build_directory=str(folder),
                               extra_cflags=EMU_CFLAGS, extra_include_paths=[str(_build.CSRC)],
                               is_python_module=False, verbose=False)
            marker.write_text(json.dumps({"cflags": EMU_CFLAGS}))
    return getattr(torch.ops, EMU_NAME)


@pytest.fixture(scope="module")
def cpu_ops():
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine: the compiled backend cannot be built")
    return _build.require_extension("cpu")


# --------------------------------------------------------------------------------------------
# hash grid
# --------------------------------------------------------------------------------------------
def _hash_case(F, dtype, seed, n=400, T=2 ** 12, levels=8):
    gen = torch.Generator().manual_seed(seed)
    res = grid_resolutions(levels, 4, 256)
    table = (torch.randn(levels, T, F, generator=gen) * 0.1).to(dtype)
    x = torch.rand(n, 3, generator=gen).to(dtype)
    x[0], x[1] = 0.0, 1.0
    x[2, 0], x[3, 1], x[4, 2] = 1.0, 0.0, 1.0  # faces
    x[5] = torch.tensor([-0.2, 0.5, 1.3])  # outside: clamped, x-gradient 0 on two axes
    return torch.tensor(res, dtype=torch.int64), table, x


@pytest.mark.parametrize("F,dtype", [(2, torch.float32), (3, torch.float64)])
def test_emulated_cuda_hash_encoding_equals_cpu_kernel_and_reference(emu, cpu_ops, F, dtype):
    res, table, x = _hash_case(F, dtype, seed=F)
    out = emu.hash_encode_forward(x, table, res)
    assert torch.allclose(out, cpu_ops.hash_encode_forward(x, table, res), atol=1e-6, rtol=0)
    assert torch.allclose(out, hash_encode_reference(x, table, res.tolist()), atol=1e-5, rtol=0)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
    gt_e, gx_e = emu.hash_encode_backward(g, x, table, res, True, True)
    gt_c, gx_c = cpu_ops.hash_encode_backward(g, x, table, res, True, True)
    # atomicAdd order (GPU) vs per-level point order (CPU): sums may round differently
    assert torch.allclose(gt_e, gt_c, atol=1e-6, rtol=0)
    assert torch.allclose(gx_e, gx_c, atol=1e-5 * gx_c.abs().max().item(), rtol=0)
    # the x-gradient rule at the faces (passes at 0 and 1, 0 outside), as the reference's
    xr, tr = x.clone().requires_grad_(True), table.clone().requires_grad_(True)
    gt_r, gx_r = torch.autograd.grad(hash_encode_reference(xr, tr, res.tolist()), (tr, xr), g)
    assert torch.allclose(gt_e, gt_r, atol=1e-5, rtol=0)
    assert torch.allclose(gx_e, gx_r, atol=1e-4 * gx_r.abs().max().item(), rtol=0)
    assert gx_e[5, 0] == 0 and gx_e[5, 2] == 0 and gx_e[5, 1] != 0
    # only what is asked for
    gt_only, gx_none = emu.hash_encode_backward(g, x, table, res, True, False)
    assert gx_none.numel() == 0 and torch.equal(gt_only, gt_e)


def test_emulated_cuda_hash_encoding_device_checks(emu):
    res, table, x = _hash_case(2, torch.float32, seed=0, n=8)
    meta = torch.device("meta")
    with pytest.raises(RuntimeError, match="table is on meta but the other inputs are on cpu"):
        emu.hash_encode_forward(x, table.to(meta), res)
    with pytest.raises(RuntimeError, match="x must be on the CPU .emulated CUDA build., got a "
                                           "tensor on meta"):
        emu.hash_encode_forward(x.to(meta), table, res)
    with pytest.raises(RuntimeError, match="resolutions must be a CPU tensor"):
        emu.hash_encode_forward(x, table, res.to(meta))
    g = torch.zeros(8, 16)
    with pytest.raises(RuntimeError, match="grad_out is on meta"):
        emu.hash_encode_backward(g.to(meta), x, table, res, True, True)
    with pytest.raises(RuntimeError, match="table is on meta"):
        emu.hash_encode_backward(g, x, table.to(meta), res, True, True)


# --------------------------------------------------------------------------------------------
# marching
# --------------------------------------------------------------------------------------------
def _march_args(grid, o, d, near, far, cone, max_samples, contract_steps=True, step_size=None):
    """The op arguments march_rays builds; the box / contraction as the CUDA path passes them
    (host tensors from _host_grid_params), checked equal to the ones the CPU path uses."""
    o, d, t_min, t_max, dt, dt_max, lo, scale = marching._prepare(o, d, near, far, grid,
                                                                  step_size, None)
    lo_h, scale_h, center_h, inv_half_h = marching._host_grid_params(grid)
    assert torch.equal(lo_h, lo) and torch.equal(scale_h, scale)
    if grid.contract:
        c, ih = grid.center_inv_half
        assert torch.equal(center_h, c) and torch.equal(inv_half_h, ih)
        mode = 2 if contract_steps else 1
    else:
        mode = 0
    return (o, d, t_min, t_max, grid.binary.to(torch.uint8).contiguous(), lo_h, scale_h,
            center_h, inv_half_h, mode, dt, float(cone), dt_max, int(max_samples))


def _world_scene(seed=0, n_rays=300, res=16):
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(aabb=(-1.0, -1.5, -1.0, 1.0, 1.5, 2.0), resolution=res)
    grid.binary.copy_(torch.rand(res, res, res, generator=gen) < 0.1)
    grid.binary[2:6, 5:10, 4:12] = True
    o = torch.randn(n_rays, 3, generator=gen) * 2.5
    d = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=gen) - 0.3 * o, dim=-1)
    o[0], d[0] = torch.tensor([-3.0, 0.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])  # axis-parallel
    near = torch.rand(n_rays, generator=gen) * 2
    return grid, o, d, near


@pytest.mark.parametrize("cone,max_samples", [(0.0, 1024), (0.0, 5), (1.0 / 64, 1024)])
def test_emulated_cuda_marching_equals_cpu_kernel(emu, cpu_ops, cone, max_samples):
    # The CUDA kernel jumps over empty cells (constant step), the CPU one tests every step: both
    # emit the reference's samples exactly.
    grid, o, d, near = _world_scene()
    args = _march_args(grid, o, d, near, 8.0, cone, max_samples)
    out = emu.march_rays(*args)
    want = cpu_ops.march_rays(*args)
    assert want[0].numel() > 200  # the scene is not trivially empty
    for a, b in zip(out, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("contract_steps,cone,max_samples", [(True, 0.0, 1024), (True, 1.0 / 64, 9),
                                                             (False, 1.0 / 64, 1024)])
def test_emulated_cuda_contracted_marching_equals_cpu_kernel(emu, cpu_ops, contract_steps, cone,
                                                             max_samples):
    res = 12
    gen = torch.Generator().manual_seed(3)
    grid = OccupancyGrid(aabb=(-1.0, -0.5, -1.0, 1.0, 1.5, 1.0), resolution=res, contract=True)
    grid.binary.copy_(torch.rand(res, res, res, generator=gen) < 0.3)
    o = torch.randn(200, 3, generator=gen)
    d = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    near = torch.rand(200, generator=gen) * 0.2
    args = _march_args(grid, o, d, near, 500.0, cone, max_samples, contract_steps, 0.05)
    out = emu.march_rays(*args)
    want = cpu_ops.march_rays(*args)
    assert want[0].numel() > 300
    for a, b in zip(out, want):
        assert torch.equal(a, b)


def test_host_grid_params_are_cached_until_the_box_changes():
    # a CPU tensor is its own host copy; a GPU one is copied once per version of its contents
    t = torch.arange(3.0)
    assert marching._host_copy(t).data_ptr() == t.data_ptr()
    copies = []
    real_to = torch.Tensor.to

    class Box(torch.Tensor):
        pass

    box = torch.tensor([0.0, 1.0, 2.0]).as_subclass(Box)
    box_device = torch.device("cuda")
    box.__class__.device = property(lambda self: box_device)  # looks like a GPU tensor

    def counting_to(self, *a, **k):
        copies.append(1)
        return real_to(self.as_subclass(torch.Tensor), *a, **k)

    box.__class__.to = counting_to
    first = marching._host_copy(box)
    assert marching._host_copy(box) is first and len(copies) == 1
    box.add_(1.0)  # changed in place: the version counter moves, the copy is refreshed
    second = marching._host_copy(box)
    assert len(copies) == 2 and second.tolist() == [1.0, 2.0, 3.0]


def test_emulated_cuda_marching_device_checks(emu):
    grid, o, d, near = _world_scene(n_rays=4)
    args = list(_march_args(grid, o, d, near, 8.0, 0.0, 16))
    names = ["rays_o", "rays_d", "t_min", "t_max", "occ", "lo", "inv", "center", "inv_half"]
    for i, name in enumerate(names[1:5], start=1):
        bad = list(args)
        bad[i] = args[i].to("meta")
        with pytest.raises(RuntimeError, match=f"march_rays \\(cuda\\): {name} is on meta"):
            emu.march_rays(*bad)
    for i, name in enumerate(names[5:], start=5):
        bad = list(args)
        bad[i] = args[i].to("meta")
        with pytest.raises(RuntimeError, match=f"{name} must be a CPU tensor"):
            emu.march_rays(*bad)


# --------------------------------------------------------------------------------------------
# packed weights
# --------------------------------------------------------------------------------------------
def _packed_case(dtype, seed=0, n_rays=40):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 30, (n_rays,), generator=gen)
    ray_idx = torch.repeat_interleave(torch.arange(n_rays), counts)
    S = ray_idx.numel()
    sigmas = (torch.rand(S, generator=gen) * 5).to(dtype)
    deltas = (torch.rand(S, generator=gen) * 0.1).to(dtype)
    return sigmas, deltas, ray_offsets(ray_idx, n_rays)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_emulated_cuda_packed_weights_equal_cpu_kernel(emu, cpu_ops, dtype):
    sigmas, deltas, offsets = _packed_case(dtype)
    w_e, t_e = emu.render_weights_packed_forward(sigmas, deltas, offsets)
    w_c, t_c = cpu_ops.render_weights_packed_forward(sigmas, deltas, offsets)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert torch.allclose(w_e, w_c, atol=tol, rtol=0) and torch.allclose(t_e, t_c, atol=tol, rtol=0)
    gen = torch.Generator().manual_seed(9)
    gw = torch.randn(w_e.shape, generator=gen).to(dtype)
    gT = torch.randn(w_e.shape, generator=gen).to(dtype)
    ge = emu.render_weights_packed_backward(gw, gT, sigmas, deltas, w_e, t_e, offsets)
    gc = cpu_ops.render_weights_packed_backward(gw, gT, sigmas, deltas, w_c, t_c, offsets)
    for a, b in zip(ge, gc):
        assert torch.allclose(a, b, atol=10 * tol, rtol=0)


def test_emulated_cuda_packed_weights_device_checks(emu):
    sigmas, deltas, offsets = _packed_case(torch.float32, n_rays=3)
    w, t = emu.render_weights_packed_forward(sigmas, deltas, offsets)
    meta = torch.device("meta")
    for name, args in (("deltas", (sigmas, deltas.to(meta), offsets)),
                       ("offsets", (sigmas, deltas, offsets.to(meta)))):
        with pytest.raises(RuntimeError, match=f"{name} is on meta"):
            emu.render_weights_packed_forward(*args)
    full = [w, t, sigmas, deltas, w, t, offsets]
    for i, name in enumerate(["grad_w", "grad_T", None, "deltas", "weights", "trans",
                              "offsets"]):
        if name is None:
            continue
        bad = list(full)
        bad[i] = full[i].to(meta)
        with pytest.raises(RuntimeError, match=f"backward \\(cuda\\): {name} is on meta"):
            emu.render_weights_packed_backward(*bad)


# --------------------------------------------------------------------------------------------
# CUDA dispatch with torch.cuda.is_available faked
# --------------------------------------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """A process that believes it has a GPU, with an empty build cache of its own."""
    monkeypatch.setenv("AWARE3D_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")  # else the key asks the (absent) GPU
    for name in ("_cache", "_loaded", "_errors", "_status", "_last"):
        monkeypatch.setattr(_build, name, {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return tmp_path / "ext"


def test_cuda_dispatch_falls_back_to_reference_when_cuda_build_fails(fake_gpu, monkeypatch,
                                                                      capsys):
    calls = []

    def nvcc_fails(spec):
        calls.append(spec)
        raise RuntimeError("Error building extension 'aware3d_kernels_cuda':\n"
                           "nvcc fatal   : fake failure (no CUDA toolkit)")

    monkeypatch.setattr(_build, "_run_build", nvcc_fails)
    assert _build._kind(None) == "cuda"  # device=None means the GPU when torch sees one
    with pytest.warns(RuntimeWarning, match="compiled CUDA kernels could not be built"):
        assert _build.get_extension(torch.device("cuda", 0)) is None
    (spec,) = calls
    assert spec.kind == "cuda" and spec.namespace == "aware3d_cuda"
    assert [p.rsplit("/", 1)[-1] for p in spec.sources] == _build.CUDA_SOURCES
    assert "arch 9.0" in spec.components["cuda"] and str(spec.root) == str(fake_gpu)
    assert "building the CUDA kernels failed" in capsys.readouterr().err
    # afterwards: remembered (not rebuilt), silent, and every auto dispatch takes the reference
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _build.get_extension("cuda") is None
        assert marching._use_compiled("auto", torch.device("cuda")) is False
        st = _build.ensure_built(None)
    assert len(calls) == 1
    assert st["device"] == "cuda" and st["status"] == "reference" and st["action"] == "failed"
    assert "fake failure" in st["error"] and "fake failure" in open(st["log"]).read()
    with pytest.raises(_build.CompiledBackendUnavailable, match="fake failure"):
        marching._use_compiled("compiled", torch.device("cuda"))
    assert _build.kernel_status("cpu")["device"] == "cpu"  # the CPU kernels are not affected


def test_cuda_dispatch_uses_the_cuda_library_when_it_builds(fake_gpu, monkeypatch, emu):
    # A successful CUDA "build" (here: the emulated library) is what auto dispatch then uses for
    # CUDA devices, while CPU devices keep their own kind.
    monkeypatch.setattr(_build, "_compile",
                        lambda kind: emu if kind == "cuda" else pytest.fail("CPU build asked"))
    assert _build.get_extension(torch.device("cuda", 0)) is emu
    assert marching._use_compiled("auto", torch.device("cuda")) is True
    st = _build.ensure_built(None)
    assert st["device"] == "cuda" and st["status"] == "compiled" and st["error"] is None
