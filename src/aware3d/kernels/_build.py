"""Just-in-time build of the compiled kernels (C++/OpenMP, and CUDA when a GPU is present).

Nothing is compiled at import time. The first call that asks for a compiled kernel (or
:func:`ensure_built`, which the training loops call before their clock starts) builds the
extension with :func:`torch.utils.cpp_extension.load` into a cache folder; later calls and later
processes load the built library from there directly (well under a second, no compiler run):

- cache root: ``$AWARE3D_EXT_DIR`` when set, else ``$TORCH_EXTENSIONS_DIR/aware3d``, else
  ``~/.cache/torch_extensions/aware3d``;
- one sub-folder per build key: a digest of the kernel sources (every file the extension compiles
  plus every header in ``csrc``), the compile flags, the torch and Python versions, the compiler
  and the CPU model/features (``-march=native`` code built on one processor may not run on
  another) or, for CUDA, the CUDA version and GPU architectures. Two checkouts with different
  sources therefore never overwrite or rebuild each other's build, and identical inputs share one;
- a finished build leaves ``aware3d_build.json`` next to the library; a failed one leaves the
  compiler output in ``build_error.log``.

A build is announced on stderr (what, why, how long it usually takes, where it goes), shows a
spinner with the elapsed time on a terminal (one "still building" line every 15 s otherwise) and
ends with a "done in N s" line. Loading a cached build prints nothing (one line with
``AWARE3D_EXT_VERBOSE=1``, which also shows the compiler commands of a build).

When the build fails (no compiler, no ninja, ...) :func:`get_extension` returns ``None`` and warns
once per process and device type; callers then use the pure-PyTorch references.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

__all__ = ["CompiledBackendUnavailable", "BuildSpec", "build_spec", "ensure_built",
           "kernel_status", "get_extension", "require_extension", "build_error", "ext_root",
           "reset_cache"]

CSRC = Path(__file__).resolve().parent / "csrc"

# Sources of each extension. One CPU extension holds every CPU kernel so a fresh checkout compiles
# once; the CUDA extension is built only where torch sees a GPU.
CPU_SOURCES = ["hashgrid_cpu.cpp", "marching_cpu.cpp", "bindings_cpu.cpp"]
CUDA_SOURCES = ["hashgrid_cuda.cu", "marching_cuda.cu", "bindings_cuda.cpp"]
# Files of csrc that are part of every build key even though they are not compiled on their own.
HEADER_SUFFIXES = (".h", ".hpp", ".hh", ".cuh", ".inl")

# -ffp-contract=off: no fused multiply-add, so the marching kernel rounds each product and sum the
# way the PyTorch reference does and both pick the same occupancy cell for every sample.
CPU_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]
CPU_LDFLAGS = ["-fopenmp"]
CUDA_CFLAGS = ["-O3"]
# -fmad=false for the same reason on the GPU; no --use_fast_math (exp/floor must stay IEEE).
CUDA_NVCC_FLAGS = ["-O3", "-fmad=false"]

_NAMES = {"cpu": ("aware3d_kernels_cpu", "aware3d_cpu"),
          "cuda": ("aware3d_kernels_cuda", "aware3d_cuda")}
_WHAT = {"cpu": "the CPU extension of aware3d (hash-grid encoding + occupancy marching kernels, "
                "C++/OpenMP)",
         "cuda": "the CUDA extension of aware3d (hash-grid encoding + occupancy marching kernels, "
                 "nvcc)"}
# Typical cold-build times, said before a build starts. CPU: 13-30 s wall (18 s of CPU time)
# measured for three cold builds on a 2-core AMD EPYC VM (torch 2.13, g++ -O3, ninja -j4); the
# issue "A first run that just works" saw 60-255 s on 2 slower/busy cores. CUDA: not measured.
EXPECTED = {"cpu": "about 15 s to 4 minutes on a 2-core CPU (13-30 s measured on a 2-core "
                   "AMD EPYC VM; up to 4 minutes on slower or busy cores), less with more cores",
            "cuda": "a few minutes (nvcc)"}
MARKER = "aware3d_build.json"
ERROR_LOG = "build_error.log"
LIB_EXT = ".pyd" if sys.platform == "win32" else ".so"

# Progress display while a build runs: terminal redraw period and non-terminal line period (s).
PROGRESS_TTY_INTERVAL = 0.5
PROGRESS_LOG_INTERVAL = 15.0

_lock = threading.Lock()
_cache: dict[str, object | None] = {}
# Libraries loaded into this process. TORCH_LIBRARY aborts the process if the same op library is
# registered twice, so a library is loaded at most once, whatever reset_cache() forgets.
_loaded: dict[str, object] = {}
_errors: dict[str, str] = {}
# What get_extension() found for each kind in this process (what ensure_built returns).
_status: dict[str, dict] = {}
# What _compile() did for each kind ("built" / "loaded", folder, log), for the status.
_last: dict[str, dict] = {}


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


def _kind(device: torch.device | str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if torch.device(device).type == "cuda" else "cpu"


# --------------------------------------------------------------------------------------------
# Build key
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildSpec:
    """Everything that goes into one build of one extension, and where it is cached."""

    kind: str
    name: str  # library name (aware3d_kernels_cpu)
    namespace: str  # torch.ops namespace its TORCH_LIBRARY registers (aware3d_cpu)
    sources: tuple[str, ...]  # compiled files (absolute paths)
    headers: tuple[str, ...]  # other csrc files the key covers
    cflags: tuple[str, ...]
    cuda_cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    include_paths: tuple[str, ...]
    root: Path
    components: dict = field(compare=False)  # name -> value/digest, what the key hashes
    key: str = ""

    @property
    def folder(self) -> Path:
        tv = torch.__version__.replace("+", "_").replace(".", "_")
        return self.root / f"{self.name}_{tv}_{self.key}"

    @property
    def library(self) -> Path:
        return self.folder / f"{self.name}{LIB_EXT}"

    @property
    def marker(self) -> Path:
        return self.folder / MARKER


def kernel_files(kind: str, csrc: Path | str | None = None) -> tuple[list[Path], list[Path]]:
    """(compiled sources, headers) of the ``kind`` extension in ``csrc`` (default: the package's)."""
    csrc = Path(csrc) if csrc is not None else CSRC
    names = CPU_SOURCES if kind == "cpu" else CUDA_SOURCES
    sources = [csrc / n for n in names]
    headers = sorted(p for p in csrc.iterdir() if p.is_file() and p.suffix in HEADER_SUFFIXES) \
        if csrc.is_dir() else []
    return sources, headers


def _digest_files(paths: list[Path]) -> str:
    h = hashlib.sha1()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(p.name.encode() + b"\0")
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"<missing>")  # the build itself will report the missing file
        h.update(b"\0")
    return h.hexdigest()[:16]


