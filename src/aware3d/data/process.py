"""Your own capture in, a posed scene out: structure from motion on photos or a video with
**pycolmap** (COLMAP's SfM as a Python package, CPU only; the optional extra ``aware3d[sfm]``).

``process_images(DIR, OUT)`` and ``process_video(FILE, OUT)`` run these stages, each with a progress
line (and a bar where it has steps) and its time in the summary:

1. ``read`` (photos) / ``frames`` (video): decode every photo (EXIF orientation applied, all one
   size, optionally area-downscaled so the longer side is ``max_size``), or read the video twice
   through imageio-ffmpeg: once to score every frame's sharpness (variance of the Laplacian of the
   grey image), once to keep the sharpest frame of each of ``num_frames`` equal windows.
2. ``features``: SIFT (CPU), one shared camera (``camera_model``, default OPENCV; a focal-length
   prior from EXIF ``FocalLengthIn35mmFilm`` when the photos carry it, else COLMAP's 1.2 x the
   longer side).
3. ``matching``: SIFT matching + geometric verification on a list of image pairs:

   - ``"exhaustive"``: every pair, n (n - 1) / 2 of them: the most robust for unordered photos.
     Measured ~35 pairs/s at 540x960 on 2 cores (50 fox photos: 1225 pairs in 35 s);
   - ``"sequential"``: each image with its next ``overlap`` (default 10) images plus the images
     2^k ahead ("quadratic overlap", COLMAP's scheme), ~n (overlap + log2 n) pairs: for videos and
     photo series named in capture order (what phones and cameras write);
   - ``"auto"`` (default): exhaustive up to :data:`EXHAUSTIVE_MAX` photos (4950 pairs, about 2.5
     minutes here), sequential beyond that, and always sequential for a video. COLMAP's loop
     detection and vocabulary-tree matching need a vocabulary file (a download), so they are not
     used: the quadratic overlap closes loops of up to 2^overlap images, and an unordered set of
     more than EXHAUSTIVE_MAX photos should ask for ``matching="exhaustive"`` explicitly.
4. ``mapping``: COLMAP's incremental mapper (bundle adjustment included); the largest model wins.
5. ``undistort``: every registered image is resampled to a pinhole camera (pycolmap's
   ``undistort_image``: the largest pinhole image without blank pixels), so the output is PINHOLE.
6. ``write``: the output folder.

The output folder (nerfstudio's layout; it loads with ``aware3d.data.load_scene(OUT)``):

- ``transforms.json``: ``camera_model`` "PINHOLE", ``fl_x fl_y cx cy w h`` of the undistorted
  camera, ``frames`` (``file_path`` ``images/NAME``, ``transform_matrix``: OpenGL camera-to-world,
  as nerfstudio and instant-ngp write it, ``colmap_im_id``), in file-name order (video: capture
  order), ``aabb_scale``, ``applied_transform`` (3x4: COLMAP world -> this file's world, scale
  included) and ``ply_file_path``. Poses are normalised like instant-ngp's ``colmap2nerf.py``:
  world +z is the mean camera up, the origin is the point the cameras look at (the weighted closest
  approach of their optical axes; the median sparse point when the axes are near parallel), and the
  cameras sit at mean distance 4 from it. ``aabb_scale`` (the instant-ngp box, ``±aabb_scale / 0.66``
  here) is the smallest power of two whose box holds every camera, unless given.
- ``images/`` (full size, undistorted) and ``images_2``, ``images_4``, ``images_8`` (area-downscaled
  by 2, 4, 8, sizes rounded down, as ``load_scene(..., downscale=k)`` computes them).
- ``sparse_pc.ply``: the sparse points with their colours, in the transforms.json frame.
- ``summary.json``: images given / registered (and which failed), points, mean reprojection error,
  matching mode and pairs, cameras, seconds per stage (also printed).

Errors are :class:`ProcessError` (a :class:`~aware3d.data.DataError`, so a ValueError) naming what
and why: fewer than 3 images, an unreadable file, images of different sizes, a non-empty output
folder without ``overwrite``; :class:`RegistrationError` when too few images register (it lists
them, with their feature and matched-pair counts and the usual causes). A missing pycolmap raises
``MissingExtraError`` (an OSError) saying ``pip install "aware3d[sfm]"``. Nothing is half-written:
the folder is built next to OUT (``.OUT.partial-*``) and renamed into place at the end.

Import order: the pycolmap 4.2.1 wheel carries its own zlib and, loaded before the system zlib
(``libz.so.1``), captures that library's internal calls, after which Pillow's PNG writer corrupts
the heap. This module imports ``zlib`` and Pillow before pycolmap; programs that import pycolmap
themselves should import ``zlib`` (or aware3d, torch, Pillow) first.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import time
import warnings
import zlib  # noqa: F401  (before pycolmap: see the module docstring)
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from .normalize import (  # noqa: F401
    CAMERA_DISTANCE,
    look_at_centre,
    normalise_poses,
    transform_points,
    transform_poses,
)
from .scene import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MATCHING = ("auto", "exhaustive", "sequential")
#: "auto" matches every pair of photos up to this many images, sequentially beyond
EXHAUSTIVE_MAX = 100
#: camera models the mapper may fit (the undistorter turns each into a pinhole)
CAMERA_MODELS = ("OPENCV", "SIMPLE_RADIAL", "RADIAL", "PINHOLE", "SIMPLE_PINHOLE")
MIN_IMAGES = 3
#: instant-ngp's default scale: its box of side aabb_scale is ±aabb_scale / (2 * 0.33) file units
NGP_SCALE = 0.33
SFM_EXTRA_HINT = 'pip install "aware3d[sfm]"'
REGISTRATION_HINT = ("images usually fail to register when they are blurred (motion blur, out of "
                     "focus), overlap too little with the others (a big jump in viewpoint: take "
                     "photos closer together, each seeing most of what its neighbours see), or show "
                     "surfaces without texture (white walls, sky, glass, glare)")


class ProcessError(DataError):
    """Processing photos or a video failed; the message names what (the file, the stage) and why."""


class RegistrationError(ProcessError):
    """Too few images registered. ``unregistered``: their names; ``registered``: the others."""

    def __init__(self, message: str, unregistered: Sequence[str] = (), registered: Sequence[str] = ()):
        super().__init__(message)
        self.unregistered = list(unregistered)
        self.registered = list(registered)


def import_pycolmap():
    """Import pycolmap (after zlib and Pillow, see the module docstring); a missing package raises
    ``MissingExtraError`` naming ``pip install "aware3d[sfm]"``."""
    from PIL import Image  # noqa: F401  (loads Pillow's zlib before pycolmap's)

    try:
        import pycolmap
    except ImportError as e:
        from ..metrics.fid import MissingExtraError

        raise MissingExtraError(
            f"structure from motion needs pycolmap, which is not installed ({e}); install it with "
            f"`{SFM_EXTRA_HINT}`") from None
    return pycolmap


# --------------------------------------------------------------------------------------------------
# Progress: one line per stage, a bar where a stage has steps, seconds per stage


class _Progress:
    def __init__(self, enabled: bool, stages: Sequence[str]):
        self.enabled, self.stages, self.seconds = bool(enabled), list(stages), {}

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = ""):
        i = self.stages.index(name) + 1
        self.say(f"[{i}/{len(self.stages)}] {name}" + (f": {detail}" if detail else ""))
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        self.say(f"      {name} done in {self.seconds[name]:.1f} s")

    def bar(self, total: int, unit: str, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, desc=f"      {desc}", disable=not self.enabled,
                    leave=False, dynamic_ncols=True)


@contextmanager
def _quiet_colmap(pycolmap, verbose: bool):
    """Silence COLMAP's INFO log (glog on stderr) unless ``verbose``."""
    log = pycolmap.logging
    old = log.minloglevel
    if not verbose:
        log.minloglevel = 2
    try:
        yield
    finally:
        log.minloglevel = old


