"""LLFF forward-facing scenes: ``poses_bounds.npy`` + ``images/`` (or ``images_N/``).

``poses_bounds.npy`` is (N, 17): per image a 3x5 matrix flattened row-major, whose first four
columns are a camera-to-world pose with rotation columns (down, right, backwards) and whose fifth
column is (height, width, focal) of the full-resolution images, followed by the near / far depth
bounds of the scene points seen by that camera. Images are matched to poses in sorted file-name
order (as LLFF and NeRF do).

Processing follows the NeRF reference loader: poses are converted to OpenGL with
:func:`aware3d.render.cameras.llff_to_opengl`; positions and bounds are scaled by
``1 / (min bound * bd_factor)`` (``bd_factor`` 0.75; None disables it) so the nearest content is at
about 1.33; with ``recenter`` every pose is premultiplied by the inverse of the average pose, so the
average camera sits at the origin looking down -z. Note: this is the forward-facing frame NeRF uses
for NDC, not the z-up world of object-centric scenes. near = 0.9 * min bound, far = max bound; the
aabb spans the camera centres and the view frusta between near and far.

``downscale`` N uses ``images_N/`` when it exists (LLFF ships them), otherwise area-resizes
``images/``; the focal length is rescaled from the hwf column to the actual image width.
For NDC rendering use :func:`ndc_rays`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._common import (RIGID_TOL, composite, decode_image, split_indices, stack_alphas, stack_images,
                      to_tensor)
from .scene import DataError, SceneDataset, parse_background

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _normalize(v):
    return v / np.linalg.norm(v)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """NeRF's average pose (4, 4) of OpenGL c2w (N, 4, 4): mean centre, summed viewing axis, summed up."""
    centre = c2w[:, :3, 3].mean(0)
    z = _normalize(c2w[:, :3, 2].sum(0))
    up = c2w[:, :3, 1].sum(0)
    x = _normalize(np.cross(up, z))
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, :4] = np.stack([x, y, z, centre], 1)
    return m