def _cuda_arch() -> str:
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return env
    try:
        if torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            return ";".join(f"{a}.{b}" for a, b in sorted(caps))
    except Exception:  # noqa: BLE001 - no usable GPU: the build reports it
        pass
    return "none"


def build_spec(kind: str = "cpu", *, csrc: Path | str | None = None,
               cflags: list[str] | None = None, ldflags: list[str] | None = None,
               cuda_cflags: list[str] | None = None, root: Path | str | None = None) -> BuildSpec:
    """The build of the ``kind`` ("cpu" or "cuda") extension: sources, flags, key and folder.

    The key is a digest of the source and header contents, the flags, the torch/Python versions,
    the compiler ($CXX) and the CPU key (CPU) or CUDA version + architectures (CUDA). The
    keyword arguments override the package defaults (tests use them).
    """
    if kind not in _NAMES:
        raise ValueError(f"unknown extension kind {kind!r}")
    name, namespace = _NAMES[kind]
    sources, headers = kernel_files(kind, csrc)
    if kind == "cpu":
        cf = list(CPU_CFLAGS if cflags is None else cflags)
        lf = list(CPU_LDFLAGS if ldflags is None else ldflags)
        nf: list[str] = []
    else:
        cf = list(CUDA_CFLAGS if cflags is None else cflags)
        lf = list([] if ldflags is None else ldflags)
        nf = list(CUDA_NVCC_FLAGS if cuda_cflags is None else cuda_cflags)
    include = [str(Path(csrc) if csrc is not None else CSRC)]
    components = {
        "sources": _digest_files(sources + headers),
        "flags": hashlib.sha1(json.dumps([cf, nf, lf]).encode()).hexdigest()[:16],
        "torch": f"{torch.__version__} ({torch.version.git_version[:10]})",
        "python": f"{sys.version_info[0]}.{sys.version_info[1]}",
        "compiler": os.environ.get("CXX", "c++"),
    }
    if kind == "cpu":
        components["cpu"] = _cpu_key()
    else:
        components["cuda"] = f"{torch.version.cuda} arch {_cuda_arch()}"
    blob = json.dumps({"name": name, **components}, sort_keys=True).encode()
    key = hashlib.sha1(blob).hexdigest()[:12]
    return BuildSpec(kind=kind, name=name, namespace=namespace,
                     sources=tuple(str(p) for p in sources), headers=tuple(str(p) for p in headers),
                     cflags=tuple(cf), cuda_cflags=tuple(nf), ldflags=tuple(lf),
                     include_paths=tuple(include),
                     root=Path(root) if root is not None else ext_root(),
                     components=components, key=key)


