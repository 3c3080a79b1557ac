"""Blender / NeRF-synthetic scenes: ``transforms_{train,val,test}.json`` + RGBA PNGs.

Each JSON has ``camera_angle_x`` (horizontal field of view, radians) and ``frames`` with a
``file_path`` (relative to the JSON, with or without ``.png``) and a 4x4 OpenGL camera-to-world
``transform_matrix`` (already the internal convention). Images are composited on the chosen
background (white by default, as NeRF does for these scenes); the alpha channel is kept in
``SceneDataset.alphas``.

Depth: if a frame has ``depth_file_path``, or a ``<image stem>_depth.npy`` lies next to the image
(what :func:`aware3d.data.synth.synth_scene` writes), it is read as float32 (H, W) distance along the
ray with 0 (or inf) for background; the dataset stores 0 for background.

Dynamic scenes (the D-NeRF format): every frame also has a ``time`` in [0, 1], the moment it shows;
it becomes ``SceneDataset.times``. A frame without one among frames with one is an error.

Bounds: a ``scene.json`` next to the transforms (written by ``synth_scene``) supplies ``aabb``,
``near`` and ``far``; otherwise the aabb is the usual NeRF-synthetic cube [-1.5, 1.5]^3 and
near / far are derived from the camera positions and that cube.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ._common import (
    bounds_from_aabb,
    check_pose,
    composite,
    confined_path,
    decode_image,
    downscale_depth,
    fov_to_focal,
    frame_label,
    read_json,
    stack_alphas,
    stack_images,
    to_tensor,
)
from .scene import DataError, SceneDataset, parse_background

DEFAULT_AABB = (-1.5, -1.5, -1.5, 1.5, 1.5, 1.5)


def _resolve_image(root: Path, file_path: str) -> Path:
    p = (root / file_path)
    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".webp") and p.is_file():
        return p
    for ext in (".png", ".PNG", ".jpg", ".jpeg"):
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return p if p.suffix else p.with_name(p.name + ".png")


def _read_depth(path: Path, file, frame, name, size) -> np.ndarray:
    try:
        d = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{file}: {frame_label(frame, name)}: cannot read depth {path} ({e})") from None
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.shape != (size[1], size[0]):
        raise DataError(f"{file}: {frame_label(frame, name)}: depth {path} has shape {d.shape}, "
                        f"expected {(size[1], size[0])} like its image")
    d = d.astype(np.float32)
    return np.where(np.isfinite(d), d, 0.0).astype(np.float32)


def load_blender_split(root: Path, split: str):
    """Parse one transforms_{split}.json (no image decoding): returns (file, camera_angle_x, frames)
    with frames as list of (image_path, c2w float64 4x4, depth_path or None, name, time or None);
    ``time`` is the D-NeRF format's per-frame moment in [0, 1] (every frame has one, or none does)."""
    file = root / f"transforms_{split}.json"
    if not file.is_file():
        have = sorted(p.name for p in root.glob("transforms_*.json"))
        raise DataError(f"{file}: not found (expected transforms_{split}.json for split {split!r}; "
                        f"found {have or 'none'})")
    meta = read_json(file)
    angle = meta.get("camera_angle_x")
    if not isinstance(angle, (int, float)) or not math.isfinite(angle) or not 0 < angle < math.pi:
        raise DataError(f"{file}: camera_angle_x is {angle!r}, expected a field of view in radians in (0, pi)")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{file}: expected a non-empty 'frames' list")
    out = []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DataError(f"{file}: {frame_label(i)}: expected an object with 'file_path' and "
                            f"'transform_matrix'")
        name = str(fr["file_path"])
        c2w = check_pose(fr["transform_matrix"], file, i, name)
        confined_path(root, name, file, i, name)
        img = _resolve_image(root, name)
        if fr.get("depth_file_path"):
            dpath = confined_path(root, fr["depth_file_path"], file, i, name, what="depth_file_path")
            if not dpath.is_file():
                raise DataError(f"{file}: {frame_label(i, name)}: depth file {dpath} does not exist")
        else:
            dpath = img.with_name(img.stem + "_depth.npy")
            dpath = dpath if dpath.is_file() else None
        t = fr.get("time")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t)
                              or not 0 <= t <= 1):
            raise DataError(f"{file}: {frame_label(i, name)}: time is {t!r}, expected a number in [0, 1]")
        out.append((img, c2w, dpath, name, None if t is None else float(t)))
    timed = [f[4] is not None for f in out]
    if any(timed) and not all(timed):
        i = timed.index(False)
        raise DataError(f"{file}: {frame_label(i, out[i][3])}: has no 'time' while other frames do "
                        f"(a dynamic scene needs a time in [0, 1] on every frame)")
    return file, float(angle), out


