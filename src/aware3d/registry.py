"""The one list of aware3d's methods.

Every part of aware3d that needs to know which methods exist (the command line, the commands,
``aware3d.load``, the tests) reads it from here. A method is one module under
:mod:`aware3d.methods` that defines ``METHOD`` (a :class:`aware3d.methods.base.FieldMethod` or
:class:`aware3d.methods.base.GenerativeMethod`); adding a method is that file plus one line below.

This module imports nothing heavy (no torch) so that ``aware3d --help`` stays fast; the method's
module is imported by :func:`get` on first use.
"""
from __future__ import annotations

import importlib
from typing import NamedTuple


class Entry(NamedTuple):
    module: str        # the module that defines METHOD
    kind: str          # "field" (posed photos -> radiance field) or "gan" (image collection -> generator)
    summary: str       # one line for --help and listings


METHODS: dict[str, Entry] = {
    "nerf": Entry("aware3d.methods.nerf", "field", "NeRF: MLP radiance field, hierarchical sampling (the reference)"),
    "ngp": Entry("aware3d.methods.ngp", "field", "hash-grid NeRF with occupancy marching (Instant-NGP style; the default)"),
    "nerfw": Entry("aware3d.methods.nerfw", "field", "NeRF in the Wild: appearance and transient embeddings (mlp or ngp backbone)"),
    "dnerf": Entry("aware3d.methods.dnerf", "field", "D-NeRF: dynamic scenes, a deformation into a canonical NeRF (--cam: time CAM)"),
    "tnerf": Entry("aware3d.methods.tnerf", "field", "T-NeRF: dynamic scenes, time as an input of the NeRF (--cam: time CAM)"),
    "giraffe": Entry("aware3d.methods.giraffe", "gan", "GIRAFFE: compositional feature fields, objects you can move"),
    "graf": Entry("aware3d.methods.graf", "gan", "GRAF: conditional radiance field trained on patches"),
    "pigan": Entry("aware3d.methods.pigan", "gan", "pi-GAN: FiLM-SIREN radiance field, progressive growing"),
    "hologan": Entry("aware3d.methods.hologan", "gan", "HoloGAN: rigidly rotated 3D feature volumes"),
    "cips3d": Entry("aware3d.methods.cips3d", "gan", "CIPS-3D: shallow NeRF + 2D implicit neural renderer"),
    "volumegan": Entry("aware3d.methods.volumegan", "gan", "VolumeGAN: structural feature volume + textural field + 2D neural renderer"),
    "stylenerf": Entry("aware3d.methods.stylenerf", "gan", "StyleNeRF: style-modulated NeRF at low resolution + StyleGAN2 upsampler"),
}


def names(kind: str | None = None) -> tuple[str, ...]:
    """The method names, optionally of one kind ("field" or "gan"), in registry order."""
    return tuple(n for n, e in METHODS.items() if kind is None or e.kind == kind)


def get(name: str):
    """The method ``name``'s surface (its module's ``METHOD``), imported on first use."""
    if name not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {name!r}")
    return importlib.import_module(METHODS[name].module).METHOD
