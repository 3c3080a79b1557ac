"""A built-in dynamic scene (the D-NeRF format) from the analytic ray caster: objects that move,
turn and deform over time t in [0, 1], seen by one camera moving around them.

:func:`dynamic_primitives` gives the scene at time t:

- a red sphere (radius 0.3) travelling once round a circle of radius 0.45 about the z axis;
- a blue box (half side 0.25) turning half a turn about z;
- a green cylinder (radius 0.2) stretching from half height 0.15 to 0.45 (a deformation: its shape
  changes, not only its pose);
- a yellow cone bobbing up and down, z = -0.1 + 0.25 sin(2 pi t);
- a small purple sphere (radius 0.12) at the origin that never moves (inside the red sphere's
  circle, so nothing passes through it): its pixels from one pose agree at every time.

:func:`synth_dynamic_scene` writes a Blender-format folder whose frames carry ``time``: training
frames at evenly spaced times from one camera that circles the scene 1.5 times while its elevation
swings between 15 and 55 degrees (a monocular video, as D-NeRF's captures are); validation and test
frames at held-out times (between the training times) from random poses on the upper hemisphere;
RGBA images, exact depth (distance along the ray, 0 = background) and masks, and ``scene.json``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..render.cameras import (
    intrinsics_from_fov,
    look_at,
    sample_poses_sphere,
    spherical_to_cartesian,
)
from .synth import (
    Primitive,
    _save_png,
    _threads,
    _to_u8,
    pack_scenes,
    render_views,
    scene_aabb,
)


def dynamic_primitives(t: float) -> list[Primitive]:
    """The scene at time ``t`` in [0, 1] (see the module docstring)."""
    t = float(t)
    a = 2 * math.pi * t
    return [
        Primitive("sphere", (0.45 * math.cos(a), 0.45 * math.sin(a), 0.0), (0.3, 0.3, 0.3), (0.85, 0.22, 0.2)),
        Primitive("box", (-0.55, -0.45, -0.1), (0.25, 0.25, 0.25), (0.2, 0.35, 0.85), (0, 0, 180.0 * t)),
        Primitive("cylinder", (0.55, -0.5, 0.0), (0.2, 0.2, 0.15 + 0.3 * t), (0.2, 0.7, 0.3)),
        Primitive("cone", (-0.5, 0.55, -0.1 + 0.25 * math.sin(a)), (0.25, 0.25, 0.3), (0.95, 0.8, 0.2)),
        Primitive("sphere", (0.0, 0.0, 0.0), (0.12, 0.12, 0.12), (0.6, 0.3, 0.8)),  # static
    ]


def _training_cameras(n: int, radius: float) -> torch.Tensor:
    t = torch.linspace(0, 1, n)
    az = 360.0 * 1.5 * t
    el = 35.0 + 20.0 * torch.sin(2 * math.pi * 2 * t)
    eyes = torch.stack([spherical_to_cartesian(radius, e, a) for e, a in zip(el, az)])
    return look_at(eyes)


def synth_dynamic_scene(out_dir, n_train: int = 100, n_val: int = 5, n_test: int = 20, resolution: int = 64,
                        radius: float = 4.0, fov_deg: float = 40.0, seed: int = 0, chunk: int = 8,
                        progress: bool = True, num_threads: int | None = 1) -> dict:
    """Write the dynamic scene (see the module docstring) to ``out_dir``; returns scene.json's
    content. Deterministic for a given ``seed`` (it draws the held-out poses)."""
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("resolution", resolution)):
        if int(v) != v or int(v) < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    with _threads(num_threads):
        return _write(Path(out_dir), int(n_train), int(n_val), int(n_test), int(resolution), float(radius),
                      float(fov_deg), int(seed), int(chunk), progress)


def _write(out: Path, n_train, n_val, n_test, res, radius, fov_deg, seed, chunk, progress) -> dict:
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    cams = {"train": _training_cameras(n_train, radius)}
    times = {"train": torch.linspace(0, 1, n_train)}
    step = 1.0 / max(n_train - 1, 1)
    for split, n in (("val", n_val), ("test", n_test)):
        # held-out moments: between two training times, never on one
        k = torch.randint(0, max(n_train - 1, 1), (n,), generator=g).float()
        times[split] = ((k + 0.5) * step).clamp(0, 1)
        cams[split] = sample_poses_sphere(n, radius, (15.0, 60.0), generator=g)
    K = intrinsics_from_fov(fov_deg, res, res)
    ts = np.linspace(0, 1, 65)
    boxes = np.stack([scene_aabb(dynamic_primitives(t)) for t in ts])
    aabb = np.concatenate([boxes[:, :3].min(0), boxes[:, 3:].max(0)])
    half_diag = 0.5 * float(np.linalg.norm(aabb[3:] - aabb[:3]))
    near, far = max(0.05, radius - half_diag - float(np.linalg.norm(0.5 * (aabb[3:] + aabb[:3])))), radius + half_diag
    total = n_train + n_val + n_test
    bar = tqdm(total=total, desc="synth dynamic scene", unit="view", disable=not progress)
    for split in ("train", "val", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        c2w, tt = cams[split], times[split]
        for a in range(0, len(c2w), chunk):
            b = min(len(c2w), a + chunk)
            scene = pack_scenes([dynamic_primitives(float(t)) for t in tt[a:b]])
            r = render_views(scene, K, c2w[a:b], res, res)
            rgba = torch.cat([r["rgb"] * r["mask"].unsqueeze(-1), r["mask"].unsqueeze(-1).float()], -1)
            rgba8, mask8 = _to_u8(rgba), r["mask"].numpy().astype(np.uint8) * 255
            depth = r["depth"].numpy().astype(np.float32)
            for j in range(b - a):
                i = a + j
                stem = f"r_{i:03d}"
                _save_png(out / split / f"{stem}.png", rgba8[j])
                _save_png(out / split / f"{stem}_mask.png", mask8[j])
                np.save(out / split / f"{stem}_depth.npy", np.where(mask8[j] > 0, depth[j], 0).astype(np.float32))
                frames.append({"file_path": f"./{split}/{stem}", "time": round(float(tt[i]), 6),
                               "transform_matrix": c2w[i].tolist(),
                               "depth_file_path": f"./{split}/{stem}_depth.npy",
                               "mask_file_path": f"./{split}/{stem}_mask.png"})
            bar.update(b - a)
        with open(out / f"transforms_{split}.json", "w") as f:
            json.dump({"camera_angle_x": math.radians(fov_deg), "frames": frames}, f, indent=2)
    bar.close()
    meta = {"generator": "aware3d.data.dynamic.synth_dynamic_scene", "dynamic": True,
            "aabb": aabb.tolist(), "near": near, "far": far, "radius": radius, "fov_deg": fov_deg,
            "resolution": res, "n_views": {"train": n_train, "val": n_val, "test": n_test}, "seed": seed,
            "primitives_at_t0": [p.to_dict() for p in dynamic_primitives(0.0)],
            "time": "each frame's 'time' in [0, 1]; the scene at t is aware3d.data.dynamic.dynamic_primitives(t)",
            "depth": "float32 .npy, distance along the ray from the camera centre; 0 = background",
            "camera_convention": "OpenGL camera-to-world (x right, y up, looks down -z); world z-up"}
    (out / "scene.json").write_text(json.dumps(meta, indent=2))
    return meta
