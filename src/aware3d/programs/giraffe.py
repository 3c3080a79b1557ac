"""GIRAFFE render programs: the controls of the paper (fig. 1, 5-8) on a trained run.

``render(run_dir, program, out_dir=None, seed=0, n_frames=32, n_samples=4)`` draws ``n_samples``
scenes from ``seed`` with the EMA generator, changes one factor over ``n_frames`` frames and writes
``<program>.gif``, ``<program>.mp4`` (each frame a row of the scenes) and ``<program>.png`` (rows =
scenes, columns = evenly spaced frames; RGBA for the object-only / background-only programs).

Programs (``PROGRAMS``): object translation (horizontal, depth, circle), object rotation, camera
elevation and rotation, shape / appearance / background interpolation, object-only and
background-only renders with alpha, and adding more objects than seen in training.

``export_object_mesh(run_dir, seed, object_index, resolution, out_path)``: marching cubes on one
generated object's density in its canonical box, written as PLY in world coordinates.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from ..methods import giraffe as gm

PROGRAMS = (
    "object_translation_horizontal",
    "object_translation_depth",
    "object_translation_circle",
    "object_rotation",
    "camera_elevation",
    "camera_rotation",
    "interpolate_shape",
    "interpolate_appearance",
    "interpolate_background",
    "object_only",
    "background_only",
    "add_objects",
)


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


def _translation_amplitude(cfg: gm.GiraffeConfig) -> float:
    half = max(abs(cfg.translation_max[0] - cfg.translation_min[0]),
               abs(cfg.translation_max[1] - cfg.translation_min[1])) / 2
    return max(half, 2.0 * max(cfg.scale_max))


# Each program: (cfg, base inputs, other inputs, n_frames, generator) -> [(inputs, render kwargs)].
FrameFn = Callable[[gm.GiraffeConfig, dict, dict, int], list]


def _translation(kind: str) -> FrameFn:
    def frames(cfg, base, other, n, g=None):
        amp = _translation_amplitude(cfg)
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


def _object_rotation(cfg, base, other, n, g=None):
    out = []
    for k in range(n):
        x = _clone(base)
        x["obj_rotation"] = x["obj_rotation"] @ gm.rotation_z(torch.tensor(360.0 * k / n))
        out.append((x, {}))
    return out


def _camera(kind: str) -> FrameFn:
    def frames(cfg, base, other, n, g=None):
        lo, hi = cfg.elevation_range
        az_lo, az_hi = cfg.azimuth_range
        out = []
        for k in range(n):
            x = _clone(base)
            B = x["c2w"].shape[0]
            if kind == "elevation":
                a, b = max(lo - 10.0, -5.0), min(hi + 25.0, 85.0)
                el = a + (b - a) * float(_pingpong(n)[k])
                x["c2w"] = gm.camera_pose(cfg, torch.full((B,), el), torch.full((B,), 0.5 * (az_lo + az_hi)))
            else:
                el = 0.5 * (lo + hi)
                if az_hi - az_lo >= 180:
                    az = az_lo + 360.0 * k / n
                else:
                    amp = max(0.5 * (az_hi - az_lo), 30.0)
                    az = 0.5 * (az_lo + az_hi) + amp * float(_sweep(n)[k])
                x["c2w"] = gm.camera_pose(cfg, torch.full((B,), el), torch.full((B,), az))
            out.append((x, {}))
        return out
    return frames


def _interpolate(keys) -> FrameFn:
    def frames(cfg, base, other, n, g=None):
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
    def frames(cfg, base, other, n, g=None):
        out = []
        for x, _ in _object_rotation(cfg, base, other, n):
            out.append((x, {"objects": [] if background else None, "background": background,
                            "return_alpha": True}))
        return out
    return frames


def _add_objects(cfg, base, other, n, g=None, extra: int = 4):
    """Frame k renders the first k objects of a scene with n_objects + ``extra`` objects (more
    than any training scene), on the background."""
    K = cfg.n_objects + extra
    c = cfg
    if max(abs(a - b) for a, b in zip(cfg.translation_min[:2], cfg.translation_max[:2])) == 0:
        amp = _translation_amplitude(cfg)  # objects fixed at the origin in training: spread them
        c = gm.replace_config(cfg, translation_min=(-amp, -amp, cfg.translation_min[2]),
                              translation_max=(amp, amp, cfg.translation_max[2]), check_collision=True)
    B = base["c2w"].shape[0]
    lat = gm.sample_latents(cfg, B, g, K)
    s, t, R = gm.sample_object_poses(c, B, g, K)
    x = _clone(base)
    x.update(z_shape_obj=lat["z_shape_obj"], z_app_obj=lat["z_app_obj"], obj_scale=s,
             obj_translation=t, obj_rotation=R)
    return [(x, {"objects": list(range(k))}) for k in range(K + 1)]


_FRAMES: dict[str, FrameFn] = {
    "object_translation_horizontal": _translation("horizontal"),
    "object_translation_depth": _translation("depth"),
    "object_translation_circle": _translation("circle"),
    "object_rotation": _object_rotation,
    "camera_elevation": _camera("elevation"),
    "camera_rotation": _camera("rotation"),
    "interpolate_shape": _interpolate(["z_shape_obj"]),
    "interpolate_appearance": _interpolate(["z_app_obj"]),
    "interpolate_background": _interpolate(["z_shape_bg", "z_app_bg"]),
    "object_only": _only(background=False),
    "background_only": _only(background=True),
    "add_objects": _add_objects,
}
assert set(_FRAMES) == set(PROGRAMS)


@torch.no_grad()
def render_frames(G: gm.GiraffeGenerator, cfg: gm.GiraffeConfig, program: str, seed: int = 0,
                  n_frames: int = 32, n_samples: int = 4, chunk: int = 16) -> torch.Tensor:
    """Frames of a program: (T, n_samples, H, W, C) in [0, 1], C = 4 (RGBA) for the object-only /
    background-only programs, else 3."""
    if program not in _FRAMES:
        raise ValueError(f"program: expected one of {list(PROGRAMS)}, got {program!r}")
    g = torch.Generator().manual_seed(int(seed))
    base = gm.sample_inputs(cfg, n_samples, g, train=False)
    other = gm.sample_inputs(cfg, n_samples, g, train=False)
    frames = []
    for inputs, kw in _FRAMES[program](cfg, base, other, n_frames, g):
        parts = []
        for a in range(0, n_samples, chunk):
            x = {k: v[a:a + chunk] for k, v in inputs.items()}
            out = G(x, **kw)
            if isinstance(out, dict):
                img = torch.cat([out["image"], out["alpha"]], 1)
            else:
                img = out
            parts.append(img.float())
        frames.append(torch.cat(parts).permute(0, 2, 3, 1).clamp(0, 1))
    return torch.stack(frames)


def render(run_dir, program: str, out_dir=None, seed: int = 0, n_frames: int = 32, n_samples: int = 4,
           fps: float = 16.0, device: str = "cpu") -> dict:
    """Render ``program`` for the run's EMA generator; returns ``{"gif", "mp4", "png"}`` paths."""
    from ..train.io import make_grid, save_png, save_video

    cfg, G = gm.load_generator(run_dir, device=device)
    frames = render_frames(G, cfg, program, seed=seed, n_frames=n_frames, n_samples=n_samples)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "render" / program
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
    return files


