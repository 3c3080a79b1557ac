"""GIRAFFE's fast paths against their reference paths (BENCHMARKS.md, "GIRAFFE: generation and
training speed"): the positional encoding in block layout (sin block, cos block) read by layers with
reordered weight columns gives the reference encoding's values and the fields' outputs to float
round-off, in every preset, with gradients; runs saved before render the same (tests/test_api.py)."""
import pytest
import torch

from aware3d.fields.giraffe import FeatureField, encoding_block_order, encoding_blocks
from aware3d.methods import giraffe as gm
from aware3d.render import giraffe_encoding


@pytest.mark.parametrize("dim,n_freqs", [(3, 10), (3, 4), (2, 3)])
def test_block_encoding_is_the_reference_reordered_bit_for_bit(dim, n_freqs):
    torch.manual_seed(0)
    x = (torch.rand(257, 5, dim) * 2 - 1) * torch.tensor([0.1, 1.0, 7.0, 60.0, 300.0]).reshape(1, 5, 1)
    ref = giraffe_encoding(x, n_freqs)
    blocks = encoding_blocks(x, n_freqs)
    order = encoding_block_order(dim, n_freqs)
    assert blocks.shape == ref.shape == (257, 5, 2 * n_freqs * dim)
    assert torch.equal(ref[..., order], blocks)
    # written in bfloat16: the same rounding as casting the float32 encoding
    assert torch.equal(encoding_blocks(x, n_freqs, torch.bfloat16), ref[..., order].to(torch.bfloat16))
    # hand case: x = 0.25, one frequency pair (k = 0, 1): sin(pi / 4), sin(pi / 2), cos(pi / 4), cos(pi / 2)
    b = encoding_blocks(torch.tensor([[0.25]]), 2)[0]
    torch.testing.assert_close(b, torch.tensor([0.70710678, 1.0, 0.70710678, 0.0]), atol=1e-6, rtol=0)


def _field_pair(**kw):
    torch.manual_seed(0)
    f = FeatureField(**kw)
    with torch.no_grad():
        for p in f.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return f


@pytest.mark.parametrize("kw", [dict(hidden=32, n_blocks=4, skips=(2,), z_shape_dim=8, feature_dim=6),
                                dict(hidden=16, n_blocks=3, skips=(), z_shape_dim=4, feature_dim=5,
                                     n_freq_pos=6, n_freq_dir=2, downscale=12.0)])
def test_field_fast_encoding_matches_the_reference_with_gradients(kw):
    f = _field_pair(**kw)
    B, P = 3, 50
    pts = torch.randn(B * P, 3)
    dirs = torch.randn(B * 10, 3)
    index = torch.arange(B).repeat_interleave(P)
    ray = torch.arange(B * 10).repeat_interleave(P // 10)
    zs, za = torch.randn(B, kw["z_shape_dim"]), torch.randn(B, kw["z_shape_dim"])
    outs, grads = [], []
    for fast in (True, False):
        f.fast_encoding = fast
        f.zero_grad()
        s, feat = f(pts, dirs, zs, za, index=index, dir_index=ray)
        (s.square().sum() + feat.sin().sum()).backward()
        outs.append((s.detach(), feat.detach()))
        grads.append({n: p.grad.clone() for n, p in f.named_parameters()})
        # padded layout too
        s2, f2 = f(pts.reshape(B, P, 3), dirs.reshape(B, 10, 1, 3).expand(B, 10, P // 10, 3).reshape(B, P, 3), zs, za)
        outs.append((s2.detach(), f2.detach()))
    for a, b in ((outs[0], outs[2]), (outs[1], outs[3])):
        for u, v in zip(a, b):
            torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-4, rtol=1e-4, msg=n)
    # the reference layer weights are untouched and reading order matters (the test can fail)
    f.fast_encoding = True
    wrong = torch.nn.functional.linear(encoding_blocks(pts / f.downscale, f.n_freq_pos), f.fc_in.weight, f.fc_in.bias)
    right = f.fc_in(f.encode(pts, f.n_freq_pos))
    assert (wrong - right).abs().max() > 1e-3


def test_points_that_need_a_gradient_take_the_reference_path():
    f = _field_pair(hidden=16, n_blocks=3, skips=(), z_shape_dim=4, feature_dim=4)
    pts = torch.randn(2, 20, 3, requires_grad=True)
    z = torch.randn(2, 4)
    f.fast_encoding = True
    (g1,) = torch.autograd.grad(f.density(pts, z).sum(), pts)
    f.fast_encoding = False
    (g2,) = torch.autograd.grad(f.density(pts, z).sum(), pts)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("preset", ["celeba64", "clevr2", "cpu32", "tiny"])
@pytest.mark.parametrize("bf16", [False, True])
def test_generator_images_equal_with_and_without_the_fast_encoding(preset, bf16):
    cfg = gm.make_config(preset, bf16=bf16)
    G = gm.build(cfg).generator.eval()
    x = gm.sample_inputs(cfg, 2, torch.Generator().manual_seed(0), train=True)
    with torch.no_grad():
        a = G(x, return_alpha=True)
        for f in (G.object_field, G.background_field):
            f.fast_encoding = False
        b = G(x, return_alpha=True)
    tol = 2e-2 if bf16 else 1e-5   # bf16: a different summation order may move one bf16 step (2^-8)
    for k in ("image", "features", "opacity"):
        torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0, msg=k)
    assert b["image"].std() > 0
