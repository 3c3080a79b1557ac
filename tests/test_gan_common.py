"""Shared GAN-method helpers: radiance rendering with hierarchical samples, depth reprojection,
camera sweeps, density meshes, config overrides and mapped datasets."""
import math

import numpy as np
import pytest
import torch

import aware3d

from aware3d.methods import gan_common as gc
from aware3d.programs.gan import _program_inputs
from aware3d.methods import graf
from aware3d.render.cameras import image_rays, intrinsics_from_fov, look_at, spherical_to_cartesian
from aware3d.render.samplers import near_far_sphere


def _half_space(points, dirs):
    """Density 1e4 where z > 0 (an opaque wall at z = 0), red everywhere."""
    sigma = torch.where(points[..., 2] > 0, 1e4, 0.0)
    return sigma, torch.tensor([1.0, 0.0, 0.0]).expand(*points.shape[:-1], 3)


def test_render_radiance_wall_hand_values():
    # rays from z = -1 along +z, t in [0, 2] with 20 bins: midpoints 0.05, 0.15, ...; the wall is
    # at t = 1, the first sample behind it is t = 1.05 -> coarse depth 1.05, opacity 1
    o = torch.tensor([[[0.0, 0.0, -1.0]] * 3])
    d = torch.tensor([[[0.0, 0.0, 1.0]] * 3])
    out = gc.render_radiance(_half_space, o, d, 0.0, 2.0, 20)
    assert out["color"].shape == (1, 3, 3) and out["depth"].shape == (1, 3)
    assert torch.allclose(out["depth"], torch.full((1, 3), 1.05), atol=1e-5)
    assert torch.allclose(out["opacity"], torch.ones(1, 3), atol=1e-6)
    assert torch.allclose(out["color"], torch.tensor([1.0, 0.0, 0.0]).expand(1, 3, 3), atol=1e-6)
    # hierarchical samples concentrate in the bin [1.0, 1.1] holding all the weight: the first
    # sample behind the wall moves closer to 1.0 (strictly below 1.05, at or above 1.0)
    fine = gc.render_radiance(_half_space, o, d, 0.0, 2.0, 20, 16)
    assert (fine["depth"] < 1.05 - 1e-3).all() and (fine["depth"] >= 1.0).all()
    # chunking over rays gives the same result
    chunked = gc.render_radiance(_half_space, o, d, 0.0, 2.0, 20, 16, chunk=1)
    assert torch.allclose(chunked["depth"], fine["depth"])
    # white background behind an empty field: colour 1, opacity 0
    empty = gc.render_radiance(lambda p, q: (torch.zeros(p.shape[:-1]), torch.zeros(*p.shape[:-1], 3)),
                               o, d, 0.0, 2.0, 8, background=(1.0, 1.0, 1.0))
    assert torch.allclose(empty["color"], torch.ones(1, 3, 3)) and empty["opacity"].abs().max() == 0


