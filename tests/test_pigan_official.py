"""pi-GAN's official training and rendering details, by hand: the top-k generator loss and its
schedule, the G step in parts, the official sample placement and fine sampling, the last sample
taking the missing weight, the jitter outside training, the locked view direction, the official
pixel grid; and the fast field evaluation against the layer-by-layer reference (values and
gradients). The official code itself is compared outside the repository (BENCHMARKS.md)."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from aware3d.methods import pigan
from aware3d.render.cameras import image_rays


def _tiny(**kw):
    return pigan.make_config("tiny16", **kw)


def test_presets_carry_the_official_values_and_saved_runs_keep_the_old_ones():
    old = pigan.Config()  # what a config saved without the keys means
    assert (old.topk_interval, old.topk_v, tuple(old.batch_split)) == (0.0, 1.0, (1,))
    assert (old.sampling, old.ray_grid, old.eval_jitter, old.eval_last_back, old.lock_view_dependence) == \
        ("bins", "centres", False, False, False)
    c = pigan.make_config("celeba64")  # official CelebA: topk_interval 2000, topk_v 0.6, batch_split 2
    assert (c.topk_interval, c.topk_v, tuple(c.batch_split), c.eval_last_back) == (2000.0, 0.6, (2,), True)
    assert (c.sampling, c.ray_grid, c.eval_jitter, c.lock_view_dependence) == ("official", "edges", True, False)
    c = pigan.make_config("cats64")  # official Cats: 2000 / 0.6, batch_split 4, eval_last_back
    assert (c.topk_interval, c.topk_v, tuple(c.batch_split), c.eval_last_back) == (2000.0, 0.6, (4,), True)
    c = pigan.make_config("carla128")  # official CARLA: 1000 / 1 (never below all), splits 1, 2, 5
    assert (c.topk_interval, c.topk_v, tuple(c.batch_split), c.eval_last_back) == (1000.0, 1.0, (1, 2, 5), False)
    with pytest.raises(ValueError, match="batch_split"):
        pigan.build(dataclasses.replace(pigan.make_config("carla128"), batch_split=(1, 2)))


def test_topk_schedule_by_hand():
    c = pigan.make_config("celeba64")
    # max(0.99 ** (step / 2000), 0.6): 1 at 0, 0.99 at 2000, 0.99^10 = 0.9043821 at 20000,
    # 0.99^50 = 0.6050061 at 100000, 0.6 from 101,662 on (0.99^(101662/2000) = 0.59999)
    assert pigan.topk_fraction(c, 0) == 1.0
    assert pigan.topk_fraction(c, 2000) == pytest.approx(0.99)
    assert pigan.topk_fraction(c, 20000) == pytest.approx(0.9043821, abs=1e-7)
    assert pigan.topk_fraction(c, 100000) == pytest.approx(0.6050061, abs=1e-7)
    assert pigan.topk_fraction(c, 101662) == 0.6 and pigan.topk_fraction(c, 10 ** 6) == 0.6
    # k = ceil(fraction n) over one part of 28: 28, 28 (27.72), 26 (25.32), 17 (16.94), 17 (16.8)
    assert [pigan.topk_count(c, s, 28) for s in (0, 2000, 20000, 100000, 10 ** 6)] == [28, 28, 26, 17, 17]
    carla = pigan.make_config("carla128")
    assert pigan.topk_count(carla, 10 ** 6, 10) == 10
    assert pigan.topk_count(pigan.Config(), 10 ** 6, 7) == 7  # off for saved runs


class _G(torch.nn.Module):
    """Fakes whose every pixel is w z_0: a mean-pooling critic gives D = w z_0."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (self.w * x["z"][:, :1]).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)


