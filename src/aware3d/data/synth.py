"""Built-in datasets from an analytic ray caster (vectorised torch, no network, no downloads).

Primitives (all closed solids, in a local frame then rotated and translated into the world):

- ``sphere``:   ``size[0]`` = radius.
- ``box``:      ``size`` = half extents along the local x, y, z axes.
- ``cylinder``: capped, axis = local z, ``size[0]`` = radius, ``size[2]`` = half height.
- ``cone``:     capped at its base, axis = local z, base radius ``size[0]`` at local z = -size[2],
  apex at local z = +size[2].

``rotation`` is (rx, ry, rz) Euler angles in degrees applied as R = Rz @ Ry @ Rx (so a rotation about
the world z axis only is ``(0, 0, angle)``). An optional infinite floor plane z = ``floor_z`` can be
added at render time. Shading is Lambert + ambient + a little Blinn-Phong specular from one
directional light, with optional hard shadows, and each primitive has its own colour.

Depth maps are **distances along the ray** (the internal convention), float32, and **0 marks
background** (no hit); use the mask / alpha (or ``depth > 0``) to select valid pixels.

Entry points: :func:`synth_scene` (a Blender-format NeRF scene with exact depth and masks) and
:func:`synth_objects` (CLEVR-like images with labels for the 3D-aware GANs). Lower-level:
:func:`render_views`, :func:`render_rays`, :func:`intersect`, :class:`Primitive`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..render.cameras import image_rays, intrinsics_from_fov, sample_poses_sphere

SHAPES = ("sphere", "box", "cylinder", "cone")
_EPS = 1e-5
_INF = float("inf")

# CLEVR's eight colours (names and approximate RGB in [0, 1]).
CLEVR_COLOURS = {
    "gray": (0.34, 0.34, 0.34), "red": (0.68, 0.13, 0.13), "blue": (0.16, 0.29, 0.84),
    "green": (0.11, 0.41, 0.08), "brown": (0.51, 0.29, 0.10), "purple": (0.51, 0.15, 0.75),
    "cyan": (0.16, 0.82, 0.82), "yellow": (1.00, 0.93, 0.20),
}


@dataclass
class Primitive:
    """One solid of the scene. See the module docstring for the meaning of ``size``."""

    shape: str
    center: Sequence[float] = (0.0, 0.0, 0.0)
    size: Sequence[float] = (0.5, 0.5, 0.5)
    colour: Sequence[float] = (0.8, 0.8, 0.8)
    rotation: Sequence[float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"shape: expected one of {SHAPES}, got {self.shape!r}")
        self.center = [float(v) for v in self.center]
        self.size = [float(v) for v in self.size]
        self.colour = [float(v) for v in self.colour]
        self.rotation = [float(v) for v in self.rotation]
        if len(self.center) != 3 or len(self.size) != 3 or len(self.colour) != 3 or len(self.rotation) != 3:
            raise ValueError("center, size, colour and rotation: expected 3 numbers each")
        if min(self.size) <= 0:
            raise ValueError(f"size: expected positive numbers, got {self.size}")

    @classmethod
    def sphere(cls, center, radius, colour=(0.8, 0.8, 0.8)):
        return cls("sphere", center, (radius, radius, radius), colour)

    def matrix(self) -> np.ndarray:
        return euler_matrix(self.rotation)

    def bounds(self) -> np.ndarray:
        """Axis-aligned world bound (6,) of the solid (exact for the rotated local box)."""
        s = np.asarray(self.size)
        c = np.asarray(self.center)
        if self.shape == "sphere":
            half = np.full(3, s[0])
        else:
            local = s if self.shape == "box" else np.array([s[0], s[0], s[2]])
            half = np.abs(self.matrix()) @ local
        return np.concatenate([c - half, c + half])

    def to_dict(self) -> dict:
        return asdict(self)


def euler_matrix(rotation_deg: Sequence[float]) -> np.ndarray:
    """R = Rz @ Ry @ Rx from (rx, ry, rz) degrees."""
    rx, ry, rz = (math.radians(float(a)) for a in rotation_deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


# --------------------------------------------------------------------------------------------------
# Packed scenes: B scenes of up to K primitives each, as tensors


@dataclass
class PackedScene:
    shape: torch.Tensor   # (B, K) long index into SHAPES
    center: torch.Tensor  # (B, K, 3)
    R: torch.Tensor       # (B, K, 3, 3) local -> world
    size: torch.Tensor    # (B, K, 3)
    colour: torch.Tensor  # (B, K, 3)
    valid: torch.Tensor   # (B, K) bool

    @property
    def batch(self) -> int:
        return int(self.shape.shape[0])


def pack_scenes(scenes: Sequence[Sequence[Primitive]]) -> PackedScene:
    """Pack B lists of primitives (possibly of different lengths) into padded tensors."""
    B = len(scenes)
    K = max(1, max((len(s) for s in scenes), default=1))
    shape = torch.zeros(B, K, dtype=torch.long)
    center = torch.zeros(B, K, 3)
    R = torch.eye(3).repeat(B, K, 1, 1)
    size = torch.ones(B, K, 3)
    colour = torch.zeros(B, K, 3)
    valid = torch.zeros(B, K, dtype=torch.bool)
    for b, prims in enumerate(scenes):
        for k, p in enumerate(prims):
            shape[b, k] = SHAPES.index(p.shape)
            center[b, k] = torch.tensor(p.center)
            R[b, k] = torch.from_numpy(p.matrix()).float()
            size[b, k] = torch.tensor(p.size)
            colour[b, k] = torch.tensor(p.colour)
            valid[b, k] = True
    return PackedScene(shape, center, R, size, colour, valid)


# --------------------------------------------------------------------------------------------------
# Ray / primitive intersection in the local frame: o, d (B, P, 3), size (B, 1, 3)
# Each returns (t (B, P) with inf for a miss, local normal (B, P, 3)).


def _first_positive(ts: torch.Tensor):
    """ts (..., C) candidate hits (inf = invalid) -> (t, index of the winning candidate)."""
    ts = torch.where(ts > _EPS, ts, torch.full_like(ts, _INF))
    return ts.min(-1)


def _finite(t):
    return torch.where(torch.isfinite(t), t, torch.zeros_like(t))


def _hit_sphere(o, d, size):
    r = size[..., 0]
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r * r
    disc = b * b - c
    sq = disc.clamp_min(0).sqrt()
    ts = torch.stack([-b - sq, -b + sq], -1)
    ts = torch.where((disc >= 0).unsqueeze(-1), ts, torch.full_like(ts, _INF))
    t, _ = _first_positive(ts)
    p = o + _finite(t).unsqueeze(-1) * d
    return t, p / r.unsqueeze(-1)


def _safe(x):
    return torch.where(x.abs() < 1e-12, torch.full_like(x, 1e-12) * torch.where(x < 0, -1.0, 1.0), x)


def _hit_box(o, d, size):
    inv = 1.0 / _safe(d)
    t1, t2 = (-size - o) * inv, (size - o) * inv
    tn, tf = torch.minimum(t1, t2), torch.maximum(t1, t2)
    tnear, axn = tn.max(-1)
    tfar, axf = tf.min(-1)
    hit = tfar >= torch.maximum(tnear, torch.zeros_like(tnear))
    enter = tnear > _EPS
    t = torch.where(hit, torch.where(enter, tnear, tfar), torch.full_like(tnear, _INF))
    t = torch.where(t > _EPS, t, torch.full_like(t, _INF))
    axis = torch.where(enter, axn, axf)
    dax = torch.gather(d, -1, axis.unsqueeze(-1)).squeeze(-1)
    sign = torch.where(enter, -torch.sign(dax), torch.sign(dax))
    n = torch.nn.functional.one_hot(axis, 3).to(d.dtype) * sign.unsqueeze(-1)
    return t, n


def _caps(o, d, r, zs):
    """Disc caps of radius r at local heights zs (list of (B, 1) tensors)."""
    out = []
    dz = _safe(d[..., 2])
    for z in zs:
        t = (z - o[..., 2]) / dz
        x, y = o[..., 0] + t * d[..., 0], o[..., 1] + t * d[..., 1]
        out.append(torch.where(x * x + y * y <= r * r, t, torch.full_like(t, _INF)))
    return out


def _hit_cylinder(o, d, size):
    r, hh = size[..., 0], size[..., 2]
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - r * r
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    a_s = a.clamp_min(1e-12)
    side = []
    for ts in ((-b - sq) / a_s, (-b + sq) / a_s):
        z = o[..., 2] + ts * d[..., 2]
        ok = (disc >= 0) & (a > 1e-12) & (z.abs() <= hh)
        side.append(torch.where(ok, ts, torch.full_like(ts, _INF)))
    cands = torch.stack(side + _caps(o, d, r, [hh, -hh]), -1)
    t, which = _first_positive(cands)
    p = o + _finite(t).unsqueeze(-1) * d
    n_side = torch.stack([p[..., 0], p[..., 1], torch.zeros_like(t)], -1) / r.unsqueeze(-1)
    n_cap = torch.zeros_like(p)
    n_cap[..., 2] = torch.where(which == 2, 1.0, -1.0)
    n = torch.where((which < 2).unsqueeze(-1), n_side, n_cap)
    return t, n


def _hit_cone(o, d, size):
    r, hh = size[..., 0], size[..., 2]
    k2 = (r / (2 * hh)) ** 2
    so = hh - o[..., 2]
    a = d[..., 0] ** 2 + d[..., 1] ** 2 - k2 * d[..., 2] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1] + k2 * so * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - k2 * so * so
    disc = b * b - a * c
    sq = disc.clamp_min(0).sqrt()
    lin = a.abs() < 1e-9
    a_s = torch.where(lin, torch.ones_like(a), a)
    roots = [(-b - sq) / a_s, (-b + sq) / a_s]
    roots = [torch.where(lin, -c / (2 * _safe(b)), x) for x in roots]
    side = []
    for ts in roots:
        z = o[..., 2] + ts * d[..., 2]
        ok = (disc >= 0) & (z >= -hh) & (z <= hh)
        side.append(torch.where(ok, ts, torch.full_like(ts, _INF)))
    cands = torch.stack(side + _caps(o, d, r, [-hh]), -1)
    t, which = _first_positive(cands)
    p = o + _finite(t).unsqueeze(-1) * d
    n_side = torch.stack([p[..., 0], p[..., 1], k2 * (hh - p[..., 2])], -1)
    n_side = n_side / n_side.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n_cap = torch.zeros_like(p)
    n_cap[..., 2] = -1.0
    n = torch.where((which < 2).unsqueeze(-1), n_side, n_cap)
    return t, n


_HIT = (_hit_sphere, _hit_box, _hit_cylinder, _hit_cone)


def _bound_radii(scene: PackedScene) -> torch.Tensor:
    """(B, K) radius of a sphere around each primitive's centre enclosing it."""
    s = scene.size
    sphere = s[..., 0]
    box = s.norm(dim=-1)
    cyl = torch.sqrt(s[..., 0] ** 2 + s[..., 2] ** 2)
    return torch.stack([sphere, box, cyl, cyl], -1).gather(-1, scene.shape.unsqueeze(-1)).squeeze(-1)


