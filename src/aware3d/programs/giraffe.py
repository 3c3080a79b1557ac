"""GIRAFFE render programs: the controls of the paper (fig. 1, 5-8) on a trained run.

Each program draws ``samples`` scenes (4) from ``seed`` with the EMA generator, changes one factor
over ``frames`` frames (32) and writes ``<program>_seed<seed>.gif`` / ``.mp4`` (each frame a row of
the scenes) and ``.png`` (rows = scenes, columns = evenly spaced frames; RGBA for the object-only /
background-only programs).

Programs (:data:`PROGRAMS`): object translation (horizontal, depth, circle), object rotation,
camera elevation and rotation, shape / appearance / background interpolation, object-only and
background-only renders with alpha, and adding more objects than seen in training.

They use only the run's GIRAFFE object (``gan``: its config, ``sample_inputs``, ``sample_latents``,
``sample_object_poses``, ``camera_pose``) and its EMA generator; the method module
(:mod:`aware3d.methods.giraffe`) lists them in its ``METHOD``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from ..render.cameras import rotation_z
from . import Program, canonical, generate_frames

def _clone(inputs: dict) -> dict:
    return {k: v.clone() for k, v in inputs.items()}


def _pingpong(n: int) -> torch.Tensor:
    """n values going 0 -> 1 -> 0 smoothly (a loop for GIFs): (1 - cos(2 pi s)) / 2."""
    s = torch.arange(n, dtype=torch.float32) / n
    return 0.5 * (1 - torch.cos(2 * math.pi * s))


def _sweep(n: int) -> torch.Tensor:
    """n values in [-1, 1] going 0 -> 1 -> 0 -> -1 -> 0 (sin loop)."""
    return torch.sin(2 * math.pi * torch.arange(n, dtype=torch.float32) / n)


def _ground_axes(c2w: torch.Tensor):
    """Per-scene unit vectors in the xy-plane: camera right, and forward (away from the camera)."""
    right = c2w[:, :3, 0].clone()
    fwd = -c2w[:, :3, 2].clone()
    right[:, 2] = 0
    fwd[:, 2] = 0
    return (right / right.norm(dim=-1, keepdim=True).clamp_min(1e-8),
            fwd / fwd.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def _translation_amplitude(cfg) -> float:
    half = max(abs(cfg.translation_max[0] - cfg.translation_min[0]),
               abs(cfg.translation_max[1] - cfg.translation_min[1])) / 2
    return max(half, 2.0 * max(cfg.scale_max))


# Each program: (gan, base inputs, other inputs, n_frames, generator) -> [(inputs, render kwargs)].
FrameFn = Callable[..., list]


def _translation(kind: str) -> FrameFn:
    def frames(gan, base, other, n, g=None):
        amp = _translation_amplitude(gan.cfg)
        right, fwd = _ground_axes(base["c2w"])
        out = []
        for k in range(n):
            x = _clone(base)
            if kind == "circle":
                a = 2 * math.pi * k / n
                t = x["obj_translation"][:, 0]
                t[:, 0], t[:, 1] = amp * math.cos(a), amp * math.sin(a)
            else:
                axis = right if kind == "horizontal" else fwd
                x["obj_translation"][:, 0, :2] += float(_sweep(n)[k]) * amp * axis[:, :2]
            out.append((x, {}))
        return out
    return frames


def _object_rotation(gan, base, other, n, g=None):
    out = []
    for k in range(n):
        x = _clone(base)
        x["obj_rotation"] = x["obj_rotation"] @ rotation_z(torch.tensor(360.0 * k / n))
        out.append((x, {}))
    return out


def _camera(kind: str) -> FrameFn:
    def frames(gan, base, other, n, g=None):
        lo, hi = gan.cfg.elevation_range
        az_lo, az_hi = gan.cfg.azimuth_range
        out = []
        for k in range(n):
            x = _clone(base)
            B = x["c2w"].shape[0]
            if kind == "elevation":
                a, b = max(lo - 10.0, -5.0), min(hi + 25.0, 85.0)
                el = a + (b - a) * float(_pingpong(n)[k])
                x["c2w"] = gan.camera_pose(torch.full((B,), el), torch.full((B,), 0.5 * (az_lo + az_hi)))
            else:
                el = 0.5 * (lo + hi)
                if az_hi - az_lo >= 180:
                    az = az_lo + 360.0 * k / n
                else:
                    amp = max(0.5 * (az_hi - az_lo), 30.0)
                    az = 0.5 * (az_lo + az_hi) + amp * float(_sweep(n)[k])
                x["c2w"] = gan.camera_pose(torch.full((B,), el), torch.full((B,), az))
            out.append((x, {}))
        return out
    return frames


def _interpolate(keys) -> FrameFn:
    def frames(gan, base, other, n, g=None):
        out = []
        for k in range(n):
            w = float(_pingpong(n)[k])
            x = _clone(base)
            for key in keys:
                x[key] = torch.lerp(base[key], other[key], w)
            out.append((x, {}))
        return out
    return frames


def _only(background: bool) -> FrameFn:
    def frames(gan, base, other, n, g=None):
        out = []
        for x, _ in _object_rotation(gan, base, other, n):
            out.append((x, {"objects": [] if background else None, "background": background,
                            "return_alpha": True}))
        return out
    return frames


def _add_objects(gan, base, other, n, g=None, extra: int = 4):
    """Frame k renders the first k objects of a scene with n_objects + ``extra`` objects (more
    than any training scene), on the background."""
    cfg = gan.cfg
    K = cfg.n_objects + extra
    spread = {}
    if max(abs(a - b) for a, b in zip(cfg.translation_min[:2], cfg.translation_max[:2])) == 0:
        amp = _translation_amplitude(cfg)  # objects fixed at the origin in training: spread them
        spread = dict(translation_min=(-amp, -amp, cfg.translation_min[2]),
                      translation_max=(amp, amp, cfg.translation_max[2]), check_collision=True)
    B = base["c2w"].shape[0]
    lat = gan.sample_latents(B, g, K)
    s, t, R = gan.sample_object_poses(B, g, K, **spread)
    x = _clone(base)
    x.update(z_shape_obj=lat["z_shape_obj"], z_app_obj=lat["z_app_obj"], obj_scale=s,
             obj_translation=t, obj_rotation=R)
    return [(x, {"objects": list(range(k))}) for k in range(K + 1)]


_FRAMES: dict[str, tuple[str, FrameFn]] = {
    "object-translation-horizontal": ("the first object moves left and right across the image",
                                      _translation("horizontal")),
    "object-translation-depth": ("the first object moves towards and away from the camera", _translation("depth")),
    "object-translation-circle": ("the first object moves on a circle on the ground", _translation("circle")),
    "object-rotation": ("every object turns about the vertical axis", _object_rotation),
    "camera-elevation": ("the camera rises and falls, beyond the training range", _camera("elevation")),
    "camera-rotation": ("the camera turns about the scene", _camera("rotation")),
    "interpolate-shape": ("the objects' shape codes move to another scene's and back", _interpolate(["z_shape_obj"])),
    "interpolate-appearance": ("the objects' appearance codes move to another scene's and back",
                               _interpolate(["z_app_obj"])),
    "interpolate-background": ("the background codes move to another scene's and back",
                               _interpolate(["z_shape_bg", "z_app_bg"])),
    "object-only": ("the objects alone, with alpha, turning", _only(background=False)),
    "background-only": ("the background alone, with alpha", _only(background=True)),
    "add-objects": ("objects added one by one, up to four more than any training scene", _add_objects),
}


@torch.no_grad()
def render_frames(gan, G, program: str, seed: int = 0, n_frames: int = 32, n_samples: int = 4,
                  chunk: int = 16) -> torch.Tensor:
    """Frames of a program: (T, n_samples, H, W, C) in [0, 1] on the CPU, C = 4 (RGBA) for the
    object-only / background-only programs, else 3. ``gan``: the run's GIRAFFE object; ``G``: its
    generator."""
    program = canonical(program)
    if program not in _FRAMES:
        raise ValueError(f"program: expected one of {list(_FRAMES)}, got {program!r}")
    g = torch.Generator().manual_seed(int(seed))
    base = gan.sample_inputs(n_samples, g, train=False)
    other = gan.sample_inputs(n_samples, g, train=False)

    def to_image(out):  # RGBA where the program asks the generator for alpha
        return (torch.cat([out["image"], out["alpha"]], 1) if isinstance(out, dict) else out).clamp(0, 1)

    return generate_frames(G, _FRAMES[program][1](gan, base, other, n_frames, g), n_samples, to_image, chunk)


def render(run, program: str, out_dir, seed: int = 0, n_frames: int = 32, n_samples: int = 4,
           fps: float = 16.0) -> dict:
    """Render ``program`` for a loaded run's EMA generator into ``out_dir``; returns
    ``{"gif", "mp4", "png"}`` paths."""
    from ..train.io import make_grid, save_png, save_video

    program = canonical(program)
    frames = render_frames(run.gan, run.G, program, seed=seed, n_frames=n_frames, n_samples=n_samples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    T, B, H, W, C = frames.shape
    video = frames[..., :3]
    if C == 4:  # composite on white for the videos
        video = frames[..., :3] * frames[..., 3:] + (1 - frames[..., 3:])
    rows = [make_grid(video[k], nrow=B) for k in range(T)]
    stem = f"{program}_seed{seed}"
    files = {"gif": save_video(out / f"{stem}.gif", rows, fps=fps),
             "mp4": save_video(out / f"{stem}.mp4", rows, fps=fps)}
    cols = min(T, 8)
    idx = torch.linspace(0, T - 1, cols).round().long()
    sel = frames[idx].permute(1, 0, 2, 3, 4).reshape(B * cols, H, W, C)
    files["png"] = save_png(out / f"{stem}.png", make_grid(sel, nrow=cols, pad_value=1.0))
    return {k: str(v) for k, v in files.items()}


def _program(name: str):
    def fn(run, out_dir, seed: int = 0, frames: int | None = None, samples: int | None = None) -> dict:
        return render(run, name, out_dir, seed=seed, n_frames=frames or 32, n_samples=samples or 4)
    return fn


PROGRAMS = tuple(Program(name, desc, _program(name)) for name, (desc, _) in _FRAMES.items())