def test_topk_loss_keeps_the_largest_critic_outputs_of_each_part_and_sums_the_parts():
    cfg = _tiny(topk_interval=2000.0, topk_v=0.6, batch_split=(2,))
    m = pigan.build(cfg)
    m.set_step(10 ** 6)  # fraction 0.6: k = ceil(0.6 * 3) = 2 of each part of 3
    z0 = torch.tensor([3.0, -1.0, 2.0, 0.5, -2.0, 1.0])
    inputs = {"z": torch.cat([z0[:, None], torch.zeros(6, 7)], 1), "c2w": torch.eye(4).expand(6, 4, 4)}
    G = _G()

    def D(x):
        return x.mean((1, 2, 3))[:, None]

    loss, scalars = m.generator_objective(G, D, inputs)
    loss.backward()  # the engine backpropagates the last part; the first one already did
    parts = [torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.5])]  # the two largest of each part
    want = [F.softplus(-p).mean() for p in parts]
    assert float(scalars["loss_G"]) == pytest.approx(float(sum(want) / 2))
    assert float(scalars["topk"]) == 4
    # d/dw sum_parts mean_k softplus(-w z) = sum_parts mean_k (-z sigmoid(-z)) at w = 1
    grad = sum((-p * torch.sigmoid(-p)).mean() for p in parts)
    assert float(G.w.grad) == pytest.approx(float(grad), rel=1e-6)
    with pytest.raises(ValueError, match="batch_split"):
        m.generator_objective(G, D, {k: v[:5] for k, v in inputs.items()})


def test_no_topk_and_one_part_is_the_plain_loss():
    m = pigan.build(_tiny(topk_interval=2000.0, topk_v=0.6))
    m.set_step(0)
    z = torch.randn(4, 8)
    G = _G()
    loss, _ = m.generator_objective(G, lambda x: x.mean((1, 2, 3))[:, None], {"z": z, "c2w": torch.eye(4).expand(4, 4, 4)})
    assert float(loss.detach()) == pytest.approx(float(F.softplus(-z[:, 0]).mean()))


def _recorder(sigma_fn=None):
    seen = []

    def evaluate(o, d, t):
        seen.append(t.clone())
        s = torch.zeros_like(t) if sigma_fn is None else sigma_fn(t)
        return s, torch.rand(*t.shape, 3, generator=torch.Generator().manual_seed(len(seen)), dtype=t.dtype)

    return evaluate, seen


def test_official_sample_placement_by_hand():
    o, d = torch.zeros(1, 5, 3), F.normalize(torch.randn(1, 5, 3), dim=-1)
    ev, seen = _recorder()
    pigan.render_rays(ev, o, d, 0.88, 1.12, 12, 0, sampling="official", perturb=False)
    assert torch.allclose(seen[0], torch.linspace(0.88, 1.12, 12).expand(1, 5, 12))  # ends included
    ev, seen = _recorder()
    g = torch.Generator().manual_seed(3)
    pigan.render_rays(ev, o, d, 0.88, 1.12, 12, 0, sampling="official", perturb=True, generator=g)
    u = torch.rand(1, 5, 12, generator=torch.Generator().manual_seed(3))
    spacing = 0.24 / 11
    assert torch.allclose(seen[0], torch.linspace(0.88, 1.12, 12) + (u - 0.5) * spacing, atol=1e-7)
    assert seen[0].min() < 0.88 and seen[0].max() > 1.12  # half a spacing beyond the bounds
    # stratified bins (saved runs): bin centres 0.88 + 0.02 (i + 1/2)
    ev, seen = _recorder()
    pigan.render_rays(ev, o, d, 0.88, 1.12, 12, 0, sampling="bins", perturb=False)
    assert torch.allclose(seen[0][0, 0], 0.88 + 0.02 * (torch.arange(12) + 0.5))


