"""GRAF: the official planar-depth rays (hand values), and the fast rendering path against its
reference (outputs, random draws, gradients, checkpointed training chunks, chunked inference)."""
import math

import pytest
import torch
from torch import nn

from aware3d.fields.graf import GrafField
from aware3d.methods import gan_common as gc
from aware3d.methods import graf


class SlabField(nn.Module):
    """Density s where the point is in front of the plane at depth z0 of a camera at the origin looking
    down -z (``-p_z < z0``), 0 behind it; constant colour. Records the directions it was given."""

    def __init__(self, s: float, z0: float, colour=(0.2, 0.4, 0.8)):
        super().__init__()
        self.s, self.z0, self.colour = s, z0, torch.tensor(colour)
        self.dirs = None

    def forward(self, p, d, zs, za):
        self.dirs = d
        sigma = torch.where(-p[..., 2] < self.z0, torch.full_like(p[..., 0], self.s), torch.zeros_like(p[..., 0]))
        return sigma, self.colour.expand(*p.shape[:-1], 3)


def _slab_generator(planar: bool, endpoints: bool):
    # 4 x 4 image, fov 90: focal 2, official pixel-index rays (u = j, principal point 2); pixel (0, 0)
    # looks along (-1, 1, -1) in the camera, pixel (2, 2) along (0, 0, -1). 4 samples in [1, 3].
    cfg = graf.make_config("tiny16", resolution=4, fov=90.0, radius=(0.0, 0.0), near=1.0, far=3.0, n_samples=4,
                           n_importance=0, planar_depth=planar, endpoint_samples=endpoints)
    G = graf.GrafGenerator(cfg).eval()
    G.field = SlabField(s=0.7, z0=2.0)
    G.reference = True
    x = {"c2w": torch.eye(4)[None], "z_shape": torch.zeros(1, cfg.z_shape_dim), "z_app": torch.zeros(1, cfg.z_app_dim)}
    return G, x


def test_planar_depth_rays_and_endpoint_samples_hand_values():
    G, x = _slab_generator(planar=True, endpoints=True)                  # the presets' (official) setting
    _, d = G.camera_rays(x)
    assert torch.allclose(d[0, 0, 0], torch.tensor([-1.0, 1.0, -1.0]))   # not normalised: camera depth 1
    assert torch.allclose(d[0, 2, 2], torch.tensor([0.0, 0.0, -1.0]))
    with torch.no_grad():
        out = G(x, return_dict=True)
    # samples at depths linspace(1, 3, 4) = 1, 5/3, 7/3, 3 (spacings 2/3, 2/3, 2/3, 1e10); 1 and 5/3
    # lie in the slab (depth < 2): optical depth 0.7 (2/3 + 2/3) ||d||, nothing behind it
    for (i, j), n in (((0, 0), math.sqrt(3)), ((2, 2), 1.0)):
        a = 1 - math.exp(-0.7 * (2 / 3) * n)
        w1, w2 = a, (1 - a) * a
        acc = w1 + w2
        assert out["opacity"][0, i, j].item() == pytest.approx(1 - math.exp(-0.7 * (4 / 3) * n), abs=1e-6)
        assert out["opacity"][0, i, j].item() == pytest.approx(acc, abs=1e-6)
        # depth: distance along the ray, sum w t ||d||
        assert out["depth"][0, i, j].item() == pytest.approx((w1 * 1.0 + w2 * 5 / 3) * n, abs=1e-5)
        want = torch.tensor([0.2, 0.4, 0.8]) * acc * 2 - 1               # black background, [-1, 1]
        assert torch.allclose(out["image"][0, :, i, j], want, atol=1e-6)
    # the field sees unit view directions
    assert torch.allclose(G.field.dirs.norm(dim=-1), torch.ones(1), atol=1e-6)
    assert torch.allclose(G.field.dirs[0, 0], torch.tensor([-1.0, 1.0, -1.0]) / math.sqrt(3))


def test_endpoint_samples_jitter_between_midpoints():
    from aware3d.render.samplers import stratified_samples

    t, bins = stratified_samples(1.0, 3.0, 4, batch_shape=(2,), perturb=False, endpoints=True)
    assert torch.allclose(t, torch.tensor([1.0, 5 / 3, 7 / 3, 3.0]).expand(2, 4))
    assert torch.allclose(bins, torch.tensor([1.0, 4 / 3, 2.0, 8 / 3, 3.0]).expand(2, 5))
    u = torch.tensor([[0.0, 0.5, 1.0, 0.25]])
    t, _ = stratified_samples(1.0, 3.0, 4, batch_shape=(1,), perturb=True, endpoints=True, u=u)
    assert torch.allclose(t, torch.tensor([[1.0, (4 / 3 + 2) / 2, 8 / 3, 8 / 3 + 0.25 / 3]]))


