"""Camera programs of a radiance-field run (nerf, ngp, nerfw): each renders RGB, depth and opacity
videos (MP4 + GIF) and a first-frame PNG under ``out_dir``.

- ``turntable``: a circle of cameras around the scene at the training cameras' mean distance and
  elevation (at least 15 degrees);
- ``test-views``: the cameras of the dataset's test split (the training split for single-split
  formats);
- ``path``: a camera path file, ``{"frames": [{"transform_matrix": 4x4}, ...]}`` (OpenGL
  camera-to-world, as in Blender transforms files) with optional ``camera_angle_x`` and ``fps``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from . import Program


def camera_path_from_json(path) -> tuple[torch.Tensor, dict]:
    """Camera path file: {"frames": [{"transform_matrix": 4x4}, ...], optional "camera_angle_x",
    "w", "h", "fps"} (OpenGL c2w, as in Blender transforms files). Returns ``(c2w (N, 4, 4), doc)``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: camera path file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not frames:
        raise ValueError(f"{p}: expected {{\"frames\": [{{\"transform_matrix\": 4x4}}, ...]}}")
    mats = []
    for i, f in enumerate(frames):
        m = torch.as_tensor(f.get("transform_matrix"), dtype=torch.float32) if isinstance(f, dict) else None
        if m is None or m.shape != (4, 4) or not torch.isfinite(m).all():
            raise ValueError(f"{p}: frame {i}: transform_matrix must be a finite 4x4 matrix")
        mats.append(m)
    return torch.stack(mats), doc


def render_cameras(run, poses, out_dir, K: torch.Tensor | None = None, width: int | None = None,
                   height: int | None = None, fps: int = 24, progress: bool = True,
                   desc: str = "render") -> dict:
    """Render every camera of ``poses`` (N, 4, 4) with the run's intrinsics (or ``K`` at
    ``width`` x ``height``) and write ``rgb``, ``depth`` and ``opacity`` as MP4 and GIF, plus
    ``frame_000.png``. Returns ``{name: path}``."""
    from tqdm import tqdm

    from ..train import io

    scene = run.scene
    out_dir = Path(out_dir)
    rgb, depth, acc = [], [], []
    for c2w in tqdm(poses, disable=not progress, desc=desc):
        r = run.render(c2w, K=K, width=width, height=height)
        rgb.append(r["color"].clamp(0, 1))
        depth.append(torch.as_tensor(io.colorize_depth(r["depth"], scene["near"], scene["far"])))
        acc.append(r["opacity"].clamp(0, 1).unsqueeze(-1).expand(-1, -1, 3))
    files = {}
    for name, seq in (("rgb", rgb), ("depth", depth), ("opacity", acc)):
        stack = torch.stack(seq)
        files[f"{name}_mp4"] = str(io.save_video(out_dir / f"{name}.mp4", stack, fps=fps))
        files[f"{name}_gif"] = str(io.save_video(out_dir / f"{name}.gif", stack, fps=min(fps, 20)))
    files["first_frame"] = str(io.save_png(out_dir / "frame_000.png", rgb[0]))
    return files


def _size(run, resolution: int | None):
    W, H = int(run.scene["width"]), int(run.scene["height"])
    if resolution:
        H, W = int(round(H * resolution / W)), int(resolution)
    return W, H


def turntable(run, out_dir, frames: int | None = None, resolution: int | None = None,
              progress: bool = True, fps: int = 24) -> dict:
    from ..render.cameras import turntable_path

    W, H = _size(run, resolution)
    poses = turntable_path(frames or 60, radius=run.scene["orbit_radius"],
                           elevation_deg=max(run.scene["orbit_elevation_deg"], 15.0))
    return render_cameras(run, poses, out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render turntable")


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


def camera_path(run, out_dir, path=None, frames: int | None = None, resolution: int | None = None,
                progress: bool = True, fps: int = 24) -> dict:
    from ..render.cameras import intrinsics_from_fov

    if not path:
        raise ValueError("--program path needs a camera path JSON file: aware3d render RUN --program path FILE.json")
    poses, doc = camera_path_from_json(path)
    if frames:
        poses = poses[:frames]
    W, H = _size(run, resolution)
    K = run.intrinsics(W)
    if "camera_angle_x" in doc:
        K = intrinsics_from_fov(math.degrees(float(doc["camera_angle_x"])), W, H)
    return render_cameras(run, poses, out_dir, K=K, width=W, height=H, fps=int(doc.get("fps", fps)),
                          progress=progress, desc="render path")


PROGRAMS = (
    Program("turntable", "a circle of cameras around the scene (RGB, depth, opacity videos)", turntable),
    Program("test-views", "the dataset's test cameras, one frame each", test_views),
    Program("path", "a camera path JSON file: aware3d render RUN --program path FILE.json", camera_path),
)
