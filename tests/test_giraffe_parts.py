"""GIRAFFE generator pieces: shapes, gradients, pose transforms, composition, box masking."""

import pytest
import torch

from aware3d.fields.giraffe import FeatureField
from aware3d.methods import giraffe as gm


def tiny(preset="tiny16", **kw):
    return gm.make_config(preset, **kw)


def test_rotation_z_hand_values():
    # 90 degrees about z maps x -> y and y -> -x: [[0,-1,0],[1,0,0],[0,0,1]].
    R = gm.rotation_z(torch.tensor(90.0))
    assert torch.allclose(R, torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)


def test_object_pose_transform_hand_values():
    # k(x) = R diag(s) x + t with s = 2, t = (1, 0, 0), R = 90 deg about z:
    # x = (1, 0, 0) -> diag(s) x = (2, 0, 0) -> R (.) = (0, 2, 0) -> + t = (1, 2, 0).
    s = torch.tensor([[2.0, 2.0, 2.0]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    R = gm.rotation_z(torch.tensor([90.0]))
    x = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.5]]])
    w = gm.object_to_world(x, s, t, R)
    assert torch.allclose(w, torch.tensor([[[1.0, 2.0, 0.0], [1.0, 0.0, 1.0]]]), atol=1e-6)
    # k^-1 undoes it; a direction ignores t: d = (0, 2, 0) -> R^T d / s = (1, 0, 0)
    assert torch.allclose(gm.world_to_object(w, s, t, R), x, atol=1e-6)
    d = gm.world_to_object(torch.tensor([[[0.0, 2.0, 0.0]]]), s, t, R, direction=True)
    assert torch.allclose(d, torch.tensor([[[1.0, 0.0, 0.0]]]), atol=1e-6)


def test_object_pose_ranges_hand_values():
    # middle of the ranges: s = (0.45 + 0.75) / 2 = 0.6; t_xy = 0; resting on the floor t_z = s = 0.6;
    # rotation 180 degrees (middle of [0, 360]).
    cfg = gm.make_config("objects64")
    s, t, R = gm.object_pose(cfg, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5], 0.5)
    assert torch.allclose(s, torch.tensor([0.6, 0.6, 0.6]))
    assert torch.allclose(t, torch.tensor([0.0, 0.0, 0.6]), atol=1e-6)
    assert torch.allclose(R, torch.diag(torch.tensor([-1.0, -1.0, 1.0])), atol=1e-6)


def test_sampled_poses_respect_ranges_and_collisions():
    cfg = gm.make_config("clevr2")
    g = torch.Generator().manual_seed(0)
    s, t, R = gm.sample_object_poses(cfg, 256, g)
    assert s.shape == (256, 2, 3) and t.shape == (256, 2, 3) and R.shape == (256, 2, 3, 3)
    assert torch.allclose(s, torch.full_like(s, 0.17))                      # fixed scale 0.17
    assert t[..., :2].abs().max() <= 0.713 + 1e-6                            # [-0.713, 0.713]^2
    assert torch.allclose(t[..., 2], torch.full_like(t[..., 2], 0.1665))    # on the plane
    # no two boxes overlap on all axes: separation >= s_i + s_j + 0.1 = 0.44 along some axis
    sep = ((t[:, 0] - t[:, 1]).abs() >= 0.44 - 1e-6).any(-1)
    assert sep.all()


def test_face_camera_prior():
    # faces: elevation in [0, asin(1 - 2 * 0.4167)] = [0, 9.59] degrees, azimuth 0, radius 2.732
    cfg = gm.make_config("celeba64")
    assert cfg.elevation_range[1] == pytest.approx(9.59, abs=0.01)
    c2w = gm.sample_camera(cfg, 64, torch.Generator().manual_seed(0))
    eye = c2w[:, :3, 3]
    assert torch.allclose(eye.norm(dim=-1), torch.full((64,), 2.732), atol=1e-5)
    el = torch.rad2deg(torch.asin(eye[:, 2] / 2.732))
    assert el.min() >= -1e-4 and el.max() <= 9.59 + 1e-3
    assert eye[:, 1].abs().max() < 1e-5                                     # azimuth 0: on the xz-plane


