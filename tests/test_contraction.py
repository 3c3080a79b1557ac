"""Scene contraction (mip-NeRF 360, L-inf) on the hash-grid method, and the learnt background."""
import math

import pytest
import torch

from aware3d.kernels.marching import (OccupancyGrid, contract, contraction_jacobian, march_rays,
                                      uncontract)
from aware3d.methods import ngp


def test_contract_hand_computed_points():
    inside = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.3, 1.0], [-1.0, 1.0, 0.2]])
    assert torch.equal(contract(inside), inside)
    u = torch.tensor([[3.0, 0.0, 0.0], [2.0, 2.0, 1.0], [0.0, -4.0, 2.0]])
    expected = torch.tensor([[5 / 3, 0.0, 0.0], [1.5, 1.5, 0.75], [0.0, -1.75, 0.875]])
    assert torch.allclose(contract(u), expected, atol=1e-6)
    far = contract(torch.tensor([[1e8, 3e7, -2e7]]))
    assert far.abs().max() <= 2.0 and torch.allclose(far.abs().max(), torch.tensor(2.0))


def test_contract_is_continuous_at_the_boundary_and_inverts():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(1000, 3, generator=g)
    d = d / d.abs().amax(dim=-1, keepdim=True)  # ||d||_inf = 1: on the inner cube's surface
    for eps in (1e-3, 1e-5):
        a, b = contract(d * (1 - eps)), contract(d * (1 + eps))
        assert (a - b).abs().max() < 3 * eps
    u = torch.randn(1000, 3, generator=g) * 10
    assert torch.allclose(uncontract(contract(u)), u, rtol=1e-4, atol=1e-5)
    # the Jacobian factor: 1 inside, r^2 at ||u|| = r outside (contracted norm 2 - 1/r)
    y = contract(torch.tensor([[0.5, 0.0, 0.0], [4.0, 1.0, 0.0]]))
    assert torch.allclose(contraction_jacobian(y), torch.tensor([1.0, 16.0]), rtol=1e-5)


def _contracted_grid(res=16, seed=0):
    grid = OccupancyGrid((-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), resolution=res, contract=True)
    gen = torch.Generator().manual_seed(seed)
    grid.binary.copy_(torch.rand(res, res, res, generator=gen) < 0.4)
    return grid


@pytest.mark.parametrize("backend", ["reference", "compiled"])
def test_contracted_marching_goes_beyond_the_box_and_skips_empty_cells(backend):
    if backend == "compiled":
        from aware3d.kernels import _build

        if _build.get_extension(torch.device("cpu")) is None:
            pytest.skip("compiled CPU kernels unavailable here")
    grid = _contracted_grid()
    gen = torch.Generator().manual_seed(1)
    o = torch.randn(200, 3, generator=gen) * 0.5
    d = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=-1)
    ri, t0, t1 = march_rays(o, d, 0.01, 1000.0, grid, step_size=0.02, max_samples_per_ray=400,
                            backend=backend)
    x = o[ri] + (0.5 * (t0 + t1))[:, None] * d[ri]
    assert ri.numel() > 1000
    assert bool(grid.is_occupied(x).all())                    # none in an empty cell
    assert float(x.abs().amax(dim=-1).max()) > 50.0           # far beyond the inner box
    assert bool((t1 > t0).all()) and float(t1.max()) <= 1000.0
    # with every cell empty nothing comes back
    grid.binary.zero_()
    assert march_rays(o, d, 0.01, 1000.0, grid, step_size=0.02, backend=backend)[0].numel() == 0


def test_contracted_steps_are_fewer_than_cone_steps():
    grid = _contracted_grid()
    grid.binary.fill_(True)
    o = torch.zeros(4, 3)
    d = torch.eye(3)[[0, 1, 2, 0]]
    uniform = march_rays(o, d, 0.0, 1000.0, grid, step_size=0.02, max_samples_per_ray=100000,
                         backend="reference")[0].numel() / 4
    cone = march_rays(o, d, 0.0, 1000.0, grid, step_size=0.02, max_samples_per_ray=100000,
                      cone_angle=1 / 256, contract_steps=False, backend="reference")[0].numel() / 4
    # inside: 1 / 0.02 = 50 steps; outside: about 1 / 0.02 more (uniform in contracted space)
    assert 80 < uniform < 130
    assert cone > 3 * uniform


