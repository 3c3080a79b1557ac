"""Pins of aware3d's paper presets against the official code of GRAF (autonomousvision/graf,
commit c50d342) and pi-GAN (marcoamonteiro/pi-GAN, commit 0800af7), without their code: the
numbers below were measured by building the official modules (BENCHMARKS.md, "Fidelity to the
official code: GRAF and pi-GAN"). Runs saved before these fixes lack the new config keys and keep
their old behaviour; that is pinned here too."""
import pytest
import torch

from aware3d.methods import gan_common as gc
from aware3d.methods import graf
from aware3d.train import gan

# ---------------------------------------------------------------------------------------------
# GRAF

# official NeRF(D=8, W=256, input_ch=63+128, input_ch_views=27+128, skips=[4], use_viewdirs=True)
GRAF_FIELD_WIDTHS = (191, 256, 256, 256, 256, 447, 256, 256)
GRAF_FIELD_PARAMS = 677764
# official Discriminator(ndf=64, imsize=32) (the 32 x 32 patch critic)
GRAF_D_PARAMS = 2635776


def _n(module):
    return sum(p.numel() for p in module.parameters())


def test_graf_paper_networks_have_the_official_widths_and_sizes():
    for preset in ("celeba64", "cats64", "carla128", "celebahq256"):
        m = graf.build(graf.make_config(preset))
        assert m.generator.field.dims_in == GRAF_FIELD_WIDTHS, preset
        assert [layer.in_features for layer in m.generator.field.trunk] == list(GRAF_FIELD_WIDTHS)
        assert _n(m.generator.field) == GRAF_FIELD_PARAMS
        assert _n(m.discriminator) == GRAF_D_PARAMS


def test_graf_saved_configs_without_the_new_keys_keep_the_old_behaviour():
    cfg = gc.config_from_dict(graf.Config, {"preset": "celeba64"})
    assert cfg.early_skip and cfg.centre_patch_grid and not cfg.d_first
    m = graf.build(cfg)
    assert m.generator.field.dims_in == (191, 256, 256, 256, 447, 256, 256, 256)  # one layer early
    assert not m.gan_config().d_first
    new = graf.make_config("celeba64")
    assert not new.early_skip and not new.centre_patch_grid and new.d_first
    assert graf.build(new).gan_config().d_first


def test_graf_real_patches_sampled_with_align_corners_true_by_hand():
    # 4 x 4 image, value 10 r + c: the official grid linspace(-1, 1, K) * s + centre in
    # grid_sample coordinates with align_corners=True (-1, 1 are the first / last pixel centres)
    img = (10 * torch.arange(4.0)[:, None] + torch.arange(4.0)[None, :]).expand(1, 1, 4, 4)
    # K = 4, s = 1, centre 0: exactly the pixels
    out = graf.sample_image_patches(img, torch.zeros(1, 2), torch.ones(1), 4, centre_grid=False)
    assert torch.allclose(out, img, atol=1e-5)
    # K = 3, s = 1: pixel coordinates 0, 1.5, 3 -> bilinear halfway between rows / columns 1 and 2
    out = graf.sample_image_patches(img, torch.zeros(1, 2), torch.ones(1), 3, centre_grid=False)
    r = torch.tensor([0.0, 1.5, 3.0])
    assert torch.allclose(out[0, 0], 10 * r[:, None] + r[None, :], atol=1e-5)
    # K = 2, s = 1/3, centre (1/3, -1/3): x in {0, 2/3} -> px 1.5, 2.5; y in {-2/3, 0} -> px 0.5, 1.5
    out = graf.sample_image_patches(img, torch.tensor([[1 / 3, -1 / 3]]), torch.tensor([1 / 3]), 2,
                                    centre_grid=False)
    hand = torch.tensor([[5 + 1.5, 5 + 2.5], [15 + 1.5, 15 + 2.5]])
    assert torch.allclose(out[0, 0], hand, atol=1e-5)
    # align_corners=False would give other values at K = 3 (the old pixel-centre grid differs)
    old = graf.sample_image_patches(img, torch.zeros(1, 2), torch.ones(1), 3, centre_grid=True)
    assert not torch.allclose(old, graf.sample_image_patches(img, torch.zeros(1, 2), torch.ones(1), 3,
                                                             centre_grid=False))


