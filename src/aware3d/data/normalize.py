"""Scene normalisation: put a capture's cameras upright, centred on what they look at and at a
known distance from it, and keep the similarity that did it so results can go back to the
capture's own frame.

Structure-from-motion models (COLMAP) and nerfstudio files come in an arbitrary frame: any up axis,
any origin, any scale. :func:`normalise_poses` finds the similarity T (rotation, uniform scale,
translation) that

1. turns the mean camera up vector onto +z,
2. moves the point the cameras look at (the weighted closest approach of their optical axes, as
   instant-ngp's ``colmap2nerf.py`` finds it; the median scene point for a forward-facing capture
   whose axes are near parallel) to the origin,
3. scales so the cameras sit at mean distance :data:`CAMERA_DISTANCE` (4) from it.

:func:`normalise_scene` applies T to a loaded :class:`~aware3d.data.scene.SceneDataset` (poses,
box, ray bounds, depths) and records it in ``SceneDataset.transform`` (data frame -> scene frame),
which runs keep so that exports can be written in the data's frame (``--frame data``).
"""
from __future__ import annotations

import numpy as np
import torch

#: cameras end up at this mean distance from the scene centre (instant-ngp's colmap2nerf.py)
CAMERA_DISTANCE = 4.0


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-10:  # opposite: half turn about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0.0, 0.0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def look_at_centre(origins: np.ndarray, forwards: np.ndarray, max_cams: int = 300):
    """Weighted closest approach of the cameras' optical axes (colmap2nerf.py's centre): for every
    pair of axes whose closest points lie in front of both cameras, the midpoint of those points,
    weighted by |f_a x f_b|^2 (near-parallel pairs count little). Returns (centre, total weight)."""
    idx = np.linspace(0, len(origins) - 1, min(len(origins), max_cams)).round().astype(int)
    o, f = origins[idx], forwards[idx] / np.linalg.norm(forwards[idx], axis=-1, keepdims=True)
    i, j = np.triu_indices(len(o), 1)
    oa, ob, fa, fb = o[i], o[j], f[i], f[j]
    c = np.cross(fa, fb)
    denom = (c * c).sum(-1)
    t = ob - oa
    ta = np.einsum("ij,ij->i", np.cross(t, fb), c) / (denom + 1e-10)
    tb = np.einsum("ij,ij->i", np.cross(t, fa), c) / (denom + 1e-10)
    w = np.where((ta > 0) & (tb > 0), denom, 0.0)
    p = 0.5 * (oa + ta[:, None] * fa + ob + tb[:, None] * fb)
    total = float(w.sum())
    if total <= 0:
        return None, 0.0
    return (p * w[:, None]).sum(0) / total, total / max(len(w), 1)


def normalise_poses(c2w: np.ndarray, points: np.ndarray | None = None,
                    distance: float = CAMERA_DISTANCE) -> np.ndarray:
    """The similarity T (4, 4) that puts OpenGL cameras ``c2w`` (N, 4, 4) upright (mean camera up
    -> +z), centred on the point they look at (median of ``points`` when the optical axes are
    near parallel) and at mean distance ``distance`` from it. Apply as ``x' = T x`` to points and
    ``T @ c2w`` (then divide the rotation by the scale) to poses."""
    up = c2w[:, :3, 1].mean(0)
    R = _rotation_between(up, np.array([0.0, 0.0, 1.0])) if np.linalg.norm(up) > 1e-6 else np.eye(3)
    origins = c2w[:, :3, 3] @ R.T
    forwards = -c2w[:, :3, 2] @ R.T
    centre, weight = look_at_centre(origins, forwards)
    if centre is None or weight < 1e-3:  # near-parallel axes (forward-facing capture)
        if points is not None and len(points):
            centre = np.median(points @ R.T, 0)
        else:
            centre = origins.mean(0) + forwards.mean(0)
    d = np.linalg.norm(origins - centre, axis=-1).mean()
    s = distance / max(float(d), 1e-12)
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = -s * centre
    return T


def similarity_scale(T) -> float:
    """The uniform scale of a similarity T (4, 4) (cube root of its 3x3 determinant)."""
    T = np.asarray(T, dtype=np.float64)
    return float(np.cbrt(np.linalg.det(T[:3, :3])))


def transform_poses(T, c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world poses (N, 4, 4) moved by the similarity T: centres ``T x``, rotations
    ``R_T R`` (the scale is taken out, so rotations stay orthonormal)."""
    T = np.asarray(T, dtype=np.float64)
    out = T @ np.asarray(c2w, dtype=np.float64)
    out[:, :3, :3] /= similarity_scale(T)
    out[:, 3] = (0, 0, 0, 1)
    return out


def transform_points(T, x):
    """Points (..., 3) mapped by the 4x4 similarity / affine T (numpy or torch; same type out)."""
    if isinstance(x, torch.Tensor):
        Tt = torch.as_tensor(np.asarray(T), dtype=x.dtype, device=x.device)
        return x @ Tt[:3, :3].T + Tt[:3, 3]
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(x) @ T[:3, :3].T + T[:3, 3]


def box_of(points: np.ndarray, pad: float = 0.1) -> np.ndarray:
    """(6,) box of ``points`` (N, 3) (1st..99th percentile for more than 100 points), padded by
    ``pad`` of its size on each side."""
    if len(points) > 100:
        lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
    else:
        lo, hi = points.min(0), points.max(0)
    ext = np.maximum(hi - lo, 1e-3)
    return np.concatenate([lo - pad * ext, hi + pad * ext])


def normalise_scene(ds, T, aabb: np.ndarray | None = None):
    """Apply the similarity T (data frame -> scene frame) to the dataset ``ds`` in place: poses,
    ray bounds and depths (scaled), the box (``aabb`` given in the new frame, else the box of the
    old box's corners mapped by T) and ``ds.transform`` (composed with any earlier one)."""
    T = np.asarray(T, dtype=np.float64)
    s = similarity_scale(T)
    ds.c2w = torch.as_tensor(transform_poses(T, ds.c2w.double().numpy()), dtype=torch.float32)
    if aabb is None:
        lo, hi = ds.aabb[:3].double().numpy(), ds.aabb[3:].double().numpy()
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        c = transform_points(T, corners)
        aabb = np.concatenate([c.min(0), c.max(0)])
    ds.aabb = torch.as_tensor(np.asarray(aabb, dtype=np.float64), dtype=torch.float32)
    ds.near, ds.far = float(ds.near) * s, float(ds.far) * s
    if ds.depths is not None:
        ds.depths = ds.depths * s
    prev = np.eye(4) if ds.transform is None else ds.transform.double().numpy()
    ds.transform = torch.as_tensor(T @ prev, dtype=torch.float64)
    return ds


def wants_normalisation(normalize, fmt: str) -> bool:
    """Resolve the loaders' ``normalize`` argument: ``"auto"`` normalises the formats whose frame
    is arbitrary (COLMAP models and nerfstudio files without instant-ngp keys); True / False force it."""
    if normalize == "auto":
        return fmt in ("colmap", "nerfstudio")
    if isinstance(normalize, bool):
        return normalize
    raise ValueError(f"normalize: expected 'auto', True or False, got {normalize!r}")