def test_unit_rays_and_bins_without_the_keys_are_the_old_rendering():
    # runs saved before the fix: unit rays, t a distance, 4 bins with midpoints 1.25 ... 2.75; the
    # corner ray's points have depth t / sqrt(3) < 2 for all four (the last with spacing 1e10)
    G, x = _slab_generator(planar=False, endpoints=False)
    _, d = G.camera_rays(x)
    assert torch.allclose(d[0, 0, 0], torch.tensor([-1.0, 1.0, -1.0]) / math.sqrt(3))
    with torch.no_grad():
        out = G(x, return_dict=True)
    assert out["opacity"][0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert out["opacity"][0, 2, 2].item() == pytest.approx(1 - math.exp(-0.7), abs=1e-6)   # 1.25, 1.75 in it
    assert graf.Config().planar_depth is False and graf.Config().endpoint_samples is False
    old = gc.config_from_dict(graf.Config, {"preset": "celeba64"})       # a saved config without the keys
    assert old.planar_depth is False and old.endpoint_samples is False
    assert all(graf.make_config(p).planar_depth and graf.make_config(p).endpoint_samples for p in graf.PRESETS)


def _random_generator(seed=0, **kw):
    kw = {"n_importance": 4, **kw}
    cfg = graf.make_config("tiny16", hidden=24, n_layers=6, skips=(3,), n_freq_pos=4, n_freq_dir=2, z_shape_dim=6,
                           z_app_dim=5, n_samples=6, **kw)
    torch.manual_seed(seed)
    m = graf.build(cfg, seed=seed)
    for p in m.generator.parameters():  # weights that give visible densities and colours
        nn.init.normal_(p, std=0.3)
    return m


@pytest.mark.parametrize("kw", [{}, {"planar_depth": False, "endpoint_samples": False},
                                {"n_importance": 0, "white_background": True}])
def test_fast_path_equals_reference(kw):
    m = _random_generator(**kw)
    G = m.generator
    g = torch.Generator().manual_seed(1)
    for train in (False, True):
        x = m.sample_inputs(3, g, train=train)
        G.train(train)
        G.density_noise = 0.5 if train else 0.0
        outs, grads = [], []
        for ref in (True, False):
            G.reference = ref
            G.zero_grad()
            torch.manual_seed(7)  # the same global draws: jitter, noise, inverse-CDF levels
            out = G(x, return_dict=True)
            (out["image"].square().sum() + out["depth"].sum()).backward()
            outs.append({k: v.detach() for k, v in out.items()})
            grads.append({n: p.grad.clone() for n, p in G.named_parameters()})
        assert outs[0]["image"].std() > 0.05
        for k in outs[0]:
            err = (outs[1][k] - outs[0][k]).abs() / outs[0][k].abs().clamp_min(1)
            if train or not m.cfg.n_importance:
                assert err.max() < 2e-5, (k, err.max())
            else:
                # eval: the top inverse-CDF level is u = 1, where the fine sample's position depends on
                # whether float rounding leaves the CDF's last value just above or below 1 (the last
                # bin's weight can be ~1e-5): a few rays get a last sample a little short of far
                assert (err > 2e-5).float().mean() < 0.01 and err.max() < 0.01, (k, err.max())
        for n in grads[0]:
            scale = grads[0][n].abs().max().clamp_min(1e-3)
            assert (grads[1][n] - grads[0][n]).abs().max() / scale < 1e-4, n


def test_fast_field_equals_field_per_point():
    torch.manual_seed(0)
    f = GrafField(8, 6, hidden=32, n_layers=8, skips=(4,), n_freq_pos=4, n_freq_dir=2)
    for p in f.parameters():
        nn.init.normal_(p, std=0.2)
    B, R, N = 2, 5, 7
    x = torch.randn(B, R, N, 3)
    d = nn.functional.normalize(torch.randn(B, R, 3), dim=-1)
    zs, za = torch.randn(B, 8), torch.randn(B, 6)
    s, c = f(x.reshape(B, R * N, 3), d[:, :, None].expand(B, R, N, 3).reshape(B, R * N, 3), zs, za)
    s2, c2 = f.forward_rays(x, f.ray_terms(d, za), zs)
    assert s.abs().max() > 0.5
    torch.testing.assert_close(s2, s.reshape(B, R, N), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2, c.reshape(B, R, N, 3), atol=1e-5, rtol=1e-5)


def test_checkpointed_training_chunks_equal_one_piece():
    # grad_chunk: the same outputs and gradients as rendering all rays at once (same draws)
    m = _random_generator()
    G = m.generator.train()
    G.density_noise = 0.5
    x = m.sample_inputs(2, torch.Generator().manual_seed(3), train=True)   # 8 x 8 patch: 64 rays
    res = []
    for gc_rays in (0, 24):
        G.cfg.grad_chunk = gc_rays
        G.zero_grad()
        torch.manual_seed(11)
        img = G(x)
        img.square().sum().backward()
        res.append((img.detach(), {n: p.grad.clone() for n, p in G.named_parameters()}))
    torch.testing.assert_close(res[1][0], res[0][0], atol=1e-6, rtol=0)
    for n, g in res[0][1].items():
        assert g.abs().max() > 0
        assert (res[1][1][n] - g).abs().max() / g.abs().max().clamp_min(1e-3) < 1e-5, n


def test_chunked_inference_and_bf16_option(monkeypatch):
    m = _random_generator()
    G = m.generator.eval()
    x = m.sample_inputs(2, torch.Generator().manual_seed(4), train=False)
    with torch.no_grad():
        G.cfg.chunk = 10 ** 6
        whole = G(x)
        monkeypatch.setattr(graf, "_BLOCK_POINTS", 150)                    # field calls of 7 rays x 2 images
        blocks = G(x)
        G.cfg.chunk = 40                                                    # 20 rays per image per call
        parts = G(x)
        monkeypatch.undo()
        G.cfg.autocast_bf16 = True
        low = G(x)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(blocks, whole, atol=1e-6, rtol=0)
    # bfloat16 products: an approximation (8-bit mantissa), close but not equal
    err = (low - whole).abs()
    assert 0 < err.mean() < 0.02 and err.max() < 0.3, (err.mean(), err.max())
