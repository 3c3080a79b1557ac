"""StyleNeRF's official settings behind config keys (pe_scale, conv_clamp, renderer): the paper presets
use them, runs saved before keep the old values; the parameter counts of the official networks
instantiated (stylenerf_ffhq + paper256); hand computations of the official renderer (z-depth samples
with both ends, last interval 0 before the background, the inverse-sphere background, hierarchical
samples from the inner weights, training density noise) and of the clamp."""
import math

import pytest
import torch
import torch.nn.functional as F

from aware3d.fields import stylenerf as fs
from aware3d.methods import stylenerf as sn


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_presets_official_keys_and_legacy_defaults():
    for preset in ("ffhq256", "ffhq256_release"):
        c = sn.make_config(preset)
        assert (c.pe_scale, c.conv_clamp, c.renderer, c.bg_start) == (math.pi, 256.0, "official", 0.5)
    old = sn.config_from_dict({"preset": "ffhq256"})    # a run saved before the keys
    assert (old.pe_scale, old.conv_clamp, old.renderer) == (1.0, 0.0, "v1")
    assert sn.make_config("cpu64").renderer == "v1"


@pytest.mark.parametrize("preset, counts", [
    # official modules instantiated (stylenerf_ffhq + paper256, upsample_mode nn_cat / pixelshuffle)
    ("ffhq256_release", {"G": 5_264_749, "mapping": 2_101_248, "fg": 779_072, "bg": 37_188,
                         "blocks": [1_249_667, 772_675, 324_899]}),
    ("ffhq256", {"G": 5_439_469, "mapping": 2_101_248, "fg": 779_072, "bg": 37_188,
                 "blocks": [1_382_275, 806_211, 333_475]}),
])
def test_paper_preset_parameter_counts_equal_the_official_networks(preset, counts):
    m = sn.build(sn.make_config(preset))
    G = m.generator
    assert _count(G) == counts["G"] and _count(G.mapping) == counts["mapping"]
    assert _count(G.fg) == counts["fg"] and _count(G.bg) == counts["bg"]
    assert [_count(b) for b in G.upsampler.blocks] == counts["blocks"]
    assert _count(m.discriminator) == 23_052_353 and G.num_ws == 17


def test_field_encoding_scale():
    torch.manual_seed(0)
    fg = fs.ForegroundField(w_dim=8, hidden=16, n_blocks=2, feat_dim=4, n_freq=3, pe_scale=math.pi)
    fg1 = fs.ForegroundField(w_dim=8, hidden=16, n_blocks=2, feat_dim=4, n_freq=3)
    fg1.load_state_dict(fg.state_dict())
    p, ws = torch.rand(1, 5, 3) - 0.5, torch.randn(1, fg.num_ws, 8)
    # sin(2^k pi x) = sin(2^k (pi x)): the scaled field at x is the unscaled one at pi x
    for a, b in zip(fg(p, ws), fg1(math.pi * p, ws)):
        assert torch.allclose(a, b, atol=1e-5)
    bg = fs.BackgroundField(z_dim=2, hidden=8, n_blocks=2, feat_dim=4, n_freq=3, pe_scale=math.pi)
    q = torch.randn(1, 5, 3) * 4
    r = q.norm(dim=-1, keepdim=True)
    # 3D points and (direction, inverse radius) give the same values
    z = torch.randn(1, 2)
    for a, b in zip(bg(q, z), bg(torch.cat([q / r, 1 / r], -1), z)):
        assert torch.allclose(a, b, atol=1e-6)


