"""Build cache key, build messages, ensure_built and ``aware3d doctor`` (no real compile: the
compiler run is replaced by a fake that sleeps briefly and writes a dummy library)."""
from __future__ import annotations

import io
import shutil
import time

import pytest
import torch

from aware3d import doctor
from aware3d.kernels import _build, ensure_built, kernel_status


# --------------------------------------------------------------------------------------------
# cache key
# --------------------------------------------------------------------------------------------
@pytest.fixture
def csrc(tmp_path):
    dst = tmp_path / "csrc"
    shutil.copytree(_build.CSRC, dst)
    return dst


def _key(csrc, **kw):
    return _build.build_spec("cpu", csrc=csrc, **kw).key


def test_key_follows_source_and_header_contents(csrc, tmp_path):
    k0 = _key(csrc)
    assert _key(csrc) == k0  # deterministic
    # an identical copy elsewhere (another checkout) shares the key, hence the build folder
    other = tmp_path / "other_checkout" / "csrc"
    shutil.copytree(csrc, other)
    assert _key(other) == k0
    root = tmp_path / "ext"
    assert (_build.build_spec("cpu", csrc=other, root=root).folder
            == _build.build_spec("cpu", csrc=csrc, root=root).folder)

    src = csrc / "hashgrid_cpu.cpp"
    text = src.read_text()
    src.write_text(text + "\n// edited\n")
    assert _key(csrc) != k0  # a compiled source changed
    src.write_text(text)
    assert _key(csrc) == k0  # content, not mtime

    header = csrc / "hashgrid_common.h"
    header.write_text(header.read_text() + "\n// edited\n")
    k_header = _key(csrc)
    assert k_header != k0  # headers are part of the key

    # a CUDA-only source does not touch the CPU build, but does change the CUDA key
    cu = csrc / "marching_cuda.cu"
    k_cuda = _build.build_spec("cuda", csrc=csrc).key
    cu.write_text(cu.read_text() + "\n// edited\n")
    assert _key(csrc) == k_header
    assert _build.build_spec("cuda", csrc=csrc).key != k_cuda


def test_key_follows_flags_torch_and_cpu(csrc, monkeypatch):
    k0 = _key(csrc)
    assert _key(csrc, cflags=list(_build.CPU_CFLAGS)) == k0
    assert _key(csrc, cflags=_build.CPU_CFLAGS + ["-DAWARE3D_TEST=1"]) != k0
    assert _key(csrc, cflags=["-O2"] + _build.CPU_CFLAGS[1:]) != k0
    assert _key(csrc, ldflags=[]) != k0
    monkeypatch.setattr(_build, "_cpu_key", lambda: "another-cpu")
    assert _key(csrc) != k0
    monkeypatch.undo()
    assert _key(csrc) == k0
    monkeypatch.setattr(torch, "__version__", "9.9.9+test")
    spec = _build.build_spec("cpu", csrc=csrc)
    assert spec.key != k0 and "9_9_9_test" in spec.folder.name


def test_cache_root_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("AWARE3D_EXT_DIR", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "te"))
    assert _build.ext_root() == tmp_path / "te" / "aware3d"
    monkeypatch.setenv("AWARE3D_EXT_DIR", str(tmp_path / "mine"))
    spec = _build.build_spec("cpu")
    assert _build.ext_root() == tmp_path / "mine"
    assert spec.folder.parent == tmp_path / "mine"
    assert spec.folder.name.startswith("aware3d_kernels_cpu_") and spec.key in spec.folder.name


