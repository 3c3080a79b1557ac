"""aware3d fit video: NeRV blocks, temporal CAM, temporal grids, MS-SSIM, the CLI and frame loading."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from aware3d.cli import main as cli_main
from aware3d.fields.nerv import (CONFIGS, FrameBuffer, NeRV, NeRVBlock, NeRVConfig, TemporalCAM,
                                 aggregate_frames, config_for_frames, count_parameters, flow_warp, interp_1d,
                                 nerv_positional_encoding)
from aware3d.fit_video import fit_video, load_frames, lr_at, snapped_size
from aware3d.metrics import ssim
from aware3d.metrics.msssim import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_levels


def test_nerv_block_pixel_shuffle_upsamples_by_its_stride():
    x = torch.randn(2, 8, 3, 5)
    for s in (1, 2, 3, 5):
        assert NeRVBlock(8, 6, s)(x).shape == (2, 6, 3 * s, 5 * s)


@pytest.mark.parametrize("model", ["nerv", "ffnerv"])
def test_frame_size_is_feature_map_times_product_of_strides(model):
    c = NeRVConfig(model, 2, 3, 16, (3, 2), 1, 2, 8, "gelu", stem_hidden=(32,), t_dims=(4, 8), mod_res=5)
    assert c.frame_size == (12, 18)
    net = NeRV(c)
    out = net(torch.tensor([0.0, 0.3, 0.9]))
    assert out.shape == (3, 3, 12, 18) and out.min() >= 0 and out.max() <= 1
    # block widths: first expands by `expansion`, then divide by `reduction` down to `lower_width`
    assert [b.conv.out_channels // b.up.upscale_factor ** 2 for b in net.blocks] == [16, 8]


def test_paper_parameter_counts():
    # NeRV-S: 3.2M in the NeRV paper; CAM's FFNeRV representation line without the flow heads
    assert count_parameters(NeRV(CONFIGS["nerv-s"])) == 3_201_905
    assert count_parameters(NeRV(replace(CONFIGS["ffnerv-rep"], agg=()))) == 12_407_151
    # with the flow head (1x1, 96 -> 4 x 3) and the 5-channel last head: the official Generator's
    # count (built from CAM_ffnerv/model.py with --agg-ind -2 -1 1 2)
    assert count_parameters(NeRV(CONFIGS["ffnerv-rep"])) == 12_408_509 == 12_407_151 + 96 * 12 + 12 + 96 * 2 + 2
    # CAM at 60 points: 2 * 60 * (156 + 96 * 4) more
    assert count_parameters(NeRV(replace(CONFIGS["ffnerv-rep"], mod_res=60))) == 12_408_509 + 120 * 540


def _agg_net(**kw):
    c = NeRVConfig("ffnerv", 2, 3, 16, (3, 2, 2, 2), 1, 2, 8, "gelu", t_dims=(4, 8), agg=(-2, -1, 1, 2), **kw)
    torch.manual_seed(0)
    return NeRV(c)


def test_flow_aggregation_heads_and_shapes():
    net = _agg_net()
    o = net.heads(torch.tensor([0.0, 0.5, 0.9]))
    # frame 48 x 72; the flow head sits after the third-from-last block: (48 / 4) x (72 / 4)
    assert o["independent"].shape == (3, 3, 48, 72) and o["blend"].shape == (3, 2, 48, 72)
    assert o["flow"].shape == (3, 12, 12, 18)
    assert torch.equal(net(torch.tensor([0.0, 0.5, 0.9])), o["independent"])
    buf = FrameBuffer(5, 48, 72)
    buf.update(torch.arange(5), torch.rand(5, 3, 48, 72))
    nb = buf.neighbours(torch.tensor([0, 4]), (-2, -1, 1, 2))
    assert nb.shape == (2, 4, 3, 48, 72) and nb.dtype == torch.float32 and buf.frames.dtype == torch.float16
    assert nb[0, 0].abs().max() == 0 and nb[0, 1].abs().max() == 0  # frames -2, -1: the zero frame
    assert torch.equal(nb[0, 2], buf.frames[1].float()) and torch.equal(nb[1, 1], buf.frames[3].float())
    assert nb[1, 2].abs().max() == 0 and nb[1, 3].abs().max() == 0  # frames 5, 6: out of range
    agg, final = aggregate_frames(o["independent"][:2], o["blend"][:2], o["flow"][:2], nb)
    assert agg.shape == final.shape == (2, 3, 48, 72)


def test_aggregation_is_the_identity_for_zero_flows_and_one_hot_weights():
    torch.manual_seed(1)
    B, K, H, W = 2, 4, 8, 12
    indep, nb = torch.rand(B, 3, H, W), torch.rand(B, K, 3, H, W)
    flow = torch.zeros(B, 3 * K, H // 4, W // 4)
    flow[:, 2 * K + 2] = 50.0  # weight logits: neighbour 2 takes all
    blend = torch.zeros(B, 2, H, W)
    blend[:, 1] = 50.0  # the aggregated frame takes all
    agg, final = aggregate_frames(indep, blend, flow, nb, align_corners=True)
    assert torch.allclose(agg, nb[:, 2], atol=1e-6) and torch.allclose(final, nb[:, 2], atol=1e-6)
    blend = blend.flip(1)  # the independent frame takes all
    assert torch.allclose(aggregate_frames(indep, blend, flow, nb)[1], indep, atol=1e-6)
    # equal weights: the mean of the (unwarped) neighbours, and of the two frames
    agg, final = aggregate_frames(indep, torch.zeros(B, 2, H, W), torch.zeros_like(flow), nb, align_corners=True)
    assert torch.allclose(agg, nb.mean(1), atol=1e-6) and torch.allclose(final, (indep + nb.mean(1)) / 2, atol=1e-6)


def test_flow_warp_by_hand():
    row = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4).repeat(1, 1, 2, 1)
    zero = torch.zeros(1, 2, 2, 4)
    assert torch.allclose(flow_warp(row, zero, align_corners=True), row)
    # the official call (grid_sample's default align_corners=False): pixel x reads x * 4 / 3 - 1/2
    # clamped to [0, 3]: 0, 0.833, 2.167, 3
    assert torch.allclose(flow_warp(row, zero)[0, 0, 0], torch.tensor([0.0, 25 / 3, 65 / 3, 30.0]), atol=1e-4)
    # a flow of +1 pixel in x on a flow map of half the width: upsampled and doubled, +2 pixels
    one = torch.zeros(1, 2, 1, 2)
    one[:, 0] = 1.0
    assert torch.allclose(flow_warp(row, one, align_corners=True)[0, 0, 0], torch.tensor([20.0, 30.0, 30.0, 30.0]))


def test_configs_saved_without_agg_are_the_independent_frame_model():
    d = CONFIGS["ffnerv-cpu"].to_dict()
    assert d["agg"] == [-2, -1, 1, 2]
    old = {k: v for k, v in d.items() if k not in ("agg", "agg_lw")}
    net = NeRV(NeRVConfig(**old))
    assert not hasattr(net, "flow_head") and net.head.out_channels == 3 and "blend" not in net.heads(torch.zeros(1))
    with pytest.raises(ValueError, match="ffnerv"):
        NeRVConfig("nerv", agg=(-1, 1))


def test_config_for_frames_checks_multiples():
    c = config_for_frames("nerv-cpu", 64, 48)
    assert (c.fc_h, c.fc_w) == (4, 3)
    with pytest.raises(ValueError, match="multiples"):
        config_for_frames("nerv-cpu", 60, 48)
    assert snapped_size(1080, 1920, 96, 16) == (48, 96)


def test_temporal_cam_at_init_is_instance_norm_or_identity():
    x = torch.randn(3, 4, 5, 6) * 3 + 2
    t = torch.tensor([0.0, 0.37, 0.99])
    y = TemporalCAM(4, 7)(x, t)
    ref = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(y, ref, atol=1e-5)
    assert torch.allclose(TemporalCAM(4, 7, normalize=False)(x, t), x, atol=1e-6)


def test_temporal_cam_interpolates_its_grid_by_hand():
    cam = TemporalCAM(2, 3, normalize=False)  # points at t = 0, 0.5, 1
    with torch.no_grad():
        cam.scale.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]]))
        cam.shift.copy_(torch.tensor([[0.0, 0.0], [10.0, 20.0], [30.0, 40.0]]))
    x = torch.ones(1, 2, 1, 1)
    # t = 0.25: halfway between points 0 and 1 -> scale (2, 3), shift (5, 10)
    assert torch.allclose(cam(x, torch.tensor([0.25])).flatten(), torch.tensor([7.0, 13.0]))
    # t = 0.75: scale (4, 6), shift (20, 30)
    assert torch.allclose(cam(x, torch.tensor([0.75])).flatten(), torch.tensor([24.0, 36.0]))


def test_temporal_grid_interpolation_by_hand():
    grid = torch.arange(4.0).view(4, 1) * 10  # values 0, 10, 20, 30 at positions 0..3
    pos = torch.tensor([0.0, 0.5, 2.25, 3.0, 3.7])
    assert torch.allclose(interp_1d(grid, pos).flatten(), torch.tensor([0.0, 5.0, 22.5, 30.0, 30.0]))
    # ffnerv reads grid g at t * T_g: T = 4, t = 0.3 -> position 1.2
    c = NeRVConfig("ffnerv", 1, 1, 2, (1,), 1, 2, 2, "none", t_dims=(4, 2))
    net = NeRV(c)
    with torch.no_grad():
        net.grids[0].copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1, 1, 1))
        net.grids[1].copy_(torch.tensor([5.0, 7.0]).view(2, 1, 1, 1))
    f = net.features(torch.tensor([0.3]))
    assert torch.allclose(f.flatten(), torch.tensor([1.2, 5.0 + 0.6 * 2.0]))


def test_positional_encoding_layout():
    pe = nerv_positional_encoding(torch.tensor([0.5]), 1.25, 3)
    expect = [f(1.25 ** k * math.pi * 0.5) for k in range(3) for f in (math.sin, math.cos)]
    assert torch.allclose(pe.flatten(), torch.tensor(expect), atol=1e-6)


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 1.0) == pytest.approx(0.1)
    assert lr_at(20, 100, 1.0) == pytest.approx(1.0)
    assert lr_at(60, 100, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0) == pytest.approx(0.0, abs=1e-12)


def _img(seed=0, n=1, h=64, w=48):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, h // 8, w // 8, 3, generator=g)
    return torch.nn.functional.interpolate(base.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                           align_corners=False).permute(0, 2, 3, 1).double()


def test_ms_ssim_identical_is_one_and_decreases_with_noise():
    x = _img()
    assert torch.allclose(ms_ssim(x, x), torch.ones(1, dtype=x.dtype))
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    vals = [float(ms_ssim((x + s * noise).clamp(0, 1), x)) for s in (0.02, 0.05, 0.1, 0.2)]
    assert all(a > b for a, b in zip(vals, vals[1:])) and vals[0] < 1


def test_ms_ssim_constant_images_by_hand():
    # flat images: every scale has zero variance, so cs = 1 and the last scale's SSIM is the
    # luminance term (2ab + C1) / (a^2 + b^2 + C1); MS-SSIM = that ** w_last
    a, b = 0.3, 0.6
    x = torch.full((1, 176, 176, 3), a, dtype=torch.float64)
    y = torch.full((1, 176, 176, 3), b, dtype=torch.float64)
    c1 = 0.01 ** 2
    lum = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ms_ssim_levels(176, 176) == 5
    assert float(ms_ssim(x, y)) == pytest.approx(lum ** MS_SSIM_WEIGHTS[-1], rel=1e-9)
    # three scales (renormalised weights)
    w3 = MS_SSIM_WEIGHTS[2] / sum(MS_SSIM_WEIGHTS[:3])
    assert float(ms_ssim(x, y, levels=3)) == pytest.approx(lum ** w3, rel=1e-9)


def test_ms_ssim_one_level_is_ssim_and_levels_for_small_frames():
    x = _img(0)
    y = (0.7 * x + 0.3 * _img(1)).clamp(0, 1)  # similar enough that no channel's SSIM is negative
    assert torch.allclose(ms_ssim(x, y, levels=1), ssim(x, y), atol=1e-10)
    assert ms_ssim_levels(64, 64) == 3 and ms_ssim_levels(32, 32) == 2 and ms_ssim_levels(16, 40) == 1


def _write_frames(folder, n=8, size=32):
    from PIL import Image

    folder.mkdir()
    g = np.random.default_rng(0)
    base = g.random((4, 4, 3))
    for i in range(n):
        img = np.roll(np.kron(base, np.ones((size // 4, size // 4, 1))), i, axis=1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"f{i:03d}.png")


def test_cli_fit_video_20_steps(tmp_path, capsys):
    frames_dir = tmp_path / "frames"
    _write_frames(frames_dir)
    out = tmp_path / "out"
    rc = cli_main(["fit", "video", str(frames_dir), "--cam", "--model", "ffnerv", "--steps", "20",
                   "--resolution", "32", "--out", str(out)])
    r = capsys.readouterr()
    assert rc == 0, r.err[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert math.isfinite(m["psnr"]) and m["frames"] == 8 and m["size"] == [32, 32] and m["cam"]
    assert m["steps"] == 20 and len(m["psnr_per_frame"]) == 8
    assert m["bpp_fp16"] == pytest.approx(16 * m["params"] / (8 * 32 * 32))
    # ffnerv aggregates by default, as the official FFNeRV code
    assert m["aggregation"] == [-2, -1, 1, 2] and math.isfinite(m["psnr_independent"])
    for name in ("reconstruction.mp4", "comparison.mp4", "psnr_per_frame.png", "model_fp16.pt"):
        assert (out / name).stat().st_size > 0
    assert "PSNR" in r.out and "bits per pixel" in r.out


def test_fit_video_from_mp4_nerv(tmp_path):
    from aware3d.train.io import save_video

    clip = _img(0, n=1, h=32, w=32).float().repeat(6, 1, 1, 1)
    save_video(tmp_path / "c.mp4", clip.numpy())
    frames, fps = load_frames(tmp_path / "c.mp4", max_side=32, multiple=16)
    assert frames.shape == (6, 32, 32, 3) and fps > 0
    m = fit_video(tmp_path / "c.mp4", "nerv", False, 5, max_side=32, write_files=False)
    assert math.isfinite(m["psnr"]) and m["params"] == count_parameters(NeRV(config_for_frames("nerv-cpu", 32, 32)))


def test_unreadable_frame_is_named(tmp_path, capsys):
    frames_dir = tmp_path / "frames"
    _write_frames(frames_dir, n=3)
    (frames_dir / "f001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="f001.png"):
        load_frames(frames_dir, 32)
    rc = cli_main(["fit", "video", str(frames_dir), "--steps", "2", "--out", str(tmp_path / "o")])
    assert rc != 0 and "f001.png" in capsys.readouterr().err


def test_fit_video_without_aggregation_and_a_training_step_reaches_the_flow_head(tmp_path):
    frames = _img(0, n=6, h=32, w=32).float()
    m = fit_video(None, "ffnerv", False, 3, frames=frames, aggregation=False, write_files=False, device="cpu")
    assert m["aggregation"] == [] and m["psnr_independent"] is None
    assert m["params"] == count_parameters(NeRV(config_for_frames(replace(CONFIGS["ffnerv-cpu"], agg=()), 32, 32)))
    # one official training step: the loss reaches the flow head through the warp and the weights
    net = NeRV(config_for_frames("ffnerv-cpu", 32, 32))
    buf = FrameBuffer(6, 32, 32)
    buf.update(torch.arange(6), frames.permute(0, 3, 1, 2))
    sel = torch.tensor([2])
    out = net.heads(sel / 6)
    _, final = aggregate_frames(out["independent"], out["blend"], out["flow"], buf.neighbours(sel, (-2, -1, 1, 2)))
    (final - frames[2].permute(2, 0, 1)).abs().mean().backward()
    assert net.flow_head.weight.grad.abs().sum() > 0


def test_flow_aggregation_flag(tmp_path, capsys):
    from aware3d.cli import build_parser

    p = build_parser()
    assert p.parse_args(["fit", "video", "v.mp4"]).flow_aggregation is None  # the model's default
    assert p.parse_args(["fit", "video", "v.mp4", "--no-flow-aggregation"]).flow_aggregation is False
    frames_dir = tmp_path / "frames"
    _write_frames(frames_dir, n=3)
    assert cli_main(["fit", "video", str(frames_dir), "--model", "nerv", "--flow-aggregation", "--steps", "1",
                     "--out", str(tmp_path / "o")]) == 2
    assert "ffnerv" in capsys.readouterr().err