def intersect(scene: PackedScene, rays_o: torch.Tensor, rays_d: torch.Tensor):
    """Nearest hit of rays (B, P, 3) (unit directions) with the B packed scenes.

    Returns ``(t (B, P), normal (B, P, 3), index (B, P))``: distance along the ray (inf for a
    miss), unit world normal facing the ray, and the primitive index (-1 for a miss).

    Each primitive is first tested against its bounding sphere and only the rays that hit it are
    intersected exactly (gathered into a flat list with their own primitive parameters)."""
    B, P, _ = rays_o.shape
    o_all, d_all = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    N = o_all.shape[0]
    bi = torch.arange(B, device=rays_o.device).repeat_interleave(P)
    t_best = torch.full((N,), _INF, dtype=rays_o.dtype, device=rays_o.device)
    n_best = torch.zeros(N, 3, dtype=rays_o.dtype, device=rays_o.device)
    i_best = torch.full((N,), -1, dtype=torch.long, device=rays_o.device)
    rb_all = _bound_radii(scene)
    for k in range(scene.shape.shape[1]):
        if not scene.valid[:, k].any():
            continue
        c = scene.center[:, k][bi]
        oc = o_all - c
        b = (oc * d_all).sum(-1)
        cc = (oc * oc).sum(-1) - rb_all[:, k][bi] ** 2
        disc = b * b - cc
        cand = scene.valid[:, k][bi] & (disc >= 0) & (-b + disc.clamp_min(0).sqrt() > _EPS)
        idx = cand.nonzero().squeeze(-1)
        if idx.numel() == 0:
            continue
        bsel = bi[idx]
        R = scene.R[:, k][bsel]  # (M, 3, 3)
        o = (oc[idx].unsqueeze(-2) @ R).squeeze(-2)  # R^T (o - c), as row vectors
        d = (d_all[idx].unsqueeze(-2) @ R).squeeze(-2)
        size = scene.size[:, k][bsel]
        shape = scene.shape[:, k][bsel]
        t_k = torch.full((idx.numel(),), _INF, dtype=rays_o.dtype, device=rays_o.device)
        n_k = torch.zeros(idx.numel(), 3, dtype=rays_o.dtype, device=rays_o.device)
        for sh in shape.unique().tolist():
            sel = (shape == sh).nonzero().squeeze(-1)
            if sel.numel() == idx.numel():
                t_k, n_k = _HIT[sh](o, d, size)
            else:
                t_s, n_s = _HIT[sh](o[sel], d[sel], size[sel])
                t_k[sel], n_k[sel] = t_s, n_s
        n_w = (n_k.unsqueeze(-2) @ R.transpose(-1, -2)).squeeze(-2)
        closer = t_k < t_best[idx]
        upd = idx[closer]
        t_best[upd] = t_k[closer]
        n_best[upd] = n_w[closer]
        i_best[upd] = k
    flip = (n_best * d_all).sum(-1, keepdim=True) > 0
    n_best = torch.where(flip, -n_best, n_best)
    return t_best.reshape(B, P), n_best.reshape(B, P, 3), i_best.reshape(B, P)