def test_conv_clamp_bounds_upsampler_and_critic():
    torch.manual_seed(0)
    layer = fs.StyleLayer2D(4, 4, 6, conv_clamp=2.0).eval()
    layer.magnitude.fill_(1e-8)       # inputs x 1e4
    y = layer(torch.randn(2, 4, 5, 5), torch.randn(2, 6))
    assert y.abs().max() == 2.0
    up = fs.Upsampler(4, 6, 4, 16, channel_base=64, channel_max=8, conv_clamp=3.0).eval()
    imgs = up(torch.randn(1, 4, 4, 4) * 1e6, torch.zeros(1, 3, 4, 4), torch.randn(1, up.num_ws, 6))
    # the first block's image is its tRGB alone (the running image is 0): bounded by the clamp
    assert float(imgs[0].detach().abs().max()) == pytest.approx(3.0)
    cfg = sn.make_config("tiny", conv_clamp=1.0)
    D = sn.StyleNeRFDiscriminator(cfg).eval()
    D0 = sn.StyleNeRFDiscriminator(sn.make_config("tiny")).eval()
    D0.load_state_dict(D.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(D(x * 1e-3), D0(x * 1e-3))     # small activations: the clamp never acts
    assert not torch.allclose(D(x * 1e5), D0(x * 1e5))


def _rays(n=3):
    o = torch.tensor([0.0, 0.0, 1.0]).expand(1, n, 3)      # camera on the unit sphere looking down -z
    d = torch.stack([torch.linspace(-0.1, 0.1, n), torch.linspace(0.05, -0.05, n), -torch.ones(n)], -1)[None]
    return o.contiguous(), d                                 # directions at camera depth 1


def test_official_renderer_samples_and_weights_by_hand():
    o, d = _rays()
    near, far, N, sig = 0.88, 1.12, 5, 3.0
    seen = []

    def fg(p):
        seen.append(p)
        return torch.full(p.shape[:2], sig), torch.ones(*p.shape[:2], 2)

    def bg_empty(q):
        return torch.full(q.shape[:2], -5.0), torch.zeros(*q.shape[:2], 2)

    out = fs.render_scene_official(fg, bg_empty, o, d, near, far, N, False, 3)
    # the samples: z-depths evenly spaced on [near, far], both ends included, along depth-1 directions
    z = torch.linspace(near, far, N)
    assert torch.allclose(seen[0].reshape(1, 3, N, 3), o[:, :, None] + z[:, None] * d[:, :, None], atol=1e-6)
    # intervals z steps x |d|, the last 0 before a background: opacity 1 - exp(-sigma (far - near) |d|)
    T = torch.exp(-sig * (far - near) * d.norm(dim=-1))
    assert torch.allclose(out["opacity"], 1 - T, atol=1e-5)
    assert torch.allclose(out["values"], (1 - T)[..., None].expand(1, 3, 2), atol=1e-5)
    # the depth: sum_i w_i z_i |d| (distance along the unit ray)
    alpha = 1 - torch.exp(-sig * (z[1] - z[0]) * d.norm(dim=-1))
    w = torch.stack([alpha * (1 - alpha) ** i for i in range(N - 1)], -1)
    assert torch.allclose(out["depth"], (w * z[:-1]).sum(-1) * d.norm(dim=-1), atol=1e-5)
    # no background: the last sample is opaque
    assert torch.allclose(fs.render_scene_official(fg, None, o, d, near, far, N, False, 3)["opacity"],
                          torch.ones(1, 3), atol=1e-6)


def test_official_renderer_background_inverse_sphere():
    o, d = _rays()
    seen = []

    def fg_empty(p):
        return torch.full(p.shape[:2], -5.0), torch.zeros(*p.shape[:2], 4)

    def bg(q):   # opaque from the first sample on; values = (direction, inverse radius)
        seen.append(q)
        return torch.full(q.shape[:2], 1e4), q

    out = fs.render_scene_official(fg_empty, bg, o, d, 0.88, 1.12, 4, True, 4, bg_start=0.5)
    q = seen[0].reshape(1, 3, 4, 4)
    assert torch.allclose(q[..., 3], torch.tensor([0.5, 1 / 3, 1 / 6, 0.0]).expand(1, 3, 4), atol=1e-6)
    # the first sample is the ray's point at radius 2: on the ray, |p| = 2
    p = q[..., 0, :3] * 2
    u = F.normalize(d, dim=-1)
    assert torch.allclose(torch.linalg.cross(p - o, u), torch.zeros_like(p), atol=1e-5)
    assert torch.allclose(out["values"], q[..., 0, :], atol=1e-4)       # all its weight on the first sample
    # inverse radius 0: the ray's direction (the point at infinity)
    assert torch.allclose(q[..., 3, :3], u, atol=1e-5)


def test_official_renderer_hierarchical_samples_and_density_noise():
    o, d = _rays(2)
    near, far, N = 0.88, 1.12, 9
    seen = []
    z_wall = 1.0                                   # dense only beyond z = 1: the weight sits at the wall

    def fg(p):
        seen.append(p)
        zz = 1.0 - p[..., 2]                        # camera at z = 1 looking down -z: z-depth = 1 - p_z
        return torch.where(zz > z_wall, 50.0, -1.0), torch.zeros(*p.shape[:2], 1)

    fs.render_scene_official(fg, None, o, d, near, far, N, True, 0)
    fine = (1 - seen[1][..., 2]).reshape(1, 2, N)
    z = torch.linspace(near, far, N)
    mids = 0.5 * (z[1:] + z[:-1])
    # the inner weight is on the first sample past the wall, its bin between the midpoints around it
    k = int((z > z_wall).nonzero()[0])
    inner = fine[..., 1:N - 2]
    assert bool(((inner > mids[k - 1]) & (inner < mids[k])).all())
    # deterministic levels 0 ... 1: the first and last fine samples sit on the first and last midpoints
    assert torch.allclose(fine[..., 0], mids[0].expand(1, 2), atol=1e-5)
    assert torch.allclose(fine[..., -1], mids[-1].expand(1, 2), atol=1e-5)

    def zero(p):
        return torch.zeros(p.shape[:2]), torch.zeros(*p.shape[:2], 1)
    assert float(fs.render_scene_official(zero, None, o, d, near, far, N, False, 0)["depth"].sum()) > 0
    plain = fs.render_scene_official(zero, lambda q: zero(q), o, d, near, far, N, False, 2)
    torch.manual_seed(0)
    noisy = fs.render_scene_official(zero, lambda q: zero(q), o, d, near, far, N, False, 2, sigma_noise=True)
    assert float(plain["opacity"].max()) == 0.0 and float(noisy["opacity"].min()) > 0.0


def test_generator_with_official_renderer_trains_and_renders():
    torch.manual_seed(0)
    m = sn.build(sn.make_config("tiny", renderer="official", pe_scale=math.pi, conv_clamp=256.0, radius=1.0,
                                depth_range=(0.88, 1.12), n_importance=6))
    m.set_step(40)
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    loss, _ = m.generator_objective(m.generator, m.discriminator, x)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in m.generator.fg.parameters())
    G = m.generator.eval()
    with torch.no_grad():
        out = G(sn.sample_inputs(m.cfg, 1, train=False), return_aux=True)
    assert out["image"].shape == (1, 3, 32, 32) and out["opacity"].shape == (1, 8, 8)
    assert torch.isfinite(out["depth"]).all()


