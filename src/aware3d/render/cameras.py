"""Cameras: intrinsics, rays, projection, convention converters, pose samplers and camera paths.

The one internal convention (OpenGL / Blender): a camera-to-world matrix ``c2w`` (..., 4, 4) or
(..., 3, 4) whose columns are the camera's x (right), y (up) and z (backwards) axes and its centre;
the camera looks down its -z axis. The world is z-up. Pixel (row i, column j) has its centre at
image coordinates (u, v) = (j + 0.5, i + 0.5); v grows downwards. Ray directions are unit vectors,
so a ray parameter t is the Euclidean distance from the camera centre, and "depth" maps are
distances along the ray (use :func:`ray_to_z_depth` for z-depth).

Intrinsics ``K`` (..., 3, 3) are the usual pinhole matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
in pixels, in the OpenCV sense (v downwards); the y flip into the OpenGL camera happens here.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ._checks import ShapeError, check_same_device, check_tensor

# --------------------------------------------------------------------------------------------------
# Intrinsics


def intrinsics(fx, fy, cx, cy, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Pinhole matrix from focal lengths and principal point (scalars or tensors of one shape)."""
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    z, o = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, z, cx], -1), torch.stack([z, fy, cy], -1), torch.stack([z, z, o], -1)]
    return torch.stack(rows, -2)


def intrinsics_from_fov(fov_deg: float, width: int, height: int | None = None, *,
                        dtype=torch.float32, device=None) -> torch.Tensor:
    """Pinhole matrix with horizontal field of view ``fov_deg`` (Blender's ``camera_angle_x``),
    square pixels and the principal point at the image centre."""
    if not 0 < float(fov_deg) < 180:
        raise ValueError(f"fov_deg: expected a field of view in (0, 180) degrees, got {fov_deg}")
    height = width if height is None else height
    f = 0.5 * width / math.tan(0.5 * math.radians(float(fov_deg)))
    return intrinsics(f, f, width / 2.0, height / 2.0, dtype=dtype, device=device)


def scale_intrinsics(K: torch.Tensor, factor: float) -> torch.Tensor:
    """Intrinsics of the same camera for an image resized by ``factor`` (e.g. 0.25 for
    ``--downscale 4``). Focal lengths and principal point scale alike (pixel-centre convention)."""
    check_tensor("K", K, (3, 3))
    K = K.clone()
    K[..., :2, :] = K[..., :2, :] * factor
    return K


# --------------------------------------------------------------------------------------------------
# Rays


def _as_3x4(name: str, c2w: torch.Tensor) -> torch.Tensor:
    if not isinstance(c2w, torch.Tensor) or c2w.dim() < 2 or c2w.shape[-1] != 4 or \
            c2w.shape[-2] not in (3, 4):
        got = tuple(c2w.shape) if isinstance(c2w, torch.Tensor) else type(c2w).__name__
        raise ShapeError(f"{name}: expected shape (..., 3, 4) or (..., 4, 4), got {got}")
    return c2w[..., :3, :]


def pixel_grid(width: int, height: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Pixel-centre coordinates (height, width, 2) as (u, v) = (j + 0.5, i + 0.5)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device) + 0.5,
                          torch.arange(width, dtype=dtype, device=device) + 0.5, indexing="ij")
    return torch.stack([u, v], -1)


def _broadcast_cameras(K: torch.Tensor, c2w: torch.Tensor):
    """Broadcast the batch dims of K (..., 3, 3) and c2w (..., 3, 4) against each other."""
    try:
        batch = torch.broadcast_shapes(K.shape[:-2], c2w.shape[:-2])
    except RuntimeError:
        raise ShapeError(f"K and c2w: batch dims do not broadcast: K {tuple(K.shape)}, "
                         f"c2w {tuple(c2w.shape)}") from None
    return K.expand(*batch, 3, 3), c2w.expand(*batch, *c2w.shape[-2:])