DEFAULT_LIGHT = (-0.45, -0.35, 0.82)


def render_rays(scene: PackedScene, rays_o: torch.Tensor, rays_d: torch.Tensor, *,
                light_dir: Sequence[float] = DEFAULT_LIGHT, ambient: float = 0.25,
                specular: float = 0.2, shininess: float = 32.0, shadows: bool = True,
                floor_z: float | None = None, floor_colour: Sequence[float] = (0.5, 0.5, 0.5),
                background: Sequence[float] = (0.0, 0.0, 0.0)) -> dict:
    """Shade rays (B, P, 3). Returns dict with ``rgb`` (B, P, 3) (background colour where nothing
    is hit), ``mask`` (B, P) bool (hit an object; the floor does not count), ``depth`` (B, P)
    distance along the ray to the first surface, floor included (0 where nothing is hit),
    ``normal`` (B, P, 3) and ``index`` (B, P) (primitive index, -1 none, -2 floor)."""
    L = torch.tensor(light_dir, dtype=rays_o.dtype, device=rays_o.device)
    L = L / L.norm()
    t, n, idx = intersect(scene, rays_o, rays_d)
    B, P = t.shape
    colour = torch.gather(scene.colour, 1, idx.clamp_min(0).unsqueeze(-1).expand(B, P, 3))
    if floor_z is not None:
        dz = rays_d[..., 2]
        tf = (floor_z - rays_o[..., 2]) / _safe(dz)
        tf = torch.where((dz < -1e-9) & (tf > _EPS), tf, torch.full_like(tf, _INF))
        on_floor = tf < t
        t = torch.where(on_floor, tf, t)
        n = torch.where(on_floor.unsqueeze(-1), torch.tensor([0.0, 0.0, 1.0]).to(n), n)
        idx = torch.where(on_floor, torch.full_like(idx, -2), idx)
        fc = torch.tensor(floor_colour, dtype=colour.dtype, device=colour.device)
        colour = torch.where(on_floor.unsqueeze(-1), fc.expand_as(colour), colour)
    hit = torch.isfinite(t)
    tf_ = _finite(t)
    p = rays_o + tf_.unsqueeze(-1) * rays_d
    lit = torch.ones_like(t)
    if shadows and hit.any():
        # Shadow rays towards the light, from the lit side of every hit point.
        # Rays that hit nothing start far along the light direction, so every bounding-sphere
        # test culls them.
        so = torch.where(hit.unsqueeze(-1), p + 1e-3 * n, rays_o + 1e4 * L)
        ts, _, _ = intersect(scene, so, L.expand_as(p).contiguous())
        lit = torch.where(hit & torch.isfinite(ts), torch.zeros_like(t), lit)
    ndl = (n * L).sum(-1).clamp_min(0) * lit
    h = L - rays_d
    h = h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    spec = specular * (n * h).sum(-1).clamp_min(0).pow(shininess) * lit * (ndl > 0)
    rgb = colour * (ambient + (1 - ambient) * ndl).unsqueeze(-1) + spec.unsqueeze(-1)
    bg = torch.tensor(background, dtype=rgb.dtype, device=rgb.device)
    rgb = torch.where(hit.unsqueeze(-1), rgb.clamp(0, 1), bg.expand_as(rgb))
    return {"rgb": rgb, "mask": idx >= 0, "depth": torch.where(hit, t, torch.zeros_like(t)),
            "normal": n, "index": idx}