# --------------------------------------------------------------------------------------------------
# The output folder: built next to OUT, renamed into place at the end


class _Build:
    def __init__(self, out_dir, overwrite: bool, sources: Sequence[Path] = ()):
        out = Path(out_dir).expanduser()
        out = out.parent.resolve() / out.name
        if out.exists() and not out.is_dir():
            raise ProcessError(f"{out}: exists and is not a folder (expected a new or empty output folder)")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise ProcessError(f"{out}: exists and is not empty; choose a new folder or pass "
                               f"overwrite=True (--overwrite) to replace it")
        for s in sources:
            s = Path(s).resolve()
            if s == out or out in s.parents:
                raise ProcessError(f"{out}: the output folder holds the input {s}; choose an output "
                                   f"folder outside it")
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(3)}"
        self.tmp.mkdir()
        self.work = self.tmp / "_work"
        self.work.mkdir()

    def commit(self, keep_work: bool) -> None:
        if keep_work:
            self.work.rename(self.tmp / "colmap")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}-{secrets.token_hex(3)}"
            self.out.rename(old)
            self.tmp.rename(self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.out)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Images


def list_images(src_dir) -> list[Path]:
    """The image files directly in ``src_dir`` (by extension, case-insensitive), sorted by name."""
    src = Path(src_dir)
    if not src.is_dir():
        raise ProcessError(f"{src}: no such folder (expected a folder of photos)")
    files = sorted((p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=lambda p: p.name)
    if len(files) < MIN_IMAGES:
        raise ProcessError(f"{src}: {len(files)} image file{'s' if len(files) != 1 else ''} "
                           f"({', '.join(IMAGE_EXTENSIONS)}); structure from motion needs at least "
                           f"{MIN_IMAGES} photos of the scene from different viewpoints (20-200 is usual)")
    return files


def _fit_size(w: int, h: int, max_size: int | None) -> tuple[int, int]:
    if max_size is None or max(w, h) <= int(max_size):
        return w, h
    s = int(max_size) / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _focal_prior_35mm(im) -> float | None:
    """EXIF FocalLengthIn35mmFilm (mm) or None."""
    try:
        v = im.getexif().get_ifd(0x8769).get(41989)
        v = float(v) if v else None
    except Exception:
        return None
    return v if v and v > 0 else None


def _read_photo(path: Path):
    """Decode a photo to an RGB PIL image with its EXIF orientation applied."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            f35 = _focal_prior_35mm(im)
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            im.load()
    except Exception as e:  # PIL raises many types for corrupt files
        raise ProcessError(f"{path}: cannot read this image ({type(e).__name__}: {e}); remove it "
                           f"or replace it with a readable JPEG/PNG") from None
    return im, f35


def _prepare_images(files: Sequence[Path], work_images: Path, max_size, prog: _Progress):
    """Decode, check and (optionally) downscale every photo into ``work_images`` as PNG.
    Returns (entries [(final name, work name, source path)], (w, h), focal prior in px or None)."""
    from PIL import Image

    work_images.mkdir(parents=True, exist_ok=True)
    entries, size, first, focal = [], None, None, None
    with prog.bar(len(files), "img", "read") as bar:
        for p in files:
            im, f35 = _read_photo(p)
            if size is None:
                size, first = im.size, p
                if f35:
                    focal = f35 / 36.0  # as a fraction of the longer side (36 mm film width)
            elif im.size != size:
                raise ProcessError(f"{p}: image is {im.size[0]}x{im.size[1]}, but {first.name} is "
                                   f"{size[0]}x{size[1]}; every photo must come from one camera at "
                                   f"one size (one shared camera model; crop or resize them alike)")
            w, h = _fit_size(*im.size, max_size)
            if (w, h) != im.size:
                im = im.resize((w, h), Image.Resampling.BOX)  # area average
            work = p.name + ".png"
            im.save(work_images / work, compress_level=1)
            entries.append((p.name, work, p))
            bar.update(1)
    w, h = _fit_size(*size, max_size)
    return entries, (w, h), (focal * max(w, h) if focal else None)


# --------------------------------------------------------------------------------------------------
# Video: blur-aware frame selection


def sharpness(frame: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey image (``frame`` uint8/float (H, W[, 3])):
    high for sharp frames, low for blurred ones (motion blur, defocus)."""
    f = np.asarray(frame, dtype=np.float32)
    g = f[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32) if f.ndim == 3 else f
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def select_sharpest(scores: Sequence[float], num_frames: int) -> list[int]:
    """Split the frames into ``num_frames`` equal consecutive windows and keep the sharpest frame
    (highest score, the first on ties) of each; every frame when there are at most ``num_frames``."""
    n = len(scores)
    if num_frames < 1:
        raise ValueError(f"num_frames: expected a positive number, got {num_frames}")
    if n <= num_frames:
        return list(range(n))
    s = np.asarray(scores, dtype=np.float64)
    edges = np.round(np.linspace(0, n, num_frames + 1)).astype(int)
    return [int(a + np.argmax(s[a:b])) for a, b in zip(edges[:-1], edges[1:])]


def _video_reader(video: Path):
    import imageio.v2 as imageio

    try:
        return imageio.get_reader(str(video), "ffmpeg")
    except Exception as e:
        raise ProcessError(f"{video}: cannot read this video through ffmpeg ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[-1] if str(e).strip() else e})") from None


def _iter_frames(video: Path):
    reader = _video_reader(video)
    try:
        for i, frame in enumerate(reader):
            yield i, frame
    except Exception as e:
        raise ProcessError(f"{video}: decoding failed ({type(e).__name__}: {e})") from None
    finally:
        reader.close()


def _video_frames(video: Path, num_frames: int, work_images: Path, max_size, prog: _Progress) -> dict:
    """Two passes over the video: score every frame, then write the sharpest of each window."""
    from PIL import Image

    reader = _video_reader(video)
    meta = reader.get_meta_data()
    reader.close()
    fps = float(meta.get("fps") or 0.0)
    dur = float(meta.get("duration") or 0.0)
    est = int(round(fps * dur)) if fps > 0 and dur > 0 else None
    scores = []
    with prog.bar(est, "frame", "sharpness") as bar:
        for _, frame in _iter_frames(video):
            scores.append(sharpness(frame))
            bar.update(1)
    if len(scores) < MIN_IMAGES:
        raise ProcessError(f"{video}: {len(scores)} frame{'s' if len(scores) != 1 else ''} decoded; "
                           f"structure from motion needs at least {MIN_IMAGES}")
    chosen = select_sharpest(scores, num_frames)
    want = {f: j for j, f in enumerate(chosen)}
    work_images.mkdir(parents=True, exist_ok=True)
    entries, size = [], None
    with prog.bar(len(chosen), "frame", "extract") as bar:
        for i, frame in _iter_frames(video):
            if i not in want:
                continue
            im = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
            size = im.size
            w, h = _fit_size(*im.size, max_size)
            if (w, h) != im.size:
                im = im.resize((w, h), Image.Resampling.BOX)
            name = f"frame_{want[i] + 1:05d}.png"
            im.save(work_images / name, compress_level=1)
            entries.append((name, name, None))
            bar.update(1)
            if len(entries) == len(chosen):
                break
    sel = np.asarray([scores[i] for i in chosen])
    return {"entries": entries, "size": _fit_size(*size, max_size), "frames_in_video": len(scores),
            "fps": fps, "selected_frames": chosen,
            "sharpness_selected_mean": float(sel.mean()), "sharpness_all_mean": float(np.mean(scores))}


# --------------------------------------------------------------------------------------------------
# SfM stages


def image_pairs(n: int, matching: str, overlap: int = 10) -> list[tuple[int, int]]:
    """Index pairs (i < j) to match: ``"exhaustive"`` every pair; ``"sequential"`` i with i + 1 ..
    i + overlap and i + 2^k (k < overlap), COLMAP's sequential scheme with quadratic overlap."""
    if matching == "exhaustive":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if matching != "sequential":
        raise ValueError(f"matching: expected one of {MATCHING}, got {matching!r}")
    pairs = set()
    for i in range(n):
        for k in range(1, overlap + 1):
            if i + k < n:
                pairs.add((i, i + k))
        for k in range(overlap):
            if i + 2 ** k < n:
                pairs.add((i, i + 2 ** k))
    return sorted(pairs)


def _camera_params(model: str, w: int, h: int, focal: float) -> str:
    """COLMAP's parameter string of ``model`` with focal ``focal`` px, the principal point at the
    image centre and no distortion (the prior the mapper starts from)."""
    cx, cy = w / 2.0, h / 2.0
    vals = {"SIMPLE_PINHOLE": [focal, cx, cy], "PINHOLE": [focal, focal, cx, cy],
            "SIMPLE_RADIAL": [focal, cx, cy, 0.0], "RADIAL": [focal, cx, cy, 0.0, 0.0],
            "OPENCV": [focal, focal, cx, cy, 0.0, 0.0, 0.0, 0.0]}[model]
    return ",".join(repr(float(v)) for v in vals)


def _run_polled(pycolmap, fn, bar=None, poll=None, interval: float = 1.0):
    """Run ``fn(cancellation_token)`` (a pycolmap call, which releases the GIL) in a worker thread
    while this thread moves ``bar`` to ``poll()`` every ``interval`` seconds: one native call keeps
    COLMAP's own batching (splitting the work into many calls to move a bar cost 80 % more time
    in matching). Ctrl-C cancels the call through its token and waits for it to stop."""
    import threading

    token = pycolmap.CancellationToken()
    out, err = {}, []

    def target():
        try:
            out["v"] = fn(token)
        except BaseException as e:  # re-raised in the caller's thread
            err.append(e)

    th = threading.Thread(target=target, name="aware3d-colmap", daemon=True)
    th.start()
    try:
        while th.is_alive():
            th.join(interval)
            if bar is not None and poll is not None:
                try:
                    n = int(poll())
                except Exception:  # the database is busy: try again next time
                    continue
                bar.update(max(0, min(n, bar.total) - bar.n))
    except KeyboardInterrupt:
        token.cancel()
        th.join()
        raise
    if err:
        raise err[0]
    if bar is not None:
        bar.update(bar.total - bar.n)
    return out.get("v")


def _db_count(pycolmap, db: Path, what: str) -> int:
    d = pycolmap.Database.open(db)
    try:
        if what == "pairs":
            return int(d.num_matched_image_pairs())
        return sum(1 for im in d.read_all_images() if d.exists_keypoints(im.image_id))
    finally:
        d.close()


def _features(pycolmap, db: Path, img_dir: Path, work_names, camera_model, size, focal, threads,
              max_features, prog: _Progress) -> dict:
    """SIFT features into the database; returns {work name: keypoint count}."""
    pycolmap.Database.open(db).close()
    ro = pycolmap.ImageReaderOptions()
    ro.camera_model = camera_model
    if focal:
        ro.camera_params = _camera_params(camera_model, size[0], size[1], focal)
    single = pycolmap.CameraMode.SINGLE
    eo = pycolmap.FeatureExtractionOptions()
    eo.num_threads = threads
    eo.use_gpu = False
    eo.sift.max_num_features = int(max_features)
    with prog.bar(len(work_names), "img", "SIFT") as bar:
        _run_polled(pycolmap, lambda tok: pycolmap.extract_features(
            db, img_dir, image_names=list(work_names), camera_mode=single, reader_options=ro,
            extraction_options=eo, device=pycolmap.Device.cpu, cancellation_token=tok),
            bar, lambda: _db_count(pycolmap, db, "images"))
    d = pycolmap.Database.open(db)
    try:
        return {im.name: int(d.num_keypoints_for_image(im.image_id)) for im in d.read_all_images()}
    finally:
        d.close()


def _match(pycolmap, db: Path, work: Path, work_names, pairs, threads, prog: _Progress) -> dict:
    """Match and verify ``pairs`` (one pycolmap call); returns {work name: verified pairs}."""
    mo = pycolmap.FeatureMatchingOptions()
    mo.num_threads = threads
    mo.use_gpu = False
    lst = work / "pairs.txt"
    lst.write_text("".join(f"{work_names[i]} {work_names[j]}\n" for i, j in pairs))
    po = pycolmap.ImportedPairingOptions()
    po.match_list_path = str(lst)
    with prog.bar(len(pairs), "pair", "match") as bar:
        _run_polled(pycolmap, lambda tok: pycolmap.match_image_pairs(
            db, matching_options=mo, pairing_options=po, device=pycolmap.Device.cpu,
            cancellation_token=tok), bar, lambda: _db_count(pycolmap, db, "pairs"))
    d = pycolmap.Database.open(db)
    try:
        id_name = {im.image_id: im.name for im in d.read_all_images()}
        ids, inliers = d.read_two_view_geometry_num_inliers()
    finally:
        d.close()
    verified = {n: 0 for n in id_name.values()}
    for pid, k in zip(ids, inliers):
        if k >= 15:
            a, b = pycolmap.pair_id_to_image_pair(pid)
            verified[id_name[a]] += 1
            verified[id_name[b]] += 1
    return verified


def _map(pycolmap, db: Path, img_dir: Path, sparse: Path, n: int, threads, seed, prog: _Progress):
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.min_model_size = MIN_IMAGES
    opts.random_seed = int(seed)
    sparse.mkdir(parents=True, exist_ok=True)
    with prog.bar(n, "img", "register") as bar:
        def first_pair():
            bar.update(min(2, n - bar.n))

        def next_image():
            bar.update(min(1, n - bar.n))

        recs = _run_polled(pycolmap, lambda tok: pycolmap.incremental_mapping(
            db, img_dir, sparse, options=opts, initial_image_pair_callback=first_pair,
            next_image_callback=next_image, cancellation_token=tok))
    return list(recs.values())


def _diagnose(names, keypoints, verified) -> str:
    rows = [f"{n} ({keypoints.get(n, 0)} features, {verified.get(n, 0)} matched pairs)" for n in names[:20]]
    more = f", and {len(names) - 20} more" if len(names) > 20 else ""
    return ", ".join(rows) + more


# --------------------------------------------------------------------------------------------------
# Poses: OpenGL camera-to-world, normalised like instant-ngp's colmap2nerf.py


def _colmap_c2w(img) -> np.ndarray:
    """COLMAP image (world-to-camera, OpenCV axes) -> OpenGL camera-to-world (4, 4)."""
    w2c = np.asarray(img.cam_from_world().matrix(), dtype=np.float64)
    R, t = w2c[:, :3], w2c[:, 3]
    c2w = np.eye(4)
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return c2w @ np.diag([1.0, -1.0, -1.0, 1.0])


def _auto_aabb_scale(centres: np.ndarray) -> int:
    reach = 1.05 * float(np.abs(centres).max()) if len(centres) else 1.0
    a = 1
    while a / (2 * NGP_SCALE) < reach and a < 128:
        a *= 2
    return a


# --------------------------------------------------------------------------------------------------
# Writing


def _save(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    im = Image.fromarray(arr)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=95, subsampling=0)
    else:
        im.save(path, compress_level=1)


def _output_name(final: str) -> str:
    """JPEG photos stay JPEG (quality 95); everything else becomes PNG."""
    p = Path(final)
    return final if p.suffix.lower() in (".jpg", ".jpeg", ".png") else p.stem + ".png"


def _undistort_and_write(pycolmap, camera, img_dir: Path, regs, tmp: Path, downscales, prog):
    """Undistort each registered image to one pinhole camera and write it (``tmp/images``) with its
    area-downscaled copies (``tmp/images_k``). ``regs``: [(output name, work name)]. Returns the
    pinhole (fx, fy, cx, cy, w, h) of the full-size images."""
    from ._common import area_resize

    pinhole = camera.model.name in ("PINHOLE", "SIMPLE_PINHOLE")
    opts = pycolmap.UndistortCameraOptions()
    und = None
    for k in (1, *downscales):
        (tmp / ("images" if k == 1 else f"images_{k}")).mkdir(parents=True, exist_ok=True)
    with prog.bar(len(regs), "img", "undistort") as bar:
        for name, work in regs:
            src = img_dir / work
            if pinhole:
                from PIL import Image

                with Image.open(src) as im:
                    arr = np.asarray(im.convert("RGB"))
                cam = camera
            else:
                bm = pycolmap.Bitmap.read(str(src), True)
                if bm is None:
                    raise ProcessError(f"{src}: cannot read the prepared image back for undistortion")
                bm, cam = pycolmap.undistort_image(opts, bm, camera)
                arr = np.ascontiguousarray(bm.to_array()[..., :3])
            if und is None:
                und = cam
            _save(arr, tmp / "images" / name)
            f = arr.astype(np.float32)
            for k in downscales:
                w, h = arr.shape[1] // k, arr.shape[0] // k
                if w < 1 or h < 1:
                    continue
                small = area_resize(f, w, h)
                _save((small + 0.5).clip(0, 255).astype(np.uint8), tmp / f"images_{k}" / name)
            bar.update(1)
    K = np.asarray(und.calibration_matrix(), dtype=np.float64)
    return float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(und.width), int(und.height)


def _write_ply_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    from ..utils.mesh import write_ply

    write_ply(path, xyz.astype(np.float32), np.zeros((0, 3), np.int32), rgb.astype(np.uint8))


# --------------------------------------------------------------------------------------------------
# The pipeline


def _check_options(matching, camera_model, max_size, min_registered, downscales, aabb_scale):
    if matching not in MATCHING:
        raise ValueError(f"matching: expected one of {', '.join(MATCHING)}, got {matching!r}")
    if camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model: expected one of {', '.join(CAMERA_MODELS)}, got {camera_model!r}")
    if max_size is not None and (int(max_size) != max_size or int(max_size) < 16):
        raise ValueError(f"max_size: expected None or an integer >= 16 (pixels), got {max_size!r}")
    if not 0 <= float(min_registered) <= 1:
        raise ValueError(f"min_registered: expected a fraction in [0, 1], got {min_registered!r}")
    for k in downscales:
        if int(k) != k or int(k) < 2:
            raise ValueError(f"downscales: expected integers >= 2, got {list(downscales)}")
    if aabb_scale is not None and (int(aabb_scale) != aabb_scale or int(aabb_scale) < 1):
        raise ValueError(f"aabb_scale: expected None (automatic) or an integer >= 1, got {aabb_scale!r}")


def _sfm(pycolmap, build: _Build, entries, size, focal, *, matching, overlap, camera_model,
         threads, max_features, min_registered, aabb_scale, downscales, seed, prog: _Progress,
         summary: dict) -> dict:
    """features -> matching -> mapping -> undistort -> write, into ``build.tmp``."""
    work, tmp = build.work, build.tmp
    img_dir, db = work / "images", work / "database.db"
    n = len(entries)
    work_names = [w for _, w, _ in entries]
    final_of = {w: f for f, w, _ in entries}
    with prog.stage("features", f"SIFT on {n} images at {size[0]}x{size[1]} (CPU, {camera_model} camera"
                    + (f", focal prior {focal:.0f} px from EXIF" if focal else "") + ")"):
        keypoints = _features(pycolmap, db, img_dir, work_names, camera_model, size, focal, threads,
                              max_features, prog)
    pairs = image_pairs(n, matching, overlap)
    with prog.stage("matching", f"{matching}, {len(pairs)} image pairs"):
        verified = _match(pycolmap, db, work, work_names, pairs, threads, prog)
    with prog.stage("mapping", "incremental mapping with bundle adjustment"):
        recs = _map(pycolmap, db, img_dir, work / "sparse", n, threads, seed, prog)
    kp = {final_of[w]: k for w, k in keypoints.items()}
    vp = {final_of[w]: k for w, k in verified.items()}
    finals = [f for f, _, _ in entries]
    if not recs:
        raise RegistrationError(
            f"structure from motion failed: no reconstruction from the {n} images (no pair of "
            f"images shares enough matched features to start; median {int(np.median(list(kp.values())))} "
            f"features per image, {sum(1 for v in vp.values() if v)} of {n} images matched to any "
            f"other). Per image: {_diagnose(finals, kp, vp)}. {REGISTRATION_HINT}",
            unregistered=finals)
    rec = max(recs, key=lambda r: (r.num_reg_images(), r.num_points3D()))
    reg_ids = sorted(rec.reg_image_ids())
    images = {i: rec.image(i) for i in reg_ids}
    reg_final = sorted(final_of[images[i].name] for i in reg_ids)
    failed = [f for f in finals if f not in set(reg_final)]
    need = max(MIN_IMAGES, math.ceil(float(min_registered) * n))
    if len(reg_final) < need:
        raise RegistrationError(
            f"structure from motion registered only {len(reg_final)} of {n} images (at least {need} "
            f"needed: min_registered={min_registered}); not registered: {_diagnose(failed, kp, vp)}. "
            f"{REGISTRATION_HINT}", unregistered=failed, registered=reg_final)
    if failed:
        msg = (f"{len(failed)} of {n} images did not register and are left out: "
               f"{_diagnose(failed, kp, vp)}. {REGISTRATION_HINT}")
        warnings.warn(msg, stacklevel=3)
        prog.say("      warning: " + msg)

    cam_ids = {images[i].camera_id for i in reg_ids}
    if len(cam_ids) != 1:  # one shared camera is what _features asks for
        raise ProcessError(f"the reconstruction has {len(cam_ids)} cameras, expected one shared camera")
    camera = rec.cameras[cam_ids.pop()]
    order = sorted(reg_ids, key=lambda i: final_of[images[i].name])
    out_names = [_output_name(final_of[images[i].name]) for i in order]
    if len(set(out_names)) < len(out_names):  # e.g. a.bmp and a.png: keep the full source names
        out_names = [final_of[images[i].name] + ".png" for i in order]
    regs = [(o, images[i].name) for o, i in zip(out_names, order)]
    with prog.stage("undistort", f"{len(regs)} images {camera.model.name} -> PINHOLE, "
                    f"downscales {', '.join(map(str, downscales))}"):
        fx, fy, cx, cy, w, h = _undistort_and_write(pycolmap, camera, img_dir, regs, tmp,
                                                    downscales, prog)

    with prog.stage("write", "transforms.json, sparse_pc.ply, summary.json"):
        c2w = np.stack([_colmap_c2w(images[i]) for i in order])
        pts = rec.points3D
        xyz = np.array([p.xyz for p in pts.values()], dtype=np.float64).reshape(-1, 3)
        rgb = np.array([p.color for p in pts.values()], dtype=np.uint8).reshape(-1, 3)
        T = normalise_poses(c2w, xyz)
        c2w_n = transform_poses(T, c2w)
        xyz_n = transform_points(T, xyz)
        a = int(aabb_scale) if aabb_scale is not None else _auto_aabb_scale(c2w_n[:, :3, 3])
        frames = [{"file_path": f"images/{name}", "transform_matrix": m.tolist(),
                   "colmap_im_id": int(i)} for (name, _), m, i in zip(regs, c2w_n, order)]
        meta = {"camera_model": "PINHOLE", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": w, "h": h,
                "aabb_scale": a, "applied_transform": T[:3].tolist(), "ply_file_path": "sparse_pc.ply",
                "generator": "aware3d.data.process", "frames": frames}
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=2))
        _write_ply_points(tmp / "sparse_pc.ply", xyz_n, rgb)
        dist = camera.params.tolist()
        summary.update({
            "images_given": n, "images_registered": len(reg_final),
            "unregistered": failed, "points": int(len(xyz)),
            "mean_reprojection_error_px": round(float(rec.compute_mean_reprojection_error()), 4),
            "mean_track_length": round(float(rec.compute_mean_track_length()), 3),
            "models": len(recs), "matching": matching, "pairs": len(pairs),
            "camera": {"model": camera.model.name, "params": [round(float(v), 6) for v in dist],
                       "width": int(camera.width), "height": int(camera.height)},
            "pinhole": {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": w, "h": h},
            "aabb_scale": a, "downscales": list(downscales),
        })
    return summary


def _finish(build: _Build, summary: dict, prog: _Progress, t0: float, keep_colmap: bool) -> dict:
    summary["seconds"] = dict(prog.seconds, total=round(time.perf_counter() - t0, 2))
    summary["out"] = str(build.out)
    (build.tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    build.commit(keep_colmap)
    prog.say(format_summary(summary))
    return summary


def format_summary(s: dict) -> str:
    """The printed summary of :func:`process_images` / :func:`process_video`."""
    what = "video frames" if s.get("kind") == "video" else "images"
    lines = [f"processed {s['images_given']} {what} -> {s['out']}",
             f"  registered        {s['images_registered']} / {s['images_given']}"
             + (f"  (left out: {', '.join(s['unregistered'][:8])}"
                + (" ..." if len(s['unregistered']) > 8 else "") + ")" if s["unregistered"] else ""),
             f"  points            {s['points']}  (mean track length {s['mean_track_length']})",
             f"  reprojection      {s['mean_reprojection_error_px']:.3f} px (mean)",
             f"  matching          {s['matching']}, {s['pairs']} pairs",
             f"  camera            {s['camera']['model']} {s['camera']['width']}x{s['camera']['height']} -> "
             f"PINHOLE {s['pinhole']['w']}x{s['pinhole']['h']}, fl {s['pinhole']['fl_x']:.1f} "
             f"{s['pinhole']['fl_y']:.1f}",
             ]
    if s.get("kind") == "video":
        lines.append(f"  video             {s['frames_in_video']} frames, kept {len(s['selected_frames'])} "
                     f"(sharpness {s['sharpness_selected_mean']:.1f} kept vs {s['sharpness_all_mean']:.1f} all)")
    lines.append("  seconds           " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()))
    return "\n".join(lines)


def _threads(num_threads) -> int:
    return -1 if num_threads is None else max(1, int(num_threads))


def process_images(src_dir, out_dir, *, matching: str = "auto", max_size: int | None = None,
                   camera_model: str = "OPENCV", overwrite: bool = False, progress: bool = True,
                   num_threads: int | None = None, max_features: int = 8192, overlap: int = 10,
                   min_registered: float = 0.5, aabb_scale: int | None = None,
                   downscales: Sequence[int] = (2, 4, 8), keep_colmap: bool = False, seed: int = 0,
                   verbose: bool = False) -> dict:
    """Structure from motion on the photos in ``src_dir`` (see the module docstring); writes the
    scene to ``out_dir`` and returns the summary (also written as ``out_dir/summary.json``).

    matching: ``"auto"``, ``"exhaustive"`` or ``"sequential"`` (with ``overlap``). max_size: the
    longer image side in pixels, photos larger than that are area-downscaled first (None: keep
    them). camera_model: the lens model fitted (default ``"OPENCV"``; the output is undistorted to
    a pinhole whatever it is). overwrite: replace a non-empty ``out_dir``. num_threads: COLMAP's
    threads (None: all cores). max_features: SIFT features per image. min_registered: the fraction
    of images that must register, else :class:`RegistrationError` (those that fail are listed in
    the summary and a warning either way). aabb_scale: the instant-ngp box written to
    transforms.json (None: the smallest power of two that holds the cameras). keep_colmap: keep
    COLMAP's database, prepared images and sparse models in ``out_dir/colmap``. seed: COLMAP's
    random seed. verbose: COLMAP's own log on stderr.
    """
    _check_options(matching, camera_model, max_size, min_registered, downscales, aabb_scale)
    src = Path(src_dir)
    files = list_images(src)
    pycolmap = import_pycolmap()
    t0 = time.perf_counter()
    prog = _Progress(progress, ["read", "features", "matching", "mapping", "undistort", "write"])
    mode = matching if matching != "auto" else ("exhaustive" if len(files) <= EXHAUSTIVE_MAX else "sequential")
    build = _Build(out_dir, overwrite, sources=[src])
    try:
        with _quiet_colmap(pycolmap, verbose):
            pycolmap.set_random_seed(int(seed))
            prog.say(f"processing {len(files)} photos from {src} -> {build.out} (pycolmap "
                     f"{pycolmap.__version__}, matching {mode})")
            with prog.stage("read", f"{len(files)} photos" + (f", longer side <= {max_size} px" if max_size else "")):
                entries, size, focal = _prepare_images(files, build.work / "images", max_size, prog)
            summary = {"kind": "images", "source": str(src.resolve()), "pycolmap": pycolmap.__version__}
            _sfm(pycolmap, build, entries, size, focal, matching=mode, overlap=int(overlap),
                 camera_model=camera_model, threads=_threads(num_threads), max_features=max_features,
                 min_registered=min_registered, aabb_scale=aabb_scale, downscales=tuple(downscales),
                 seed=seed, prog=prog, summary=summary)
        return _finish(build, summary, prog, t0, keep_colmap)
    except BaseException:
        build.abort()
        raise


def process_video(video, out_dir, num_frames: int = 100, *, matching: str = "sequential",
                  max_size: int | None = None, camera_model: str = "OPENCV", overwrite: bool = False,
                  progress: bool = True, num_threads: int | None = None, max_features: int = 8192,
                  overlap: int = 10, min_registered: float = 0.5, aabb_scale: int | None = None,
                  downscales: Sequence[int] = (2, 4, 8), keep_colmap: bool = False, seed: int = 0,
                  verbose: bool = False) -> dict:
    """Structure from motion on ``num_frames`` frames of ``video`` (any format ffmpeg reads): the
    frames are split into ``num_frames`` equal windows and the sharpest frame of each is kept
    (variance of the Laplacian; every frame when the video has fewer), written as
    ``frame_00001.png``..., then processed as :func:`process_images` does, with sequential matching
    by default (``"auto"`` means sequential here too). Returns the summary, which adds
    ``frames_in_video``, ``fps``, ``selected_frames`` (0-based indices of the kept frames) and the
    mean sharpness of the kept frames and of all frames."""
    _check_options(matching, camera_model, max_size, min_registered, downscales, aabb_scale)
    if int(num_frames) != num_frames or int(num_frames) < MIN_IMAGES:
        raise ValueError(f"num_frames: expected an integer >= {MIN_IMAGES}, got {num_frames!r}")
    video = Path(video)
    if not video.is_file():
        raise ProcessError(f"{video}: no such file (expected a video file, e.g. an MP4)")
    pycolmap = import_pycolmap()
    t0 = time.perf_counter()
    prog = _Progress(progress, ["frames", "features", "matching", "mapping", "undistort", "write"])
    mode = "sequential" if matching == "auto" else matching
    build = _Build(out_dir, overwrite, sources=[video])
    try:
        with _quiet_colmap(pycolmap, verbose):
            pycolmap.set_random_seed(int(seed))
            prog.say(f"processing video {video} -> {build.out} ({int(num_frames)} frames, pycolmap "
                     f"{pycolmap.__version__}, matching {mode})")
            with prog.stage("frames", f"sharpest frame of each of {int(num_frames)} windows"):
                vf = _video_frames(video, int(num_frames), build.work / "images", max_size, prog)
            summary = {"kind": "video", "source": str(video.resolve()), "pycolmap": pycolmap.__version__,
                       **{k: v for k, v in vf.items() if k not in ("entries", "size")}}
            _sfm(pycolmap, build, vf["entries"], vf["size"], None, matching=mode, overlap=int(overlap),
                 camera_model=camera_model, threads=_threads(num_threads), max_features=max_features,
                 min_registered=min_registered, aabb_scale=aabb_scale, downscales=tuple(downscales),
                 seed=seed, prog=prog, summary=summary)
        return _finish(build, summary, prog, t0, keep_colmap)
    except BaseException:
        build.abort()
        raise


__all__ = ["process_images", "process_video", "ProcessError", "RegistrationError", "image_pairs",
           "select_sharpest", "sharpness", "normalise_poses", "look_at_centre", "list_images",
           "format_summary", "import_pycolmap", "MATCHING", "CAMERA_MODELS", "EXHAUSTIVE_MAX"]
