"""pi-GAN: SIREN / FiLM initialisation against the paper's formulas, field and critic shapes and
gradients, pose prior, progressive schedule, 20-step training and a watertight mesh."""
import dataclasses
import math

import numpy as np
import pytest
import torch

import aware3d

from aware3d.fields.siren import FilmSirenField, MappingNetwork
from aware3d.methods import gan_common as gc
from aware3d.methods import pigan


def test_siren_initialisation_matches_the_formulas():
    torch.manual_seed(0)
    f = FilmSirenField(z_dim=256, hidden=256, n_layers=4, init_w0=25.0)
    # hidden layers: U(-sqrt(6/n)/w0, +) with n = 256: bound 0.0061237, std bound / sqrt(3) = 0.0035355
    b = math.sqrt(6 / 256) / 25
    for layer in list(f.layers[1:]) + [f.sigma_out]:
        w = layer.weight
        assert w.abs().max() <= b + 1e-9 and w.abs().max() > 0.99 * b
        assert w.std().item() == pytest.approx(b / math.sqrt(3), rel=0.03)
    # colour FiLM layer: fan-in 256 + 3 directions
    bc = math.sqrt(6 / 259) / 25
    assert f.color_film.weight.abs().max() <= bc + 1e-9
    # first layer: U(-1/n, 1/n), n = 3: bound 1/3, std 1 / (3 sqrt 3) = 0.19245 (768 weights: 10 %)
    w0 = f.layers[0].weight
    assert w0.abs().max() <= 1 / 3 + 1e-9
    assert w0.std().item() == pytest.approx(1 / (3 * math.sqrt(3)), rel=0.1)
    assert FilmSirenField.expected_init_bounds(256, 25.0) == pytest.approx(b)


def test_mapping_network_frequencies_start_near_30():
    # Kaiming (LeakyReLU 0.2) keeps the pre-activation variance at gain^2 = 2 / 1.04 = 1.923 and
    # E[h^2] = 1.04 / 2 * 1.923 = 1.0 after every hidden layer; the output layer (weights x 0.25)
    # has variance 0.0625 * 1.923 * 1.0 = 0.1202; frequencies 15 r + 30 -> mean 30, std 15 * 0.3467
    # = 5.20 (biases add < 1 %).
    torch.manual_seed(0)
    m = MappingNetwork(z_dim=256, n_out=9 * 256, hidden=256, n_layers=3)
    freqs, phases = m(torch.randn(2048, 256))
    expected_std = 15 * math.sqrt(0.0625 * (2 / 1.04) * 1.0)
    assert freqs.mean().item() == pytest.approx(30.0, abs=0.5)
    assert freqs.std().item() == pytest.approx(expected_std, rel=0.1)
    assert phases.mean().item() == pytest.approx(0.0, abs=0.05)
    assert phases.std().item() == pytest.approx(expected_std / 15, rel=0.1)


def test_film_siren_field_shapes_gradients_and_formula():
    torch.manual_seed(0)
    f = FilmSirenField(z_dim=8, hidden=16, n_layers=3, map_hidden=16, box_scale=2.0)
    x = torch.randn(2, 5, 3) * 0.1
    d = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)
    z = torch.randn(2, 8)
    sigma, rgb = f(x, d, z)
    assert sigma.shape == (2, 5) and rgb.shape == (2, 5, 3) and ((rgb > 0) & (rgb < 1)).all()
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in f.parameters())
    # modulation path == z path (bit-identical), and the first layer is sin(g (W (s x) + b) + beta)
    freqs, phases = f.modulation(z)
    assert freqs.shape == (2, 4, 16)
    s2, rgb2 = f(x, d, freqs=freqs, phases=phases)
    assert torch.equal(s2, sigma) and torch.equal(rgb2, rgb)
    L0 = f.layers[0]
    h1 = torch.sin(freqs[:, None, 0] * (2.0 * x @ L0.weight.T + L0.bias) + phases[:, None, 0])
    one = FilmSirenField(z_dim=8, hidden=16, n_layers=1, map_hidden=16, box_scale=2.0)
    one.layers[0].load_state_dict(L0.state_dict())
    assert torch.allclose(one.trunk(x, freqs[:, :1], phases[:, :1]), h1, atol=1e-6)


