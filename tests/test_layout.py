"""The package's shape: no import circles, no upward imports, a light command line, and command
handlers that never ask which kind of method they have.

The import graph is read statically from every ``import`` statement in src/aware3d (module level
and inside functions alike), so a lazy import inside a function counts as an edge too.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "aware3d"

# layers from the bottom up: a module may import its own layer and the ones below
LAYERS = [
    ("aware3d.utils", "aware3d.render"),
    ("aware3d.kernels",),
    ("aware3d.fields", "aware3d.nets", "aware3d.data", "aware3d.metrics"),
    ("aware3d.train",),
    ("aware3d.programs",),
    ("aware3d.methods", "aware3d.fit", "aware3d.fit_video", "aware3d.doctor"),
    ("aware3d.registry",),
    ("aware3d.api",),
    ("aware3d.viewer",),
    ("aware3d.commands",),
    ("aware3d.cli", "aware3d"),
    ("aware3d.__main__",),
]


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """``{module: {aware3d modules it imports}}`` from every import statement."""
    mods = _modules()
    graph = {}
    for name, (path, is_pkg) in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    pkg = pkg[:len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != name and t.startswith("aware3d"):
                    deps.add(t)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{module}: not in any layer of tests/test_layout.py"
    return best[0]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and "aware3d.methods.base" in graph["aware3d.methods.giraffe"]
    assert cycles(graph) == []


def test_no_upward_imports():
    graph = import_graph()
    up = [(m, d) for m, deps in graph.items() for d in deps if _layer(d) > _layer(m)]
    assert up == []


def test_cli_imports_only_the_registry_at_module_level():
    tree = ast.parse((SRC / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    package = [n.module for n in top if isinstance(n, ast.ImportFrom) and n.level]
    assert package == ["registry"]


def test_command_handlers_never_branch_on_the_kind_of_method():
    from aware3d import registry

    text = (SRC / "commands.py").read_text()
    names = "|".join(registry.METHODS)
    # a method name in a comparison or membership test, or a kind test
    branch = re.compile(rf'(==|!=|\bin)\s*\(?\s*"({names})"|\.kind\s*(==|!=|\bin\b)|RECON_METHODS|GAN_METHODS'
                        r'|isinstance\([^)]*(FieldRun|GenerativeRun|FieldMethod|GenerativeMethod)')
    assert [m.group(0) for m in branch.finditer(text)] == []
    assert branch.search('if run.method.kind == "gan":') and branch.search('if method in ("nerf", "ngp")')
    # the registry is defined once: no other module lists the method names as a tuple or dict
    for p in SRC.rglob("*.py"):
        if p.name != "registry.py":
            assert not re.search(r'\("nerf", "ngp"|"giraffe", "graf"', p.read_text()), p
