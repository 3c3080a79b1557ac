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


def outside_paths_allowed(flag: bool | None = None) -> bool:
    """Whether data files may name files outside their dataset folder: ``flag`` when given, else the
    environment variable ``AWARE3D_ALLOW_OUTSIDE_PATHS=1``."""
    import os

    return bool(flag) if flag is not None else os.environ.get("AWARE3D_ALLOW_OUTSIDE_PATHS") == "1"


def confined_path(root: Path, rel, file, frame, name=None, what: str = "file_path",
                  allow_outside: bool | None = None) -> Path:
    """``root / rel``, refused (DataError) when ``rel`` is absolute or climbs out of ``root`` with
    ``..``: a data file only names files of its own dataset folder, unless outside paths are allowed
    (:func:`outside_paths_allowed`). Checked lexically: links inside the folder are the user's."""
    import os

    full = Path(rel) if Path(str(rel)).is_absolute() else Path(root) / str(rel)
    if outside_paths_allowed(allow_outside):
        return full
    base = os.path.abspath(str(root))
    target = os.path.normpath(os.path.abspath(str(full)))
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise DataError(f"{file}: {frame_label(frame, name)}: {what} {str(rel)!r} points outside the dataset "
                        f"folder {base}; data files may only name files inside it (set "
                        f"AWARE3D_ALLOW_OUTSIDE_PATHS=1 to read it anyway)")
    return full


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
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
                # 16-bit grey PNG: converting to RGB would clip every value above 255 to white
                grey = np.asarray(im, dtype=np.float64) / 65535.0
                arr = np.repeat(grey[..., None], 3, -1).astype(np.float32)
            else:
                has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
                im = im.convert("RGBA" if has_alpha else "RGB")
                arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # PIL raises many types for corrupt files
        raise DataError(f"{where}: cannot decode image {path} ({type(e).__name__}: {e})") from None
    img = arr if arr.dtype == np.float32 else arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
    if downscale > 1:
        w, h = size[0] // downscale, size[1] // downscale
        img = area_resize(img, w, h, premultiply=img.shape[-1] == 4)
    return img


def _area_weights(n_in: int, n_out: int):
    """Sparse (n_out, n_in) matrix of area weights: input pixel i covers [i, i + 1), output pixel o
    covers [o * s, (o + 1) * s) with s = n_in / n_out; W[o, i] = overlap / s (rows sum to 1).
    Overlaps are computed in float64, stored as float32."""
    import scipy.sparse

    s = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * s
    edges[-1] = n_in  # exact end, no round-off past the last pixel
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.minimum(np.ceil(edges[1:]).astype(np.int64), n_in)
    kmax = int((hi - lo).max())
    idx = lo[:, None] + np.arange(kmax)[None]                     # candidate input pixels
    ov = np.minimum(edges[1:, None], idx + 1) - np.maximum(edges[:-1, None], idx)
    keep = (idx < n_in) & (ov > 0)
    rows = np.broadcast_to(np.arange(n_out)[:, None], idx.shape)
    return scipy.sparse.csr_matrix(((ov / s)[keep].astype(np.float32), (rows[keep], idx[keep])),
                                   shape=(n_out, n_in))


