"""Methods: one module per method. ``REGISTRY`` maps a method name to its module path; modules are
imported lazily (``get(name)``) so that importing this package stays cheap."""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "nerf": "aware3d.methods.nerf",
    "ngp": "aware3d.methods.ngp",
    "nerfw": "aware3d.methods.nerfw",
    "giraffe": "aware3d.methods.giraffe",
    "graf": "aware3d.methods.graf",
    "pigan": "aware3d.methods.pigan",
    "hologan": "aware3d.methods.hologan",
    "cips3d": "aware3d.methods.cips3d",
}


def get(name: str):
    """The module of method ``name`` (imported on first use)."""
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; known: {sorted(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])