# --------------------------------------------------------------------------------------------------
# Mesh export


@torch.no_grad()
def object_density_grid(G: gm.GiraffeGenerator, z_shape: torch.Tensor, resolution: int = 128,
                        extent: float = 1.1, chunk: int = 65536) -> torch.Tensor:
    """Density (relu of the raw field output) of one object on a ``resolution``^3 grid spanning
    [-extent, extent]^3 of its canonical box, indexed (x, y, z). z_shape: (Z,)."""
    lin = torch.linspace(-extent, extent, resolution)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
    out = []
    z = z_shape.reshape(1, -1).float()
    for a in range(0, pts.shape[0], chunk):
        p = pts[a:a + chunk]
        out.append(G.object_density(p.unsqueeze(0), z)[0].float())
    return torch.cat(out).clamp_min(0).reshape(resolution, resolution, resolution)


def export_object_mesh(run_dir, seed: int = 0, object_index: int = 0, resolution: int = 128,
                       out_path=None, threshold: float | None = None, world: bool = True) -> dict:
    """Marching cubes (skimage) on object ``object_index`` of the scene drawn from ``seed``: its
    density in the canonical box [-1.1, 1.1]^3 (zero outside, as in the generator), at ``threshold`` (default 10 per world unit, or half
    the maximum when the field never reaches it). Vertices are mapped to the world with the object's
    pose k(x) = R diag(s) x + t unless ``world=False``. Writes a binary PLY and returns a summary."""
    from ..utils.mesh import marching_cubes_mesh, write_ply

    cfg, G = gm.load_generator(run_dir)
    if not 0 <= object_index < cfg.n_objects:
        raise ValueError(f"object_index: expected 0..{cfg.n_objects - 1}, got {object_index}")
    g = torch.Generator().manual_seed(int(seed))
    x = gm.sample_inputs(cfg, 1, g, train=False)
    ext = 1.0 + cfg.box_padding
    vol = object_density_grid(G, x["z_shape_obj"][0, object_index], resolution, ext)
    level = 10.0 if threshold is None else float(threshold)
    vmax = float(vol.max())
    if threshold is None and vmax <= level:
        level = 0.5 * vmax
    # the object has no density outside its box (the generator masks it): a layer of zeros
    # closes surfaces that reach the box walls
    step = 2 * ext / (resolution - 1)
    padded = torch.nn.functional.pad(vol, (1, 1, 1, 1, 1, 1))
    verts, faces = marching_cubes_mesh(padded.numpy(), level, (-ext - step,) * 3, (ext + step,) * 3)
    if world and len(verts):
        v = torch.from_numpy(verts).unsqueeze(0)
        verts = gm.object_to_world(v, x["obj_scale"][:, object_index], x["obj_translation"][:, object_index],
                                   x["obj_rotation"][:, object_index])[0].numpy()
    out = Path(out_path) if out_path is not None else Path(run_dir) / f"mesh_seed{seed}_object{object_index}.ply"
    write_ply(out, verts, faces)
    return {"path": str(out), "n_vertices": int(len(verts)), "n_faces": int(len(faces)),
            "threshold": level, "density_max": vmax, "resolution": resolution,
            "frame": "world" if world else "canonical box"}
