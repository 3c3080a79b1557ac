"""Helpers shared by the scene parsers: JSON with line numbers, pose checks, image decoding,
area downscaling, undistortion, splits and scene bounds."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .scene import DataError

# Rotation tolerance for "rigid": max |R^T R - I| and |det R - 1|. Real exports (float32 JSON,
# colmap2nerf) are ~1e-6 away; scale or shear in a pose is far above this.
RIGID_TOL = 1e-3

SPLITS = ("train", "val", "test", "all")


def frame_label(frame, name=None) -> str:
    return f"frame {frame}" + (f" ({name!r})" if name else "")


def read_json(path: Path) -> dict:
    """Parse a JSON file; malformed JSON -> DataError naming the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); expected JSON") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def check_pose(m, file, frame, name=None) -> np.ndarray:
    """Validate a camera-to-world (3, 4) / (4, 4) matrix; returns float64 (4, 4).

    Raises DataError naming the file and frame if it has the wrong shape, non-finite entries, a
    bad bottom row or a rotation that is not rigid (R^T R != I or det R != 1 within RIGID_TOL)."""
    where = f"{file}: {frame_label(frame, name)}"
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: transform_matrix is not a numeric matrix (expected 4x4 numbers)") from None
    if a.shape not in ((4, 4), (3, 4)):
        raise DataError(f"{where}: expected a 4x4 (or 3x4) camera-to-world matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{where}: camera-to-world matrix has non-finite entries (expected finite numbers)")
    if a.shape == (3, 4):
        a = np.concatenate([a, [[0.0, 0.0, 0.0, 1.0]]], 0)
    elif np.abs(a[3] - [0, 0, 0, 1]).max() > RIGID_TOL:
        raise DataError(f"{where}: bottom row of the camera-to-world matrix is {a[3].tolist()}, "
                        f"expected [0, 0, 0, 1]")
    check_rotation(a[:3, :3], where)
    return a


def check_rotation(R: np.ndarray, where: str) -> None:
    err = np.abs(R.T @ R - np.eye(3)).max()
    det = float(np.linalg.det(R))
    if err > RIGID_TOL or abs(det - 1) > RIGID_TOL:
        raise DataError(f"{where}: rotation is not rigid (max |R^T R - I| = {err:.3g}, det R = {det:.6g}; "
                        f"expected an orthonormal rotation with det 1 within {RIGID_TOL})")