def test_official_fine_samples_come_from_the_inner_weights_between_midpoints():
    o, d = torch.zeros(1, 3, 3), F.normalize(torch.randn(1, 3, 3), dim=-1)
    t_lin = torch.linspace(0.88, 1.12, 12)
    mids = 0.5 * (t_lin[1:] + t_lin[:-1])

    def spike(t):  # all the density at the 6th coarse sample (weight ~1 there)
        s = torch.zeros_like(t)
        if t.shape[-1] == 12 and torch.allclose(t[0, 0], t_lin):
            s[..., 5] = 1e4
        return s

    ev, seen = _recorder(spike)
    pigan.render_rays(ev, o, d, 0.88, 1.12, 12, 24, sampling="official", perturb=False)
    fine = seen[1]
    # the 6th sample's bin is [mid_4, mid_5]; eps 1e-5 (twice) on the other 9 bins leaves them
    # 1.8e-4 of the mass: with 24 evenly spaced levels in [0, 1] every fine sample but the two
    # extreme levels (0 and 1 land on the outer midpoints) lies in that bin
    inside = (fine >= mids[4] - 1e-6) & (fine <= mids[5] + 1e-6)
    assert inside.sum(-1).min() >= 22
    assert fine.min() >= mids[0] - 1e-6 and fine.max() <= mids[-1] + 1e-6
    # a spike on the last coarse sample is ignored (its weight is left out): uniform over the bins
    def last(t):
        s = torch.zeros_like(t)
        if t.shape[-1] == 12:
            s[..., -1] = 1e4
        return s

    ev, seen = _recorder(last)
    pigan.render_rays(ev, o, d, 0.88, 1.12, 12, 11, sampling="official", perturb=False)
    assert torch.allclose(seen[1][0, 0], torch.linspace(float(mids[0]), float(mids[-1]), 11), atol=1e-5)


