"""Pins of aware3d's paper presets against the official code of GIRAFFE (autonomousvision/giraffe,
commit fc8d450), CIPS-3D (PeterouZh/CIPS-3D) and HoloGAN (thunguyenphuoc/HoloGAN), without their
code: the numbers below were measured by building the official modules or read off their code
(BENCHMARKS.md, "Fidelity to the official code: GIRAFFE, CIPS-3D, HoloGAN"). Runs saved before
these fixes lack the new config keys and keep their old behaviour; that is pinned here too."""
import math

import pytest
import torch

from aware3d.methods import gan_common as gc
from aware3d.methods import giraffe as gm
from aware3d.nets.discriminators import DCDiscriminator
from aware3d.render.cameras import look_at, rotation_z


def _n(module):
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# GIRAFFE

# official Decoder(z_dim=256, rgb_out_dim=128) (8 x 128, skip at 4), the background
# Decoder(hidden_size=64, n_blocks=4, skips=[], z_dim=128, downscale_p_by=12), NeuralRenderer(64^2)
# and DCDiscriminator(n_feat=512, img_size=64)
GIRAFFE_OBJECT_PARAMS = 266241
GIRAFFE_BG_PARAMS = 47041
GIRAFFE_NR_PARAMS = 98313
GIRAFFE_D_PARAMS = 2763776


def test_giraffe_paper_networks_have_the_official_sizes():
    for preset in ("celeba64", "cats", "clevr2"):
        m = gm.build(gm.make_config(preset))
        G = m.generator
        assert _n(G.object_field) == GIRAFFE_OBJECT_PARAMS
        assert _n(G.background_field) == GIRAFFE_BG_PARAMS
        assert _n(G.neural_renderer) == GIRAFFE_NR_PARAMS
        assert _n(m.discriminator) == GIRAFFE_D_PARAMS
        # object trunk: gamma(x) (60) in, 7 hidden 128 -> 128 layers, gamma(x) and z_s again after layer 4
        assert G.object_field.fc_in.in_features == 60 and G.object_field.skips == (4,)
        assert [b.in_features for b in G.object_field.blocks] == [128] * 7
    assert _n(DCDiscriminator(n_feat=512, img_size=64)) == GIRAFFE_D_PARAMS


def test_giraffe_presets_follow_the_official_code_and_saved_configs_keep_the_old_way():
    for name in gm.PRESETS:
        cfg = gm.make_config(name)
        assert (cfg.rotation_convention, cfg.ray_sampling, cfg.compose_guard) == ("official",) * 3, name
    old = gc.config_from_dict(gm.GiraffeConfig, {"preset": "clevr2"})
    assert (old.rotation_convention, old.ray_sampling, old.compose_guard) == ("transpose", "unit", "eps")
    with pytest.raises(ValueError, match="ray_sampling"):
        gm.GiraffeGenerator(gm.make_config("tiny16", ray_sampling="planar"))


def test_giraffe_rotation_direction_is_the_official_one():
    # The official code maps world to object by p_box = R (p - t) / s with R = Rot.from_euler('z', a)
    # (counter-clockwise by a seen from +z). An object at t = (+1, 0, 0) rotated by +90 degrees: the
    # world point t + s (0, -1, 0) is its canonical +x point, so the object's +x side (pointing to
    # +x before the rotation) ends at -y, i.e. the object turns by -90 degrees about z.
    s = torch.full((1, 3), 0.5)
    t = torch.tensor([[1.0, 0.0, 0.0]])
    R = rotation_z(torch.tensor([90.0]))
    official = gm.make_config("clevr2")
    Rp = gm.frame_rotation(official, R)
    canon = torch.tensor([[[1.0, 0.0, 0.0]]])
    world = gm.object_to_world(canon, s, t, Rp)
    assert torch.allclose(world, torch.tensor([[[1.0, -0.5, 0.0]]]), atol=1e-6)
    # by hand: R (p - t) / s
    p = torch.tensor([[[1.0, -0.5, 0.0]]])
    by_hand = (R[0] @ (p[0, 0] - t[0])) / s[0]
    assert torch.allclose(gm.world_to_object(p, s, t, Rp)[0, 0], by_hand, atol=1e-6)
    assert torch.allclose(by_hand, canon[0, 0], atol=1e-6)
    # runs saved before (rotation_convention "transpose") turn the other way: +x ends at +y
    old = gm.config_from_dict({"preset": "clevr2"})
    assert torch.allclose(gm.object_to_world(canon, s, t, gm.frame_rotation(old, R)),
                          torch.tensor([[[1.0, 0.5, 0.0]]]), atol=1e-6)
    # the background frame follows the same convention (official: p_bg = R_bg p)
    assert torch.equal(gm.frame_rotation(official, R), R.transpose(-1, -2))


