"""CIPS-3D against the official code (PeterouZh/CIPS-3D 5956813a, ffhq_exp ``train_ffhq``), as far as
it can be pinned without that code: the paper presets' layer widths and parameter counts against
the numbers measured on the official modules (weight transfer in BENCHMARKS.md), the official
layers' maths by hand, the critics' fade-in by hand, shapes and gradients, and the old networks
kept for runs saved without the new keys."""
import math

import pytest
import torch
import torch.nn.functional as F

from aware3d.fields.cips import (
    CipsFilmNerf,
    CipsMapping,
    CipsNetDecoder,
    StyleModFC,
    style_mod_fc,
)
from aware3d.methods import cips3d as cm
from aware3d.nets.stylegan2_msd import MultiScaleDiscriminator, ResBlock, msd_channels


def _count(m):
    return sum(p.numel() for p in m.parameters())


# measured on the official modules (GeneratorNerfINR / Discriminator_MultiScale_Aux built on CPU with
# the train_ffhq settings); the official INR also builds 18 LayerNorms its forward never calls
# (17,472 parameters) and 3 tRGBs it never calls (4,617); its critics build every size up to 1024.
OFFICIAL = {"nerf": 110_049 + 82_432, "inr_mapping": 2_109_440, "inr_net_used": 8_985_723 - 22_089,
            "aux": 99, "D_main_64": 26_486_273, "D_aux_64": 6_624_001, "D_main_128": 28_386_561,
            "D_aux_128": 7_869_697}


@pytest.fixture(scope="module")
def paper():
    return cm.build(cm.make_config("ffhq64"))


def test_paper_preset_parameter_counts_equal_the_official(paper):
    G, D = paper.generator, paper.discriminator
    assert _count(G.nerf) == OFFICIAL["nerf"]
    assert _count(G.mapping) == OFFICIAL["inr_mapping"]
    assert _count(G.decoder) == OFFICIAL["inr_net_used"]
    assert _count(G.aux_to_rgb) == OFFICIAL["aux"]
    assert _count(G) == 11_265_654 == OFFICIAL["nerf"] + OFFICIAL["inr_mapping"] + OFFICIAL["inr_net_used"] + 99
    assert _count(D.main) == OFFICIAL["D_main_64"] and _count(D.aux) == OFFICIAL["D_aux_64"]


def test_paper_preset_layer_widths(paper):
    G, D = paper.generator, paper.discriminator
    n = G.nerf
    assert [tuple(layer.weight.shape) for layer in n.layers] == [(128, 3), (128, 128)]
    assert tuple(n.color_film.weight.shape) == (64, 128) and tuple(n.color_out.weight.shape) == (32, 64)
    assert [g.out_features for g in n.gain] == [128, 128, 64] and {g.in_features for g in n.gain} == {128}
    assert [m.out_features for m in n.mapping.net if isinstance(m, torch.nn.Linear)] == [128] * 4
    assert n.mapping.net[0].in_features == 256 and not any(isinstance(m, torch.nn.LayerNorm) for m in n.mapping.net)
    inr_map = [type(m).__name__ for m in G.mapping.net]
    assert inr_map == ["Linear", "LayerNorm", "LeakyReLU"] * 7 + ["Linear", "LayerNorm"]
    dec = G.decoder
    assert len(dec.blocks) == 9 and len(dec.to_rgb) == 6 and dec.rgb_from == 3 and dec.skip_from == 4
    assert tuple(dec.blocks[0][0].weight.shape) == (32, 512) and tuple(dec.blocks[8][1].weight.shape) == (512, 512)
    assert all(not hasattr(fc, "bias") for blk in dec.blocks for fc in blk)           # the official: no bias
    # critics: the official channel tables; at 64^2 blocks 64..8, fromRGB at 64 and 32
    assert sorted(D.main.blocks.keys(), key=int) == ["8", "16", "32", "64"]
    assert sorted(D.main.conv_in.keys(), key=int) == ["32", "64"]
    assert D.main.blocks["64"].conv1.weight.shape[:2] == (512, 512) and D.aux.blocks["64"].conv1.weight.shape[:2] == (256, 256)
    assert D.main.blocks["64"].conv1.down == 1 and D.main.blocks["64"].conv2.down == 2      # main: second conv
    assert D.aux.blocks["64"].conv1.down == 2 and D.aux.blocks["64"].conv2.down == 1        # aux: first conv
    assert D.main.mbstd is None and D.main.final_conv.weight.shape[1] == 512                # stddev_group 0
    m128 = cm.build(cm.make_config("ffhq128"))
    assert _count(m128.discriminator.main) == OFFICIAL["D_main_128"]
    assert _count(m128.discriminator.aux) == OFFICIAL["D_aux_128"]
    assert _count(m128.generator) == _count(G)                 # the official INR: 9 blocks at every size


