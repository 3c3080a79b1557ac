"""Blender / NeRF-synthetic parser, load_scene detection and bad-input errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aware3d.data import DataError, detect_format, load_scene
from aware3d.render.cameras import look_at

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEGO = DATA / "nerf_synthetic" / "lego"
ANGLE = 0.6911112070083618


def make_blender(root: Path, n=2, size=(8, 8), split="train"):
    """n frames of size (w, h): RGBA, left half red with alpha 0.5 ((255, 0, 0, 128)), right half
    transparent; poses look at the origin from radius 4."""
    root.mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(exist_ok=True)
    w, h = size
    c2w = look_at(torch.tensor([[4.0, 0.0, 1.0], [0.0, 4.0, 1.0], [-4.0, 0.0, 2.0]][:n]))
    frames = []
    for i in range(n):
        a = np.zeros((h, w, 4), np.uint8)
        a[:, : w // 2] = (255, 0, 0, 128)
        Image.fromarray(a, "RGBA").save(root / split / f"r_{i}.png")
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()})
    (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": ANGLE, "frames": frames}, indent=2))
    return c2w


def test_blender_fixture_compositing_downscale_and_K(tmp_path):
    c2w = make_blender(tmp_path)
    ds = load_scene(tmp_path)
    assert ds.format == "blender" and len(ds) == 2 and ds.images.shape == (2, 8, 8, 3)
    assert torch.allclose(ds.c2w, c2w, atol=1e-6)
    # red (1, 0, 0) at alpha 128/255 over white: (1, 1 - a, 1 - a) with a = 0.50196
    a = 128 / 255
    assert torch.allclose(ds.images[0, 0, 0], torch.tensor([1.0, 1 - a, 1 - a]), atol=1e-6)
    assert torch.allclose(ds.images[0, 0, 7], torch.ones(3))  # transparent -> white
    assert ds.alphas[0, 0, 0].item() == pytest.approx(a, abs=1e-6)
    # black background: (a, 0, 0)
    dsb = load_scene(tmp_path, background="black")
    assert torch.allclose(dsb.images[0, 0, 0], torch.tensor([a, 0.0, 0.0]), atol=1e-6)
    # f = 0.5 * 8 / tan(ANGLE / 2) = 11.5741 at full size, half of it after downscale 2
    f = 4 / math.tan(ANGLE / 2)
    assert ds.K[0, 0, 0].item() == pytest.approx(f, rel=1e-6) and ds.K[0, 0, 2].item() == 4.0
    ds2 = load_scene(tmp_path, downscale=2)
    assert ds2.images.shape == (2, 4, 4, 3) and ds2.width == 4
    assert ds2.K[0, 0, 0].item() == pytest.approx(f / 2, rel=1e-6) and ds2.K[0, 1, 2].item() == 2.0
    # a 2x2 block fully inside the red half keeps the colour after area downscaling
    assert torch.allclose(ds2.images[0, 0, 0], ds.images[0, 0, 0], atol=1e-6)
    # default aabb is the NeRF-synthetic cube; near = distance from camera (4, 0, 1) to the face
    # x = 1.5 -> 2.5; far = camera (4, 0, 1) to corner (-1.5, 1.5, -1.5) -> sqrt(38.75) = 6.2249
    assert ds.aabb.tolist() == [-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]
    assert ds.near == pytest.approx(2.5, abs=1e-6) and ds.far == pytest.approx(math.sqrt(38.75), abs=1e-6)


def test_detect_format_and_nothing_matches(tmp_path):
    make_blender(tmp_path / "b")
    assert detect_format(tmp_path / "b")[0] == "blender"
    assert detect_format(tmp_path / "b" / "transforms_train.json")[0] == "blender"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_scene(tmp_path / "empty")
    msg = str(e.value)
    assert "empty" in msg and "transforms.json" in msg and "poses_bounds.npy" in msg and "COLMAP" in msg
    with pytest.raises(DataError, match="no such file"):
        load_scene(tmp_path / "nope")
    with pytest.raises(DataError, match="transforms_val.json"):
        load_scene(tmp_path / "b", split="val")


def test_malformed_json_reports_file_and_line(tmp_path):
    make_blender(tmp_path)
    f = tmp_path / "transforms_train.json"
    lines = f.read_text().splitlines()
    lines[2] = lines[2] + ","  # a trailing comma breaks line 3 ("frames": [ ,)
    f.write_text("\n".join(lines))
    with pytest.raises(DataError) as e:
        load_scene(tmp_path)
    assert "transforms_train.json" in str(e.value) and "line 3" in str(e.value)


@pytest.mark.parametrize("case,needle", [
    ("missing_image", "does not exist"),
    ("size_mismatch", "expected 8x8"),
    ("non_rigid", "not rigid"),
    ("non_finite", "non-finite"),
    ("bad_shape", "4x4"),
    ("corrupt_image", "cannot decode"),
])
def test_bad_frame_raises_dataerror_naming_file_and_frame(tmp_path, case, needle):
    make_blender(tmp_path, n=3)
    f = tmp_path / "transforms_train.json"
    meta = json.loads(f.read_text())
    fr = meta["frames"][1]
    if case == "missing_image":
        (tmp_path / "train" / "r_1.png").unlink()
    elif case == "size_mismatch":
        Image.new("RGBA", (6, 8)).save(tmp_path / "train" / "r_1.png")
    elif case == "non_rigid":
        m = np.array(fr["transform_matrix"])
        m[:3, :3] *= 1.1  # a scaled rotation: R^T R = 1.21 I
        fr["transform_matrix"] = m.tolist()
    elif case == "non_finite":
        fr["transform_matrix"][0][3] = float("nan")
    elif case == "bad_shape":
        fr["transform_matrix"] = fr["transform_matrix"][:2]
    elif case == "corrupt_image":
        (tmp_path / "train" / "r_1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    f.write_text(json.dumps(meta))  # json.dumps writes NaN, which Python's json reads back
    with pytest.raises(DataError) as e:
        load_scene(tmp_path)
    msg = str(e.value)
    assert "transforms_train.json" in msg and "frame 1" in msg and "r_1" in msg, msg
    assert needle in msg, msg


def test_blender_reads_depth_next_to_image(tmp_path):
    make_blender(tmp_path, n=1)
    d = np.full((8, 8), 3.25, np.float32)
    d[:, 4:] = np.inf  # background written as inf -> stored as 0
    np.save(tmp_path / "train" / "r_0_depth.npy", d)
    ds = load_scene(tmp_path)
    assert ds.depths is not None and ds.depths[0, 0, 0].item() == 3.25 and ds.depths[0, 0, 7].item() == 0
    ds2 = load_scene(tmp_path, downscale=2)  # valid-pixel block average keeps 3.25
    assert ds2.depths.shape == (1, 4, 4) and ds2.depths[0, 0, 0].item() == pytest.approx(3.25)


@pytest.mark.skipif(not (LEGO / "transforms_val.json").is_file(),
                    reason=f"real data not present: {LEGO} (nerf_synthetic lego, see ../shared/data)")
def test_real_lego_val_downscale_8():
    # The shared lego has 80/10/10 views of 800x800 RGBA; val at downscale 8 -> 10 x 100 x 100.
    ds = load_scene(LEGO, split="val", downscale=8)
    assert len(ds) == 10 and ds.images.shape == (10, 100, 100, 3)
    assert ds.names[0] == "./val/r_3"  # README: val = frames with N % 10 == 3
    # f = 400 / tan(0.6911112 / 2) / 8 = 138.8889
    assert ds.K[0, 0, 0].item() == pytest.approx(400 / math.tan(ANGLE / 2) / 8, rel=1e-5)
    meta = json.loads((LEGO / "transforms_val.json").read_text())
    assert torch.allclose(ds.c2w[0], torch.tensor(meta["frames"][0]["transform_matrix"]), atol=1e-6)
    # cameras at radius ~4.03 (the usual NeRF-synthetic setup)
    assert ds.c2w[:, :3, 3].norm(dim=-1).min() == pytest.approx(4.0311, abs=1e-3)
    # alpha present; transparent pixels composited on white; the object covers part of the frame
    assert ds.alphas is not None
    assert torch.all(ds.images[ds.alphas == 0] == 1.0)
    assert 0.05 < ds.alphas.mean().item() < 0.6