# --------------------------------------------------------------------------------------------
# build messages / ensure_built with a fake compiler
# --------------------------------------------------------------------------------------------
@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A fresh build state in a temp cache; the real library is never built or loaded here."""
    monkeypatch.setenv("AWARE3D_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("AWARE3D_EXT_VERBOSE", raising=False)
    for name in ("_cache", "_loaded", "_errors", "_status", "_last"):
        monkeypatch.setattr(_build, name, {})
    monkeypatch.setattr(_build, "PROGRESS_LOG_INTERVAL", 0.1)
    loads = []
    monkeypatch.setattr(_build, "_load_library", lambda spec: loads.append(spec))
    return loads


def _fake_build(calls, seconds=0.35):
    def run(spec):
        calls.append(spec)
        time.sleep(seconds)
        spec.folder.mkdir(parents=True, exist_ok=True)
        spec.library.write_bytes(b"not a real library")
    return run


def _new_process():
    """What a fresh process knows: nothing loaded, nothing cached in memory."""
    for d in (_build._cache, _build._loaded, _build._errors, _build._status, _build._last):
        d.clear()


def test_build_is_announced_with_progress_and_done_line(isolated, monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(_build, "_run_build", _fake_build(calls))
    spec = _build.build_spec("cpu")
    assert kernel_status("cpu")["status"] == "not built"

    st = ensure_built("cpu")
    err = capsys.readouterr().err
    assert len(calls) == 1 and isolated == []
    assert st["status"] == "compiled" and st["action"] == "built" and st["error"] is None
    assert st["path"] == str(spec.folder) and st["seconds"] >= 0.3
    # what, why, how long, where -- before the build; progress while it runs; done line after
    assert "building the CPU extension of aware3d" in err
    assert "hash-grid encoding + occupancy marching" in err
    assert "first use on this machine" in err
    assert "minutes on a 2-core CPU" in err
    assert f"build cache: {spec.folder}" in err
    assert "still building the CPU kernels:" in err  # not a TTY: periodic lines
    assert "CPU kernels built, done in 0." in err and str(spec.folder) in err.splitlines()[-1]
    assert err.index("first use") < err.index("still building") < err.index("done in")
    assert (spec.folder / _build.MARKER).is_file()
    assert kernel_status("cpu")["status"] == "compiled"

    # same process: cheap, quiet, same answer
    t = time.perf_counter()
    assert ensure_built("cpu") == st
    assert time.perf_counter() - t < 0.05
    assert capsys.readouterr().err == ""

    # next process: loads the cached library, no compiler, nothing printed
    _new_process()
    assert kernel_status("cpu")["status"] == "cached"
    st2 = ensure_built("cpu")
    assert st2["status"] == "compiled" and st2["action"] == "loaded"
    assert len(calls) == 1 and len(isolated) == 1 and isolated[0].folder == spec.folder
    assert capsys.readouterr().err == ""


def test_rebuild_says_what_changed(isolated, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_build, "_run_build", _fake_build(calls, seconds=0.05))
    ensure_built("cpu")
    first = _build.build_spec("cpu").folder
    capsys.readouterr()
    _new_process()
    monkeypatch.setattr(_build, "CPU_CFLAGS", _build.CPU_CFLAGS + ["-DAWARE3D_TEST=1"])
    st = ensure_built("cpu")
    err = capsys.readouterr().err
    assert st["action"] == "built" and st["path"] != str(first) and first.is_dir()
    assert "the compile flags changed" in err and "the last build here took" in err
    assert len(calls) == 2


def test_tty_progress_is_a_spinner_on_one_line(monkeypatch):
    monkeypatch.setattr(_build, "PROGRESS_TTY_INTERVAL", 0.02)
    out = io.StringIO()
    with _build._Progress("building the CPU kernels", stream=out, tty=True):
        time.sleep(0.15)
    text = out.getvalue()
    assert "\n" not in text and text.count("\r") >= 3
    assert "building the CPU kernels: 0 s" in text
    assert any(c in text for c in "|/-\\")
    assert text.endswith("\r")  # the line is cleared before the done message


def test_failed_build_falls_back_to_reference(isolated, monkeypatch, capsys):
    def broken(spec):
        time.sleep(0.05)
        raise RuntimeError("Error building extension 'aware3d_kernels_cpu':\n"
                           "hashgrid_cpu.cpp:1:1: error: fake compiler error")

    monkeypatch.setattr(_build, "_run_build", broken)
    with pytest.warns(RuntimeWarning, match="falling back to the pure-PyTorch reference"):
        st = ensure_built("cpu")
    err = capsys.readouterr().err
    assert st["status"] == "reference" and st["action"] == "failed"
    assert "fake compiler error" in st["error"]
    assert st["log"] and "fake compiler error" in open(st["log"]).read()
    assert "building the CPU kernels failed after" in err
    assert "falls back to the pure-PyTorch reference" in err
    assert st["log"] in err and "AWARE3D_EXT_VERBOSE=1" in err
    with pytest.raises(_build.CompiledBackendUnavailable, match="fake compiler error"):
        _build.require_extension("cpu")
    assert _build.get_extension("cpu") is None  # remembered, not retried
    assert ensure_built("cpu") == st


def test_broken_cached_library_is_rebuilt(isolated, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_build, "_run_build", _fake_build(calls, seconds=0.05))
    ensure_built("cpu")
    _new_process()
    capsys.readouterr()

    def bad_load(spec):
        raise OSError("undefined symbol: _ZN2at4_ops")

    monkeypatch.setattr(_build, "_load_library", bad_load)
    st = ensure_built("cpu")
    assert st["status"] == "compiled" and st["action"] == "built" and len(calls) == 2
    assert "could not be loaded" in capsys.readouterr().err


def test_cuda_without_gpu_is_reference(isolated, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    st = ensure_built("cuda", warn=False)
    assert st["status"] == "reference" and "is_available" in st["error"]
    assert _build._kind(None) == "cpu"  # device=None means the CPU kernels without a GPU


def test_cached_real_build_loads_quietly_and_fast(capfd):
    # Only when the real extension is already built (the kernel tests build it); never compiles.
    if _build.kernel_status("cpu")["status"] not in ("cached", "compiled"):
        pytest.skip("the real CPU kernels are not built yet")
    capfd.readouterr()
    t = time.perf_counter()
    st = ensure_built("cpu")
    assert st["status"] == "compiled" and time.perf_counter() - t < 5.0
    assert "building" not in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# aware3d doctor
# --------------------------------------------------------------------------------------------
REPORT_KEYS = {"aware3d", "python", "platform", "torch", "devices", "cpu", "kernels", "caches",
               "optional_packages"}


def test_doctor_report_and_format(isolated, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_build, "_run_build", _fake_build(calls, seconds=0.05))
    monkeypatch.setattr(doctor, "OPTIONAL_PACKAGES", {"json": "stdlib", "aware3d_no_such_pkg": "x"})
    d = doctor.report(build=False)
    assert set(d) >= REPORT_KEYS and calls == []
    assert d["kernels"]["cpu"]["status"] == "not built"

    d = doctor.report()
    assert set(d) >= REPORT_KEYS and len(calls) == 1
    assert d["torch"]["version"] == torch.__version__
    assert d["torch"]["build"] in ("CPU",) or d["torch"]["build"].startswith(("CUDA", "ROCm"))
    assert d["devices"]["cuda_available"] == torch.cuda.is_available()
    assert d["cpu"]["cpu_count"] and d["cpu"]["torch_threads"] == torch.get_num_threads()
    assert d["cpu"]["model"]
    cpu = d["kernels"]["cpu"]
    assert cpu["status"] == "compiled" and cpu["path"] == str(_build.build_spec("cpu").folder)
    assert set(d["kernels"]) == {"cpu", "cuda"}
    assert d["caches"]["kernels"] == str(_build.ext_root())
    assert "fid_features" in d["caches"]
    assert d["optional_packages"]["json"]["importable"] is True
    assert d["optional_packages"]["aware3d_no_such_pkg"]["importable"] is False

    text = doctor.format_report(d)
    for needle in ("aware3d", d["aware3d"]["version"], torch.__version__, "devices",
                   d["cpu"]["model"], "compiled kernels", "CPU   compiled", cpu["path"],
                   d["caches"]["kernels"], "FID features", "optional packages", "json",
                   "aware3d_no_such_pkg", "no (ModuleNotFoundError"):
        assert needle in text, needle


def test_doctor_shows_fallback_error(isolated, monkeypatch):
    def broken(spec):
        raise RuntimeError("Error building extension:\nfake.cpp:3: error: no compiler today")

    monkeypatch.setattr(_build, "_run_build", broken)
    monkeypatch.setattr(doctor, "OPTIONAL_PACKAGES", {})
    d = doctor.report()
    assert d["kernels"]["cpu"]["status"] == "reference"
    text = doctor.format_report(d)
    assert "pure-PyTorch reference fallback" in text and "no compiler today" in text
    assert "compiler output:" in text