def test_presets_select_the_official_networks_and_saved_runs_keep_the_old():
    for name in ("ffhq64", "celeba64", "ffhq128", "objects64"):
        c = cm.make_config(name)
        assert (c.arch, c.d_arch, c.inr_blocks, c.d_fade_steps, c.sampling) == ("official", "msd", 9, 0, "official")
    assert (cm.make_config("cpu").arch, cm.make_config("cpu").d_arch) == ("v1", "dcgan")
    old = cm.config_from_dict({"preset": "ffhq64", "resolution": 64, "nerf_res": 64})   # a config saved before
    assert (old.arch, old.d_arch, old.sampling) == ("v1", "dcgan", "v1")
    m = cm.build(old)
    assert type(m.discriminator).__name__ == "Cips3DDiscriminator" and type(m.generator.decoder).__name__ == "CIPSDecoder"


def test_style_mod_fc_hand_values():
    # W (in 2, out 1) = [[3], [4]]; s = 0: the official modulation is s + 1 = 1, column (3, 4) / 5
    # -> x = (1, 1) gives 1.4. s = (1, -1): column (6, 0) -> (1, 0) -> 1. No bias.
    W = torch.tensor([[3.0], [4.0]])
    x = torch.ones(1, 1, 2)
    assert torch.allclose(style_mod_fc(x, W, torch.zeros(1, 2)), torch.tensor([[[1.4]]]), atol=1e-6)
    assert torch.allclose(style_mod_fc(x, W, torch.tensor([[1.0, -1.0]])), torch.tensor([[[1.0]]]), atol=1e-6)


def test_decoder_residuals_and_trgbs_by_hand():
    torch.manual_seed(1)
    dec = CipsNetDecoder(in_dim=8, hidden=16, n_blocks=5, w_dim=12, rgb_from=2, skip_from=3)
    f, w = torch.randn(2, 30, 8), torch.randn(2, 12)
    h, rgb = f, 0
    for i, (a, b) in enumerate(dec.blocks):
        out = F.leaky_relu(b(F.leaky_relu(a(h, w), 0.2), w), 0.2)
        h = out + h if i >= 3 else out                   # blocks 3 and 4 add their input
        if i >= 2:
            rgb = rgb + dec.to_rgb[i - 2](h)              # tRGB of blocks 2, 3, 4
    assert torch.allclose(dec(f, w), torch.tanh(rgb), atol=1e-6)
    layer = StyleModFC(8, 4, 12)
    x = torch.randn(2, 5, 8)
    s = layer.affine(w)
    Wm = layer.weight.unsqueeze(0) * (s.unsqueeze(-1) + 1)
    assert torch.allclose(layer(x, w), x @ (Wm / Wm.norm(dim=1, keepdim=True)), atol=1e-5)