def test_graf_official_rays_at_pixel_index_coordinates():
    # official get_rays: pixel (i, j) looks along ((j - W/2) / f, -(i - H/2) / f, -1) in the camera
    cfg = graf.make_config("tiny16", resolution=8, patch=8, fov=40.0)
    G = graf.GrafGenerator(cfg)
    c2w = torch.eye(4)[None]
    o, d = G.camera_rays({"c2w": c2w})
    f = 0.5 * 8 / torch.tan(torch.deg2rad(torch.tensor(20.0)))
    j = torch.arange(8.0)
    hand = torch.stack(torch.broadcast_tensors((j[None, :] - 4) / f, -(j[:, None] - 4) / f,
                                               -torch.ones(8, 8)), -1)
    assert torch.allclose(d[0], hand, atol=1e-6)  # not normalised either (planar_depth, as get_rays)
    # the patch at scale 1, centre 0, K = W casts exactly these rays
    o2, d2 = G.camera_rays({"c2w": c2w, "patch_center": torch.zeros(1, 2), "patch_scale": torch.ones(1)})
    assert torch.allclose(d2, d, atol=1e-6)


def test_graf_steps_train_d_then_g_recorded_order():
    m = graf.build(graf.make_config("tiny16"))
    e = gan.GanEngine(m, m.gan_config(), device="cpu")
    calls = []
    e.D.register_forward_hook(lambda mod, i, o: calls.append("D" + ("+" if torch.is_grad_enabled() and
                                                                    any(p.requires_grad for p in mod.parameters()) else "")))
    e.G.register_forward_hook(lambda mod, i, o: calls.append("G" + ("+" if any(p.requires_grad for p in mod.parameters()) else "")))

    class Data:
        def sample(self, n, generator=None):
            return torch.rand(n, 3, 16, 16, generator=generator) * 2 - 1

    e.train_step(m.wrap_dataset(Data()))
    # D phase: D on the reals, G (frozen) makes fakes, D on fakes; then the G phase
    assert calls == ["D+", "G", "D+", "G+", "D"]
    assert e.phases(0) == ["D", "G"]
    # a run saved before the fix (no d_first key): G, then D
    old = graf.build(gc.config_from_dict(graf.Config, {"preset": "tiny16", **{k: v for k, v in graf.PRESETS["tiny16"].items() if k != "d_first"}}))
    assert gan.GanEngine(old, old.gan_config(), device="cpu").phases(0) == ["G", "D"]


# ---------------------------------------------------------------------------------------------
# pi-GAN

from aware3d.methods import pigan  # noqa: E402

# (official class, block input widths incl. the 2 CoordConv channels, second conv stride,
#  parameters of the blocks / adapters / final layer used up to the preset's largest resolution)
PIGAN_D = {
    "celeba64": ("ccs", [130, 258, 402, 402, 402], 2, 259, 12996483),        # CCSEncoderDiscriminator
    "cats64": ("strided", [128, 256, 400, 400, 400], 2, 1, 12516609),        # StridedDiscriminator
    "carla128": ("avgpool", [66, 130, 258, 402, 402, 402], 1, 259, 12749907),  # ProgressiveEncoderDiscriminator
}


def test_pigan_paper_discriminators_have_the_official_structure():
    for preset, (block, widths, stride, n_out, params) in PIGAN_D.items():
        D = pigan.build(pigan.make_config(preset)).discriminator
        assert D.block == block and D.fade == "nearest"
        assert [b.conv1.in_channels for b in D.blocks] == widths
        assert all(b.conv2.stride == (stride, stride) for b in D.blocks)
        if block != "avgpool":  # always a stride-2 projection
            assert all(b.proj is not None and b.proj.stride == (2, 2) for b in D.blocks)
        assert D.final.out_channels == n_out and _n(D) == params