def test_render_radiance_chunk_counts_the_whole_batch():
    # a batch of 4 images x 8 rays with chunk=8: every field call sees at most 8 rays (2 per image),
    # whatever the batch size, and the result equals the unchunked render
    calls = []

    def field(points, dirs):
        calls.append(points.shape[0] * points.shape[1])
        return _half_space(points, dirs)

    g = torch.Generator().manual_seed(0)
    o = torch.randn(4, 8, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -1.0])
    d = torch.nn.functional.normalize(torch.randn(4, 8, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    whole = gc.render_radiance(field, o, d, 0.0, 2.0, 10, 6)
    assert max(calls) == 4 * 8 * 10
    calls.clear()
    chunked = gc.render_radiance(field, o, d, 0.0, 2.0, 10, 6, chunk=8)
    assert max(calls) <= 8 * 10 and len(calls) == 2 * 4   # 4 chunks x (coarse + fine)
    for k in whole:
        assert torch.allclose(chunked[k], whole[k], atol=1e-6), k


def _sphere_depth(K, c2w, res, radius=1.0):
    o, d = image_rays(K, c2w, res, res)
    near, _, hit = near_far_sphere(o, d, radius)
    return torch.where(hit, near, torch.zeros_like(near)), hit


def test_depth_reprojection_error_of_an_exact_and_a_wrong_depth():
    # unit sphere seen from distance 4 at yaw 0 and 20 degrees, exact ray-sphere depths: the
    # reprojection error is only the bilinear reading of a curved depth map, largest at the limb
    # (mean 0.003, median 0.0008 world units at 48^2; bounds 5e-3 and 2e-3);
    # view b's depths scaled by 1.05 (about +0.15 at distance ~3) give an error above 0.1
    res = 48
    K = intrinsics_from_fov(40.0, res)
    ca = look_at(spherical_to_cartesian(4.0, 10.0, 0.0))
    cb = look_at(spherical_to_cartesian(4.0, 10.0, 20.0))
    da, ma = _sphere_depth(K, ca, res)
    db, mb = _sphere_depth(K, cb, res)
    ok = gc.depth_reprojection_error(da, db, K, ca, cb, ma, mb)
    assert ok["mean_abs"] < 5e-3 and ok["median_abs"] < 2e-3 and ok["fraction_valid"] > 0.8
    bad = gc.depth_reprojection_error(da, db * 1.05, K, ca, cb, ma, mb)
    assert bad["mean_abs"] > 0.1 and bad["mean_rel"] > 0.03
    none = gc.depth_reprojection_error(da, db, K, ca, cb, ma, torch.zeros_like(mb))
    assert none["n_valid"] == 0 and math.isnan(none["mean_abs"])


def test_sweep_values_hand_values():
    assert gc.sweep_values(0, 360, 180, 4).tolist() == [0.0, 90.0, 180.0, 270.0]
    # partial range: mean + a sin(2 pi k / n), a = max distance to a bound = 30
    v = gc.sweep_values(60, 120, 90, 4)
    assert torch.allclose(v, torch.tensor([90.0, 120.0, 90.0, 60.0]), atol=1e-4)


def test_density_mesh_of_an_analytic_ball_is_watertight(tmp_path):
    from aware3d.utils.mesh import read_ply

    info = gc.export_density_mesh(lambda p: 40 * (0.5 - p.norm(dim=-1)), -1, 1, tmp_path / "ball.ply",
                                  resolution=40, colors_fn=lambda v: torch.full_like(v, 0.5))
    verts, faces = read_ply(info["path"])
    # level 10 of 40 (0.5 - r): the sphere r = 0.25
    assert info["threshold"] == 10.0 and info["density_max"] == pytest.approx(40 * 0.5, rel=0.1)
    assert np.linalg.norm(verts, axis=1).mean() == pytest.approx(0.25, rel=0.02)
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all()
    # a field that never reaches 10 is meshed at half its maximum
    low = gc.export_density_mesh(lambda p: 4 * (0.5 - p.norm(dim=-1)), -1, 1, tmp_path / "low.ply",
                                 resolution=16)
    assert low["threshold"] == pytest.approx(0.5 * low["density_max"])


def test_config_overrides_are_coerced_and_checked():
    cfg = gc.make_config(graf.Config, graf.PRESETS, "tiny16", lr_g="0.001", skips="[1]", n_samples=None)
    assert cfg.lr_g == 0.001 and cfg.skips == (1,) and cfg.n_samples == graf.PRESETS["tiny16"]["n_samples"]
    with pytest.raises(ValueError, match="unknown Config setting"):
        gc.make_config(graf.Config, graf.PRESETS, "tiny16", not_a_setting=1)
    with pytest.raises(ValueError, match="preset: expected one of"):
        gc.make_config(graf.Config, graf.PRESETS, "nope")


def test_mapped_images_draw_from_the_given_generator():
    class Images:
        images = torch.rand(10, 3, 8, 8) * 2 - 1

        def __len__(self):
            return 10

        def sample(self, n, generator=None):
            return self.images[torch.randint(0, 10, (n,), generator=generator)]

    m = gc.MappedImages(Images(), lambda x, g: x + torch.rand(x.shape[0], 1, 1, 1, generator=g))
    a = m.sample(4, torch.Generator().manual_seed(3))
    b = m.sample(4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(m) == 10
    assert gc.resize_images(torch.ones(2, 3, 8, 8), 4).shape == (2, 3, 4, 4)


def test_programs_change_only_what_they_control():
    # an untrained tiny GRAF: interpolating appearance keeps the depth bit-identical in every frame,
    # a yaw sweep over the full circle changes the image; frames are (T, B, H, W, 3) in [0, 1]
    m = graf.build(graf.make_config("tiny16"))
    G = m.generator.eval().requires_grad_(False)
    frames = gc.render_program_frames(m, G, "yaw-sweep", n_frames=3, n_samples=2)
    assert frames.shape == (3, 2, 16, 16, 3) and frames.min() >= 0 and frames.max() <= 1
    assert not torch.equal(frames[0], frames[1])
    g = torch.Generator().manual_seed(0)
    base, other = m.sample_inputs(2, g, train=False), m.sample_inputs(2, g, train=False)
    xs = _program_inputs(m, "interpolate-appearance", base, other, 4)
    depths = [G(x, return_dict=True)["depth"] for x in xs]
    assert all(torch.equal(depths[0], dd) for dd in depths[1:])
    assert torch.allclose(xs[0]["z_app"], base["z_app"]) and torch.equal(xs[2]["z_shape"], base["z_shape"])
    with pytest.raises(ValueError, match="program: expected one of"):
        gc.render_program_frames(m, G, "interpolate-latent")


def test_gan_meshes_take_the_level_from_the_field_and_are_never_empty(tmp_path):
    """The GAN mesh exporters use the reconstruction meshes' level rule: 10 where the field crosses
    it, else the middle of its range; a field without a surface is an error, not an empty PLY."""
    import pytest
    import torch

    from aware3d.methods.gan_common import export_density_mesh

    def ball(scale):  # a density of scale * (1 - |x|), above 0 inside the unit ball
        return lambda p: scale * (1 - p.norm(dim=-1)).clamp_min(0)

    info = export_density_mesh(ball(100.0), -1.2, 1.2, tmp_path / "a.ply", resolution=24)
    assert info["threshold"] == 10.0 and info["n_faces"] > 0
    info = export_density_mesh(ball(4.0), -1.2, 1.2, tmp_path / "b.ply", resolution=24)
    assert info["threshold"] == pytest.approx(2.0, abs=0.2) and info["n_faces"] > 0  # mid-range
    with pytest.raises(ValueError, match="0 everywhere"):
        export_density_mesh(lambda p: torch.zeros(p.shape[0]), -1, 1, tmp_path / "c.ply", resolution=8)
    with pytest.raises(ValueError, match="no surface at density level 500"):
        export_density_mesh(ball(100.0), -1.2, 1.2, tmp_path / "d.ply", resolution=16, threshold=500)
    assert not (tmp_path / "c.ply").exists() and not (tmp_path / "d.ply").exists()
