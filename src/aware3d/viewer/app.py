"""The viewer's web page, on viser (``pip install "aware3d[viewer]"``): one page for both halves.

- Radiance fields: the browser's camera is rendered progressively (a coarse frame while it moves,
  the refined one when it stops; the page never waits on a render), with the training cameras as
  frustums showing their images, the scene box, an output switch (RGB / depth / opacity; NeRF-W:
  static / transient / uncertainty and the appearance of any training image), a camera-path editor
  (keyframes from the current view, preview, duration / fps / size, save a camera_path.json that
  ``aware3d render RUN --path FILE`` plays) and, while training, the live step, loss and PSNR (text
  and a plot of both over the steps) with pause / resume and "save checkpoint now". Runs of dynamic
  scenes (dnerf / tnerf) get a time slider in [0, 1] and a play toggle; camera-path keyframes then
  record the moment too.
- GANs: seed, truncation psi, the camera's yaw / pitch, interpolation of each latent group towards
  a second seed; GIRAFFE adds each object's translation, rotation and scale, adding / removing
  objects and the background; buttons save the image (PNG) and export the sample's mesh.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .core import (
    CameraPath,
    FieldView,
    GanControls,
    ProgressiveRenderer,
    TrainingMonitor,
    View,
    c2w_to_viser,
    viser_to_c2w,
)

VIEWER_EXTRA_HINT = 'pip install "aware3d[viewer]"'


def import_viser():
    try:
        import viser
    except ImportError:
        raise ImportError(f"the viewer needs viser: {VIEWER_EXTRA_HINT}") from None
    return viser


def fit_to_aspect(img: np.ndarray, aspect: float, height: int = 512) -> np.ndarray:
    """A GAN sample for a viewport of width / height ``aspect``: enlarged by an integer factor
    (nearest neighbour: the generator's pixels stay sharp) to about ``height`` rows, centred on a
    grey canvas of that aspect (the page stretches the background image to the viewport)."""
    h, w = img.shape[:2]
    k = max(1, height // max(h, 1))
    big = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    H = max(big.shape[0], int(round(big.shape[1] / max(aspect, 1e-3))))
    W = max(big.shape[1], int(round(H * aspect)))
    canvas = np.full((H, W, 3), 235, dtype=np.uint8)
    y, x = (H - big.shape[0]) // 2, (W - big.shape[1]) // 2
    canvas[y:y + big.shape[0], x:x + big.shape[1]] = big
    return canvas


class Viewer:
    """A running viewer of one run (a loaded run object). ``url``; :meth:`stop`. ``monitor``: a
    :class:`~aware3d.viewer.core.TrainingMonitor` when a training loop is being watched (the loop
    then renders the frames between its steps)."""

    def __init__(self, run, host: str = "127.0.0.1", port: int = 7007, monitor: TrainingMonitor | None = None,
                 coarse: int = 96, refined: int = 256, out_dir=None):
        viser = import_viser()
        self.run, self.monitor = run, monitor
        self.kind = run.method.kind
        self.out_dir = Path(out_dir) if out_dir is not None else Path(run.path) / "viewer"
        self.lock = monitor.lock if monitor is not None else threading.Lock()
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self.host, self.port = host, self.server.get_port()
        self.url = f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{self.port}"
        self.frames_published = 0
        self.last_image: np.ndarray | None = None
        self.last_info: dict = {}
        self._renderers: dict[int, ProgressiveRenderer] = {}
        self._stopped = False
        self.coarse, self.refined = int(coarse), int(refined)
        if hasattr(self.server.gui, "configure_theme"):
            self.server.gui.configure_theme(control_width="medium")
        self.server.gui.add_markdown(f"**aware3d** · {run.method.name} · `{Path(run.path).name}`")
        if self.kind == "field":
            self._build_field()
        else:
            self._build_gan()
        if monitor is not None:
            self._build_training()

    # ------------------------------------------------------------------------------------------
    # radiance fields
    def _build_field(self):
        run, gui = self.run, self.server.gui
        self.view = FieldView(run, self.lock)
        self.path = CameraPath()
        scene = run.scene
        aabb = np.asarray(scene["aabb"], dtype=np.float64)
        K0 = np.asarray(scene["K"], dtype=np.float64)
        self.fov_y = float(2 * np.arctan(0.5 * float(scene["height"]) / K0[1, 1]))
        self.aspect = float(scene["width"]) / float(scene["height"])
        self.server.scene.set_up_direction("+z")
        self.server.scene.add_box("/scene_box", color=(200, 120, 40), dimensions=tuple(aabb[3:] - aabb[:3]),
                                  position=tuple(0.5 * (aabb[3:] + aabb[:3])), wireframe=True)
        self._add_training_cameras()
        with gui.add_folder("View"):
            self.g_output = gui.add_dropdown("Output", list(self.view.outputs), initial_value="rgb")
            self.g_refined = gui.add_slider("Resolution", 64, 1024, 32, self.refined,
                                            hint="pixels on the longer side of the refined frame")
            self.g_frustums = gui.add_checkbox("Training cameras", True)
            if self.view.n_appearance:
                self.g_app = gui.add_slider("Appearance", -1, self.view.n_appearance - 1, 1, -1,
                                            hint="-1: the mean embedding; k: training image k's")

                @self.g_app.on_update
                def _(_):
                    v = int(self.g_app.value)
                    self.view.appearance = None if v < 0 else v
                    self._invalidate()
            if self.view.has_time:
                self.g_time = gui.add_slider("Time", 0.0, 1.0, 0.01, self.view.time,
                                             hint="the moment rendered (the scene's time in [0, 1])")
                self.g_play = gui.add_checkbox("Play time", False, hint="time runs from 0 to 1, again and again")
                self.g_play_seconds = gui.add_number("Seconds per loop", 4.0, min=0.5, step=0.5)

                @self.g_time.on_update
                def _(_):
                    self.view.set_time(float(self.g_time.value))
                    for r in list(self._renderers.values()):
                        if self.g_play.value:
                            r.motion()  # coarse frames while time plays, refined when it stops
                        else:
                            r.invalidate()

                threading.Thread(target=self._play_loop, name="aware3d-viewer-time", daemon=True).start()
            self.g_stats = gui.add_markdown("waiting for a browser")

        @self.g_output.on_update
        def _(_):
            self.view.output = self.g_output.value
            self._invalidate()

        @self.g_refined.on_update
        def _(_):
            for r in self._renderers.values():
                r.refined = int(self.g_refined.value)
            self._invalidate()

        @self.g_frustums.on_update
        def _(_):
            for h in self._frustums:
                h.visible = bool(self.g_frustums.value)

        self._build_path_editor()
        self.server.on_client_connect(self._field_client)
        self.server.on_client_disconnect(self._client_gone)

    def set_time(self, t: float) -> None:
        """Move the time slider (dynamic scenes), as a user would."""
        if not self.view.has_time:
            raise ValueError(f"{self.run.method.name} runs have no time to set")
        self.g_time.value = float(t)

    def _play_loop(self, tick: float = 0.1):
        last = time.monotonic()
        while not self._stopped:
            time.sleep(tick)
            now = time.monotonic()
            if self.g_play.value:
                period = max(float(self.g_play_seconds.value or 4.0), 0.1)
                self.g_time.value = round((float(self.g_time.value) + (now - last) / period) % 1.0, 4)
            elif self._was_playing:
                self._invalidate()  # stopped: the refined frame of the moment reached
            self._was_playing = bool(self.g_play.value)
            last = now

    _was_playing = False

    def _add_training_cameras(self, max_cameras: int = 100):
        self._frustums = []
        try:
            ds = self.run.load_data("train")
        except Exception as e:  # the dataset moved: the viewer still renders
            self.server.gui.add_markdown(f"training cameras not shown: {e}")
            return
        n = len(ds)
        idx = np.linspace(0, n - 1, min(n, max_cameras)).round().astype(int)
        radius = float(self.run.scene.get("orbit_radius", 1.0))
        for i in idx:
            wxyz, pos = c2w_to_viser(ds.c2w[i])
            img = (ds.images[i].numpy() * 255).astype(np.uint8)
            step = max(1, max(img.shape[:2]) // 96)
            h = self.server.scene.add_camera_frustum(
                f"/cameras/{i}", fov=float(2 * np.arctan(0.5 * ds.height / float(ds.K[i, 1, 1]))),
                aspect=ds.width / ds.height, scale=0.05 * radius, image=img[::step, ::step], wxyz=wxyz,
                position=pos, color=(60, 120, 220), thickness=1.5, thickness_units="screen")

            def jump(event, i=int(i)):
                if event.client is not None:
                    w, p = c2w_to_viser(ds.c2w[i])
                    with event.client.atomic():
                        event.client.camera.wxyz, event.client.camera.position = w, p
            h.on_click(jump)
            self._frustums.append(h)

    def _field_client(self, client):
        # start a little outside and above the ring of training cameras, looking at the centre,
        # so that no training camera's frustum sits in front of the view
        scene = self.run.scene
        c2w = self.run.orbit_camera(azimuth_deg=30.0,
                                    elevation_deg=min(float(scene.get("orbit_elevation_deg", 20.0)) + 15.0, 75.0),
                                    radius=1.5 * float(scene.get("orbit_radius", 4.0)))
        wxyz, pos = c2w_to_viser(c2w)
        with client.atomic():
            client.camera.fov = self.fov_y
            client.camera.wxyz, client.camera.position = wxyz, pos
            client.camera.look_at = (0.0, 0.0, 0.0)

        def publish(img, info, client=client):
            if self._stopped:
                return
            client.scene.set_background_image(img, format="jpeg", jpeg_quality=90)
            self._published(img, info)

        r = ProgressiveRenderer(self.view.render, publish, coarse=self.coarse, refined=int(self.g_refined.value))
        self._renderers[client.client_id] = r
        if self.monitor is None:
            r.start()

        @client.camera.on_update
        def _(cam):
            r.set_view(View(viser_to_c2w(cam.wxyz, cam.position), float(cam.fov), float(cam.aspect)))

        r.set_view(View(c2w.float(), self.fov_y, self.aspect))

    def _client_gone(self, client):
        r = self._renderers.pop(client.client_id, None)
        if r is not None:
            r.stop()

    def _invalidate(self):
        for r in list(self._renderers.values()):
            r.invalidate()

    def serve_pending(self):
        """Render one pending frame of each client (the training loop calls this between steps)."""
        done = None
        for r in list(self._renderers.values()):
            done = r.serve() or done
        return done

    def _published(self, img, info):
        self.frames_published += 1
        self.last_image, self.last_info = img, info
        if hasattr(self, "g_stats"):
            self.g_stats.content = (f"{info['kind']} frame {info['width']}x{info['height']} in "
                                    f"{info['seconds'] * 1000:.0f} ms")

    def _build_path_editor(self):
        gui = self.server.gui
        with gui.add_folder("Camera path", expand_by_default=False):
            add = gui.add_button("Add keyframe (current view)")
            clear = gui.add_button("Clear keyframes")
            self.g_seconds = gui.add_number("Duration (s)", 4.0, min=0.1, step=0.1)
            self.g_fps = gui.add_number("FPS", 24, min=1, max=120, step=1)
            self.g_width = gui.add_number("Width", 640, min=16, max=4096, step=16)
            self.g_height = gui.add_number("Height", 480, min=16, max=4096, step=16)
            preview = gui.add_button("Preview")
            self.g_path_name = gui.add_text("File name", "camera_path.json",
                                            hint="in RUN/viewer/, or a path to load (nerfstudio camera_path.json too)")
            save = gui.add_button("Save path")
            load = gui.add_button("Load path")
            self.g_path_info = gui.add_markdown("no keyframes")
        self._path_handles: list = []  # the keyframe frustums and spline on the page

        @add.on_click
        def _(event):
            cam = event.client.camera if event.client is not None else None
            if cam is None:
                return
            self.add_keyframe(viser_to_c2w(cam.wxyz, cam.position), float(np.degrees(cam.fov)))

        @clear.on_click
        def _(_):
            self.path.clear()
            self._show_path()

        @preview.on_click
        def _(event):
            if event.client is not None and self.path.keyframes:
                threading.Thread(target=self._preview, args=(event.client,), daemon=True).start()

        @load.on_click
        def _(_):
            try:
                p = self.load_path()
                msg = f"loaded `{p}`: {len(self.path.keyframes)} keyframes"
            except (OSError, ValueError) as e:
                msg = f"not loaded: {e}"
            self.g_path_info.content = msg

        @save.on_click
        def _(event):
            try:
                p = self.save_path()
                msg = f"saved `{p}`: `aware3d render {self.run.path} --program path {p}`"
            except ValueError as e:
                msg = f"not saved: {e}"
            self.g_path_info.content = msg

    def load_path(self, name: str | None = None) -> Path:
        """Load the keyframes of a camera path file (a name in RUN/viewer/ or any path)."""
        name = name or self.g_path_name.value
        p = Path(name)
        if not p.is_file():
            p = self.out_dir / name
        info = self.path.load(p)
        for key, h in (("seconds", self.g_seconds), ("fps", self.g_fps), ("width", self.g_width),
                       ("height", self.g_height)):
            if info.get(key):
                h.value = info[key]
        self._show_path()
        return p

    def add_keyframe(self, c2w, fov_deg: float, time: float | None = None) -> int:
        """Add a keyframe; runs of dynamic scenes record the moment shown (or ``time``)."""
        if time is None and self.view.has_time:
            time = self.view.time
        k = self.path.add(c2w, fov_deg, time if self.view.has_time else None)
        self._show_path()
        return k

    def _show_path(self):
        n = len(self.path.keyframes)
        self.g_path_info.content = f"{n} keyframe{'s' if n != 1 else ''}" + (
            " at times " + ", ".join(f"{t:.2f}" for t in self.path.times) if n and self.path.has_times() else "")
        for h in self._path_handles:  # what the last call drew (the spline too, when keyframes went)
            h.remove()
        self._path_handles = []
        for i, (c2w, fov) in enumerate(self.path.keyframes):
            wxyz, pos = c2w_to_viser(c2w)
            self._path_handles.append(self.server.scene.add_camera_frustum(
                f"/path/key{i}", fov=float(np.radians(fov)), aspect=self.aspect,
                scale=0.1 * float(self.run.scene.get("orbit_radius", 1.0)), wxyz=wxyz, position=pos,
                color=(230, 60, 60)))
        if n >= 2:
            poses, _ = self.path.frames(max(2, 16 * n))
            self._path_handles.append(self.server.scene.add_spline_catmull_rom(
                "/path/spline", points=poses[:, :3, 3].numpy(), color=(230, 60, 60), thickness=0.01))

    def path_json(self) -> dict:
        return self.path.to_json(float(self.g_seconds.value), float(self.g_fps.value), int(self.g_width.value),
                                 int(self.g_height.value))

    def save_path(self, name: str | None = None) -> Path:
        """Write the camera path (RUN/viewer/<name>) and return its file."""
        doc = self.path_json()
        name = Path(name or self.g_path_name.value or "camera_path.json").name
        if not name.endswith(".json"):
            name += ".json"
        out = self.out_dir / name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(out)
        return out

    def _preview(self, client):
        doc = self.path_json()
        dt = 1.0 / float(doc["fps"])
        for cam in doc["camera_path"]:
            c2w = torch.tensor(cam["camera_to_world"], dtype=torch.float32).reshape(4, 4)
            wxyz, pos = c2w_to_viser(c2w)
            if "time" in cam and self.view.has_time:
                self.g_time.value = float(cam["time"])
            with client.atomic():
                client.camera.fov = float(np.radians(cam["fov"]))
                client.camera.wxyz, client.camera.position = wxyz, pos
            time.sleep(dt)

    # ------------------------------------------------------------------------------------------
    # GANs
    def _build_gan(self):
        gui = self.server.gui
        self.controls = c = GanControls(self.run, self.lock)
        self.g = {}
        with gui.add_folder("Sample"):
            self.g["seed"] = gui.add_number("Seed", 0, min=0, step=1)
            self.g["psi"] = gui.add_slider("Truncation psi", 0.0, 1.0, 0.05, 1.0)
            lo, hi, mean = c.ranges["yaw"]
            self.g["yaw"] = gui.add_slider("Yaw" if not c.is_giraffe else "Azimuth", lo, hi, 0.5, mean)
            lo, hi, mean = c.ranges["pitch"]
            self.g["pitch"] = gui.add_slider("Pitch" if not c.is_giraffe else "Elevation", lo, hi, 0.5, mean)
        with gui.add_folder("Interpolate", expand_by_default=False):
            self.g["seed_b"] = gui.add_number("Second seed", 1, min=0, step=1)
            for grp in c.latent_groups:
                self.g[f"mix:{grp}"] = gui.add_slider(f"{grp} -> second seed", 0.0, 1.0, 0.05, 0.0)
        if c.is_giraffe:
            self._build_objects()
        with gui.add_folder("Save"):
            save = gui.add_button("Save image (PNG)")
            mesh = gui.add_button("Export mesh (PLY)", disabled=self.run.method.mesh is None,
                                  hint=None if self.run.method.mesh else self.run.method.no_mesh_reason or None)
            self.g_saved = gui.add_markdown("")
        self.g_stats = gui.add_markdown("")
        for key, h in self.g.items():
            h.on_update(lambda _e, key=key: self._gan_changed(key))

        @save.on_click
        def _(event):
            p = self.save_image()
            self.g_saved.content = f"saved `{p}`"
            if event.client is not None:
                event.client.send_file_download(p.name, p.read_bytes())

        @mesh.on_click
        def _(_):
            try:
                info = self.controls.export_mesh(self.out_dir / f"mesh_seed{self.controls.seed}.ply")
                self.g_saved.content = f"mesh `{info.get('path')}`"
            except Exception as e:  # noqa: BLE001 (shown on the page)
                self.g_saved.content = f"no mesh: {e}"

        self._gan_dirty = threading.Event()
        self._gan_dirty.set()
        if self.monitor is None:
            threading.Thread(target=self._gan_loop, name="aware3d-viewer-gan", daemon=True).start()
        def connect(client):
            # the browser reports its viewport once connected: show the sample at that aspect
            client.camera.on_update(lambda _cam: self._gan_dirty.set())
            self._gan_dirty.set()
        self.server.on_client_connect(connect)

    def _build_objects(self):
        gui, c = self.server.gui, self.controls
        with gui.add_folder("Objects"):
            self.g_obj = gui.add_dropdown("Object", [str(i) for i in range(len(c.objects))] or ["-"])
            self.g_tx = gui.add_slider("x", -1.5, 1.5, 0.01, 0.0)
            self.g_ty = gui.add_slider("y", -1.5, 1.5, 0.01, 0.0)
            self.g_tz = gui.add_slider("z", -1.5, 1.5, 0.01, 0.0)
            self.g_rot = gui.add_slider("Rotation (deg)", -180.0, 180.0, 1.0, 0.0)
            self.g_scale = gui.add_slider("Scale", 0.25, 2.0, 0.01, 1.0)
            add = gui.add_button("Add object")
            remove = gui.add_button("Remove object")
            self.g_bg = gui.add_checkbox("Background", True)
        self._syncing = False
        self._sync_object_sliders()

        @self.g_obj.on_update
        def _(_):
            self._sync_object_sliders()

        for h in (self.g_tx, self.g_ty, self.g_tz, self.g_rot, self.g_scale):
            h.on_update(lambda _e: self._object_changed())

        @self.g_bg.on_update
        def _(_):
            c.background = bool(self.g_bg.value)
            self._gan_dirty.set()

        @add.on_click
        def _(_):
            k = c.add_object()
            self.g_obj.options = [str(i) for i in range(len(c.objects))]
            self.g_obj.value = str(k)
            self._gan_dirty.set()

        @remove.on_click
        def _(_):
            k = self._object_index()
            if k is not None:
                c.remove_object(k)
                self.g_obj.options = [str(i) for i in range(len(c.objects))] or ["-"]
                self.g_obj.value = self.g_obj.options[0]
                self._sync_object_sliders()
                self._gan_dirty.set()

    def _object_index(self):
        v = self.g_obj.value
        return int(v) if v not in (None, "-") and int(v) < len(self.controls.objects) else None

    def _sync_object_sliders(self):
        k = self._object_index()
        if k is None:
            return
        o = self.controls.objects[k]
        self._syncing = True
        try:
            self.g_tx.value, self.g_ty.value, self.g_tz.value = (float(v) for v in o["translation"])
            self.g_rot.value = float(o["rotation"])
            self.g_scale.value = float(o["scale"])
        finally:
            self._syncing = False

    def _object_changed(self):
        k = self._object_index()
        if self._syncing or k is None:
            return
        o = self.controls.objects[k]
        o["translation"] = [float(self.g_tx.value), float(self.g_ty.value), float(self.g_tz.value)]
        o["rotation"], o["scale"] = float(self.g_rot.value), float(self.g_scale.value)
        self._gan_dirty.set()

    def _gan_changed(self, key: str):
        c = self.controls
        v = self.g[key].value
        if key == "seed":
            c.seed = int(v)
            c.reset_objects()
            if c.is_giraffe:
                self.g_obj.options = [str(i) for i in range(len(c.objects))] or ["-"]
                self._sync_object_sliders()
        elif key == "seed_b":
            c.seed_b = int(v)
        elif key == "psi":
            c.psi = float(v)
        elif key in ("yaw", "pitch"):
            setattr(c, key, float(v))
        elif key.startswith("mix:"):
            c.mix[key[4:]] = float(v)
        self._gan_dirty.set()

    def set_control(self, key: str, value) -> None:
        """Set a GAN control through its GUI element (as a user moving it would)."""
        self.g[key].value = value

    def render_gan(self) -> np.ndarray:
        """Render the GAN image of the current controls now and show it."""
        self._gan_dirty.clear()
        t0 = time.perf_counter()
        img = self.controls.image()
        dt = time.perf_counter() - t0
        clients = list(self.server.get_clients().values())
        for client in clients:  # the sample in the middle of each browser's view, at its aspect
            aspect = float(getattr(client.camera, "aspect", 0.0) or 16 / 10)
            client.scene.set_background_image(fit_to_aspect(img, aspect), format="png")
        if not clients:
            self.server.scene.set_background_image(fit_to_aspect(img, 16 / 10), format="png")
        self._published(img, {"kind": "gan", "seconds": dt, "width": img.shape[1], "height": img.shape[0]})
        return img

    def _gan_loop(self):
        while not self._stopped:
            if self._gan_dirty.wait(timeout=0.1) and not self._stopped:
                try:
                    self.render_gan()
                except Exception as e:  # noqa: BLE001 (a bad control value: say it on the page)
                    self.g_stats.content = f"render failed: {e}"

    def save_image(self) -> Path:
        img = self.last_image if self.last_image is not None else self.render_gan()
        from PIL import Image

        self.out_dir.mkdir(parents=True, exist_ok=True)
        p = self.out_dir / f"{self.run.method.name}_seed{getattr(self, 'controls', None) and self.controls.seed}_{time.strftime('%Y%m%d-%H%M%S')}.png"
        Image.fromarray(img).save(p)
        return p

    # ------------------------------------------------------------------------------------------
    # training
    def _build_training(self):
        gui, m = self.server.gui, self.monitor
        with gui.add_folder("Training"):
            self.g_train = gui.add_markdown("starting")
            self.g_plot = self._add_plot(gui)
            pause = gui.add_button("Pause")
            save = gui.add_button("Save checkpoint now")

        @pause.on_click
        def _(_):
            if m.paused.is_set():
                m.paused.clear()
                pause.label = "Pause"
            else:
                m.paused.set()
                pause.label = "Resume"
            update(force=True)  # the loop waits without steps: say so now, with the latest numbers
        self.g_pause = pause

        @save.on_click
        def _(_):
            m.request_checkpoint()

        last = [0.0]

        def update(force: bool = False):
            now = time.monotonic()
            if force or now - self._plotted_at >= self.plot_every:
                self._plotted_at = now
                self.update_plot()
            if not force and now - last[0] < 0.5:
                return
            last[0] = now
            s = m.scalars
            total = s.get("max_steps")
            psnr = s.get("psnr", float("nan"))
            self.g_train.content = (f"step **{m.step}**{f' / {total}' if total else ''} · loss {s.get('loss', float('nan')):.4f}"
                                    + (f" · PSNR {psnr:.2f} dB" if psnr == psnr else "")
                                    + (" · **paused**" if m.paused.is_set() else "")
                                    + (f" · saved at {m.saved_steps[-1]}" if m.saved_steps else ""))
        m.on_update = update
        self.update_training = update  # (force=True): the text and the plot now, unthrottled
        if self.kind == "field":
            m.serve = self.serve_pending
        else:
            m.serve = lambda: self.render_gan() if self._gan_dirty.is_set() else None

    plot_every = 1.0  # seconds between updates of the training plot
    _plotted_at = 0.0

    def _add_plot(self, gui):
        """The training plot: loss (left axis, log scale) and PSNR (right axis; GANs: the
        discriminator's loss) over the steps, a uPlot chart that the loop's hook refreshes."""
        uplot = import_viser().uplot

        third = "loss_D" if self.kind == "gan" else "psnr"
        self._plot_keys = ("step", "loss", third)
        labels = {"loss": "loss" if self.kind == "field" else "loss G", "psnr": "PSNR (dB)", "loss_D": "loss D"}
        empty = tuple(np.zeros(0) for _ in self._plot_keys)
        right = "psnr" if third == "psnr" else "loss"
        return gui.add_uplot(
            empty,
            (uplot.Series(label="step"),
             uplot.Series(label=labels["loss"], stroke="#d62728", width=1.5, scale="loss"),
             uplot.Series(label=labels[third], stroke="#1f77b4", width=1.5, scale=right)),
            scales={"x": uplot.Scale(time=False, auto=True),
                    "loss": uplot.Scale(auto=True, distr=3 if self.kind == "field" else 1),
                    **({"psnr": uplot.Scale(auto=True)} if right == "psnr" else {})},
            axes=(uplot.Axis(size=28, ticks={"show": False}),
                  uplot.Axis(scale="loss", label=labels["loss"], size=40, labelSize=16, ticks={"show": False}),
                  *((uplot.Axis(scale="psnr", side=1, label="PSNR (dB)", size=32, labelSize=16,
                                grid={"show": False}, ticks={"show": False}),) if right == "psnr" else ())),
            aspect=1.25, padding=(12, 8, 0, 0))

    def update_plot(self) -> tuple:
        """Send the monitor's curves (at most 400 points each) to the page's plot; returns them."""
        series = self.monitor.plot_series()
        data = tuple(np.asarray(series.get(k, np.full(len(series["step"]), np.nan)), dtype=np.float64)
                     for k in self._plot_keys)
        self.g_plot.data = data
        return data

    def invalidate(self):
        """The model changed (a training step): render the current views again."""
        if self.kind == "field":
            self._invalidate()
        else:
            self._gan_dirty.set()

    def stop(self):
        self._stopped = True
        for r in list(self._renderers.values()):
            r.stop()
        self.server.stop()