def test_feature_field_shapes_packed_equals_padded_and_encoding():
    torch.manual_seed(0)
    f = FeatureField(hidden=32, n_blocks=8, skips=(4,), z_shape_dim=16, feature_dim=12)
    B, P = 3, 10
    x, d = torch.rand(B, P, 3) * 2 - 1, torch.randn(B, P, 3)
    zs, za = torch.randn(B, 16), torch.randn(B, 16)
    sigma, feat = f(x, d, zs, za)
    assert sigma.shape == (B, P) and feat.shape == (B, P, 12)
    idx = torch.arange(B).repeat_interleave(P)
    s2, f2 = f(x.reshape(-1, 3), d.reshape(-1, 3), zs, za, index=idx)
    assert torch.allclose(s2, sigma.reshape(-1), atol=1e-5)
    assert torch.allclose(f2, feat.reshape(-1, 12), atol=1e-5)
    # GIRAFFE encoding of x / 2: first block sin(pi x / 2), second cos(pi x / 2); x = 1 -> (1, 0)
    enc = f.encode(torch.ones(1, 3), 10)
    assert enc.shape == (1, 60)
    assert torch.allclose(enc[0, :3], torch.ones(3), atol=1e-6)
    assert torch.allclose(enc[0, 3:6], torch.zeros(3), atol=1e-6)


def test_composition_hand_values():
    # entity A: sigma 1, feature 1; entity B: sigma 3, feature 0 everywhere ->
    # composed sigma 4, feature (1 * 1 + 3 * 0) / 4 = 0.25; the last sample reaches to infinity,
    # so the rays are opaque and the feature map is exactly 0.25.
    B, res, N = 2, 4, 16
    t = torch.linspace(0.5, 6, N).expand(B, res * res, N).contiguous()
    sig = torch.stack([torch.ones(B, res * res, N), 3 * torch.ones(B, res * res, N)])
    feat = torch.stack([torch.ones(B, res * res, N, 5), torch.zeros(B, res * res, N, 5)])
    fmap, acc = gm.render_feature_map(sig, feat, t, res)
    assert fmap.shape == (B, 5, res, res) and acc.shape == (B, res, res)
    assert torch.allclose(fmap, torch.full_like(fmap, 0.25), atol=1e-5)
    assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6)


def test_packed_object_evaluation_equals_dense_masked():
    cfg = tiny("cpu32_faces", bf16=False)
    torch.manual_seed(0)
    G = gm.GiraffeGenerator(cfg)
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(1), train=False)
    o, d = gm.camera_rays(cfg, x["c2w"])
    args = (x["obj_scale"][:, 0], x["obj_translation"][:, 0], x["obj_rotation"][:, 0])
    sig, feat = gm.evaluate_object(G.object_field, o, d, x["t"], x["z_shape_obj"][:, 0],
                                   x["z_app_obj"][:, 0], *args, padding=0.1)
    # dense reference: every sample through the field, then the official mask |p| <= 1.1
    from aware3d.render.samplers import points_along_rays
    ob, db = gm.world_to_object(o, *args), gm.world_to_object(d, *args, direction=True)
    p = points_along_rays(ob, db, x["t"])
    B, R, N, _ = p.shape
    s_ref, f_ref = G.object_field(p.reshape(B, -1, 3), db.unsqueeze(2).expand_as(p).reshape(B, -1, 3),
                                  x["z_shape_obj"][:, 0], x["z_app_obj"][:, 0])
    inside = (p.abs() <= 1.1).all(-1)
    frac = inside.float().mean().item()
    assert 0.01 < frac < 0.5                      # the box holds a small part of the samples
    assert torch.allclose(sig, torch.where(inside, s_ref.reshape(B, R, N), 0.0), atol=1e-5)
    assert torch.allclose(feat, torch.where(inside[..., None], f_ref.reshape(B, R, N, -1), 0.0), atol=1e-5)


def test_object_out_of_view_is_empty_and_in_view_is_not():
    cfg = tiny("cpu32_faces", bf16=False)
    torch.manual_seed(0)
    G = gm.GiraffeGenerator(cfg)
    with torch.no_grad():
        G.object_field.sigma_out.bias.fill_(50.0)  # a dense object: opaque wherever its box is seen
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=False)
    with torch.no_grad():
        seen = G(x, background=False, return_alpha=True)
        # in view: the box of scale 0.21 fills most of the fov-10 image at radius 2.732 -> alpha ~ 1
        assert seen["alpha"].amax() > 0.99
        x["obj_translation"][:, 0] = torch.tensor([0.0, 5.0, 0.0])  # far to the side: out of view
        gone = G(x, background=False, return_alpha=True)
    assert gone["alpha"].abs().max() == 0.0        # no sample inside the box -> alpha exactly 0
    assert gone["opacity"].abs().max() == 0.0


