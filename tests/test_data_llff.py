"""LLFF poses_bounds.npy parser and NDC rays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aware3d.data import DataError, load_scene
from aware3d.data.llff import average_pose, ndc_rays
from aware3d.render.cameras import image_rays, intrinsics, look_at, opengl_to_llff

H, W, F = 16, 24, 20.0


def make_llff(root: Path, n=5, bounds=(2.0, 10.0), scaled=False):
    """n forward-facing cameras at z = 5 spread in x, y, all looking at (0, 0, -5) (OpenGL c2w,
    up +y), written as LLFF poses with hwf (16, 24, 20) and the given bounds."""
    eyes = torch.tensor([[0.4 * (i - n // 2), 0.1 * i, 5.0] for i in range(n)])
    c2w = look_at(eyes, torch.tensor([0.0, 0.0, -5.0]), up=(0.0, 1.0, 0.0)).double()
    llff = opengl_to_llff(c2w).numpy()  # (n, 3, 4)
    hwf = np.broadcast_to(np.array([H, W, F])[None, :, None], (n, 3, 1))
    arr = np.concatenate([np.concatenate([llff, hwf], -1).reshape(n, 15),
                          np.tile(np.array(bounds), (n, 1))], 1)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", arr)
    (root / "images").mkdir(exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), 30 * i, np.uint8)).save(root / "images" / f"IMG_{i:03d}.JPG", quality=100)
        if scaled:
            (root / "images_2").mkdir(exist_ok=True)
            Image.fromarray(np.full((H // 2, W // 2, 3), 30 * i + 1, np.uint8)).save(root / "images_2" / f"IMG_{i:03d}.png")
    return c2w, arr


def test_llff_raw_poses_round_trip(tmp_path):
    c2w, _ = make_llff(tmp_path)
    ds = load_scene(tmp_path, split="all", recenter=False, bd_factor=None)
    assert ds.format == "llff" and len(ds) == 5 and ds.images.shape == (5, H, W, 3)
    assert torch.allclose(ds.c2w.double(), c2w, atol=1e-6)
    assert ds.K[0].tolist() == [[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]
    assert ds.near == pytest.approx(1.8) and ds.far == pytest.approx(10.0)  # 0.9 * 2, 10
    assert ds.names[0] == "IMG_000.JPG"


def test_llff_rescale_recenter_split_and_downscale(tmp_path):
    make_llff(tmp_path, scaled=True)
    ds = load_scene(tmp_path, split="all")
    # bd_factor 0.75: scale = 1 / (2 * 0.75) -> near = 0.9 * 2 / 1.5 = 1.2, far = 10 / 1.5 = 6.667
    assert ds.near == pytest.approx(1.2) and ds.far == pytest.approx(10 / 1.5)
    # recentred: the average pose of the result is the identity
    assert np.allclose(average_pose(ds.c2w.double().numpy()), np.eye(4), atol=1e-6)
    # cameras still look roughly down -z after recentring
    assert (ds.c2w[:, 2, 2] > 0.9).all()
    # every 8th frame is held out: 5 frames -> test = [0], train = [1, 2, 3, 4]
    assert load_scene(tmp_path, split="test").names == ["IMG_000.JPG"]
    assert len(load_scene(tmp_path, split="train")) == 4
    # downscale 2 reads images_2/ (pixel value 30 i + 1) and halves K
    d2 = load_scene(tmp_path, split="all", downscale=2)
    assert d2.images.shape == (5, 8, 12, 3) and d2.K[0, 0, 0].item() == 10.0 and d2.K[0, 0, 2].item() == 6.0
    assert d2.images[1, 0, 0, 0].item() == pytest.approx(31 / 255)
    # the aabb contains all camera centres
    c = ds.c2w[:, :3, 3]
    assert ((c >= ds.aabb[:3] - 1e-6) & (c <= ds.aabb[3:] + 1e-6)).all()


def test_ndc_rays_axis_and_points_on_the_ndc_line():
    K = intrinsics(F, F, W / 2, H / 2, dtype=torch.float64)
    near = 1.0
    # The optical axis from the origin: NDC origin (0, 0, -1) and direction (0, 0, 2).
    o, d = ndc_rays(K, near, torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64))
    assert torch.allclose(o, torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64))
    assert torch.allclose(d, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))
    # For any ray, world points p at depth z map to NDC (-2f/W x/z, -2f/H y/z, 1 + 2 near / z),
    # which must lie on o_ndc + t d_ndc with t = 1 - o_z / p_z (o moved to z = -near).
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 3] = torch.tensor([0.1, -0.2, 0.3])
    ro, rd = image_rays(K, c2w, W, H)
    ro, rd = ro.reshape(-1, 3), rd.reshape(-1, 3)
    on, dn = ndc_rays(K, near, ro, rd)
    for s in (1.5, 3.0, 20.0):
        p = ro + s * rd
        z = p[:, 2]
        proj = torch.stack([-2 * F / W * p[:, 0] / z, -2 * F / H * p[:, 1] / z, 1 + 2 * near / z], -1)
        tz = 1 - (-near) / z
        assert torch.allclose(on + tz.unsqueeze(-1) * dn, proj, atol=1e-9)
    assert torch.allclose(on[:, 2], torch.full_like(on[:, 2], -1.0))  # all start on the near plane


@pytest.mark.parametrize("case,needle", [
    ("shape", "expected (N, 17)"), ("count", "has 5 poses but"), ("non_rigid", "frame 2: rotation is not rigid"),
    ("nan", "frame 2: non-finite"), ("bounds", "frame 2: bounds"),
])
def test_llff_bad_input(tmp_path, case, needle):
    _, arr = make_llff(tmp_path)
    if case == "shape":
        arr = arr[:, :15]
    elif case == "count":
        (tmp_path / "images" / "IMG_004.JPG").unlink()
    elif case == "non_rigid":
        arr[2, 1] *= 1.5  # x of the "right" column (about 1) -> not unit length
    elif case == "nan":
        arr[2, 3] = np.nan
    elif case == "bounds":
        arr[2, 15:] = (5.0, 1.0)
    np.save(tmp_path / "poses_bounds.npy", arr)
    with pytest.raises(DataError) as e:
        load_scene(tmp_path)
    assert "poses_bounds.npy" in str(e.value) and needle in str(e.value), str(e.value)