def test_cips_nerf_film_by_hand_and_ignores_directions():
    torch.manual_seed(2)
    n = CipsFilmNerf(feat_dim=5, z_dim=6, hidden=8, n_layers=2, map_hidden=4, map_layers=2, box_scale=3.0)
    z, p = torch.randn(2, 6), torch.randn(2, 7, 3)
    s = n.mapping(z)
    h = p * 3.0
    for i, lin in enumerate(n.layers):
        h = torch.sin((15 * n.gain[i](s) + 30).unsqueeze(1) * lin(h) + n.shift[i](s).unsqueeze(1))
    c = torch.sin((15 * n.gain[2](s) + 30).unsqueeze(1) * n.color_film(h) + n.shift[2](s).unsqueeze(1))
    sigma, feat = n(p, None, z)
    assert torch.allclose(sigma, n.sigma_out(h).squeeze(-1), atol=1e-5)
    assert torch.allclose(feat, n.color_out(c), atol=1e-5) and feat.shape == (2, 7, 5)
    assert torch.equal(n(p, torch.randn(2, 7, 3), z)[1], feat)          # no view dependence
    assert torch.allclose(n.density(p, z), sigma)


def test_mapping_pixel_norm_and_layer_norms():
    torch.manual_seed(3)
    m = CipsMapping(6, 10, 3, layer_norm=True, norm_out=True)
    z = torch.randn(4, 6)
    assert torch.allclose(m(z), m(3.0 * z), atol=1e-5)              # pixel norm first
    h = z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8)
    lin = [x for x in m.net if isinstance(x, torch.nn.Linear)]
    ln = [x for x in m.net if isinstance(x, torch.nn.LayerNorm)]
    for i in range(2):
        h = F.leaky_relu(ln[i](lin[i](h)), 0.2)
    assert torch.allclose(m(z), ln[2](lin[2](h)), atol=1e-5)        # no activation after the last