def _area_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Exact area (box) resampling of float ``x`` along ``axis`` to ``n_out`` samples (float32).

    Each output pixel is the mean of the input over its footprint, every input pixel weighted by
    its overlap (:func:`_area_weights`): integer factors are block averages; otherwise partial
    pixels at the footprint's ends count by their covered fraction; s < 1 (upscaling) blends the
    two input pixels an output pixel straddles -- OpenCV's INTER_AREA, without its rounding (it
    drops overlaps under 1e-3 px when downscaling)."""
    n_in = x.shape[axis]
    if n_in == n_out:
        return x.astype(np.float32, copy=False)
    x = np.moveaxis(x, axis, 0)
    rest = x.shape[1:]
    if n_in % n_out == 0:  # integer factor: plain block average
        out = x.reshape(n_out, n_in // n_out, *rest).mean(1, dtype=np.float64).astype(np.float32)
    else:
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(n_in, -1)
        out = np.asarray(_area_weights(n_in, n_out) @ flat).reshape(n_out, *rest)
    return np.moveaxis(out, 0, axis)


def area_resize(img: np.ndarray, width: int, height: int, premultiply: bool = False) -> np.ndarray:
    """Area (box) resize of float (H, W) or (H, W, C) to ``width`` x ``height`` as float32 (OpenCV
    INTER_AREA semantics, see :func:`_area_axis`). For RGBA with ``premultiply``, colour is
    averaged premultiplied by alpha."""
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ValueError(f"area_resize: target size must be >= 1x1, got {width}x{height}")
    if img.shape[1] == width and img.shape[0] == height:
        return img

    def resize(a: np.ndarray) -> np.ndarray:
        return _area_axis(_area_axis(np.asarray(a), height, 0), width, 1)

    if premultiply:
        a = img[..., 3:4]
        pre = np.concatenate([img[..., :3] * a, a], -1)
        out = resize(pre)
        a2 = out[..., 3:4]
        rgb = np.where(a2 > 1e-6, out[..., :3] / np.maximum(a2, 1e-6), 0.0)
        return np.concatenate([np.clip(rgb, 0, 1), a2], -1).astype(np.float32)
    return resize(img).astype(np.float32)


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


def _distort_normalized(x: np.ndarray, y: np.ndarray, dist: np.ndarray):
    """OpenCV's lens model on normalised pinhole coordinates: (k1, k2, p1, p2[, k3[, k4, k5, k6]])
    ->  x' = x kr + 2 p1 x y + p2 (r^2 + 2 x^2),  y' = y kr + p1 (r^2 + 2 y^2) + 2 p2 x y  with
    kr = (1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6)."""
    k = np.zeros(8)
    k[:dist.size] = dist
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    r2 = x * x + y * y
    kr = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * kr + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * kr + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def undistort_map(K: np.ndarray, dist: Sequence[float], width: int, height: int):
    """Source coordinates (map_x, map_y), float64 (H, W), of an undistortion to the same pinhole
    ``K``, in OpenCV's pixel convention (pixel centres on integers, ``K`` given in it): what
    ``cv2.initUndistortRectifyMap(K, dist, None, K, (W, H), CV_32FC1)`` computes. Output pixel
    (u, v) -> ideal ray x = (u - cx - s (v - cy) / fy) / fx, y = (v - cy) / fy (s: skew) ->
    distorted (x', y') -> source (fx x' + cx, fy y' + cy) (OpenCV ignores the skew here too)."""
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    if dist.size not in (4, 5, 8):
        raise ValueError(f"undistort: expected 4, 5 or 8 distortion coefficients (k1, k2, p1, p2"
                         f"[, k3[, k4, k5, k6]]), got {dist.size}")
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
    ray = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    x = (ray[0] / ray[2]).reshape(height, width)
    y = (ray[1] / ray[2]).reshape(height, width)
    xd, yd = _distort_normalized(x, y, dist)
    return fx * xd + cx, fy * yd + cy


def remap_bilinear(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Sample float ``img`` (H, W[, C]) at (map_x, map_y) (pixel centres on integers) bilinearly;
    coordinates outside the image are clamped to its border (edge replication, like OpenCV's
    BORDER_REPLICATE). Returns float32 of shape map_x.shape + img.shape[2:]."""
    import torch.nn.functional as F

    h, w = img.shape[:2]
    src = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    src = (src[..., None] if src.dim() == 2 else src).permute(2, 0, 1)[None]  # (1, C, H, W)
    # grid_sample with align_corners=False puts pixel i's centre at (2 i + 1) / size - 1 and, with
    # padding_mode="border", clamps the unnormalised coordinate to [0, size - 1]
    gx = (2.0 * np.asarray(map_x, np.float64) + 1.0) / w - 1.0
    gy = (2.0 * np.asarray(map_y, np.float64) + 1.0) / h - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], -1).astype(np.float32))[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out[0].permute(1, 2, 0).numpy()
    return out.reshape(*np.shape(map_x), *img.shape[2:])


def undistort(img: np.ndarray, K: np.ndarray, dist: Sequence[float]) -> np.ndarray:
    """Remove OpenCV radial-tangential distortion (k1, k2, p1, p2[, k3]) from an image, keeping the
    same pinhole ``K``: output pixel (u, v) samples the distorted input where the ideal pinhole ray
    through (u, v) landed. Border pixels whose source falls outside are filled by edge replication
    (no black borders). Pixel-centre convention: OpenCV pixels are centred on integers, so the
    principal point is shifted by -0.5 for the map (:func:`undistort_map`), which is sampled
    bilinearly (:func:`remap_bilinear`)."""
    dist = np.asarray(dist, dtype=np.float64)
    if not np.any(dist):
        return img
    Kc = np.asarray(K, dtype=np.float64).copy()
    Kc[0, 2] -= 0.5
    Kc[1, 2] -= 0.5
    h, w = img.shape[:2]
    m1, m2 = undistort_map(Kc, dist, w, h)
    return remap_bilinear(img, m1, m2).reshape(img.shape)


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


def stack_alphas(alphas: list) -> torch.Tensor | None:
    """(N, H, W) alpha of the frames, None when no frame has an alpha channel. Frames are handled
    one by one: a frame without alpha among frames with it counts as fully opaque (its alpha is 1),
    so one RGB file no longer drops the alpha of every other frame."""
    if all(a is None for a in alphas):
        return None
    shape = next(a.shape for a in alphas if a is not None)
    return to_tensor(np.stack([np.ones(shape, np.float32) if a is None else a for a in alphas], 0))


def to_tensor(a, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def fov_to_focal(angle_rad: float, size: float) -> float:
    return 0.5 * size / math.tan(0.5 * angle_rad)
