"""GRAF: conditional field, patch rays and real patches, patch critic, annealing, 20-step training,
resume equivalence, controls and mesh export (tiny networks, synthetic 32x32 objects)."""
import math

import numpy as np
import pytest
import torch

import aware3d

from aware3d.fields.graf import GrafField
from aware3d.methods import gan_common as gc
from aware3d.methods import graf
from aware3d.render.cameras import image_rays, intrinsics_from_fov, look_at, spherical_to_cartesian


def test_field_shapes_gradients_and_code_roles():
    torch.manual_seed(0)
    f = GrafField(z_shape_dim=6, z_app_dim=5, hidden=16, n_layers=4, skips=(2,), n_freq_pos=3, n_freq_dir=2)
    x, d = torch.randn(2, 7, 3), torch.nn.functional.normalize(torch.randn(2, 7, 3), dim=-1)
    zs, za = torch.randn(2, 6), torch.randn(2, 5)
    sigma, rgb = f(x, d, zs, za)
    assert sigma.shape == (2, 7) and rgb.shape == (2, 7, 3)
    assert ((rgb > 0) & (rgb < 1)).all()                       # sigmoid colours
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    # z_s enters the density trunk only, z_a the colour head only: changing z_a leaves sigma
    # bit-identical (expected difference 0) and changes the colours
    s2, rgb2 = f(x, d, zs, torch.randn(2, 5))
    assert torch.equal(s2, sigma) and (rgb2 - rgb).abs().max() > 1e-4
    assert torch.equal(f.density(x, zs), sigma)


def test_patch_rays_equal_full_frame_rays_at_sampled_pixels():
    # 32^2 image, K = 16, scale 0.5: the patch points are pixel centres 8..23 (K / W = s); a centre
    # of (2 * 4 / 32, -2 * 2 / 32) shifts them by 4 px right and 2 px up -> columns 12..27, rows 6..21
    # (the pixel-centre grid and unit rays of runs saved before the official ones: centre_patch_grid=True,
    # planar_depth=False)
    cfg = graf.make_config("tiny16", resolution=32, patch=16, fov=40.0, centre_patch_grid=True, planar_depth=False)
    G = graf.GrafGenerator(cfg)
    c2w = look_at(spherical_to_cartesian(6.0, torch.tensor([30.0, 50.0]), torch.tensor([10.0, 200.0])))
    x = {"c2w": c2w, "patch_center": torch.tensor([[8 / 32, -4 / 32]] * 2),
         "patch_scale": torch.tensor([0.5, 0.5])}
    o, d = G.camera_rays(x)
    K = intrinsics_from_fov(40.0, 32).expand(2, 3, 3)
    fo, fd = image_rays(K, c2w, 32, 32)
    assert o.shape == (2, 16, 16, 3)
    assert torch.allclose(d, fd[:, 6:22, 12:28], atol=1e-6)
    assert torch.allclose(o, fo[:, 6:22, 12:28], atol=1e-6)
    # without a patch: the full frame
    o2, d2 = G.camera_rays({"c2w": c2w})
    assert torch.allclose(d2, fd, atol=0)


def test_real_patch_sampling_reproduces_image_and_crops():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    # scale 1, centre 0, K = 32: bilinear samples exactly at the pixel centres -> the image itself
    out = graf.sample_image_patches(img, torch.zeros(3, 2), torch.ones(3), 32)
    assert (out - img).abs().max() < 1e-6
    # scale 0.5, K = 16, centre 0: the central 16 x 16 crop (rows/cols 8..23), exactly
    out = graf.sample_image_patches(img, torch.zeros(3, 2), torch.full((3,), 0.5), 16)
    assert (out - img[..., 8:24, 8:24]).abs().max() < 1e-6


def test_patch_draws_stay_inside_the_image():
    g = torch.Generator().manual_seed(0)
    c, s = graf.sample_patch(4000, 0.4, 1.0, g)
    assert s.min() >= 0.4 and s.max() <= 1.0
    assert abs(s.mean().item() - 0.7) < 0.01                   # U[0.4, 1] has mean 0.7
    assert (c.abs() <= (1 - s)[:, None] + 1e-7).all()          # outermost patch point within [-1, 1]


def test_min_scale_annealing_hand_values():
    cfg = graf.make_config("celeba64")                        # official: a = 0.0025, every 1000 steps
    assert graf.min_scale_at(cfg, 0) == pytest.approx(0.9)     # exp(0) = 1, capped at 0.9
    assert graf.min_scale_at(cfg, 2_999) == pytest.approx(0.9)      # k = 6: exp(-0.015) = 0.985 -> 0.9
    assert graf.min_scale_at(cfg, 40_000) == pytest.approx(max(0.25, math.exp(-120 * 0.0025)))  # 0.7408
    assert graf.min_scale_at(cfg, 100_000) == pytest.approx(math.exp(-300 * 0.0025))          # 0.4724
    assert graf.min_scale_at(cfg, 10 ** 6) == pytest.approx(0.25)                              # floor