def test_resblock_by_hand():
    torch.manual_seed(4)
    for first in (False, True):
        blk = ResBlock(4, 6, first_downsample=first)
        x = torch.randn(2, 4, 8, 8)
        y = blk(x)
        assert y.shape == (2, 6, 4, 4)
        assert blk.conv1(x).shape[-1] == (4 if first else 8)
        assert torch.allclose(y, (blk.conv2(blk.conv1(x)) + blk.skip(x)) / math.sqrt(2), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_fade_in_blend_by_hand(alpha):
    torch.manual_seed(5)
    ch = {4: 8, 8: 8, 16: 6, 32: 4}
    D = MultiScaleDiscriminator(16, ch)
    x = torch.randn(3, 3, 16, 16)
    top = D.blocks["16"](D.conv_in["16"](x))
    low = D.conv_in["8"](F.avg_pool2d(x, 2))            # bilinear 0.5x = the 2x2 mean
    h = alpha * top + (1 - alpha) * low
    h = D.blocks["8"](h)
    ref = D.out(D.fc(D.final_conv(h).flatten(1)))
    assert torch.allclose(D(x, alpha), ref, atol=1e-5)
    D.alpha = alpha
    assert torch.allclose(D(x), ref, atol=1e-5)          # the stored alpha when none is given


def test_fade_alpha_schedule_and_set_step():
    assert cm.fade_alpha(0, 0) == 1.0 and cm.fade_alpha(500, 0) == 1.0
    assert cm.fade_alpha(0, 1000) == 0.0 and cm.fade_alpha(250, 1000) == 0.25 and cm.fade_alpha(5000, 1000) == 1.0
    m = cm.build(cm.make_config("tiny", arch="official", d_arch="msd", d_fade_steps=100))
    m.set_step(30)
    assert m.discriminator.main.alpha == m.discriminator.aux.alpha == pytest.approx(0.3)
    m.set_step(300)
    assert m.discriminator.main.alpha == 1.0


def test_msd_channel_tables():
    assert msd_channels("main", 2)[64] == 512 and msd_channels("main", 2)[128] == 256 and msd_channels("main", 1)[64] == 256
    assert msd_channels("aux")[64] == 256 and msd_channels("aux")[256] == 128
    with pytest.raises(ValueError):
        msd_channels("other")


def test_official_arch_trains_shapes_and_gradients():
    torch.manual_seed(6)
    m = cm.build(cm.make_config("tiny", arch="official", d_arch="msd", inr_blocks=5, d_fade_steps=10))
    G, D = m.generator, m.discriminator
    ch = {4: 8, 8: 8, 16: 8, 32: 8}          # narrow critics of the same structure (the tables' 512 are slow)
    D.main, D.aux = MultiScaleDiscriminator(32, ch), MultiScaleDiscriminator(8, ch, first_downsample=True)
    m.set_step(5)
    assert D.main.alpha == D.aux.alpha == 0.5
    x = m.sample_inputs(4)
    out = G(x, return_aux=True)
    assert out["image"].shape == (4, 3, 32, 32) and out["aux"].shape == (4, 3, 8, 8)
    assert out["image"].abs().max() <= 1 and out["aux"].abs().max() <= 1
    loss, _ = m.generator_objective(G, D, x)
    loss.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    loss, scal = m.discriminator_objective(G, D, real, x, 5.0)
    loss.backward()
    assert torch.isfinite(loss) and "R1_aux" in scal
    assert all(p.grad is not None for p in D.parameters())


def test_official_sampling_rays_and_depths_by_hand(monkeypatch):
    # official get_initial_rays_trig: x, y on linspace(-1, 1, r) (x right, y up from the top row),
    # z = -1 / tan(fov / 2), normalised: the corner pixels' rays lie on the fov's edges
    cfg = cm.make_config("tiny", sampling="official", nerf_res=4, fov=12.0, n_samples=6, depth_range=(0.88, 1.12))
    G = cm.Cips3DGenerator(cfg)
    _, d = G.camera_rays(torch.eye(4)[None])
    t = math.tan(math.radians(6.0))
    for (row, col), (x, y) in {(0, 0): (-1, 1), (0, 3): (1, 1), (3, 0): (-1, -1), (1, 2): (1 / 3, 1 / 3)}.items():
        ref = torch.tensor([x * t, y * t, -1.0])
        assert torch.allclose(d[0, row * 4 + col], ref / ref.norm(), atol=1e-6)
    old = cm.Cips3DGenerator(cm.make_config("tiny", nerf_res=4, fov=12.0)).camera_rays(torch.eye(4)[None])[1]
    ref = torch.tensor([-0.75 * t, 0.75 * t, -1.0])                    # v1: pixel centres
    assert torch.allclose(old[0, 0], ref / ref.norm(), atol=1e-6)
    # depths: linspace(0.88, 1.12, 6) + U(-d/2, d/2) = 6 equal bins of [0.88 - d/2, 1.12 + d/2]
    seen = {}

    def fake(field_fn, o, dd, near, far, *a, **k):
        seen["bounds"] = (near, far)
        return {"color": o.new_zeros(*o.shape[:2], cfg.feat_dim), "depth": o.new_zeros(o.shape[:2])}
    monkeypatch.setattr(cm.gc, "render_radiance", fake)
    G.render_rays(*G.camera_rays(torch.eye(4)[None]), None, None)
    h = 0.5 * 0.24 / 5
    assert seen["bounds"] == pytest.approx((0.88 - h, 1.12 + h))
    mids = (0.88 - h) + (torch.arange(6) + 0.5) * (0.24 + 2 * h) / 6
    assert torch.allclose(mids, torch.linspace(0.88, 1.12, 6), atol=1e-6)


def test_official_fine_depths_by_hand():
    # one ray, coarse depths 1, 2, 3, 4 (spacing 1): sigma ln 2 at the second sample gives weights
    # (0, 0.5, 0, ...); the official bins are the midpoints 1.5, 2.5, 3.5 with the inner weights
    # (0.5, 0) + 1e-5, then sample_pdf's own + 1e-5: pdf (0.50002, 0.00002) / 0.50004
    t = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]], dtype=torch.float64)
    c1 = 0.50002 / 0.50004                          # the CDF at 2.5
    for last in (0.0, 100.0):                       # the last weight is left out (and the first)
        sigma = torch.tensor([[[0.0, math.log(2.0), 0.0, last]]], dtype=torch.float64)
        u = torch.tensor([[[0.25, 0.6, 0.99999]]], dtype=torch.float64)
        ref = torch.tensor([1.5 + 0.25 / c1, 1.5 + 0.6 / c1, 2.5 + (0.99999 - c1) / (1 - c1)], dtype=torch.float64)
        got = cm.official_fine_depths(t, sigma, 3, u=u)
        assert torch.allclose(got[0, 0], ref, atol=1e-9), (got, ref)
    # without random levels: evenly spaced levels 0, 1/2, 1 over the same CDF
    got = cm.official_fine_depths(t, sigma.clone().fill_(0).index_fill_(-1, torch.tensor([1]), math.log(2.0)), 3,
                                  deterministic=True)
    assert torch.allclose(got[0, 0], torch.tensor([1.5, 1.5 + 0.5 / c1, 3.5], dtype=torch.float64), atol=1e-9)