def rays_from_pixels(K: torch.Tensor, c2w: torch.Tensor, uv: torch.Tensor, *, normalize: bool = True):
    """World rays through image points.

    K: (..., 3, 3); c2w: (..., 3|4, 4); uv: (..., *S, 2) image coordinates in pixels, where the
    leading ``...`` of ``uv`` equal the broadcast batch dims of K and c2w and ``*S`` is any extra sample shape.
    Returns ``(rays_o, rays_d)``, each (..., *S, 3), with unit directions; ``normalize=False``
    keeps the directions at camera depth 1 (the camera-frame direction ``(x, y, -1)``, as the NeRF
    code's ``get_rays``), so a distance t along them is the point's depth along the optical axis.
    """
    check_tensor("K", K, (3, 3), floating=True)
    c2w = _as_3x4("c2w", c2w)
    check_tensor("uv", uv, (2,), floating=True)
    check_same_device(K=K, c2w=c2w, uv=uv)
    K, c2w = _broadcast_cameras(K, c2w)
    batch = K.dim() - 2
    if uv.dim() - 1 < batch or tuple(uv.shape[:batch]) != tuple(K.shape[:-2]):
        raise ShapeError(f"uv: expected shape {(*K.shape[:-2], '*', 2)} (leading dims of K), "
                         f"got {tuple(uv.shape)}")
    extra = uv.dim() - 1 - batch
    view = (*K.shape[:-2], *([1] * extra))
    fx, fy = K[..., 0, 0].reshape(view), K[..., 1, 1].reshape(view)
    cx, cy = K[..., 0, 2].reshape(view), K[..., 1, 2].reshape(view)
    # OpenCV pixel -> OpenGL camera: x right, y up, looking down -z.
    x = (uv[..., 0] - cx) / fx
    y = -(uv[..., 1] - cy) / fy
    d_cam = torch.stack([x, y, -torch.ones_like(x)], -1)
    R = c2w[..., :3, :3].reshape(*K.shape[:-2], *([1] * extra), 3, 3)
    d = (R @ d_cam.unsqueeze(-1)).squeeze(-1)
    if normalize:
        d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., :3, 3].reshape(*K.shape[:-2], *([1] * extra), 3).expand_as(d)
    return o, d


def image_rays(K: torch.Tensor, c2w: torch.Tensor, width: int, height: int):
    """Rays through every pixel centre. Returns ``(rays_o, rays_d)`` each (..., height, width, 3)."""
    check_tensor("K", K, (3, 3), floating=True)
    K, c2w = _broadcast_cameras(K, _as_3x4("c2w", c2w))
    uv = pixel_grid(width, height, dtype=K.dtype, device=K.device)
    uv = uv.expand(*K.shape[:-2], height, width, 2)
    return rays_from_pixels(K, c2w, uv)


def patch_uv(width: int, height: int, patch: int, center: torch.Tensor, scale: torch.Tensor):
    """GRAF patch sampling: a ``patch`` x ``patch`` sparse grid of image points.

    The grid spans the normalised square [-1, 1]^2 scaled by ``scale`` (..., ) and shifted to
    ``center`` (..., 2) (normalised coordinates in [-1, 1], x right, y down); scale 1 with centre 0
    covers the full image and, for ``patch`` equal to the image size, hits every pixel centre.
    Returns uv (..., patch, patch, 2) in pixels.
    """
    check_tensor("center", center, (2,), floating=True)
    scale = torch.as_tensor(scale, dtype=center.dtype, device=center.device)
    if tuple(scale.shape) != tuple(center.shape[:-1]):
        raise ShapeError(f"scale: expected shape {tuple(center.shape[:-1])} (batch of center), "
                         f"got {tuple(scale.shape)}")
    lin = (torch.arange(patch, dtype=center.dtype, device=center.device) + 0.5) / patch * 2 - 1
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    grid = torch.stack([gx, gy], -1)  # (P, P, 2) normalised
    pts = grid * scale[..., None, None, None] + center[..., None, None, :]
    size = torch.tensor([width, height], dtype=center.dtype, device=center.device)
    return (pts + 1) * 0.5 * size


def patch_rays(K: torch.Tensor, c2w: torch.Tensor, width: int, height: int, patch: int,
               center: torch.Tensor, scale: torch.Tensor):
    """Rays of a GRAF patch (see :func:`patch_uv`). Returns ``(rays_o, rays_d, uv)``, rays
    (..., patch, patch, 3); ``uv`` is what to bilinearly sample the real image with."""
    uv = patch_uv(width, height, patch, center, scale)
    o, d = rays_from_pixels(K, c2w, uv)
    return o, d, uv


