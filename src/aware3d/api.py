"""The public Python API: load a trained run, train a method, look methods up.

    import aware3d
    run = aware3d.load("runs/ngp-lego")          # any method's run folder
    out = run.render(run.orbit_camera(30.0))     # fields: a camera -> color / depth / opacity
    run = aware3d.load("runs/giraffe-objects")
    img = run.render(run.sample(seed=3))["color"]  # GANs: generator inputs -> images

Everything here goes through the registry (:mod:`aware3d.registry`) and the method surface
(:mod:`aware3d.methods.base`); nothing asks which kind of method a run is.
"""
from __future__ import annotations

from pathlib import Path

from . import registry

__all__ = ["load", "train", "method", "list_methods"]


def method(name: str):
    """The surface of method ``name`` (:class:`aware3d.methods.base.FieldMethod` or
    :class:`~aware3d.methods.base.GenerativeMethod`)."""
    return registry.get(name)


def list_methods() -> dict[str, str]:
    """``{name: one-line summary}`` of every method, in registry order."""
    return {n: e.summary for n, e in registry.METHODS.items()}


def run_method(run_dir) -> str:
    """The method name a run folder was trained with (a clear error when it is not a run folder)."""
    from .train.io import load_run_config

    p = Path(run_dir)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: run folder not found (expected the --out folder of `aware3d train`)")
    name = load_run_config(p).get("method")
    if name not in registry.METHODS:
        raise ValueError(f"{p}: its config names method {name!r}; this aware3d knows "
                         f"{', '.join(registry.METHODS)}")
    return name


def load(run_dir, device=None, checkpoint=None):
    """A trained run, ready to render: ``device`` (default CUDA when available, else the CPU),
    ``checkpoint`` a step or a file (default the latest). Returns a
    :class:`aware3d.methods.base.FieldRun` or :class:`~aware3d.methods.base.GenerativeRun`."""
    return registry.get(run_method(run_dir)).load(run_dir, device=device, checkpoint=checkpoint)


def train(method_name: str, data, out=None, **options) -> Path:
    """Train ``method_name`` on ``data``; ``options`` are those of the method's ``train``
    (``preset``, ``max_steps``, ``max_minutes``, ``resume``, ``seed``, ``overrides``...). Returns
    the run folder."""
    return registry.get(method_name).train(data, out=out, **options)
