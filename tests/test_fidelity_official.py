"""Pins of aware3d's paper presets against the official code of GRAF (autonomousvision/graf,
commit c50d342) and pi-GAN (marcoamonteiro/pi-GAN, commit 0800af7), without their code: the
numbers below were measured by building the official modules (BENCHMARKS.md, "Fidelity to the
official code: GRAF and pi-GAN"). Runs saved before these fixes lack the new config keys and keep
their old behaviour; that is pinned here too."""
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
    assert torch.allclose(d[0], torch.nn.functional.normalize(hand, dim=-1), atol=1e-6)
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