def test_render_official_merges_fine_and_coarse_samples():
    # a field whose density and feature are known functions of the depth along the ray (o = 0, d = z):
    # the render equals the composite of the sorted union of the coarse depths (linspace + (u - 1/2) d)
    # and the fine depths drawn from them
    from aware3d.render.volume import volume_render

    def field(p, dirs):
        z = p[..., 2]
        return 30 * torch.exp(-((z - 1.0) / 0.03) ** 2), torch.stack([z, z * z], -1)

    o, d = torch.zeros(1, 2, 3), torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]])
    N, h = 6, 0.5 * 0.24 / 5
    uc, uf = torch.rand(1, 2, N), torch.rand(1, 2, N)
    out = cm.render_official(field, o, d, 0.88 - h, 1.12 + h, N, N, perturb=True, u_coarse=uc, u_fine=uf)
    tc = torch.linspace(0.88, 1.12, N) + (uc - 0.5) * 0.24 / 5
    sc = field(tc.unsqueeze(-1) * d.unsqueeze(2), None)[0]
    tf = cm.official_fine_depths(tc, sc, N, u=uf)
    assert ((tf > 0.9) & (tf < 1.1)).float().mean() > 0.8       # the fine samples go to the density bump
    t_all = torch.sort(torch.cat([tc, tf], -1), -1)[0]
    s_all, v_all = field(t_all.unsqueeze(-1) * d.unsqueeze(2), None)
    ref = volume_render(s_all, v_all, t_all)
    assert torch.allclose(out["color"], ref["color"], atol=1e-5) and torch.allclose(out["depth"], ref["depth"], atol=1e-5)


def test_fine_sampling_and_eval_jitter_keys():
    for name in ("ffhq64", "celeba64", "ffhq128", "objects64"):
        c = cm.make_config(name)
        assert (c.fine_sampling, c.eval_jitter) == ("official", True)
    assert (cm.make_config("cpu").fine_sampling, cm.make_config("cpu").eval_jitter) == ("v1", False)
    old = cm.config_from_dict({"preset": "ffhq64", "resolution": 64, "nerf_res": 64, "sampling": "official"})
    assert (old.fine_sampling, old.eval_jitter) == ("v1", False)       # saved runs: the earlier render
    with pytest.raises(ValueError, match="eval_jitter"):
        cm.Cips3DGenerator(cm.make_config("tiny", n_importance=4, eval_jitter=True))
    with pytest.raises(ValueError, match="fine_sampling"):
        cm.Cips3DGenerator(cm.make_config("tiny", fine_sampling="other"))


def test_eval_jitter_renders_are_random_but_reproducible():
    kw = {"arch": "official", "sampling": "official", "fine_sampling": "official", "n_importance": 6, "inr_blocks": 4}
    torch.manual_seed(0)
    m = cm.build(cm.make_config("tiny", eval_jitter=True, **kw))
    G = m.generator.eval()
    x = m.sample_inputs(2, torch.Generator().manual_seed(3), train=False)
    with torch.no_grad():
        a, b = G(x, return_aux=True), G(x, return_aux=True)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])   # seeded per call
        G.cfg = cm.replace_config(G.cfg, chunk=13)                                             # chunks: the same draws
        c = G(x, return_aux=True)
        assert torch.allclose(a["features"], c["features"], atol=1e-5)
        G.cfg = cm.replace_config(G.cfg, eval_jitter=False)
        plain = G(x, return_aux=True)
    assert (a["depth"] - plain["depth"]).abs().max() > 1e-4                                 # jittered depths