def test_run_saved_before_the_keys_renders_the_same_pixels():
    # a tiny run's config as written before pe_scale / conv_clamp / renderer / bg_start existed; the
    # numbers are what the code before them rendered (commit eb8e278, same seeds)
    import dataclasses

    d = dataclasses.asdict(sn.make_config("tiny"))
    for k in ("pe_scale", "conv_clamp", "renderer", "bg_start"):
        d.pop(k)
    cfg = sn.config_from_dict(d)
    G = sn.build(cfg, seed=0).generator.eval()
    with torch.no_grad():
        out = G(sn.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=False), return_aux=True)
    img = out["image"]
    assert float(img.mean()) == pytest.approx(-0.3100666105747223, abs=1e-6)
    assert torch.allclose(img[0, :, 5, 7], torch.tensor([-0.9786419868469238, 0.005006154999136925,
                                                         -0.7677950263023376]), atol=1e-5)
    assert torch.allclose(img[1, :, 20, 3], torch.tensor([0.15370261669158936, 0.1113247275352478,
                                                          -0.31543129682540894]), atol=1e-5)
    assert float(out["depth"].mean()) == pytest.approx(1.1212432384490967, abs=1e-6)


class _Images:
    def __init__(self, res, n=8):
        self.images = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def sample(self, n, generator=None):
        return self.images[torch.randint(0, len(self.images), (n,), generator=generator)]


