"""Meshes: marching cubes over a density grid and a binary PLY writer (atomic)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def marching_cubes_mesh(volume: np.ndarray, level: float, lo, hi):
    """Iso-surface of ``volume`` (X, Y, Z) sampled on a regular grid spanning [lo, hi] (world units).
    Returns ``(vertices (V, 3) float32, faces (F, 3) int32)``; empty arrays when the level is never
    crossed. Faces are oriented with normals pointing out of the dense region."""
    from skimage.measure import marching_cubes

    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected a 3-D grid (X, Y, Z), got shape {vol.shape}")
    if not (vol.min() < level < vol.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    spacing = (hi - lo) / (np.asarray(vol.shape, np.float32) - 1)
    # marching on -density makes the gradient point outwards from the dense region
    verts, faces, _, _ = marching_cubes(-vol, -level, spacing=tuple(spacing.tolist()))
    return (verts + lo).astype(np.float32), faces.astype(np.int32)


def grid_values(fn, lo, hi, resolution: int, chunk: int = 2 ** 16):
    """``fn(points (P, 3))`` on a ``resolution``^3 grid spanning the box [lo, hi] (numbers or
    3-vectors), evaluated in chunks of ``chunk`` points; returns float32 (R, R, R) on the CPU,
    indexed (x, y, z). The one grid sampler of the mesh exporters (fields and GANs)."""
    import torch

    lo = torch.as_tensor(lo, dtype=torch.float32).expand(3)
    hi = torch.as_tensor(hi, dtype=torch.float32).expand(3)
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution) for i in range(3)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    vals = [fn(pts[a:a + chunk]).float().reshape(-1).cpu() for a in range(0, pts.shape[0], chunk)]
    return torch.cat(vals).reshape(resolution, resolution, resolution)


def write_ply(path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Binary little-endian PLY with float xyz (+ uchar rgb) vertices and int triangle faces."""
    from .atomic import atomic_write_bytes

    v = np.asarray(vertices, np.float32).reshape(-1, 3)
    f = np.asarray(faces, np.int32).reshape(-1, 3)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vdt += [("r", "u1"), ("g", "u1"), ("b", "u1")]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    vert = np.empty(len(v), dtype=vdt)
    vert["x"], vert["y"], vert["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c = np.asarray(colors)
        c = (np.clip(c, 0, 1) * 255 + 0.5).astype(np.uint8) if c.dtype != np.uint8 else c
        vert["r"], vert["g"], vert["b"] = c[:, 0], c[:, 1], c[:, 2]
    face = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, f
    data = ("\n".join(header) + "\n").encode() + vert.tobytes() + face.tobytes()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(p, data)
    return p


def read_ply(path):
    """Read what :func:`write_ply` writes (binary, triangles). Returns ``(vertices, faces)``."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode().splitlines()
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    has_rgb = any("red" in h for h in header)
    vdt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("r", "u1"), ("g", "u1"), ("b", "u1")] if has_rgb else [])
    vert = np.frombuffer(raw, dtype=vdt, count=nv, offset=end)
    face = np.frombuffer(raw, dtype=[("n", "u1"), ("i", "<i4", (3,))], count=nf, offset=end + vert.nbytes)
    return np.stack([vert["x"], vert["y"], vert["z"]], -1), face["i"].copy()