def test_giraffe_generator_passes_the_convention_to_every_entity(monkeypatch):
    seen = {}
    real_obj, real_bg = gm.evaluate_object_packed, gm.evaluate_background

    def obj(field, o, d, t, zs, za, s, tr, rot, **kw):
        seen["obj"] = rot.clone()
        return real_obj(field, o, d, t, zs, za, s, tr, rot, **kw)

    def bg(field, o, d, t, zs, za, rot, **kw):
        seen["bg"] = rot.clone()
        return real_bg(field, o, d, t, zs, za, rot, **kw)
    monkeypatch.setattr(gm, "evaluate_object_packed", obj)
    monkeypatch.setattr(gm, "evaluate_background", bg)
    cfg = gm.make_config("tiny16", n_objects=1, bf16=False)
    x = gm.sample_inputs(cfg, 1, torch.Generator().manual_seed(0), train=False)
    x["obj_rotation"] = rotation_z(torch.tensor([[30.0]]))
    x["bg_rotation"] = rotation_z(torch.tensor([20.0]))
    with torch.no_grad():
        gm.GiraffeGenerator(cfg)(x)
    assert torch.allclose(seen["obj"], x["obj_rotation"][:, 0].transpose(-1, -2))
    assert torch.allclose(seen["bg"], x["bg_rotation"].transpose(-1, -2))


def test_giraffe_official_rays_are_unnormalised_with_planar_depth():
    cfg = gm.make_config("clevr2", feature_res=4)
    c2w = look_at(torch.tensor([[2.0, 1.0, 1.5]]))
    o, d = gm.camera_rays(cfg, c2w)
    # camera-space directions (x, y, -1) with x, y on tan(fov / 2) * linspace(-1, 1, 4), top row first
    d_cam = torch.einsum("bji,brj->bri", c2w[:, :3, :3], d)
    h = math.tan(math.radians(cfg.fov) / 2)
    lin = torch.linspace(-1, 1, 4) * h
    assert torch.allclose(d_cam[0, :, 2], torch.full((16,), -1.0), atol=1e-6)
    assert torch.allclose(d_cam[0, :4, 0], lin, atol=1e-6)           # first row: x left to right
    assert torch.allclose(d_cam[0, ::4, 1], -lin, atol=1e-6)          # first column: y top to bottom
    # the corner ray is 1 / cos longer: at fov 49.13 |d| = sqrt(1 + 2 tan^2(fov / 2)) = 1.19
    assert abs(float(d[0, 0].norm()) - math.sqrt(1 + 2 * h * h)) < 1e-6
    assert abs(math.sqrt(1 + 2 * h * h) - 1.1908) < 1e-3
    # depths: linspace(near, far, N) at eval; points o + t d lie on the planes z_cam = -t
    t = gm.sample_depths(cfg, 1, train=False)
    assert torch.allclose(t[0, 0], torch.linspace(0.5, 6.0, cfg.n_samples))
    o2, du, dist = gm.rays_and_depths(cfg, c2w, t)
    pts = o2[..., None, :] + dist[..., None] * du[..., None, :]
    cam = torch.einsum("ji,brnj->brni", c2w[0, :3, :3], pts - c2w[0, :3, 3])
    assert torch.allclose(cam[..., 2], -t, atol=1e-5)
    assert torch.allclose(du.norm(dim=-1), torch.ones(1, 16))
    # training: each depth drawn between the midpoints to its neighbours (first from near, last to far)
    tt = gm.sample_depths(cfg, 64, torch.Generator().manual_seed(0), train=True)
    step = 5.5 / (cfg.n_samples - 1)
    lin = torch.linspace(0.5, 6.0, cfg.n_samples)
    lo = torch.cat([lin[:1], lin[1:] - step / 2])
    hi = torch.cat([lin[:-1] + step / 2, lin[-1:]])
    assert bool(((tt >= lo - 1e-6) & (tt <= hi + 1e-6)).all())
    # the old way: unit rays, stratified bins (midpoints at eval)
    old = gm.config_from_dict({"preset": "clevr2", "feature_res": 4})
    _, d_old = gm.camera_rays(old, c2w)
    assert torch.allclose(d_old.norm(dim=-1), torch.ones(1, 16))
    assert abs(float(gm.sample_depths(old, 1, train=False)[0, 0, 0]) - (0.5 + 5.5 / 128)) < 1e-6


