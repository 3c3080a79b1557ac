"""CIPS-3D: modulated FC layers, the shallow NeRF + per-pixel decoder, partial gradient
backpropagation, the auxiliary discriminator, and a 20-step run through
``aware3d.methods.cips3d.train`` with its render programs and mesh export."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import aware3d

from aware3d.fields.cips import CIPSDecoder, ModulatedFC, modulated_fc
from aware3d.methods import cips3d as cm


def test_modulated_fc_hand_values():
    # W = [[3, 4]], s = (1, 1): demodulated row = (3, 4) / 5 = (0.6, 0.8); x = (1, 1) -> 1.4.
    # Without demodulation: 3 + 4 = 7. With s = (2, 0): row (6, 0) -> (1, 0): x = (1, 1) -> 1.
    W = torch.tensor([[3.0, 4.0]])
    x = torch.ones(1, 1, 2)
    assert torch.allclose(modulated_fc(x, W, torch.ones(1, 2)), torch.tensor([[[1.4]]]), atol=1e-6)
    assert torch.allclose(modulated_fc(x, W, torch.ones(1, 2), demodulate=False), torch.tensor([[[7.0]]]))
    assert torch.allclose(modulated_fc(x, W, torch.tensor([[2.0, 0.0]])), torch.tensor([[[1.0]]]), atol=1e-6)


def test_demodulation_gives_unit_variance():
    # StyleGAN2 eq. 3: for i.i.d. unit-variance inputs, Var(y_o) = sum_i w''_oi^2 = 1 for every
    # output and every style. 40,000 pixels: the sample variance has std sqrt(2 / 40000) = 0.7%,
    # so 5% tolerance. Without demodulation the variance is sum_i (s_i w_oi)^2, far from 1.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40000, 64, generator=g)
    W = torch.randn(16, 64, generator=g) * 3
    s = torch.rand(3, 64, generator=g) * 3 + 0.1
    var = modulated_fc(x, W, s).var(1)
    assert var.shape == (3, 16) and torch.allclose(var, torch.ones(3, 16), atol=0.05)
    raw = modulated_fc(x, W, s, demodulate=False).var(1)
    assert (raw - 1).abs().min() > 1.0


def test_decoder_shapes_and_trgb_sum():
    torch.manual_seed(0)
    dec = CIPSDecoder(in_dim=8, hidden=16, n_blocks=3, w_dim=12)
    f, w = torch.randn(2, 50, 8), torch.randn(2, 12)
    out = dec(f, w)
    assert out.shape == (2, 50, 3) and out.abs().max() < 1
    # the image is tanh of the sum of the three tRGB outputs
    h, rgb = f, 0
    for (a, b), t in zip(dec.blocks, dec.to_rgb):
        h = b(a(h, w), w)
        rgb = rgb + t(h, w)
    assert torch.allclose(out, torch.tanh(rgb), atol=1e-6)
    layer = ModulatedFC(8, 4, 12)
    assert torch.allclose(layer.affine(torch.zeros(1, 12)), torch.ones(1, 8))   # style starts at 1


def _tiny(**kw):
    torch.manual_seed(0)
    return cm.build(cm.make_config("tiny", **kw))


def test_generator_shapes_and_gradients():
    m = _tiny()
    G, D = m.generator, m.discriminator
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    assert x["c2w"].shape == (2, 4, 4) and x["ray_perm"].shape == (2, 64)   # 8^2 NeRF rays
    assert torch.allclose(x["c2w"][:, :3, 3].norm(dim=-1), torch.full((2,), 6.0))  # radius 6
    out = G(x, return_aux=True)
    assert out["image"].shape == (2, 3, 32, 32) and out["aux"].shape == (2, 3, 8, 8)
    assert out["features"].shape == (2, 8, 8, 8) and out["image"].abs().max() <= 1
    lo, hi = m.cfg.depth_range          # depth = sum_i w_i t_i <= far
    assert out["depth"].min() >= 0 and out["depth"].max() <= hi + 1e-4
    loss, scalars = m.generator_objective(G, D, x)
    loss.backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == [] and set(scalars) == {"loss_G", "loss_G_aux"}
    # without the auxiliary loss nothing trains the NeRF's own RGB head
    m0 = _tiny(aux_weight=0.0)
    m0.generator_objective(m0.generator, m0.discriminator, x)[0].backward()
    assert m0.generator.aux_to_rgb.weight.grad is None
    # D step: both critics learn, R1 on both
    G.zero_grad()
    ld, sd = m.discriminator_objective(G, D, torch.rand(2, 3, 32, 32) * 2 - 1, x, r1_weight=10.0)
    ld.backward()
    assert {"R1", "R1_aux", "loss_D_aux"} <= set(sd)
    assert D.main.conv_out.weight.grad.abs().sum() > 0 and D.aux.conv_out.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in G.parameters())


def test_hierarchical_sampling_path():
    m = _tiny(n_importance=4)
    x = m.sample_inputs(2, torch.Generator().manual_seed(1), train=False)
    with torch.no_grad():
        fmap, depth = m.generator.eval().render_features(x)
    assert fmap.shape == (2, 8, 8, 8) and torch.isfinite(fmap).all()


def test_chunked_inference_equals_one_pass():
    """At inference the NeRF rays and the decoder's pixels go in bounded chunks (odd sizes, so the
    last chunk is partial); the image and depth equal a single pass."""
    x = _tiny(n_importance=4).sample_inputs(3, torch.Generator().manual_seed(2), train=False)
    outs = []
    for chunk, decode_chunk in [(10 ** 6, 10 ** 6), (21, 50)]:
        torch.manual_seed(0)
        m = _tiny(n_importance=4, chunk=chunk, decode_chunk=decode_chunk)
        with torch.no_grad():
            outs.append(m.generator.eval()(x, return_aux=True))
    for k in ("image", "depth", "features"):
        assert torch.allclose(outs[0][k], outs[1][k], atol=1e-5), k


def test_partial_backprop_reaches_nerf_only_through_selected_rays():
    # grad_rays = 16 of the 64 NeRF rays per image. A loss on the other 48 rays must give the NeRF
    # (and its mapping network) exactly zero gradient; a loss on the 16 selected ones must not.
    # The forward values are those of the full-gradient render (same rays, same field; eval mode:
    # no jitter of the samples).
    m = _tiny()
    G = m.generator.eval()
    x = m.sample_inputs(2, torch.Generator().manual_seed(0))
    perm = x["ray_perm"]
    sel = torch.zeros(2, 64, dtype=torch.bool)
    sel.scatter_(1, perm[:, :16], True)
    fmap, _ = G.render_features(x)
    full, _ = G.render_features({k: v for k, v in x.items() if k != "ray_perm"})
    assert torch.allclose(fmap, full, atol=1e-6)
    flat = fmap.permute(0, 2, 3, 1).reshape(2, 64, -1)
    nerf_params = list(G.nerf.parameters())

    def grads(mask):
        G.zero_grad()
        (flat * mask.unsqueeze(-1)).pow(2).sum().backward(retain_graph=True)
        return [p.grad for p in nerf_params]

    off = grads((~sel).float())
    assert all(g is None or g.abs().max() == 0 for g in off)
    on = grads(sel.float())
    assert sum(float(g.abs().sum()) for g in on if g is not None) > 0
    # 16 of 64 rays: the selected set is exactly grad_rays per image
    assert int(sel.sum()) == 2 * 16


@pytest.fixture(scope="module")
def tiny_run(objects32, tmp_path_factory):
    pytest.importorskip("aware3d.data.imagefolder", reason="ImageFolderDataset not available")
    return cm.METHOD.train(str(objects32), str(tmp_path_factory.mktemp("cips") / "run"), preset="tiny",
                    max_steps=20, seed=0)


def test_train_entry_point_20_steps(tiny_run):
    run = tiny_run
    ckpt = torch.load(run / "checkpoints" / "step_00000020.pt", weights_only=True)
    assert ckpt["step"] == 20
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "cips3d" and cfg["preset"] == "tiny" and cfg["gan"]["r1_weight"] == 5.0  # 0.5 x the official r1_lambda 10
    assert cfg["gan"]["d_first"] and cfg["gan"]["grad_clip"] == 10.0
    rows = list(csv.DictReader(open(run / "scalars.csv")))
    assert {"loss_G", "loss_G_aux", "loss_D", "loss_D_aux", "R1", "R1_aux"} <= {r["tag"] for r in rows}
    assert all(np.isfinite(float(r["value"])) for r in rows)
    assert (run / "samples" / "step_00000020.png").exists()
    # EMA lags the trained weights
    assert any(not torch.equal(ckpt["G"][k], ckpt["G_ema"][k]) for k in ckpt["G"])


def test_render_programs_and_mesh(tiny_run, tmp_path):
    from aware3d.methods import gan_common as gc

    files = aware3d.load(tiny_run, device="cpu").render_program("yaw-sweep", out=tmp_path, frames=3, samples=2)
    assert set(files) == {"gif", "mp4", "png"} and all(Path(p).exists() for p in files.values())
    assert cm.render_aux(aware3d.load(tiny_run, device="cpu"), n_samples=2, out_path=tmp_path / "aux.png").exists()
    r = aware3d.load(tiny_run, device="cpu")
    cfg, method, G = r.config, r.gan, r.G
    a = gc.render_program_frames(method, G, "interpolate-shape", n_frames=4, n_samples=2)
    b = gc.render_program_frames(method, G, "interpolate-appearance", n_frames=4, n_samples=2)
    assert a.shape == (4, 2, 32, 32, 3)
    assert torch.allclose(a[0], b[0], atol=1e-6) and not torch.allclose(a[2], b[2], atol=1e-4)
    assert Path(aware3d.load(tiny_run, device="cpu").render_program("seed-grid", out=tmp_path, frames=2, samples=4)["png"]).exists()
    res = cm.export_mesh(aware3d.load(tiny_run, device="cpu"), seed=0, resolution=24, out_path=tmp_path / "m.ply")
    assert (tmp_path / "m.ply").exists() and res["resolution"] == 24 and res["extent"] == 2.5
