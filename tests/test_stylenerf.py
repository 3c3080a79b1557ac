"""StyleNeRF: the fields, the renderer with its background, the learned upsampler (pixel shuffle +
blur against an independent reference), the NeRF-path regulariser, style mixing, the progressive
schedule, a 20-step CLI run with a render program and a mesh, and resume equivalence."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aware3d.fields import stylenerf as fs
from aware3d.methods import stylenerf as sn
from aware3d.nets import stylegan2 as sg


def _tiny(**kw):
    return sn.build(sn.make_config("tiny", **kw))


def test_fields_shapes_and_gradients():
    torch.manual_seed(0)
    fg = fs.ForegroundField(w_dim=12, hidden=16, n_blocks=3, feat_dim=8, n_freq=4)
    assert fg.num_ws == 5
    p = torch.randn(2, 30, 3, requires_grad=True)
    ws = torch.randn(2, fg.num_ws, 12)
    s, v = fg(p, ws)
    assert s.shape == (2, 30) and v.shape == (2, 30, 3 + 8)
    (s.sum() + v.sum()).backward()
    assert p.grad.abs().sum() > 0 and all(q.grad is not None for q in fg.parameters())
    bg = fs.BackgroundField(z_dim=4, hidden=8, n_blocks=2, feat_dim=8, n_freq=4)
    s, v = bg(torch.randn(2, 30, 3) * 5, torch.randn(2, 4))
    assert s.shape == (2, 30) and v.shape == (2, 30, 11)
    # the background sees (x / |x|, 1 / |x|): scaling a direction far out changes only 1 / |x|
    q = torch.tensor([[[0.0, 0.0, 1e6]]])
    assert torch.allclose(bg(q, torch.zeros(1, 4))[0], bg(2 * q, torch.zeros(1, 4))[0], atol=1e-4)


def test_render_scene_background_shows_through_empty_foreground():
    B, R = 1, 5
    o = torch.zeros(B, R, 3)
    d = F.normalize(torch.randn(B, R, 3), dim=-1)

    def empty(p):
        return torch.full(p.shape[:2], -10.0), torch.zeros(*p.shape[:2], 2)

    def solid(p):   # dense, value (1, 2) everywhere
        return torch.full(p.shape[:2], 1e4), torch.tensor([1.0, 2.0]).expand(*p.shape[:2], 2)

    out = fs.render_scene(empty, solid, o, d, 1.0, 2.0, 6, 4, 3)
    assert torch.allclose(out["values"], torch.tensor([1.0, 2.0]).expand(B, R, 2), atol=1e-4)
    assert out["opacity"].max() < 1e-3
    out = fs.render_scene(solid, empty, o, d, 1.0, 2.0, 6, 0, 3, perturb=True)
    assert torch.allclose(out["values"], torch.tensor([1.0, 2.0]).expand(B, R, 2), atol=1e-4)


def test_learned_upsample_pixelshuffle_blur_reference():
    torch.manual_seed(0)
    C = 4
    x = torch.randn(2, C, 5, 6)
    adapter = torch.nn.Conv2d(C, 4 * C, 1)
    f = sg.setup_filter()
    got = fs.learned_upsample(x, adapter, f, "pixelshuffle")
    # reference: by hand, no pixel_shuffle / interpolate / upfirdn: out[c, 2i + a, 2j + b] =
    # x[c, i, j] + adapter(x)[4c + 2a + b, i, j], then a [1, 3, 3, 1] x [1, 3, 3, 1] / 64 'same'
    # convolution with zero padding (2 before, 1 after)
    a = adapter(x).detach().numpy()
    xn = x.numpy()
    up = np.zeros((2, C, 10, 12))
    for c in range(C):
        for i in range(5):
            for j in range(6):
                for da in range(2):
                    for db in range(2):
                        up[:, c, 2 * i + da, 2 * j + db] = xn[:, c, i, j] + a[:, 4 * c + 2 * da + db, i, j]
    k = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    pad = np.pad(up, ((0, 0), (0, 0), (2, 1), (2, 1)))
    ref = np.zeros_like(up)
    for i in range(10):
        for j in range(12):
            ref[:, :, i, j] = (pad[:, :, i:i + 4, j:j + 4] * k[::-1, ::-1]).sum((-1, -2))
    assert got.shape == (2, C, 10, 12)
    assert np.allclose(got.detach().numpy(), ref, atol=1e-5)
    # nn_cat variant: shape, and a constant image stays constant inside with a zero adapter
    ad2 = torch.nn.Conv2d(2 * C, C, 1)
    torch.nn.init.zeros_(ad2.weight), torch.nn.init.zeros_(ad2.bias)
    y = fs.learned_upsample(torch.ones(1, C, 6, 6), ad2, f, "nn_cat")
    assert y.shape == (1, C, 12, 12) and torch.allclose(y[..., 2:-2, 2:-2], torch.ones(1, C, 8, 8))


def test_upsampler_and_style_layer_shapes_gradients():
    torch.manual_seed(0)
    up = fs.Upsampler(in_channels=8, w_dim=12, in_res=8, out_res=32, channel_base=256, channel_max=16)
    assert up.resolutions == [16, 32] and up.num_ws == 5
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    ws = torch.randn(2, 5, 12)
    imgs = up(x, torch.zeros(2, 3, 8, 8), ws)
    assert [i.shape[-1] for i in imgs] == [16, 32]
    imgs[-1].sum().backward()
    assert x.grad.abs().sum() > 0
    path = up(x.detach(), torch.zeros(2, 3, 8, 8), ws, skip_up=True)   # the NeRF path keeps the size
    assert [i.shape[-1] for i in path] == [8, 8]
    layer = fs.StyleLayer2D(8, 8, 12, up=2)
    layer.train()
    layer(torch.randn(2, 8, 4, 4) * 3, torch.randn(2, 12))
    assert float(layer.magnitude) > 1.0     # the input magnitude EMA moved towards 9


def test_nerf_path_loss_zero_when_images_agree():
    torch.manual_seed(0)
    final = torch.randn(3, 3, 32, 32)
    small = F.avg_pool2d(final, 4)
    assert float(sn.nerf_path_loss(final, small)) == 0.0
    other = small + 0.5
    # 2 x sum over 3 channels of 0.25 = 1.5
    assert float(sn.nerf_path_loss(final, other)) == pytest.approx(1.5, rel=1e-5)


def test_generator_progressive_phases_style_mixing_and_gradients():
    torch.manual_seed(0)
    m = _tiny()
    G, D = m.generator, m.discriminator
    assert G.num_ws == sn.num_ws(m.cfg) == 4 + 2 * 2 + 1
    sizes = []
    for step in (0, 5, 10, 40):                # alpha 0, 0.2, 0.6, 1 (batch 4, curriculum 0.01-0.06 kimg)
        m.set_step(step)
        x = m.sample_inputs(4, torch.Generator().manual_seed(step))
        out = G(x, return_aux=True)
        sizes.append((out["image"].shape[-1], m.train_res))
        assert (out["nerf_path"] is None) == (step == 0)
        loss, sc = m.generator_objective(G, D, x)
        G.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in G.fg.parameters())
        if step == 40:
            assert "nerf_path" in sc and all(p.grad is not None for p in G.upsampler.parameters())
        dl, _ = m.discriminator_objective(G, D, torch.randn(4, 3, 32, 32), x, 0.25)
        dl.backward()
    assert sizes == [(8, 8), (16, 16), (32, 32), (32, 32)]
    # style mixing: w's from the cutoff on come from z_mix
    x = m.sample_inputs(2, torch.Generator().manual_seed(1))
    x["mix_cutoff"] = torch.full((2,), 3)
    ws = G.styles(x)
    assert torch.allclose(ws[:, 0], ws[:, 2]) and not torch.allclose(ws[:, 2], ws[:, 3])
    G.eval()
    assert torch.allclose(ws[:, 3:], G.mapping(x["z_mix"]).unsqueeze(1).expand(-1, G.num_ws - 3, -1))
    m.set_step(0)   # in eval mode the image always has the full size
    with torch.no_grad():
        assert G(sn.sample_inputs(m.cfg, 2, train=False)).shape == (2, 3, 32, 32)


def test_paper_preset_follows_official_config():
    c = sn.make_config("ffhq256")
    assert (c.resolution, c.nerf_res, c.z_dim, c.w_dim, c.map_layers) == (256, 32, 512, 512, 8)
    assert (c.nerf_hidden, c.nerf_blocks, c.feat_dim, c.z_bg_dim, c.bg_hidden, c.bg_blocks) == (128, 8, 256, 32, 64, 4)
    assert (c.n_samples, c.n_bg, c.fov, c.depth_range, c.kernel_size) == (14, 4, 12.0, (0.88, 1.12), 1)
    assert c.r1_weight == 0.25 and c.r1_interval == 16 and c.style_mixing_prob == 0.9
    assert c.curriculum == (500.0, 5000.0) and c.batch_size == 64
    up = fs.Upsampler(256, 512, 32, 256, c.channel_base, c.channel_max)
    assert [b.conv1.weight.shape[0] for b in up.blocks] == [512, 256, 128]   # 32768 / res, max 1024
    D = sg.StyleGAN2Discriminator(256, c.d_channel_base, c.d_channel_max, architecture="skip")
    assert [D.channels[r] for r in (256, 128, 64, 32)] == [64, 128, 256, 512]


@pytest.fixture(scope="module")
def cli_run(objects, tmp_path_factory):
    from aware3d.cli import main

    run = tmp_path_factory.mktemp("stylenerf") / "run"
    assert main(["train", "stylenerf", "--data", str(objects), "--out", str(run), "--preset", "tiny",
                 "--max-steps", "20", "--device", "cpu"]) == 0
    return run


def test_cli_train_render_mesh(cli_run, tmp_path):
    from aware3d.cli import main

    ckpt = torch.load(cli_run / "checkpoints" / "step_00000020.pt", weights_only=True, map_location="cpu")
    assert ckpt["step"] == 20 and float(ckpt["G"]["alpha"]) == 1.0    # grown to 32x32 within 20 steps
    cfg = json.loads((cli_run / "config.json").read_text())
    assert cfg["method"] == "stylenerf" and cfg["preset"] == "tiny"
    out = tmp_path / "yaw"
    assert main(["render", str(cli_run), "--program", "yaw-sweep", "--frames", "4", "--out", str(out)]) == 0
    from PIL import Image

    gif = Image.open(next(out.glob("*.gif")))
    assert gif.n_frames == 4 and gif.size[1] >= 32
    ply = tmp_path / "mesh.ply"
    assert main(["export", "mesh", str(cli_run), "--resolution", "32", "--out", str(ply)]) == 0
    assert ply.read_bytes().startswith(b"ply")


def test_resume_equals_uninterrupted(objects, tmp_path):
    # 10 + 10 steps (stop, resume) against 20 straight: identical G, D, EMA (the progressive state
    # is a function of the step, the style-mixing draws come from the engine's generator)
    kw = dict(preset="tiny", progress=False, device="cpu", sample_every=0, checkpoint_every=0)
    sn.METHOD.train(objects, out=tmp_path / "a", max_steps=20, **kw)
    sn.METHOD.train(objects, out=tmp_path / "b", max_steps=10, **kw)
    sn.METHOD.train(objects, out=tmp_path / "b", max_steps=20, resume=True, **kw)
    from aware3d.train.io import load_checkpoint

    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 20
    for key in ("G", "D", "G_ema"):
        for name, v in a[key].items():
            assert torch.equal(v, b[key][name]), f"{key}.{name} differs after resume"