def load_blender(root, split: str = "train", downscale: int = 1, background="white",
                 limit: int | None = None, **_ignored) -> SceneDataset:
    """Load a Blender-format scene split (``"all"`` concatenates train, val and test)."""
    root = Path(root)
    bg = parse_background(background)
    bg_np = bg.numpy()
    splits = [s for s in ("train", "val", "test") if (root / f"transforms_{s}.json").is_file()] \
        if split == "all" else [split]
    if split != "all" and split not in ("train", "val", "test"):
        raise ValueError(f"split: expected 'train', 'val', 'test' or 'all', got {split!r}")
    imgs, alphas, depths, c2ws, Ks, names, times = [], [], [], [], [], [], []
    any_depth = False
    first_size = None
    for s in splits:
        file, angle, frames = load_blender_split(root, s)
        if limit is not None:
            frames = frames[:limit]
        for i, (ipath, c2w, dpath, name, t) in enumerate(frames):
            times.append(t)
            img = decode_image(ipath, file, i, name)  # full size first: check sizes agree
            h, w = img.shape[:2]
            if first_size is None:
                first_size = (w, h)
            elif (w, h) != first_size:
                raise DataError(f"{file}: {frame_label(i, name)}: image {ipath} is {w}x{h}, expected "
                                f"{first_size[0]}x{first_size[1]} like the first frame")
            depth = _read_depth(dpath, file, i, name, (w, h)) if dpath is not None else None
            if downscale > 1:
                from ._common import area_resize
                nw, nh = w // downscale, h // downscale
                img = area_resize(img, nw, nh, premultiply=img.shape[-1] == 4)
                if depth is not None:
                    depth = downscale_depth(depth, nw, nh)
            rgb, a = composite(img, bg_np)
            f = fov_to_focal(angle, w)
            sx, sy = img.shape[1] / w, img.shape[0] / h
            Ks.append([[f * sx, 0, 0.5 * w * sx], [0, f * sy, 0.5 * h * sy], [0, 0, 1]])
            imgs.append(rgb)
            alphas.append(a)
            depths.append(depth)
            any_depth |= depth is not None
            c2ws.append(c2w)
            names.append(name)
    images = stack_images(imgs, root / f"transforms_{splits[0]}.json", names)
    H, W = images.shape[1:3]
    alpha_t = stack_alphas(alphas)
    depth_t = None
    if any_depth:
        depth_t = to_tensor(np.stack([d if d is not None else np.zeros((H, W), np.float32)
                                      for d in depths], 0))
    c2w_np = np.stack(c2ws, 0)
    scene_json = root / "scene.json"
    aabb = np.array(DEFAULT_AABB, dtype=np.float64)
    near = far = None
    if scene_json.is_file():
        meta = read_json(scene_json)
        if "aabb" in meta:
            aabb = np.asarray(meta["aabb"], dtype=np.float64)
            if aabb.shape != (6,) or not np.isfinite(aabb).all() or (aabb[3:] <= aabb[:3]).any():
                raise DataError(f"{scene_json}: aabb is {meta['aabb']!r}, expected 6 finite numbers "
                                f"(xmin, ymin, zmin, xmax, ymax, zmax) with min < max")
        near, far = meta.get("near"), meta.get("far")
    if near is None or far is None:
        near, far = bounds_from_aabb(c2w_np, aabb)
    if any(t is not None for t in times) and not all(t is not None for t in times):
        raise DataError(f"{root}: some splits give frames a 'time' and others do not (a dynamic scene "
                        f"needs a time in [0, 1] on every frame of every split)")
    times_t = torch.tensor(times, dtype=torch.float32) if times and times[0] is not None else None
    return SceneDataset(
        images=to_tensor(np.clip(images, 0, 1)), alphas=alpha_t, c2w=to_tensor(c2w_np),
        K=torch.tensor(Ks, dtype=torch.float32), width=int(W), height=int(H), near=float(near),
        far=float(far), aabb=to_tensor(aabb), depths=depth_t, names=names, distortion=None,
        background=bg, format="blender", source=str(root), times=times_t)