def test_progressive_discriminator_shapes_and_fade_in():
    torch.manual_seed(0)
    D = pigan.ProgressiveDiscriminator(max_res=16, d_base=1, d_max=8)
    x16 = torch.randn(3, 3, 16, 16, requires_grad=True)
    assert D(x16).shape == (3, 1) and D(torch.randn(3, 3, 8, 8)).shape == (3, 1)
    from aware3d.train.gan import r1_penalty

    pen = r1_penalty(D(x16), x16)
    pen.backward()
    assert pen.item() > 0
    # alpha = 0: a 16^2 image is judged exactly as its 2x average-pooled 8^2 version (the new
    # resolution's adapter and block are fully faded out) -> expected difference 0 (float noise)
    with torch.no_grad():
        b = D(torch.nn.functional.avg_pool2d(x16, 2))     # alpha = 1: the plain 8^2 path
        D.alpha = 0.0
        a = D(x16)
    assert torch.allclose(a, b, atol=1e-6)
    D.alpha = 0.5
    with torch.no_grad():
        assert (D(x16) - b).abs().max() > 1e-6
    with pytest.raises(ValueError, match="square images"):
        D(torch.zeros(1, 3, 12, 12))


def test_pose_prior_and_ray_range():
    cfg = pigan.make_config("celeba64")
    g = torch.Generator().manual_seed(0)
    yaw, pitch = pigan.sample_angles(cfg, 20000, g)
    # CelebA: yaw ~ N(90, 0.3 rad = 17.19 deg), pitch ~ N(0, 0.155 rad = 8.88 deg)
    assert yaw.mean().item() == pytest.approx(90.0, abs=0.5)
    assert yaw.std().item() == pytest.approx(math.degrees(0.3), rel=0.03)
    assert pitch.std().item() == pytest.approx(math.degrees(0.155), rel=0.03)
    x = pigan.sample_inputs(cfg, 4, g)
    eye = x["c2w"][:, :3, 3]
    assert torch.allclose(eye.norm(dim=-1), torch.ones(4), atol=1e-6)            # distance 1
    assert torch.allclose(-x["c2w"][:, :3, 2], -eye, atol=1e-6)                   # looks at the origin
    # the expected depth of a ray (normalised by its opacity) lies in [0.88, 1.12] with stratified
    # bins (the official placement reaches half a spacing beyond: tests/test_pigan_official.py)
    small = pigan.make_config("celeba64", z_dim=8, hidden=16, n_layers=2, map_hidden=16, stages=((0, 8, 4, 1e-4, 1e-4),),
                              resolution=8, sampling="bins", eval_jitter=False, eval_last_back=False)
    m = pigan.build(small)
    with torch.no_grad():
        out = m.generator.eval()(pigan.sample_inputs(small, 2, g), return_dict=True)
    assert out["image"].shape == (2, 3, 8, 8)
    hit = out["opacity"] > 1e-3                            # rays that met some density
    d = out["depth"][hit] / out["opacity"][hit]
    assert hit.sum() > 0 and d.min() >= 0.88 - 1e-4 and d.max() <= 1.12 + 1e-4


def test_progressive_schedule_hand_values():
    cfg = pigan.make_config("celeba128")
    assert pigan.stage_at(cfg, 0)[1]["resolution"] == 32 and pigan.stage_at(cfg, 0)[1]["batch_size"] == 56
    assert pigan.stage_at(cfg, 9999)[1]["resolution"] == 32
    assert pigan.stage_at(cfg, 10000)[1]["resolution"] == 64 and pigan.stage_at(cfg, 10000)[1]["batch_size"] == 28
    assert pigan.stage_at(cfg, 60000)[1]["resolution"] == 128
    small = pigan.make_config("celeba128", z_dim=8, hidden=8, n_layers=1, map_hidden=8, d_base=1, d_max=4)
    m = pigan.build(small)
    m.set_step(12500)                       # 2500 steps into the 64 stage, fade over 10000 -> 0.25
    assert m.generator.render_resolution == 64 and m.discriminator.alpha == pytest.approx(0.25)
    m.set_step(0)                           # official: the first stage fades in too, from alpha 0
    assert m.generator.render_resolution == 32 and m.discriminator.alpha == 0.0
    assert m.generator.density_noise == pytest.approx(1.0)
    m.set_step(2500)                        # noise decays linearly to 0 over 5000 steps -> 0.5
    assert m.generator.density_noise == pytest.approx(0.5) and m.discriminator.alpha == pytest.approx(0.25)
    old = pigan.build(dataclasses.replace(small, fade_first_stage=False))  # runs saved before the fix
    old.set_step(0)
    assert old.discriminator.alpha == 1.0
    assert pigan.stage_at(dataclasses.replace(small, batch_size=6), 60000)[1]["batch_size"] == 6
    with pytest.raises(ValueError, match="last stage"):
        pigan.build(dataclasses.replace(small, resolution=64))


