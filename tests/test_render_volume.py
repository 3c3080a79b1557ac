"""Volume rendering, composition and samplers against hand-computed values."""
import math

import pytest
import torch

from aware3d.render import (ShapeError, compose, composite, deltas_from_t, expected_depth,
                            hierarchical_samples, near_far_aabb, near_far_sphere, render_weights,
                            render_weights_packed_reference, sample_pdf, stratified_samples,
                            transmittance, volume_render, volume_render_packed)
from aware3d.render.volume import alphas_from_densities


def test_constant_slab_transmittance_is_exp_minus_sigma_L():
    # A slab of density sigma and length L: light left after it is exp(-sigma L) (Beer-Lambert),
    # independent of how finely the slab is sampled.
    sigma, L = 0.7, 2.5
    for n in (1, 7, 64):
        deltas = torch.full((n,), L / n, dtype=torch.float64)
        a = alphas_from_densities(torch.full((n,), sigma, dtype=torch.float64), deltas)
        T_after = transmittance(torch.cat([a, torch.zeros(1, dtype=torch.float64)]))[-1]
        assert T_after.item() == pytest.approx(math.exp(-sigma * L), rel=1e-12)


def test_transmittance_hand_values():
    a = torch.tensor([0.5, 0.5, 0.2])
    # T = [1, 0.5, 0.25]; weights = [0.5, 0.25, 0.05]
    torch.testing.assert_close(transmittance(a), torch.tensor([1.0, 0.5, 0.25]))
    w, T, _ = render_weights(-torch.log(1 - a), deltas=torch.ones(3))
    torch.testing.assert_close(w, torch.tensor([0.5, 0.25, 0.05]))


def test_opaque_wall_depth_and_opacity():
    # Empty space until t = 3.0, then a wall of huge density: depth = 3.0, opacity = 1.
    t = torch.linspace(0.5, 6.0, 111)  # spacing 0.05, 3.0 is a sample
    sig = torch.where(t >= 3.0 - 1e-6, torch.tensor(1e6), torch.tensor(0.0))
    out = volume_render(sig, torch.ones(111, 3), t)
    assert out["opacity"].item() == pytest.approx(1.0, abs=1e-6)
    assert out["depth"].item() == pytest.approx(3.0, abs=1e-4)
    torch.testing.assert_close(out["color"], torch.ones(3))


