"""COLMAP sparse models: readers and writers for cameras / images / points3D in both the text
(``.txt``) and binary (``.bin``) formats, and a scene loader.

Binary layout (little endian), as written by COLMAP:

- ``cameras.bin``: uint64 count; per camera: int32 camera_id, int32 model_id, uint64 width,
  uint64 height, float64 params[n(model)].
- ``images.bin``: uint64 count; per image: int32 image_id, float64 qvec[4] (w, x, y, z), float64
  tvec[3], int32 camera_id, name as NUL-terminated bytes, uint64 n_points2D, then n_points2D x
  (float64 x, float64 y, int64 point3D_id).
- ``points3D.bin``: uint64 count; per point: uint64 point3D_id, float64 xyz[3], uint8 rgb[3],
  float64 error, uint64 track_length, then track_length x (int32 image_id, int32 point2D_idx).

Poses are world-to-camera (OpenCV camera) and converted with
:func:`aware3d.render.cameras.colmap_to_c2w`. COLMAP puts pixel centres at +0.5, like the internal
convention, so cx, cy carry over unchanged. Supported camera models for loading: SIMPLE_PINHOLE,
PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV; lens distortion is removed from the images with OpenCV
(see :func:`aware3d.data._common.undistort`) and recorded in ``SceneDataset.distortion``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._common import (
    bounds_from_aabb,
    check_rotation,
    composite,
    confined_path,
    decode_image,
    split_indices,
    stack_alphas,
    stack_images,
    to_tensor,
    undistort,
)
from .normalize import (
    box_of,
    normalise_poses,
    normalise_scene,
    transform_points,
    wants_normalisation,
)
from .scene import DataError, SceneDataset, parse_background

# model id -> (name, number of params)
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS = {name: (i, n) for i, (name, n) in CAMERA_MODELS.items()}
SUPPORTED = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")


@dataclass
class Camera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray


@dataclass
class Image:
    id: int
    qvec: np.ndarray  # (4,) w, x, y, z world-to-camera
    tvec: np.ndarray  # (3,)
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))


@dataclass
class Point3D:
    id: int
    xyz: np.ndarray
    rgb: np.ndarray
    error: float
    image_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    point2D_idxs: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))


# --------------------------------------------------------------------------------------------------
# Binary


class _Reader:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.buf = self.path.read_bytes()
        except OSError as e:
            raise DataError(f"{self.path}: cannot read ({e.strerror or e})") from None
        self.pos = 0

    def read(self, fmt: str, what: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise DataError(f"{self.path}: truncated at byte {self.pos} while reading {what} "
                            f"(expected {size} more bytes, file has {len(self.buf) - self.pos})")
        out = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return out

    def cstring(self, what: str) -> str:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise DataError(f"{self.path}: truncated while reading {what} (no NUL-terminated name)")
        s = self.buf[self.pos:end].decode("utf-8", errors="replace")
        self.pos = end + 1
        return s

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        size = dt.itemsize * count
        if self.pos + size > len(self.buf):
            raise DataError(f"{self.path}: truncated at byte {self.pos} while reading {what} "
                            f"(expected {size} more bytes)")
        a = np.frombuffer(self.buf, dt, count, self.pos)
        self.pos += size
        return a

    def done(self):
        if self.pos != len(self.buf):
            raise DataError(f"{self.path}: {len(self.buf) - self.pos} unexpected trailing bytes "
                            f"after the last record")


def read_cameras_binary(path) -> dict[int, Camera]:
    r = _Reader(path)
    (n,) = r.read("Q", "the camera count")
    cams = {}
    for k in range(n):
        cid, mid, w, h = r.read("iiQQ", f"camera record {k}")
        if mid not in CAMERA_MODELS:
            raise DataError(f"{r.path}: camera {cid} (record {k}): unknown model id {mid} "
                            f"(expected one of {sorted(CAMERA_MODELS)})")
        name, npar = CAMERA_MODELS[mid]
        params = np.array(r.read(f"{npar}d", f"camera {cid} params"), dtype=np.float64)
        cams[cid] = Camera(cid, name, int(w), int(h), params)
    r.done()
    return cams


def read_images_binary(path) -> dict[int, Image]:
    r = _Reader(path)
    (n,) = r.read("Q", "the image count")
    imgs = {}
    for k in range(n):
        vals = r.read("i4d3di", f"image record {k}")
        iid = vals[0]
        name = r.cstring(f"image {iid} (record {k}) name")
        (npts,) = r.read("Q", f"image {iid} ({name!r}) point count")
        pts = r.array([("x", "f8"), ("y", "f8"), ("id", "i8")], npts, f"image {iid} ({name!r}) points")
        imgs[iid] = Image(iid, np.array(vals[1:5]), np.array(vals[5:8]), vals[8], name,
                          np.stack([pts["x"], pts["y"]], -1).astype(np.float64),
                          pts["id"].astype(np.int64))
    r.done()
    return imgs


def read_points3D_binary(path) -> dict[int, Point3D]:
    r = _Reader(path)
    (n,) = r.read("Q", "the point count")
    pts = {}
    for k in range(n):
        vals = r.read("Q3d3BdQ", f"point record {k}")
        pid, tl = vals[0], vals[8]
        track = r.array([("img", "i4"), ("idx", "i4")], tl, f"point {pid} track")
        pts[pid] = Point3D(pid, np.array(vals[1:4]), np.array(vals[4:7], np.uint8), vals[7],
                           track["img"].astype(np.int32), track["idx"].astype(np.int32))
    r.done()
    return pts


def write_cameras_binary(cameras: dict[int, Camera], path) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for c in cameras.values():
            mid, npar = MODEL_IDS[c.model]
            if len(c.params) != npar:
                raise ValueError(f"camera {c.id}: model {c.model} needs {npar} params, got {len(c.params)}")
            f.write(struct.pack("<iiQQ", c.id, mid, c.width, c.height))
            f.write(struct.pack(f"<{npar}d", *map(float, c.params)))


def write_images_binary(images: dict[int, Image], path) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for im in images.values():
            f.write(struct.pack("<i4d3di", im.id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
            f.write(im.name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", len(im.point3D_ids)))
            for (x, y), pid in zip(im.xys, im.point3D_ids):
                f.write(struct.pack("<ddq", float(x), float(y), int(pid)))


def write_points3D_binary(points: dict[int, Point3D], path) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(points)))
        for p in points.values():
            f.write(struct.pack("<Q3d3BdQ", p.id, *map(float, p.xyz), *map(int, p.rgb), float(p.error),
                                len(p.image_ids)))
            for a, b in zip(p.image_ids, p.point2D_idxs):
                f.write(struct.pack("<ii", int(a), int(b)))


# --------------------------------------------------------------------------------------------------
# Text


def _text_lines(path: Path):
    """(line number, stripped line) for non-comment lines; keeps empty lines (images.txt uses them)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (expected a COLMAP text model)") from None
    return [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if not ln.lstrip().startswith("#")]