def render_views(scene: PackedScene | Sequence[Primitive], K: torch.Tensor, c2w: torch.Tensor,
                 width: int, height: int, **shade) -> dict:
    """Render N views (K (N, 3, 3) or (3, 3), c2w (N, 4, 4)) of one scene (a list of primitives,
    or a PackedScene of batch 1 or N). Returns ``rgb`` (N, H, W, 3), ``mask`` (N, H, W) bool,
    ``depth`` (N, H, W) (distance along the ray, 0 = background), ``normal``, ``index``."""
    if not isinstance(scene, PackedScene):
        scene = pack_scenes([list(scene)])
    c2w = c2w.reshape(-1, 4, 4) if c2w.dim() == 2 else c2w
    N = c2w.shape[0]
    K = K.expand(N, 3, 3)
    o, d = image_rays(K, c2w, width, height)
    o, d = o.reshape(N, -1, 3), d.reshape(N, -1, 3)
    if scene.batch == 1 and N > 1:
        scene = PackedScene(*(getattr(scene, f).expand(N, *getattr(scene, f).shape[1:])
                              for f in ("shape", "center", "R", "size", "colour", "valid")))
    out = render_rays(scene, o, d, **shade)
    return {k: v.reshape(N, height, width, *v.shape[2:]) for k, v in out.items()}


