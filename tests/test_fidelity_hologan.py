"""HoloGAN against its official code (thunguyenphuoc/HoloGAN, commit 76c35a8, TensorFlow 1).

Per-layer parameter counts are the official graph's (built with TensorFlow's compat.v1 outside this
repository and counted per variable scope; BENCHMARKS.md, "Fidelity to the official code: GIRAFFE,
CIPS-3D, HoloGAN", has the weight transfer: images equal to 5e-7). The official 64^2 networks are
generator_AdaIN + discriminator_IN (the released config names generator_AdaIN8, which does not
exist), the 128^2 ones generator_AdaIN_res128 + discriminator_IN_style_res128. The pieces the
transfer needed (TF 'SAME' transposed convs, 5x5 'SAME' convs, the official volume resampling,
ReLU AdaIN heads, row-wise style classifiers) are checked here against independent references.
Runs saved before these keys keep the old networks (tests/test_api.py renders their pixels)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aware3d.fields.hologan import (
    AdaIN,
    HoloDiscriminator,
    SameConvTranspose2d,
    SameConvTranspose3d,
    official_rotation_matrix,
    rotate_volume_official,
)
from aware3d.methods import gan_common as gc
from aware3d.methods import hologan as hm

# official variable scope -> parameters (TF graph, trainable variables), and the aware3d module
G64 = [("const", "g_w_constant/w", 32768), ("adain3d.0", "g_z0", 132096), ("up3d.0", "g_h1", 1769600),
       ("adain3d.1", "g_z1", 33024), ("up3d.1", "g_h2", 221248), ("adain3d.2", "g_z2", 16512),
       ("projection.0", "g_h3", 1049600), ("up2d.0", "g_h4", 4194560), ("adain2d.0", "g_z4", 66048),
       ("up2d.1", "g_h5", 262208), ("adain2d.1", "g_z5", 16512), ("to_rgb", "g_h6", 3075)]
D64 = [("conv0", "d_h0_conv", 4864), ("convs.0", "d_h1_conv", 204928), ("norms.0", "d_in1", 256),
       ("convs.1", "d_h2_conv", 819456), ("norms.1", "d_in2", 512), ("convs.2", "d_h3_conv", 3277312),
       ("norms.2", "d_in3", 1024), ("logit", "d_h4_lin", 8193), ("latent.0", "d_latent", 1048704),
       ("latent.2", "d_latent_prediction", 16512)]
G128 = [("const", "g_w_constant/w", 32768), ("adain3d.0", "g_z0", 132096), ("up3d.0", "g_h1", 3539200),
        ("adain3d.1", "g_z1", 66048), ("up3d.1", "g_h2", 884864), ("adain3d.2", "g_z2", 33024),
        ("post3d.0", "g_h2_proj1", 221248), ("post3d.2", "g_h2_proj2", 110656),
        ("projection.0", "g_h3", 524800), ("up2d.0", "g_h4", 2097408), ("adain2d.0", "g_z4", 66048),
        ("up2d.1", "g_h5", 262208), ("adain2d.1", "g_z5", 16512), ("up2d.2", "g_h6", 32800),
        ("adain2d.2", "g_z6", 8256), ("to_rgb", "g_h7", 1539)]
D128 = [("conv0", "d_h0_conv", 4864), ("convs.0", "d_h1_conv", 204928), ("norms.0", "d_in1", 256),
        ("style_heads.0", "d_h1_class", 129), ("convs.1", "d_h2_conv", 819456), ("norms.1", "d_in2", 512),
        ("style_heads.1", "d_h2_class", 257), ("convs.2", "d_h3_conv", 3277312), ("norms.2", "d_in3", 1024),
        ("style_heads.2", "d_h3_class", 513), ("convs.3", "d_h4_conv", 13108224), ("norms.3", "d_in4", 2048),
        ("style_heads.3", "d_h4_class", 1025), ("logit", "d_h5_lin", 16385), ("latent.0", "d_latent", 2097280),
        ("latent.2", "d_latent_prediction", 16512)]


def _count(module: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n == prefix or n.startswith(prefix + "."))


@pytest.mark.parametrize("preset,g_layers,d_layers,g_total,d_total", [
    ("celeba64", G64, D64, 7_797_251, 5_381_761), ("celeba128", G128, D128, 8_029_475, 19_550_725)])
def test_per_layer_parameter_counts_equal_the_official_graph(preset, g_layers, d_layers, g_total, d_total):
    torch.manual_seed(0)
    m = hm.build(hm.make_config(preset))
    for net, layers, total in ((m.generator, g_layers, g_total), (m.discriminator, d_layers, d_total)):
        got = [(name, scope, _count(net, name)) for name, scope, _ in layers]
        assert got == layers
        assert sum(p.numel() for p in net.parameters()) == sum(n for *_, n in layers) == total
    assert tuple(m.generator.const.shape) == (1, 512, 4, 4, 4)


def test_saved_configs_keep_the_old_networks():
    old = gc.config_from_dict(hm.HoloGANConfig, {"preset": "celeba64"})
    assert (old.adain_head, old.g_act, old.up3d_kernel, old.rgb_layer, old.rotation, old.d_kernel, old.d_style,
            old.style_loss_g, old.pose_prior) == ("offset", "lrelu", 4, "conv3", "centred", 4, "concat", True,
                                                  "uniform")
    for name in ("celeba64", "objects64", "celeba128"):
        c = hm.make_config(name)
        assert (c.adain_head, c.up3d_kernel, c.rgb_layer, c.rotation, c.d_kernel, c.style_loss_g, c.mlp_layers,
                c.pose_prior) == ("relu", 3, "deconv4", "official", 5, False, 0, "integer"), name
    assert hm.make_config("celeba64").g_act == "relu" and hm.make_config("celeba128").g_act == "lrelu"
    with pytest.raises(ValueError, match="style"):
        hm.build(hm.make_config("celeba64", style_weight=1.0))   # discriminator_IN has no style classifiers


def _tf_same_transpose_reference(x, weight, stride):
    # TF's conv_transpose(padding='SAME') is the adjoint of the 'SAME' conv that maps stride * n -> n:
    # that conv pads k - s in all, (k - s) // 2 before. The adjoint comes from autograd.
    k, dims = weight.shape[-1], x.dim() - 2
    n_out = [stride * s for s in x.shape[2:]]
    total = max(k - stride, 0)
    pad = []
    for _ in range(dims):
        pad += [total // 2, total - total // 2]
    big = torch.zeros(x.shape[0], weight.shape[1], *n_out, requires_grad=True)
    conv = F.conv3d if dims == 3 else F.conv2d
    y = conv(F.pad(big, pad), weight, stride=stride)   # (in, out, k..) is the forward conv's (out, in, k..)
    assert y.shape == x.shape
    (grad,) = torch.autograd.grad((y * x).sum(), big)
    return grad


@pytest.mark.parametrize("k,s,dims", [(3, 2, 3), (4, 2, 2), (4, 1, 2), (3, 1, 3)])
def test_same_transposed_convs_are_the_adjoint_of_tf_same_convs(k, s, dims):
    torch.manual_seed(0)
    cls = SameConvTranspose3d if dims == 3 else SameConvTranspose2d
    m = cls(3, 2, k, s)
    x = torch.randn(2, 3, *([5] * dims))
    want = _tf_same_transpose_reference(x, m.weight.detach(), s) + m.bias.detach().reshape(1, -1, *[1] * dims)
    got = m(x)
    assert got.shape == want.shape == (2, 2, *[5 * s] * dims)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    if (k, s) == (3, 2):  # PyTorch's padding=1, output_padding=1 is one voxel off (the old way fails)
        old = F.conv_transpose3d(x, m.weight, m.bias, stride=2, padding=1, output_padding=1)
        assert (old - want).abs().max() > 1e-2


def _tf_interpolate_numpy(vox, src):
    # the official tf_interpolate, written out per point: floor corners, both clamped to [0, N - 1],
    # weights from the clamped corners (they cancel outside); vox (N, N, N) indexed [z, y, x]
    n = vox.shape[0]
    out = np.zeros(len(src))
    for i, (x, y, z) in enumerate(src):
        c = []
        for v in (x, y, z):
            a0 = int(np.floor(v))
            c.append((min(max(a0, 0), n - 1), min(max(a0 + 1, 0), n - 1)))
        (x0, x1), (y0, y1), (z0, z1) = c
        acc = 0.0
        for xi, wx in ((x0, x1 - x), (x1, x - x0)):
            for yi, wy in ((y0, y1 - y), (y1, y - y0)):
                for zi, wz in ((z0, z1 - z), (z1, z - z0)):
                    acc += wx * wy * wz * vox[zi, yi, xi]
        out[i] = acc
    return out


def test_official_resampling_against_a_per_point_port_of_tf_interpolate():
    torch.manual_seed(0)
    n = 6
    vol = torch.randn(2, 1, n, n, n, dtype=torch.float64)
    yaw, pitch = torch.tensor([-37.0, 12.0]), torch.tensor([11.0, -19.0])
    R = official_rotation_matrix(yaw, pitch).double()
    got = rotate_volume_official(vol, R)          # (B, 1, depth = x, rows = reversed y, cols = z)
    r = np.arange(n)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    p = np.stack([xx, yy, zz], -1).reshape(-1, 3) - n / 2
    for b in range(2):
        src = p @ np.linalg.inv(R[b].numpy()).T + n / 2
        want = _tf_interpolate_numpy(vol[b, 0].numpy(), src).reshape(n, n, n)      # [z, y, x]
        want = torch.from_numpy(want).permute(2, 1, 0).flip(1)                     # [x, reversed y, z]
        torch.testing.assert_close(got[b, 0], want, atol=1e-9, rtol=0)


def test_official_resampling_hand_case_identity():
    # yaw -180 (azimuth 90: Rot_Y(0)) and pitch 0 is the identity: every voxel stays, except that a
    # coordinate N - 1 is outside [0, N - 1) and gives 0 (tf_interpolate's clamped corners cancel);
    # the image layout is depth = x, rows = reversed y, cols = z
    n = 4
    vol = torch.arange(n ** 3, dtype=torch.float64).reshape(1, 1, n, n, n) + 1     # [z, y, x]
    R = official_rotation_matrix(torch.tensor([-180.0]), torch.tensor([0.0])).double()
    torch.testing.assert_close(R[0], torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    got = rotate_volume_official(vol, torch.eye(3, dtype=torch.float64)[None])[0, 0]
    for d in range(n):
        for row in range(n):
            for col in range(n):
                x, y, z = d, n - 1 - row, col
                want = 0.0 if n - 1 in (x, y, z) else float(vol[0, 0, z, y, x])
                assert float(got[d, row, col]) == want, (d, row, col)


def test_official_rotation_matrix_hand_values():
    # azimuth 270 (yaw 0): Rot_Y(pi): x -> -x, z -> -z; elevation 90 (pitch 90): Rot_Z sends x -> -y
    R = official_rotation_matrix(torch.tensor(0.0), torch.tensor(0.0))
    torch.testing.assert_close(R, torch.diag(torch.tensor([-1.0, 1.0, -1.0])), atol=1e-6, rtol=0)
    P = official_rotation_matrix(torch.tensor(-180.0), torch.tensor(90.0))
    torch.testing.assert_close(P @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, -1, 0]), atol=1e-6, rtol=0)


def test_adain_relu_head_hand_case():
    # official z_mapping_function: (scale, bias) = relu(W z + b) split in halves
    ada = AdaIN(1, 2, head="relu")
    with torch.no_grad():
        ada.affine.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        ada.affine.bias.zero_()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    y = ada(x, torch.tensor([[2.0, -1.0]]))   # gamma 2, beta relu(-1) = 0
    torch.testing.assert_close(y.flatten(), 2 * (x.flatten() - 2.5) / math.sqrt(1.25 + 1e-8), atol=1e-5, rtol=0)
    y0 = ada(x, torch.tensor([[-3.0, 1.0]]))  # gamma relu(-3) = 0: the constant beta 1
    torch.testing.assert_close(y0, torch.ones_like(x))


def test_discriminator_5x5_same_padding_reaches_one_row_before():
    # TF 'SAME', kernel 5, stride 2: output row i sees input rows 2i - 1 .. 2i + 3, so a delta at
    # row 3 reaches output rows 0, 1, 2 (PyTorch's padding 2 would see 2i - 2 .. 2i + 2: rows 1, 2)
    D = HoloDiscriminator(resolution=16, ch=2, max_ch=4, z_dim=2, kernel=5, style="none")
    with torch.no_grad():
        D.conv0.weight.fill_(1.0)
        D.conv0.bias.zero_()
        x = torch.zeros(1, 3, 16, 16)
        x[0, 0, 3, 3] = 1.0
        y = D.conv0(D._pad(x))[0, 0]
    assert y.shape == (8, 8)
    assert sorted(set(y.nonzero()[:, 0].tolist())) == [0, 1, 2]


def test_row_style_classifiers_score_mean_and_variance_as_rows():
    torch.manual_seed(0)
    D = HoloDiscriminator(resolution=16, ch=4, max_ch=8, z_dim=2, kernel=5, style="rows").eval()  # fixed u
    x = torch.randn(3, 3, 16, 16)
    out = D.forward_all(x)
    h = F.leaky_relu(D.conv0(D._pad(x)), 0.2)
    h = D.convs[0](D._pad(h))
    head = D.style_heads[0]
    want = torch.cat([head(h.mean((2, 3))), head(h.var((2, 3), unbiased=False))], 0)
    assert out["style_logits"][0].shape == (6, 1) and head.in_features == 8
    torch.testing.assert_close(out["style_logits"][0], want)


def test_official_generator_loss_has_no_style_term():
    torch.manual_seed(0)
    cfg = hm.make_config("tiny", d_style="rows", d_kernel=5, style_loss_g=False, style_weight=100.0, identity_weight=0.0)
    m = hm.build(cfg)
    x = m.sample_inputs(2, torch.Generator().manual_seed(1))
    loss, sc = m.generator_objective(m.generator, m.discriminator, x)
    torch.testing.assert_close(loss, sc["loss_G"])
    assert float(sc["loss_G_style"]) > 0
    m2 = hm.build(hm.replace_config(cfg, style_loss_g=True))
    loss2, sc2 = m2.generator_objective(m2.generator, m2.discriminator, x)
    torch.testing.assert_close(loss2, sc2["loss_G"] + 100.0 * sc2["loss_G_style"])


def test_official_pose_prior_is_whole_degrees():
    y, p = hm.sample_pose(hm.make_config("celeba64"), 4000, torch.Generator().manual_seed(0))
    assert torch.equal(y, y.round()) and torch.equal(p, p.round())
    assert (int(y.min()), int(y.max()), int(p.min()), int(p.max())) == (-50, 49, -19, 20)


def test_paper_generator_runs_and_discriminator_without_style_heads():
    torch.manual_seed(0)
    m = hm.build(hm.make_config("celeba64"))
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = m.generator(x)
        out = m.discriminator.forward_all(img)
    assert img.shape == (2, 3, 64, 64) and img.abs().max() <= 1
    assert out["style_logits"] == [] and not hasattr(m.discriminator, "style_heads")
    ld, sd = m.discriminator_objective(m.generator, m.discriminator, img, x, r1_weight=0.0)
    assert float(sd["loss_D_style"]) == 0.0 and torch.isfinite(ld)