def test_pigan_saved_configs_without_the_new_keys_keep_the_old_behaviour():
    cfg = gc.config_from_dict(pigan.Config, {k: v for k, v in pigan.PRESETS["tiny"].items()
                                             if k in {"stages", "resolution", "z_dim", "hidden", "n_layers",
                                                      "map_hidden", "d_base", "d_max"}})
    assert (cfg.d_block, cfg.d_latent_pose, cfg.fade_avgpool, cfg.fade_first_stage, cfg.d_first,
            cfg.grad_clip, cfg.pos_lambda) == ("avgpool", False, True, False, False, 0.0, 0.0)
    m = pigan.build(cfg)
    assert m.discriminator.n_out == 1 and m.discriminator.fade == "avg"
    assert not hasattr(m, "generator_objective") and not hasattr(m, "discriminator_objective")
    g = m.gan_config()
    assert not g.d_first and g.grad_clip == 0.0
    new = pigan.build(pigan.make_config("celeba64")).gan_config()
    assert new.d_first and new.grad_clip == 10.0
    assert pigan.build(pigan.make_config("carla128")).gan_config().grad_clip == 1.0


def test_pigan_position_loss_by_hand():
    cfg = pigan.make_config("cpu32_faces")
    assert cfg.pos_lambda == 15.0 and cfg.d_latent_pose and cfg.z_lambda == 0.0
    m = pigan.build(cfg)
    g = torch.Generator().manual_seed(0)
    x = m.sample_inputs(3, g, train=True)
    # official target: (pitch, yaw) = (polar angle from the up axis, azimuth), radians
    eye = x["c2w"][:, :3, 3]
    assert torch.allclose(x["pose"][:, 0], torch.acos(eye[:, 2] / eye.norm(dim=-1)), atol=1e-4)
    assert torch.allclose(x["pose"][:, 1], torch.atan2(eye[:, 1], eye[:, 0]) % (2 * torch.pi), atol=1e-4)
    assert "pose" not in m.sample_inputs(3, g, train=False)

    out = torch.randn(3, 1 + cfg.z_dim + 2)

    class FakeD(torch.nn.Module):
        def forward(self, img):
            return out

    loss, scal = m.generator_objective(lambda inp: torch.zeros(3, 3, 16, 16), FakeD(), x)
    hand_pos = 15.0 * ((out[:, -2:] - x["pose"]) ** 2).mean()
    hand = torch.nn.functional.softplus(-out[:, 0]).mean() + hand_pos
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)
    real = torch.zeros(3, 3, 16, 16)
    loss, scal = m.discriminator_objective(lambda inp: torch.zeros(3, 3, 16, 16), FakeD(), real, x, 0.0)
    hand = (torch.nn.functional.softplus(-out[:, 0]).mean() + torch.nn.functional.softplus(out[:, 0]).mean()
            + hand_pos)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-6)


def test_pigan_train_step_order_and_gradient_clipping():
    m = pigan.build(pigan.make_config("tiny", d_block="ccs", d_latent_pose=True, pos_lambda=15.0,
                                      grad_clip=1e-3))
    e = gan.GanEngine(m, m.gan_config(), device="cpu")
    assert e.phases(0) == ["D", "G"]
    norms = {}
    for name, opt in (("D", e.opt_d), ("G", e.opt_g)):
        step = opt.step

        def spy(*a, _step=step, _name=name, _opt=opt, **k):
            ps = [p for gr in _opt.param_groups for p in gr["params"] if p.grad is not None]
            norms.setdefault(_name, []).append(torch.norm(torch.stack([p.grad.norm() for p in ps])).item())
            return _step(*a, **k)
        opt.step = spy

    class Data:
        def sample(self, n, generator=None):
            return torch.rand(n, 3, 16, 16, generator=generator) * 2 - 1

    m.set_step(0, e)
    out = e.train_step(m.wrap_dataset(Data()))
    assert "identity_D" in out and "identity_G" in out
    assert list(norms) == ["D", "G"]                            # D stepped first
    assert all(v <= 1e-3 * (1 + 1e-5) for v in norms["D"] + norms["G"])


def test_pigan_paper_field_has_the_official_size():
    # official SPATIALSIRENBASELINE(z_dim=256, hidden_dim=256): 8 FiLM layers + colour FiLM layer,
    # mapping network 3 x 256 -> 2 x 9 x 256
    f = pigan.build(pigan.make_config("celeba64")).generator.field
    assert [layer.in_features for layer in f.layers] == [3] + [256] * 7
    assert f.color_film.in_features == 259 and _n(f) == 1910788
