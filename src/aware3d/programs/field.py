"""Camera programs of a radiance-field run (nerf, ngp, nerfw): each renders RGB, depth and opacity
videos (MP4 + GIF), the RGB frames as a PNG sequence (``frames/00000.png`` ...) and a first-frame
PNG under ``out_dir``.

- ``turntable``: a circle of cameras around the world origin at the training cameras' mean
  distance and elevation (at least 15 degrees); needs no dataset;
- ``orbit``: a circle around the scene's centre of interest (the point the training cameras look
  at: least-squares closest point to their optical axes) at the cameras' mean distance from it and
  their mean elevation, about their mean up vector;
- ``training-path``: a smooth path through the training cameras (a nearest-neighbour tour, or the
  dataset order where that is already smooth; centripetal Catmull-Rom positions, slerp rotations);
- ``spiral``: a spiral around the centre of interest: LLFF's spiral for forward-facing captures,
  otherwise two turns round the centre while the elevation sweeps the cameras' range;
- ``interpolate``: from training camera ``a`` to ``b`` (default the first and the last);
- ``test-views``: the cameras of the dataset's test split (the training split for single-split
  formats);
- ``path``: a camera path file: aware3d's ``{"frames": [{"transform_matrix": 4x4}, ...]}``
  (OpenGL camera-to-world, as in Blender transforms files; optional ``camera_angle_x``, ``w``,
  ``h``, ``fps``) or nerfstudio's ``camera_path.json`` (:func:`read_camera_path`).

``orbit``, ``training-path``, ``spiral`` and ``interpolate`` read the run's training cameras from
its dataset (``run.load_data("train")``).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from . import Program


def _read_json(path):
    p = Path(path)
    try:
        return p, json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: camera path file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None


def _aware3d_frames(p: Path, doc) -> torch.Tensor:
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not frames or not isinstance(frames, list):
        raise ValueError(f"{p}: expected {{\"frames\": [{{\"transform_matrix\": 4x4}}, ...]}} or a nerfstudio "
                         f"camera path {{\"camera_path\": [{{\"camera_to_world\": ..., \"fov\": ...}}, ...]}}")
    mats = []
    for i, f in enumerate(frames):
        try:
            m = torch.as_tensor(f.get("transform_matrix"), dtype=torch.float32) if isinstance(f, dict) else None
        except (TypeError, ValueError):
            m = None
        if m is None or m.shape != (4, 4) or not torch.isfinite(m).all():
            raise ValueError(f"{p}: frame {i}: transform_matrix must be a finite 4x4 matrix")
        mats.append(m)
    return torch.stack(mats)


def camera_path_from_json(path) -> tuple[torch.Tensor, dict]:
    """aware3d camera path file: {"frames": [{"transform_matrix": 4x4}, ...], optional
    "camera_angle_x", "w", "h", "fps"} (OpenGL c2w, as in Blender transforms files). Returns
    ``(c2w (N, 4, 4), doc)``."""
    p, doc = _read_json(path)
    return _aware3d_frames(p, doc), doc


def _positive_int(p, doc, key):
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or int(v) < 1:
        raise ValueError(f"{p}: {key} must be a positive whole number of pixels, got {v!r}")
    return int(v)


def _positive_float(p, where, key, v, upper=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 \
            or (upper is not None and v >= upper):
        rng = f"in (0, {upper})" if upper is not None else "> 0"
        raise ValueError(f"{p}: {where}{key} must be a number {rng}, got {v!r}")
    return float(v)


def read_camera_path(path) -> dict:
    """Read a camera path file in either format. Returns ``{"format": "aware3d" | "nerfstudio",
    "c2w": (N, 4, 4) OpenGL camera-to-world, "width", "height" (ints or None: the file's image
    size), "fps" (or None), and one of "fov_y_deg" (N,) / "fov_x_deg" (float) / "focal" (fx, fy,
    cx, cy at the file's size) or none of them}``.

    - aware3d: ``{"frames": [{"transform_matrix": 4x4}, ...], "camera_angle_x" (radians,
      horizontal), "fl_x", "fl_y", "cx", "cy" (pixels at w x h, as in instant-ngp files), "w",
      "h", "fps"}``, all but ``frames`` optional.
    - nerfstudio (``ns-render camera-path``'s ``camera_path.json``, written by its viewer): a
      ``camera_path`` list of ``{"camera_to_world": 16 floats (row-major 4x4; a nested 4x4 or
      3x4 is accepted), "fov": vertical field of view in degrees, "aspect"}``, one entry per
      rendered frame, with ``render_width``, ``render_height``, ``fps`` and ``seconds``.
      The matrices are OpenGL camera-to-world (nerfstudio's convention, the same as aware3d's)
      and are used as they are, in the run's world frame. ``camera_type`` must be perspective
      (or absent); ``keyframes``, ``smoothness_value``, ``is_cycle`` and ``crop`` are not used.
      Without ``fps``, fps is frames / ``seconds``. Where every camera has a ``time`` in [0, 1]
      (the viewer's paths of dynamic scenes), ``"times"`` (N,) holds them (runs of dynamic scenes
      render each frame at its moment).
    """
    p, doc = _read_json(path)
    if isinstance(doc, dict) and "camera_path" in doc:
        cams = doc["camera_path"]
        if not isinstance(cams, list) or not cams:
            raise ValueError(f"{p}: camera_path must be a non-empty list of "
                             f"{{\"camera_to_world\": 16 floats, \"fov\": degrees}}")
        ctype = str(doc.get("camera_type") or "perspective").lower()
        if ctype != "perspective":
            raise ValueError(f"{p}: camera_type {ctype!r}: only perspective camera paths can be rendered")
        mats, fovs, aspect = [], [], None
        for i, c in enumerate(cams):
            where = f"camera_path[{i}]: "
            try:
                m = torch.as_tensor(c.get("camera_to_world"), dtype=torch.float32) if isinstance(c, dict) else None
            except (TypeError, ValueError):
                m = None
            if m is None or m.numel() not in (12, 16) or not torch.isfinite(m).all():
                raise ValueError(f"{p}: {where}camera_to_world must be 16 finite numbers (row-major 4x4)")
            m = m.reshape(-1, 4)
            if m.shape[0] == 3:
                m = torch.cat([m, torch.tensor([[0.0, 0.0, 0.0, 1.0]])])
            mats.append(m)
            if "fov" not in c:
                raise ValueError(f"{p}: {where}fov (vertical field of view in degrees) is missing")
            fovs.append(_positive_float(p, where, "fov", c["fov"], 180.0))
            if aspect is None and c.get("aspect") is not None:
                aspect = _positive_float(p, where, "aspect", c["aspect"])
        fps = doc.get("fps")
        if fps is None and doc.get("seconds"):
            fps = len(cams) / _positive_float(p, "", "seconds", doc["seconds"])
        elif fps is not None:
            fps = _positive_float(p, "", "fps", fps)
        out = {"format": "nerfstudio", "c2w": torch.stack(mats),
               "width": _positive_int(p, doc, "render_width"),
               "height": _positive_int(p, doc, "render_height"), "aspect": aspect, "fps": fps,
               "fov_y_deg": torch.tensor(fovs)}
        times = [c.get("time") for c in cams]
        if all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times):
            bad = [i for i, t in enumerate(times) if not 0.0 <= float(t) <= 1.0]
            if bad:
                raise ValueError(f"{p}: camera_path[{bad[0]}]: time must be a number in [0, 1], got {times[bad[0]]!r}")
            out["times"] = torch.tensor([float(t) for t in times])
        return out
    c2w = _aware3d_frames(p, doc)
    out = {"format": "aware3d", "c2w": c2w, "width": _positive_int(p, doc, "w"),
           "height": _positive_int(p, doc, "h"), "aspect": None,
           "fps": None if doc.get("fps") is None else _positive_float(p, "", "fps", doc["fps"])}
    if doc.get("fl_x") is not None:
        if out["width"] is None or out["height"] is None:
            raise ValueError(f"{p}: fl_x needs the image size it is in pixels of (\"w\" and \"h\")")
        fx = _positive_float(p, "", "fl_x", doc["fl_x"])
        fy = _positive_float(p, "", "fl_y", doc["fl_y"]) if doc.get("fl_y") is not None else fx
        cx = float(doc["cx"]) if doc.get("cx") is not None else out["width"] / 2
        cy = float(doc["cy"]) if doc.get("cy") is not None else out["height"] / 2
        out["focal"] = (fx, fy, cx, cy)
    elif doc.get("camera_angle_x") is not None:
        ax = _positive_float(p, "", "camera_angle_x", doc["camera_angle_x"], math.pi)
        out["fov_x_deg"] = math.degrees(ax)
    return out


def _write_frames(out_dir: Path, rgb) -> Path:
    """RGB frames as ``out_dir/frames/00000.png`` ...; stale numbered PNGs of an earlier render
    into the same folder are removed first, so the folder holds exactly these frames."""
    from ..train import io

    folder = out_dir / "frames"
    if folder.is_dir():
        for f in folder.iterdir():
            if re.fullmatch(r"\d{5,}\.png", f.name) and f.is_file():
                f.unlink()
    for i, img in enumerate(rgb):
        io.save_png(folder / f"{i:05d}.png", img)
    return folder


def render_cameras(run, poses, out_dir, K: torch.Tensor | None = None, width: int | None = None,
                   height: int | None = None, fps: float = 24, progress: bool = True,
                   desc: str = "render", times=None) -> dict:
    """Render every camera of ``poses`` (N, 4, 4) with the run's intrinsics (or ``K``, (3, 3) or
    one per camera (N, 3, 3), at ``width`` x ``height``) and write ``rgb``, ``depth`` and
    ``opacity`` as MP4 and GIF, the RGB frames as ``frames/00000.png`` ... and
    ``frame_000.png``. ``times`` (N,): the moment of each frame (runs of dynamic scenes; default
    the run's ``time``). Returns ``{name: path}``."""
    from tqdm import tqdm

    from ..train import io

    scene = run.scene
    out_dir = Path(out_dir)
    per_view = K is not None and torch.as_tensor(K).dim() == 3
    if per_view and len(K) != len(poses):
        raise ValueError(f"K: expected one (3, 3) matrix per camera ({len(poses)}), got {len(K)}")
    rgb, depth, acc = [], [], []
    for i, c2w in enumerate(tqdm(poses, disable=not progress, desc=desc)):
        kw = {} if times is None else {"time": float(times[i])}
        r = run.render(c2w, K=K[i] if per_view else K, width=width, height=height, **kw)
        rgb.append(r["color"].clamp(0, 1))
        depth.append(torch.as_tensor(io.colorize_depth(r["depth"], scene["near"], scene["far"])))
        acc.append(r["opacity"].clamp(0, 1).unsqueeze(-1).expand(-1, -1, 3))
    files = {}
    for name, seq in (("rgb", rgb), ("depth", depth), ("opacity", acc)):
        stack = torch.stack(seq)
        files[f"{name}_mp4"] = str(io.save_video(out_dir / f"{name}.mp4", stack, fps=fps))
        files[f"{name}_gif"] = str(io.save_video(out_dir / f"{name}.gif", stack, fps=min(fps, 20)))
    files["frames"] = str(_write_frames(out_dir, rgb))
    files["first_frame"] = str(io.save_png(out_dir / "frame_000.png", rgb[0]))
    return files


def _size(run, resolution: int | None):
    W, H = int(run.scene["width"]), int(run.scene["height"])
    if resolution:
        H, W = int(round(H * resolution / W)), int(resolution)
    return W, H


def _frames(frames, default: int, name: str) -> int:
    n = default if frames is None else int(frames)
    if n < 1:
        raise ValueError(f"--frames: {name} needs at least 1 frame, got {frames}")
    return n


def _training_cameras(run, name: str) -> torch.Tensor:
    """The training split's c2w (N, 4, 4), or a clear error naming the dataset and what renders
    without it."""
    try:
        ds = run.load_data("train")
    except Exception as e:  # missing / moved dataset: say what needs it
        data = getattr(run, "saved", {}).get("data", "?")
        raise ValueError(f"render program {name} needs the run's training cameras, read from its dataset "
                         f"{data} ({e}); `turntable` and `path` render without it") from None
    c2w = torch.as_tensor(ds.c2w, dtype=torch.float32)
    if c2w.dim() != 3 or c2w.shape[0] < 1:
        raise ValueError(f"render program {name}: the run's dataset has no training cameras")
    return c2w


def _focus_depth(run) -> float:
    """LLFF's focus depth from the scene's depth range (a weighted harmonic mean of near and
    far): where forward-facing cameras are taken to look when their axes do not meet."""
    near, far = float(run.scene["near"]), float(run.scene["far"])
    if near <= 0 or far <= near:
        return max(far, 1.0)
    return 1.0 / (0.25 / near + 0.75 / far)


def turntable(run, out_dir, frames: int | None = None, resolution: int | None = None,
              progress: bool = True, fps: int = 24) -> dict:
    from ..render.cameras import turntable_path

    W, H = _size(run, resolution)
    poses = turntable_path(_frames(frames, 60, "turntable"), radius=run.scene["orbit_radius"],
                           elevation_deg=max(run.scene["orbit_elevation_deg"], 15.0))
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render turntable")


def orbit_poses(c2w: torch.Tensor, n: int, fallback_depth: float = 1.0) -> torch.Tensor:
    """``n`` poses of the ``orbit`` program for training cameras ``c2w`` (N, 4, 4)."""
    from ..render.cameras import camera_orbit, orbit_path

    o = camera_orbit(c2w, fallback_depth)
    return orbit_path(n, o["center"], o["radius"], o["elevation_deg"], up=o["up"], start=o["start"])


def orbit(run, out_dir, frames: int | None = None, resolution: int | None = None,
          progress: bool = True, fps: int = 24) -> dict:
    W, H = _size(run, resolution)
    poses = orbit_poses(_training_cameras(run, "orbit"), _frames(frames, 120, "orbit"), _focus_depth(run))
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render orbit")


def training_path(run, out_dir, frames: int | None = None, resolution: int | None = None,
                  order: str = "auto", progress: bool = True, fps: int = 24) -> dict:
    from ..render.cameras import smooth_path

    W, H = _size(run, resolution)
    poses, _ = smooth_path(_training_cameras(run, "training-path"), _frames(frames, 120, "training-path"),
                           order=order)
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render training-path")


def spiral_poses(c2w: torch.Tensor, n: int, fallback_depth: float = 1.0, rots: float = 2.0) -> torch.Tensor:
    """``n`` poses of the ``spiral`` program for training cameras ``c2w`` (N, 4, 4): LLFF's
    spiral when the cameras face one way (their mean viewing direction has length > 0.9), else
    ``rots`` turns about the centre of interest at the cameras' mean distance while the
    elevation goes from the low end of theirs (10th percentile, at least 10 degrees below the
    mean) to the high end (90th, at least 10 above) and back."""
    from ..render.cameras import camera_orbit, focus_point, llff_spiral_path, orbit_path

    fwd = -c2w[:, :3, 2]
    fwd = fwd / fwd.norm(dim=-1, keepdim=True)
    if float(fwd.mean(0).norm()) > 0.9:
        return llff_spiral_path(c2w, n, focus_point(c2w, fallback_depth), rots=rots)
    o = camera_orbit(c2w, fallback_depth)
    el = o["elevations_deg"].double()
    lo = min(float(torch.quantile(el, 0.1)), o["elevation_deg"] - 10.0)
    hi = max(float(torch.quantile(el, 0.9)), o["elevation_deg"] + 10.0)
    lo, hi = max(lo, -85.0), min(hi, 85.0)
    s = torch.arange(n, dtype=torch.float64) / max(n, 1)
    elev = lo + (hi - lo) * 0.5 * (1 - torch.cos(2 * math.pi * s))
    return orbit_path(n, o["center"], o["radius"], elev, up=o["up"], start=o["start"], turns=rots)


def spiral(run, out_dir, frames: int | None = None, resolution: int | None = None, rots: float = 2.0,
           progress: bool = True, fps: int = 24) -> dict:
    W, H = _size(run, resolution)
    poses = spiral_poses(_training_cameras(run, "spiral"), _frames(frames, 120, "spiral"),
                         _focus_depth(run), rots=rots)
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render spiral")


def interpolate(run, out_dir, a: int = 0, b: int = -1, frames: int | None = None,
                resolution: int | None = None, progress: bool = True, fps: int = 24) -> dict:
    from ..render.cameras import interpolate_poses

    c2w = _training_cameras(run, "interpolate")
    n = len(c2w)
    for key, v in (("a", a), ("b", b)):
        if isinstance(v, bool) or int(v) != v or not -n <= int(v) < n:
            raise ValueError(f"--{key}: expected a training camera index in [{-n}, {n - 1}], got {v!r}")
    W, H = _size(run, resolution)
    poses = interpolate_poses(c2w[int(a)], c2w[int(b)], _frames(frames, 60, "interpolate"))
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render interpolate")


def test_views(run, out_dir, frames: int | None = None, resolution: int | None = None,
               progress: bool = True, fps: int = 24) -> dict:
    try:
        test = run.load_data("test")
    except Exception:  # single-split formats: the training cameras
        test = run.load_data("train")
    W, H = _size(run, resolution)
    poses = test.c2w[: frames or len(test)]
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render test-views")


def _path_size(run, info: dict, resolution: int | None) -> tuple[int, int]:
    """The image size of a camera path: the file's (w x h, render_width x render_height; one of
    them alone keeps the aspect of the file's ``aspect`` or of the training images), the training
    size when the file has none, then scaled to ``resolution`` pixels wide if given."""
    tw, th = int(run.scene["width"]), int(run.scene["height"])
    aspect = info.get("aspect") or tw / th
    w, h = info.get("width"), info.get("height")
    if w is None and h is None:
        w = tw
        h = th if info.get("aspect") is None else max(1, int(round(tw / aspect)))
    elif h is None:
        h = max(1, int(round(w / aspect)))
    elif w is None:
        w = max(1, int(round(h * aspect)))
    if resolution:
        h, w = max(1, int(round(h * resolution / w))), int(resolution)
    return int(w), int(h)


def _path_intrinsics(run, info: dict, W: int, H: int) -> torch.Tensor:
    from ..render.cameras import intrinsics, intrinsics_from_fov

    if "fov_y_deg" in info:  # nerfstudio: f = (H / 2) / tan(fov / 2), principal point at the centre
        f = 0.5 * H / torch.tan(torch.deg2rad(info["fov_y_deg"].double()) / 2)
        return intrinsics(f, f, torch.full_like(f, W / 2), torch.full_like(f, H / 2))
    if "focal" in info:
        fx, fy, cx, cy = info["focal"]
        sx, sy = W / info["width"], H / info["height"]
        return intrinsics(fx * sx, fy * sy, cx * sx, cy * sy)
    if "fov_x_deg" in info:
        return intrinsics_from_fov(info["fov_x_deg"], W, H)
    K = run.intrinsics(W).clone()  # the training camera at this width; principal point follows H
    K[1, 2] = float(run.scene["K"][1][2]) * H / int(run.scene["height"])
    return K


def camera_path(run, out_dir, path=None, frames: int | None = None, resolution: int | None = None,
                progress: bool = True, fps: int = 24) -> dict:
    if not path:
        raise ValueError("--program path needs a camera path JSON file: aware3d render RUN --program path FILE.json")
    info = read_camera_path(path)
    poses = info["c2w"]
    W, H = _path_size(run, info, resolution)
    K = _path_intrinsics(run, info, W, H)
    times = info.get("times") if getattr(getattr(run, "model", None), "uses_times", False) else None
    if frames:
        poses = poses[:frames]
        K = K[:frames] if K.dim() == 3 else K
        times = times[:frames] if times is not None else None
    return render_cameras(run, poses, out_dir, K=K, width=W, height=H, fps=info["fps"] or fps,
                          progress=progress, desc="render path", times=times)


PROGRAMS = (
    Program("turntable", "a circle of cameras around the world origin at the training cameras' distance "
                         "(needs no dataset)", turntable),
    Program("orbit", "a circle around the point the training cameras look at, at their mean distance, "
                     "elevation and up", orbit),
    Program("training-path", "a smooth path through the training cameras (spline positions, slerp "
                             "rotations; --frames, default 120)", training_path),
    Program("spiral", "a spiral around the point the training cameras look at (LLFF's for "
                      "forward-facing captures)", spiral),
    Program("interpolate", "from one training camera to another (the first to the last; Python: a=, b= "
                           "camera indices)", interpolate),
    Program("test-views", "the dataset's test cameras, one frame each", test_views),
    Program("path", "a camera path JSON file (aware3d or nerfstudio camera_path.json): "
                    "aware3d render RUN --program path FILE.json", camera_path),
)
