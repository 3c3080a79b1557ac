"""Render programs: what ``aware3d render RUN --program NAME`` plays, in one place.

A program is a named function ``fn(run, out_dir, **options) -> {name: path}`` of a loaded run
(:func:`aware3d.load`) with a one-line description. Names are spelled with hyphens
(``test-views``, ``camera-elevation``); underscores are accepted as aliases. Each function takes
only the options it uses (``frames``, ``seed``, ``path``, ``samples``...); the command line passes
the options a user gave, and an option a program does not take is a clear error.

- :mod:`aware3d.programs.field`: camera programs of a radiance field (turntable, test views, a
  camera path file).
- :mod:`aware3d.programs.nerfw`: NeRF-W's appearance interpolation and its static / transient /
  uncertainty renders.
- :mod:`aware3d.programs.gan`: the controls every 3D-aware GAN shares (camera yaw / pitch sweeps,
  latent interpolation per latent group, fixed-seed grid).
- :mod:`aware3d.programs.giraffe`: GIRAFFE's scene controls (move, rotate, add and remove objects).

Programs only use what a run object gives them (its model or generator and config); they never
import a method module, so methods can import their programs without a circle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

__all__ = ["Program", "canonical", "program_table", "find_program", "generate_frames"]


@dataclass(frozen=True)
class Program:
    name: str                # canonical spelling, with hyphens
    description: str         # one line
    fn: Callable             # fn(run, out_dir, **options) -> {name: path}


def canonical(name: str) -> str:
    """The one spelling of a program name: lower case, hyphens (``camera_elevation`` ->
    ``camera-elevation``)."""
    return str(name).strip().lower().replace("_", "-")


def program_table(programs: Iterable[Program]) -> dict[str, Program]:
    """``{name: Program}`` in the given order; names must be canonical and unique."""
    table: dict[str, Program] = {}
    for p in programs:
        if p.name != canonical(p.name) or p.name in table:
            raise ValueError(f"program name {p.name!r}: expected a unique hyphenated name")
        table[p.name] = p
    return table


def find_program(programs: Mapping[str, Program], name: str, owner: str = "this run") -> Program:
    """The program called ``name`` (hyphens or underscores), or a ValueError listing the known ones
    (``owner`` names whose programs they are: "giraffe runs")."""
    key = canonical(name)
    if key not in programs:
        raise ValueError(f"--program: expected one of the programs of {owner} "
                         f"({', '.join(programs) or 'none'}), got {name!r}")
    return programs[key]


def generate_frames(G, frames, n_samples: int, to_image: Callable, chunk: int = 16):
    """Run the generator ``G`` on each frame's inputs: ``frames`` yields ``(inputs, kwargs)`` with
    inputs batch-first (``n_samples`` scenes), evaluated in chunks of ``chunk`` scenes on G's device;
    ``to_image(output) -> (B, C, H, W)`` in [0, 1]. Returns (T, n_samples, H, W, C) on the CPU."""
    import torch

    dev = next(G.parameters()).device
    out = []
    with torch.no_grad():
        for inputs, kw in frames:
            parts = []
            for a in range(0, n_samples, chunk):
                x = {k: (v[a:a + chunk].to(dev) if torch.is_tensor(v) else v) for k, v in inputs.items()}
                parts.append(to_image(G(x, **kw)).float().cpu())
            out.append(torch.cat(parts).permute(0, 2, 3, 1))
    return torch.stack(out)