# --------------------------------------------------------------------------------------------------
# synth_scene: a Blender-format NeRF scene


def named_scene(name: str) -> list[Primitive]:
    """Fixed scenes: ``"default"`` (sphere, rotated box, cylinder and cone inside [-1, 1]^3),
    ``"default_floor"`` (the same on a thin grey slab) and ``"sphere"`` (one sphere of radius 0.5)."""
    if name == "sphere":
        return [Primitive("sphere", (0, 0, 0), (0.5, 0.5, 0.5), (0.85, 0.3, 0.25))]
    prims = [
        Primitive("sphere", (-0.45, -0.4, 0.0), (0.38, 0.38, 0.38), (0.85, 0.22, 0.2)),
        Primitive("box", (0.45, -0.3, -0.12), (0.28, 0.28, 0.28), (0.2, 0.35, 0.85), (0, 0, 30)),
        Primitive("cylinder", (0.25, 0.5, 0.0), (0.25, 0.25, 0.4), (0.2, 0.7, 0.3)),
        Primitive("cone", (-0.45, 0.45, -0.05), (0.3, 0.3, 0.35), (0.95, 0.8, 0.2), (15, 0, 0)),
    ]
    if name == "default_floor":
        prims.append(Primitive("box", (0, 0, -0.45), (1.0, 1.0, 0.05), (0.6, 0.6, 0.6)))
    elif name != "default":
        raise ValueError(f"scene: expected 'default', 'default_floor', 'sphere' or a list of "
                         f"Primitive, got {name!r}")
    return prims


