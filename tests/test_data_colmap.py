"""COLMAP readers / writers (text and binary) and the COLMAP scene loader."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from aware3d.data import DataError, detect_format, load_scene
from aware3d.data import colmap as cm
from aware3d.render.cameras import c2w_to_colmap, sample_poses_sphere


def make_model(n=4):
    """Two cameras (PINHOLE 16x12 and SIMPLE_RADIAL with k = 0) and n images on a sphere of radius
    3 (seed 5), with a few 2D points, plus 3 3D points."""
    c2w = sample_poses_sphere(n, 3.0, (10.0, 60.0), generator=torch.Generator().manual_seed(5)).double()
    q, t = c2w_to_colmap(c2w)
    cams = {1: cm.Camera(1, "PINHOLE", 16, 12, np.array([14.0, 15.0, 8.0, 6.0])),
            2: cm.Camera(2, "SIMPLE_RADIAL", 16, 12, np.array([14.5, 8.0, 6.0, 0.0]))}
    imgs = {}
    for i in range(n):
        imgs[10 + i] = cm.Image(10 + i, q[i].numpy(), t[i].numpy(), 1 + i % 2, f"img_{i:02d}.png",
                                np.array([[1.5, 2.25], [3.0, 4.0]]) * (i + 1), np.array([0, -1], np.int64))
    pts = {0: cm.Point3D(0, np.array([0.1, 0.2, 0.3]), np.array([255, 0, 10], np.uint8), 0.5,
                         np.array([10, 11], np.int32), np.array([0, 0], np.int32)),
           1: cm.Point3D(1, np.array([-0.5, 0.4, 0.0]), np.array([1, 2, 3], np.uint8), 1.25),
           2: cm.Point3D(2, np.array([0.3, -0.6, 0.5]), np.array([9, 9, 9], np.uint8), 0.0)}
    return cams, imgs, pts, c2w


def write_images(root: Path, n=4, size=(16, 12)):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        PILImage.fromarray(np.full((size[1], size[0], 3), 20 * i, np.uint8)).save(root / "images" / f"img_{i:02d}.png")


@pytest.mark.parametrize("ext", [".txt", ".bin"])
def test_model_round_trip(tmp_path, ext):
    cams, imgs, pts, _ = make_model()
    cm.write_model(tmp_path, cams, imgs, pts, ext=ext)
    c2, i2, p2 = cm.read_model(tmp_path)
    assert sorted(c2) == [1, 2] and sorted(i2) == [10, 11, 12, 13] and sorted(p2) == [0, 1, 2]
    for k in cams:  # params written as repr / float64 -> read back exactly
        assert c2[k].model == cams[k].model and (c2[k].width, c2[k].height) == (16, 12)
        assert np.array_equal(c2[k].params, cams[k].params)
    for k in imgs:
        assert np.array_equal(i2[k].qvec, imgs[k].qvec) and np.array_equal(i2[k].tvec, imgs[k].tvec)
        assert i2[k].name == imgs[k].name and i2[k].camera_id == imgs[k].camera_id
        assert np.array_equal(i2[k].xys, imgs[k].xys) and np.array_equal(i2[k].point3D_ids, imgs[k].point3D_ids)
    assert np.array_equal(p2[0].xyz, pts[0].xyz) and p2[0].rgb.tolist() == [255, 0, 10]
    assert p2[0].image_ids.tolist() == [10, 11] and p2[1].error == 1.25 and len(p2[1].image_ids) == 0


def test_text_and_binary_load_equal_poses(tmp_path):
    cams, imgs, pts, c2w = make_model()
    for ext, d in ((".bin", tmp_path / "b"), (".txt", tmp_path / "t")):
        write_images(d)
        cm.write_model(d / "sparse" / "0", cams, imgs, pts, ext=ext)
    assert detect_format(tmp_path / "b")[0] == "colmap"
    b = load_scene(tmp_path / "b", split="all", normalize=False)
    t = load_scene(tmp_path / "t", split="all", normalize=False)
    assert b.format == "colmap" and len(b) == 4 and b.images.shape == (4, 12, 16, 3)
    # poses: colmap_to_c2w(c2w_to_colmap(c2w)) == c2w, frames sorted by name img_00..img_03
    assert torch.allclose(b.c2w.double(), c2w, atol=1e-5) and torch.allclose(t.c2w, b.c2w, atol=1e-7)
    # camera 1 PINHOLE (14, 15, 8, 6); camera 2 SIMPLE_RADIAL f 14.5
    assert b.K[0].tolist() == [[14.0, 0.0, 8.0], [0.0, 15.0, 6.0], [0.0, 0.0, 1.0]]
    assert b.K[1, 0, 0].item() == 14.5 and b.K[1, 1, 1].item() == 14.5
    assert b.distortion is None  # k = 0 -> nothing to undistort
    assert b.images[2, 0, 0, 0].item() == pytest.approx(40 / 255)
    # aabb from the 3 points (1st..99th percentile + 10 % pad) contains all of them
    assert (b.aabb[:3] <= torch.tensor([-0.5, -0.6, 0.0])).all() and (b.aabb[3:] >= torch.tensor([0.3, 0.4, 0.5])).all()
    assert 0 < b.near < 3.0 < b.far  # points lie about 3 units from the cameras
    # the model folder itself and "sparse/" (no 0) are found too
    assert len(load_scene(tmp_path / "b" / "sparse" / "0", split="all", images_dir=tmp_path / "b" / "images")) == 4
    # downscale 2 -> 8x6, K halved
    h = load_scene(tmp_path / "b", split="all", downscale=2)
    assert h.images.shape == (4, 6, 8, 3) and h.K[0, 0, 0].item() == 7.0 and h.K[0, 0, 2].item() == 4.0


def test_camera_models_intrinsics():
    models = {
        "SIMPLE_PINHOLE": ([10, 5, 4], [0, 0, 0, 0]),
        "PINHOLE": ([10, 11, 5, 4], [0, 0, 0, 0]),
        "SIMPLE_RADIAL": ([10, 5, 4, 0.1], [0.1, 0, 0, 0]),
        "RADIAL": ([10, 5, 4, 0.1, -0.02], [0.1, -0.02, 0, 0]),
        "OPENCV": ([10, 11, 5, 4, 0.1, -0.02, 0.001, 0.002], [0.1, -0.02, 0.001, 0.002]),
    }
    for name, (params, dist) in models.items():
        K, d = cm.camera_intrinsics(cm.Camera(1, name, 10, 8, np.array(params, float)))
        assert K[0, 2] == 5 and K[1, 2] == 4 and K[0, 0] == 10
        assert d.tolist() == pytest.approx(dist)
    with pytest.raises(DataError, match="OPENCV_FISHEYE is not supported"):
        cm.camera_intrinsics(cm.Camera(3, "OPENCV_FISHEYE", 10, 8, np.zeros(8)))


def test_truncated_binary_and_bad_text(tmp_path):
    cams, imgs, pts, _ = make_model()
    cm.write_model(tmp_path, cams, imgs, pts, ext=".bin")
    data = (tmp_path / "images.bin").read_bytes()
    (tmp_path / "images.bin").write_bytes(data[:-20])
    with pytest.raises(DataError) as e:
        cm.read_images_binary(tmp_path / "images.bin")
    assert "images.bin" in str(e.value) and "truncated" in str(e.value) and "image 13" in str(e.value)
    cm.write_model(tmp_path / "t", cams, imgs, ext=".txt")
    f = tmp_path / "t" / "cameras.txt"
    lines = f.read_text().splitlines()
    assert lines[3].startswith("1 PINHOLE")
    lines[3] = lines[3].rsplit(" ", 1)[0]  # drop one param on line 4
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"cameras.txt: line 4: camera 1: model PINHOLE needs 4 params, got 3"):
        cm.read_cameras_text(f)


@pytest.mark.parametrize("case,needle", [
    ("missing_camera", "camera 7 is not in"), ("missing_image", "does not exist"),
    ("bad_quat", "quaternion norm"), ("nan", "non-finite"), ("size", "expected 16x12"),
])
def test_bad_frames_name_file_and_frame(tmp_path, case, needle):
    cams, imgs, pts, _ = make_model()
    write_images(tmp_path)
    im = imgs[11]  # the frame with name img_01.png, frame 1 in sorted order
    if case == "missing_camera":
        im.camera_id = 7
    elif case == "missing_image":
        (tmp_path / "images" / "img_01.png").unlink()
    elif case == "bad_quat":
        im.qvec = im.qvec * 2
    elif case == "nan":
        im.tvec = np.array([0.0, np.nan, 1.0])
    elif case == "size":
        PILImage.new("RGB", (16, 13)).save(tmp_path / "images" / "img_01.png")
    cm.write_model(tmp_path / "sparse" / "0", cams, imgs, pts, ext=".bin")
    with pytest.raises(DataError) as e:
        load_scene(tmp_path, split="all")
    msg = str(e.value)
    assert "images.bin" in msg and "frame 1" in msg and "img_01.png" in msg and needle in msg, msg
