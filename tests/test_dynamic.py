"""Dynamic scenes: the D-NeRF data format, the built-in dynamic scene, D-NeRF / T-NeRF fields (with
and without time CAM) and the dnerf / tnerf methods end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aware3d.data import DataError, load_scene
from aware3d.data.dynamic import dynamic_primitives, synth_dynamic_scene
from aware3d.fields.dynamic import DeformationMLP, DynamicField, TimeNeRFMLP
from aware3d.fields.nerf import NeRFMLP


@pytest.fixture(scope="module")
def dyn(tmp_path_factory):
    root = tmp_path_factory.mktemp("dyn") / "scene"
    synth_dynamic_scene(root, n_train=24, n_val=2, n_test=4, resolution=24, progress=False)
    return root


# -- data -----------------------------------------------------------------------------------------
def test_dynamic_scene_frames_carry_times_and_the_scene_moves(dyn):
    train, test = load_scene(dyn, "train"), load_scene(dyn, "test")
    assert train.times is not None and torch.allclose(train.times, torch.linspace(0, 1, 24), atol=1e-6)
    # held-out moments lie between training times, never on one
    step = 1 / 23
    frac = (test.times / step) % 1
    assert ((frac - 0.5).abs() < 1e-3).all()
    # the scene at t = 0 and t = 1 differs (the sphere goes round, the box turns, the cylinder grows)
    p0, p1 = dynamic_primitives(0.0), dynamic_primitives(0.5)
    assert not np.allclose(p0[0].center, p1[0].center) and p1[2].size[2] > p0[2].size[2]
    from aware3d.data.synth import render_views
    from aware3d.render.cameras import intrinsics_from_fov

    K = intrinsics_from_fov(40.0, 24, 24)
    a = render_views(p0, K, train.c2w[:1], 24, 24)["rgb"]
    b = render_views(p1, K, train.c2w[:1], 24, 24)["rgb"]
    assert (a - b).abs().max() > 0.3
    # the written frame is the scene at its time (frame 0 at t = 0)
    assert torch.allclose(train.images[0] * train.alphas[0, ..., None], (a[0] * render_views(
        p0, K, train.c2w[:1], 24, 24)["mask"][0, ..., None]), atol=2 / 255)


def test_times_are_checked(dyn, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(dyn, root)
    f = root / "transforms_train.json"
    doc = json.loads(f.read_text())
    doc["frames"][3]["time"] = 1.5
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"transforms_train.json: frame 3 .*time is 1.5, expected a number in \[0, 1\]"):
        load_scene(root, "train")
    del doc["frames"][3]["time"]
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="frame 3 .*has no 'time' while other frames do"):
        load_scene(root, "train")


# -- fields ---------------------------------------------------------------------------------------
def test_deformation_is_zero_at_time_zero_and_learns_elsewhere():
    net = DeformationMLP(depth=3, width=32)
    x = torch.randn(5, 3)
    t = torch.tensor([[0.0], [0.0], [0.3], [0.7], [1.0]])
    dx = net(x, t)
    assert dx.shape == (5, 3) and (dx[:2] == 0).all() and (dx[2:].abs() > 0).all()
    dx.sum().backward()
    assert net.out.weight.grad.abs().sum() > 0
    assert (DeformationMLP(depth=3, width=32, zero_canonical=False)(x, t)[:2].abs() > 0).all()


def test_paper_deformation_network_has_d_nerf_widths():
    net = DeformationMLP()  # 8 x 256, gamma(x) 63 + gamma(t) 21, gamma(x) again after the 5th layer
    ins = [layer.in_features for layer in net.layers]
    assert ins == [84, 256, 256, 256, 256, 319, 256, 256] and net.out.out_features == 3
    expected = 84 * 256 + 256 + 6 * (256 * 256 + 256) + (319 * 256 + 256) + 256 * 3 + 3
    assert sum(p.numel() for p in net.parameters()) == expected


def test_time_nerf_without_time_or_cam_is_the_nerf_mlp():
    torch.manual_seed(0)
    ref = NeRFMLP(depth=4, width=32)
    net = TimeNeRFMLP(depth=4, width=32)
    net.load_state_dict(ref.state_dict())
    x, d = torch.randn(6, 3), torch.nn.functional.normalize(torch.randn(6, 3), dim=-1)
    t = torch.rand(6, 1)
    s0, c0 = ref(x, d)
    s1, c1 = net.forward_t(x, d, t)
    assert torch.allclose(s0, s1) and torch.allclose(c0, c1)
    # T-NeRF takes gamma(t) (L = 10: 21 numbers) beside gamma(x) (63)
    tn = TimeNeRFMLP(depth=8, width=256, time_freqs=10)
    assert tn.trunk[0].in_features == 84 and tn.trunk[5].in_features == 256 + 84


def test_time_cam_starts_as_identity_and_modulates_by_hand():
    torch.manual_seed(1)
    plain = TimeNeRFMLP(depth=3, width=16)
    cam = TimeNeRFMLP(depth=3, width=16, cam_res=5)
    cam.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(4, 3)
    t = torch.tensor([[0.0], [0.25], [0.6], [1.0]])
    assert torch.allclose(plain.density_t(x, t), cam.density_t(x, t), atol=1e-6)
    # scale 2 at the grid cell of t = 1 (coordinate 2t - 1 = 1, the last of 5 cells): the first layer's
    # pre-activation doubles exactly there, and at t = 0.875 (halfway to the previous cell) by 1.5
    c = cam.cams[0]
    assert c.scale.shape == (1, 5) and c.shared  # one scale per grid point for all channels (official)
    with torch.no_grad():
        c.scale.view(-1)[-1] = 2.0
    from aware3d.render.encodings import nerf_encoding

    pre = plain.trunk[0](nerf_encoding(x, 10))
    got = c(pre, 2 * torch.tensor([[1.0]] * 4) - 1)
    assert torch.allclose(got, 2 * pre, atol=1e-5)
    got = c(pre, 2 * torch.tensor([[0.875]] * 4) - 1)
    assert torch.allclose(got, 1.5 * pre, atol=1e-5)


def test_dynamic_field_density_depends_on_time_only_through_the_warp():
    torch.manual_seed(2)
    f = DynamicField("dnerf", depth=3, width=32, deform_depth=2, deform_width=16)
    x = torch.randn(7, 3)
    d = torch.nn.functional.normalize(torch.randn(7, 3), dim=-1)
    # at t = 0 the field is the canonical NeRF itself (raw densities compared: relu hides a young field)
    assert torch.allclose(f(x, d, 0.0)[0], f.nerf.forward_t(x, d, torch.zeros(7, 1))[0])
    assert not torch.allclose(f(x, d, 0.0)[0], f(x, d, 0.8)[0])
    assert torch.equal(f.density(x, 0.3), torch.relu(f(x, d, 0.3)[0]))
    g = DynamicField("tnerf", depth=3, width=32)
    assert g.deform is None and not torch.allclose(g(x, d, 0.0)[0], g(x, d, 0.8)[0])
    with pytest.raises(ValueError, match="variant"):
        DynamicField("xnerf")


# -- methods --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,cam", [("dnerf", False), ("tnerf", True)])
def test_train_eval_and_render_from_the_cli(name, cam, dyn, tmp_path, capsys):
    from aware3d.cli import main

    run = tmp_path / "run"
    args = ["train", name, "--data", str(dyn), "--preset", "tiny", "--max-steps", "12", "--out", str(run)]
    assert main(args + (["--cam"] if cam else [])) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["variant"] == name and cfg["config"]["cam"] is cam and cfg["scene"]["dynamic"] is True
    assert main(["eval", str(run), "--max-views", "1"]) == 0
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["n_views"] == 1 and math.isfinite(m["psnr"])
    assert main(["render", str(run), "--program", "play-time", "--frames", "2", "--resolution", "16"]) == 0
    assert (run / "render" / "play-time" / "rgb.mp4").is_file()
    capsys.readouterr()
    assert main(["render", str(run), "--program", "time-orbit", "--frames", "2", "--time", "2"]) != 0
    assert "--time: expected a number in [0, 1], got 2" in capsys.readouterr().err


def test_a_static_scene_is_refused_with_the_reason(tmp_path):
    import aware3d
    from aware3d.data.synth import synth_scene

    synth_scene(tmp_path / "static", n_views=4, resolution=8, progress=False)
    with pytest.raises(ValueError, match=r"dynamic scenes, whose frames carry a 'time'.*--dynamic"):
        aware3d.method("dnerf").train(str(tmp_path / "static"), out=str(tmp_path / "run"), preset="tiny",
                                      max_steps=1, progress=False)


def test_the_moment_changes_the_render(dyn, tmp_path):
    import aware3d

    run_dir = aware3d.method("dnerf").train(str(dyn), out=str(tmp_path / "run"), preset="tiny", max_steps=3,
                                            progress=False, val_every=0)
    run = aware3d.load(run_dir, device="cpu")
    c2w = run.orbit_camera(20.0)
    seen = []
    forward = run.model.forward
    run.model.forward = lambda *a, **k: (seen.append(k.get("times")), forward(*a, **k))[1]
    run.render(c2w, width=12, time=0.9)
    assert seen and all(t == 0.9 for t in seen)
    seen.clear()
    run.render(c2w, width=12)  # the run's default moment
    assert seen and all(t == run.time == 0.0 for t in seen)
    with pytest.raises(ValueError, match=r"time: expected a number in \[0, 1\]"):
        run.render(c2w, width=12, time=-0.5)


# -- hash-grid backbone (--backbone ngp) --------------------------------------------------------------
def _hash_field(variant="dnerf", cam_res=None, seed=0):
    from aware3d.fields.dynamic import DynamicHashField

    torch.manual_seed(seed)
    return DynamicHashField(torch.tensor([-1.0, -1, -1, 1, 1, 1]), variant=variant, cam_res=cam_res, levels=4,
                            log2_table=10, base_res=4, max_res=32, hidden=16, backend="reference")


def test_backbone_settings_resolve_per_backbone():
    import aware3d

    m = aware3d.method("dnerf")
    mlp = m.make_config("cpu")
    assert mlp["backbone"] == "mlp" and (mlp["deform_depth"], mlp["deform_width"], mlp["pos_freqs"]) == (8, 256, 10)
    assert mlp["lr"] == 5e-4
    ngp = m.make_config("cpu", [("backbone", "ngp"), ("deform_width", "32")])
    assert (ngp["deform_depth"], ngp["deform_width"], ngp["pos_freqs"], ngp["time_freqs"]) == (4, 32, 4, 4)
    assert ngp["lr"] == 1e-2 and ngp["samples_per_batch"] == 2 ** 16 and ngp["log2_table"] == 19
    assert aware3d.method("tnerf").make_config("tiny", [("backbone", "ngp")])["log2_table"] == 14
    with pytest.raises(ValueError, match="backbone"):
        m.make_config("tiny", [("backbone", "xyz")])


def test_hash_deformation_is_zero_at_time_zero_and_starts_small():
    f = _hash_field("dnerf")
    x = torch.rand(64, 3) * 2 - 1
    t = torch.cat([torch.zeros(16), torch.rand(48) * 0.9 + 0.1])[:, None]
    dx = f.deform(x, t)
    assert (dx[:16] == 0).all() and (dx[16:].abs() > 0).any()
    assert dx.abs().max() < 1e-2  # CAM's warp: output weights uniform in [0, 1e-4]
    # CAM's nerfacc warp: gamma(x) 27 + gamma(t) 9 in, 4 x 64, the whole input again after the 3rd layer
    assert [layer.in_features for layer in f.deform.layers] == [36, 64, 64, 64 + 36]
    # at t = 0 the field is the canonical hash field (density read at the undeformed points)
    from aware3d.fields.nerf import HashGridField

    ref = HashGridField(f.aabb, levels=4, log2_table=10, base_res=4, max_res=32, hidden=16, backend="reference")
    with torch.no_grad():  # a grid with content and a deformation past its start
        for p in f.grid.parameters():
            p.normal_()
        f.deform.out.weight.normal_(0.0, 0.1)
    ref.load_state_dict(f.state_dict(), strict=False)
    assert torch.allclose(f.density(x, 0.0), ref.density(x))
    assert not torch.allclose(f.density(x, 0.0), f.density(x, torch.full((64,), 0.7)))


def test_hash_tnerf_takes_time_beside_the_grid_features_and_cam_starts_as_identity():
    f = _hash_field("tnerf")
    with torch.no_grad():
        for p in f.grid.parameters():
            p.normal_()
    assert f.deform is None and f.density_mlp[0].in_features == f.grid.out_dim + 9
    x = torch.rand(32, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1)
    assert not torch.allclose(f.density(x, 0.1), f.density(x, 0.9))
    g = _hash_field("tnerf", cam_res=5)
    g.load_state_dict(f.state_dict(), strict=False)
    assert g.time_cam.scale.shape == (1, 5)  # one scale per grid point, shared by the channels (official)
    t = torch.rand(32)
    s0, c0 = f(x, d, t)
    s1, c1 = g(x, d, t)
    assert torch.allclose(s0, s1, rtol=1e-5, atol=1e-6) and torch.allclose(c0, c1, atol=1e-6)
    with torch.no_grad():  # a scale of 0 at every cell: the density MLP sees only its bias after the CAM
        g.time_cam.scale.zero_()
    assert not torch.allclose(g.density(x, t), f.density(x, t))


def test_hash_occupancy_grid_holds_the_union_over_time(dyn):
    """An object that moves: the grid, refreshed with densities at random moments, marks the
    object's cells at t = 0 and at t = 0.5 (opposite sides of its circle) and not the empty corners."""
    import aware3d

    torch.manual_seed(0)
    m = aware3d.method("dnerf")
    cfg = m.make_config("tiny", [("backbone", "ngp")])
    scene = {"aabb": [-1.0, -1, -1, 1, 1, 1], "near": 0.1, "far": 6.0, "background": [1.0, 1, 1]}
    model = m.build(cfg, scene, device="cpu")
    centre = lambda t: torch.stack([0.6 * torch.cos(2 * math.pi * t), 0.6 * torch.sin(2 * math.pi * t),
                                    torch.zeros_like(t)], -1)
    model.field.density = lambda x, t: 100.0 * ((x - centre(torch.as_tensor(t).reshape(-1))).norm(dim=-1) < 0.25).float()
    for _ in range(60):  # refreshes of every cell (the warm-up's), each point at its own random moment
        model.before_step(0)
    occ = model.occ.is_occupied
    assert occ(torch.tensor([[0.6, 0.0, 0.0], [-0.6, 0.0, 0.0], [0.0, 0.6, 0.0]])).all()
    assert not occ(torch.tensor([[0.9, 0.9, 0.9], [-0.9, -0.9, 0.9], [0.0, 0.0, 0.8]])).any()