def _num(path, lineno, tok, kind=float, what="a number"):
    try:
        v = kind(tok)
    except ValueError:
        raise DataError(f"{path}: line {lineno}: expected {what}, got {tok!r}") from None
    return v


def read_cameras_text(path) -> dict[int, Camera]:
    path = Path(path)
    cams = {}
    for ln, line in _text_lines(path):
        if not line:
            continue
        tok = line.split()
        if len(tok) < 4:
            raise DataError(f"{path}: line {ln}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line!r}")
        cid = _num(path, ln, tok[0], int, "an integer camera id")
        model = tok[1]
        if model not in MODEL_IDS:
            raise DataError(f"{path}: line {ln}: camera {cid}: unknown model {model!r} "
                            f"(expected one of {list(MODEL_IDS)})")
        npar = MODEL_IDS[model][1]
        if len(tok) != 4 + npar:
            raise DataError(f"{path}: line {ln}: camera {cid}: model {model} needs {npar} params, "
                            f"got {len(tok) - 4}")
        params = np.array([_num(path, ln, t) for t in tok[4:]], dtype=np.float64)
        cams[cid] = Camera(cid, model, _num(path, ln, tok[2], int, "an integer width"),
                           _num(path, ln, tok[3], int, "an integer height"), params)
    return cams