def test_last_back_gives_the_missing_weight_to_the_last_sample():
    o, d = torch.zeros(1, 1, 3), torch.tensor([[[0.0, 0.0, 1.0]]])
    c = torch.tensor([[[[0.2, 0.4, 0.6], [0.9, 0.1, 0.3]]]])

    def ev(o, d, t):
        return torch.tensor([[[2.0, 0.0]]]), c

    out = pigan.render_rays(ev, o, d, 1.0, 1.5, 2, 0, sampling="official", last_back=True)
    w0 = 1 - math.exp(-2.0 * 0.5)  # alpha of the first sample, spacing 0.5; the second has none
    assert torch.allclose(out["color"][0, 0], w0 * c[0, 0, 0] + (1 - w0) * c[0, 0, 1], atol=1e-6)
    assert float(out["opacity"]) == pytest.approx(1.0)
    assert float(out["depth"]) == pytest.approx(w0 * 1.0 + (1 - w0) * 1.5, abs=1e-6)
    plain = pigan.render_rays(ev, o, d, 1.0, 1.5, 2, 0, sampling="official")
    assert torch.allclose(plain["color"][0, 0], w0 * c[0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("sampling", ["bins", "official"])
def test_fast_field_matches_the_reference_values_and_gradients(sampling):
    cfg = _tiny(sampling=sampling, hidden=16, n_layers=3, box_scale=2 / 0.24, eval_last_back=True,
                eval_jitter=True)
    torch.manual_seed(0)
    G = pigan.build(cfg).generator.double()
    G.render_resolution = 6
    x = pigan.sample_inputs(cfg, 2, torch.Generator().manual_seed(1))
    x = {k: v.double() for k, v in x.items()}
    for train in (True, False):
        G.train(train)
        G.density_noise = 0.3 if train else 0.0
        got = []
        for fast in (True, False):
            G.fast = fast
            torch.manual_seed(5)
            y = G(x, return_dict=True)
            loss = (y["image"] ** 2).sum() + y["depth"].sum()
            got.append((y, torch.autograd.grad(loss, list(G.parameters()))))
        (a, ga), (b, gb) = got
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-10, rtol=0)
        for u, v in zip(ga, gb):
            torch.testing.assert_close(u, v, atol=1e-9, rtol=1e-7)
        assert a["image"].std() > 0.01
    with torch.no_grad():  # the in-place path without gradients
        G.fast = True
        c = G(x)
        G.fast = False
        torch.testing.assert_close(c, G(x), atol=1e-10, rtol=0)


def test_eval_jitter_is_reproducible_and_within_half_a_spacing():
    cfg = _tiny(sampling="official", eval_jitter=True, n_importance=0)
    G = pigan.build(cfg).generator.eval()
    x = pigan.sample_inputs(cfg, 2, torch.Generator().manual_seed(1), train=False)
    with torch.no_grad():
        a, b = G(x), G(x)
        still = pigan.PiganGenerator(dataclasses.replace(cfg, eval_jitter=False))
        still.load_state_dict(G.state_dict())
        c = still.eval()(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    ev, seen = _recorder()
    pigan.render_rays(ev, torch.zeros(1, 4, 3), torch.ones(1, 4, 3), 0.5, 1.5, 4, 0, sampling="official",
                      perturb=True, generator=torch.Generator().manual_seed(0))
    assert ((seen[0] - torch.linspace(0.5, 1.5, 4)).abs() <= 1.0 / 3 / 2 + 1e-7).all()


def test_locked_view_direction_and_official_pixel_grid():
    cfg = pigan.make_config("celeba64", lock_view_dependence=True)
    # official (0, 0, -1) in its y-up world is its frontal camera's viewing direction; ours is on +y
    assert torch.allclose(pigan.lock_direction(cfg), torch.tensor([0.0, -1.0, 0.0]), atol=1e-7)
    torch.manual_seed(0)
    small = dataclasses.replace(pigan.make_config("tiny16"), lock_view_dependence=True)
    G = pigan.build(small).generator.double()
    f = G.field
    z = torch.randn(2, small.z_dim, dtype=torch.float64)
    freqs, phases = f.modulation(z)
    o, d = torch.zeros(2, 5, 3, dtype=torch.float64), F.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)
    t = torch.rand(2, 5, 4, dtype=torch.float64) + 0.5
    lock = pigan.lock_direction(small).double()
    s, rgb = pigan.fast_field(f, freqs, phases, lock)(o, d, t)
    pts = (o.unsqueeze(2) + t.unsqueeze(-1) * d.unsqueeze(2)).reshape(2, 20, 3)
    s2, rgb2 = f(pts, lock.expand(2, 20, 3), freqs=freqs, phases=phases)
    torch.testing.assert_close(rgb, rgb2.reshape(2, 5, 4, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(s, s2.reshape(2, 5, 4), atol=1e-12, rtol=0)
    # official grid: pixel i of n at tan(fov / 2) (2 i / (n - 1) - 1) in camera space (corners on the fov)
    for grid, scale in (("edges", 1.0), ("centres", 7 / 8)):
        Gc = pigan.PiganGenerator(dataclasses.replace(pigan.make_config("celeba64"), ray_grid=grid))
        K = Gc.intrinsics(8)
        _, dirs = image_rays(K, torch.eye(4), 8, 8)
        corner = dirs[0, 0] / -dirs[0, 0, 2]
        tan = math.tan(math.radians(12) / 2)
        assert torch.allclose(corner, torch.tensor([-tan * scale, tan * scale, -1.0]), atol=1e-6)


@pytest.mark.parametrize("lock", [False, True])
def test_fast_field_blocks_without_gradients_match_the_reference(lock):
    torch.manual_seed(0)
    cfg = _tiny(hidden=16, n_layers=3, lock_view_dependence=lock)
    f = pigan.build(cfg).generator.field.double()
    z = torch.randn(3, cfg.z_dim, dtype=torch.float64)
    freqs, phases = f.modulation(z)
    o = torch.randn(3, 7, 3, dtype=torch.float64) * 0.1
    d = F.normalize(torch.randn(3, 7, 3, dtype=torch.float64), dim=-1)
    t = torch.rand(3, 7, 5, dtype=torch.float64) + 0.5
    ld = pigan.lock_direction(cfg).double() if lock else None
    want = pigan.reference_field(f, freqs, phases, ld)(o, d, t)
    with torch.no_grad():
        for block in (5, 11, 1024):  # one ray, two rays (7 = 2 + 2 + 2 + 1), all rays per block
            got = pigan.fast_field(f, freqs, phases, ld, block_points=block)(o, d, t)
            for u, v in zip(got, want):
                torch.testing.assert_close(u, v.detach(), atol=1e-12, rtol=0)
