"""nerfstudio / instant-ngp scenes: one ``transforms.json`` with OpenGL camera-to-world poses.

Intrinsics may be given for the whole file or per frame (a frame's keys override the file's):
``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``, with ``camera_angle_x`` / ``camera_angle_y``
(radians) as fallbacks for the focal lengths, and OpenCV distortion ``k1``, ``k2``, ``p1``, ``p2``
(``k3`` is also honoured). ``cx``/``cy`` default to the image centre and ``w``/``h`` to the image
size. Frames whose image file is missing are skipped with ONE warning that counts them (the
instant-ngp fox scene lists 67 frames for 50 images). Depth and mask files are not read.

Undistortion: images with non-zero distortion are undistorted (OpenCV's lens model, computed
without OpenCV) to the *same* pinhole ``K`` (edge pixels replicated where the source falls outside
the image), so the returned K is a plain pinhole and ``SceneDataset.distortion`` records the
(k1, k2, p1, p2) that were removed. With ``downscale`` the image is area-downscaled first and
undistorted with the scaled K (distortion coefficients act on normalised coordinates, so they do
not change).

instant-ngp scale / offset: instant-ngp maps file positions p to ``p * scale + offset`` (defaults
0.33 and (0.5, 0.5, 0.5)) and reconstructs inside the cube centred at 0.5 with side ``aabb_scale``.
Here positions become ``(p * scale + offset - 0.5) / 0.33``: the instant-ngp frame re-centred on
the origin and rescaled so that the defaults leave the file's poses unchanged. With an instant-ngp
file (any of ``aabb_scale``, ``scale``, ``offset``) the aabb is instant-ngp's cube in these units,
``±aabb_scale / (2 * 0.33)`` (``aabb_scale`` default 1); otherwise (plain nerfstudio) the aabb is
the box of the camera centres padded by 10 % of its size. near / far follow from the aabb
(:func:`aware3d.data._common.bounds_from_aabb`).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ._common import (
    bounds_from_aabb,
    check_pose,
    composite,
    confined_path,
    decode_image,
    fov_to_focal,
    frame_label,
    read_json,
    split_indices,
    stack_alphas,
    stack_images,
    to_tensor,
    undistort,
)
from .normalize import (
    normalise_poses,
    normalise_scene,
    transform_points,
    wants_normalisation,
)
from .scene import DataError, SceneDataset, parse_background

NGP_DEFAULT_SCALE = 0.33
NGP_DEFAULT_OFFSET = (0.5, 0.5, 0.5)
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y",
                   "k1", "k2", "k3", "p1", "p2")


def _num(file, where, key, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(f"{file}: {where}: '{key}' is {v!r}, expected a finite number")
    return float(v)


def _frame_intrinsics(file, meta, fr, i, name, img_size):
    """(K (3, 3), (w, h), dist (5,) k1 k2 p1 p2 k3) for one frame at full resolution."""
    where = frame_label(i, name)
    vals = {}
    for k in _INTRINSIC_KEYS:
        v = fr.get(k, meta.get(k))
        if v is not None:
            vals[k] = _num(file, where, k, v)
    w = int(vals.get("w", img_size[0]))
    h = int(vals.get("h", img_size[1]))
    fx = vals.get("fl_x")
    if fx is None and "camera_angle_x" in vals:
        fx = fov_to_focal(vals["camera_angle_x"], w)
    fy = vals.get("fl_y")
    if fy is None and "camera_angle_y" in vals:
        fy = fov_to_focal(vals["camera_angle_y"], h)
    if fx is None and fy is None:
        raise DataError(f"{file}: {where}: no focal length (expected fl_x / fl_y or camera_angle_x "
                        f"in the frame or at the top level)")
    fx = fy if fx is None else fx
    fy = fx if fy is None else fy
    if fx <= 0 or fy <= 0:
        raise DataError(f"{file}: {where}: focal lengths {fx}, {fy}: expected positive numbers")
    cx, cy = vals.get("cx", w / 2.0), vals.get("cy", h / 2.0)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    dist = np.array([vals.get(k, 0.0) for k in ("k1", "k2", "p1", "p2", "k3")], dtype=np.float64)
    return K, (w, h), dist


def load_nerfstudio(path, split: str = "train", downscale: int = 1, background="white",
                    holdout: int = 8, limit: int | None = None, normalize="auto",
                    **_ignored) -> SceneDataset:
    """Load a nerfstudio / instant-ngp ``transforms.json`` (``path`` is the file or its folder).
    ``split`` as in :func:`aware3d.data.load_scene` (``"all"`` for every frame).

    normalize: ``"auto"`` normalises plain nerfstudio files (whose frame is the structure-from-motion
    model's: any up axis, origin and scale) and keeps instant-ngp files (whose frame instant-ngp
    defines) as they are; True / False force it (:mod:`aware3d.data.normalize`). A file's
    ``applied_transform`` (3x4 or 4x4) is kept as ``SceneDataset.sfm_transform``."""
    p = Path(path)
    file = p / "transforms.json" if p.is_dir() else p
    root = file.parent
    bg = parse_background(background)
    meta = read_json(file)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{file}: expected a non-empty 'frames' list")
    cam_model = str(meta.get("camera_model", "OPENCV"))
    if cam_model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise DataError(f"{file}: camera_model {cam_model!r} is not supported (expected OPENCV or PINHOLE)")
    ngp = any(k in meta for k in ("aabb_scale", "scale", "offset"))
    scale = _num(file, "top level", "scale", meta.get("scale", NGP_DEFAULT_SCALE))
    offset = np.asarray(meta.get("offset", NGP_DEFAULT_OFFSET), dtype=np.float64)
    if offset.shape != (3,) or not np.isfinite(offset).all():
        raise DataError(f"{file}: offset is {meta.get('offset')!r}, expected 3 finite numbers")
    if scale <= 0:
        raise DataError(f"{file}: scale is {scale}, expected a positive number")

    present, missing = [], []
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DataError(f"{file}: {frame_label(i)}: expected an object with 'file_path' and "
                            f"'transform_matrix'")
        name = str(fr["file_path"])
        c2w = check_pose(fr["transform_matrix"], file, i, name)  # validate every frame, even skipped ones
        ipath = confined_path(root, name, file, i, name)
        (present if ipath.is_file() else missing).append((i, fr, name, ipath, c2w))
    if missing:
        warnings.warn(f"{file}: skipped {len(missing)} of {len(frames)} frames whose image files are "
                      f"missing (first: {missing[0][3]})", stacklevel=2)
    if not present:
        raise DataError(f"{file}: none of the {len(frames)} frames has an existing image file "
                        f"(first expected: {missing[0][3]})")
    sel = [present[j] for j in split_indices(len(present), split, holdout, file)]
    if limit is not None:
        sel = sel[:limit]
    rgbs, alphas, c2ws, Ks, dists, names = [], [], [], [], [], []
    for i, fr, name, ipath, c2w in sel:
        K, (w, h), dist = _frame_intrinsics(file, meta, fr, i, name, _image_size(ipath, file, i, name))
        arr = decode_image(ipath, file, i, name, downscale=downscale, expect_size=(w, h))
        K = K.copy()
        K[0] *= arr.shape[1] / w
        K[1] *= arr.shape[0] / h
        K[2] = (0, 0, 1)
        rgb, a = composite(arr, bg.numpy())
        cv_dist = dist  # OpenCV order k1 k2 p1 p2 k3
        rgb = undistort(rgb, K, cv_dist)
        if a is not None:
            a = undistort(a, K, cv_dist)
        c2w = c2w.copy()
        c2w[:3, 3] = (c2w[:3, 3] * scale + offset - 0.5) / NGP_DEFAULT_SCALE
        rgbs.append(rgb); alphas.append(a); c2ws.append(c2w); Ks.append(K); dists.append(dist[:4])
        names.append(name)
    images = stack_images(rgbs, file, names)
    c2w_np = np.stack(c2ws, 0)
    all_c = np.stack([(c[:3, 3] * scale + offset - 0.5) / NGP_DEFAULT_SCALE for *_, c in present], 0)
    if ngp:
        a_s = _num(file, "top level", "aabb_scale", meta.get("aabb_scale", 1))
        half = a_s / (2 * NGP_DEFAULT_SCALE)
        aabb = np.array([-half, -half, -half, half, half, half])
    else:
        lo, hi = all_c.min(0), all_c.max(0)
        pad = 0.1 * np.maximum(hi - lo, 1e-3)
        aabb = np.concatenate([lo - pad, hi + pad])
    cams = np.tile(np.eye(4), (len(all_c), 1, 1))
    cams[:, :3, 3] = all_c
    near, far = bounds_from_aabb(cams, aabb)
    alpha_t = stack_alphas(alphas)
    dist_t = to_tensor(np.stack(dists, 0)) if any(np.any(d) for d in dists) else None
    ds = SceneDataset(
        images=to_tensor(np.clip(images, 0, 1)), alphas=alpha_t, c2w=to_tensor(c2w_np),
        K=to_tensor(np.stack(Ks, 0)), width=int(images.shape[2]), height=int(images.shape[1]),
        near=float(near), far=float(far), aabb=to_tensor(aabb), depths=None, names=names,
        distortion=dist_t, background=bg, format="instant-ngp" if ngp else "nerfstudio",
        source=str(file), sfm_transform=_applied_transform(file, meta))
    if wants_normalisation(normalize, ds.format):
        all_c2w = np.stack([c for *_, c in present], 0)
        all_c2w[:, :3, 3] = all_c
        T = normalise_poses(all_c2w)
        c = transform_points(T, all_c)
        lo, hi = c.min(0), c.max(0)
        pad = 0.1 * np.maximum(hi - lo, 1e-3)
        normalise_scene(ds, T, np.concatenate([lo - pad, hi + pad]))
        cams = np.tile(np.eye(4), (len(c), 1, 1))
        cams[:, :3, 3] = c
        ds.near, ds.far = bounds_from_aabb(cams, ds.aabb.double().numpy())
    return ds


def _applied_transform(file, meta):
    """The file's ``applied_transform`` (SfM frame -> file frame) as a (4, 4) float64 tensor, or None."""
    if "applied_transform" not in meta:
        return None
    import torch

    m = np.asarray(meta["applied_transform"], dtype=np.float64) if isinstance(meta["applied_transform"], list) else None
    if m is None or m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
        raise DataError(f"{file}: applied_transform is {meta['applied_transform']!r}, expected a 3x4 or 4x4 "
                        f"matrix of finite numbers")
    T = np.eye(4)
    T[:m.shape[0]] = m
    return torch.as_tensor(T, dtype=torch.float64)


def _image_size(path: Path, file, i, name):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise DataError(f"{file}: {frame_label(i, name)}: cannot decode image {path} "
                        f"({type(e).__name__}: {e})") from None
