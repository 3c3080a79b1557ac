"""StyleGAN2 building blocks (aware3d.nets.stylegan2): FIR filtering against a direct numpy
computation, the modulated conv against a hand computation, mapping, minibatch std, the
discriminator (shapes, gradients, progressive inputs)."""
import math

import numpy as np
import pytest
import torch

from aware3d.nets import stylegan2 as sg


def _np_filter_same(x, f):
    """Independent 'same' true convolution (zero padding, StyleGAN2's filter2d offsets) in numpy."""
    H, W = x.shape
    fh, fw = f.shape
    p0y, p0x = fh // 2, fw // 2
    xp = np.zeros((H + fh - 1, W + fw - 1))
    xp[p0y:p0y + H, p0x:p0x + W] = x
    ff = f[::-1, ::-1]
    out = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            out[i, j] = (xp[i:i + fh, j:j + fw] * ff).sum()
    return out


def test_setup_filter_is_normalised_outer_product():
    f = sg.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)


def test_filter2d_matches_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 7, 9, generator=g)
    f = sg.setup_filter(torch.rand(3, 4, generator=g) + 0.1, normalize=False)
    ref = _np_filter_same(x[0, 0].double().numpy(), f.double().numpy())
    assert np.allclose(sg.filter2d(x, f)[0, 0].numpy(), ref, atol=1e-5)
    assert torch.allclose(sg.Blur()(torch.ones(1, 2, 8, 8))[..., 2:-2, 2:-2], torch.ones(1, 2, 4, 4))


def test_upsample_downsample():
    f = sg.setup_filter()
    # zero insertion then filter with gain 4 keeps a constant image constant away from the border
    up = sg.upsample2d(torch.ones(1, 1, 6, 6), f)
    assert up.shape == (1, 1, 12, 12) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))
    # upsample2d = numpy: zero insertion, then 'same' filtering with 4 f at the same offsets
    x = torch.randn(1, 1, 5, 5)
    z = np.zeros((10, 10))
    z[::2, ::2] = x[0, 0].numpy()
    # padding ((fw + 1) // 2, (fw - 2) // 2) = (2, 1): the same offsets as filter2d's
    ref = _np_filter_same(z, 4 * f.numpy())
    got = sg.upsample2d(x, f)[0, 0].numpy()
    assert np.allclose(got, ref, atol=1e-5)
    d = sg.downsample2d(torch.ones(1, 3, 8, 8), f)
    assert d.shape == (1, 3, 4, 4) and torch.allclose(d[..., 1:-1, 1:-1], torch.ones(1, 3, 2, 2))


def test_modulated_conv2d_hand_computation():
    g = torch.Generator().manual_seed(1)
    B, I, O, k = 2, 3, 4, 3
    x = torch.randn(B, I, 6, 6, generator=g)
    W = torch.randn(O, I, k, k, generator=g)
    s = torch.rand(B, I, generator=g) + 0.5
    out = sg.modulated_conv2d(x, W, s, demodulate=True, padding=1)
    for b in range(B):
        wb = W * s[b].reshape(1, I, 1, 1)                                   # weight * style
        wb = wb / torch.sqrt((wb ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)  # L2 over in x k x k
        ref = torch.nn.functional.conv2d(x[b:b + 1], wb, padding=1)
        assert torch.allclose(out[b:b + 1], ref, atol=1e-5)
    raw = sg.modulated_conv2d(x, W, s, demodulate=False, padding=1)
    assert torch.allclose(raw[:1], torch.nn.functional.conv2d(x[:1], W * s[0].reshape(1, I, 1, 1), padding=1), atol=1e-5)
    # one pixel by hand: 1x1 kernel, W = [[3, 4]], s = 1 -> demodulated (0.6, 0.8)
    y = sg.modulated_conv2d(torch.ones(1, 2, 1, 1), torch.tensor([[3.0, 4.0]]).reshape(1, 2, 1, 1), torch.ones(1, 2))
    assert torch.allclose(y, torch.tensor(1.4).reshape(1, 1, 1, 1), atol=1e-6)


def test_modulated_conv_layer_shapes_gradients_and_style_init():
    torch.manual_seed(0)
    layer = sg.ModulatedConv2d(8, 16, 3, 12, up=2, use_noise=True)
    x, w = torch.randn(2, 8, 8, 8, requires_grad=True), torch.randn(2, 12)
    y = layer(x, w)
    assert y.shape == (2, 16, 16, 16)
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in layer.parameters())
    assert torch.allclose(layer.affine(torch.zeros(1, 12)), torch.ones(1, 8))   # style starts at 1
    rgb = sg.ToRGB(16, 3, 12)(y.detach(), w)
    assert rgb.shape == (2, 3, 16, 16)


def test_demodulated_conv_has_unit_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 64, 64, generator=g)
    W = torch.randn(8, 32, 3, 3, generator=g) * 3
    s = torch.rand(2, 32, generator=g) * 3 + 0.1
    v = sg.modulated_conv2d(x, W, s, padding=0).var(dim=(2, 3))
    assert torch.allclose(v, torch.ones_like(v), atol=0.08)


def test_mapping_network():
    torch.manual_seed(0)
    m = sg.MappingNetwork(16, 12, layers=3, lr_mul=0.01)
    assert m.layers[0].weight_gain == pytest.approx(0.01 / 4)
    z = torch.randn(5, 16)
    w = m(z)
    assert w.shape == (5, 12) and m.w_avg.abs().sum() > 0
    # z is normalised first: scaling z changes nothing
    m.eval()
    assert torch.allclose(m(3 * z), m(z), atol=1e-5)
    assert torch.allclose(m(z, truncation_psi=0.0), m.w_avg.expand(5, 12))


def test_minibatch_std_hand():
    x = torch.zeros(4, 2, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([0.0, 0.0, 2.0, 2.0])   # groups of 4 -> std 1 for channel 0, 0 for 1
    y = sg.MinibatchStd(4)(x)
    assert y.shape == (4, 3, 1, 1)
    assert torch.allclose(y[:, 2], torch.full((4, 1, 1), (1.0 + math.sqrt(1e-8)) / 2), atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet", "skip"])
def test_discriminator_shapes_gradients(arch):
    torch.manual_seed(0)
    D = sg.StyleGAN2Discriminator(32, channel_base=1024, channel_max=32, architecture=arch)
    assert D.channels[32] == 32 and D.channels[4] == 32
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = D(x)
    assert out.shape == (4, 1)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    if arch == "skip":   # progressive: smaller images and a fade-in
        assert D(torch.randn(4, 3, 16, 16)).shape == (4, 1)
        assert D(torch.randn(4, 3, 16, 16), alpha=0.3).shape == (4, 1)
    else:
        with pytest.raises(ValueError):
            D(torch.randn(4, 3, 16, 16))


def test_discriminator_channels_follow_stylegan2():
    # channel_base 16384 (StyleNeRF paper256 fmaps 0.5), max 512
    D = sg.StyleGAN2Discriminator(256, channel_base=16384, channel_max=512, architecture="skip")
    assert [D.channels[r] for r in (256, 128, 64, 32, 16, 8, 4)] == [64, 128, 256, 512, 512, 512, 512]