def decode_image(path: Path, file, frame, name=None, downscale: int = 1,
                 expect_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image to float32 (H, W, C) in [0, 1] with C = 3 (RGB) or 4 (RGBA), downscaled by
    an integer factor with area averaging (on premultiplied colour for RGBA).

    ``expect_size`` = (width, height) of the full-resolution image; a mismatch is a DataError."""
    from PIL import Image

    where = f"{file}: {frame_label(frame, name)}"
    if not Path(path).is_file():
        raise DataError(f"{where}: image {path} does not exist")
    try:
        with Image.open(path) as im:
            size = im.size
            if expect_size is not None and tuple(size) != tuple(expect_size):
                raise DataError(f"{where}: image {path} is {size[0]}x{size[1]}, expected "
                                f"{expect_size[0]}x{expect_size[1]}")
            if downscale > 1 and im.format == "JPEG":
                # DCT-domain reduction (exact power-of-two factors only), then area resize below.
                im.draft("RGB", (size[0] // downscale, size[1] // downscale))
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            im = im.convert("RGBA" if has_alpha else "RGB")
            arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise DataError(f"{where}: cannot decode image {path} ({type(e).__name__}: {e})") from None
    img = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    if downscale > 1:
        w, h = size[0] // downscale, size[1] // downscale
        img = area_resize(img, w, h, premultiply=img.shape[-1] == 4)
    return img


def area_resize(img: np.ndarray, width: int, height: int, premultiply: bool = False) -> np.ndarray:
    """Area (box) resize of float (H, W, C); for RGBA, colour is averaged premultiplied by alpha."""
    import cv2

    if img.shape[1] == width and img.shape[0] == height:
        return img
    if premultiply:
        a = img[..., 3:4]
        pre = np.concatenate([img[..., :3] * a, a], -1)
        out = cv2.resize(pre, (width, height), interpolation=cv2.INTER_AREA)
        a2 = out[..., 3:4]
        rgb = np.where(a2 > 1e-6, out[..., :3] / np.maximum(a2, 1e-6), 0.0)
        return np.concatenate([np.clip(rgb, 0, 1), a2], -1).astype(np.float32)
    out = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return out.reshape(height, width, *img.shape[2:]).astype(np.float32)


def downscale_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Block-average a depth map over its valid (> 0, finite) pixels; 0 where fewer than half of a
    block is valid."""
    if depth.shape[1] == width and depth.shape[0] == height:
        return depth
    valid = (np.isfinite(depth) & (depth > 0)).astype(np.float32)
    d = np.where(valid > 0, depth, 0).astype(np.float32)
    s = area_resize(d, width, height)
    v = area_resize(valid, width, height)
    return np.where(v >= 0.5, s / np.maximum(v, 1e-6), 0.0).astype(np.float32)


def composite(img: np.ndarray, bg: np.ndarray):
    """RGBA float -> (RGB composited on ``bg``, alpha) ; RGB -> (RGB, None)."""
    if img.shape[-1] == 4:
        a = img[..., 3:4]
        return img[..., :3] * a + bg * (1 - a), img[..., 3]
    return img, None


def undistort(img: np.ndarray, K: np.ndarray, dist: Sequence[float]) -> np.ndarray:
    """Remove OpenCV radial-tangential distortion (k1, k2, p1, p2[, k3]) from an image, keeping the
    same pinhole ``K``: output pixel (u, v) samples the distorted input where the ideal pinhole ray
    through (u, v) landed. Border pixels whose source falls outside are filled by edge replication
    (no black borders). Pixel-centre convention: OpenCV pixels are centred on integers, so the
    principal point is shifted by -0.5 for the remap."""
    import cv2

    dist = np.asarray(dist, dtype=np.float64)
    if not np.any(dist):
        return img
    Kc = np.asarray(K, dtype=np.float64).copy()
    Kc[0, 2] -= 0.5
    Kc[1, 2] -= 0.5
    h, w = img.shape[:2]
    m1, m2 = cv2.initUndistortRectifyMap(Kc, dist, None, Kc, (w, h), cv2.CV_32FC1)
    out = cv2.remap(img, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(img.shape)


def split_indices(n: int, split: str, holdout: int, file) -> list[int]:
    """Indices of ``split`` for a single-file format: 'all', 'train' (all but every holdout-th),
    'val'/'test' (every holdout-th, starting at 0)."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    if split == "all" or holdout <= 0:
        return list(range(n))
    if split == "train":
        idx = [i for i in range(n) if i % holdout != 0]
        return idx or list(range(n))
    return [i for i in range(n) if i % holdout == 0]


def bounds_from_aabb(c2w: np.ndarray, aabb: np.ndarray) -> tuple[float, float]:
    """near / far for cameras looking into ``aabb``: far reaches the farthest box corner from any
    camera, near is the closest approach of a camera to the box (a small fraction of the box
    diagonal when a camera is inside)."""
    lo, hi = aabb[:3], aabb[3:]
    centres = c2w[:, :3, 3]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    far = float(np.linalg.norm(centres[:, None] - corners[None], axis=-1).max())
    closest = np.clip(centres, lo, hi)
    dist = np.linalg.norm(centres - closest, axis=-1)
    diag = float(np.linalg.norm(hi - lo))
    near = float(max(dist.min(), 0.01 * diag))
    return near, far


def stack_images(imgs: list[np.ndarray], file, names: list[str]) -> np.ndarray:
    """Stack per-frame arrays, raising DataError naming the first frame whose size differs."""
    h, w = imgs[0].shape[:2]
    for i, im in enumerate(imgs):
        if im.shape[:2] != (h, w):
            raise DataError(f"{file}: {frame_label(i, names[i])}: image is {im.shape[1]}x{im.shape[0]}, "
                            f"expected {w}x{h} like the first frame (all frames must share one size)")
    return np.stack(imgs, 0)


def to_tensor(a, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def fov_to_focal(angle_rad: float, size: float) -> float:
    return 0.5 * size / math.tan(0.5 * angle_rad)