def test_train_20_steps_with_progressive_growing(objects, tmp_path):
    # tiny16: 8^2 renders for steps 0-9, 16^2 from step 10 (batch 4 throughout)
    run = pigan.METHOD.train(objects, tmp_path / "run", preset="tiny16", max_steps=20)
    from PIL import Image

    from aware3d.train.io import load_checkpoint

    state = load_checkpoint(run)
    assert state["step"] == 20 and state["method"] == "pigan"
    # sample grids of 16 images (4 x 4, 2 px padding): 4 * (8 + 2) + 2 = 42 px at step 0, then
    # 4 * (16 + 2) + 2 = 74 px once the render resolution has grown (steps 10 and 20)
    sizes = {p.name: Image.open(p).size for p in (run / "samples").iterdir()}
    assert sizes == {"step_00000000.png": (42, 42), "step_00000010.png": (74, 74),
                     "step_00000020.png": (74, 74)}
    rows = [r.split(",") for r in (run / "scalars.csv").read_text().splitlines()[1:]]
    assert all(math.isfinite(float(r[2])) for r in rows)
    files = aware3d.load(run, device="cpu").render_program("interpolate-latent", frames=3, samples=2)
    # rows = 2 samples, columns = 3 frames of 16 px: width 3 * 18 + 2 = 56, height 2 * 18 + 2 = 38
    assert Image.open(files["png"]).size == (56, 38)
    assert set(pigan.PROGRAMS) == {"yaw-sweep", "pitch-sweep", "seed-grid", "interpolate-latent"}


def test_mesh_of_a_fitted_sample_is_watertight(tmp_path):
    # A pi-GAN field fitted for a few hundred steps to a ball: sigma = 30 (0.08 - |x|) / 0.08 (30 at
    # the centre, 0 at r = 0.08). The level-10 surface is the sphere r = 0.08 (1 - 10/30) = 0.0533.
    from aware3d.train.io import prepare_run_dir, save_checkpoint
    from aware3d.utils.mesh import read_ply

    cfg = pigan.make_config("tiny16", hidden=32, n_layers=3, box_scale=2 / 0.24, mesh_extent=0.15)
    m = pigan.build(cfg)
    z = pigan.sample_inputs(cfg, 1, torch.Generator().manual_seed(0), train=False)["z"]
    field = m.generator.field
    opt = torch.optim.Adam(field.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        p = (torch.rand(1, 2048, 3, generator=g) * 2 - 1) * 0.15
        target = 30 * (0.08 - p.norm(dim=-1)) / 0.08
        loss = (field.density(p, z) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = tmp_path / "fitted"
    prepare_run_dir(run, "pigan", dataclasses.asdict(cfg))
    sd = m.generator.state_dict()
    save_checkpoint(run, 0, {"G": sd, "G_ema": sd})
    info = pigan.export_mesh(aware3d.load(run, device="cpu"), seed=0, resolution=48)
    verts, faces = read_ply(info["path"])
    assert len(faces) > 100 and info["threshold"] == 10.0
    # watertight: every undirected edge is shared by exactly two triangles
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all()
    # and it is the fitted sphere: mean radius 0.0533 within 10 %
    assert np.linalg.norm(verts, axis=1).mean() == pytest.approx(0.08 * (1 - 10 / 30), rel=0.1)


def test_r1_is_half_the_official_lambda_hand_computed():
    """Official pi-GAN: D loss += 0.5 r1_lambda E||grad_x D(x)||^2 (r1_lambda 0.2 on CelebA,
    10 on CARLA); the engine adds r1_weight E||grad||^2, so the paper presets carry 0.5 r1_lambda."""
    from aware3d.methods import pigan
    from aware3d.train.gan import r1_penalty

    for preset, r1_lambda in (("celeba64", 0.2), ("celeba128", 0.2), ("carla128", 10.0)):
        cfg = pigan.make_config(preset)
        assert cfg.r1_weight == pytest.approx(0.5 * r1_lambda)
        assert pigan.build(cfg).gan_config().r1_weight == pytest.approx(0.5 * r1_lambda)
    # D(x) = sum(w * x^2 / 2): grad_x D = w * x, so E||grad||^2 = mean_b sum (w x_b)^2
    w = torch.randn(3, 4, 4)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    d = (w * x.pow(2) / 2).flatten(1).sum(1, keepdim=True)
    hand = 0.5 * 0.2 * (w * x.detach()).pow(2).flatten(1).sum(1).mean()
    got = pigan.make_config("celeba64").r1_weight * r1_penalty(d, x)
    assert got.item() == pytest.approx(hand.item(), rel=1e-6)
