"""A textured synthetic capture for testing structure from motion (:mod:`aware3d.data.process`).

The built-in ray caster (:mod:`aware3d.data.synth`) shades every primitive in one flat colour, which
gives SIFT nothing to hold on to. Here the same analytic scene (``named_scene("default")``: sphere,
box, cylinder and cone) stands inside a closed room (a box seen from inside, whose bottom face is
the floor), and every surface carries a procedural 3D value-noise texture evaluated at the world
position of the hit point, so the pattern is fixed to the surfaces and consistent between views
(Lambertian: no specular highlight, no shadows). Cameras follow an ordered path around the scene
(azimuth sweep, gently varying elevation) looking at the origin, like a hand-held orbit, so the
same frames serve as a photo set and as a video.

:func:`textured_capture` returns the images (uint8) with their true cameras; :func:`write_images`
and :func:`write_video` write them as a folder of PNGs and as an MP4.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..render.cameras import image_rays, intrinsics_from_fov, look_at, spherical_to_cartesian
from .synth import Primitive, _threads, named_scene, pack_scenes, render_rays

#: the room: a box seen from inside; its bottom face (z = ROOM_FLOOR) is the floor the objects of
#: ``named_scene("default")`` stand on (their lowest point is at z = -0.40)
ROOM_FLOOR = -0.42
ROOM_HALF = (5.0, 5.0, 2.5)


def room() -> Primitive:
    hx, hy, hz = ROOM_HALF
    return Primitive("box", (0.0, 0.0, ROOM_FLOOR + hz), (hx, hy, hz), (0.85, 0.8, 0.75))


def _lattice(ix, iy, iz, table: torch.Tensor) -> torch.Tensor:
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)
    return table[h & (table.shape[0] - 1)]


def value_noise(p: torch.Tensor, freqs: Sequence[float] = (2.0, 4.0, 8.0, 16.0),
                amps: Sequence[float] = (0.35, 0.3, 0.2, 0.15), seed: int = 0,
                contrast: float = 2.5) -> torch.Tensor:
    """Coloured 3D value noise at world points ``p`` (M, 3) -> (M, 3) in [0, 1]: octaves of
    trilinearly (smoothstep) interpolated random lattice values, contrast-stretched about 0.5."""
    g = torch.Generator().manual_seed(int(seed))
    out = torch.zeros(p.shape[0], 3, dtype=torch.float32)
    for o, (f, a) in enumerate(zip(freqs, amps)):
        table = torch.rand(1 << 16, 3, generator=g)
        q = p.double() * float(f) + 17.0 * (o + 1)
        i0 = torch.floor(q)
        t = (q - i0).float()
        t = t * t * (3 - 2 * t)
        i0 = i0.long()
        acc = torch.zeros_like(out)
        for dx in (0, 1):
            wx = t[:, 0:1] if dx else 1 - t[:, 0:1]
            for dy in (0, 1):
                wy = t[:, 1:2] if dy else 1 - t[:, 1:2]
                for dz in (0, 1):
                    wz = t[:, 2:3] if dz else 1 - t[:, 2:3]
                    acc += wx * wy * wz * _lattice(i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz, table)
        out += a * acc
    total = float(sum(amps))
    return ((out / total - 0.5) * contrast + 0.5).clamp(0, 1)


def capture_path(n: int, radius: float = 3.2, elevation_deg: Sequence[float] = (18.0, 38.0),
                 azimuth_deg: Sequence[float] = (0.0, 300.0)) -> torch.Tensor:
    """``n`` OpenGL c2w (n, 4, 4) on an ordered orbit around the origin: azimuth sweeps
    ``azimuth_deg`` evenly, elevation goes up and back down once within ``elevation_deg``."""
    s = torch.linspace(0.0, 1.0, int(n))
    az = azimuth_deg[0] + (azimuth_deg[1] - azimuth_deg[0]) * s
    lo, hi = elevation_deg
    el = lo + (hi - lo) * 0.5 * (1 - torch.cos(2 * math.pi * s))
    return look_at(spherical_to_cartesian(float(radius), el, az))


def render_textured(c2w: torch.Tensor, K: torch.Tensor, width: int, height: int,
                    supersample: int = 2, seed: int = 0, chunk: int = 4) -> np.ndarray:
    """Render views (c2w (N, 4, 4), K (3, 3) at ``width`` x ``height``) of the textured scene
    (``named_scene("default")`` in :func:`room`). Returns uint8 (N, H, W, 3); each pixel averages
    ``supersample``^2 rays (anti-aliasing keeps the texture consistent across views)."""
    prims = named_scene("default") + [room()]
    ss = max(1, int(supersample))
    Kss = K.clone().float()
    Kss[:2] *= ss
    out = []
    with _threads(None):
        for a in range(0, c2w.shape[0], chunk):
            cams = c2w[a:a + chunk]
            n = cams.shape[0]
            packed = pack_scenes([prims] * n)
            o, d = image_rays(Kss.expand(n, 3, 3), cams, width * ss, height * ss)
            o, d = o.reshape(n, -1, 3), d.reshape(n, -1, 3)
            r = render_rays(packed, o, d, shadows=False, specular=0.0, ambient=0.45)
            p = o + r["depth"].unsqueeze(-1) * d
            tex = value_noise(p.reshape(-1, 3), seed=seed).reshape(p.shape)
            rgb = (r["rgb"] * (0.25 + 0.95 * tex)).clamp(0, 1)
            rgb = rgb.reshape(n, height, ss, width, ss, 3).mean((2, 4))
            out.append((rgb * 255 + 0.5).to(torch.uint8).numpy())
    return np.concatenate(out, 0)


def textured_capture(n_views: int = 24, resolution: int | Sequence[int] = 160, fov_deg: float = 50.0,
                     radius: float = 3.2, elevation_deg: Sequence[float] = (18.0, 38.0),
                     azimuth_deg: Sequence[float] = (0.0, 300.0), supersample: int = 2,
                     seed: int = 0) -> dict:
    """Render an ordered textured capture. ``resolution``: an int (square) or (width, height).
    Returns ``{"images": uint8 (N, H, W, 3), "c2w": float64 (N, 4, 4) OpenGL camera-to-world,
    "K": float64 (3, 3), "width", "height", "radius": the orbit radius (the scene scale the
    tests measure errors against), "target": the point the cameras look at}``."""
    W, H = (int(resolution), int(resolution)) if np.isscalar(resolution) else map(int, resolution)
    K = intrinsics_from_fov(fov_deg, W, H)
    c2w = capture_path(n_views, radius, elevation_deg, azimuth_deg)
    images = render_textured(c2w, K, W, H, supersample=supersample, seed=seed)
    return {"images": images, "c2w": c2w.double().numpy(), "K": K.double().numpy(), "width": W,
            "height": H, "radius": float(radius), "target": [0.0, 0.0, 0.0]}


def write_images(images: np.ndarray, out_dir, prefix: str = "view_") -> list[Path]:
    """Write uint8 (N, H, W, 3) as ``out_dir/{prefix}{i:03d}.png``; returns the paths."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = out / f"{prefix}{i:03d}.png"
        Image.fromarray(im).save(p, compress_level=1)
        paths.append(p)
    return paths


def write_video(images: np.ndarray, path, fps: int = 10, quality: int = 9) -> Path:
    """Write uint8 (N, H, W, 3) as an H.264 MP4 (imageio-ffmpeg); sides should be multiples of 16."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=quality,
                            macro_block_size=16) as w:
        for im in images:
            w.append_data(np.ascontiguousarray(im))
    return path


def box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Blur uint8 (H, W, 3) with a (2 r + 1)^2 box (edge replicated): a stand-in for motion blur."""
    if radius <= 0:
        return image
    x = image.astype(np.float32)
    k = 2 * radius + 1
    for axis in (0, 1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float64)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
        n = x.shape[axis]
        x = (np.take(c, np.arange(k, k + n), axis=axis) - np.take(c, np.arange(0, n), axis=axis)) / k
    return (x + 0.5).clip(0, 255).astype(np.uint8)


__all__ = ["textured_capture", "render_textured", "capture_path", "value_noise", "room",
           "write_images", "write_video", "box_blur"]