# --------------------------------------------------------------------------------------------
# Messages and progress
# --------------------------------------------------------------------------------------------
def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - closed / replaced streams
        return False


def _say(text: str) -> None:
    stream = sys.stderr
    try:
        stream.write(text + "\n")
        stream.flush()
    except Exception:  # noqa: BLE001 - never let a message break a build
        pass


def _verbose() -> bool:
    return os.environ.get("AWARE3D_EXT_VERBOSE", "").strip() not in ("", "0", "false", "no")


class _Progress:
    """Background thread that shows a build is alive: on a terminal a spinner + elapsed seconds
    redrawn in place every ``PROGRESS_TTY_INTERVAL`` s; elsewhere one "still building" line every
    ``PROGRESS_LOG_INTERVAL`` s."""

    def __init__(self, label: str, stream: TextIO | None = None, tty: bool | None = None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aware3d-build-progress",
                                        daemon=True)
        self.start = 0.0
        self._width = 0

    def __enter__(self) -> "_Progress":
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty and self._width:
            self._write("\r" + " " * self._width + "\r")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001
            pass

    def _run(self) -> None:
        spin = "|/-\\"
        i = 0
        interval = PROGRESS_TTY_INTERVAL if self.tty else PROGRESS_LOG_INTERVAL
        while not self._stop.wait(interval):
            elapsed = time.perf_counter() - self.start
            if self.tty:
                line = f"\r{spin[i % 4]} {self.label}: {elapsed:.0f} s"
                self._width = max(self._width, len(line))
                self._write(line)
                i += 1
            else:
                self._write(f"aware3d: still {self.label}: {elapsed:.0f} s\n")


def _read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _other_builds(spec: BuildSpec) -> list[tuple[Path, dict | None]]:
    """Sibling cache folders of the same extension (other keys), newest first."""
    try:
        folders = [p for p in spec.root.glob(f"{spec.name}_*") if p.is_dir() and p != spec.folder]
    except OSError:
        return []
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [(p, _read_marker(p)) for p in folders]


_CHANGE_TEXT = {"sources": "the kernel sources changed", "flags": "the compile flags changed",
                "python": "the Python version changed", "compiler": "the compiler ($CXX) changed",
                "cpu": "this is another CPU (-march=native builds are per CPU)",
                "cuda": "the CUDA version or GPU architecture changed"}


def _why(spec: BuildSpec, others: list[tuple[Path, dict | None]]) -> str:
    """One phrase saying why ``spec`` has to be built."""
    lock = spec.folder / "lock"
    if lock.exists():
        return (f"another process is building it right now (or an interrupted build left "
                f"{lock}: delete that file if no build is running)")
    if spec.folder.exists() and spec.library.exists() and not spec.marker.exists():
        return "a previous build in this folder did not finish"
    if (spec.folder / ERROR_LOG).exists():
        return f"the last build attempt failed (see {spec.folder / ERROR_LOG}); trying again"
    previous = next((m for _, m in others if m and isinstance(m.get("components"), dict)), None)
    if previous is not None:
        old = previous["components"]
        changes = []
        for k, v in spec.components.items():
            if old.get(k) == v:
                continue
            if k == "torch":
                changes.append(f"torch changed ({old.get(k)} -> {v})")
            else:
                changes.append(_CHANGE_TEXT.get(k, f"{k} changed"))
        if changes:
            return "sources or flags changed since the last build here: " + ", ".join(changes)
    if others:
        return "no build in the cache matches these kernel sources, flags and torch version"
    return "first use on this machine"


