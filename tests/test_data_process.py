"""Structure from motion (aware3d.data.process) on a textured synthetic capture with known cameras.

The capture (aware3d.data.process_synth): the built-in primitives inside a room, every surface
carrying a 3D value-noise texture, 24 views at 160x160 on an ordered orbit (radius 3.2, 50 degree
field of view). Tests that run COLMAP skip when pycolmap is missing; the rest (frame selection,
pairs, pose normalisation, the early errors) always run.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import zlib  # noqa: F401  (before pycolmap, see aware3d.data.process)
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aware3d.data.process import (ProcessError, RegistrationError, image_pairs, normalise_poses,
                                  process_images, process_video, select_sharpest, sharpness)
from aware3d.data.process_synth import box_blur, textured_capture, write_images, write_video

HAS_PYCOLMAP = importlib.util.find_spec("pycolmap") is not None
needs_pycolmap = pytest.mark.skipif(not HAS_PYCOLMAP, reason='pycolmap is not installed '
                                    '(structure from motion is the optional extra: pip install "aware3d[sfm]")')

N_VIEWS, RES, RADIUS = 24, 160, 3.2
# camera centres after a similarity alignment: measured max 0.7 % of the orbit radius, mean 0.2 %
CENTRE_TOL = 0.02 * RADIUS
ROT_TOL_DEG = 1.0  # measured 0.47 degrees


def umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) minimising |s R src + t - dst|^2 (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    U, D, Vt = np.linalg.svd(xd.T @ xs / len(src))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1
    R = U @ S @ Vt
    s = np.trace(np.diag(D) @ S) / ((xs ** 2).sum() / len(src))
    return s, R, mu_d - s * R @ mu_s


@pytest.fixture(scope="module")
def capture():
    return textured_capture(N_VIEWS, RES)


@pytest.fixture(scope="module")
def processed(capture, tmp_path_factory):
    root = tmp_path_factory.mktemp("process")
    write_images(capture["images"], root / "photos")
    out = root / "scene"
    summary = process_images(root / "photos", out, progress=False)
    return out, summary


def _frames(out: Path):
    meta = json.loads((out / "transforms.json").read_text())
    return meta, np.array([f["transform_matrix"] for f in meta["frames"]])


# -------------------------------------------------------------------------------------- photos


@needs_pycolmap
def test_all_images_register_and_cameras_match_the_truth(capture, processed):
    out, s = processed
    assert s["images_registered"] == s["images_given"] == N_VIEWS and s["unregistered"] == []
    assert s["matching"] == "exhaustive" and s["pairs"] == N_VIEWS * (N_VIEWS - 1) // 2
    assert s["mean_reprojection_error_px"] < 1.0  # measured 0.16 px
    assert s["points"] > 300  # measured ~1200
    meta, c2w = _frames(out)
    assert [f["file_path"] for f in meta["frames"]] == [f"images/view_{i:03d}.png" for i in range(N_VIEWS)]
    true = capture["c2w"]
    sc, R, t = umeyama(c2w[:, :3, 3], true[:, :3, 3])
    err = np.linalg.norm(sc * c2w[:, :3, 3] @ R.T + t - true[:, :3, 3], axis=-1)
    assert err.max() < CENTRE_TOL, (err.max() / RADIUS, err.mean() / RADIUS)
    # orientations too (both OpenGL camera-to-world, so R maps ours onto the truth)
    rel = np.einsum("ij,njk,nlk->nil", R, c2w[:, :3, :3], true[:, :3, :3])
    ang = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert ang.max() < ROT_TOL_DEG, ang.max()
    # normalised like colmap2nerf: mean camera distance 4 from the origin, which is the point the
    # cameras look at (the true origin, within 5 % of the radius), world +z within 10 degrees of
    # the true up (the mean camera up of an orbit looking down 18-38 degrees is ~5 degrees off)
    assert np.linalg.norm(c2w[:, :3, 3], axis=-1).mean() == pytest.approx(4.0, rel=1e-6)
    assert np.linalg.norm(t) < 0.05 * RADIUS
    assert np.degrees(np.arccos(np.clip((R @ [0, 0, 1])[2], -1, 1))) < 10.0
    # focal length of the undistorted pinhole near the true one (undistortion keeps it nearly)
    assert meta["camera_model"] == "PINHOLE"
    assert meta["fl_x"] == pytest.approx(capture["K"][0, 0], rel=0.05)


@needs_pycolmap
def test_output_folder_layout(processed):
    out, s = processed
    meta, _ = _frames(out)
    w, h = meta["w"], meta["h"]
    assert {p.name for p in out.iterdir()} == {"transforms.json", "images", "images_2", "images_4",
                                               "images_8", "sparse_pc.ply", "summary.json"}
    for k in (1, 2, 4, 8):
        folder = out / ("images" if k == 1 else f"images_{k}")
        files = sorted(folder.iterdir())
        assert len(files) == N_VIEWS
        assert Image.open(files[0]).size == (w // k, h // k)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(s))
    assert set(s["seconds"]) == {"read", "features", "matching", "mapping", "undistort", "write", "total"}
    from aware3d.utils.mesh import read_ply

    raw = (out / "sparse_pc.ply").read_bytes()
    assert b"property uchar red" in raw
    v, f = read_ply(out / "sparse_pc.ply")
    assert len(v) == s["points"] and len(f) == 0
    # nothing left next to the output (the build folder was renamed into place)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


@needs_pycolmap
@pytest.mark.needs_hashgrid
def test_output_loads_and_ngp_trains(processed, tmp_path):
    import aware3d
    from aware3d.data import load_scene

    out, _ = processed
    meta, _ = _frames(out)
    ds = load_scene(out, "train")
    assert len(ds) == N_VIEWS - 3  # every 8th frame (0, 8, 16) held out
    assert (ds.width, ds.height) == (meta["w"], meta["h"])
    assert float(ds.K[0, 0, 0]) == pytest.approx(meta["fl_x"], rel=1e-6)
    test = load_scene(out, "test", downscale=2)
    assert test.names == ["images/view_000.png", "images/view_008.png", "images/view_016.png"]
    run = aware3d.method("ngp").train(str(out), out=str(tmp_path / "run"), preset="tiny", max_steps=3,
                                      downscale=2, progress=False, val_every=0, device="cpu")
    assert (Path(run) / "checkpoints" / "step_00000003.pt").is_file()


# -------------------------------------------------------------------------------------- video


@needs_pycolmap
def test_video_keeps_the_sharpest_frame_of_each_window_and_registers(capture, tmp_path):
    # 48 frames: each view once sharp and once blurred (box blur of radius 2, standing in for
    # motion blur), the blurred copy first in even windows and second in odd ones. Asking for 24
    # frames makes 24 windows of two, so the selection must be exactly the sharp copies.
    frames, sharp = [], []
    for i, im in enumerate(capture["images"]):
        pair = [box_blur(im, 2), im] if i % 2 == 0 else [im, box_blur(im, 2)]
        sharp.append(len(frames) + (1 if i % 2 == 0 else 0))
        frames += pair
    video = write_video(np.stack(frames), tmp_path / "capture.mp4", fps=12)
    s = process_video(video, tmp_path / "scene", num_frames=N_VIEWS, progress=False)
    assert s["kind"] == "video" and s["frames_in_video"] == 2 * N_VIEWS
    assert s["selected_frames"] == sharp
    assert s["sharpness_selected_mean"] > s["sharpness_all_mean"]
    assert s["matching"] == "sequential"
    assert s["images_registered"] == s["images_given"] == N_VIEWS
    meta, c2w = _frames(tmp_path / "scene")
    assert [f["file_path"] for f in meta["frames"]] == [f"images/frame_{i + 1:05d}.png" for i in range(N_VIEWS)]
    true = capture["c2w"]
    sc, R, t = umeyama(c2w[:, :3, 3], true[:, :3, 3])
    err = np.linalg.norm(sc * c2w[:, :3, 3] @ R.T + t - true[:, :3, 3], axis=-1)
    assert err.max() < CENTRE_TOL, err.max() / RADIUS


# -------------------------------------------------------------------------------------- errors


def _photos(folder: Path, n: int, size=(64, 48), seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_too_few_images(tmp_path):
    src = _photos(tmp_path / "two", 2)
    (src / "notes.txt").write_text("not an image")
    with pytest.raises(ProcessError, match=r"2 image files .* at least 3"):
        process_images(src, tmp_path / "out", progress=False)
    with pytest.raises(ProcessError, match="no such folder"):
        process_images(tmp_path / "missing", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_pycolmap_names_the_extra(tmp_path, monkeypatch):
    from aware3d.metrics.fid import MissingExtraError

    src = _photos(tmp_path / "p", 3)
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # how Python marks a module it cannot import
    with pytest.raises(MissingExtraError, match=re.escape('pip install "aware3d[sfm]"')):
        process_images(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bad_options():
    with pytest.raises(ValueError, match="matching: expected one of"):
        process_images(".", "x", matching="vocab_tree")
    with pytest.raises(ValueError, match="camera_model"):
        process_images(".", "x", camera_model="FISHEYE")
    with pytest.raises(ValueError, match="num_frames"):
        process_video("x.mp4", "x", num_frames=2)


@needs_pycolmap
def test_unreadable_and_mismatched_files_are_named(tmp_path):
    src = _photos(tmp_path / "bad", 3)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ProcessError, match=r"broken\.jpg: cannot read this image"):
        process_images(src, tmp_path / "out", progress=False)
    (src / "broken.jpg").unlink()
    Image.new("RGB", (32, 32)).save(src / "small.png")
    with pytest.raises(ProcessError, match=r"small\.png: image is 32x32, but p0\.png is 64x48"):
        process_images(src, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no output, no build folder


@needs_pycolmap
def test_unreadable_video_is_named(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    with pytest.raises(ProcessError, match=r"clip\.mp4: cannot read this video"):
        process_video(bad, tmp_path / "out", num_frames=10, progress=False)
    with pytest.raises(ProcessError, match=r"nothing\.mp4: no such file"):
        process_video(tmp_path / "nothing.mp4", tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@needs_pycolmap
def test_registration_failure_lists_images_and_causes(tmp_path):
    # independent noise images: plenty of SIFT features, no geometry shared between any two
    src = _photos(tmp_path / "noise", 4, size=(96, 96))
    with pytest.raises(RegistrationError) as e:
        process_images(src, tmp_path / "out", progress=False)
    msg = str(e.value)
    assert "p0.png" in msg and "p3.png" in msg and "features" in msg
    assert all(w in msg for w in ("blurred", "overlap", "texture"))
    assert sorted(e.value.unregistered) == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise"]


@needs_pycolmap
def test_existing_output_is_kept_unless_overwrite(tmp_path, monkeypatch):
    from aware3d.data import process as proc

    src = _photos(tmp_path / "p", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ProcessError, match="exists and is not empty.*overwrite"):
        process_images(src, out, progress=False)
    with pytest.raises(ProcessError, match="holds the input"):
        process_images(src, src.parent, overwrite=True, progress=False)

    # a failure half-way through (here: in mapping) with overwrite=True leaves the old folder as it
    # was and no build folder behind
    def boom(*a, **k):
        raise RuntimeError("mapping crashed")

    monkeypatch.setattr(proc, "_map", boom)
    with pytest.raises(RuntimeError, match="mapping crashed"):
        process_images(src, out, overwrite=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "p"]


# -------------------------------------------------------------------------------------- parts


def test_select_sharpest_windows():
    scores = [1, 5, 2, 2, 9, 0, 3, 3, 1, 4]
    # 10 frames in 4 windows [0, 2) [2, 5) [5, 8) [8, 10): argmax of each, the first on ties
    assert select_sharpest(scores, 4) == [1, 4, 6, 9]
    assert select_sharpest(scores, 10) == list(range(10))
    assert select_sharpest(scores, 50) == list(range(10))  # fewer frames than asked: all of them


def test_sharpness_prefers_sharp_frames():
    rng = np.random.default_rng(0)
    im = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    s = [sharpness(box_blur(im, r)) for r in (0, 1, 2, 4)]
    assert s == sorted(s, reverse=True) and s[0] > 10 * s[2]


def test_image_pairs():
    assert len(image_pairs(24, "exhaustive")) == 24 * 23 // 2
    # sequential, overlap 2: i + 1, i + 2 and i + 2^k for k < 2 (i + 1, i + 2 again)
    assert image_pairs(5, "sequential", overlap=2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    p = image_pairs(100, "sequential", overlap=10)
    assert (0, 64) in p and (0, 11) not in p and len(p) < 100 * 17


def test_normalise_poses_centres_uprights_and_scales():
    # 12 cameras on a tilted circle of radius 2 around c, each looking at c; the world is rotated
    # so that "up" is +x. After T: the look-at point is the origin, cameras sit at distance 4 and
    # the mean camera up is +z.
    import torch
    from aware3d.render.cameras import look_at

    c = np.array([1.0, -2.0, 0.5])
    az = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    eye = np.stack([2 * np.cos(az) * 0.9, 2 * np.sin(az) * 0.9, np.full(12, 2 * np.sqrt(1 - 0.81))], -1)
    c2w = look_at(torch.tensor(eye, dtype=torch.float64)).numpy()
    Rw = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]], dtype=np.float64)  # +z -> +x
    c2w[:, :3, :3] = Rw @ c2w[:, :3, :3]
    c2w[:, :3, 3] = eye @ Rw.T + c
    T = normalise_poses(c2w)
    centres = c2w[:, :3, 3] @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(c @ T[:3, :3].T + T[:3, 3], 0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-9)
    up = (T[:3, :3] @ c2w[:, :3, 1].T).mean(1)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-9)


def test_exif_orientation_and_focal_prior(tmp_path):
    # a portrait phone photo stored landscape with EXIF orientation 6 (rotate 90 degrees) and a
    # 28 mm (35 mm equivalent) lens: decoded upright, focal prior 28 / 36 x the longer side
    from aware3d.data.process import _camera_params, _prepare_images, _Progress

    src = tmp_path / "exif"
    src.mkdir()
    for i in range(3):
        ex = Image.Exif()
        ex.get_ifd(0x8769)[41989] = 28
        ex[0x0112] = 6
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(src / f"{i}.jpg", exif=ex)
    entries, size, focal = _prepare_images(sorted(src.iterdir()), tmp_path / "work", 40, _Progress(False, []))
    assert size == (30, 40)  # upright 60x80, then longer side 40
    assert focal == pytest.approx(28 / 36 * 40)
    assert [e[:2] for e in entries] == [("0.jpg", "0.jpg.png"), ("1.jpg", "1.jpg.png"), ("2.jpg", "2.jpg.png")]
    assert Image.open(tmp_path / "work" / "0.jpg.png").size == (30, 40)
    assert _camera_params("OPENCV", 30, 40, 31.0) == "31.0,31.0,15.0,20.0,0.0,0.0,0.0,0.0"
