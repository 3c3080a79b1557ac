"""Just-in-time build of the compiled kernels (C++/OpenMP, and CUDA when a GPU is present).

Nothing is compiled at import time. The first call that asks for a compiled kernel builds the
extension with :func:`torch.utils.cpp_extension.load` into a cache folder and later calls (and
later processes) load it from there in about a second:

- ``$AWARE3D_EXT_DIR`` when set, else ``$TORCH_EXTENSIONS_DIR/aware3d``, else
  ``~/.cache/torch_extensions/aware3d``;
- one sub-folder per (extension, torch version, CPU features), because ``-march=native`` code built
  on one processor may not run on another that shares the cache.

When the build fails (no compiler, no ninja, ...) :func:`get_extension` returns ``None`` and warns
once per process and device type; callers then use the pure-PyTorch references.
"""
from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"

# Sources of each extension. One CPU extension holds every CPU kernel so a fresh checkout compiles
# once; the CUDA extension is built only where torch sees a GPU.
CPU_SOURCES = ["hashgrid_cpu.cpp", "marching_cpu.cpp", "bindings_cpu.cpp"]
CUDA_SOURCES = ["hashgrid_cuda.cu", "marching_cuda.cu", "bindings_cuda.cpp"]

# -ffp-contract=off: no fused multiply-add, so the marching kernel rounds each product and sum the
# way the PyTorch reference does and both pick the same occupancy cell for every sample.
CPU_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
CPU_LDFLAGS = ["-fopenmp"]
CUDA_CFLAGS = ["-O3"]
# -fmad=false for the same reason on the GPU; no --use_fast_math (exp/floor must stay IEEE).
CUDA_NVCC_FLAGS = ["-O3", "-fmad=false"]

_lock = threading.Lock()
_cache: dict[str, object | None] = {}
# Libraries loaded into this process. TORCH_LIBRARY aborts the process if the same op library is
# registered twice, so a library is loaded at most once, whatever reset_cache() forgets.
_loaded: dict[str, object] = {}
_errors: dict[str, str] = {}


class CompiledBackendUnavailable(RuntimeError):
    """The compiled kernels could not be built or loaded on this machine."""


def ext_root() -> Path:
    """Root folder of the build cache (see module docstring)."""
    env = os.environ.get("AWARE3D_EXT_DIR")
    if env:
        return Path(env).expanduser()
    torch_dir = os.environ.get("TORCH_EXTENSIONS_DIR")
    if torch_dir:
        return Path(torch_dir).expanduser() / "aware3d"
    return Path.home() / ".cache" / "torch_extensions" / "aware3d"


def _cpu_key() -> str:
    """Short digest of the CPU model and feature flags (for ``-march=native`` builds)."""
    text = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    text += line
                if line.strip() == "":
                    break  # the first processor is enough
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _compile(kind: str) -> object:
    """Build (or load from cache) the extension of ``kind`` ("cpu" or "cuda"). Raises on failure.

    The kernels register themselves as ``torch.ops.aware3d_<kind>.<name>`` (TORCH_LIBRARY), so
    the library is loaded with ``is_python_module=False`` and the op namespace is returned.
    """
    if kind in _loaded:
        return _loaded[kind]
    from torch.utils import cpp_extension

    tv = torch.__version__.replace("+", "_").replace(".", "_")
    if kind == "cpu":
        name = "aware3d_kernels_cpu"
        build = ext_root() / f"{name}_{tv}_{_cpu_key()}"
        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name, sources=[str(CSRC / s) for s in CPU_SOURCES], build_directory=str(build),
            extra_cflags=CPU_CFLAGS, extra_ldflags=CPU_LDFLAGS, extra_include_paths=[str(CSRC)],
            is_python_module=False, verbose=False)
        _loaded[kind] = torch.ops.aware3d_cpu
        return _loaded[kind]
    if kind == "cuda":
        name = "aware3d_kernels_cuda"
        cuda = (torch.version.cuda or "none").replace(".", "_")
        build = ext_root() / f"{name}_{tv}_cu{cuda}"
        build.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(
            name=name, sources=[str(CSRC / s) for s in CUDA_SOURCES], build_directory=str(build),
            extra_cflags=CUDA_CFLAGS, extra_cuda_cflags=CUDA_NVCC_FLAGS,
            extra_include_paths=[str(CSRC)], is_python_module=False, verbose=False)
        _loaded[kind] = torch.ops.aware3d_cuda
        return _loaded[kind]
    raise ValueError(f"unknown extension kind {kind!r}")


def get_extension(device: torch.device | str = "cpu", *, warn: bool = True) -> object | None:
    """The compiled extension for ``device``'s type, building it on first use; None if unavailable.

    A failed build is remembered (not retried) and reported by one warning per process.
    """
    kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
    if kind in _cache:
        return _cache[kind]
    with _lock:
        if kind in _cache:
            return _cache[kind]
        if kind == "cuda" and not torch.cuda.is_available():
            mod, err = None, "torch.cuda.is_available() is False"
        else:
            try:
                mod, err = _compile(kind), None
            except Exception as exc:  # noqa: BLE001 - any build failure means "use the reference"
                mod, err = None, f"{type(exc).__name__}: {exc}".strip()
        _cache[kind] = mod
        if err is not None:
            _errors[kind] = err
            if warn:
                first = err.splitlines()[0] if err else ""
                warnings.warn(
                    f"aware3d: the compiled {kind.upper()} kernels could not be built ({first[:300]}); "
                    f"falling back to the pure-PyTorch reference (slower, same results). "
                    f"Build cache: {ext_root()}", RuntimeWarning, stacklevel=3)
        return mod


def require_extension(device: torch.device | str = "cpu") -> object:
    """Like :func:`get_extension` but raises :class:`CompiledBackendUnavailable` with the reason."""
    mod = get_extension(device, warn=False)
    if mod is None:
        kind = "cuda" if torch.device(device).type == "cuda" else "cpu"
        raise CompiledBackendUnavailable(
            f"aware3d compiled {kind} kernels unavailable: {_errors.get(kind, 'unknown error')}")
    return mod


def build_error(kind: str = "cpu") -> str | None:
    """Why the ``kind`` build failed in this process (None if it did not fail or was not tried)."""
    return _errors.get(kind)


def reset_cache() -> None:
    """Forget loaded/failed extensions (tests use it to simulate a machine without a compiler)."""
    with _lock:
        _cache.clear()
        _errors.clear()
