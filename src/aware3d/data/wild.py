"""A synthetic "in the wild" scene for NeRF-W: the analytic scene of
:func:`aware3d.data.synth.synth_scene` (same primitives, cameras, ray caster and Blender layout) with,
in the TRAINING views only,

- per-image appearance: light direction (the canonical light turned by up to +-``light_jitter`` deg
  in azimuth and half that in elevation, like the sun at different hours), ambient level,
  exposure (log-uniform in ``exposure``) and white balance (per-channel gains 1 +- ``white_balance``,
  normalised to mean 1), applied to the shaded object pixels;
- transient occluders: 1..``max_occluders`` per view, "people" (upright boxes, ~0.15 x 0.15 x 0.7)
  and "balls" (spheres of radius 0.08-0.2) in random colours, placed between the camera and the
  object inside the scene box, and different in every view. They cast shadows (part of the
  transient effect) and count in the alpha mask.

Validation and test views are clean: canonical light, exposure 1, neutral white balance, no
occluders; their ground truth equals ``synth_scene``'s render of the same poses. The scene box
(``aabb`` in scene.json) is the static scene's box grown by ``occluder_margin`` so that every method
samples the space the occluders live in; near / far follow from it as in ``synth_scene``.
scene.json also lists every training view's appearance parameters and occluders.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..render.cameras import intrinsics_from_fov, sample_poses_sphere
from .synth import (DEFAULT_LIGHT, Primitive, _save_png, _split_sizes, _threads, _to_u8, named_scene,
                    pack_scenes, render_views, scene_aabb)

SPLITS = ("train", "val", "test")


def _appearance(rng: np.random.Generator, exposure, white_balance: float, light_jitter: float) -> dict:
    base = np.asarray(DEFAULT_LIGHT, dtype=np.float64)
    az0, el0 = math.atan2(base[1], base[0]), math.asin(base[2] / np.linalg.norm(base))
    az = az0 + math.radians(rng.uniform(-light_jitter, light_jitter))
    el = min(max(el0 + math.radians(rng.uniform(-0.5, 0.5) * light_jitter), math.radians(10)), math.radians(85))
    light = [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    gains = 1.0 + rng.uniform(-white_balance, white_balance, 3)
    gains = gains / gains.mean()
    return {"light_dir": light, "ambient": float(rng.uniform(0.15, 0.4)),
            "exposure": float(math.exp(rng.uniform(math.log(exposure[0]), math.log(exposure[1])))),
            "white_balance": [float(g) for g in gains]}


CANONICAL = {"light_dir": list(DEFAULT_LIGHT), "ambient": 0.25, "exposure": 1.0,
             "white_balance": [1.0, 1.0, 1.0]}


def _occluders(rng: np.random.Generator, cam: np.ndarray, core: np.ndarray, box: np.ndarray,
               count: int) -> list[Primitive]:
    """``count`` occluders between the camera centre ``cam`` and random points of the static box
    ``core``, fully inside ``box``."""
    prims = []
    for _ in range(count):
        person = rng.uniform() < 0.5
        if person:
            half = np.array([rng.uniform(0.06, 0.1), rng.uniform(0.06, 0.1), rng.uniform(0.28, 0.4)])
            bound = float(np.linalg.norm(half))
        else:
            r = float(rng.uniform(0.08, 0.2))
            half, bound = np.array([r, r, r]), r
        q = rng.uniform(core[:3] * 0.6, core[3:] * 0.6)
        u = cam - q
        u = u / np.linalg.norm(u)
        lo, hi = box[:3] + bound, box[3:] - bound
        # largest s with q + s u inside [lo, hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            s_hi = np.where(u > 0, (hi - q) / u, np.where(u < 0, (lo - q) / u, np.inf))
        s_max = max(float(s_hi.min()), 0.0)
        p = np.clip(q + rng.uniform(0.35, 1.0) * s_max * u, lo, hi)
        colour = rng.uniform(0.05, 0.95, 3)
        colour[rng.integers(3)] = rng.uniform(0.7, 1.0)  # saturated clothes / toys
        if person:
            prims.append(Primitive("box", p, half, colour, (0, 0, float(rng.uniform(0, 90)))))
        else:
            prims.append(Primitive("sphere", p, half, colour))
    return prims


def synth_wild_scene(out_dir, n_views: int = 100, resolution: int = 128, hemisphere: bool = True,
                     seed: int = 0, *, radius: float = 4.0, fov_deg: float = 40.0,
                     scene: str | Sequence[Primitive] = "default", split: Sequence[float] = (0.8, 0.1, 0.1),
                     max_occluders: int = 3, exposure: Sequence[float] = (0.55, 1.6),
                     white_balance: float = 0.2, light_jitter: float = 40.0, occluder_margin: float = 0.45,
                     progress: bool = True, num_threads: int | None = 1) -> dict:
    """Write a Blender-format scene with per-image appearance changes and transient occluders in the
    training views (see the module docstring); ``aware3d.data.load_scene`` reads it. Cameras and
    splits are those of ``synth_scene`` with the same arguments. Deterministic for ``seed``.
    Returns the scene.json content."""
    with _threads(num_threads):
        return _synth_wild(out_dir, n_views, resolution, hemisphere, seed, radius, fov_deg, scene,
                           split, max_occluders, exposure, white_balance, light_jitter, occluder_margin,
                           progress)


def _synth_wild(out_dir, n_views, resolution, hemisphere, seed, radius, fov_deg, scene, split,
                max_occluders, exposure, white_balance, light_jitter, occluder_margin, progress):
    from tqdm import tqdm

    out = Path(out_dir)
    prims = named_scene(scene) if isinstance(scene, str) else list(scene)
    sizes = _split_sizes(int(n_views), split)
    g = torch.Generator().manual_seed(int(seed))
    c2w = sample_poses_sphere(int(n_views), float(radius), (0.0, 90.0) if hemisphere else (-90.0, 90.0),
                              generator=g)
    W = H = int(resolution)
    K = intrinsics_from_fov(fov_deg, W, H)
    core = scene_aabb(prims)
    aabb = np.concatenate([core[:3] - occluder_margin, core[3:] + occluder_margin])
    half_diag = 0.5 * float(np.linalg.norm(aabb[3:] - aabb[:3]))
    centre_dist = float(np.linalg.norm(0.5 * (aabb[3:] + aabb[:3])))
    near = max(0.05, float(radius) - half_diag - centre_dist)
    far = float(radius) + half_diag + centre_dist
    rng = np.random.default_rng(int(seed) + 7919)
    assign = [(s, i) for s, n in zip(SPLITS, sizes) for i in range(n)]
    for s in SPLITS:
        (out / s).mkdir(parents=True, exist_ok=True)
    frames = {s: [] for s in SPLITS}
    bar = tqdm(total=int(n_views), desc="synth_wild_scene", unit="view", disable=not progress)
    for k, (s, i) in enumerate(assign):
        if s == "train":
            app = _appearance(rng, exposure, white_balance, light_jitter)
            n_occ = int(rng.integers(1, max_occluders + 1)) if max_occluders > 0 else 0
            occ = _occluders(rng, c2w[k, :3, 3].numpy().astype(np.float64), core, aabb, n_occ)
        else:
            app, occ = CANONICAL, []
        r = render_views(prims + occ, K, c2w[k], W, H, light_dir=app["light_dir"], ambient=app["ambient"])
        gain = torch.tensor(app["white_balance"]) * app["exposure"]
        rgb = (r["rgb"][0] * gain).clamp(0, 1)
        mask = r["mask"][0]
        rgba = torch.cat([rgb * mask.unsqueeze(-1), mask.unsqueeze(-1).float()], -1)
        stem = f"r_{i}"
        _save_png(out / s / f"{stem}.png", _to_u8(rgba))
        _save_png(out / s / f"{stem}_mask.png", mask.numpy().astype(np.uint8) * 255)
        depth = torch.where(mask, r["depth"][0], torch.zeros_like(r["depth"][0])).numpy().astype(np.float32)
        np.save(out / s / f"{stem}_depth.npy", depth)
        fr = {"file_path": f"./{s}/{stem}", "transform_matrix": c2w[k].tolist(),
              "depth_file_path": f"./{s}/{stem}_depth.npy", "mask_file_path": f"./{s}/{stem}_mask.png"}
        if s == "train":
            fr["appearance"] = app
            fr["transients"] = [p.to_dict() for p in occ]
        frames[s].append(fr)
        bar.update(1)
    bar.close()
    for s in SPLITS:
        with open(out / f"transforms_{s}.json", "w") as f:
            json.dump({"camera_angle_x": math.radians(float(fov_deg)), "frames": frames[s]}, f, indent=2)
    meta = {
        "generator": "aware3d.data.wild.synth_wild_scene", "wild": True,
        "scene": scene if isinstance(scene, str) else "custom",
        "primitives": [p.to_dict() for p in prims], "aabb": aabb.tolist(), "static_aabb": core.tolist(),
        "near": near, "far": far, "radius": float(radius), "fov_deg": float(fov_deg), "resolution": W,
        "n_views": int(n_views), "split_sizes": sizes, "hemisphere": bool(hemisphere), "seed": int(seed),
        "canonical_appearance": CANONICAL, "max_occluders": int(max_occluders),
        "exposure": list(map(float, exposure)), "white_balance": float(white_balance),
        "light_jitter_deg": float(light_jitter),
        "train_appearance": [fr["appearance"] for fr in frames["train"]],
        "notes": "train views: per-image light / ambient / exposure / white balance and transient "
                 "occluders (listed per frame); val and test views: canonical appearance, no occluders",
        "depth": "float32 .npy, distance along the ray from the camera centre; 0 = background",
        "camera_convention": "OpenGL camera-to-world (x right, y up, looks down -z); world z-up",
    }
    with open(out / "scene.json", "w") as f:
        json.dump(meta, f, indent=2)
    return meta