def test_weights_sum_at_most_one_and_background():
    g = torch.Generator().manual_seed(0)
    sig = torch.rand(50, 32, generator=g) * 5
    t, _ = stratified_samples(2.0, 6.0, 32, batch_shape=(50,), generator=g)
    w, _, _ = render_weights(sig, t)
    assert (w >= 0).all() and (w.sum(-1) <= 1 + 1e-6).all()
    # zero density: the pixel is the background exactly
    out = volume_render(torch.zeros(4, 8), torch.rand(4, 8, 3), torch.linspace(1, 2, 8).expand(4, 8),
                        background=torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(out["color"], torch.tensor([1.0, 0.5, 0.0]).expand(4, 3))


def test_composite_feature_channels():
    w = torch.tensor([[0.2, 0.3]])
    v = torch.arange(2 * 5, dtype=torch.float32).view(1, 2, 5)
    torch.testing.assert_close(composite(w, v), 0.2 * v[:, 0] + 0.3 * v[:, 1])
    torch.testing.assert_close(expected_depth(w, torch.tensor([[1.0, 2.0]])), torch.tensor([0.8]))


def test_compose_zero_density_entity_changes_nothing():
    g = torch.Generator().manual_seed(1)
    s1 = torch.rand(6, 16, generator=g)
    f1 = torch.randn(6, 16, 8, generator=g)
    s0 = torch.zeros(6, 16)
    f0 = torch.randn(6, 16, 8, generator=g)
    s, f = compose(torch.stack([s1, s0]), torch.stack([f1, f0]))
    torch.testing.assert_close(s, s1)
    torch.testing.assert_close(f, f1, rtol=1e-6, atol=1e-6)


def test_compose_two_entities_equals_summed_density_render():
    # Two entities with the same feature render exactly like one entity of the summed density.
    g = torch.Generator().manual_seed(2)
    t = torch.linspace(0.5, 6, 64).expand(10, 64)
    s1, s2 = torch.rand(10, 64, generator=g), torch.rand(10, 64, generator=g) * 3
    feat = torch.randn(10, 64, 4, generator=g)
    s, f = compose(torch.stack([s1, s2]), torch.stack([feat, feat]))
    a = volume_render(s, f, t)["color"]
    b = volume_render(s1 + s2, feat, t)["color"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and the feature is the density-weighted mean (eq. 6): hand case
    s, f = compose(torch.tensor([[1.0], [3.0]]), torch.tensor([[[1.0]], [[5.0]]]))
    assert s.item() == 4.0 and f.item() == pytest.approx(4.0, rel=1e-6)


def test_importance_samples_concentrate_where_weights_are():
    bins = torch.linspace(0, 10, 11).expand(3, 11)
    w = torch.zeros(3, 10)
    w[:, 6] = 1.0  # all mass in [6, 7]
    t = sample_pdf(bins, w, 256, generator=torch.Generator().manual_seed(0))
    frac = ((t >= 6) & (t <= 7)).float().mean().item()
    assert frac > 0.99  # 1e-5 of uniform mass leaks per bin
    t_all, _ = hierarchical_samples(torch.rand(3, 10), bins, w, 16)
    assert (t_all[..., 1:] >= t_all[..., :-1]).all()


def test_sample_pdf_uniform_matches_cdf():
    # Uniform weights: inverse CDF is the identity map of u onto [0, 10].
    bins = torch.linspace(0, 10, 6).unsqueeze(0)
    t = sample_pdf(bins, torch.ones(1, 5), 5, deterministic=True)
    torch.testing.assert_close(t, torch.tensor([[0.0, 2.5, 5.0, 7.5, 10.0]]), atol=1e-4, rtol=0)


def test_stratified_one_sample_per_bin():
    t, bins = stratified_samples(torch.tensor([2.0]), torch.tensor([6.0]), 8,
                                 generator=torch.Generator().manual_seed(3))
    assert ((t >= bins[..., :-1]) & (t <= bins[..., 1:])).all()
    t_mid, _ = stratified_samples(2.0, 6.0, 4, perturb=False)
    torch.testing.assert_close(t_mid, torch.tensor([2.5, 3.5, 4.5, 5.5]))


def test_near_far_box_and_sphere():
    o = torch.tensor([[-5.0, 0.0, 0.0], [-5.0, 3.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = near_far_aabb(o, d, (-1, -1, -1, 1, 1, 1))
    assert hit.tolist() == [True, False]
    assert near[0].item() == pytest.approx(4.0) and far[0].item() == pytest.approx(6.0)
    near, far, hit = near_far_sphere(o, d, 2.0)
    assert hit.tolist() == [True, False]
    assert near[0].item() == pytest.approx(3.0) and far[0].item() == pytest.approx(7.0)


def test_padded_and_packed_layouts_agree():
    g = torch.Generator().manual_seed(4)
    n_rays, n = 7, 12
    t = torch.sort(torch.rand(n_rays, n, generator=g) * 4 + 2, -1).values
    t_end = torch.cat([t[:, 1:], t[:, -1:] + 0.1], -1)
    sig = torch.rand(n_rays, n, generator=g) * 3
    rgb = torch.rand(n_rays, n, 3, generator=g)
    padded = volume_render(sig, rgb, t, deltas=t_end - t)
    idx = torch.arange(n_rays).repeat_interleave(n)
    packed = volume_render_packed(sig.reshape(-1), rgb.reshape(-1, 3), t.reshape(-1), t_end.reshape(-1),
                                  idx, n_rays)
    torch.testing.assert_close(packed["color"], padded["color"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed["opacity"], padded["opacity"], rtol=1e-5, atol=1e-6)
    # ragged rays: drop samples of ray 3 entirely (0 samples) -> opacity 0 there
    keep = idx != 3
    pk = render_weights_packed_reference(sig.reshape(-1)[keep], (t_end - t).reshape(-1)[keep], idx[keep], n_rays)
    w_pad = padded["weights"].clone()
    w_pad[3] = 0
    torch.testing.assert_close(pk[0], w_pad.reshape(-1)[keep], rtol=1e-5, atol=1e-6)


def test_gradcheck_volume_render_and_compose_float64():
    g = torch.Generator().manual_seed(5)
    sig = (torch.rand(3, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    rgb = torch.rand(3, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.sort(torch.rand(3, 6, generator=g, dtype=torch.float64), -1).values * 4 + 2
    deltas = deltas_from_t(t, last=0.3)
    assert torch.autograd.gradcheck(lambda s, c: volume_render(s, c, t, deltas=deltas)["color"],
                                    (sig, rgb))
    s2 = (torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    f2 = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, f: compose(s, f)[1], (s2, f2))
    idx = torch.arange(3).repeat_interleave(6)
    assert torch.autograd.gradcheck(
        lambda s: render_weights_packed_reference(s.reshape(-1), deltas.reshape(-1), idx, 3)[0], (sig,))


def test_bf16_autocast_within_tolerance():
    # Fed by a bf16 network (inputs rounded to bf16, 8-bit mantissa: relative error <= 2^-8 = 3.9e-3)
    # under autocast, the renderer accumulates in fp32, so colours in [0, 1] stay within 5e-3 of
    # the fp32 render. (Accumulating the transmittance product in bf16 instead errs by ~1.7e-2.)
    g = torch.Generator().manual_seed(6)
    sig = torch.rand(64, 32, generator=g) * 4
    rgb = torch.rand(64, 32, 3, generator=g)
    t = torch.linspace(2, 6, 32).expand(64, 32)
    ref = volume_render(sig, rgb, t)["color"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = volume_render(sig.bfloat16(), rgb.bfloat16(), t)["color"]
    assert out.dtype == torch.float32
    assert (out - ref).abs().max().item() < 5e-3


def test_bad_shapes_name_the_argument():
    with pytest.raises(ShapeError, match=r"values: expected shape .*got \(4, 7, 3\)"):
        composite(torch.ones(4, 8), torch.ones(4, 7, 3))
    with pytest.raises(ShapeError, match="deltas"):
        alphas_from_densities(torch.ones(3), torch.ones(4))
    with pytest.raises(ShapeError, match="features"):
        compose(torch.ones(2, 5), torch.ones(2, 6, 3))
    with pytest.raises(ShapeError, match="aabb"):
        near_far_aabb(torch.zeros(2, 3), torch.ones(2, 3), (0, 1))
    with pytest.raises(ShapeError, match="expected a floating-point"):
        render_weights(torch.ones(3, dtype=torch.long), deltas=torch.ones(3))