@pytest.mark.parametrize("name,cam", [("dnerf", False), ("tnerf", True)])
def test_hash_backbone_trains_renders_and_keeps_dx_zero_at_time_zero(name, cam, dyn, tmp_path):
    import aware3d
    from aware3d.methods.dnerf import HashModel

    over = [("backbone", "ngp")] + ([("cam", "true")] if cam else [])
    run_dir = aware3d.method(name).train(str(dyn), out=str(tmp_path / "run"), preset="tiny", max_steps=8,
                                         progress=False, val_every=0, overrides=over)
    run = aware3d.load(run_dir, device="cpu")
    assert isinstance(run.model, HashModel) and run.config["backbone"] == "ngp" and run.config["cam"] is cam
    assert (run.model.field.time_cam is not None) is cam
    c2w = run.orbit_camera(20.0)
    a, b = run.render(c2w, width=12, time=0.0), run.render(c2w, width=12, time=1.0)
    assert a["color"].shape == (12, 12, 3) and torch.isfinite(a["color"]).all()
    assert not torch.equal(a["color"], b["color"])
    if name == "dnerf":  # trained: the deformation moved away from ~0 but is still 0 at t = 0
        x = torch.rand(50, 3) - 0.5
        f = run.model.field.deform
        assert (f(x, torch.zeros(50, 1)) == 0).all() and f(x, torch.full((50, 1), 0.5)).abs().max() > 1e-4