def read_images_text(path) -> dict[int, Image]:
    path = Path(path)
    lines = _text_lines(path)
    # Skip leading blank lines; records are pairs (pose line, points line; the latter may be empty).
    while lines and not lines[0][1]:
        lines.pop(0)
    imgs = {}
    i = 0
    while i < len(lines):
        ln, line = lines[i]
        if not line:
            i += 1
            continue
        tok = line.split(maxsplit=9)
        if len(tok) < 10:
            raise DataError(f"{path}: line {ln}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', "
                            f"got {line!r}")
        iid = _num(path, ln, tok[0], int, "an integer image id")
        vals = [_num(path, ln, t) for t in tok[1:8]]
        cam = _num(path, ln, tok[8], int, "an integer camera id")
        name = tok[9]
        pts_line = lines[i + 1][1] if i + 1 < len(lines) else ""
        pln = lines[i + 1][0] if i + 1 < len(lines) else ln + 1
        pt = pts_line.split()
        if len(pt) % 3:
            raise DataError(f"{path}: line {pln}: image {iid} ({name!r}): expected POINTS2D as "
                            f"triples (X Y POINT3D_ID), got {len(pt)} numbers")
        arr = np.array([_num(path, pln, t) for t in pt], dtype=np.float64).reshape(-1, 3)
        imgs[iid] = Image(iid, np.array(vals[:4]), np.array(vals[4:7]), cam, name, arr[:, :2],
                          arr[:, 2].astype(np.int64))
        i += 2
    return imgs


def read_points3D_text(path) -> dict[int, Point3D]:
    path = Path(path)
    pts = {}
    for ln, line in _text_lines(path):
        if not line:
            continue
        tok = line.split()
        if len(tok) < 8 or (len(tok) - 8) % 2:
            raise DataError(f"{path}: line {ln}: expected 'POINT3D_ID X Y Z R G B ERROR TRACK[]', got {line!r}")
        pid = _num(path, ln, tok[0], int, "an integer point id")
        track = np.array([_num(path, ln, t, int, "an integer") for t in tok[8:]], np.int32).reshape(-1, 2)
        pts[pid] = Point3D(pid, np.array([_num(path, ln, t) for t in tok[1:4]]),
                           np.array([_num(path, ln, t, int, "an integer colour") for t in tok[4:7]], np.uint8),
                           _num(path, ln, tok[7]), track[:, 0], track[:, 1])
    return pts


def write_cameras_text(cameras: dict[int, Camera], path) -> None:
    with open(path, "w") as f:
        f.write("# Camera list with one line of data per camera:\n"
                "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
                f"# Number of cameras: {len(cameras)}\n")
        for c in cameras.values():
            f.write(" ".join([str(c.id), c.model, str(c.width), str(c.height)] +
                             [repr(float(p)) for p in c.params]) + "\n")


def write_images_text(images: dict[int, Image], path) -> None:
    with open(path, "w") as f:
        f.write("# Image list with two lines of data per image:\n"
                "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
                "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
                f"# Number of images: {len(images)}\n")
        for im in images.values():
            f.write(" ".join([str(im.id)] + [repr(float(v)) for v in (*im.qvec, *im.tvec)] +
                             [str(im.camera_id), im.name]) + "\n")
            f.write(" ".join(f"{float(x)!r} {float(y)!r} {int(p)}" for (x, y), p in
                             zip(im.xys, im.point3D_ids)) + "\n")