def _write_marker(spec: BuildSpec, seconds: float) -> None:
    data = {"name": spec.name, "kind": spec.kind, "key": spec.key, "components": spec.components,
            "sources": [Path(s).name for s in spec.sources + spec.headers],
            "cflags": list(spec.cflags), "cuda_cflags": list(spec.cuda_cflags),
            "ldflags": list(spec.ldflags), "build_seconds": round(seconds, 1),
            "built_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        tmp = spec.marker.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, spec.marker)
    except OSError:
        pass  # a read-only cache still works this time; the next process rebuilds/loads via torch


def _is_built(spec: BuildSpec) -> bool:
    m = _read_marker(spec.folder)
    return bool(m) and m.get("key") == spec.key and spec.library.is_file()


# --------------------------------------------------------------------------------------------
# Build / load
# --------------------------------------------------------------------------------------------
def _run_build(spec: BuildSpec) -> None:
    """Compile and link ``spec`` with torch's JIT builder and load the library into the process.

    Raises on failure (the message holds the compiler output)."""
    from torch.utils import cpp_extension

    kwargs = dict(name=spec.name, sources=list(spec.sources), build_directory=str(spec.folder),
                  extra_cflags=list(spec.cflags), extra_ldflags=list(spec.ldflags),
                  extra_include_paths=list(spec.include_paths), is_python_module=False,
                  verbose=_verbose())
    if spec.kind == "cuda":
        kwargs["extra_cuda_cflags"] = list(spec.cuda_cflags)
    cpp_extension.load(**kwargs)


def _load_library(spec: BuildSpec) -> None:
    """Load an already built library (no compiler, no ninja)."""
    torch.ops.load_library(str(spec.library))


def _build_announced(spec: BuildSpec, reason: str, others: list[tuple[Path, dict | None]]) -> float:
    """Build ``spec`` with the messages and progress display; returns the build seconds."""
    kind = spec.kind.upper()
    expected = EXPECTED.get(spec.kind, "a few minutes")
    last = next((m.get("build_seconds") for _, m in others
                 if m and isinstance(m.get("build_seconds"), (int, float))), None)
    if last is not None:
        expected += f"; the last build here took {_fmt_s(float(last))}"
    _say(f"aware3d: building {_WHAT[spec.kind]} -- {reason}.")
    _say(f"aware3d: this takes {expected}. It happens once per kernel version: later runs load it "
         f"from the cache in well under a second.")
    _say(f"aware3d: build cache: {spec.folder}")
    spec.folder.mkdir(parents=True, exist_ok=True)
    log = spec.folder / ERROR_LOG
    start = time.perf_counter()
    tty = _isatty(sys.stderr) and not _verbose()
    try:
        with _Progress(f"building the {kind} kernels", tty=tty):
            _run_build(spec)
    except Exception as exc:
        seconds = time.perf_counter() - start
        try:
            log.write_text(f"{type(exc).__name__}: {exc}\n")
            where = f"The compiler output is in {log}"
        except OSError:
            where = "The compiler output is in the warning below"
        _say(f"aware3d: building the {kind} kernels failed after {_fmt_s(seconds)}; aware3d falls "
             f"back to the pure-PyTorch reference (slower, same results). {where} "
             f"(AWARE3D_EXT_VERBOSE=1 prints the compiler commands; `aware3d doctor` shows the "
             f"kernel status).")
        _last[spec.kind] = {"action": "failed", "path": str(spec.folder), "seconds": seconds,
                            "log": str(log) if log.exists() else None}
        raise
    seconds = time.perf_counter() - start
    _write_marker(spec, seconds)
    try:
        log.unlink()
    except OSError:
        pass
    _say(f"aware3d: {kind} kernels built, done in {_fmt_s(seconds)}; cached in {spec.folder}")
    return seconds


def _compile(kind: str) -> object:
    """Build (or load from cache) the extension of ``kind`` ("cpu" or "cuda"). Raises on failure.

    The kernels register themselves as ``torch.ops.aware3d_<kind>.<name>`` (TORCH_LIBRARY), so
    the library is loaded as an op library and the op namespace is returned.
    """
    if kind in _loaded:  # loaded earlier in this process (before a reset_cache())
        _last[kind] = {"action": "loaded", "seconds": 0.0, "log": None}
        return _loaded[kind]
    spec = build_spec(kind)
    start = time.perf_counter()
    if _is_built(spec):
        try:
            _load_library(spec)
        except Exception as exc:  # noqa: BLE001 - a broken cached library: rebuild it
            for p in (spec.marker, spec.library):
                try:
                    p.unlink()
                except OSError:
                    pass
            reason = f"the cached library could not be loaded ({type(exc).__name__}: {exc})"
            seconds = _build_announced(spec, reason[:300], _other_builds(spec))
            action = "built"
        else:
            seconds = time.perf_counter() - start
            action = "loaded"
            if _verbose():
                _say(f"aware3d: loaded the {kind.upper()} kernels from {spec.folder} "
                     f"({_fmt_s(seconds)})")
    else:
        others = _other_builds(spec)
        seconds = _build_announced(spec, _why(spec, others), others)
        action = "built"
    _last[kind] = {"action": action, "path": str(spec.folder), "seconds": seconds, "log": None}
    _loaded[kind] = getattr(torch.ops, spec.namespace)
    return _loaded[kind]


def _folder_or_none(kind: str) -> str | None:
    try:
        return str(build_spec(kind).folder)
    except Exception:  # noqa: BLE001
        return None


def get_extension(device: torch.device | str = "cpu", *, warn: bool = True) -> object | None:
    """The compiled extension for ``device``'s type, building it on first use; None if unavailable.

    A failed build is remembered (not retried) and reported by one warning per process.
    """
    kind = _kind(device)
    if kind in _cache:
        return _cache[kind]
    with _lock:
        if kind in _cache:
            return _cache[kind]
        _last.pop(kind, None)
        start = time.perf_counter()
        if kind == "cuda" and not torch.cuda.is_available():
            mod, err = None, "torch.cuda.is_available() is False"
        else:
            try:
                mod, err = _compile(kind), None
            except Exception as exc:  # noqa: BLE001 - any build failure means "use the reference"
                mod, err = None, f"{type(exc).__name__}: {exc}".strip()
        seconds = time.perf_counter() - start
        last = _last.get(kind, {})
        path = last.get("path") or _folder_or_none(kind)
        _status[kind] = {"device": kind, "status": "compiled" if mod is not None else "reference",
                         "action": last.get("action", "failed" if err else "loaded"),
                         "seconds": round(seconds, 3), "path": path, "error": err,
                         "log": last.get("log")}
        _cache[kind] = mod
        if err is not None:
            _errors[kind] = err
            if warn:
                first = err.splitlines()[0] if err else ""
                log = last.get("log")
                where = f"Compiler output: {log}. " if log else ""
                warnings.warn(
                    f"aware3d: the compiled {kind.upper()} kernels could not be built ({first[:300]}); "
                    f"falling back to the pure-PyTorch reference (slower, same results). "
                    f"{where}Build cache: {path or ext_root()}", RuntimeWarning, stacklevel=3)
        return mod


def require_extension(device: torch.device | str = "cpu") -> object:
    """Like :func:`get_extension` but raises :class:`CompiledBackendUnavailable` with the reason."""
    mod = get_extension(device, warn=False)
    if mod is None:
        kind = _kind(device)
        raise CompiledBackendUnavailable(
            f"aware3d compiled {kind} kernels unavailable: {_errors.get(kind, 'unknown error')}")
    return mod


def ensure_built(device: torch.device | str | None = None, *, warn: bool = True) -> dict:
    """Build (first use) or load the compiled kernels for ``device`` now; return their status.

    ``device``: a torch device or its name; None means CUDA when torch sees a GPU, else CPU.
    Returns ``{"device": "cpu"|"cuda", "status": "compiled"|"reference", "action":
    "built"|"loaded"|"failed", "seconds": build or load time, "path": cache folder, "error": str or
    None, "log": compiler output file or None}``. ``"reference"`` means the pure-PyTorch
    fallback will be used (``error`` says why). Call it before timing anything: after the first
    call in a process it returns at once (the recorded status).
    """
    kind = _kind(device)
    st = _status.get(kind)
    if st is None or kind not in _cache:
        get_extension(kind, warn=warn)
        st = _status[kind]
    return dict(st)


def kernel_status(device: torch.device | str | None = None) -> dict:
    """Status of the ``device`` kernels without building anything.

    What :func:`ensure_built` returned when the kernels were already requested in this process;
    else ``status`` is "cached" (a finished build for these sources/flags is on disk) or
    "not built", with ``path`` the folder a build would use.
    """
    kind = _kind(device)
    if kind in _status and kind in _cache:
        return dict(_status[kind])
    try:
        spec = build_spec(kind)
        state, path, err = ("cached" if _is_built(spec) else "not built"), str(spec.folder), None
    except Exception as exc:  # noqa: BLE001
        state, path, err = "not built", None, f"{type(exc).__name__}: {exc}"
    return {"device": kind, "status": state, "action": None, "seconds": None, "path": path,
            "error": err, "log": None}


def build_error(kind: str = "cpu") -> str | None:
    """Why the ``kind`` build failed in this process (None if it did not fail or was not tried)."""
    return _errors.get(kind)


def reset_cache() -> None:
    """Forget loaded/failed extensions (tests use it to simulate a machine without a compiler)."""
    with _lock:
        _cache.clear()
        _errors.clear()
        _status.clear()
        _last.clear()