def test_a_static_object_looks_the_same_at_every_time():
    """The dynamic scene is consistent: from one pose, the pixels of the object that never moves (the
    purple sphere at the origin) agree at every time wherever nothing moving hides them."""
    from aware3d.data.synth import render_views
    from aware3d.render.cameras import intrinsics_from_fov, look_at

    K = intrinsics_from_fov(40.0, 96, 96)
    c2w = look_at(torch.tensor([[1.5, -1.2, 3.2]]))  # from above: the small sphere shows between the others
    static = len(dynamic_primitives(0.0)) - 1
    renders = [render_views(dynamic_primitives(t), K, c2w, 96, 96) for t in (0.0, 0.3, 0.55, 0.8)]
    ref = renders[0]
    seen = ref["index"][0] == static
    assert int(seen.sum()) > 20  # the static sphere is in view
    for r in renders[1:]:
        both = seen & (r["index"][0] == static)
        assert int(both.sum()) > 10
        assert torch.equal(r["rgb"][0][both], ref["rgb"][0][both])
        assert torch.equal(r["depth"][0][both], ref["depth"][0][both])
    # and the moving ones do move: some pixel's object changes between two times
    assert not torch.equal(renders[0]["index"], renders[2]["index"])


def test_precrop_draws_the_central_crop_as_d_nerf_does():
    from aware3d.methods.dnerf import PRESETS, resolve_config
    from aware3d.train.recon import center_crop_indices

    # D-NeRF's precrop: H // 2 - dH .. H // 2 + dH with dH = int(H // 2 * frac), the same for W
    idx = center_crop_indices(2, width=8, height=6, frac=0.5)
    rows, cols = (idx % 48) // 8, idx % 8
    assert sorted(set(rows.tolist())) == [2, 3] and sorted(set(cols.tolist())) == [2, 3, 4, 5]
    assert idx.numel() == 2 * 2 * 4 and int((idx // 48).max()) == 1
    with pytest.raises(ValueError, match="precrop_frac"):
        center_crop_indices(1, 8, 6, 0.0)
    cfg = resolve_config(dict(PRESETS["cpu"]))
    assert cfg["precrop_steps"] == 500 and cfg["precrop_frac"] == 0.5  # official precrop_iters / frac
    assert resolve_config(dict(PRESETS["cpu"], backbone="ngp"))["precrop_steps"] == 0
    old = {k: v for k, v in PRESETS["cpu"].items() if k != "precrop_steps"}
    assert resolve_config(old)["precrop_steps"] == 0  # runs saved before the setting
