"""Render programs of dynamic-scene runs (:mod:`aware3d.methods.dnerf`): freeze time and orbit,
fix the camera and play time, and bullet time (the camera circles while time plays). Each writes
what the camera programs write (RGB / depth / opacity MP4 and GIF, PNG frames)."""
from __future__ import annotations

import torch

from . import Program
from .field import _frames, _size, render_cameras


def _check_time(time: float) -> float:
    t = float(time)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"--time: expected a number in [0, 1], got {time}")
    return t


def _circle(run, n: int) -> torch.Tensor:
    from ..render.cameras import turntable_path

    return turntable_path(n, radius=run.scene["orbit_radius"], elevation_deg=max(run.scene["orbit_elevation_deg"], 15.0))


def time_orbit(run, out_dir, frames: int | None = None, resolution: int | None = None, time: float = 0.5,
               progress: bool = True, fps: int = 24) -> dict:
    t = _check_time(time)
    n = _frames(frames, 60, "time-orbit")
    W, H = _size(run, resolution)
    return render_cameras(run, _circle(run, n), out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc=f"render time-orbit at t={t:g}", times=torch.full((n,), t))


def play_time(run, out_dir, frames: int | None = None, resolution: int | None = None, azimuth: float = 30.0,
              progress: bool = True, fps: int = 24) -> dict:
    n = _frames(frames, 60, "play-time")
    W, H = _size(run, resolution)
    pose = run.orbit_camera(azimuth_deg=float(azimuth))
    return render_cameras(run, pose.expand(n, 4, 4), out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render play-time", times=torch.linspace(0, 1, n))


def bullet_time(run, out_dir, frames: int | None = None, resolution: int | None = None,
                progress: bool = True, fps: int = 24) -> dict:
    n = _frames(frames, 90, "bullet-time")
    W, H = _size(run, resolution)
    return render_cameras(run, _circle(run, n), out_dir, K=run.intrinsics(W), width=W, height=H, fps=fps,
                          progress=progress, desc="render bullet-time", times=torch.linspace(0, 1, n))


PROGRAMS = (
    Program("time-orbit", "freeze time (--time, default 0.5) and circle the scene", time_orbit),
    Program("play-time", "a fixed camera while time plays from 0 to 1", play_time),
    Program("bullet-time", "the camera circles the scene while time plays from 0 to 1", bullet_time),
)
