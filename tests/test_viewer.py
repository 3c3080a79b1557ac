"""The viewer: camera conversions, progressive rendering, GAN controls, the camera-path editor, the
training monitor, and the page itself (served on a free port; a real headless browser loads it
where Debian's chromium is installed)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import aware3d
from aware3d.render.cameras import look_at
from aware3d.viewer.core import (
    CameraPath,
    GanControls,
    ProgressiveRenderer,
    TrainingMonitor,
    View,
    c2w_to_viser,
    frame_size,
    truncate,
    viser_to_c2w,
)

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_runs"


def _copy_run(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


# -- cameras ------------------------------------------------------------------------------------
def test_viser_camera_conversion_by_hand_and_round_trip():
    # OpenGL identity (looking down -z, y up) is the OpenCV camera turned half a turn about x:
    # quaternion (w, x, y, z) = (0, 1, 0, 0)
    wxyz, pos = c2w_to_viser(torch.eye(4))
    assert np.allclose(np.abs(wxyz), [0, 1, 0, 0], atol=1e-7) and np.allclose(pos, 0)
    c2w = look_at(torch.tensor([3.0, -2.0, 1.5]))
    wxyz, pos = c2w_to_viser(c2w)
    back = viser_to_c2w(wxyz, pos)
    assert torch.allclose(back, c2w.float(), atol=1e-6)
    # the OpenCV camera's +z (viser's viewing direction) is the OpenGL camera's -z
    R = back[:3, :3]
    from aware3d.render.cameras import quaternion_to_matrix

    Rcv = quaternion_to_matrix(torch.as_tensor(wxyz))
    assert torch.allclose(Rcv[:, 2].float(), -R[:, 2], atol=1e-6)
    assert frame_size(16 / 9, 256) == (256, 144) and frame_size(0.5, 100) == (50, 100)


# -- progressive rendering ----------------------------------------------------------------------
def test_progressive_renderer_coarse_while_moving_then_refined():
    sizes, published = [], []

    def render(view, side):
        sizes.append(side)
        return np.zeros((side, side, 3), np.uint8)

    r = ProgressiveRenderer(render, lambda img, info: published.append(info["kind"]), coarse=32, refined=128,
                            settle=0.2)
    assert r.pending() is None and r.serve() is None  # no camera yet
    v = View(torch.eye(4), 0.8, 1.0)
    r.set_view(v)
    assert r.serve() == "coarse" and r.serve() is None  # moving: one coarse frame, then nothing
    r.set_view(v)  # moved again
    assert r.serve() == "coarse"
    time.sleep(0.25)  # still: the refined frame
    assert r.serve() == "refined" and r.serve() is None
    r.invalidate()  # the field changed (a training step): refined straight away
    assert r.serve() == "refined"
    assert sizes == [32, 32, 128, 128] and published == ["coarse", "coarse", "refined", "refined"]


def test_field_view_outputs_of_a_run():
    from aware3d.viewer.core import FieldView

    run = aware3d.load(FIXTURES / "ngp", device="cpu")
    fv = FieldView(run)
    assert fv.outputs == ("rgb", "depth", "opacity")
    v = View(run.orbit_camera(30.0).float(), math.radians(40), 4 / 3)
    imgs = {}
    for out in fv.outputs:
        fv.output = out
        imgs[out] = fv.render(v, 40)
        assert imgs[out].shape == (30, 40, 3) and imgs[out].dtype == np.uint8
    # the rgb frame is the run's own render of that camera
    from aware3d.viewer.core import camera_K, to_uint8

    ref = run.render(v.c2w, K=camera_K(v.fov_y, 40, 30), width=40, height=30)
    assert np.abs(imgs["rgb"].astype(int) - to_uint8(ref["color"]).astype(int)).max() <= 1
    assert not np.array_equal(imgs["rgb"], imgs["depth"])


# -- GANs ---------------------------------------------------------------------------------------
def test_truncation_moves_latents_towards_the_mean():
    z = torch.randn(2, 8)
    x = {"z": z, "c2w": torch.eye(4)[None]}
    assert torch.equal(truncate(x, ["z"], 1.0)["z"], z)
    assert torch.allclose(truncate(x, ["z"], 0.0)["z"], torch.zeros_like(z))
    assert torch.allclose(truncate(x, ["z"], 0.5)["z"], 0.5 * z)
    m = {"z": torch.ones(8)}
    assert torch.allclose(truncate(x, ["z"], 0.25, mean=m)["z"], 1 + 0.25 * (z - 1))
    assert truncate(x, ["z"], 0.5)["c2w"] is x["c2w"]  # only the latents move


def test_truncation_to_zero_gives_every_seed_the_mean_image(tmp_path):
    # pi-GAN truncates in the mapping network's output space (its official code), towards the mean
    # frequencies and phases: at psi = 0 every seed renders the same image, at psi = 1 they differ
    run = aware3d.load(_copy_run("pigan", tmp_path), device="cpu")
    c = GanControls(run)
    imgs = {}
    for psi in (1.0, 0.0):
        c.psi = psi
        for seed in (0, 1):
            c.seed = seed
            imgs[psi, seed] = c.image()
    assert not np.array_equal(imgs[1.0, 0], imgs[1.0, 1])
    assert np.array_equal(imgs[0.0, 0], imgs[0.0, 1])
    x = c.inputs()
    assert "freqs" in x and "phases" in x


def test_giraffe_controls_change_the_image(tmp_path):
    run = aware3d.load(_copy_run("giraffe", tmp_path), device="cpu")
    c = GanControls(run)
    assert c.is_giraffe and len(c.objects) == run.config.n_objects
    a = c.image()
    c.yaw = 90.0
    b = c.image()
    assert a.shape == b.shape and not np.array_equal(a, b)
    c.yaw = 0.0
    assert np.array_equal(c.image(), a)  # back to the same controls: the same image
    k = c.add_object(seed=5)
    assert k == len(c.objects) - 1 and c.inputs()["z_shape_obj"].shape[1] == len(c.objects)
    c.objects[k]["translation"] = [0.3, -0.2, 0.0]
    c.objects[k]["rotation"] = 45.0
    x = c.inputs()
    assert torch.allclose(x["obj_translation"][0, k], torch.tensor([0.3, -0.2, 0.0]))
    assert torch.allclose(x["obj_rotation"][0, k, :2, :2],
                          torch.tensor([[math.cos(math.pi / 4), -math.sin(math.pi / 4)],
                                        [math.sin(math.pi / 4), math.cos(math.pi / 4)]]), atol=1e-6)
    c.remove_object(k)
    assert np.array_equal(c.image(), a)
    c.background = False
    assert not np.array_equal(c.image(), a)
    c.background, c.psi = True, 0.0
    assert not np.array_equal(c.image(), a)


@pytest.mark.parametrize("name", ["pigan", "graf", "hologan", "cips3d"])
def test_every_gan_has_camera_controls(name, tmp_path):
    run = aware3d.load(_copy_run(name, tmp_path), device="cpu")
    c = GanControls(run)
    a = c.image()
    lo, hi, _ = c.ranges["yaw"]
    c.yaw = hi if hi - lo > 1e-3 else lo + 30.0
    assert not np.array_equal(a, c.image())
    if c.latent_groups:
        g = next(iter(c.latent_groups))
        c.mix[g] = 1.0
        c.yaw = c.ranges["yaw"][2]
        assert not np.array_equal(a, c.image())


# -- camera paths -------------------------------------------------------------------------------
def test_camera_path_passes_through_keyframes_and_renders(tmp_path):
    from aware3d.programs.field import read_camera_path

    path = CameraPath()
    with pytest.raises(ValueError, match="no keyframes"):
        path.to_json()
    k0, k1, k2 = (look_at(torch.tensor([4.0 * math.cos(a), 4.0 * math.sin(a), 1.0])) for a in (0.0, 1.0, 2.0))
    for k, f in ((k0, 40.0), (k1, 50.0), (k2, 60.0)):
        path.add(k, f)
    doc = path.to_json(seconds=2.0, fps=10, width=32, height=24)
    assert len(doc["camera_path"]) == 20
    cams = torch.tensor([c["camera_to_world"] for c in doc["camera_path"]]).reshape(-1, 4, 4)
    assert torch.allclose(cams[0], k0, atol=1e-5) and torch.allclose(cams[-1], k2, atol=1e-5)
    assert doc["camera_path"][0]["fov"] == pytest.approx(40.0) and doc["camera_path"][-1]["fov"] == pytest.approx(60.0)
    with pytest.raises(ValueError, match="fps"):
        path.to_json(fps=0)
    f = tmp_path / "path.json"
    f.write_text(json.dumps(doc))
    info = read_camera_path(f)
    assert info["format"] == "nerfstudio" and info["c2w"].shape == (20, 4, 4)
    assert (info["width"], info["height"]) == (32, 24) and info["fps"] == 10
    # the editor loads its own file back (the keyframes) and any other camera path (its cameras)
    again = CameraPath()
    info = again.load(f)
    assert len(again.keyframes) == 3 and torch.allclose(again.keyframes[1][0], k1, atol=1e-6)
    assert info["fps"] == 10 and info["width"] == 32
    del doc["generator"]
    g = tmp_path / "ns.json"
    g.write_text(json.dumps(doc))
    other = CameraPath()
    other.load(g, max_keyframes=5)
    assert len(other.keyframes) == 5 and torch.allclose(other.keyframes[0][0], k0, atol=1e-5)
    # the saved file plays with `aware3d render RUN --program path FILE`
    run_dir = _copy_run("ngp", tmp_path)
    from aware3d.cli import main

    assert main(["render", str(run_dir), "--program", "path", str(f), "--frames", "3",
                 "--out", str(tmp_path / "out")]) == 0
    assert any((tmp_path / "out").rglob("*.mp4"))


# -- training -----------------------------------------------------------------------------------
def test_monitor_pauses_and_saves_on_request():
    m = TrainingMonitor()
    served = []
    m.serve = lambda: served.append(1) or None
    assert m.after_step(1, {"loss": 0.5, "psnr": 3.0}) is None and m.step == 1
    m.request_checkpoint()
    assert m.after_step(2, {"loss": 0.4}) == "checkpoint" and m.saved_steps == [2]
    m.paused.set()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", m.after_step(3, {"loss": 0.3})))
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and "r" not in result  # paused: the loop waits, serving renders
    m.paused.clear()
    t.join(timeout=5)
    assert result["r"] is None and len(served) > 2


@pytest.mark.slow
def test_training_with_a_monitor_saves_when_asked(tmp_path):
    from aware3d.data.synth import synth_scene

    synth_scene(tmp_path / "scene", n_views=6, resolution=24, seed=0, progress=False)
    m = TrainingMonitor()
    hook = m.field_hook()

    def on_step(step, model, scalars):
        if step == 3:
            m.request_checkpoint()
        return hook(step, model, scalars)

    run_dir = aware3d.method("ngp").train(str(tmp_path / "scene"), out=str(tmp_path / "run"), preset="tiny",
                                          max_steps=5, progress=False, val_every=0, ckpt_every=0,
                                          on_step=on_step)
    names = sorted(p.name for p in (Path(run_dir) / "checkpoints").glob("*.pt"))
    assert any("3" in n for n in names) and len(names) == 2, names
    assert m.step == 5 and m.saved_steps == [3]


# -- the page -----------------------------------------------------------------------------------
def _start(run, tmp_path):
    pytest.importorskip("viser", reason="the viewer needs viser (pip install \"aware3d[viewer]\")")
    from aware3d.viewer import start

    return start(run, port=0, out_dir=tmp_path / "viewer")


def test_viewer_serves_its_page_and_the_gan_slider_changes_the_image(tmp_path):
    run = aware3d.load(_copy_run("giraffe", tmp_path), device="cpu")
    v = _start(run, tmp_path)
    try:
        html = urllib.request.urlopen(v.url, timeout=20).read().decode("utf-8", "replace")
        assert "<html" in html.lower()
        a = v.render_gan()
        v.set_control("yaw", 60.0)  # through the page's own slider
        b = v.render_gan()
        assert not np.array_equal(a, b) and v.controls.yaw == 60.0
        p = v.save_image()
        assert p.is_file() and p.suffix == ".png"
    finally:
        v.stop()


def test_field_viewer_saves_a_camera_path_that_renders(tmp_path):
    run = aware3d.load(_copy_run("ngp", tmp_path), device="cpu")
    v = _start(run, tmp_path)
    try:
        v.add_keyframe(run.orbit_camera(0.0), 40.0)
        v.add_keyframe(run.orbit_camera(120.0), 40.0)
        v.g_seconds.value, v.g_fps.value, v.g_width.value, v.g_height.value = 1.0, 4, 32, 24
        f = v.save_path("orbit.json")
    finally:
        v.stop()
    assert f == tmp_path / "viewer" / "orbit.json"
    from aware3d.cli import main

    assert main(["render", str(run.path), "--program", "path", str(f), "--out", str(tmp_path / "out")]) == 0


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ngp", "giraffe"])
def test_a_real_browser_shows_the_first_frame(name, tmp_path):
    exe = _browser()
    if exe is None:
        pytest.skip("no headless browser: apt-get install chromium (Debian) to run the viewer's browser test")
    run = aware3d.load(_copy_run(name, tmp_path), device="cpu")
    v = _start(run, tmp_path)
    from PIL import Image

    shot = tmp_path / "shot.png"
    img = None
    try:
        # a loaded machine can take the screenshot before the page has connected: try again with
        # more (virtual) time before calling it blank
        for budget in (15000, 40000, 90000):
            shot.unlink(missing_ok=True)
            subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                            "--enable-unsafe-swiftshader", "--window-size=800,600",
                            f"--virtual-time-budget={budget}", f"--screenshot={shot}", v.url],
                           capture_output=True, timeout=240, check=False)
            if shot.is_file():
                img = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
                if img.std() > 10:
                    break
        frames = v.frames_published
    finally:
        v.stop()
    assert img is not None, "the browser wrote no screenshot"
    assert img.std() > 10, "the screenshot is blank"
    assert frames >= 1, "the browser connected but no frame was rendered for it"


def test_gan_images_fill_the_view_without_distortion():
    from aware3d.viewer.app import fit_to_aspect

    img = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    out = fit_to_aspect(img, 16 / 10, height=64)
    assert out.shape == (64, 102, 3)                      # 1.6 : 1
    assert np.array_equal(out[0:16:16, 19:35:16], img[:1, :1])  # 16x nearest, centred
    assert np.array_equal(out[::16, 19:83:16], img) and (out[:, :19] == 235).all()
    tall = fit_to_aspect(img, 0.5, height=64)
    assert tall.shape == (128, 64, 3) and np.array_equal(tall[32:96:16, ::16], img)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_train_with_the_viewer_from_the_cli(tmp_path, capsys):
    """`aware3d train ... --viewer` serves the page while it trains (field and GAN) and stops it
    with the run; the run is the same kind of run folder as without the viewer."""
    pytest.importorskip("viser", reason="the viewer needs viser (pip install \"aware3d[viewer]\")")
    from aware3d.cli import main
    from aware3d.data.synth import synth_objects, synth_scene

    synth_scene(tmp_path / "scene", n_views=6, resolution=16, progress=False)
    port = _free_port()
    assert main(["train", "ngp", "--data", str(tmp_path / "scene"), "--preset", "tiny", "--max-steps", "4",
                 "--out", str(tmp_path / "f"), "--viewer", "--port", str(port)]) == 0
    err = capsys.readouterr().err
    assert f"viewer: http://localhost:{port}" in err
    assert (tmp_path / "f" / "checkpoints" / "latest").exists()
    synth_objects(tmp_path / "objects", count=8, resolution=16, progress=False)
    port = _free_port()
    assert main(["train", "giraffe", "--data", str(tmp_path / "objects"), "--preset", "tiny", "--max-steps", "3",
                 "--out", str(tmp_path / "g"), "--viewer", "--port", str(port)]) == 0
    assert f"viewer: http://localhost:{port}" in capsys.readouterr().err


# -- dynamic scenes: the time slider --------------------------------------------------------------
@pytest.fixture(scope="module")
def dyn_run(tmp_path_factory):
    """A tiny trained T-NeRF run (hash-grid backbone, 6 steps) of the built-in dynamic scene."""
    from aware3d.data.dynamic import synth_dynamic_scene

    root = tmp_path_factory.mktemp("dynview")
    synth_dynamic_scene(root / "scene", n_train=6, n_val=1, n_test=1, resolution=16, progress=False)
    over = [("backbone", "ngp"), ("log2_table", 12), ("max_res", 64), ("samples_per_batch", 4096), ("init_rays", 256)]
    return aware3d.method("tnerf").train(str(root / "scene"), out=str(root / "run"), preset="tiny", max_steps=6,
                                         progress=False, val_every=0, overrides=over)


def test_time_slider_renders_the_moment_as_render_time_does(dyn_run, tmp_path):
    from PIL import Image

    from aware3d.cli import main
    from aware3d.programs.dynamic import _circle

    run = aware3d.load(dyn_run, device="cpu")
    v = _start(run, tmp_path)
    try:
        assert v.view.has_time and v.view.time == 0.0 and v.g_time.value == 0.0
        W, H = int(run.scene["width"]), int(run.scene["height"])
        c2w = _circle(run, 1)[0]  # the camera of `render --program time-orbit --frames 1`
        view = View(c2w.float(), 2 * math.atan(0.5 * H / float(run.intrinsics(W)[1, 1])), W / H)
        a = v.view.render(view, W)
        v.set_time(0.8)  # through the page's own slider
        assert v.view.time == 0.8
        b = v.view.render(view, W)
        assert not np.array_equal(a, b)
        v.add_keyframe(c2w, 40.0)  # the keyframe records the moment shown
        assert v.path.times == [0.8]
        v.g_play_seconds.value = 1.0
        v.g_play.value = True  # the play toggle moves the slider (and the moment rendered)
        time.sleep(0.5)
        v.g_play.value = False
        assert v.view.time != 0.8 and v.view.time == v.g_time.value
    finally:
        v.stop()
    out = tmp_path / "r"
    assert main(["render", str(dyn_run), "--program", "time-orbit", "--time", "0.8", "--frames", "1",
                 "--resolution", str(W), "--out", str(out)]) == 0
    ref = np.asarray(Image.open(out / "frame_000.png").convert("RGB")).astype(int)
    assert ref.shape == b.shape and np.abs(ref - b.astype(int)).max() <= 1
    assert np.abs(ref - a.astype(int)).max() > 1


def test_static_runs_have_no_time_slider(tmp_path):
    run = aware3d.load(_copy_run("ngp", tmp_path), device="cpu")
    v = _start(run, tmp_path)
    try:
        assert not v.view.has_time and not hasattr(v, "g_time")
        with pytest.raises(ValueError, match="no time"):
            v.set_time(0.5)
        v.add_keyframe(run.orbit_camera(0.0), 40.0)
        assert v.path.times == [None] and "time" not in v.path_json()["camera_path"][0]
    finally:
        v.stop()


def test_camera_path_times_are_interpolated_saved_loaded_and_played(dyn_run, tmp_path):
    from PIL import Image

    from aware3d.cli import main

    path = CameraPath()
    ks = [look_at(torch.tensor([4.0 * math.cos(a), 4.0 * math.sin(a), 1.0])) for a in (0.0, 1.0, 2.0)]
    for k, t in zip(ks, (0.2, 0.6, 1.0)):
        path.add(k, 40.0, time=t)
    doc = path.to_json(seconds=1.0, fps=9, width=16, height=16)
    times = [c["time"] for c in doc["camera_path"]]
    assert times[0] == pytest.approx(0.2) and times[-1] == pytest.approx(1.0) and times == sorted(times)
    assert [k["time"] for k in doc["keyframes"]] == [0.2, 0.6, 1.0]
    with pytest.raises(ValueError, match="time"):
        path.add(ks[0], 40.0, time=1.5)
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    again = CameraPath()
    again.load(f)
    assert again.times == [0.2, 0.6, 1.0]
    # `render --program path` plays each frame at its moment: one camera, times 0 and 1
    run = aware3d.load(dyn_run, device="cpu")
    c2w = run.orbit_camera(30.0)
    two = CameraPath()
    two.add(c2w, 40.0, time=0.0)
    two.add(c2w, 40.0, time=1.0)
    g = tmp_path / "two.json"
    g.write_text(json.dumps(two.to_json(seconds=2.0, fps=1, width=16, height=16)))
    assert main(["render", str(dyn_run), "--program", "path", str(g), "--out", str(tmp_path / "o")]) == 0
    frames = [np.asarray(Image.open(tmp_path / "o" / "frames" / f"{i:05d}.png").convert("RGB")).astype(int)
              for i in (0, 1)]
    from aware3d.viewer.core import camera_K, to_uint8

    for img, t in zip(frames, (0.0, 1.0)):
        ref = to_uint8(run.render(c2w, K=camera_K(math.radians(40.0), 16, 16), width=16, height=16, time=t)["color"])
        assert np.abs(img - ref.astype(int)).max() <= 1
    assert np.abs(frames[0] - frames[1]).max() > 1


# -- training plot --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ngp", "giraffe"])
def test_training_plot_grows_with_the_steps(name, tmp_path):
    pytest.importorskip("viser", reason="the viewer needs viser (pip install \"aware3d[viewer]\")")
    from aware3d.viewer.app import Viewer

    run = aware3d.load(_copy_run(name, tmp_path), device="cpu")
    m = TrainingMonitor()
    v = Viewer(run, port=0, monitor=m, out_dir=tmp_path / "viewer")
    try:
        v.plot_every = 0.0  # refresh at every step (default: once a second)
        assert all(len(a) == 0 for a in v.g_plot.data)
        for step in range(1, 6):
            scal = {"loss": 1.0 / step, "psnr": 10.0 + step} if name == "ngp" else {"loss_G": 2.0 + step,
                                                                                    "loss_D": 1.0 / step}
            if name == "ngp":
                m.after_step(step, scal)
            else:
                m.gan_hook()(type("E", (), {"step": step})(), scal)
            steps = v.g_plot.data[0]
            assert list(steps) == list(range(1, step + 1))
        _, loss, third = v.g_plot.data
        if name == "ngp":
            assert np.allclose(loss, [1.0 / s for s in range(1, 6)]) and np.allclose(third, [11, 12, 13, 14, 15])
        else:
            assert np.allclose(loss, [3, 4, 5, 6, 7]) and np.allclose(third, [1.0 / s for s in range(1, 6)])
    finally:
        v.stop()


def test_plot_series_thins_long_runs_but_keeps_the_whole_run():
    m = TrainingMonitor()
    for s in range(1, 10_001):
        m.after_step(s, {"loss": 1.0, "psnr": 2.0})
    assert len(m.history) <= 4000
    p = m.plot_series(max_points=400)
    assert len(p["step"]) <= 401 and p["step"][0] == 1 and p["step"][-1] == 10_000 and "psnr" in p


def test_training_text_and_plot_catch_up_when_forced(tmp_path):
    # the hook refreshes the text at most twice a second and the plot once a second; pausing forces
    # both (before, the page kept the numbers of the last refresh and did not say "paused")
    pytest.importorskip("viser", reason="the viewer needs viser (pip install \"aware3d[viewer]\")")
    from aware3d.viewer.app import Viewer

    run = aware3d.load(_copy_run("ngp", tmp_path), device="cpu")
    m = TrainingMonitor()
    v = Viewer(run, port=0, monitor=m, out_dir=tmp_path / "viewer")
    try:
        for step in range(1, 4):
            m.after_step(step, {"loss": 0.5, "psnr": 20.0, "max_steps": 10})
        assert "step **1**" in v.g_train.content and len(v.g_plot.data[0]) == 1  # throttled
        m.paused.set()
        v.update_training(force=True)
        assert "step **3** / 10" in v.g_train.content and "**paused**" in v.g_train.content
        assert list(v.g_plot.data[0]) == [1, 2, 3]
    finally:
        m.paused.clear()
        v.stop()