def test_giraffe_composition_guard_by_hand():
    # one sample of one ray, two entities; the far sample has no density anywhere
    res, C = 1, 2
    t = torch.tensor([[[1.0, 2.0]]])
    f = torch.tensor([[1.0, 0.0], [0.0, 5.0]]).reshape(2, 1, 1, 1, C).expand(2, 1, 1, 2, C).clone()
    sig = torch.tensor([[1e-6, 0.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    # official: feature = sum s_i f_i / sum s_i = (1, 0) exactly where the sum is 1e-6
    fo, _ = gm.render_feature_map(sig, f, t, res, guard="official")
    w = 1 - math.exp(-1e-6 * 1.0)
    assert torch.allclose(fo.reshape(C), torch.tensor([w, 0.0]), rtol=1e-5, atol=0)
    # the old + 1e-8 everywhere: 1e-6 / (1e-6 + 1e-8) of it
    fe, _ = gm.render_feature_map(sig, f, t, res, guard="eps")
    assert torch.allclose(fe.reshape(C), torch.tensor([w / 1.01, 0.0]), rtol=1e-4, atol=0)
    # a zero density sum gives 0 / 1e-4 = 0, no NaN
    assert torch.equal(gm.compose_density_sum(torch.tensor([0.0, 2.0]), "official"), torch.tensor([1e-4, 2.0]))


@pytest.mark.parametrize("preset", ["tiny16"])
def test_giraffe_packed_path_equals_the_reference_under_the_official_conventions(preset):
    cfg = gm.make_config(preset, bf16=False)
    torch.manual_seed(0)
    G = gm.GiraffeGenerator(cfg)
    with torch.no_grad():
        G.object_field.sigma_out.bias.fill_(5.0)
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(1), train=True)
    with torch.no_grad():
        a, _ = G.feature_map(x)
        b, _ = G.feature_map(x, packed=False)
    assert torch.allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# CIPS-3D (PeterouZh/CIPS-3D, commit 5956813, exp/cips3d/configs/ffhq_exp.yaml train_ffhq)

from aware3d.methods import cips3d as cm  # noqa: E402


def test_cips3d_presets_follow_the_official_training_and_saved_configs_keep_the_old_way():
    for name in cm.PRESETS:
        c = cm.make_config(name)
        assert c.aux_average and c.d_first and c.grad_clip == 10.0, name
        assert c.density_noise == 1.0 and c.noise_anneal_steps == 5000 and c.r1_weight == 5.0, name
        g = cm.build(c).gan_config()
        assert g.d_first and g.grad_clip == 10.0 and g.r1_weight == 5.0
    p = cm.make_config("ffhq64")
    # official widths (G_cfg_3D2D): NeRF 2 x 128 FiLM-SIREN, 32 features, mapping 256 -> 4 x 128;
    # INR 512 wide, style 512 from an 8-layer mapping of z 512; Adam (0, 0.999), lr 2e-4 / 2e-3;
    # fov 12, rays [0.88, 1.12], 12 + 12 samples, h / v stddev 0.3 / 0.155 rad
    assert (p.nerf_hidden, p.nerf_layers, p.feat_dim, p.z_shape_dim, p.nerf_map_hidden, p.nerf_map_layers) == \
        (128, 2, 32, 256, 128, 4)
    assert (p.inr_hidden, p.w_dim, p.z_app_dim, p.inr_map_layers) == (512, 512, 512, 8)
    assert (p.lr_g, p.lr_d, tuple(p.betas)) == (2e-4, 2e-3, (0.0, 0.999))
    assert (p.fov, tuple(p.depth_range), p.n_samples, p.n_importance) == (12.0, (0.88, 1.12), 12, 12)
    assert abs(math.radians(p.yaw_std) - 0.3) < 1e-9 and abs(math.radians(p.pitch_std) - 0.155) < 1e-9
    # official grad_points 256 is squared: every ray of a 64^2 / 128^2 NeRF image backprops
    assert p.grad_rays >= 128 * 128 and "ray_perm" not in cm.sample_inputs(p, 1)
    old = gc.config_from_dict(cm.Cips3DConfig, {"preset": "ffhq64"})
    assert not old.aux_average and not old.d_first and old.grad_clip == 0 and old.density_noise == 0


def test_cips3d_density_noise_anneals_as_the_official_nerf_noise():
    m = cm.build(cm.make_config("tiny"))
    for step, want in ((0, 1.0), (2500, 0.5), (5000, 0.0), (9000, 0.0)):
        m.set_step(step)
        assert abs(m.generator.density_noise - want) < 1e-9


class _LinearCritic(torch.nn.Module):
    """D(x) = <a, x> per image: grad_x D = a, ||grad||^2 = ||a||^2."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        return (x * self.a).flatten(1).sum(1, keepdim=True)


def test_cips3d_losses_and_r1_by_hand_against_the_official_formula():
    torch.manual_seed(0)
    cfg = cm.make_config("tiny")
    m = cm.build(cfg)
    S, r = cfg.resolution, cfg.nerf_res
    a, b = torch.randn(1, 3, S, S) * 0.01, torch.randn(1, 3, r, r) * 0.01
    D = torch.nn.Module()
    D.main, D.aux = _LinearCritic(a), _LinearCritic(b)
    fake, aux = torch.randn(2, 3, S, S), torch.randn(2, 3, r, r)

    class G:
        def __call__(self, inputs, return_aux=False):
            return {"image": fake, "aux": aux}
    real = torch.randn(2, 3, S, S)
    small = torch.nn.functional.interpolate(real, size=(r, r), mode="area")
    loss, _ = m.discriminator_objective(G(), D, real, {}, cfg.r1_weight)
    sp = torch.nn.functional.softplus
    # official: (softplus(D(fake)) + softplus(-D(real)) + 0.5 r1_lambda ||grad||^2).mean() over the
    # 2B images [main; aux], r1_lambda 10
    r_preds = torch.cat([D.main(real), D.aux(small)])
    g_preds = torch.cat([D.main(fake), D.aux(aux)])
    pen = torch.cat([a.square().sum().expand(2), b.square().sum().expand(2)])[:, None]
    official = (sp(g_preds) + sp(-r_preds) + 0.5 * 10.0 * pen).mean()
    assert torch.allclose(loss, official, rtol=1e-5)
    # G: softplus(-D(.)) averaged over the 2B images
    m2 = cm.build(cfg)
    m2.generator.forward = lambda inputs, return_aux=False: {"image": fake, "aux": aux}
    lg, _ = m2.generator_objective(m2.generator, D, {})
    assert torch.allclose(lg, sp(-g_preds).mean(), rtol=1e-5)
    # runs saved before: main + aux, R1 with r1_weight (10 by default) each
    import dataclasses
    new_keys = {"aux_average", "d_first", "grad_clip", "density_noise", "noise_anneal_steps", "r1_weight"}
    saved = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in new_keys}
    old = cm.build(gc.config_from_dict(cm.Cips3DConfig, saved))
    lo, _ = old.discriminator_objective(G(), D, real, {}, old.cfg.r1_weight)
    want = (sp(g_preds) + sp(-r_preds)).reshape(2, 2).mean(1).sum() + 10.0 * (a.square().sum() + b.square().sum())
    assert torch.allclose(lo, want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# HoloGAN (thunguyenphuoc/HoloGAN, commit 76c35a8, config_HoloGAN.json; TensorFlow, read by hand)

from aware3d.methods import hologan as hm  # noqa: E402


def test_hologan_paper_presets_follow_the_official_config():
    for name in ("celeba64", "celeba128", "objects64"):
        c = hm.make_config(name)
        # style_disc "false", lambda_latent 0.0; Adam 1e-4 / 1e-4, beta1 0.5, beta2 0.999; batch 32; z 128
        # (celeba128's discriminator_IN_style_res128 runs only with style_disc true: DStyle_lambda 1)
        assert c.style_weight == (1.0 if name == "celeba128" else 0.0) and c.identity_weight == 0.0, name
        assert (c.lr_g, c.lr_d, tuple(c.betas), c.batch_size, c.z_dim, c.r1_weight) == \
            (1e-4, 1e-4, (0.5, 0.999), 32, 128, 0.0), name
        assert hm.build(c).gan_config().d_first, name  # D optimiser step, then G
    c = hm.make_config("celeba64")
    # azimuth 220..320 and elevation 70..110 degrees = 270 +- 50, 90 +- 20
    assert tuple(c.yaw_range) == (-50.0, 50.0) and tuple(c.pitch_range) == (-20.0, 20.0)
    # generator_AdaIN: 4^3 x 512 constant -> 8^3 x 128 -> 16^3 x 64, projection gf_dim * 16 = 1024
    # (per-layer counts against the official graph: tests/test_fidelity_hologan.py)
    assert tuple(c.ch3d) == (512, 128, 64) and c.proj_ch == 1024
    for name in hm.PRESETS:
        assert hm.make_config(name).d_first, name
    old = gc.config_from_dict(hm.HoloGANConfig, {"preset": "celeba64"})
    assert not old.d_first and old.style_weight == 1.0 and old.identity_weight == 1.0


def test_hologan_takes_two_generator_steps_per_discriminator_step():
    # official HoloGAN runs its G optimiser twice per D step; saved configs without the key keep one
    for name in hm.PRESETS:
        assert hm.make_config(name).g_steps == 2, name
    assert gc.config_from_dict(hm.HoloGANConfig, {"preset": "celeba64"}).g_steps == 1
    from aware3d.train.gan import GanEngine

    cfg = hm.make_config("tiny", batch_size=2)
    method = hm.build(cfg)
    gcfg = method.gan_config(max_steps=1, progress=False, sample_every=0, checkpoint_every=0, device="cpu")
    engine = GanEngine(method, gcfg)
    assert engine.phases(0) == ["D", "G", "G"]
    calls = []
    g0, d0 = engine.phase_generator, engine.phase_discriminator
    engine.phase_generator = lambda **kw: (calls.append("G"), g0(**kw))[1]
    engine.phase_discriminator = lambda real, with_r1: (calls.append("D"), d0(real, with_r1))[1]
    class Reals:
        def sample(self, n, generator):
            return torch.rand(n, 3, cfg.resolution, cfg.resolution, generator=generator) * 2 - 1

    engine.train_step(Reals())
    assert calls == ["D", "G", "G"]
