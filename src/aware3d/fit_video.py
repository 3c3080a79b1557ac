"""Video fitting: a frame-wise neural representation (NeRV or FFNeRV's temporal grids,
:mod:`aware3d.fields.nerv`) fitted to one video, optionally with CAM's temporal modulation
(PAPERS.md cards 9 and 13).

Input: an MP4 (or any format imageio-ffmpeg reads) or a folder of images taken in name order. Each
frame is area-resized (PIL box filter) so its longer side is ``max_side`` and both sides are
multiples of the model's total upsampling (the product of its strides), i.e. the size is snapped to
the nearest such multiple; the feature map is then (H / P) x (W / P).

Training follows the reference NeRV / FFNeRV code: frame i has t = i / N; each step takes ``batch``
frames (1 in the reference) in a shuffled epoch order; Adam (lr 5e-4, betas (0.5, 0.999)); learning
rate warmed up linearly from 0.1x over the first 20% of the steps, then cosine-decayed to 0; loss
0.7 * L1 + 0.3 * (1 - SSIM) ("Fusion6"). ``max_seconds`` stops on training time.

FFNeRV's flow-guided aggregation (``aggregation``; on for ``ffnerv`` as in the official FFNeRV
command lines, neighbours -2, -1, +1, +2): the frame buffer is filled with every frame's independent
output before the first step; each step writes its frames' new independent outputs into it, reads
their neighbours, and the loss is ``0.1 * L(aggregated) + 0.1 * L(independent) + L(final)``. Frames
for the metrics are made as the official evaluation does: the buffer refilled from the trained
network, then every frame aggregated (:func:`aware3d.fields.nerv.render_aggregated`); the metrics
are those of the final frames (``psnr_independent``: the independent frames' PSNR).

Outputs (``out``): ``reconstruction.mp4``, ``comparison.mp4`` (target | fit), ``psnr_per_frame.png``,
``psnr_curve.png``, ``model_fp16.pt`` (the weights in float16) and ``metrics.json`` (PSNR and
MS-SSIM over all frames, per-frame PSNR, parameters, bits per pixel at float16 weights =
16 * parameters / (frames * H * W), timing, config).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .fields.nerv import (CONFIGS, MODELS, PAPER_AGG, FrameBuffer, NeRV, NeRVConfig, aggregate_frames,
                          config_for_frames, count_parameters, render_aggregated)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_MOD_RES = 16  # CAM grid points over t for the CPU configs (the paper's FFNeRV setting uses 60)


def snapped_size(width: int, height: int, max_side: int | None, multiple: int) -> tuple[int, int]:
    """(W, H) scaled so the longer side is ``max_side`` (not enlarged when None), each side rounded
    to the nearest positive multiple of ``multiple``."""
    s = (max_side / max(width, height)) if max_side else 1.0
    return (max(multiple, int(round(width * s / multiple)) * multiple),
            max(multiple, int(round(height * s / multiple)) * multiple))


def _resize(im, size):
    from PIL import Image

    return im if im.size == size else im.resize(size, Image.BOX)


def load_frames(path, max_side: int | None = 64, multiple: int = 16, max_frames: int | None = None
                ) -> tuple[torch.Tensor, float]:
    """Frames (N, H, W, 3) float in [0, 1] from a video file or a folder of images, and the frame
    rate (25 for a folder, the file's own otherwise). See the module docstring for the resizing."""
    from PIL import Image

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such video file or folder")
    frames, fps = [], 25.0
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS
                       and not f.name.startswith("."))
        if not files:
            raise ValueError(f"{p}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
        if max_frames:
            files = files[:max_frames]
        size = None
        for f in files:
            try:
                im = Image.open(f)
                im.load()
                im = im.convert("RGB")
            except Exception as e:
                raise ValueError(f"{f}: cannot read this frame as an image ({e})") from None
            size = size or snapped_size(im.size[0], im.size[1], max_side, multiple)
            frames.append(np.asarray(_resize(im, size), dtype=np.uint8))
    else:
        import imageio.v2 as imageio

        try:
            reader = imageio.get_reader(str(p), "ffmpeg")
        except Exception as e:
            raise ValueError(f"{p}: cannot open as a video ({e})") from None
        try:
            fps = float(reader.get_meta_data().get("fps") or 25.0)
            size = None
            for i, fr in enumerate(reader):
                if max_frames and i >= max_frames:
                    break
                im = Image.fromarray(np.asarray(fr)[..., :3])
                size = size or snapped_size(im.size[0], im.size[1], max_side, multiple)
                frames.append(np.asarray(_resize(im, size), dtype=np.uint8))
        except Exception as e:
            raise ValueError(f"{p}: cannot decode the video ({e})") from None
        finally:
            reader.close()
        if not frames:
            raise ValueError(f"{p}: the video has no frames")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, fps


def synthetic_clip(n_frames: int = 60, size: int = 64, radius: float = 3.5, elevation: float = 30.0,
                   scene: str = "default_floor", background: float = 0.85) -> torch.Tensor:
    """A clip rendered by the built-in ray caster: a named scene (default: the four primitives on a
    grey slab) along a turntable camera path (one full turn), (N, size, size, 3) in [0, 1], on a
    uniform ``background``."""
    from .data.synth import named_scene, render_views
    from .render.cameras import intrinsics_from_fov, turntable_path

    c2w = turntable_path(n_frames, radius=radius, elevation_deg=elevation)
    K = intrinsics_from_fov(40.0, size, size)
    r = render_views(named_scene(scene), K, c2w, size, size)
    m = r["mask"].unsqueeze(-1).float()
    return (r["rgb"] * m + background * (1 - m)).clamp(0, 1).float()


def fusion6_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.7 * L1 + 0.3 * (1 - SSIM) on (B, 3, H, W) frames (the reference "Fusion6" loss)."""
    from .metrics import ssim

    s = ssim(pred.permute(0, 2, 3, 1), target.permute(0, 2, 3, 1)).mean()
    return 0.7 * (pred - target).abs().mean() + 0.3 * (1 - s)


def lr_at(step: int, total: int, lr: float, warmup: float = 0.2) -> float:
    """Reference schedule: linear warm-up from 0.1 lr over ``warmup * total`` steps, then cosine."""
    w = warmup * total
    if step < w:
        return lr * (0.1 + 0.9 * step / w)
    return lr * 0.5 * (1 + math.cos(math.pi * (step - w) / max(total - w, 1e-9)))


def build_config(model: str, frames_hw: tuple[int, int], config: str | NeRVConfig | None = None,
                 cam: bool = False, mod_res: int | None = None, aggregation: bool | None = None,
                 **overrides) -> NeRVConfig:
    """``aggregation``: None keeps the config's own (on in the ffnerv configs), False turns FFNeRV's
    flow-guided aggregation off, True turns it on (the official neighbours if the config has none)."""
    c = config if config is not None else f"{model}-cpu"
    base = CONFIGS[c] if isinstance(c, str) else c
    if base.model != model:
        raise ValueError(f"config {c!r} is a {base.model} configuration, not {model}")
    if aggregation and model != "ffnerv":
        raise ValueError("--flow-aggregation is FFNeRV's: use it with --model ffnerv")
    if aggregation is not None and "agg" not in overrides:
        overrides["agg"] = (base.agg or PAPER_AGG) if aggregation else ()
    mr = (mod_res or DEFAULT_MOD_RES) if cam else 0
    return config_for_frames(base, *frames_hw, mod_res=mr, **overrides)


def fit_video(path=None, model: str = "nerv", cam: bool = False, steps: int = 1000, out=None, *,
              max_side: int = 64, config: str | NeRVConfig | None = None, mod_res: int | None = None,
              overrides: dict | None = None, frames: torch.Tensor | None = None, fps: float = 25.0,
              max_frames: int | None = None, batch: int = 1, lr: float = 5e-4,
              eval_every: int | None = None, max_seconds: float | None = None, seed: int = 0,
              device: str | None = None, progress: bool = False, threads: int | None = None,
              write_files: bool = True, aggregation: bool | None = None) -> dict:
    """Fit ``model`` (``"nerv"`` / ``"ffnerv"``, ``cam`` adds temporal CAM) to the video at ``path``
    (or the tensor ``frames`` (N, H, W, 3) in [0, 1]) for ``steps`` steps. ``config``: a name in
    :data:`aware3d.fields.nerv.CONFIGS` (default ``<model>-cpu``) or a :class:`NeRVConfig`; its
    fc_h / fc_w are set from the frame size; ``overrides`` replaces other fields. ``aggregation``:
    FFNeRV's flow-guided frame aggregation (None: the config's own, on for the ffnerv configs).
    Returns the metrics dict (also written to ``out/metrics.json``)."""
    from tqdm import tqdm

    from .fit import plot_curve
    from .metrics import psnr as psnr_fn
    from .metrics.msssim import ms_ssim, ms_ssim_levels
    from .train.io import atomic_save, atomic_write_text, save_video

    if model not in MODELS:
        raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {model!r}")
    if int(steps) < 1:
        raise ValueError(f"--steps: expected >= 1, got {steps}")
    if threads:
        torch.set_num_threads(int(threads))
    base = CONFIGS[config if config is not None else f"{model}-cpu"] if not isinstance(config, NeRVConfig) else config
    if frames is None:
        if path is None:
            raise ValueError("fit_video: give a video path or frames")
        frames, fps = load_frames(path, max_side, base.upscale, max_frames)
    else:
        frames = frames.float()
        if max_frames:
            frames = frames[:max_frames]
    N, H, W = frames.shape[:3]
    cfg = build_config(model, (H, W), base, cam, mod_res, aggregation, **dict(overrides or {}))
    stem = Path(path).stem if path is not None else "clip"
    out_dir = Path(out) if out else Path(f"fit-{stem}-{model}{'-cam' if cam else ''}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    net = NeRV(cfg).to(dev)
    target = frames.permute(0, 3, 1, 2).contiguous().to(dev)  # (N, 3, H, W)
    ts = torch.arange(N, dtype=torch.float32, device=dev) / N
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    steps = int(steps)
    eval_every = eval_every or max(1, steps // 10)
    gen = torch.Generator().manual_seed(seed)
    batch = max(1, min(int(batch), N))

    @torch.no_grad()
    def render_all(independent: bool = False):
        """The final frames (N, H, W, 3); ``independent``: (final, the independent frames)."""
        net.eval()
        final, indep = render_aggregated(net, ts)
        net.train()
        final = final.float().cpu().permute(0, 2, 3, 1)
        return (final, indep.float().cpu().permute(0, 2, 3, 1)) if independent else final

    buffer = None
    if cfg.agg:  # the official code fills the frame buffer once before training
        buffer = FrameBuffer(N, H, W, device=dev)
        with torch.no_grad():
            for i in range(0, N, 16):
                buffer.update(torch.arange(i, min(i + 16, N), device=dev), net(ts[i:i + 16]))

    curve, train_s, train_cpu, step, order, ema = [], 0.0, 0.0, 0, [], None
    bar = tqdm(total=steps, disable=not progress, desc=f"fit video {model}{' +cam' if cam else ''}")
    while step < steps:
        if len(order) < batch:
            order += torch.randperm(N, generator=gen).tolist()
        idx, order = order[:batch], order[batch:]
        t0, c0 = time.perf_counter(), time.thread_time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        sel = torch.tensor(idx, device=dev)
        tgt = target[sel]
        if buffer is None:
            pred = net(ts[sel])
            loss = fusion6_loss(pred, tgt)
        else:
            out = net.heads(ts[sel])
            buffer.update(sel, out["independent"])
            agg, pred = aggregate_frames(out["independent"], out["blend"], out["flow"],
                                         buffer.neighbours(sel, cfg.agg))
            loss = (cfg.agg_lw * (fusion6_loss(agg, tgt) + fusion6_loss(out["independent"], tgt))
                    + fusion6_loss(pred, tgt))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        train_cpu += time.thread_time() - c0
        step += 1
        with torch.no_grad():
            p = float(-10 * torch.log10(F.mse_loss(pred.detach(), tgt).clamp_min(1e-10)))
        ema = p if ema is None else 0.9 * ema + 0.1 * p
        bar.update(1)
        if step % 10 == 0 or step == steps:
            bar.set_postfix(psnr=f"{ema:.2f}", lr=f"{lr_at(step, steps, lr):.1e}")
        done = step >= steps or (max_seconds is not None and train_s >= max_seconds)
        if step % eval_every == 0 or done:
            curve.append([step, train_s, float(psnr_fn(render_all(), frames).mean())])
        if done:
            break
    bar.close()
    recon, indep = render_all(independent=True)  # one pass: the final frames and, with agg, the independent ones
    per_frame = psnr_fn(recon, frames)
    psnr_indep = None
    if cfg.agg:
        mse_indep = float((indep - frames).square().mean())
        psnr_indep = float(-10 * math.log10(max(mse_indep, 1e-12)))
    mse_all = float((recon - frames).square().mean())
    levels = ms_ssim_levels(H, W)
    msssim = ms_ssim(recon.double(), frames.double(), levels=levels)
    params = count_parameters(net)
    metrics = {
        "psnr": float(-10 * math.log10(max(mse_all, 1e-12))),
        "psnr_mean_frame": float(per_frame.mean()),
        "ms_ssim": float(msssim.mean()), "ms_ssim_levels": levels,
        "params": params, "bpp_fp16": 16.0 * params / (N * H * W),
        "model": model, "cam": bool(cam), "aggregation": list(cfg.agg), "psnr_independent": psnr_indep,
        "config": cfg.to_dict(),
        "frames": N, "size": [W, H], "fps": fps, "steps": step, "batch": batch,
        "epochs": step * batch / N, "seconds": train_s, "cpu_seconds": train_cpu, "seconds_per_step": train_s / max(step, 1),
        "source": str(path) if path is not None else None, "device": str(dev),
        "psnr_per_frame": [round(float(v), 4) for v in per_frame], "curve": curve,
    }
    if write_files:
        files = {
            "video": str(save_video(out_dir / "reconstruction.mp4", recon.clamp(0, 1).numpy(), fps=fps)),
            "comparison": str(save_video(out_dir / "comparison.mp4",
                                         torch.cat([frames, recon.clamp(0, 1)], 2).numpy(), fps=fps)),
            "psnr_per_frame": str(plot_curve([(i, float(v)) for i, v in enumerate(per_frame)],
                                             out_dir / "psnr_per_frame.png", xlabel="frame",
                                             title=f"fit video: {model}{' + CAM' if cam else ''} ({W}x{H}, "
                                                   f"{N} frames), PSNR {metrics['psnr']:.2f} dB")),
            "psnr_curve": str(plot_curve([(c[0], c[2]) for c in curve], out_dir / "psnr_curve.png",
                                         title=f"fit video: {model}{' + CAM' if cam else ''}")),
        }
        state = {k: v.half() for k, v in net.state_dict().items()}
        files["weights_fp16"] = str(atomic_save({"config": cfg.to_dict(), "state_dict": state},
                                                out_dir / "model_fp16.pt"))
        files["metrics"] = str(out_dir / "metrics.json")
        metrics["files"] = files
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def paper_configs() -> dict:
    """The reference configurations at 1280x720 and their parameter counts (with and without CAM
    at the paper's 60 modulation points)."""
    from .fields.nerv import PAPER_MOD_RES

    rows = {}
    for name in ("nerv-s", "ffnerv-rep"):
        c = CONFIGS[name]
        rows[name] = {"size": list(reversed(c.frame_size)),
                      "params": count_parameters(NeRV(c)),
                      "params_cam": count_parameters(NeRV(replace(c, mod_res=PAPER_MOD_RES)))}
    return rows