def test_contracted_occupancy_update_scales_density_by_the_jacobian():
    grid = OccupancyGrid((-1.0, -1.0, -1.0, 1.0, 1.0, 1.0), resolution=8, contract=True)
    grid.update(lambda x: torch.ones(x.shape[0]), step=0, decay=0.0, threshold=1e9, warmup_steps=1)
    centres = grid.cell_centers()
    assert float(centres.abs().max()) == pytest.approx(4.0)  # outer centres: 1 / (2 - 1.75)
    assert torch.allclose(grid.density[3:5, 3:5, 3:5], torch.ones(2, 2, 2))  # inside: sigma itself
    assert float(grid.density[0, 0, 0]) >= 4.0  # outermost shell: r^2 >= (1 / (2 - 1.5))^2


def _scene(has_alpha=None):
    scene = {"aabb": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], "near": 0.05, "far": 6.0,
             "background": [1.0, 1.0, 1.0], "orbit_radius": 2.0, "width": 16, "height": 16}
    if has_alpha is not None:
        scene["has_alpha"] = has_alpha
    return scene


@pytest.mark.parametrize("has_alpha,contracted,bg", [(True, False, "fixed"), (False, True, "learnt"),
                                                     (None, False, "fixed")])
def test_auto_resolution_from_the_scene(has_alpha, contracted, bg):
    cfg = ngp.METHOD.make_config("tiny")
    assert cfg["contract"] == "auto" and cfg["background_model"] == "auto"
    model = ngp.METHOD.build(cfg, _scene(has_alpha), "cpu")
    # resolved in place: the run's config keeps them and a loaded run rebuilds the same model
    assert cfg["contract"] is contracted and cfg["background_model"] == bg
    assert model.contract is contracted and (model.bg_model is not None) == (bg == "learnt")
    again = ngp.METHOD.build(dict(cfg), _scene(not contracted), "cpu")
    again.load_state_dict(model.state_dict())
    assert again.contract is contracted


def test_every_preset_keeps_auto_and_legacy_configs_stay_off():
    for p in ngp.PRESETS.values():
        assert p["contract"] == "auto" and p["background_model"] == "auto"
    cfg = ngp.METHOD.make_config("tiny")
    for k in ("contract", "background_model", "far_scale", "cone_angle"):
        del cfg[k]  # a run written before these settings
    model = ngp.METHOD.build(cfg, _scene(False), "cpu")
    assert not model.contract and model.bg_model is None and "contract" not in cfg


def test_learnt_background_gradient_reaches_its_parameters():
    cfg = ngp.METHOD.make_config("tiny", [("background_model", "learnt"), ("contract", False)])
    model = ngp.METHOD.build(cfg, _scene(True), "cpu")
    model.occ.binary.zero_()  # every ray sees only the background
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    out = model(torch.zeros(64, 3) + 3.0, d, training=True)
    assert out["n_samples"] == 0
    loss = model.loss(out, torch.rand(64, 3))
    loss.backward()
    grads = [p.grad for p in model.bg_model.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # and the optimiser updates it
    opt_params = {id(p) for g in model.make_optimizer().param_groups for p in g["params"]}
    assert all(id(p) in opt_params for p in model.bg_model.parameters())


def test_tiny_contracted_run_trains_and_renders_finite_images():
    torch.manual_seed(0)
    cfg = ngp.METHOD.make_config("tiny", [("samples_per_batch", 2 ** 11), ("init_rays", 128)])
    scene = _scene(False)
    model = ngp.METHOD.build(cfg, scene, "cpu")
    assert model.contract and model.bg_model is not None
    # unbounded-ish: cameras on a sphere of radius 2 looking out and in; the colour depends on
    # direction (a far "sky") and a red ball near the origin
    g = torch.Generator().manual_seed(0)
    o = torch.nn.functional.normalize(torch.randn(4096, 3, generator=g), dim=-1) * 2.0
    d = torch.nn.functional.normalize(torch.randn(4096, 3, generator=g), dim=-1)
    b = (o * d).sum(-1)
    hit = (b * b - (o * o).sum(-1) + 0.25 > 0) & (b < 0)
    target = torch.where(hit[:, None], torch.tensor([0.9, 0.1, 0.1]), 0.5 + 0.4 * d)
    opt = model.make_optimizer()
    losses = []
    for step in range(12):
        model.before_step(step)
        idx = torch.randint(0, 4096, (model.n_rays,), generator=g)
        out = model(o[idx], d[idx], training=True)
        loss = model.loss(out, target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.next_batch_rays(out["n_samples"])
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    with torch.no_grad():
        img = model.eval()(o[:256].reshape(16, 16, 3), d[:256].reshape(16, 16, 3))
    assert img["color"].shape == (16, 16, 3) and torch.isfinite(img["color"]).all()
    assert torch.isfinite(img["depth"]).all()
    # density still takes world points, near and far (mesh export, point clouds)
    sig = model.density(torch.tensor([[0.0, 0.0, 0.0], [50.0, -3.0, 1e4]]))
    assert sig.shape == (2,) and torch.isfinite(sig).all()