def test_discriminator_shapes_and_r1_double_backward():
    torch.manual_seed(0)
    for K in (8, 16, 32):
        D = graf.PatchDiscriminator(ndf=4, imsize=K)
        x = torch.randn(3, 3, K, K, requires_grad=True)
        out = D(x)
        assert out.shape == (3, 1)
        from aware3d.train.gan import r1_penalty

        pen = r1_penalty(out, x)
        pen.backward()
        assert pen.item() > 0
        assert sum(p.grad.abs().sum().item() for p in D.parameters() if p.grad is not None) > 0
    with pytest.raises(ValueError, match="patches of 16 x 16"):
        graf.PatchDiscriminator(ndf=4, imsize=16)(torch.zeros(1, 3, 32, 32))


def test_generator_patch_and_full_renders_shapes_and_gradients():
    cfg = graf.make_config("tiny16")
    m = graf.build(cfg)
    g = torch.Generator().manual_seed(0)
    x = m.sample_inputs(3, g, train=True)
    img = m.generator.train()(x)
    assert img.shape == (3, 3, cfg.patch, cfg.patch) and img.min() >= -1 and img.max() <= 1
    img.sum().backward()
    assert all(p.grad is not None for p in m.generator.parameters())
    full = m.generator.eval()(m.sample_inputs(2, g, train=False), return_dict=True)
    assert full["image"].shape == (2, 3, 16, 16) and full["depth"].shape == (2, 16, 16)
    # appearance interpolation keeps geometry: depth identical (expected difference 0)
    x = m.sample_inputs(2, g, train=False)
    y = dict(x, z_app=torch.randn(2, cfg.z_app_dim, generator=g))
    with torch.no_grad():
        a, b = m.generator(x, return_dict=True), m.generator(y, return_dict=True)
    assert torch.equal(a["depth"], b["depth"]) and not torch.equal(a["image"], b["image"])


def test_train_20_steps_then_controls_mesh_and_eval(objects, tmp_path):
    run = graf.METHOD.train(objects, tmp_path / "run", preset="tiny16", max_steps=20)
    from aware3d.train.io import load_checkpoint, load_run_config

    state = load_checkpoint(run)
    assert state["step"] == 20 and state["method"] == "graf"
    assert load_run_config(run)["patch"] == 8
    # samples at steps 0, 10, 20 (sample_every 10)
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000000.png", "step_00000010.png", "step_00000020.png"]
    assert all(math.isfinite(float(r.split(",")[2])) for r in
               (run / "scalars.csv").read_text().splitlines()[1:])
    init = graf.build(gc.config_from_dict(graf.Config, load_run_config(run))).generator.state_dict()
    moved = sum((state["G"][k].float() - init[k].float()).abs().sum().item() for k in init)
    assert moved > 0                                           # the generator was trained

    files = aware3d.load(run, device="cpu").render_program("yaw-sweep", frames=4)
    from PIL import Image

    # PNG: rows = 4 samples, columns = 4 frames of 16 px with 2 px padding -> 4 * 18 + 2 = 74 px
    assert Image.open(files["png"]).size == (74, 74)
    assert set(graf.PROGRAMS) == {"yaw-sweep", "pitch-sweep", "seed-grid", "interpolate-shape",
                                  "interpolate-appearance"}
    info = graf.export_mesh(aware3d.load(run, device="cpu"), resolution=24)
    assert (run / "mesh_seed0.ply").is_file() and info["resolution"] == 24

    # FID/KID plumbing on 12 generated images against the 12 real ones, with a cheap stand-in for
    # Inception (per-channel means and stds at 3 scales, 18 features): metrics named fid12 / kid12
    def extractor(x):
        x = torch.as_tensor(x).float()
        feats = []
        for k in (1, 2, 4):
            y = torch.nn.functional.avg_pool2d(x, k)
            feats += [y.mean((2, 3)), y.std((2, 3))]
        return torch.cat(feats, 1).numpy()

    metrics = aware3d.load(run).evaluate(n_gen=12, batch_size=12, extractor=extractor)
    import json

    stored = json.loads((run / "eval" / "metrics.json").read_text())
    assert stored["fid12"] == pytest.approx(metrics["fid12"]) and stored["fid12"] > 0
    assert "kid12" in stored and stored["n_gen"] == 12 and stored["method"] == "graf"


def test_resume_equals_uninterrupted(objects, tmp_path):
    # 3 uninterrupted steps == 2 steps + resume for 1 (engine RNG, global RNG and the step schedule
    # restored): every tensor of the two final checkpoints is identical (expected max diff 0)
    from aware3d.train.io import load_checkpoint

    kw = dict(preset="tiny16", sample_every=0, checkpoint_every=0, anneal_every=1, noise_anneal_steps=4)
    a = graf.METHOD.train(objects, tmp_path / "a", max_steps=3, **kw)
    b = graf.METHOD.train(objects, tmp_path / "b", max_steps=2, **kw)
    b = graf.METHOD.train(objects, tmp_path / "b", max_steps=3, resume=True)
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == 3
    for key in ("G", "G_ema", "D"):
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), (key, k)
    assert torch.equal(sa["rng"], sb["rng"])
