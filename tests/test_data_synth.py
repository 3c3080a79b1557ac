"""Analytic ray caster and the built-in synthetic datasets (aware3d.data.synth)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aware3d.data import load_scene
from aware3d.data.imagefolder import ImageFolderDataset
from aware3d.data.synth import (Primitive, pack_scenes, render_views, synth_objects, synth_scene,
                                _bound_radius)
from aware3d.render.cameras import intrinsics_from_fov, look_at, sample_poses_sphere, \
    spherical_to_cartesian


def _cam(eye, fov=30.0, res=65):
    """Camera at ``eye`` looking at the origin; odd resolution so the centre pixel's ray is the
    optical axis exactly."""
    c2w = look_at(torch.tensor([eye], dtype=torch.float32))
    return intrinsics_from_fov(fov, res), c2w, res


def _render(prims, eye, fov=30.0, res=65):
    K, c2w, res = _cam(eye, fov, res)
    return render_views(prims, K, c2w, res, res, shadows=False), K, c2w, res


def test_sphere_centre_depth_is_distance_minus_radius():
    # Sphere r = 0.5 at the origin, camera at distance D = 4 on +z: the centre ray hits the near
    # pole, so depth = D - r = 3.5 exactly (up to float32 rounding).
    out, *_ = _render([Primitive.sphere((0, 0, 0), 0.5)], (0.0, 0.0, 4.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.5, abs=1e-5)
    # ... and from the side (camera on +x), the same 3.5.
    out, *_ = _render([Primitive.sphere((0, 0, 0), 0.5)], (4.0, 0.0, 0.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.5, abs=1e-5)
    # A sphere off the origin: centre (0.3, -0.2, 0.1), camera 4 units above it along +z, looking
    # at the origin, is not on the axis; instead check the world hit point lies on the sphere.
    prims = [Primitive.sphere((0.3, -0.2, 0.1), 0.4)]
    out, K, c2w, res = _render(prims, (0.0, 0.0, 4.0))
    from aware3d.render.cameras import image_rays
    o, d = image_rays(K, c2w, res, res)
    m = out["mask"][0]
    p = o[0][m] + out["depth"][0][m].unsqueeze(-1) * d[0][m]
    dist = (p - torch.tensor([0.3, -0.2, 0.1])).norm(dim=-1)
    assert m.sum() > 100
    assert torch.allclose(dist, torch.full_like(dist, 0.4), atol=1e-4)  # every hit is on the surface


def test_sphere_mask_matches_analytic_disc():
    # Seen from distance D, a sphere of radius r covers the pixels whose ray makes an angle below
    # asin(r / D) with the optical axis. Pixels within 1e-4 rad of the boundary are excluded.
    r, D, res, fov = 0.7, 3.0, 65, 40.0
    out, K, c2w, res = _render([Primitive.sphere((0, 0, 0), r)], (0.0, 0.0, D), fov, res)
    f, c = K[0, 0].item(), K[0, 2].item()
    v, u = np.meshgrid(np.arange(res) + 0.5, np.arange(res) + 0.5, indexing="ij")
    theta = np.arctan(np.hypot(u - c, v - c) / f)
    alpha = math.asin(r / D)
    expect = theta < alpha
    keep = np.abs(theta - alpha) > 1e-4
    got = out["mask"][0].numpy()
    assert (got[keep] == expect[keep]).all()
    n_expected = int(expect.sum())
    assert n_expected > 500  # the disc is big enough for the test to mean something
    assert abs(int(got.sum()) - n_expected) <= int((~keep).sum())
    # background depth is 0 (documented convention), object depth in (D - r, D)
    d = out["depth"][0].numpy()
    assert (d[~got] == 0).all() and (d[got] > D - r - 1e-5).all() and (d[got] < D).all()


def test_box_faces_and_rotated_box_edge():
    # Unit cube (half extent 0.5) at the origin, camera at D = 4 on +z: the top face is at z = 0.5,
    # so depth along a ray with angle theta from the axis is (D - 0.5) / cos(theta); centre = 3.5.
    box = [Primitive("box", (0, 0, 0), (0.5, 0.5, 0.5))]
    out, K, c2w, res = _render(box, (0.0, 0.0, 4.0))
    f = K[0, 0].item()
    for i, j in [(32, 32), (30, 36), (35, 29)]:
        du, dv = j + 0.5 - 32.5, i + 0.5 - 32.5
        cos = 1.0 / math.sqrt(1 + (du * du + dv * dv) / (f * f))
        assert out["depth"][0, i, j].item() == pytest.approx(3.5 / cos, abs=1e-4)
    # normal of the top face points at the camera (+z)
    assert torch.allclose(out["normal"][0, 32, 32], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    # The same cube rotated 45 degrees about z, seen from +x: the nearest thing on the axis is a
    # vertical edge at x = 0.5 * sqrt(2), so depth = 4 - 0.70711.
    rbox = [Primitive("box", (0, 0, 0), (0.5, 0.5, 0.5), rotation=(0, 0, 45))]
    out, *_ = _render(rbox, (4.0, 0.0, 0.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(4 - 0.5 * math.sqrt(2), abs=1e-4)
    # A non-cubic box: half extents (0.2, 0.6, 0.3), seen from +y: face at y = 0.6 -> 3.4.
    out, *_ = _render([Primitive("box", (0, 0, 0), (0.2, 0.6, 0.3))], (0.0, 4.0, 0.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.4, abs=1e-5)


def test_cylinder_and_cone_depths():
    cyl = [Primitive("cylinder", (0, 0, 0), (0.3, 0.3, 0.6))]
    out, *_ = _render(cyl, (0.0, 0.0, 4.0))   # top cap at z = 0.6 -> 3.4
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.4, abs=1e-5)
    out, *_ = _render(cyl, (4.0, 0.0, 0.0))   # side at x = 0.3 -> 3.7
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.7, abs=1e-5)
    cone = [Primitive("cone", (0, 0, 0), (0.4, 0.4, 0.5))]
    # From the side at mid height (z = 0), the cone's radius is half the base radius: 4 - 0.2.
    out, *_ = _render(cone, (4.0, 0.0, 0.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.8, abs=1e-5)
    # From below, the base cap at z = -0.5: 4 - 0.5; from above, the apex at z = 0.5: 3.5.
    out, *_ = _render(cone, (0.0, 0.0, -4.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.5, abs=1e-5)
    out, *_ = _render(cone, (0.0, 0.0, 4.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(3.5, abs=1e-4)


def test_nearest_of_two_and_floor_and_shadow():
    # Two spheres on the axis: the nearer (centre z = 1, r 0.3) occludes the other -> depth 3 - 0.3.
    prims = [Primitive.sphere((0, 0, -1), 0.5, (1, 0, 0)), Primitive.sphere((0, 0, 1), 0.3, (0, 1, 0))]
    out, *_ = _render(prims, (0.0, 0.0, 4.0))
    assert out["depth"][0, 32, 32].item() == pytest.approx(2.7, abs=1e-5)
    assert out["index"][0, 32, 32].item() == 1
    # Floor z = 0 seen from straight above at height 4 with nothing on it: depth 4, not a mask hit.
    K, c2w, res = _cam((0.0, 0.0, 4.0))
    r = render_views([Primitive.sphere((5, 5, 5), 0.1)], K, c2w, res, res, floor_z=0.0)
    assert r["depth"][0, 32, 32].item() == pytest.approx(4.0, abs=1e-5)
    assert not r["mask"][0, 32, 32] and r["index"][0, 32, 32].item() == -2
    # Light straight up (+z), no specular: a lit floor point is grey 0.5 * (0.25 + 0.75 * 1) = 0.5;
    # a floor point under a sphere gets ambient only, 0.5 * 0.25 = 0.125.
    light = (0.0, 0.0, 1.0)
    r1 = render_views([Primitive.sphere((3, 3, 1), 0.2)], K, c2w, res, res, floor_z=0.0,
                      light_dir=light, specular=0.0)
    assert r1["rgb"][0, 32, 32, 0].item() == pytest.approx(0.5, abs=1e-5)
    c2w_oblique = look_at(torch.tensor([[2.0, 0.0, 3.0]]))  # sees the origin past the sphere
    r2 = render_views([Primitive.sphere((0, 0, 1), 0.2)], K, c2w_oblique, res, res, floor_z=0.0,
                      light_dir=light, specular=0.0)
    assert r2["index"][0, 32, 32].item() == -2  # the floor, not the sphere
    assert r2["rgb"][0, 32, 32, 0].item() == pytest.approx(0.125, abs=1e-5)
    r3 = render_views([Primitive.sphere((0, 0, 1), 0.2)], K, c2w_oblique, res, res, floor_z=0.0,
                      light_dir=light, specular=0.0, shadows=False)
    assert r3["rgb"][0, 32, 32, 0].item() == pytest.approx(0.5, abs=1e-5)


def test_synth_scene_round_trips_through_blender_parser(tmp_path):
    # 10 views at 32 px split 8/1/1; the parser must return exactly the written poses, which are
    # sample_poses_sphere(10, 4.0, upper hemisphere) with generator seed 0.
    meta = synth_scene(tmp_path, n_views=10, resolution=32, seed=0, progress=False)
    assert meta["split_sizes"] == [8, 1, 1]
    expect = sample_poses_sphere(10, 4.0, (0.0, 90.0), generator=torch.Generator().manual_seed(0))
    ds = load_scene(tmp_path, split="all")
    assert ds.format == "blender" and len(ds) == 10
    assert ds.images.shape == (10, 32, 32, 3) and ds.width == ds.height == 32
    assert torch.allclose(ds.c2w, expect, atol=1e-6)
    assert (ds.c2w[:, :3, 3].norm(dim=-1) - 4.0).abs().max() < 1e-5  # all on the radius-4 sphere
    assert (ds.c2w[:, 2, 3] >= 0).all()  # upper hemisphere
    # K from camera_angle_x = 40 degrees at 32 px: f = 16 / tan(20 deg) = 43.959
    assert ds.K[0, 0, 0].item() == pytest.approx(16 / math.tan(math.radians(20)), rel=1e-5)
    # depth present, > 0 exactly where alpha = 1 (alpha is the 0/1 object mask)
    assert ds.depths is not None and ds.alphas is not None
    assert torch.equal(ds.depths > 0, ds.alphas > 0.5)
    assert set(torch.unique(ds.alphas).tolist()) <= {0.0, 1.0}
    # background composited on white
    assert torch.all(ds.images[ds.alphas == 0] == 1.0)
    # every depth point lies inside the scene aabb written to scene.json
    o, d = ds.rays()
    m = ds.depths > 0
    p = o[m] + ds.depths[m].unsqueeze(-1) * d[m]
    lo, hi = ds.aabb[:3], ds.aabb[3:]
    assert ((p >= lo - 1e-4) & (p <= hi + 1e-4)).all()
    assert ds.near == pytest.approx(meta["near"]) and ds.far == pytest.approx(meta["far"])
    # the val split holds exactly 1 frame, named ./val/r_0
    val = load_scene(tmp_path, split="val")
    assert val.names == ["./val/r_0"]
    # JSON matches what the parser returned (first train frame)
    tj = json.loads((tmp_path / "transforms_train.json").read_text())
    assert torch.allclose(torch.tensor(tj["frames"][0]["transform_matrix"]), ds.c2w[0], atol=1e-7)


def test_synth_scene_is_deterministic_and_full_sphere(tmp_path):
    synth_scene(tmp_path / "a", n_views=4, resolution=16, seed=3, hemisphere=False, progress=False)
    synth_scene(tmp_path / "b", n_views=4, resolution=16, seed=3, hemisphere=False, progress=False)
    synth_scene(tmp_path / "c", n_views=4, resolution=16, seed=4, hemisphere=False, progress=False)
    a = (tmp_path / "a" / "transforms_train.json").read_bytes()
    assert a == (tmp_path / "b" / "transforms_train.json").read_bytes()
    assert a != (tmp_path / "c" / "transforms_train.json").read_bytes()
    assert (tmp_path / "a/train/r_0.png").read_bytes() == (tmp_path / "b/train/r_0.png").read_bytes()
    depth = np.load(tmp_path / "a/train/r_0_depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (16, 16)


def test_synth_objects_labels_and_determinism(tmp_path):
    meta = synth_objects(tmp_path / "a", count=6, resolution=24, objects=(1, 3), seed=1,
                         progress=False, supersample=1)
    assert len(meta["images"]) == 6
    files = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert files == [f"{i:06d}.png" for i in range(6)]
    labels = json.loads((tmp_path / "a" / "labels.json").read_text())["images"]
    for lab in labels:
        objs = lab["objects"]
        assert 1 <= len(objs) <= 3
        for o in objs:  # resting on the floor: centre height = size
            assert o["position"][2] == pytest.approx(o["size"])
            assert 20.0 <= lab["camera"]["elevation"] <= 60.0
        for i in range(len(objs)):  # non-overlapping footprints
            for j in range(i):
                a, b = objs[i], objs[j]
                dist = math.hypot(a["position"][0] - b["position"][0], a["position"][1] - b["position"][1])
                assert dist > _bound_radius(a["shape"], a["size"]) + _bound_radius(b["shape"], b["size"])
        cam = lab["camera"]  # c2w is look_at from the stated elevation / azimuth / radius
        eye = spherical_to_cartesian(cam["radius"], cam["elevation"], cam["azimuth"])
        assert torch.allclose(torch.tensor(cam["c2w"]), look_at(eye), atol=1e-5)
    synth_objects(tmp_path / "b", count=6, resolution=24, objects=(1, 3), seed=1, progress=False,
                  supersample=1)
    assert (tmp_path / "a/labels.json").read_bytes() == (tmp_path / "b/labels.json").read_bytes()
    assert (tmp_path / "a/images/000003.png").read_bytes() == (tmp_path / "b/images/000003.png").read_bytes()
    # the folder loads as a GAN dataset with its labels aligned to the images
    ds = ImageFolderDataset(tmp_path / "a", 24)
    assert len(ds) == 6 and ds.labels is not None and ds.labels[2]["file"] == "images/000002.png"
    # an image is not a flat colour (objects and shading are visible)
    assert ds.images.float().std() > 5


def test_packed_batch_equals_single_renders():
    # Rendering two different scenes as one packed batch gives the same pixels as one at a time.
    K, c2w, res = _cam((3.0, 1.0, 2.0), res=17)
    s1 = [Primitive("cone", (0.2, 0, 0), (0.3, 0.3, 0.4), (1, 0, 0), (10, 20, 30))]
    s2 = [Primitive("box", (0, 0.1, 0), (0.3, 0.2, 0.4), (0, 1, 0)), Primitive.sphere((0.5, 0.5, 0), 0.3)]
    both = render_views(pack_scenes([s1, s2]), K, c2w.expand(2, 4, 4), res, res, floor_z=-0.5)
    a = render_views(s1, K, c2w, res, res, floor_z=-0.5)
    b = render_views(s2, K, c2w, res, res, floor_z=-0.5)
    assert torch.allclose(both["rgb"][0], a["rgb"][0], atol=1e-6)
    assert torch.allclose(both["rgb"][1], b["rgb"][0], atol=1e-6)
    assert torch.equal(both["mask"][1], b["mask"][0])
