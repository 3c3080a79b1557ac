"""Load-time normalisation of captures in an arbitrary frame (COLMAP models, nerfstudio files), the
transform runs keep, and exports written back in the data's frame."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from aware3d.data import colmap as cm
from aware3d.data import load_scene
from aware3d.data.normalize import (
    CAMERA_DISTANCE,
    normalise_poses,
    similarity_scale,
    transform_points,
    transform_poses,
)
from aware3d.render.cameras import c2w_to_colmap, sample_poses_sphere


def _similarity(scale=3.7, t=(5.0, -2.0, 7.0), axis=(1.0, 2.0, 0.5), angle=2.0):
    """A known similarity S: rotation by ``angle`` about ``axis``, uniform scale, translation."""
    a = np.asarray(axis) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    R = np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
    S = np.eye(4)
    S[:3, :3] = scale * R
    S[:3, 3] = t
    return S


def _capture(n=12):
    """Cameras on a sphere of radius 3 around the origin looking at it (z up), then moved into an
    arbitrary frame by a known similarity. Returns (file-frame c2w (n, 4, 4), S)."""
    c2w = sample_poses_sphere(n, 3.0, (10.0, 60.0), generator=torch.Generator().manual_seed(3)).double().numpy()
    S = _similarity()
    return transform_poses(S, c2w), S


def _write_colmap(root, c2w, points):
    q, t = c2w_to_colmap(torch.as_tensor(c2w))
    cams = {1: cm.Camera(1, "PINHOLE", 16, 12, np.array([14.0, 14.0, 8.0, 6.0]))}
    imgs = {i + 1: cm.Image(i + 1, q[i].numpy(), t[i].numpy(), 1, f"img_{i:02d}.png",
                            np.zeros((0, 2)), np.zeros(0, np.int64)) for i in range(len(c2w))}
    pts = {i: cm.Point3D(i, p, np.array([200, 100, 50], np.uint8), 0.5) for i, p in enumerate(points)}
    cm.write_model(root / "sparse" / "0", cams, imgs, pts, ext=".bin")
    (root / "images").mkdir(parents=True)
    for i in range(len(c2w)):
        PILImage.fromarray(np.full((12, 16, 3), 10 * i, np.uint8)).save(root / "images" / f"img_{i:02d}.png")


def _check_normalised(ds, file_c2w_sel, S, file_c2w_all):
    T = ds.transform.numpy()
    # the loaded poses are the file's poses moved by the recorded transform
    assert np.allclose(ds.c2w.double().numpy(), transform_poses(T, file_c2w_sel), atol=1e-4)
    # T undoes S up to a rotation: the sphere's centre (what every camera looks at) goes to the
    # origin and its radius 3 to CAMERA_DISTANCE (4)
    TS = T @ S
    assert similarity_scale(TS) == pytest.approx(CAMERA_DISTANCE / 3.0, rel=1e-6)
    assert np.allclose(TS[:3, 3], 0, atol=1e-6)
    # upright: the mean camera up of all the file's cameras is +z
    up = transform_poses(T, file_c2w_all)[:, :3, 1].mean(0)
    assert np.allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-6)


def test_colmap_capture_is_centred_upright_and_scaled(tmp_path):
    c2w, S = _capture()
    points = transform_points(S, np.random.default_rng(0).uniform(-0.8, 0.8, (200, 3)))
    _write_colmap(tmp_path, c2w, points)
    train = load_scene(tmp_path, "train")
    test = load_scene(tmp_path, "test")
    names = [f"img_{i:02d}.png" for i in range(12)]
    sel_train = [i for i in range(12) if i % 8 != 0]
    assert train.names == [names[i] for i in sel_train]
    _check_normalised(train, c2w[sel_train], S, c2w)
    # every split gets the same transform (it comes from all the cameras, not the split's)
    assert torch.equal(train.transform, test.transform)
    dist = train.c2w[:, :3, 3].double().norm(dim=-1)
    assert float(dist.mean()) == pytest.approx(CAMERA_DISTANCE, rel=0.05)
    # the box spans the points in the new frame (about +-0.8 * 4/3) and the bounds scale with it
    assert (train.aabb[:3] < -0.9).all() and (train.aabb[3:] > 0.9).all() and (train.aabb.abs() < 1.6).all()
    raw = load_scene(tmp_path, "train", normalize=False)
    assert raw.transform is None and torch.allclose(raw.c2w.double(), torch.as_tensor(c2w[sel_train]), atol=1e-5)
    s = similarity_scale(train.transform.numpy())
    assert train.near == pytest.approx(raw.near * s, rel=1e-5) and train.far == pytest.approx(raw.far * s, rel=1e-5)


def test_nerfstudio_file_is_normalised_and_instant_ngp_file_is_not(tmp_path):
    c2w, S = _capture(8)
    (tmp_path / "images").mkdir()
    frames = []
    for i, m in enumerate(c2w):
        PILImage.fromarray(np.full((12, 16, 3), 20 * i, np.uint8)).save(tmp_path / "images" / f"f{i}.png")
        frames.append({"file_path": f"images/f{i}.png", "transform_matrix": m.tolist()})
    applied = np.eye(4)[:3]
    applied[:, 3] = (1.0, 2.0, 3.0)
    meta = {"fl_x": 14.0, "w": 16, "h": 12, "frames": frames, "applied_transform": applied.tolist()}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_scene(tmp_path, "all")
    _check_normalised(ds, c2w, S, c2w)
    assert ds.sfm_transform is not None and ds.sfm_transform[:3, 3].tolist() == [1.0, 2.0, 3.0]
    meta["aabb_scale"] = 4  # an instant-ngp file: its frame is instant-ngp's, kept as it is
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ngp = load_scene(tmp_path, "all")
    assert ngp.format == "instant-ngp" and ngp.transform is None
    forced = load_scene(tmp_path, "all", normalize=True)
    _check_normalised(forced, c2w, S, c2w)
    with pytest.raises(ValueError, match="normalize"):
        load_scene(tmp_path, "all", normalize="yes")


def test_normalise_poses_of_a_known_similarity_recovers_it():
    c2w, S = _capture()
    T = normalise_poses(c2w)
    back = transform_points(T, transform_points(S, np.zeros((1, 3))))
    assert np.allclose(back, 0, atol=1e-6)


def test_runs_keep_the_transform_and_export_in_the_data_frame(tmp_path):
    """The scene a run keeps records the transforms; meshes and point clouds written with
    ``frame="data"`` are the scene-frame ones mapped by the inverse transform, and ``frame="sfm"``
    also undoes the file's applied_transform."""
    import shutil
    from pathlib import Path

    import aware3d
    from aware3d.train.recon import scene_info

    c2w, S = _capture(8)
    points = transform_points(S, np.random.default_rng(0).uniform(-0.8, 0.8, (50, 3)))
    _write_colmap(tmp_path / "cap", c2w, points)
    info = scene_info(load_scene(tmp_path / "cap", "train"))
    assert np.asarray(info["transform"]).shape == (4, 4) and info["sfm_transform"] is None
    json.dumps(info)  # the run's config stays JSON

    run_dir = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "legacy_runs" / "ngp", run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    T = _similarity(scale=0.5, t=(0.1, 0.2, -0.3))
    cfg["scene"]["transform"] = T.tolist()
    cfg["scene"]["sfm_transform"] = [[1, 0, 0, 1.0], [0, 1, 0, 2.0], [0, 0, 1, 3.0], [0, 0, 0, 1]]
    (run_dir / "config.json").write_text(json.dumps(cfg))
    run = aware3d.load(run_dir, device="cpu")
    a = run.export_mesh(tmp_path / "scene.ply", resolution=24)
    b = run.export_mesh(tmp_path / "data.ply", resolution=24, frame="data")
    c = run.export_mesh(tmp_path / "sfm.ply", resolution=24, frame="sfm")
    va, vb, vc = (_ply_vertices(x["path"]) for x in (a, b, c))
    assert len(va) == len(vb) > 0 and b["frame"] == "data"
    assert np.allclose(vb, transform_points(np.linalg.inv(T), va), atol=1e-4)
    assert np.allclose(vc, vb - [1.0, 2.0, 3.0], atol=1e-4)
    with pytest.raises(ValueError, match="frame: expected one of scene, data, sfm"):
        run.export_mesh(tmp_path / "x.ply", frame="world")
    del cfg["scene"]["sfm_transform"]
    (run_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="records no structure-from-motion frame"):
        aware3d.load(run_dir, device="cpu").export_mesh(tmp_path / "y.ply", frame="sfm")
    assert not (tmp_path / "y.ply").exists()


def _ply_vertices(path):
    from test_export import _read_ply  # the PLY reader of the export tests (tests/ is on the path)

    v, _ = _read_ply(path)
    return np.stack([v["x"], v["y"], v["z"]], -1).astype(np.float64)
