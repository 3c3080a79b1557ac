"""What the viewer does, without the web page: camera conversions, progressive rendering of a
radiance field, the controls of a 3D-aware GAN, the camera-path editor and the hooks that let a
training loop be watched, paused and checkpointed. :mod:`aware3d.viewer.app` puts these on a viser
page; tests drive them directly.

Cameras: viser reports a camera as an OpenCV camera-to-world (quaternion ``wxyz`` and ``position``;
+z looks forward, +y points down) with a vertical field of view in radians; aware3d renders OpenGL
camera-to-world matrices (+z backwards, +y up): :func:`viser_to_c2w` / :func:`c2w_to_viser`.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from ..methods.base import truncate_latents as truncate  # noqa: F401  (re-exported)
from ..render.cameras import (
    intrinsics,
    matrix_to_quaternion,
    quaternion_to_matrix,
    rotation_z,
    smooth_path,
)

_FLIP = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))


def viser_to_c2w(wxyz, position) -> torch.Tensor:
    """OpenGL camera-to-world (4, 4) float32 of a viser camera (OpenCV axes)."""
    R = quaternion_to_matrix(torch.as_tensor(np.asarray(wxyz, dtype=np.float64)))
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = R
    m[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float64))
    return (m @ _FLIP).float()


def c2w_to_viser(c2w) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz (4,), position (3,)) of the viser camera (OpenCV axes) for an OpenGL c2w (4, 4)."""
    m = torch.as_tensor(c2w, dtype=torch.float64).reshape(-1, 4)
    m = torch.cat([m[:3], torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)]) @ _FLIP
    return matrix_to_quaternion(m[:3, :3]).numpy(), m[:3, 3].numpy()