def test_generator_and_discriminator_shapes_and_gradients():
    cfg = tiny("cpu32_faces", bf16=False)
    m = gm.build(cfg)
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=True)
    img = m.generator(x)
    assert img.shape == (2, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    logits = m.discriminator(img)
    assert logits.shape == (2, 1)
    logits.sum().backward()
    for name, mod in [("object_field", m.generator.object_field), ("background_field", m.generator.background_field),
                      ("neural_renderer", m.generator.neural_renderer), ("discriminator", m.discriminator)]:
        missing = [n for n, p in mod.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, f"{name}: no/invalid gradient for {missing}"
        assert sum(p.grad.abs().sum() for p in mod.parameters()) > 0, name


def test_neural_renderer_and_discriminator_sizes():
    from aware3d.methods.giraffe import DCDiscriminator, NeuralRenderer
    nr = NeuralRenderer(n_feat=128, input_dim=128, img_size=64, feature_res=16)
    assert nr.n_blocks == 2                                      # 16 -> 32 -> 64
    assert nr(torch.randn(1, 128, 16, 16)).shape == (1, 3, 64, 64)
    nr256 = NeuralRenderer(n_feat=256, input_dim=256, img_size=256, feature_res=16)
    assert nr256.n_blocks == 4                                   # 16 -> 256: 4 blocks (paper)
    d = DCDiscriminator(n_feat=512, img_size=64)
    assert len(d.blocks) == 4 and d.blocks[0].out_channels == 64  # 64 -> 32 -> 16 -> 8 -> 4
    assert d(torch.randn(3, 3, 64, 64)).shape == (3, 1)


def test_bf16_field_close_to_fp32():
    cfg = tiny("cpu32_faces", bf16=False)
    torch.manual_seed(0)
    G = gm.GiraffeGenerator(cfg)
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=False)
    with torch.no_grad():
        a = G(x)
        G.cfg = gm.replace_config(cfg, bf16=True)
        b = G(x)
    # bf16 keeps 8 mantissa bits: images in [0, 1] agree to about 1e-2
    assert (a - b).abs().max() < 2e-2


@pytest.mark.parametrize("objects,background", [(None, True), ([1], False), ([], True)])
def test_packed_feature_map_equals_compose_plus_volume_render(objects, background):
    # the fast path (per-ray hidden layers, output layer once per ray) against the reference
    # compose() + volume_render() on dense features: equal to float round-off
    cfg = tiny("tiny16", bf16=False)
    torch.manual_seed(0)
    G = gm.GiraffeGenerator(cfg)
    with torch.no_grad():
        G.object_field.sigma_out.bias.fill_(3.0)
    x = gm.sample_inputs(cfg, 3, torch.Generator().manual_seed(2), train=True)
    f_ref, a_ref = G.feature_map(x, objects, background, packed=False)
    f, a = G.feature_map(x, objects, background, packed=True)
    assert f.abs().max() > 1e-3
    assert torch.allclose(f, f_ref, atol=1e-5, rtol=1e-4)
    assert torch.allclose(a, a_ref, atol=1e-6)


@pytest.mark.parametrize("preset,res", [("cpu32", 32), ("cpu32_faces", 32), ("cpu64", 64)])
def test_cpu_presets_generate_their_resolution(preset, res):
    # the CPU presets end-to-end: 2 images at the preset's resolution in [0, 1], one D logit each;
    # cpu64 keeps cpu32's networks with the stable discriminator settings
    cfg = gm.make_config(preset)
    m = gm.build(cfg)
    with torch.no_grad():
        img = m.generator(gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=False))
        assert img.shape == (2, 3, res, res) and 0 <= img.min() and img.max() <= 1
        assert m.discriminator(img).shape == (2, 1)
    if preset == "cpu64":
        assert (cfg.lr_d, cfg.r1_weight, cfg.lr_g) == (1e-3, 10.0, 1e-3)
