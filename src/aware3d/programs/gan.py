"""The controls every 3D-aware GAN shares, as render programs: camera yaw / pitch sweeps, latent
interpolation per latent group (``interpolate-shape``, ``interpolate-appearance``, ...) and a
fixed-seed grid. Each writes ``<program>_seed<seed>.gif`` / ``.mp4`` (every frame: the samples side
by side) and ``.png`` (rows = samples, columns = evenly spaced frames).

They use only what the run's GAN object gives (``sample_inputs``, ``camera_from_angles``,
``angle_ranges``, ``latent_groups``, ``image_range``) and its EMA generator.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..train.gan import to_unit
from . import Program, canonical, generate_frames

_BASE_PROGRAMS = ("yaw-sweep", "pitch-sweep", "seed-grid")


def program_names(latent_groups: Mapping[str, Sequence[str]]) -> tuple:
    """``yaw-sweep``, ``pitch-sweep``, ``seed-grid`` and ``interpolate-<group>`` per latent group."""
    return _BASE_PROGRAMS + tuple(f"interpolate-{g}" for g in latent_groups)


def sweep_values(lo: float, hi: float, mean: float, n: int) -> torch.Tensor:
    """``n`` angles of a looping sweep: a full turn when [lo, hi] spans >= 359 degrees, else
    mean + a sin(2 pi k / n) with a = the larger distance from the mean to a bound."""
    k = torch.arange(n, dtype=torch.float32)
    if hi - lo >= 359.0:
        return lo + 360.0 * k / n
    amp = max(hi - mean, mean - lo, 1e-3)
    return mean + amp * torch.sin(2 * math.pi * k / n)


def _slerp_or_lerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of Gaussian latents (norm kept), linear when nearly parallel."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    theta = torch.acos(cos.clamp(-1, 1))
    s = torch.sin(theta)
    ok = s > 1e-4
    wa = torch.where(ok, torch.sin((1 - w) * theta) / s.clamp_min(1e-4), torch.full_like(s, 1 - w))
    wb = torch.where(ok, torch.sin(w * theta) / s.clamp_min(1e-4), torch.full_like(s, w))
    view = (-1,) + (1,) * (a.dim() - 1)
    return wa.view(view) * a + wb.view(view) * b


def _program_inputs(method, program: str, base: dict, other: dict, n_frames: int) -> list[dict]:
    """The generator inputs of each frame of ``program``."""
    B = next(v for v in base.values() if torch.is_tensor(v)).shape[0]
    ranges = method.angle_ranges()
    frames = []
    if program in _BASE_PROGRAMS:
        key = "pitch" if program == "pitch-sweep" else "yaw"
        vals = sweep_values(*ranges[key], n_frames)
        for v in vals.tolist():
            yaw = v if key == "yaw" else ranges["yaw"][2]
            pitch = v if key == "pitch" else ranges["pitch"][2]
            x = dict(base)
            x["c2w"] = method.camera_from_angles(torch.full((B,), yaw), torch.full((B,), pitch))
            frames.append(x)
        return frames
    group = program[len("interpolate-"):]
    keys = method.latent_groups[group]
    for k in range(n_frames):
        w = 0.5 * (1 - math.cos(2 * math.pi * k / n_frames))  # 0 -> 1 -> 0: a loop
        x = dict(base)
        x["c2w"] = method.camera_from_angles(torch.full((B,), ranges["yaw"][2]),
                                             torch.full((B,), ranges["pitch"][2]))
        for key in keys:
            x[key] = _slerp_or_lerp(base[key], other[key], w)
        frames.append(x)
    return frames


@torch.no_grad()
def render_program_frames(method, G, program: str, seed: int = 0, n_frames: int = 24,
                          n_samples: int = 4, chunk: int = 8) -> torch.Tensor:
    """Frames of a control program: (T, n_samples, H, W, 3) in [0, 1].

    ``yaw-sweep`` / ``pitch-sweep``: the camera moves (yaw: a full turn if the prior covers the
    circle, else a sweep over the prior's range) at the prior's mean of the other angle;
    ``interpolate-<group>``: the group's latents go from the ``seed`` scene to another one and back
    (spherical interpolation), at the mean camera; ``seed-grid``: like ``yaw-sweep`` (used with
    many samples for a fixed-seed grid)."""
    program = canonical(program)
    names = program_names(method.latent_groups)
    if program not in names:
        raise ValueError(f"program: expected one of {list(names)}, got {program!r}")
    g = torch.Generator().manual_seed(int(seed))
    base = method.sample_inputs(n_samples, g, train=False)
    other = method.sample_inputs(n_samples, g, train=False)
    frames = ((x, {}) for x in _program_inputs(method, program, base, other, n_frames))
    return generate_frames(G, frames, n_samples, lambda y: to_unit(y, method.image_range), chunk)


def render_program(method, G, program: str, out_dir, seed: int = 0, n_frames: int | None = None,
                   n_samples: int | None = None, fps: float = 12.0, stem: str | None = None) -> dict:
    """Render a control program and write ``<stem>.gif``, ``<stem>.mp4`` (every frame: the samples
    side by side; a 4-wide grid for ``seed-grid``) and ``<stem>.png`` (rows = samples, columns = up
    to 8 evenly spaced frames; for ``seed-grid`` the grid of all samples at the middle frame).
    Returns ``{"gif", "mp4", "png"}`` paths (strings)."""
    from ..train.io import make_grid, save_png, save_video

    program = canonical(program)
    grid = program == "seed-grid"
    n_samples = n_samples or (16 if grid else 4)
    n_frames = n_frames or (24 if not grid else 16)
    frames = render_program_frames(method, G, program, seed=seed, n_frames=n_frames, n_samples=n_samples)
    T, B, H, W, C = frames.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{program}_seed{seed}"
    nrow = int(math.ceil(math.sqrt(B))) if grid else B
    rows = [make_grid(frames[k], nrow=nrow) for k in range(T)]
    files = {"gif": save_video(out / f"{stem}.gif", rows, fps=fps),
             "mp4": save_video(out / f"{stem}.mp4", rows, fps=fps)}
    if grid:
        still = make_grid(frames[0], nrow=nrow)
    else:
        cols = min(T, 8)
        idx = torch.linspace(0, T - 1, cols).round().long()
        still = make_grid(frames[idx].permute(1, 0, 2, 3, 4).reshape(B * cols, H, W, C), nrow=cols)
    files["png"] = save_png(out / f"{stem}.png", still)
    return {k: str(v) for k, v in files.items()}


_DESCRIPTIONS = {
    "yaw-sweep": "the camera turns about the scene (a full turn, or over the pose prior's yaw range)",
    "pitch-sweep": "the camera moves up and down over the pose prior's pitch range",
    "seed-grid": "a grid of 16 samples from one seed, turning with the camera",
}


def programs_for(latent_groups: Mapping[str, Sequence[str]]) -> tuple[Program, ...]:
    """The shared control programs of a GAN with these latent groups."""
    def make(name):
        def fn(run, out_dir, seed: int = 0, frames: int | None = None, samples: int | None = None) -> dict:
            return render_program(run.gan, run.G, name, out_dir, seed=seed, n_frames=frames,
                                  n_samples=samples)
        return fn

    out = []
    for name in program_names(latent_groups):
        group = name[len("interpolate-"):] if name.startswith("interpolate-") else None
        desc = _DESCRIPTIONS.get(name) or (
            f"the {group} latents ({', '.join(latent_groups[group])}) move to another sample's and back")
        out.append(Program(name, desc, make(name)))
    return tuple(out)