def frame_size(aspect: float, max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side ``max_side`` and the given width / height aspect."""
    aspect = float(aspect) if aspect and math.isfinite(aspect) and aspect > 0 else 1.0
    if aspect >= 1:
        return int(max_side), max(1, int(round(max_side / aspect)))
    return max(1, int(round(max_side * aspect))), int(max_side)


def camera_K(fov_y: float, width: int, height: int) -> torch.Tensor:
    """Pinhole K (3, 3) of a vertical field of view ``fov_y`` (radians) at width x height."""
    f = 0.5 * height / math.tan(0.5 * float(fov_y))
    return intrinsics(f, f, width / 2.0, height / 2.0)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8 numpy."""
    return (img.detach().float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Radiance fields


@dataclasses.dataclass
class View:
    """A camera to render: OpenGL c2w (4, 4), vertical fov (radians), width / height aspect."""

    c2w: torch.Tensor
    fov_y: float
    aspect: float


class FieldView:
    """Renders a radiance-field run (:class:`~aware3d.methods.base.FieldRun`) for the viewer.

    ``outputs``: what can be shown (``rgb``, ``depth``, ``opacity``; NeRF-W runs add ``static``,
    ``transient`` and ``uncertainty``). ``appearance``: NeRF-W's appearance embedding (a training
    image's index, or None for the mean). ``has_time``: the run is of a dynamic scene (dnerf /
    tnerf: its model takes each ray's time); ``time`` in [0, 1] is the moment rendered (default
    the run's). ``lock``: held while the model renders (a training loop holds it while it steps)."""

    def __init__(self, run, lock: threading.Lock | None = None):
        self.run = run
        self.lock = lock or threading.Lock()
        model = run.model
        self.is_nerfw = hasattr(model, "appearance_codes")
        self.outputs = ("rgb", "depth", "opacity") + (("static", "transient", "uncertainty") if self.is_nerfw else ())
        self.output = "rgb"
        self.appearance: int | None = None
        self.n_appearance = int(model.appearance_codes.num_embeddings) if (
            self.is_nerfw and getattr(model, "appearance_codes", None) is not None) else 0
        self.has_time = bool(getattr(model, "uses_times", False))
        self.time = float(getattr(run, "time", 0.0) or 0.0)

    def set_time(self, t: float) -> None:
        t = float(t)
        if not (self.has_time and 0.0 <= t <= 1.0):
            raise ValueError(f"time: {'expected a number in [0, 1], got ' + str(t) if self.has_time else 'the run is of a static scene'}")
        self.time = t

    @torch.no_grad()
    def render(self, view: View, max_side: int) -> np.ndarray:
        """uint8 (H, W, 3) image of ``view`` whose longer side is ``max_side`` pixels."""
        from ..train import io

        W, H = frame_size(view.aspect, max_side)
        K = camera_K(view.fov_y, W, H)
        with self.lock:
            model = self.run.model
            was_training = model.training
            model.eval()
            try:
                out = self._render(K, view.c2w, W, H)
            finally:
                model.train(was_training)
        mode = self.output
        if mode == "depth" and "depth" in out:
            scene = self.run.scene
            return to_uint8(torch.as_tensor(io.colorize_depth(out["depth"], scene["near"], scene["far"])))
        if mode in ("opacity", "uncertainty"):
            key = mode if mode in out else "opacity"
            v = out[key].float()
            if mode == "uncertainty":
                v = v / v.max().clamp_min(1e-6)
            return to_uint8(v[..., None].expand(*v.shape, 3))
        key = {"rgb": "color", "static": "color_static", "transient": "color_transient"}[mode]
        return to_uint8(out.get(key, out["color"]))

    def _render(self, K, c2w, W, H) -> dict:
        if not self.is_nerfw:
            kw = {"time": self.time} if self.has_time else {}
            return self.run.render(c2w, K=K, width=W, height=H, **kw)
        # NeRF-W: the mean appearance, or one training image's embeddings (appearance and
        # transient: the transient / uncertainty outputs need an image)
        from ..render.cameras import image_rays

        model = self.run.model
        dev = next(model.parameters()).device
        o, d = image_rays(K.to(dev), c2w.to(dev).float(), W, H)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        image_id = self.appearance
        if image_id is None and self.output in ("transient", "uncertainty"):
            image_id = 0
        codes = getattr(model, "appearance_codes", None)
        outs: dict = {}
        for i in range(0, o.shape[0], 8192):
            kw = {}
            n = min(8192, o.shape[0] - i)
            if image_id is not None and codes is not None:
                kw["image_ids"] = torch.full((n,), int(image_id) % codes.num_embeddings, dtype=torch.long, device=dev)
            elif codes is not None:
                kw["appearance"] = codes.weight.detach().mean(0)
            r = model(o[i:i + n], d[i:i + n], training=False, **kw)
            for k, v in r.items():
                if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == n:
                    outs.setdefault(k, []).append(v.float())
        res = {k: torch.cat(v).reshape(H, W, *v[0].shape[1:]).cpu() for k, v in outs.items()}
        if "color_transient" in res and "opacity_transient" in res:
            bg = torch.as_tensor(self.run.scene["background"], dtype=torch.float32)
            res["color_transient"] = res["color_transient"] + (1 - res["opacity_transient"]).unsqueeze(-1) * bg
        if "beta" in res:
            res["uncertainty"] = res["beta"]
        return res


class ProgressiveRenderer:
    """Renders the latest camera of one client: a coarse frame (``coarse`` pixels on the longer
    side) as soon as the camera moves, the refined one (``refined`` pixels) once it has been still
    for ``settle`` seconds. ``publish(image, info)`` receives each frame. :meth:`serve` renders at
    most one frame per call (a training loop calls it between steps); :meth:`start` runs it in a
    thread of its own (the UI never waits on a render)."""

    def __init__(self, render: Callable[[View, int], np.ndarray], publish: Callable[[np.ndarray, dict], Any],
                 coarse: int = 96, refined: int = 256, settle: float = 0.15):
        self.render_fn, self.publish = render, publish
        self.coarse, self.refined, self.settle = int(coarse), int(refined), float(settle)
        self._view: View | None = None
        self._moved_at = 0.0
        self._done = "refined"  # what the latest view already has: "", "coarse" or "refined"
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.last_seconds = {"coarse": None, "refined": None}

    def set_view(self, view: View) -> None:
        with self._cv:
            self._view, self._moved_at, self._done = view, time.monotonic(), ""
            self._cv.notify_all()

    def motion(self) -> None:
        """The current view changes without the camera moving (time plays): coarse frames while
        it goes on, the refined one once it stops, as for a moving camera."""
        with self._cv:
            if self._view is not None:
                self._moved_at, self._done = time.monotonic(), ""
                self._cv.notify_all()

    def invalidate(self) -> None:
        """Render the current view again (the field or the output changed)."""
        with self._cv:
            if self._view is not None:
                self._done = ""
                self._moved_at = time.monotonic() - self.settle  # no motion: refine straight away
                self._cv.notify_all()

    def pending(self) -> str | None:
        """``"coarse"``, ``"refined"`` or None: what :meth:`serve` would render now."""
        with self._cv:
            if self._view is None or self._done == "refined":
                return None
            still = time.monotonic() - self._moved_at >= self.settle
            if still:
                return "refined"
            return "coarse" if self._done == "" else None

    def serve(self) -> str | None:
        """Render the pending frame, if any; returns which one it rendered."""
        kind = self.pending()
        if kind is None:
            return None
        with self._cv:
            view, moved_at = self._view, self._moved_at
        t0 = time.perf_counter()
        img = self.render_fn(view, self.coarse if kind == "coarse" else self.refined)
        dt = time.perf_counter() - t0
        self.last_seconds[kind] = dt
        with self._cv:
            if self._moved_at == moved_at:  # the camera did not move meanwhile
                self._done = kind
        self.publish(img, {"kind": kind, "seconds": dt, "width": img.shape[1], "height": img.shape[0]})
        return kind

    def start(self) -> "ProgressiveRenderer":
        def loop():
            while not self._stop:
                if self.serve() is None:
                    with self._cv:
                        self._cv.wait(timeout=0.05)
        self._thread = threading.Thread(target=loop, name="aware3d-viewer-render", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --------------------------------------------------------------------------------------------------
# 3D-aware GANs


class GanControls:
    """The controls of a GAN run (:class:`~aware3d.methods.base.GenerativeRun`) and the image they
    give. Every method: ``seed``, truncation ``psi``, the camera's ``yaw`` / ``pitch`` (degrees;
    GIRAFFE: azimuth / elevation), and interpolation of each latent group towards ``seed_b``
    (``mix[group]`` in [0, 1]). GIRAFFE adds per-object ``objects[k]`` = {translation (3,),
    rotation (degrees about z), scale (a factor)}, adding / removing objects and the background."""

    def __init__(self, run, lock: threading.Lock | None = None):
        self.run = run
        self.gan = run.gan
        self.lock = lock or threading.Lock()
        self.is_giraffe = hasattr(self.gan, "sample_object_poses")
        groups = getattr(self.gan, "latent_groups", None)
        if not groups and self.is_giraffe:
            groups = {"shape": ["z_shape_obj", "z_shape_bg"], "appearance": ["z_app_obj", "z_app_bg"]}
        self.latent_groups: dict = dict(groups or {})
        self.seed, self.seed_b, self.psi = 0, 1, 1.0
        self.mix = {g: 0.0 for g in self.latent_groups}
        self.background = True
        if self.is_giraffe:
            cfg = self.gan.cfg
            lo, hi = cfg.elevation_range if hasattr(cfg, "elevation_range") else (0.0, 0.0)
            self.ranges = {"yaw": (-180.0, 180.0, 0.0), "pitch": (min(lo, hi) - 30, max(lo, hi) + 30, 0.5 * (lo + hi))}
        else:
            self.ranges = {k: tuple(float(x) for x in v) for k, v in self.gan.angle_ranges().items()}
        self.yaw, self.pitch = self.ranges["yaw"][2], self.ranges["pitch"][2]
        self.objects: list[dict] = []
        self._extra: list[dict] = []  # added objects: their latents and poses (one sample each)
        self.reset_objects()

    # -- the scene -------------------------------------------------------------------------------
    def reset_objects(self) -> None:
        """Objects as the seed draws them (GIRAFFE)."""
        self._extra = []
        if not self.is_giraffe:
            return
        x = self.run.sample(self.seed)
        K = x["obj_translation"].shape[1]
        self.objects = [{"translation": x["obj_translation"][0, k].tolist(), "rotation": self._angle(x["obj_rotation"][0, k]),
                         "scale": 1.0, "base_scale": x["obj_scale"][0, k].tolist()} for k in range(K)]

    @staticmethod
    def _angle(R: torch.Tensor) -> float:
        return float(torch.rad2deg(torch.atan2(R[1, 0], R[0, 0])))

    def add_object(self, seed: int | None = None) -> int:
        """Add an object drawn from ``seed`` (default: a new one); returns its index."""
        if not self.is_giraffe:
            raise ValueError(f"{self.run.method.name} scenes have no objects to add")
        s = int(seed if seed is not None else 1000 + len(self.objects))
        g = torch.Generator().manual_seed(s)
        lat = self.gan.sample_latents(1, g, n_objects=1)
        sc, t, R = self.gan.sample_object_poses(1, g, n_objects=1)
        self._extra.append({"z_shape_obj": lat["z_shape_obj"], "z_app_obj": lat["z_app_obj"]})
        self.objects.append({"translation": t[0, 0].tolist(), "rotation": self._angle(R[0, 0]), "scale": 1.0,
                             "base_scale": sc[0, 0].tolist(), "extra": len(self._extra) - 1})
        return len(self.objects) - 1

    def remove_object(self, k: int) -> None:
        if not 0 <= k < len(self.objects):
            raise ValueError(f"object {k}: expected 0..{len(self.objects) - 1}")
        self.objects.pop(k)

    def inputs(self) -> dict:
        """The generator inputs of the current controls (one sample)."""
        x = self.run.sample(self.seed)
        if any(v > 0 for v in self.mix.values()):
            from ..programs.gan import _slerp_or_lerp

            other = self.run.sample(self.seed_b)
            for g, w in self.mix.items():
                for key in self.latent_groups.get(g, ()):
                    if w > 0 and key in x and x[key].shape == other[key].shape:
                        x[key] = _slerp_or_lerp(x[key], other[key], float(w))
        x = self._truncate(x)
        if self.is_giraffe:
            x = self._giraffe_scene(x)
        else:
            x["c2w"] = self.gan.camera_from_angles(torch.tensor([float(self.yaw)]), torch.tensor([float(self.pitch)]))
        return x

    def _truncate(self, x: dict) -> dict:
        if self.psi == 1.0:
            return x
        with self.lock:
            return self.run.truncate(x, self.psi)

    def _giraffe_scene(self, x: dict) -> dict:
        zs, za, s, t, R = [], [], [], [], []
        for o in self.objects:
            if "extra" in o:
                e = self._extra[o["extra"]]
                zs.append(e["z_shape_obj"][0, 0]); za.append(e["z_app_obj"][0, 0])
            else:
                k = self.objects_seeded_index(o)
                zs.append(x["z_shape_obj"][0, k]); za.append(x["z_app_obj"][0, k])
            s.append(torch.tensor(o["base_scale"]) * float(o["scale"]))
            t.append(torch.tensor(o["translation"], dtype=torch.float32))
            R.append(rotation_z(torch.tensor(float(o["rotation"]))))
        K = len(self.objects)
        zd = x["z_shape_obj"].shape[-1]
        x["z_shape_obj"] = torch.stack(zs)[None] if K else torch.zeros(1, 0, zd)
        x["z_app_obj"] = torch.stack(za)[None] if K else torch.zeros(1, 0, zd)
        x["obj_scale"] = torch.stack(s)[None].float() if K else torch.zeros(1, 0, 3)
        x["obj_translation"] = torch.stack(t)[None] if K else torch.zeros(1, 0, 3)
        x["obj_rotation"] = torch.stack(R)[None].float() if K else torch.zeros(1, 0, 3, 3)
        x["c2w"] = self.gan.camera_pose(torch.tensor([float(self.pitch)]), torch.tensor([float(self.yaw)]))
        return x

    def objects_seeded_index(self, o: dict) -> int:
        """Index of a seed-drawn object in the seed's sample (objects keep their draw order)."""
        seeded = [p for p in self.objects if "extra" not in p]
        return seeded.index(o) if o in seeded else 0

    @torch.no_grad()
    def image(self) -> np.ndarray:
        """uint8 (H, W, 3) of the current controls."""
        x = self.inputs()
        controls = {"background": self.background} if self.is_giraffe else {}
        with self.lock:
            out = self.run.render(x, **controls)
        return to_uint8(out["color"][0])

    def export_mesh(self, out) -> dict:
        """The current seed's mesh (where the method has one)."""
        opts = {"object_index": 0} if self.is_giraffe else {}
        with self.lock:
            return self.run.export_mesh(out, seed=self.seed, **opts)


# --------------------------------------------------------------------------------------------------
# Camera paths


class CameraPath:
    """Keyframes (OpenGL c2w, vertical fov in degrees) and the camera_path.json they give: the
    path passes through every keyframe in order (spline positions, slerp rotations, fov linear),
    ``seconds * fps`` frames, in nerfstudio's format (``aware3d render RUN --path FILE`` plays it).
    Runs of dynamic scenes: each keyframe also records a ``time`` in [0, 1] (``times``, None where
    a keyframe has none); the path interpolates it linearly like the fov and writes each frame's
    ``time``."""

    def __init__(self):
        self.keyframes: list[tuple[torch.Tensor, float]] = []
        self.times: list[float | None] = []

    def add(self, c2w, fov_deg: float, time: float | None = None) -> int:
        if time is not None and not 0.0 <= float(time) <= 1.0:
            raise ValueError(f"keyframe time: expected a number in [0, 1], got {time}")
        self.keyframes.append((torch.as_tensor(c2w, dtype=torch.float32).reshape(4, 4).clone(), float(fov_deg)))
        self.times.append(None if time is None else float(time))
        return len(self.keyframes) - 1

    def clear(self) -> None:
        self.keyframes.clear()
        self.times.clear()

    def has_times(self) -> bool:
        return bool(self.times) and all(t is not None for t in self.times)

    def load(self, path, max_keyframes: int = 12) -> dict:
        """Replace the keyframes with those of a camera path file: a path this editor saved keeps
        its keyframes; any other file ``aware3d render --path`` reads (nerfstudio's camera_path.json,
        aware3d's frames) gives up to ``max_keyframes`` of its cameras, evenly spaced. Returns the
        file's size / fps / seconds (None where it has none)."""
        import json as _json
        from pathlib import Path as _Path

        from ..programs.field import read_camera_path

        info = read_camera_path(path)  # validates the file, naming what is wrong
        doc = _json.loads(_Path(path).read_text())
        keys: list[tuple[torch.Tensor, float]] = []
        times: list[float | None] = []
        if isinstance(doc, dict) and doc.get("generator") == "aware3d viewer" and doc.get("keyframes"):
            for k in doc["keyframes"]:
                keys.append((torch.tensor(k["matrix"], dtype=torch.float32).reshape(4, 4), float(k["fov"])))
                times.append(float(k["time"]) if k.get("time") is not None else None)
        else:
            c2w = info["c2w"]
            idx = np.unique(np.linspace(0, len(c2w) - 1, min(len(c2w), max_keyframes)).round().astype(int))
            fov = info.get("fov_y_deg")
            ft = info.get("times")
            for i in idx:
                f = float(fov[i]) if fov is not None else float(info.get("fov_x_deg") or 50.0)
                keys.append((c2w[i].float(), f))
                times.append(float(ft[i]) if ft is not None else None)
        self.keyframes, self.times = keys, times
        n = len(info["c2w"])
        seconds = doc.get("seconds") if isinstance(doc, dict) else None
        return {"width": info.get("width"), "height": info.get("height"), "fps": info.get("fps"),
                "seconds": seconds or (n / info["fps"] if info.get("fps") else None)}

    def frames(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(c2w (n, 4, 4), fov_deg (n,)) along the path."""
        poses, fovs, _ = self.frames_and_times(n)
        return poses, fovs

    def frames_and_times(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(c2w (n, 4, 4), fov_deg (n,), time (n,) or None when some keyframe has no time)."""
        if not self.keyframes:
            raise ValueError("the camera path has no keyframes: add at least one")
        c2w = torch.stack([k for k, _ in self.keyframes])
        fov = torch.tensor([f for _, f in self.keyframes], dtype=torch.float64)
        tk = torch.tensor(self.times, dtype=torch.float64) if self.has_times() else None
        poses, key = smooth_path(c2w, int(n), order="dataset")

        def along(v: torch.Tensor) -> torch.Tensor:
            if len(self.keyframes) == 1 or (key < 0).any():
                return torch.full((int(n),), float(v.mean()))
            return torch.from_numpy(np.interp(np.arange(int(n)), key.numpy(), v.numpy())).float()
        return poses, along(fov), (along(tk) if tk is not None else None)

    def to_json(self, seconds: float = 4.0, fps: float = 24.0, width: int = 640, height: int = 480) -> dict:
        for name, v in (("seconds", seconds), ("fps", fps), ("width", width), ("height", height)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"camera path {name}: expected a positive number, got {v!r}")
        n = max(1, int(round(seconds * fps)))
        poses, fovs, times = self.frames_and_times(n)
        keys = [{"matrix": k.flatten().tolist(), "fov": f} for k, f in self.keyframes]
        cams = [{"camera_to_world": p.flatten().tolist(), "fov": float(f), "aspect": width / height}
                for p, f in zip(poses, fovs)]
        if times is not None:  # a dynamic scene's path: the moment of each keyframe and frame
            for k, t in zip(keys, self.times):
                k["time"] = t
            for c, t in zip(cams, times):
                c["time"] = min(max(float(t), 0.0), 1.0)
        return {"camera_type": "perspective", "render_width": int(width), "render_height": int(height),
                "fps": float(fps), "seconds": float(seconds), "generator": "aware3d viewer",
                "keyframes": keys, "camera_path": cams}


# --------------------------------------------------------------------------------------------------
# Training


class TrainingMonitor:
    """What a training loop shares with the viewer: the latest step and scalars, pause / resume,
    "save a checkpoint now", and the lock the model is rendered under. The loop calls
    :meth:`after_step` after each step (outside its clock); while paused it waits there, serving
    the viewer's renders."""

    def __init__(self):
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self.step = 0
        self.scalars: dict = {}
        self.history: list[tuple[int, float, float, float]] = []  # (step, loss, psnr, loss_D)
        self._save = threading.Event()
        self.saved_steps: list[int] = []
        self.serve: Callable[[], Any] | None = None   # renders one pending frame (the viewer sets it)
        self.on_update: Callable[[], Any] | None = None
        self.render_every = 0.5  # seconds between live frames while training runs

    def request_checkpoint(self) -> None:
        self._save.set()

    def plot_series(self, max_points: int = 400) -> dict[str, np.ndarray]:
        """The curves of the training plot: ``step`` and ``loss``, then ``psnr`` (radiance fields) or
        ``loss_D`` (GANs: ``loss`` is the generator's), at most ``max_points`` points (every k-th
        step, the latest always in)."""
        h = self.history
        if not h:
            return {"step": np.zeros(0), "loss": np.zeros(0), "psnr": np.zeros(0)}
        k = max(1, math.ceil(len(h) / max_points))
        rows = h[::k]
        if rows[-1] is not h[-1]:
            rows = rows + [h[-1]]
        a = np.asarray(rows, dtype=np.float64)
        third = "loss_D" if np.isfinite(a[:, 3]).any() else "psnr"
        return {"step": a[:, 0], "loss": a[:, 1], third: a[:, 3] if third == "loss_D" else a[:, 2]}

    def after_step(self, step: int, scalars: dict) -> str | None:
        self.step = int(step)
        self.scalars = dict(scalars)
        loss = float(scalars.get("loss", float("nan")))
        psnr = float(scalars.get("psnr", float("nan")))
        self.history.append((self.step, loss, psnr, float(scalars.get("loss_D", float("nan")))))
        if len(self.history) > 4000:  # thin the older half: the plot keeps the whole run
            self.history[:-1000] = self.history[:-1000][::2]
        if self.on_update is not None:
            self.on_update()
        if self.serve is not None:
            self.serve()
        while self.paused.is_set() and not self._save.is_set():
            if self.serve is None or self.serve() is None:
                time.sleep(0.03)
        if self._save.is_set():
            self._save.clear()
            self.saved_steps.append(self.step)
            return "checkpoint"
        return None

    # the two loops' hooks
    def field_hook(self, view_invalidate: Callable[[], Any] | None = None):
        """``on_step(step, model, scalars)`` for :func:`aware3d.train.recon.train`."""
        last = [0.0]

        def hook(step, model, scalars):
            now = time.monotonic()
            if view_invalidate is not None and now - last[0] >= self.render_every:
                last[0] = now
                view_invalidate()
            return self.after_step(step, scalars)
        return hook

    def gan_hook(self, view_invalidate: Callable[[], Any] | None = None):
        """``on_step(engine, scalars)`` for the GAN engine."""
        last = [0.0]

        def hook(engine, scalars):
            now = time.monotonic()
            if view_invalidate is not None and now - last[0] >= self.render_every:
                last[0] = now
                view_invalidate()
            s = {"loss": float(scalars.get("loss_G", float("nan"))), "loss_D": float(scalars.get("loss_D", float("nan")))}
            return self.after_step(engine.step, s)
        return hook
