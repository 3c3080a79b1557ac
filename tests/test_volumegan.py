"""VolumeGAN: the modulated 3D convolution by hand, the structural volume and its trilinear lookup
against grid_sample, the field, the 2D renderer, style mixing, the official layer sizes, and a
20-step run from the command line with a render program, a mesh export and resume equivalence."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from aware3d.fields.volumegan import (FeatureVolume, ModulatedConv3d, VolumeField, modulated_conv3d,
                                      to_grid_coords, volume_lookup)
from aware3d.methods import volumegan as vm
from aware3d.nets.stylegan2 import ModulatedConv2d
from aware3d.train import gan
from aware3d.train.gan import lazy_ratio


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


def _all_grads(module):
    return [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]


# --------------------------------------------------------------------------------------------------
# Modulated 3D convolution


def test_modulated_conv3d_hand_values():
    # 1x1x1 kernel W = [[3, 4]], style (1, 1): demodulated row (0.6, 0.8), x = (1, 1) -> 1.4;
    # without demodulation 3 + 4 = 7; style (2, 0): row (6, 0) -> (1, 0) -> 1.
    W = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1, 1)
    x = torch.ones(1, 2, 2, 2, 2)
    assert torch.allclose(modulated_conv3d(x, W, torch.ones(1, 2)), torch.full((1, 1, 2, 2, 2), 1.4), atol=1e-6)
    assert torch.allclose(modulated_conv3d(x, W, torch.ones(1, 2), demodulate=False), torch.full((1, 1, 2, 2, 2), 7.0))
    assert torch.allclose(modulated_conv3d(x, W, torch.tensor([[2.0, 0.0]])), torch.ones(1, 1, 2, 2, 2), atol=1e-6)


def test_modulated_conv3d_equals_per_sample_conv_of_the_modulated_weight():
    # 3^3 kernel, two samples with different styles: the grouped convolution equals, per sample, a
    # plain conv3d with w'' = s w / ||s w|| (norm over in x k^3 per output channel) written out
    g = torch.Generator().manual_seed(0)
    x, W, s = torch.randn(2, 3, 5, 4, 6, generator=g), torch.randn(4, 3, 3, 3, 3, generator=g), torch.rand(2, 3, generator=g) + 0.5
    y = modulated_conv3d(x, W, s)
    for b in range(2):
        wb = W * s[b].reshape(1, 3, 1, 1, 1)
        norm = torch.sqrt((wb ** 2).sum(dim=(1, 2, 3, 4), keepdim=True) + 1e-8)
        assert torch.allclose(y[b:b + 1], F.conv3d(x[b:b + 1], wb / norm, padding=1), atol=1e-5)
    # the module: shapes, identity style at init (affine bias 1), gradients everywhere
    torch.manual_seed(0)
    layer = ModulatedConv3d(3, 4, 3, w_dim=6)
    assert torch.allclose(layer.affine(torch.zeros(1, 6)), torch.ones(1, 3))
    out = layer(x, torch.randn(2, 6))
    assert out.shape == (2, 4, 5, 4, 6)
    out.square().sum().backward()
    assert not _all_grads(layer)


# --------------------------------------------------------------------------------------------------
# Structural volume and its lookup


def test_volume_lookup_matches_grid_sample_align_corners_border():
    # the official grid_sample_3d: (c + 1) / 2 (size - 1) (align_corners=True), indices clamped (border)
    g = torch.Generator().manual_seed(1)
    vol = torch.randn(2, 5, 4, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    c = (torch.rand(2, 300, 3, generator=g, dtype=torch.float64) * 2.6 - 1.3).requires_grad_(True)
    ours = volume_lookup(vol, c)
    ref = F.grid_sample(vol, c[:, None, None], mode="bilinear", align_corners=True,
                        padding_mode="border")[:, :, 0, 0].transpose(1, 2)
    assert ours.shape == (2, 300, 5) and torch.allclose(ours, ref, atol=1e-12)
    gv, gc_ = torch.autograd.grad(ours.sin().sum(), (vol, c))
    rv, rc = torch.autograd.grad(ref.sin().sum(), (vol, c))
    assert torch.allclose(gv, rv, atol=1e-10) and torch.allclose(gc_, rc, atol=1e-10)
    # voxel centres: corners aligned, c = -1 / +1 are the first / last voxels
    assert torch.allclose(volume_lookup(vol, -torch.ones(2, 1, 3, dtype=torch.float64))[:, 0], vol[:, :, 0, 0, 0])
    assert torch.allclose(volume_lookup(vol, torch.ones(2, 1, 3, dtype=torch.float64))[:, 0], vol[:, :, -1, -1, -1])
    # twice differentiable (a path-length penalty's double backward through the lookup)
    (gcc,) = torch.autograd.grad(volume_lookup(vol, c).square().sum(), c, create_graph=True)
    gcc.square().sum().backward()
    assert vol.grad is not None and vol.grad.abs().sum() > 0


def test_grid_coords_map_the_box_to_the_unit_cube():
    b = ((-1.0, -2.0, 0.0), (1.0, 2.0, 4.0))
    p = torch.tensor([[-1.0, -2.0, 0.0], [1.0, 2.0, 4.0], [0.0, 0.0, 2.0]])
    assert torch.allclose(to_grid_coords(p, b), torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3]))


def test_feature_volume_official_sizes_and_both_layers():
    fv = FeatureVolume(512, feat_res=32, init_res=4, base_channels=256, out_channels=32)
    assert fv.channels == (256, 128, 64, 32)
    assert _nparams(fv) == 3_440_032  # the official FeatureVolume(feat_res 32, base 256, out 32, w 512)
    torch.manual_seed(0)
    for layer in ("adain", "modconv"):
        fv = FeatureVolume(8, feat_res=16, init_res=4, base_channels=12, out_channels=4, layer=layer)
        v = fv(torch.randn(3, 8))
        assert v.shape == (3, 4, 16, 16, 16) and torch.isfinite(v).all()
        v.square().mean().backward()
        assert not _all_grads(fv), layer
    # adain: instance-normalised per channel before the w-driven scale and shift
    fv = FeatureVolume(8, feat_res=8, init_res=4, base_channels=6, out_channels=4)
    with torch.no_grad():
        fv.style.weight.zero_()
        fv.style.bias.copy_(torch.cat([torch.ones(10), torch.zeros(10)]))
        x = fv.convs[0](fv.const)
        x = (x - x.mean((2, 3, 4), keepdim=True)) / torch.sqrt(((x - x.mean((2, 3, 4), keepdim=True)) ** 2).mean((2, 3, 4), keepdim=True) + 1e-8)
        x = F.leaky_relu(x, 0.2)
        x = fv.convs[1](F.interpolate(x, scale_factor=2))
        x = (x - x.mean((2, 3, 4), keepdim=True)) / torch.sqrt(((x - x.mean((2, 3, 4), keepdim=True)) ** 2).mean((2, 3, 4), keepdim=True) + 1e-8)
        assert torch.allclose(fv(torch.randn(1, 8)), F.leaky_relu(x, 0.2), atol=1e-5)


def test_volume_field_shapes_gradients_and_per_layer_styles():
    torch.manual_seed(0)
    f = VolumeField(w_dim=8, feat_res=8, base_channels=8, volume_channels=4, n_freqs=3, hidden=16, n_layers=3,
                    feat_dim=6, bounds=((-1,) * 3, (1,) * 3))
    assert f.mlp[0].weight.shape == (16, 4 + 3 * 7)           # [volume features, x, sin / cos of 3 octaves]
    p, ws = torch.rand(2, 40, 3) * 2 - 1, torch.randn(2, 3, 8)
    sigma, feat = f(p, ws)
    assert sigma.shape == (2, 40) and feat.shape == (2, 40, 6)
    (sigma.sum() + feat.square().sum()).backward()
    assert not _all_grads(f)
    with torch.no_grad():  # the volume comes from ws[:, 0]; layer i from ws[:, i]
        ws2 = ws.clone()
        ws2[:, 2] = torch.randn(2, 8)
        assert torch.equal(f.make_volume(ws), f.make_volume(ws2))
        assert not torch.allclose(f(p, ws)[0], f(p, ws2)[0])
        assert torch.allclose(f.density(p, ws), f(p, ws, f.make_volume(ws))[0])


# --------------------------------------------------------------------------------------------------
# 2D renderer


def test_upsampling_1x1_layer_equals_modulated_conv_with_up():
    # conv 1x1, then FIR upsampling == FIR upsampling, then conv 1x1 (the official order vs StyleGAN2's)
    torch.manual_seed(0)
    a = vm._UpModConv1x1(5, 7, 6, use_noise=False)
    b = ModulatedConv2d(5, 7, 1, 6, up=2)
    b.load_state_dict(a.state_dict())
    x, w = torch.randn(2, 5, 8, 8), torch.randn(2, 6)
    assert torch.allclose(a(x, w), b(x, w), atol=1e-5)


def test_renderer_shapes_skip_sum_and_const_noise():
    torch.manual_seed(0)
    r = vm.VolumeGANRenderer(8, nerf_res=8, resolution=32, w_dim=6, fmaps_base=128, fmaps_max=16)
    x, ws = torch.randn(2, 8, 8, 8), torch.randn(2, 6, 6)
    r.train()
    img = r(x, ws)
    assert img.shape == (2, 3, 32, 32)
    img.square().mean().backward()
    assert not _all_grads(r)
    r.eval()
    with torch.no_grad():  # const noise outside training: deterministic
        assert torch.equal(r(x, ws), r(x, ws))
        # no octaves: the image is the feature map's first 3 channels
        r0 = vm.VolumeGANRenderer(8, nerf_res=8, resolution=8, w_dim=6)
        assert torch.equal(r0(x, ws[:, :2]), x[:, :3])


# --------------------------------------------------------------------------------------------------
# Generator, style mixing, official sizes


def test_official_layer_sizes():
    # parameter counts of genforce/volumegan instantiated on CPU (volumegan_ffhq_config, g_init_res 32)
    m = vm.build(vm.make_config("ffhq256"))
    G = m.generator
    assert _nparams(G.mapping) == 2_101_248 and _nparams(G.field) == 4_236_544
    assert _nparams(G) == 8_688_271                          # official VolumeGANGenerator at 256
    assert _nparams(G.renderer) == 2_350_479
    assert vm.n_styles(m.cfg) == 12
    # official VolumeGANDiscriminator 28,875,393 (its fromRGB at 256 ... 4 for the progressive fade-in);
    # without use_pg (saved configs without the key) 11,264 fewer: fromRGB at 256 only
    assert _nparams(m.discriminator) == 28_875_393
    assert _nparams(vm.build_discriminator(vm.make_config("ffhq256", use_pg=False))) == 28_875_393 - 11_264
    assert _nparams(vm.build(vm.make_config("celeba128")).generator) == 8_375_818
    cfg = m.cfg
    assert cfg.r1_weight == 5.0 and cfg.r1_interval == 16 and cfg.style_mixing == 0.9
    gcfg = m.gan_config()  # official d_lr 0.002 x 16/17 by the lazy correction, g_lr 0.002 x 4/5
    assert cfg.lr_d * lazy_ratio(gcfg, "D") == pytest.approx(0.002 * 16 / 17)
    assert cfg.lr_g * lazy_ratio(gcfg, "G") == pytest.approx(0.0016)
    assert (gcfg.pl_weight, gcfg.pl_interval, gcfg.pl_decay, gcfg.pl_batch_shrink) == (2.0, 4, 0.01, 2)
    assert (cfg.n_samples, cfg.n_importance, cfg.fov, cfg.depth_range) == (12, 12, 12.0, (0.8, 1.2))


def _tiny(**kw):
    torch.manual_seed(0)
    return vm.build(vm.make_config("tiny", **kw))


def test_generator_shapes_and_gradients():
    m = _tiny(n_importance=3)
    x = m.sample_inputs(4, torch.Generator().manual_seed(0))
    out = m.generator(x, return_aux=True)
    r = m.cfg.nerf_res
    assert out["image"].shape == (4, 3, 32, 32) and out["features"].shape == (4, m.cfg.feat_dim, r, r)
    assert out["depth"].shape == (4, r, r) and out["ws"].shape == (4, vm.n_styles(m.cfg), m.cfg.w_dim)
    loss = F.softplus(-m.discriminator(out["image"])).mean()
    loss.backward()
    assert not _all_grads(m.generator)
    assert m.discriminator(out["image"].detach()).shape == (4, 1)
    # inference: chunked rendering equals one pass
    G = m.generator.eval()
    with torch.no_grad():
        a = G(x)
        G.cfg.chunk = 8
        assert torch.allclose(G(x), a, atol=1e-5)


def test_style_mixing_replaces_the_2d_styles_after_the_cutoff():
    m = _tiny()
    G = m.generator.train()
    L, n_mlp = vm.n_styles(m.cfg), m.cfg.mlp_layers
    z, z2 = torch.randn(3, 16), torch.randn(3, 16)
    cut = torch.full((3,), n_mlp + 1)
    with torch.no_grad():
        ws = G.styles({"z": z, "z_mix": z2, "mix_cutoff": cut})
        w1, w2 = G.mapping(z, update_w_avg=False), G.mapping(z2, update_w_avg=False)
    assert torch.allclose(ws[:, :n_mlp + 1], w1[:, None].expand(-1, n_mlp + 1, -1))
    assert torch.allclose(ws[:, n_mlp + 1:], w2[:, None].expand(-1, L - n_mlp - 1, -1))
    # the prior: one draw per batch, the cutoff in [mlp_layers, L] (L: no mixing)
    cuts = [int(vm.sample_inputs(m.cfg, 2, torch.Generator().manual_seed(s))["mix_cutoff"][0]) for s in range(60)]
    assert min(cuts) >= n_mlp and max(cuts) <= L and L in cuts and len(set(cuts)) > 2
    assert "mix_cutoff" not in m.sample_inputs(2, train=False)


def test_truncation_pulls_towards_w_avg():
    m = _tiny(truncation_psi=0.0)
    G = m.generator.eval()
    G.mapping.w_avg.fill_(0.5)
    ws = G.styles({"z": torch.randn(2, 16)})
    assert torch.allclose(ws, torch.full_like(ws, 0.5))


# --------------------------------------------------------------------------------------------------
# End to end from the command line


@pytest.fixture(scope="module")
def cli_run(objects32, tmp_path_factory):
    from aware3d.cli import main

    run = tmp_path_factory.mktemp("volumegan") / "run"
    assert main(["train", "volumegan", "--data", str(objects32), "--out", str(run), "--preset", "tiny",
                 "--max-steps", "20", "--device", "cpu"]) == 0
    return run


def test_cli_train_render_and_mesh(cli_run, tmp_path):
    from aware3d.cli import main

    ckpt = torch.load(cli_run / "checkpoints" / "step_00000020.pt", weights_only=True, map_location="cpu")
    assert ckpt["step"] == 20
    cfg = json.loads((cli_run / "config.json").read_text())
    assert cfg["method"] == "volumegan" and cfg["preset"] == "tiny"
    assert cfg["gan"]["r1_weight"] == 5.0 and cfg["gan"]["r1_interval"] == 4
    assert any(not torch.equal(ckpt["G"][k], ckpt["G_ema"][k]) for k in ckpt["G"] if k.endswith("weight"))
    out = tmp_path / "yaw"
    assert main(["render", str(cli_run), "--program", "yaw-sweep", "--frames", "4", "--out", str(out)]) == 0
    assert {p.suffix for p in out.iterdir()} >= {".png", ".gif", ".mp4"}
    ply = tmp_path / "mesh.ply"
    assert main(["export", "mesh", str(cli_run), "--resolution", "32", "--out", str(ply)]) == 0
    assert ply.read_bytes().startswith(b"ply")


def test_resume_equals_uninterrupted(objects32, tmp_path):
    # 20 uninterrupted steps == 10 steps + resume for 10 (lazy R1 every 4 steps, style mixing and
    # noise draws included): every tensor of the two final checkpoints is identical
    from aware3d.train.io import load_checkpoint

    kw = dict(preset="tiny", sample_every=0, checkpoint_every=0, progress=False)
    a = vm.METHOD.train(objects32, tmp_path / "a", max_steps=20, **kw)
    vm.METHOD.train(objects32, tmp_path / "b", max_steps=10, **kw)
    b = vm.METHOD.train(objects32, tmp_path / "b", max_steps=20, resume=True, progress=False)
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == 20
    for key in ("G", "G_ema", "D"):
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), (key, k)
    assert torch.equal(sa["rng"], sb["rng"])


# --------------------------------------------------------------------------------------------------
# Lazy-regulariser correction of the optimisers (engine)


def test_lazy_correction_of_lr_and_betas():
    # official volumegan_ffhq_config: d_mb_ratio = r1_interval / (r1_interval + 1); d_lr x ratio,
    # d_beta_1 = 0.0 ** ratio, d_beta_2 = 0.99 ** ratio
    m = _tiny(lazy_correction=True, r1_interval=16, lr_d=0.002)
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    d = e.opt_d.param_groups[0]
    assert d["lr"] == pytest.approx(0.002 * 16 / 17, rel=1e-12)
    assert d["betas"] == (0.0, 0.99 ** (16 / 17)) and d["betas"][1] == pytest.approx(0.99058546, abs=1e-8)
    # saved configs without the key (and the CPU presets): no correction, the settings as given
    m = _tiny(r1_interval=16)
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    for opt, lr in ((e.opt_d, m.cfg.lr_d), (e.opt_g, m.cfg.lr_g)):
        assert opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["betas"] == (0.0, 0.99)
    assert not vm.config_from_dict({"preset": "ffhq256", "resolution": 256}).lazy_correction
    # inline R1 (interval 1) or no R1: nothing lazy on D, no correction
    for kw in ({"r1_interval": 1}, {"r1_weight": 0.0, "r1_interval": 16}):
        assert lazy_ratio(gan.GanConfig(lazy_correction=True, **kw), "D") == 1.0
    # the paper presets carry the correction (and the path-length penalty it corrects G for)
    for preset in ("ffhq256", "celeba128", "objects128"):
        cfg = vm.make_config(preset)
        assert cfg.lazy_correction and cfg.lr_d == cfg.lr_g == 0.002 and cfg.pl_weight == 2.0
        gcfg = vm.VolumeGANMethod.gan_config(type("M", (), {"cfg": cfg})())
        assert lazy_ratio(gcfg, "D") == 16 / 17 and lazy_ratio(gcfg, "G") == 4 / 5
    # saved configs without the keys: no path-length penalty
    assert vm.config_from_dict({"preset": "ffhq256"}).pl_weight == 0.0


# --------------------------------------------------------------------------------------------------
# Path-length penalty (engine PL phase)


def test_path_length_penalty_hand_values():
    from aware3d.nets.path_length import path_length_penalty, path_lengths

    # image (B, 1, 1, 2) = ws (B, 1, 2) @ A: J^T y = A y, y = noise / sqrt(H W) = noise / sqrt(2)
    A = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    ws = torch.randn(2, 1, 2, requires_grad=True)
    img = (ws @ A.T).reshape(2, 1, 1, 2)                       # img_j = sum_k A[j, k] ws_k
    noise = torch.tensor([[1.0, 1.0], [1.0, -1.0]]).reshape(2, 1, 1, 2)
    # sample 0: A^T y = (1 + 3, 2 + 4) / sqrt 2 -> |.|^2 = (16 + 36) / 2 = 26; sample 1: (-2, -2) / sqrt 2 -> 4
    lengths = path_lengths(img, ws, noise)
    assert torch.allclose(lengths, torch.tensor([26.0 ** 0.5, 2.0]), atol=1e-6)
    pen, lengths, mean = path_length_penalty(img, ws, torch.tensor(0.5), 0.1, noise)
    m = 0.5 + 0.1 * ((26 ** 0.5 + 2) / 2 - 0.5)               # running mean: lerp(mean, batch mean, decay)
    assert mean.item() == pytest.approx(m, rel=1e-6) and not mean.requires_grad
    assert torch.allclose(pen, (torch.tensor([26 ** 0.5, 2.0]) - m) ** 2, atol=1e-5)
    # style slots: the mean over slots of the squared norms (a slot the image ignores counts as 0)
    ws2 = torch.randn(2, 2, 2, requires_grad=True)
    img2 = (ws2[:, :1] @ A.T).reshape(2, 1, 1, 2)
    assert torch.allclose(path_lengths(img2, ws2, noise), torch.tensor([13.0 ** 0.5, 2.0 ** 0.5]), atol=1e-6)
    # the gradient w.r.t. the generator (double backward) with the official non-detached mean:
    # img = c ws, one slot of 4 = 2 x 2 pixels, noise 1: length = c |(1,1,1,1)| / 2 = c; mean' = d c
    # (from 0), penalty (c (1 - d))^2, d/dc = 2 c (1 - d)^2 (a detached mean would give 2 (c - d c))
    c = torch.tensor(3.0, requires_grad=True)
    w4 = torch.randn(3, 1, 4, requires_grad=True)
    pen, lengths, mean = path_length_penalty((c * w4).reshape(3, 1, 2, 2), w4, torch.tensor(0.0), 0.01,
                                             torch.ones(3, 1, 2, 2))
    assert torch.allclose(lengths, torch.full((3,), 3.0)) and mean.item() == pytest.approx(0.03)
    assert pen.mean().item() == pytest.approx(2.97 ** 2, rel=1e-6)
    (gc_,) = torch.autograd.grad(pen.mean(), c)
    assert gc_.item() == pytest.approx(2 * 3.0 * 0.99 ** 2, rel=1e-6)


class _LinearMethod:
    """A toy GAN for the engine: image (B, 3, 4, 4) = A ws (ws = z (B, 2, 3)), linear critic."""

    name = "linear"
    image_range = (-1.0, 1.0)

    def __init__(self):
        torch.manual_seed(0)
        self.generator = _LinearG()
        self.discriminator = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 1))

    def sample_inputs(self, n, generator=None, train=True):
        return {"z": torch.randn(n, 2, 3, generator=generator)}

    @staticmethod
    def path_length_forward(G, inputs):
        ws = inputs["z"].clone().requires_grad_(True)
        return G.image(ws), ws


class _LinearG(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(48, 6) * 0.3)

    def image(self, ws):
        return (ws.reshape(ws.shape[0], 6) @ self.A.T).reshape(-1, 3, 4, 4)

    def forward(self, inputs):
        return self.image(inputs["z"])


class _Images:
    def __init__(self, res, n=16):
        self.images = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def sample(self, n, generator=None):
        return self.images[torch.randint(0, len(self.images), (n,), generator=generator)]


def test_engine_path_length_phase_schedule_running_mean_ema_and_resume():
    import copy

    cfg = gan.GanConfig(batch_size=4, optimizer="adam", lr_g=0.01, lr_d=0.01, ema_beta=0.0, r1_weight=0.0,
                        pl_weight=2.0, pl_interval=2, pl_decay=0.1, pl_batch_shrink=2, lazy_correction=True,
                        device="cpu", progress=False)
    method = _LinearMethod()
    e = gan.GanEngine(method, cfg)
    rec = {}

    def recording(G, inputs):  # the G and generator state the PL phase sees
        rec["A"], rec["rng"], rec["n"] = G.A.detach().clone(), e.rng.get_state(), inputs["z"].shape[0]
        return _LinearMethod.path_length_forward(G, inputs)

    method.path_length_forward = recording
    assert [e.phases(s) for s in range(3)] == [["G", "PL", "D"], ["G", "D"], ["G", "PL", "D"]]
    g = e.opt_g.param_groups[0]  # lazy correction of G for PL every 2 steps: lr x 2/3, betas ** (2/3)
    assert g["lr"] == pytest.approx(0.01 * 2 / 3) and g["betas"] == (0.0, 0.99 ** (2 / 3))
    data = _Images(4)
    out0 = e.train_step(data)
    # the lengths of the linear G by hand: J^T y = A^T y per sample (6 = 2 slots x 3), y = noise / 4
    # (4 x 4 pixels), the noise replayed from the run's generator; half the batch (2 of 4)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().set_state(rec["rng"]))
    jty = (noise.reshape(2, 48) / 4.0) @ rec["A"]
    lengths = jty.reshape(2, 2, 3).square().sum(2).mean(1).sqrt()
    assert rec["n"] == 2 and out0["pl_length"] == pytest.approx(lengths.mean().item(), rel=1e-5)
    m0 = 0.1 * lengths.mean().item()                                   # the running mean from 0
    assert e.pl_mean.item() == pytest.approx(m0, rel=1e-5)
    assert out0["PL"] == pytest.approx(((lengths - m0) ** 2).mean().item(), rel=1e-4)
    # the EMA (beta 0: a copy) follows the PL step, as the official runner's order G, PL, D, R1, EMA
    assert torch.equal(e.G_ema.A, e.G.A)
    out1 = e.train_step(data)
    assert "PL" not in out1 and e.pl_mean.item() == pytest.approx(m0, rel=1e-5)
    out2 = e.train_step(data)
    assert e.pl_mean.item() == pytest.approx(m0 + 0.1 * (out2["pl_length"] - m0), rel=1e-5)
    # resume: the running mean travels in the checkpoint; the continued runs agree
    sd = copy.deepcopy(e.state_dict())
    e2 = gan.GanEngine(_LinearMethod(), cfg)
    e2.load_state_dict(sd)
    assert e2.pl_mean.item() == e.pl_mean.item()
    for _ in range(2):
        assert e.train_step(data) == e2.train_step(data)
    assert torch.equal(e.G.A, e2.G.A) and e.pl_mean.item() == e2.pl_mean.item()
    # a method without path_length_forward cannot turn it on
    m = _LinearMethod()
    m.path_length_forward = None
    with pytest.raises(ValueError, match="path_length_forward"):
        gan.GanEngine(m, cfg)


def test_engine_defaults_train_another_method_as_before():
    # GIRAFFE tiny, 3 engine steps with the engine defaults (no lazy correction, no PL): the losses and
    # how far the weights moved equal those recorded with the engine before these settings existed
    # (commit 5faeda8, the same numbers to the last digit there)
    from aware3d.methods import giraffe as gm

    m = gm.build(gm.make_config("tiny", seed=1))
    init = {k: {n: p.detach().clone() for n, p in getattr(m, k).named_parameters()} for k in ("generator", "discriminator")}
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    real = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1

    class Data:
        def sample(self, n, generator=None):
            return real[torch.randint(0, 32, (n,), generator=generator)]

    sc = [e.train_step(Data()) for _ in range(3)]
    assert [s["loss_G"] for s in sc] == pytest.approx([0.6917588114738464, 0.6908755302429199, 0.6897093057632446], rel=1e-6)
    assert [s["loss_D"] for s in sc] == pytest.approx([1.3772449493408203, 1.382575511932373, 1.3801796436309814], rel=1e-6)
    assert [s["R1"] for s in sc] == pytest.approx([0.004055608529597521, 0.004267616663128138, 0.004109760746359825], rel=1e-5)
    moved = {k: sum(float((p.detach().double() - init[k][n].double()).abs().sum()) for n, p in getattr(m, k).named_parameters())
             for k in init}
    assert moved["generator"] == pytest.approx(19.271494771099242, rel=1e-5)
    assert moved["discriminator"] == pytest.approx(3.948444745174129, rel=1e-5)


def test_volumegan_path_length_reaches_every_used_style_and_trains():
    m = _tiny(n_importance=2)
    G = m.generator.train()
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    img, ws = m.path_length_forward(G, x)
    (g,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), ws)
    per_slot = g.abs().sum((0, 2))
    # every slot but the 2D renderer's first (the feature image needs no style: official layer 0)
    unused = m.cfg.mlp_layers
    assert per_slot[unused] == 0 and bool((torch.cat([per_slot[:unused], per_slot[unused + 1:]]) > 0).all())
    # two engine steps with the penalty every step: PL phase, finite, the running mean moves
    m = _tiny(pl_weight=2.0, pl_interval=1, lazy_correction=True, r1_interval=16)
    e = gan.GanEngine(m, m.gan_config(device="cpu", progress=False))
    data = _Images(32, n=8)
    outs = [e.train_step(data) for _ in range(2)]
    assert all(math.isfinite(o["PL"]) and o["pl_length"] > 0 for o in outs) and e.pl_mean.item() > 0


# --------------------------------------------------------------------------------------------------
# Progressive growing (official use_pg)


def test_progressive_schedule_at_image_counts():
    cfg = vm.make_config("ffhq256", batch_size=64)
    assert cfg.use_pg and (cfg.pg_training_img, cfg.pg_transition_img, cfg.pg_repeats) == (750_000, 750_000, 4)
    # log2(256 / 32) = 3 levels: 750k images at each, then 750k of fade-in to the next
    for seen, lod in ((0, 3.0), (749_999, 3.0), (750_000, 3.0), (1_125_000, 2.5), (1_500_000, 2.0),
                      (2_250_000, 2.0), (2_437_500, 1.75), (3_000_000, 1.0), (4_125_000, 0.5),
                      (4_500_000, 0.0), (25_000_000, 0.0)):
        assert vm.pg_lod(cfg, seen) == pytest.approx(lod), seen
    # updated every 4 steps from the images seen before the updating step (official minibatch_repeats)
    s = 1_125_000 // 64 // 4 * 4                                   # 17576: the last update at or before 1.125M
    assert vm.pg_lod_at_step(cfg, s) == vm.pg_lod_at_step(cfg, s + 3) == pytest.approx(3 - (s * 64 - 750_000) / 750_000)
    assert vm.pg_lod_at_step(cfg, s + 4) < vm.pg_lod_at_step(cfg, s + 3)
    assert vm.pg_lod(vm.make_config("celeba128"), 0) == 2.0      # 128 / 32
    # without use_pg (CPU presets, saved configs without the key): full resolution
    assert vm.pg_lod(vm.make_config("cpu"), 0) == 0.0 and not vm.config_from_dict({"preset": "ffhq256"}).use_pg


def test_progressive_renderer_fade_by_hand():
    torch.manual_seed(0)
    R = vm.VolumeGANRenderer(8, nerf_res=8, resolution=32, w_dim=6, fmaps_base=128, fmaps_max=16,
                             progressive=True).eval()
    x, ws = torch.randn(2, 8, 8, 8), torch.randn(2, 6, 6)
    up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")
    with torch.no_grad():
        full = R(x, ws)                                            # lod 0: the whole renderer
        plain = vm.VolumeGANRenderer(8, nerf_res=8, resolution=32, w_dim=6, fmaps_base=128, fmaps_max=16).eval()
        plain.load_state_dict({k: v for k, v in R.state_dict().items() if k != "lod"})
        assert torch.equal(full, plain(x, ws))
        # the 16^2 image by hand: the feature image's RGB upsampled (FIR) + the first octave's ToRGB
        h = R.up[0](x, ws[:, 1], noise=R.noise_const1)
        h = R.conv[0](h, ws[:, 2], noise=R.noise_const2)
        img16 = upsample2d_fir(x[:, :3], R) + R.to_rgb[0](h, ws[:, 3])
        expect = {2.0: up(up(x[:, :3])), 1.5: up(0.5 * img16 + 0.5 * up(x[:, :3])), 1.0: up(img16),
                  0.5: 0.5 * full + 0.5 * up(img16), 0.25: 0.75 * full + 0.25 * up(img16)}
        for lod, want in expect.items():                          # fade-in alpha = ceil(lod) - lod
            R.lod.fill_(lod)
            assert torch.allclose(R(x, ws), want, atol=1e-6), lod


def upsample2d_fir(img, R):
    from aware3d.nets.stylegan2 import upsample2d

    return upsample2d(img, R.resample_filter, 2)


def test_progressive_critic_fade_by_hand():
    torch.manual_seed(0)
    D = vm.ProgressiveDiscriminator(16, channel_base=64, channel_max=8, architecture="resnet",
                                    mbstd_group_size=2).eval()
    plain = vm.StyleGAN2Discriminator(16, channel_base=64, channel_max=8, architecture="resnet", mbstd_group_size=2)
    # the fromRGB of every resolution: 16 (as the plain critic), 8 and the unused 4 (3 x 8 + 8 each)
    assert _nparams(D) - _nparams(plain) == 2 * (3 * 8 + 8)
    img = torch.randn(4, 3, 16, 16)
    pool = F.avg_pool2d(img, 2)
    body = vm.ProgressiveDiscriminator._body
    with torch.no_grad():
        plain.load_state_dict({k: v for k, v in D.state_dict().items() if k in plain.state_dict()})
        assert torch.equal(D(img), plain(img))                     # lod 0
        hi = body(D.b16, D.b16.fromrgb(img))                      # the 16^2 block's output (8^2)
        lo = D.b8.fromrgb(pool)                                   # the 8^2 block entered directly
        for lod, a in ((1.0, 1.0), (0.5, 0.5), (0.25, 0.25)):     # alpha = lod - floor(lod); 1 at lod 1
            D.lod.fill_(lod)
            want = D.b4(body(D.b8, a * lo + (1 - a) * hi), None)
            assert torch.allclose(D(img), want, atol=1e-6), lod
        D.lod.fill_(1.0)                                          # level 1 sees only the 2x pooled image
        assert torch.allclose(D(img), D(F.interpolate(pool, scale_factor=2, mode="nearest")), atol=1e-6)


def test_progressive_optimiser_reset_where_a_fade_starts_or_ends():
    from types import SimpleNamespace

    m = _tiny(use_pg=True, pg_training_img=16, pg_transition_img=32, batch_size=4)
    # tiny: 32 / 8 -> 2 levels; every 4 steps: seen 0, 16 -> 2; 32 -> 1.5; 48, 64 -> 1; 80 -> 0.5
    assert [vm.pg_lod_at_step(m.cfg, s) for s in range(0, 28, 4)] == [2.0, 2.0, 1.5, 1.0, 1.0, 0.5, 0.0]
    p = torch.nn.Parameter(torch.ones(1))
    eng = SimpleNamespace(opt_g=torch.optim.Adam([p]), opt_d=torch.optim.Adam([p]), G_ema=None)
    cleared = []
    for step in range(1, 28):
        for opt in (eng.opt_g, eng.opt_d):
            opt.state[p] = {"step": torch.tensor(1.0)}
        m.set_step(step, eng)
        if not eng.opt_g.state and not eng.opt_d.state:
            cleared.append(step)
        assert float(m.generator.renderer.lod) == float(m.discriminator.lod) == vm.pg_lod_at_step(m.cfg, step)
    assert cleared == [8, 12, 20, 24]  # 2 -> 1.5 (int), 1.5 -> 1 (ceil), 1 -> 0.5 (int), 0.5 -> 0 (int, ceil)


def test_progressive_resume_mid_transition_equals_uninterrupted(objects32, tmp_path):
    # 14 steps straight == 10 steps (in the fade 2 -> 1, lod 1.5) + resume for 4 (over the level change
    # at step 12 and its optimiser reset): every tensor of the final checkpoints is identical
    from aware3d.train.io import load_checkpoint

    kw = {"preset": "tiny", "sample_every": 0, "checkpoint_every": 0, "progress": False, "use_pg": True,
          "pg_training_img": 16, "pg_transition_img": 32}
    a = vm.METHOD.train(objects32, tmp_path / "a", max_steps=14, **kw)
    vm.METHOD.train(objects32, tmp_path / "b", max_steps=10, **kw)
    sb10 = load_checkpoint(tmp_path / "b")
    assert float(sb10["D"]["lod"]) == float(sb10["G"]["renderer.lod"]) == 1.5
    b = vm.METHOD.train(objects32, tmp_path / "b", max_steps=14, resume=True, progress=False)
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"] == 14 and float(sa["G_ema"]["renderer.lod"]) == 1.0
    for key in ("G", "G_ema", "D"):
        for k in sa[key]:
            assert torch.equal(sa[key][k], sb[key][k]), (key, k)
    for key in ("opt_g", "opt_d"):
        for i, st in sa[key]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, sb[key]["state"][i][k]), (key, i, k)
    assert torch.equal(sa["rng"], sb["rng"])


def _pl_engine():
    cfg = gan.GanConfig(batch_size=8, optimizer="adam", lr_g=0.01, lr_d=0.01, r1_weight=0.0, pl_weight=2.0,
                        pl_interval=1, pl_decay=1.0, pl_batch_shrink=1, device="cpu", progress=False)
    return gan.GanEngine(_LinearMethod(), cfg)


def _pl_worker(rank, world, port, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        e = _pl_engine()
        grads = []
        for _ in range(2):
            e.phase_path_length()
            grads.append(e.G.A.grad.clone())  # the all-reduced (averaged) gradient the step used
        if rank == 0:
            torch.save({"grads": grads, "pl_mean": e.pl_mean.clone(), "A": e.G.A.detach().clone()}, out)
    finally:
        dist.destroy_process_group()


def test_path_length_two_processes_equal_one_process(tmp_path):
    # 2 gloo processes with 4 of the 8 samples each vs one process with 8: the same gradient of the
    # penalty (decay 1: the running mean is the batch mean, whose gradient couples all samples; a
    # per-process mean would give another gradient), running mean and weights
    import socket

    import torch.multiprocessing as mp

    e = _pl_engine()  # first (its imports are then inherited by the forked workers)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_pl_worker, args=(2, port, str(tmp_path / "two.pt")), nprocs=2, join=True, start_method="fork")
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for g2 in two["grads"]:
        e.phase_path_length()
        assert torch.allclose(e.G.A.grad, g2, atol=1e-6, rtol=1e-5)
    assert e.pl_mean.item() == pytest.approx(two["pl_mean"].item(), rel=1e-6)
    assert torch.allclose(e.G.A, two["A"], atol=1e-6)