def test_paper_presets_path_length_penalty_and_lazy_correction():
    from aware3d.train import gan
    from aware3d.train.gan import lazy_ratio

    for preset in ("ffhq256", "ffhq256_release"):
        c = sn.make_config(preset)
        # official paper256 + stylenerf_ffhq: lr 0.0025 both, betas (0, 0.99), pl_weight 2, pl_batch_shrink 2,
        # pl_decay 0.01, G_reg_interval 4, D_reg_interval 16
        assert (c.lr_g, c.lr_d, c.betas, c.lazy_correction) == (0.0025, 0.0025, (0.0, 0.99), True)
        assert (c.pl_weight, c.pl_interval, c.pl_decay, c.pl_batch_shrink) == (2.0, 4, 0.01, 2)
        g = sn.StyleNeRFMethod.gan_config(type("M", (), {"cfg": c})())
        assert g.pl_weight == 2.0 and lazy_ratio(g, "D") == 16 / 17 and lazy_ratio(g, "G") == 4 / 5
    old = sn.config_from_dict({"preset": "ffhq256"})     # saved before: no penalty, no engine correction
    assert old.pl_weight == 0.0 and not old.lazy_correction and old.lr_d == pytest.approx(0.0025 * 16 / 17)
    # the engine's optimisers with the paper settings on a tiny network
    m = sn.build(sn.make_config("tiny", lr_g=0.0025, lr_d=0.0025, betas=(0.0, 0.99), lazy_correction=True,
                                pl_weight=2.0, r1_interval=16, progressive=False))
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    gp, dp = e.opt_g.param_groups[0], e.opt_d.param_groups[0]
    assert gp["lr"] == pytest.approx(0.0025 * 4 / 5) and gp["betas"][1] == pytest.approx(0.99 ** 0.8)
    assert dp["lr"] == pytest.approx(0.0025 * 16 / 17) and dp["betas"][1] == pytest.approx(0.99 ** (16 / 17))


def test_path_length_reaches_every_style_and_trains():
    from aware3d.train import gan

    torch.manual_seed(0)
    m = sn.build(sn.make_config("tiny", progressive=False, renderer="official", radius=1.0, depth_range=(0.88, 1.12)))
    G = m.generator.train()
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    img, ws = m.path_length_forward(G, x)
    assert img.shape == (2, 3, 32, 32) and ws.shape == (2, G.num_ws, m.cfg.w_dim)
    (g,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws)
    assert bool((g.abs().sum((0, 2)) > 0).all())      # every style slot reaches the image
    # two engine steps with the penalty every step: a PL phase, finite, the running mean moves
    m = sn.build(sn.make_config("tiny", progressive=False, pl_weight=2.0, pl_interval=1, lazy_correction=True,
                                r1_interval=16))
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    outs = [e.train_step(_Images(32)) for _ in range(2)]
    assert all(math.isfinite(o["PL"]) and o["pl_length"] > 0 for o in outs) and e.pl_mean.item() > 0


def test_official_renderer_refuses_cameras_outside_the_unit_sphere():
    m = sn.build(sn.make_config("tiny", renderer="official"))      # objects: cameras at radius 6
    with pytest.raises(ValueError, match="unit sphere"):
        m.generator(m.sample_inputs(1, torch.Generator().manual_seed(0)))


def _official_tiny(**kw):
    return sn.make_config("tiny", renderer="official", nerf_path_mode="official", pe_scale=math.pi, radius=1.0,
                          depth_range=(0.88, 1.12), **kw)


def test_official_nerf_path_regulariser_by_hand():
    torch.manual_seed(0)
    cfg = _official_tiny(progressive=False, nerf_path_samples=4)
    G = sn.build(cfg).generator.eval()
    x = sn.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=False)
    offsets = torch.tensor([[1, 2], [7, 0]])                        # (x, y) per sample
    with torch.no_grad():
        img = G(x)
        ws = G.styles(x)
        path, target = G.official_nerf_path(ws, x, img, len(G.upsampler.blocks), 1.0, offsets=offsets)
        ws_up = ws[:, G.fg.num_ws:]
        for b in range(2):
            xb = {k: v[b:b + 1] for k, v in x.items()}
            o, d = G.camera_rays(xb["c2w"], 32)
            for i in range(4):
                for j in range(4):
                    yy, xx = 8 * i + int(offsets[b, 1]), 8 * j + int(offsets[b, 0])   # stride 32 / 4
                    assert torch.equal(target[b, :, i, j], img[b, :, yy, xx])
                    k = yy * 32 + xx
                    out = G._render_official(*G._fields(ws[b:b + 1], xb), xb["c2w"], o[:, k:k + 1], d[:, k:k + 1],
                                             return_samples=True)
                    sv, sw = out["sample_values"][0, 0], out["sample_weights"][0, 0]
                    assert torch.allclose((sw[:, None] * sv).sum(0), out["values"][0, 0], atol=1e-5)
                    # every sample on its own through the upsampler's layers without upsampling
                    ref = sum(sw[s] * G.upsampler(sv[s, 3:].reshape(1, -1, 1, 1), sv[s, :3].reshape(1, 3, 1, 1),
                                                  ws_up[b:b + 1], skip_up=True)[-1][0, :, 0, 0]
                              for s in range(sv.shape[0]))
                    assert torch.allclose(path[b, :, i, j], ref, atol=1e-5)