def scene_aabb(prims: Sequence[Primitive], pad: float = 0.05) -> np.ndarray:
    b = np.stack([p.bounds() for p in prims], 0)
    return np.concatenate([b[:, :3].min(0) - pad, b[:, 3:].max(0) + pad])


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n views by ``fractions``; every split gets at least one view when n allows it."""
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or (fr < 0).any() or fr.sum() <= 0:
        raise ValueError(f"split: expected non-negative fractions, got {list(fractions)}")
    fr = fr / fr.sum()
    sizes = [int(round(n * f)) for f in fr]
    sizes[int(np.argmax(sizes))] += n - sum(sizes)
    for i in range(len(sizes)):
        if sizes[i] == 0 and fr[i] > 0 and max(sizes) > 1:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] = 1
    return sizes


class _threads:
    """Temporarily set torch's intra-op thread count. The ray caster issues many small element-wise
    ops; on a shared machine extra OpenMP threads mostly spin, so the dataset writers default to one
    thread (``num_threads=None`` leaves torch's setting alone)."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, compress_level=1)


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def synth_scene(out_dir, n_views: int = 100, resolution: int = 128, hemisphere: bool = True,
                radius: float = 4.0, fov_deg: float = 40.0, seed: int = 0,
                scene: str | Sequence[Primitive] = "default",
                split: Sequence[float] = (0.8, 0.1, 0.1), chunk: int = 8,
                progress: bool = True, num_threads: int | None = 1, **shade) -> dict:
    """Render a fixed analytic scene to a Blender / NeRF-synthetic style folder.

    Cameras come from :func:`sample_poses_sphere` (upper hemisphere, or the full sphere when
    ``hemisphere`` is False) at ``radius`` looking at the origin, seeded by ``seed``, and are split
    ``split`` (default 80/10/10) into train / val / test. Writes, under ``out_dir``:

    - ``transforms_{train,val,test}.json``: ``camera_angle_x`` and frames with ``file_path``
      ("./train/r_0"), ``transform_matrix`` (OpenGL c2w), ``depth_file_path`` and ``mask_file_path``;
    - ``{split}/r_i.png``: RGBA, alpha = object mask, transparent black background (as
      nerf_synthetic); ``{split}/r_i_depth.npy``: float32 (H, W) exact distance along the ray,
      **0 for background**; ``{split}/r_i_mask.png``: 8-bit mask (255 = object);
    - ``scene.json``: the primitives, ``aabb``, ``near``/``far``, light and camera settings.

    Returns the scene.json content. Deterministic for a given ``seed``.
    """
    with _threads(num_threads):
        return _synth_scene(out_dir, n_views, resolution, hemisphere, radius, fov_deg, seed, scene,
                            split, chunk, progress, **shade)


def _synth_scene(out_dir, n_views, resolution, hemisphere, radius, fov_deg, seed, scene, split,
                 chunk, progress, **shade):
    from tqdm import tqdm

    out = Path(out_dir)
    prims = named_scene(scene) if isinstance(scene, str) else list(scene)
    packed = pack_scenes([prims])
    sizes = _split_sizes(int(n_views), split)
    g = torch.Generator().manual_seed(int(seed))
    c2w = sample_poses_sphere(int(n_views), float(radius), (0.0, 90.0) if hemisphere else (-90.0, 90.0),
                              generator=g)
    W = H = int(resolution)
    K = intrinsics_from_fov(fov_deg, W, H)
    aabb = scene_aabb(prims)
    half_diag = 0.5 * float(np.linalg.norm(aabb[3:] - aabb[:3]))
    centre_dist = float(np.linalg.norm(0.5 * (aabb[3:] + aabb[:3])))
    near = max(0.05, float(radius) - half_diag - centre_dist)
    far = float(radius) + half_diag + centre_dist
    names = ["train", "val", "test"]
    assign, start = [], 0
    for s, n in zip(names, sizes):
        assign += [(s, i) for i in range(n)]
    for s in names:
        (out / s).mkdir(parents=True, exist_ok=True)
    frames = {s: [] for s in names}
    bar = tqdm(total=int(n_views), desc="synth_scene", unit="view", disable=not progress)
    for a in range(0, int(n_views), chunk):
        b = min(int(n_views), a + chunk)
        r = render_views(packed, K, c2w[a:b], W, H, **shade)
        rgba = torch.cat([r["rgb"] * r["mask"].unsqueeze(-1), r["mask"].unsqueeze(-1).float()], -1)
        rgba8, mask8 = _to_u8(rgba), r["mask"].numpy().astype(np.uint8) * 255
        depth = r["depth"].numpy().astype(np.float32)
        for j in range(b - a):
            s, i = assign[a + j]
            stem = f"r_{i}"
            _save_png(out / s / f"{stem}.png", rgba8[j])
            _save_png(out / s / f"{stem}_mask.png", mask8[j])
            np.save(out / s / f"{stem}_depth.npy", np.where(mask8[j] > 0, depth[j], 0).astype(np.float32))
            frames[s].append({"file_path": f"./{s}/{stem}", "transform_matrix": c2w[a + j].tolist(),
                              "depth_file_path": f"./{s}/{stem}_depth.npy",
                              "mask_file_path": f"./{s}/{stem}_mask.png"})
        bar.update(b - a)
    bar.close()
    for s in names:
        with open(out / f"transforms_{s}.json", "w") as f:
            json.dump({"camera_angle_x": math.radians(float(fov_deg)), "frames": frames[s]}, f, indent=2)
    meta = {
        "generator": "aware3d.data.synth.synth_scene", "scene": scene if isinstance(scene, str) else "custom",
        "primitives": [p.to_dict() for p in prims], "aabb": aabb.tolist(), "near": near, "far": far,
        "light_dir": list(shade.get("light_dir", DEFAULT_LIGHT)), "radius": float(radius),
        "fov_deg": float(fov_deg), "resolution": W, "n_views": int(n_views), "split_sizes": sizes,
        "hemisphere": bool(hemisphere), "seed": int(seed),
        "depth": "float32 .npy, distance along the ray from the camera centre; 0 = background",
        "camera_convention": "OpenGL camera-to-world (x right, y up, looks down -z); world z-up",
    }
    with open(out / "scene.json", "w") as f:
        json.dump(meta, f, indent=2)
    return meta


# --------------------------------------------------------------------------------------------------
# synth_objects: CLEVR-like images for the 3D-aware GANs


def _bound_radius(shape: str, s: float) -> float:
    return s * math.sqrt(2.0) if shape == "box" else s


def _sample_objects(rng: np.random.Generator, k: int, shapes, size_range, spread, colours):
    objs = []
    for _ in range(k):
        for _try in range(100):
            shape = str(shapes[rng.integers(len(shapes))])
            s = float(rng.uniform(*size_range))
            rot = float(rng.uniform(0, 360))
            rho, phi = spread * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            x, y = rho * math.cos(phi), rho * math.sin(phi)
            br = _bound_radius(shape, s)
            if all(math.hypot(x - o["position"][0], y - o["position"][1]) > br + o["_br"] + 0.05
                   for o in objs):
                cname = str(list(colours)[rng.integers(len(colours))])
                objs.append({"shape": shape, "size": s, "colour": cname,
                             "rgb": list(colours[cname]), "position": [x, y, s],
                             "rotation": rot, "_br": br})
                break
    return objs


def synth_objects(out_dir, count: int = 1000, resolution: int = 64, objects: Sequence[int] = (1, 2),
                  seed: int = 0, elevation_range: Sequence[float] = (20.0, 60.0),
                  azimuth_range: Sequence[float] = (0.0, 360.0), radius: float = 6.0,
                  fov_deg: float = 40.0, shapes: Sequence[str] = ("sphere", "box", "cylinder", "cone"),
                  size_range: Sequence[float] = (0.3, 0.6), spread: float = 1.4,
                  colours: dict | None = None, floor_colour: Sequence[float] = (0.5, 0.5, 0.5),
                  sky_colour: Sequence[float] = (0.82, 0.84, 0.88), shadows: bool = True,
                  supersample: int = 2, batch: int = 64, progress: bool = True,
                  num_threads: int | None = 1) -> dict:
    """CLEVR-like dataset: a grey floor (z = 0), ``objects[0]..objects[1]`` primitives of random
    shape, size (``size_range``: sphere radius / cube half side / cylinder and cone radius and half
    height), CLEVR colour, rotation about z and non-overlapping position on the floor within
    ``spread`` of the origin; one camera per image at ``radius`` with elevation / azimuth uniform in
    the given ranges (degrees), looking at the origin.

    Writes ``images/000000.png`` ... (RGB, ``supersample``^2 rays per pixel) and ``labels.json``:
    ``{"images": [{"file", "camera": {"c2w", "elevation", "azimuth", "radius", "fov_deg"},
    "objects": [{"shape", "size", "colour", "rgb", "position", "rotation"}]}], ...}`` with
    rotation in degrees about z and positions in world units. Deterministic for ``seed``.
    Returns the labels dict.
    """
    with _threads(num_threads):
        return _synth_objects(out_dir, count, resolution, objects, seed, elevation_range,
                              azimuth_range, radius, fov_deg, shapes, size_range, spread, colours,
                              floor_colour, sky_colour, shadows, supersample, batch, progress)


def _synth_objects(out_dir, count, resolution, objects, seed, elevation_range, azimuth_range,
                   radius, fov_deg, shapes, size_range, spread, colours, floor_colour, sky_colour,
                   shadows, supersample, batch, progress):
    from tqdm import tqdm

    lo, hi = int(objects[0]), int(objects[1])
    if not 0 <= lo <= hi:
        raise ValueError(f"objects: expected (min, max) with 0 <= min <= max, got {objects}")
    for s in shapes:
        if s not in SHAPES:
            raise ValueError(f"shapes: expected names from {SHAPES}, got {s!r}")
    colours = dict(colours or CLEVR_COLOURS)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(seed))
    g = torch.Generator().manual_seed(int(seed))
    c2w, el, az, rad = sample_poses_sphere(int(count), float(radius), elevation_range, azimuth_range,
                                           uniform_area=False, generator=g, return_angles=True)
    labels = []
    scenes = []
    for i in range(int(count)):
        objs = _sample_objects(rng, int(rng.integers(lo, hi + 1)), shapes, size_range, spread, colours)
        prims = []
        for o in objs:
            o.pop("_br")
            s = o["size"]
            size = (s, s, s)
            prims.append(Primitive(o["shape"], o["position"], size, o["rgb"], (0, 0, o["rotation"])))
        scenes.append(prims)
        labels.append({"file": f"images/{i:06d}.png",
                       "camera": {"c2w": c2w[i].tolist(), "elevation": float(el[i]),
                                  "azimuth": float(az[i]), "radius": float(rad[i]),
                                  "fov_deg": float(fov_deg)},
                       "objects": objs})
    ss = max(1, int(supersample))
    R = int(resolution)
    K = intrinsics_from_fov(fov_deg, R * ss, R * ss)
    bar = tqdm(total=int(count), desc="synth_objects", unit="img", disable=not progress)
    for a in range(0, int(count), batch):
        b = min(int(count), a + batch)
        packed = pack_scenes(scenes[a:b])
        o, d = image_rays(K.expand(b - a, 3, 3), c2w[a:b], R * ss, R * ss)
        r = render_rays(packed, o.reshape(b - a, -1, 3), d.reshape(b - a, -1, 3), floor_z=0.0,
                        floor_colour=floor_colour, background=sky_colour, shadows=shadows)
        rgb = r["rgb"].reshape(b - a, R, ss, R, ss, 3).mean((2, 4))
        rgb8 = _to_u8(rgb)
        for j in range(b - a):
            _save_png(out / "images" / f"{a + j:06d}.png", rgb8[j])
        bar.update(b - a)
    bar.close()
    meta = {"generator": "aware3d.data.synth.synth_objects", "count": int(count), "resolution": R,
            "seed": int(seed), "objects": [lo, hi], "shapes": list(shapes),
            "elevation_range": list(map(float, elevation_range)),
            "azimuth_range": list(map(float, azimuth_range)), "radius": float(radius),
            "fov_deg": float(fov_deg), "floor_z": 0.0,
            "camera_convention": "OpenGL camera-to-world (x right, y up, looks down -z); world z-up",
            "images": labels}
    with open(out / "labels.json", "w") as f:
        json.dump(meta, f)
    return meta