def write_points3D_text(points: dict[int, Point3D], path) -> None:
    with open(path, "w") as f:
        f.write("# 3D point list with one line of data per point:\n"
                "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        for p in points.values():
            f.write(" ".join([str(p.id)] + [repr(float(v)) for v in p.xyz] + [str(int(v)) for v in p.rgb] +
                             [repr(float(p.error))] +
                             [f"{int(a)} {int(b)}" for a, b in zip(p.image_ids, p.point2D_idxs)]) + "\n")


# --------------------------------------------------------------------------------------------------
# Models


def find_model_dir(path) -> Path | None:
    """The folder holding cameras.{bin,txt} and images.{bin,txt}: ``path/sparse/0``,
    ``path/sparse`` or ``path`` itself; None if there is none."""
    p = Path(path)
    for d in (p / "sparse" / "0", p / "sparse", p):
        if d.is_dir() and any((d / f"cameras{e}").is_file() for e in (".bin", ".txt")) and \
                any((d / f"images{e}").is_file() for e in (".bin", ".txt")):
            return d
    return None


def read_model(path):
    """Read a COLMAP model folder (binary preferred when both exist). Returns
    ``(cameras, images, points3D or None)``."""
    d = Path(path)
    ext = ".bin" if (d / "cameras.bin").is_file() and (d / "images.bin").is_file() else ".txt"
    if not (d / f"cameras{ext}").is_file() or not (d / f"images{ext}").is_file():
        raise DataError(f"{d}: expected cameras{ext} and images{ext} (a COLMAP sparse model)")
    if ext == ".bin":
        cams, imgs = read_cameras_binary(d / "cameras.bin"), read_images_binary(d / "images.bin")
    else:
        cams, imgs = read_cameras_text(d / "cameras.txt"), read_images_text(d / "images.txt")
    pts = None
    if (d / f"points3D{ext}").is_file():
        pts = (read_points3D_binary if ext == ".bin" else read_points3D_text)(d / f"points3D{ext}")
    return cams, imgs, pts


def write_model(path, cameras, images, points=None, ext: str = ".bin") -> None:
    """Write a COLMAP model folder in ``.bin`` or ``.txt`` format."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    if ext == ".bin":
        write_cameras_binary(cameras, d / "cameras.bin")
        write_images_binary(images, d / "images.bin")
        if points is not None:
            write_points3D_binary(points, d / "points3D.bin")
    elif ext == ".txt":
        write_cameras_text(cameras, d / "cameras.txt")
        write_images_text(images, d / "images.txt")
        if points is not None:
            write_points3D_text(points, d / "points3D.txt")
    else:
        raise ValueError(f"ext: expected '.bin' or '.txt', got {ext!r}")


def camera_intrinsics(cam: Camera, where: str = ""):
    """(K (3, 3), distortion (k1, k2, p1, p2)) of a supported camera model."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        fx = fy = p[0]; cx, cy = p[1], p[2]; dist = (0, 0, 0, 0)
    elif cam.model == "PINHOLE":
        fx, fy, cx, cy = p[:4]; dist = (0, 0, 0, 0)
    elif cam.model == "SIMPLE_RADIAL":
        fx = fy = p[0]; cx, cy = p[1], p[2]; dist = (p[3], 0, 0, 0)
    elif cam.model == "RADIAL":
        fx = fy = p[0]; cx, cy = p[1], p[2]; dist = (p[3], p[4], 0, 0)
    elif cam.model == "OPENCV":
        fx, fy, cx, cy = p[:4]; dist = tuple(p[4:8])
    else:
        raise DataError(f"{where}camera {cam.id}: model {cam.model} is not supported "
                        f"(expected one of {SUPPORTED})")
    if not np.isfinite(p).all() or fx <= 0 or fy <= 0:
        raise DataError(f"{where}camera {cam.id}: invalid params {p.tolist()} (expected finite, "
                        f"positive focal lengths)")
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    return K, np.array(dist, dtype=np.float64)


def image_c2w(im: Image, where: str) -> np.ndarray:
    """OpenGL c2w (4, 4) float64 of a COLMAP image, validating the pose."""
    from ..render.cameras import colmap_to_c2w

    q, t = np.asarray(im.qvec, np.float64), np.asarray(im.tvec, np.float64)
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        raise DataError(f"{where}: pose has non-finite values (qvec {q.tolist()}, tvec {t.tolist()}; "
                        f"expected finite numbers)")
    nq = float(np.linalg.norm(q))
    if abs(nq - 1) > 1e-3:
        raise DataError(f"{where}: quaternion norm is {nq:.6g}, expected a unit quaternion (w, x, y, z)")
    c2w = colmap_to_c2w(torch.from_numpy(q), torch.from_numpy(t)).numpy()
    check_rotation(c2w[:3, :3], where)
    return c2w


def _images_root(root: Path, model_dir: Path) -> Path:
    for base in (root, model_dir, *model_dir.parents[:3]):
        if (base / "images").is_dir():
            return base / "images"
    return root / "images"


def load_colmap(root, split: str = "train", downscale: int = 1, background="white",
                holdout: int = 8, images_dir=None, limit: int | None = None, normalize="auto",
                **_ignored) -> SceneDataset:
    """Load a COLMAP scene: ``root`` holds ``images/`` and ``sparse/0`` (or ``sparse``, or is itself
    the model folder). Frames are sorted by image name; ``split`` as in :func:`aware3d.data.load_scene`.

    Bounds: with a points3D file, the aabb spans the 1st..99th percentile of the points (padded by
    10 %) and near / far come from the point distances seen by the cameras; without points they come
    from the camera positions (:func:`bounds_from_aabb`).

    normalize: ``"auto"`` / True (default) puts the scene upright, centred and at a known scale
    (:mod:`aware3d.data.normalize`; the similarity is kept in ``SceneDataset.transform``); False
    keeps the model's frame."""
    root = Path(root)
    bg = parse_background(background)
    mdir = find_model_dir(root)
    if mdir is None:
        raise DataError(f"{root}: no COLMAP model (expected cameras.{{bin,txt}} and images.{{bin,txt}} "
                        f"in sparse/0/, sparse/ or the folder itself)")
    cams, imgs, pts = read_model(mdir)
    ext = ".bin" if (mdir / "images.bin").is_file() else ".txt"
    ifile = mdir / f"images{ext}"
    if not imgs:
        raise DataError(f"{ifile}: no registered images (expected at least one)")
    order = sorted(imgs.values(), key=lambda im: im.name)
    order = [order[i] for i in split_indices(len(order), split, holdout, ifile)]
    if limit is not None:
        order = order[:limit]
    img_dir = Path(images_dir) if images_dir is not None else _images_root(root, mdir)
    scaled_dir = img_dir.parent / f"{img_dir.name}_{downscale}"
    rgbs, alphas, c2ws, Ks, dists, names = [], [], [], [], [], []
    for i, im in enumerate(order):
        where = f"{ifile}: frame {i} (image {im.id} {im.name!r})"
        if im.camera_id not in cams:
            raise DataError(f"{where}: camera {im.camera_id} is not in cameras{ext} "
                            f"(have {sorted(cams)})")
        cam = cams[im.camera_id]
        K, dist = camera_intrinsics(cam, f"{mdir / ('cameras' + ext)}: ")
        c2w = image_c2w(im, where)
        path = confined_path(img_dir, im.name, ifile, i, im.name, what="image name")
        if downscale > 1 and (scaled_dir / im.name).is_file():
            arr = decode_image(scaled_dir / im.name, ifile, i, im.name)
        else:
            arr = decode_image(path, ifile, i, im.name, downscale=downscale,
                               expect_size=(cam.width, cam.height))
        sx, sy = arr.shape[1] / cam.width, arr.shape[0] / cam.height
        K = K.copy()
        K[0] *= sx
        K[1] *= sy
        K[2] = (0, 0, 1)
        rgb, a = composite(arr, bg.numpy())
        rgb = undistort(rgb, K, dist)
        if a is not None:
            a = undistort(a, K, dist)
        rgbs.append(rgb); alphas.append(a); c2ws.append(c2w); Ks.append(K); dists.append(dist)
        names.append(im.name)
    images = stack_images(rgbs, ifile, names)
    c2w_np = np.stack(c2ws, 0)
    all_c2w = np.stack([image_c2w(im, f"{ifile}: image {im.id} {im.name!r}") for im in imgs.values()], 0)
    near = far = None
    if pts:
        xyz = np.stack([p.xyz for p in pts.values()], 0)
        lo, hi = np.percentile(xyz, 1, axis=0), np.percentile(xyz, 99, axis=0)
        pad = 0.1 * (hi - lo) + 1e-6
        aabb = np.concatenate([lo - pad, hi + pad])
        # distances from each camera to the points in front of it
        fwd = -all_c2w[:, :3, 2]
        rel = xyz[None] - all_c2w[:, None, :3, 3]
        front = (rel * fwd[:, None]).sum(-1) > 0
        dist_all = np.linalg.norm(rel, axis=-1)[front]
        if dist_all.size:
            near = float(np.percentile(dist_all, 0.5) * 0.9)
            far = float(np.percentile(dist_all, 99.5) * 1.1)
    else:
        c = all_c2w[:, :3, 3]
        lo, hi = c.min(0), c.max(0)
        ext_ = np.maximum(hi - lo, 1e-3)
        aabb = np.concatenate([lo - 0.5 * ext_, hi + 0.5 * ext_])
    if near is None:
        near, far = bounds_from_aabb(all_c2w, aabb)
    dist_t = to_tensor(np.stack(dists, 0)) if any(np.any(d) for d in dists) else None
    alpha_t = stack_alphas(alphas)
    ds = SceneDataset(
        images=to_tensor(np.clip(images, 0, 1)), alphas=alpha_t, c2w=to_tensor(c2w_np),
        K=to_tensor(np.stack(Ks, 0)), width=int(images.shape[2]), height=int(images.shape[1]),
        near=float(near), far=float(far), aabb=to_tensor(aabb), depths=None, names=names,
        distortion=dist_t, background=bg, format="colmap", source=str(root))
    if wants_normalisation(normalize, "colmap"):
        T = normalise_poses(all_c2w, xyz if pts else None)
        normalise_scene(ds, T, box_of(transform_points(T, xyz)) if pts else None)
    return ds