def test_official_nerf_path_in_training():
    torch.manual_seed(0)
    m = sn.build(_official_tiny())
    m.set_step(5)                                   # growing: 16^2 of 32^2, a fade in progress
    G = m.generator.train()
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    out = G(x, return_aux=True)
    assert out["image"].shape[-1] == 16 and out["nerf_path"].shape == (2, 3, 16, 16)
    assert out["nerf_path_target"].shape == (2, 3, 16, 16)
    loss, sc = m.generator_objective(G, m.discriminator, x)
    G.zero_grad()
    loss.backward()
    assert "nerf_path" in sc and float(sc["nerf_path"]) > 0
    assert all(p.grad is not None for p in G.upsampler.blocks[0].parameters())
    with pytest.raises(ValueError, match="renderer official"):
        sn.build(sn.make_config("tiny", nerf_path_mode="official"))
    assert sn.make_config("ffhq256").nerf_path_mode == "official"
    assert sn.config_from_dict({"preset": "ffhq256"}).nerf_path_mode == "downsampled"


def test_lanczos4_resize_u8_is_opencvs():
    """aware3d's own Lanczos-4 against OpenCV (installed with the FID extra; aware3d never imports it):
    down, up and non-integer factors, noise, flat and edge images, 1 and 3 channels, pixel for pixel."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the reference) is not installed")
    import numpy as np

    g = np.random.default_rng(0)
    for src, dst, ch in ((64, 16, 3), (256, 32, 3), (128, 64, 1), (64, 48, 3), (16, 40, 3), (33, 7, 1)):
        for kind in ("noise", "flat", "edge"):
            im = g.integers(0, 256, (src, src, ch)).astype(np.uint8)
            if kind == "flat":
                im[:] = 255
            elif kind == "edge":
                im[:] = 0
                im[:, src // 3:] = 255
            ref = cv2.resize(im, (dst, dst), interpolation=cv2.INTER_LANCZOS4).reshape(dst, dst, ch)
            assert np.array_equal(sn.lanczos4_resize_u8(im, dst), ref), (src, dst, ch, kind)


def test_real_images_lanczos_resize():
    import numpy as np

    u8 = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = u8.float() / 127.5 - 1
    ref = np.stack([sn.lanczos4_resize_u8(im, 16) for im in u8.permute(0, 2, 3, 1).numpy()])
    ref = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(sn.lanczos_resize(x, 16), ref) and torch.equal(sn.lanczos_resize(x, 64), x)
    assert not torch.allclose(ref, F.avg_pool2d(x, 4), atol=1e-2)

    class Data:
        def sample(self, n, generator=None):
            return x[:n]

    m = sn.build(sn.make_config("tiny", real_resize="lanczos"))
    m.set_step(0)                                   # NeRF only: 8^2
    assert torch.equal(m.wrap_dataset(Data()).sample(2), sn.lanczos_resize(x, 8))
    assert sn.make_config("ffhq256").real_resize == "lanczos"
    assert sn.config_from_dict({"preset": "ffhq256"}).real_resize == "area"
    m = sn.build(sn.make_config("tiny"))
    m.set_step(0)
    assert torch.equal(m.wrap_dataset(Data()).sample(2), F.avg_pool2d(x, 8))


def test_resume_equals_uninterrupted_with_the_official_settings(objects, tmp_path):
    # official renderer (its jitter and density noise), NeRF-path grid offsets, path-length phase with
    # its running mean, Lanczos real images: 4 + 4 steps (stop, resume) against 8 straight
    kw = {"preset": "tiny", "progress": False, "device": "cpu", "sample_every": 0, "checkpoint_every": 0,
          "renderer": "official", "nerf_path_mode": "official", "pe_scale": math.pi, "radius": 1.0,
          "depth_range": (0.88, 1.12), "real_resize": "lanczos", "pl_weight": 2.0, "pl_interval": 2,
          "lazy_correction": True, "curriculum": (0.002, 0.02)}
    sn.METHOD.train(objects, out=tmp_path / "a", max_steps=8, **kw)
    sn.METHOD.train(objects, out=tmp_path / "b", max_steps=4, **kw)
    sn.METHOD.train(objects, out=tmp_path / "b", max_steps=8, resume=True, **kw)
    from aware3d.train.io import load_checkpoint

    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 8
    for key in ("G", "D", "G_ema"):
        for name, v in a[key].items():
            assert torch.equal(v, b[key][name]), f"{key}.{name} differs after resume"
