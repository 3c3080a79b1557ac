"""nerfstudio / instant-ngp transforms.json parser."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aware3d.data import DataError, load_scene
from aware3d.render.cameras import look_at

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FOX = DATA / "instant_ngp" / "fox"


def make_ns(root: Path, missing=(2,), extra=None, frame_extra=None, size=(12, 10)):
    """3 frames of (w, h) = (12, 10) RGB, per-frame fl_x (20, 22, 24); frames listed in
    ``missing`` have no image file."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    w, h = size
    c2w = look_at(torch.tensor([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [-3.0, 0.0, 1.0]]))
    frames = []
    for i in range(3):
        if i not in missing:
            a = np.full((h, w, 3), 40 * (i + 1), np.uint8)
            Image.fromarray(a).save(root / "images" / f"f{i}.png")
        fr = {"file_path": f"images/f{i}.png", "transform_matrix": c2w[i].tolist(),
              "fl_x": 20.0 + 2 * i, "fl_y": 21.0 + 2 * i}
        fr.update((frame_extra or {}).get(i, {}))
        frames.append(fr)
    meta = {"w": w, "h": h, "cx": 6.5, "cy": 4.5, "frames": frames}
    meta.update(extra or {})
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))
    return c2w


def test_per_frame_intrinsics_and_one_warning_for_missing(tmp_path):
    c2w = make_ns(tmp_path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = load_scene(tmp_path, split="all", normalize=False)
    msgs = [str(w.message) for w in rec if "missing" in str(w.message)]
    assert len(msgs) == 1 and "skipped 1 of 3 frames" in msgs[0] and "f2.png" in msgs[0]
    assert ds.format == "nerfstudio" and len(ds) == 2 and ds.names == ["images/f0.png", "images/f1.png"]
    assert ds.images.shape == (2, 10, 12, 3)
    # per-frame focal lengths 20 / 22 (x) and 21 / 23 (y), shared principal point (6.5, 4.5)
    assert ds.K[:, 0, 0].tolist() == [20.0, 22.0] and ds.K[:, 1, 1].tolist() == [21.0, 23.0]
    assert ds.K[1, 0, 2].item() == 6.5 and ds.K[1, 1, 2].item() == 4.5
    assert torch.allclose(ds.c2w, c2w[:2], atol=1e-6)  # no scale/offset keys: poses unchanged
    assert ds.images[1, 0, 0, 0].item() == pytest.approx(80 / 255, abs=1e-6)
    assert ds.distortion is None
    # default split: every 8th present frame is held out -> frame 0 is "test", frame 1 "train"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_scene(tmp_path, split="test").names == ["images/f0.png"]
        assert load_scene(tmp_path, split="train").names == ["images/f1.png"]
    # plain nerfstudio: aabb = box of the (present) camera centres padded by 10 % of its size;
    # centres (3, 0, 1) and (0, 3, 1): x in [0, 3] -> [-0.3, 3.3]
    assert ds.aabb[0].item() == pytest.approx(-0.3, abs=1e-5) and ds.aabb[3].item() == pytest.approx(3.3, abs=1e-5)


def test_camera_angle_fallback_and_downscale(tmp_path):
    make_ns(tmp_path, missing=(), size=(16, 8),
            frame_extra={i: {"fl_x": None, "fl_y": None} for i in range(3)},
            extra={"camera_angle_x": 2 * math.atan(0.5), "cx": 8.0, "cy": 4.0})
    meta = json.loads((tmp_path / "transforms.json").read_text())
    for fr in meta["frames"]:
        del fr["fl_x"], fr["fl_y"]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_scene(tmp_path, split="all", downscale=2)
    # camera_angle_x = 2 atan(0.5) at w = 16 -> f = 8 / 0.5 = 16, fy = fx; halved -> 8
    assert ds.K[0, 0, 0].item() == pytest.approx(8.0) and ds.K[0, 1, 1].item() == pytest.approx(8.0)
    assert ds.images.shape == (3, 4, 8, 3) and ds.K[0, 0, 2].item() == 4.0


def test_undistortion_moves_a_dot_to_its_pinhole_position(tmp_path):
    # A bright dot drawn where a k1 = 0.3 lens images the ideal point (52, 12) (24 px right and
    # 20 px up from the centre of a 64x64 image with f = 50) must end up at (52, 12) after loading,
    # within 0.25 px; the lens had moved it by about 2.6 px.
    f, c, k1 = 50.0, 32.0, 0.3
    u, v = 52.0, 12.0
    x, y = (u - c) / f, (v - c) / f
    r2 = x * x + y * y
    ud, vd = c + f * x * (1 + k1 * r2), c + f * y * (1 + k1 * r2)
    assert math.hypot(ud - u, vd - v) > 2.0
    vv, uu = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5, indexing="ij")
    img = np.exp(-((uu - ud) ** 2 + (vv - vd) ** 2) / (2 * 1.2 ** 2))
    (tmp_path / "images").mkdir()
    Image.fromarray((img * 255).round().astype(np.uint8)).convert("RGB").save(tmp_path / "images" / "a.png")
    meta = {"fl_x": f, "fl_y": f, "cx": c, "cy": c, "w": 64, "h": 64, "k1": k1, "k2": 0.0,
            "p1": 0.0, "p2": 0.0,
            "frames": [{"file_path": "images/a.png", "transform_matrix": np.eye(4).tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    ds = load_scene(tmp_path, split="all", background="black")
    im = ds.images[0, :, :, 0].numpy()
    w = np.where(im > 0.2, im, 0)
    cu, cv = (w * uu).sum() / w.sum(), (w * vv).sum() / w.sum()
    assert math.hypot(cu - u, cv - v) < 0.25, (cu, cv)
    assert ds.distortion is not None and ds.distortion[0].tolist() == pytest.approx([0.3, 0, 0, 0])


def test_ngp_scale_offset_and_aabb(tmp_path):
    # instant-ngp keys: scale 0.5, offset (1, 0.5, 0.5), aabb_scale 2. Positions become
    # (p * 0.5 + offset - 0.5) / 0.33: camera (3, 0, 1) -> (2.0 / 0.33, 0, 0.5 / 0.33); aabb is
    # +-2 / (2 * 0.33) = +-3.0303.
    make_ns(tmp_path, missing=(), extra={"scale": 0.5, "offset": [1.0, 0.5, 0.5], "aabb_scale": 2})
    ds = load_scene(tmp_path, split="all")
    assert ds.format == "instant-ngp"
    assert torch.allclose(ds.c2w[0, :3, 3], torch.tensor([2.0 / 0.33, 0.0, 0.5 / 0.33]), atol=1e-5)
    assert ds.aabb[3].item() == pytest.approx(1 / 0.33, rel=1e-6) and ds.aabb[0].item() == pytest.approx(-1 / 0.33, rel=1e-6)
    # rotations are untouched
    c2w = look_at(torch.tensor([[3.0, 0.0, 1.0]]))[0]
    assert torch.allclose(ds.c2w[0, :3, :3], c2w[:3, :3], atol=1e-6)
    assert 0 < ds.near < ds.far


@pytest.mark.parametrize("case,needle", [
    ("non_rigid", "not rigid"), ("size", "expected 12x10"), ("no_focal", "no focal length"),
    ("inf", "non-finite"),
])
def test_bad_frames(tmp_path, case, needle):
    make_ns(tmp_path, missing=())
    f = tmp_path / "transforms.json"
    meta = json.loads(f.read_text())
    fr = meta["frames"][1]
    if case == "non_rigid":
        fr["transform_matrix"][0][1] += 0.2  # shear
    elif case == "size":
        Image.new("RGB", (12, 11)).save(tmp_path / "images" / "f1.png")
    elif case == "no_focal":
        del fr["fl_x"], fr["fl_y"]
    elif case == "inf":
        fr["transform_matrix"][2][3] = float("inf")
    f.write_text(json.dumps(meta))
    with pytest.raises(DataError) as e:
        load_scene(tmp_path, split="all")
    msg = str(e.value)
    assert "transforms.json" in msg and "frame 1" in msg and "f1.png" in msg and needle in msg, msg


def test_malformed_json_line(tmp_path):
    make_ns(tmp_path, missing=())
    f = tmp_path / "transforms.json"
    lines = f.read_text().splitlines()
    assert lines[3] == '  "cx": 6.5,'
    lines[3] = '  "cx": 6.5'  # drop the comma ending line 4: the parser trips on line 5
    f.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"transforms.json: malformed JSON at line 5"):
        load_scene(tmp_path)


@pytest.mark.skipif(not (FOX / "transforms.json").is_file(),
                    reason=f"real data not present: {FOX} (instant-ngp fox, see ../shared/data)")
def test_real_fox_50_of_67_frames_one_warning():
    # README: 67 frames in transforms.json, 50 JPEGs (1080x1920) on disk; fl_x = 1375.52.
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ds = load_scene(FOX, split="all", downscale=8)
    msgs = [str(w.message) for w in rec if "missing" in str(w.message)]
    assert len(msgs) == 1 and "skipped 17 of 67 frames" in msgs[0]
    assert len(ds) == 50 and ds.images.shape == (50, 240, 135, 3)
    assert ds.K[0, 0, 0].item() == pytest.approx(1375.52 / 8, rel=1e-6)
    assert ds.K[0, 0, 2].item() == pytest.approx(554.558 / 8, rel=1e-6)
    assert ds.distortion is not None and ds.distortion[0, 0].item() == pytest.approx(0.0578421)
    # aabb_scale 4 -> +-4 / (2 * 0.33) = +-6.0606 in file units; cameras 3.8..6.4 from the origin
    assert ds.aabb[3].item() == pytest.approx(2 / 0.33, rel=1e-6)
    meta = json.loads((FOX / "transforms.json").read_text())
    first = torch.tensor(meta["frames"][0]["transform_matrix"], dtype=torch.float32)
    assert ds.names[0] == "images/0001.jpg" and torch.allclose(ds.c2w[0], first, atol=1e-6)
    assert "images/0005.jpg" not in ds.names  # listed in the README as missing
    assert 0.2 < ds.images.mean().item() < 0.8