def project(points: torch.Tensor, K: torch.Tensor, c2w: torch.Tensor):
    """Project world points (..., *S, 3) into a camera. Returns ``(uv (..., *S, 2), depth)`` where
    depth is the distance from the camera centre (the ``t`` of :func:`rays_from_pixels`); points
    behind the camera get negative depth."""
    check_tensor("points", points, (3,), floating=True)
    check_tensor("K", K, (3, 3), floating=True)
    K, c2w = _broadcast_cameras(K, _as_3x4("c2w", c2w))
    batch = K.dim() - 2
    extra = points.dim() - 1 - batch
    if extra < 0:
        raise ShapeError(f"points: expected shape {(*K.shape[:-2], '*', 3)}, got {tuple(points.shape)}")
    R = c2w[..., :3, :3].reshape(*K.shape[:-2], *([1] * extra), 3, 3)
    t = c2w[..., :3, 3].reshape(*K.shape[:-2], *([1] * extra), 3)
    p_cam = (R.transpose(-1, -2) @ (points - t).unsqueeze(-1)).squeeze(-1)
    view = (*K.shape[:-2], *([1] * extra))
    zf = -p_cam[..., 2]  # positive in front of the camera
    u = K[..., 0, 0].reshape(view) * p_cam[..., 0] / zf + K[..., 0, 2].reshape(view)
    v = -K[..., 1, 1].reshape(view) * p_cam[..., 1] / zf + K[..., 1, 2].reshape(view)
    depth = p_cam.norm(dim=-1) * torch.sign(zf)
    return torch.stack([u, v], -1), depth