def _list_images(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def load_llff(root, split: str = "train", downscale: int = 1, background="white",
              holdout: int = 8, recenter: bool = True, bd_factor: float | None = 0.75,
              limit: int | None = None, **_ignored) -> SceneDataset:
    """Load an LLFF scene. ``split`` as in :func:`aware3d.data.load_scene`."""
    from ..render.cameras import llff_to_opengl

    root = Path(root)
    file = root / "poses_bounds.npy"
    bg = parse_background(background)
    try:
        arr = np.load(file, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{file}: cannot read ({type(e).__name__}: {e}); expected an (N, 17) float array") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0:
        raise DataError(f"{file}: shape {arr.shape}, expected (N, 17) (3x5 pose + hwf per image, then near, far)")
    arr = arr.astype(np.float64)
    n = arr.shape[0]
    poses = arr[:, :15].reshape(n, 3, 5)
    bds = arr[:, 15:17]
    for i in range(n):
        if not np.isfinite(arr[i]).all():
            raise DataError(f"{file}: frame {i}: non-finite values in pose or bounds (expected finite numbers)")
        R = poses[i, :, :3]
        err, det = np.abs(R.T @ R - np.eye(3)).max(), np.linalg.det(R)
        if err > RIGID_TOL or abs(det - 1) > RIGID_TOL:
            raise DataError(f"{file}: frame {i}: rotation is not rigid (max |R^T R - I| = {err:.3g}, "
                            f"det = {det:.6g}; expected orthonormal with det 1)")
        h, w, f = poses[i, :, 4]
        if min(h, w, f) <= 0:
            raise DataError(f"{file}: frame {i}: hwf column is {[h, w, f]}, expected positive height, width, focal")
        if not 0 < bds[i, 0] <= bds[i, 1]:
            raise DataError(f"{file}: frame {i}: bounds {bds[i].tolist()}, expected 0 < near <= far")
    img_dir = root / "images"
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: not found (expected the images of {file})")
    files = _list_images(img_dir)
    if len(files) != n:
        raise DataError(f"{file}: has {n} poses but {img_dir} has {len(files)} images (expected one image per pose)")
    scaled_dir = root / f"images_{downscale}"
    use_scaled = downscale > 1 and scaled_dir.is_dir() and len(_list_images(scaled_dir)) == n
    if use_scaled:
        files = _list_images(scaled_dir)

    c2w = llff_to_opengl(torch.from_numpy(poses[:, :, :4])).numpy()
    bds = bds.copy()
    if bd_factor:
        sc = 1.0 / (bds.min() * bd_factor)
        c2w[:, :3, 3] *= sc
        bds *= sc
    if recenter:
        c2w = np.linalg.inv(average_pose(c2w))[None] @ c2w

    idx = split_indices(n, split, holdout, file)
    if limit is not None:
        idx = idx[:limit]
    rgbs, alphas, Ks, names = [], [], [], []
    for i in idx:
        h, w, f = poses[i, :, 4]
        path = files[i]
        if use_scaled:
            img = decode_image(path, file, i, path.name)
        else:
            img = decode_image(path, file, i, path.name, downscale=downscale,
                               expect_size=(int(round(w)), int(round(h))))
        rgb, a = composite(img, bg.numpy())
        H, W = rgb.shape[:2]
        Ks.append(np.array([[f * W / w, 0, W / 2], [0, f * H / h, H / 2], [0, 0, 1]]))
        rgbs.append(rgb); alphas.append(a); names.append(path.name)
    images = stack_images(rgbs, file, names)
    near, far = float(bds.min() * 0.9), float(bds.max())
    # aabb: camera centres and the frustum corners at near and far
    H, W = images.shape[1:3]
    K0 = Ks[0]
    corners = np.array([[(u - K0[0, 2]) / K0[0, 0], -(v - K0[1, 2]) / K0[1, 1], -1.0]
                        for u in (0, W) for v in (0, H)])
    corners /= np.linalg.norm(corners, axis=1, keepdims=True)
    pts = [c2w[:, :3, 3]]
    for dist in (near, far):
        pts.append((c2w[:, None, :3, :3] @ corners[None, :, :, None])[..., 0].reshape(-1, 3) * dist
                   + np.repeat(c2w[:, :3, 3], 4, 0))
    pts = np.concatenate(pts, 0)
    aabb = np.concatenate([pts.min(0), pts.max(0)])
    alpha_t = stack_alphas(alphas)
    return SceneDataset(
        images=to_tensor(np.clip(images, 0, 1)), alphas=alpha_t, c2w=to_tensor(c2w[idx]),
        K=to_tensor(np.stack(Ks, 0)), width=int(W), height=int(H), near=near, far=far,
        aabb=to_tensor(aabb), depths=None, names=names, distortion=None, background=bg,
        format="llff", source=str(root))


def ndc_rays(K: torch.Tensor, near: float, rays_o: torch.Tensor, rays_d: torch.Tensor):
    """Map forward-facing rays (camera looking down -z, as after LLFF recentring) into NeRF's
    normalised device coordinates.

    K: (3, 3) intrinsics, or (..., 3, 3) whose batch dims broadcast against ``rays_o.shape[:-1]``; the image size is taken as
    (2 cx, 2 cy) (principal point at the centre, as for LLFF). near: the near plane distance.
    rays_o, rays_d: (..., 3). Origins are first moved onto the plane z = -near. Returns
    ``(o_ndc, d_ndc)``: in NDC, t in [0, 1) along ``o_ndc + t d_ndc`` covers z from -near to -inf;
    ``d_ndc`` is **not** unit length (unlike world rays), and its z is 2 near / -o_z."""
    from ..render._checks import check_tensor

    check_tensor("K", K, (3, 3), floating=True)
    check_tensor("rays_o", rays_o, (3,), floating=True)
    check_tensor("rays_d", rays_d, (3,), floating=True)
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    W, H = 2 * K[..., 0, 2], 2 * K[..., 1, 2]
    t = -(near + rays_o[..., 2]) / rays_d[..., 2]
    o = rays_o + t.unsqueeze(-1) * rays_d
    ox, oy, oz = o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    ax, ay = -2 * fx / W, -2 * fy / H
    o_ndc = torch.stack([ax * ox / oz, ay * oy / oz, 1 + 2 * near / oz], -1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2 * near / oz], -1)
    return o_ndc, d_ndc