def ray_to_z_depth(depth: torch.Tensor, rays_d: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """Convert distance-along-ray depth (..., H, W) into z-depth along the camera's viewing axis."""
    c2w = _as_3x4("c2w", c2w)
    fwd = -c2w[..., :3, 2]
    cos = (rays_d * fwd.reshape(*fwd.shape[:-1], *([1] * (rays_d.dim() - fwd.dim())), 3)).sum(-1)
    return depth * cos


# --------------------------------------------------------------------------------------------------
# Convention converters (all return OpenGL c2w as (..., 4, 4))


_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def to_4x4(c2w: torch.Tensor) -> torch.Tensor:
    """Pad (..., 3, 4) to (..., 4, 4)."""
    c2w_ = _as_3x4("c2w", c2w)
    bottom = torch.zeros(*c2w_.shape[:-2], 1, 4, dtype=c2w_.dtype, device=c2w_.device)
    bottom[..., 0, 3] = 1
    return torch.cat([c2w_, bottom], -2)


def opencv_to_opengl(c2w_cv: torch.Tensor) -> torch.Tensor:
    """OpenCV / COLMAP camera-to-world (x right, y down, looks +z) -> OpenGL (flip y and z axes)."""
    c2w = to_4x4(c2w_cv)
    return c2w @ _FLIP_YZ.to(c2w)


def opengl_to_opencv(c2w_gl: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`opencv_to_opengl` (the flip is its own inverse)."""
    return opencv_to_opengl(c2w_gl)


def w2c_to_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """Invert a rigid world-to-camera matrix (R | t) -> (R^T | -R^T t)."""
    m = to_4x4(w2c)
    R, t = m[..., :3, :3], m[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = m.clone()
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    return out


def colmap_to_c2w(qvec: torch.Tensor, tvec: torch.Tensor) -> torch.Tensor:
    """COLMAP image pose (world-to-camera quaternion qw, qx, qy, qz and translation, OpenCV camera)
    -> OpenGL camera-to-world (..., 4, 4)."""
    check_tensor("qvec", qvec, (4,), floating=True)
    check_tensor("tvec", tvec, (3,), floating=True)
    R = quaternion_to_matrix(qvec)
    w2c = torch.cat([R, tvec.unsqueeze(-1)], -1)
    return opencv_to_opengl(w2c_to_c2w(w2c))


def c2w_to_colmap(c2w_gl: torch.Tensor):
    """Inverse of :func:`colmap_to_c2w`: returns (qvec, tvec)."""
    w2c = w2c_to_c2w(opengl_to_opencv(c2w_gl))
    return matrix_to_quaternion(w2c[..., :3, :3]), w2c[..., :3, 3]


def llff_to_opengl(poses: torch.Tensor) -> torch.Tensor:
    """LLFF ``poses_bounds.npy`` poses (..., 3, 4) whose rotation columns are (down, right,
    backwards) -> OpenGL c2w (right, up, backwards). (The extra column hwf must be removed first.)"""
    c2w = _as_3x4("poses", poses)
    down, right, back, t = c2w[..., 0], c2w[..., 1], c2w[..., 2], c2w[..., 3]
    return to_4x4(torch.stack([right, -down, back, t], -1))


def opengl_to_llff(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`llff_to_opengl`; returns (..., 3, 4)."""
    m = _as_3x4("c2w", c2w)
    right, up, back, t = m[..., 0], m[..., 1], m[..., 2], m[..., 3]
    return torch.stack([-up, right, back, t], -1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (w, x, y, z) (..., 4) -> rotation (..., 3, 3)."""
    check_tensor("q", q, (4,), floating=True)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation (..., 3, 3) -> unit quaternion (w, x, y, z) with w >= 0 (numerically stable branch
    on the largest diagonal term)."""
    check_tensor("R", R, (3, 3), floating=True)
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0],
                     m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # (..., 4, 4): row k is 4 * q_k * q
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    idx = diag.argmax(-1)
    q = torch.gather(cands, -2, idx[..., None, None].expand(*idx.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


# --------------------------------------------------------------------------------------------------
# Poses


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None,
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenGL c2w (..., 4, 4) of cameras at ``eye`` (..., 3) looking at ``target`` (default origin)
    with world ``up`` (default +z). Falls back to +y as up when looking straight along ``up``."""
    check_tensor("eye", eye, (3,), floating=True)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target).to(eye)
    back = eye - target
    back = back / back.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    upv = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(back)
    right = torch.cross(upv, back, dim=-1)
    bad = right.norm(dim=-1, keepdim=True) < 1e-6
    alt = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device).expand_as(back)
    right = torch.where(bad, torch.cross(alt, back, dim=-1), right)
    right = right / right.norm(dim=-1, keepdim=True)
    cam_up = torch.cross(back, right, dim=-1)
    return to_4x4(torch.stack([right, cam_up, back, eye], -1))


def rotation_z(angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotation about the world z axis by ``angle_deg`` (...,) -> (..., 3, 3)."""
    a = torch.deg2rad(torch.as_tensor(angle_deg, dtype=torch.float32))
    c, s, z, o = torch.cos(a), torch.sin(a), torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


def spherical_to_cartesian(radius, elevation_deg, azimuth_deg) -> torch.Tensor:
    """Point at ``radius`` with elevation above the xy-plane and azimuth from +x towards +y."""
    r, el, az = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32)
                                          for v in (radius, elevation_deg, azimuth_deg)))
    el, az = torch.deg2rad(el), torch.deg2rad(az)
    return torch.stack([r * torch.cos(el) * torch.cos(az), r * torch.cos(el) * torch.sin(az),
                        r * torch.sin(el)], -1)


def sample_poses_sphere(n: int, radius: float | Sequence[float] = 4.0,
                        elevation_range: Sequence[float] = (0.0, 90.0),
                        azimuth_range: Sequence[float] = (0.0, 360.0), *,
                        uniform_area: bool = True, generator: torch.Generator | None = None,
                        return_angles: bool = False):
    """``n`` cameras on a sphere looking at the origin (OpenGL c2w (n, 4, 4)).

    Elevation in degrees above the xy-plane, azimuth in degrees; ``(0, 90)`` is the upper
    hemisphere, ``(-90, 90)`` the whole sphere. With ``uniform_area`` the positions are uniform over
    the spherical band (sin(elevation) uniform), otherwise elevation itself is uniform. ``radius``
    is a number or a (min, max) range sampled uniformly.
    """
    lo, hi = (float(v) for v in elevation_range)
    if not -90 <= lo <= hi <= 90:
        raise ValueError(f"elevation_range: expected -90 <= lo <= hi <= 90 degrees, got {elevation_range}")
    u = torch.rand(n, generator=generator)
    if uniform_area:
        s0, s1 = math.sin(math.radians(lo)), math.sin(math.radians(hi))
        el = torch.rad2deg(torch.asin((s0 + (s1 - s0) * u).clamp(-1, 1)))
    else:
        el = lo + (hi - lo) * u
    a0, a1 = (float(v) for v in azimuth_range)
    az = a0 + (a1 - a0) * torch.rand(n, generator=generator)
    if isinstance(radius, (tuple, list)):
        r = float(radius[0]) + (float(radius[1]) - float(radius[0])) * torch.rand(n, generator=generator)
    else:
        r = torch.full((n,), float(radius))
    c2w = look_at(spherical_to_cartesian(r, el, az))
    return (c2w, el, az, r) if return_angles else c2w


# --------------------------------------------------------------------------------------------------
# Camera paths


def turntable_path(n: int, radius: float = 4.0, elevation_deg: float = 30.0,
                   start_azimuth_deg: float = 0.0) -> torch.Tensor:
    """``n`` poses circling the origin at fixed elevation (one full turn, end excluded)."""
    az = start_azimuth_deg + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return look_at(spherical_to_cartesian(radius, elevation_deg, az))


def spiral_path(n: int, radius: float = 4.0, elevation_range: Sequence[float] = (15.0, 60.0),
                turns: float = 2.0) -> torch.Tensor:
    """``n`` poses spiralling round the origin: ``turns`` turns while elevation goes up and down."""
    s = torch.arange(n, dtype=torch.float32) / max(n, 1)
    lo, hi = elevation_range
    el = lo + (hi - lo) * 0.5 * (1 - torch.cos(2 * math.pi * s))
    return look_at(spherical_to_cartesian(radius, el, 360.0 * turns * s))


def interpolate_poses(c2w_a: torch.Tensor, c2w_b: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` poses from ``a`` to ``b`` inclusive: rotation by quaternion slerp, centre linearly."""
    a, b = to_4x4(c2w_a), to_4x4(c2w_b)
    qa, qb = matrix_to_quaternion(a[..., :3, :3]), matrix_to_quaternion(b[..., :3, :3])
    dot = (qa * qb).sum(-1, keepdim=True)
    qb = torch.where(dot < 0, -qb, qb)
    dot = dot.abs().clamp(max=1.0)
    s = torch.linspace(0, 1, n, dtype=a.dtype).reshape(n, *([1] * (qa.dim())))
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    lin = sin < 1e-6
    wa = torch.where(lin, 1 - s, torch.sin((1 - s) * theta) / torch.where(lin, 1, sin))
    wb = torch.where(lin, s, torch.sin(s * theta) / torch.where(lin, 1, sin))
    q = wa * qa + wb * qb
    R = quaternion_to_matrix(q)
    t = (1 - s) * a[..., :3, 3] + s * b[..., :3, 3]
    return to_4x4(torch.cat([R, t.unsqueeze(-1)], -1))


# --------------------------------------------------------------------------------------------------
# Camera paths of real captures: around the point the cameras look at, through the cameras


def focus_point(c2w: torch.Tensor, fallback_depth: float = 1.0) -> torch.Tensor:
    """The scene's centre of interest: the least-squares closest point (3,) to the optical axes of
    the cameras ``c2w`` (N, 4, 4) (each axis: the camera centre along its -z column).

    Where the axes are (nearly) parallel the least-squares problem has no unique answer (forward
    facing captures); along those directions, and when the answer lies behind the cameras, the
    point ``fallback_depth`` in front of the mean camera centre along the mean viewing direction
    is used instead (as LLFF does with its focus depth)."""
    c2w = _as_3x4("c2w", c2w)
    if c2w.dim() != 3 or c2w.shape[0] < 1:
        raise ShapeError(f"c2w: expected shape (N, 4, 4) with N >= 1, got {tuple(c2w.shape)}")
    m = c2w.double()
    o = m[:, :, 3]
    d = -m[:, :, 2]
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    P = torch.eye(3, dtype=m.dtype) - d[:, :, None] * d[:, None, :]     # (N, 3, 3) projectors
    A, b = P.sum(0), (P @ o[:, :, None]).sum(0).squeeze(-1)
    fwd = d.mean(0)
    fwd = fwd / fwd.norm().clamp_min(1e-12)
    ref = o.mean(0) + float(fallback_depth) * fwd
    # Solve on the well-determined eigen-directions of A; take the rest from the fallback point.
    evals, evecs = torch.linalg.eigh(A)
    good = evals > 1e-3 * c2w.shape[0]   # axes spread by more than ~2 degrees
    rhs = evecs.T @ (b - A @ ref)
    coef = torch.where(good, rhs / torch.where(good, evals, torch.ones_like(evals)), torch.zeros_like(rhs))
    p = ref + evecs @ coef
    if float((p - o.mean(0)) @ fwd) <= 0:   # behind the cameras: the axes diverge
        p = ref
    return p.to(c2w.dtype)


def mean_up(c2w: torch.Tensor) -> torch.Tensor:
    """The normalised mean of the cameras' up vectors (their +y columns) (3,)."""
    c2w = _as_3x4("c2w", c2w)
    up = c2w[..., :3, 1].reshape(-1, 3).double().mean(0)
    n = up.norm()
    if n < 1e-8:
        raise ValueError("mean_up: the cameras' up vectors cancel out; no mean up direction")
    return (up / n).to(c2w.dtype)


def _perpendicular(v: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``v`` made perpendicular to unit ``up`` and normalised (any perpendicular when ``v`` is
    parallel to ``up``)."""
    w = v - (v @ up) * up
    if w.norm() < 1e-8:
        alt = torch.tensor([1.0, 0.0, 0.0], dtype=up.dtype)
        if abs(float(alt @ up)) > 0.9:
            alt = torch.tensor([0.0, 1.0, 0.0], dtype=up.dtype)
        w = alt - (alt @ up) * up
    return w / w.norm()


def camera_orbit(c2w: torch.Tensor, fallback_depth: float = 1.0) -> dict:
    """The orbit of a set of cameras (N, 4, 4) around their centre of interest: ``center``
    (:func:`focus_point`), ``up`` (:func:`mean_up`), ``radius`` (mean distance of the camera
    centres from the centre), ``elevation_deg`` (their mean elevation above the plane through the
    centre normal to ``up``) and ``start`` (unit vector in that plane towards the first camera)."""
    c2w = _as_3x4("c2w", c2w)
    center = focus_point(c2w, fallback_depth).double()
    up = mean_up(c2w).double()
    rel = c2w[:, :3, 3].double() - center
    dist = rel.norm(dim=-1)
    el = torch.rad2deg(torch.asin(((rel @ up) / dist.clamp_min(1e-12)).clamp(-1, 1)))
    dt = c2w.dtype
    return {"center": center.to(dt), "up": up.to(dt), "radius": float(dist.mean()),
            "elevation_deg": float(el.mean()), "elevations_deg": el.to(dt),
            "start": _perpendicular(rel[0], up).to(dt)}


def orbit_path(n: int, center, radius: float, elevation_deg, up=(0.0, 0.0, 1.0), start=None,
               turns: float = 1.0) -> torch.Tensor:
    """``n`` poses (n, 4, 4) circling ``center`` about the axis ``up`` at ``radius``, looking at
    ``center`` with ``up`` as their up direction. ``elevation_deg``: a number or one per pose
    (n,) (degrees above the plane normal to ``up``). The azimuth starts at ``start`` (a direction,
    made perpendicular to ``up``; default any) and makes ``turns`` turns, the end excluded, counter-
    clockwise seen from above."""
    center = torch.as_tensor(center, dtype=torch.float64)
    upv = torch.as_tensor(up, dtype=torch.float64)
    upv = upv / upv.norm()
    e1 = _perpendicular(torch.as_tensor(start if start is not None else (1.0, 0.0, 0.0),
                                        dtype=torch.float64), upv)
    e2 = torch.linalg.cross(upv, e1)
    az = torch.arange(n, dtype=torch.float64) * (2 * math.pi * float(turns) / max(n, 1))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float64)).expand(n)
    dirs = (torch.cos(el) * torch.cos(az))[:, None] * e1 + (torch.cos(el) * torch.sin(az))[:, None] * e2 \
        + torch.sin(el)[:, None] * upv
    eye = center + float(radius) * dirs
    return look_at(eye, center.expand_as(eye), up=upv.tolist()).float()


def llff_spiral_path(c2w: torch.Tensor, n: int, focus: torch.Tensor, rots: float = 2.0,
                     zrate: float = 0.5, percentile: float = 90.0) -> torch.Tensor:
    """LLFF's spiral render path (``render_path_spiral``) for forward-facing captures: ``n``
    poses (n, 4, 4) on an elliptical spiral about the mean camera centre, in the frame of the mean
    camera (axes: mean up, backwards = away from ``focus``), with radii the ``percentile`` of the
    cameras' offsets along each axis; ``rots`` turns while moving ``zrate`` times as fast along
    the viewing axis; every pose looks at ``focus`` with the mean up."""
    c2w = _as_3x4("c2w", c2w)
    m = c2w.double()
    centres = m[:, :, 3]
    c0 = centres.mean(0)
    focus = torch.as_tensor(focus, dtype=torch.float64)
    back = c0 - focus
    back = back / back.norm().clamp_min(1e-12)
    up = mean_up(c2w).double()
    right = torch.linalg.cross(up, back)
    right = right / right.norm().clamp_min(1e-12)
    up = torch.linalg.cross(back, right)
    R = torch.stack([right, up, back], -1)                          # mean camera frame
    local = (centres - c0) @ R                                      # offsets in that frame
    rads = torch.quantile(local.abs(), float(percentile) / 100.0, dim=0)
    theta = torch.arange(n, dtype=torch.float64) * (2 * math.pi * float(rots) / max(n, 1))
    offs = torch.stack([torch.cos(theta), -torch.sin(theta), -torch.sin(theta * float(zrate))], -1) * rads
    eye = c0 + offs @ R.T
    return look_at(eye, focus.expand_as(eye), up=up.tolist()).float()


def camera_tour(centres: torch.Tensor, order: str = "auto", start: int = 0) -> torch.Tensor:
    """An order (N,) of points ``centres`` (N, 3) for a path through all of them: ``"nearest"``
    is a nearest-neighbour tour from ``start`` shortened by 2-opt moves (an open path, the end
    free); ``"dataset"`` keeps the given order; ``"auto"`` keeps the given order when it is
    already smooth (its polyline at most 1.25 times as long as the tour) and tours otherwise."""
    if order not in ("auto", "nearest", "dataset"):
        raise ValueError(f"order: expected 'auto', 'nearest' or 'dataset', got {order!r}")
    check_tensor("centres", centres, (3,))
    n = int(centres.shape[0])
    given = torch.arange(n)
    if order == "dataset" or n <= 2:
        return given
    x = centres.double()
    D = torch.cdist(x, x)
    seen = torch.zeros(n, dtype=torch.bool)
    tour = [int(start) % n]
    seen[tour[0]] = True
    for _ in range(n - 1):
        d = D[tour[-1]].masked_fill(seen, float("inf"))
        j = int(d.argmin())
        tour.append(j)
        seen[j] = True
    t = torch.tensor(tour)
    for _ in range(50):                        # 2-opt on the open path (start fixed)
        improved = False
        for i in range(n - 2):
            a, b = t[i], t[i + 1]
            js = torch.arange(i + 2, n)
            c = t[js]
            nxt = torch.cat([t[i + 3:], t[-1:]])          # t[j + 1] (the last has none)
            has_next = js < n - 1
            old = D[a, b] + torch.where(has_next, D[c, nxt], torch.zeros(()))
            new = D[a, c] + torch.where(has_next, D[b, nxt], torch.zeros(()))
            gain = old - new
            k = int(gain.argmax())
            if float(gain[k]) > 1e-9:
                j = int(js[k])
                t[i + 1:j + 1] = t[i + 1:j + 1].flip(0)
                improved = True
        if not improved:
            break
    if order == "auto":
        def length(idx):
            return float((x[idx[1:]] - x[idx[:-1]]).norm(dim=-1).sum())
        if length(given) <= 1.25 * length(t):
            return given
    return t


def slerp(qa: torch.Tensor, qb: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of unit quaternions (..., 4) at fractions ``s`` (...,) along
    the shorter arc (``s`` = 0 gives ``qa``, 1 gives ``qb`` up to sign)."""
    s = torch.as_tensor(s, dtype=qa.dtype)[..., None]
    dot = (qa * qb).sum(-1, keepdim=True)
    qb = torch.where(dot < 0, -qb, qb)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    lin = sin < 1e-6
    safe = torch.where(lin, torch.ones_like(sin), sin)
    wa = torch.where(lin, 1 - s, torch.sin((1 - s) * theta) / safe)
    wb = torch.where(lin, s, torch.sin(s * theta) / safe)
    q = wa * qa + wb * qb
    return q / q.norm(dim=-1, keepdim=True)


def _catmull_rom(p0, p1, p2, p3, u, alpha: float = 0.5):
    """Centripetal Catmull-Rom (Barry-Goldman) between ``p1`` and ``p2`` at ``u`` in [0, 1]:
    p* (M, 3), u (M,). Passes through p1 at u = 0 and p2 at u = 1; no cusps or self-loops."""
    def knot(a, b):
        return (b - a).norm(dim=-1, keepdim=True).pow(alpha).clamp_min(1e-9)

    t0 = torch.zeros_like(p0[:, :1])
    t1 = t0 + knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    t = t1 + u[:, None] * (t2 - t1)
    a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    return ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)


def smooth_path(c2w: torch.Tensor, n: int, order: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` poses (n, 4, 4) along a smooth path through the cameras ``c2w`` (N, 4, 4): the
    cameras are ordered by :func:`camera_tour` (``order``), centres are joined by a centripetal
    Catmull-Rom spline and rotations by slerp, each segment getting frames in proportion to its
    length (distance plus turn angle times the cameras' spread), so the speed is near constant.

    Returns ``(poses, keyframes)``: ``keyframes`` (N,) is the frame at which the path passes
    through each camera (``poses[keyframes[i]]`` equals ``c2w[i]``), or -1 for every camera when
    ``n`` < N (the path is then sampled evenly by length and passes near them)."""
    c2w = to_4x4(c2w)
    if c2w.dim() != 3 or c2w.shape[0] < 1:
        raise ShapeError(f"c2w: expected shape (N, 4, 4) with N >= 1, got {tuple(c2w.shape)}")
    if n < 1:
        raise ValueError(f"n: expected at least 1 frame, got {n}")
    N = int(c2w.shape[0])
    if N == 1:
        return c2w.expand(n, 4, 4).clone(), torch.zeros(1, dtype=torch.long)
    tour = camera_tour(c2w[:, :3, 3], order)
    m = c2w[tour].double()
    pts, q = m[:, :3, 3], matrix_to_quaternion(m[:, :3, :3])
    for i in range(1, N):                                   # one hemisphere, consecutive
        if float((q[i] * q[i - 1]).sum()) < 0:
            q[i] = -q[i]
    spread = float((pts - pts.mean(0)).norm(dim=-1).mean()) or 1.0
    angle = 2 * torch.acos((q[1:] * q[:-1]).sum(-1).abs().clamp(max=1.0))
    seg = (pts[1:] - pts[:-1]).norm(dim=-1) + spread * angle          # (N-1,)
    if float(seg.sum()) <= 0:
        seg = torch.ones_like(seg)
    if n - 1 >= N - 1 and n > 1:
        # integer frames per segment (>= 1 each), largest remainders, so keyframes are frames
        extra = n - 1 - (N - 1)
        ideal = seg / seg.sum() * extra
        counts = 1 + ideal.floor().long()
        left = extra - int(counts.sum() - (N - 1))
        if left > 0:
            counts[torch.argsort(ideal - ideal.floor(), descending=True)[:left]] += 1
        seg_idx = torch.repeat_interleave(torch.arange(N - 1), counts)
        starts = torch.cumsum(counts, 0) - counts
        u = (torch.arange(n - 1) - starts[seg_idx]).double() / counts[seg_idx].double()
        seg_idx = torch.cat([seg_idx, torch.tensor([N - 2])])
        u = torch.cat([u, torch.ones(1, dtype=torch.float64)])
        keyframes = torch.cat([starts, torch.tensor([n - 1])])
    else:
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(seg, 0)])
        s = torch.linspace(0, float(cum[-1]), n, dtype=torch.float64)
        seg_idx = (torch.searchsorted(cum, s, right=True) - 1).clamp(0, N - 2)
        u = ((s - cum[seg_idx]) / seg[seg_idx].clamp_min(1e-12)).clamp(0, 1)
        keyframes = torch.full((N,), -1, dtype=torch.long)
    ext = torch.cat([2 * pts[:1] - pts[1:2], pts, 2 * pts[-1:] - pts[-2:-1]])  # end tangents
    pos = _catmull_rom(ext[seg_idx], ext[seg_idx + 1], ext[seg_idx + 2], ext[seg_idx + 3], u)
    rot = quaternion_to_matrix(slerp(q[seg_idx], q[seg_idx + 1], u))
    # exact keyframes (the spline reaches them up to rounding)
    hit = keyframes >= 0
    pos[keyframes[hit]] = pts[hit]
    rot[keyframes[hit]] = m[hit, :3, :3]
    out = to_4x4(torch.cat([rot, pos[:, :, None]], -1)).to(c2w.dtype)
    by_camera = torch.empty_like(keyframes)
    by_camera[tour] = keyframes
    return out, by_camera
