"""Reconstruction: train a radiance field on posed images, evaluate it, render it, mesh it.

One loop serves every reconstruction method. A method module (``aware3d.methods.nerf``, ``ngp``)
provides ``PRESETS``, ``DEFAULT_PRESET`` and a ``Model(cfg, scene)`` with ``forward(rays_o, rays_d,
training=...) -> {"color", "depth", "opacity"}``, ``loss(out, target)``, ``make_optimizer()``,
``lr_at(step)``, ``before_step(step)``, ``density(x)`` and optionally ``next_batch_rays(n_samples)``.
A model with ``uses_image_ids = True`` (per-image embeddings, NeRF-W) also receives
``image_ids`` (R,) int64, the training image each ray comes from.
"""
from __future__ import annotations

import importlib
import json
import math
import time
from pathlib import Path

import torch

from ..cli import RECON_METHODS  # the one list of reconstruction methods (cli.py stays import-light)
from . import io


def method_module(name: str):
    if name not in RECON_METHODS:
        raise ValueError(f"method: expected one of {', '.join(RECON_METHODS)}, got {name!r}")
    return importlib.import_module(f"aware3d.methods.{name}")


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def make_config(method: str, preset: str | None = None, overrides=None, **explicit) -> dict:
    mod = method_module(method)
    preset = preset or mod.DEFAULT_PRESET
    if preset not in mod.PRESETS:
        raise ValueError(f"--preset: {method} has presets {', '.join(mod.PRESETS)}, got {preset!r}")
    cfg = dict(mod.PRESETS[preset])
    for k, v in (overrides or []):
        if k not in cfg:
            raise ValueError(f"--set {k}=...: unknown key for {method}; known: {', '.join(sorted(cfg))}")
        cfg[k] = _parse_value(v) if isinstance(v, str) else v
    cfg.update({k: v for k, v in explicit.items() if v is not None})
    cfg["preset"] = preset
    if hasattr(mod, "resolve_config"):  # presets with backbone-dependent entries (nerfw)
        mod.resolve_config(cfg)
    return cfg


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scene_info(ds) -> dict:
    """What a run keeps of its training scene (in its config): box, depth range, background, image
    size, the first view's intrinsics and the orbit of the training cameras (mean distance from the
    origin and mean elevation), so rendering never has to decode the training images again."""
    centres = ds.c2w[:, :3, 3].float()
    dist = centres.norm(dim=-1)
    elev = torch.rad2deg(torch.asin((centres[:, 2] / dist.clamp_min(1e-8)).clamp(-1, 1)))
    return {"aabb": ds.aabb.tolist(), "near": float(ds.near), "far": float(ds.far),
            "background": ds.background.tolist(), "width": ds.width, "height": ds.height,
            "K": ds.K[0].tolist(), "orbit_radius": float(dist.mean()),
            "orbit_elevation_deg": float(elev.mean())}


def build_model(method: str, cfg: dict, scene: dict, device) -> torch.nn.Module:
    return method_module(method).Model(cfg, scene).to(device)



@torch.no_grad()
def render_image(model, K: torch.Tensor, c2w: torch.Tensor, width: int, height: int,
                 chunk: int = 8192) -> dict:
    """Render one full frame in chunks of rays. Returns color (H, W, 3), depth and opacity (H, W)."""
    from ..render.cameras import image_rays

    dev = next(model.parameters()).device
    o, d = image_rays(K.to(dev), c2w.to(dev), width, height)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    outs = {"color": [], "depth": [], "opacity": []}
    for i in range(0, o.shape[0], chunk):
        r = model(o[i:i + chunk], d[i:i + chunk], training=False)
        for k in outs:
            outs[k].append(r[k].float())
    return {k: torch.cat(v).reshape(height, width, *(() if k != "color" else (3,))).cpu()
            for k, v in outs.items()}


def _val_psnr(model, val, n_views: int = 2) -> tuple[float, list]:
    from ..metrics import psnr

    vals, images = [], []
    for i in range(min(n_views, len(val))):
        r = render_image(model, val.K[i], val.c2w[i], val.width, val.height)
        vals.append(float(psnr(r["color"], val.images[i])))
        images.append(torch.cat([val.images[i], r["color"]], 1))
    return sum(vals) / max(len(vals), 1), images


def train(method: str, data: str, out: str | None = None, preset: str | None = None,
          max_steps: int | None = None, max_minutes: float | None = None, resume: bool = False,
          seed: int = 0, downscale: int = 1, batch_size: int | None = None, device: str | None = None,
          overrides=None, val_every: int = 500, ckpt_every: int = 1000, progress: bool = True,
          log_every: int = 25, val_every_seconds: float | None = None, val_views: int = 1) -> Path:
    """Train ``method`` on the posed dataset at ``data``; returns the run folder.

    ``max_minutes`` counts training time only: validation, checkpoints and logging pause the
    clock, and a resumed run continues the clock where its checkpoint left it (``train_seconds``).
    Validation runs every ``val_every`` steps and/or every ``val_every_seconds`` of training time
    on ``val_views`` views; its PSNR is logged as ``val/psnr`` next to ``val/train_seconds``.
    """
    from tqdm import tqdm

    from ..data import load_scene

    out = out or f"runs/{method}-{Path(data).name}"
    run_dir = Path(out)
    if resume:
        saved = io.load_run_config(run_dir)
        cfg, seed, downscale = saved["config"], saved["seed"], saved["downscale"]
        data = saved["data"]
    else:
        cfg = make_config(method, preset, overrides, batch_size=batch_size)
    dev = pick_device(device)
    torch.manual_seed(seed)
    train_ds = load_scene(data, "train", downscale=downscale)
    try:
        val_ds = load_scene(data, "val", downscale=downscale)
    except Exception:  # single-split formats: validate on a couple of training views
        val_ds = train_ds
    scene = scene_info(train_ds)
    scene["n_images"] = len(train_ds)
    run_cfg = {"config": cfg, "data": str(Path(data).resolve()), "seed": seed, "downscale": downscale,
               "scene": scene}
    run_dir = io.prepare_run_dir(run_dir, method, run_cfg, resume=resume)
    model = build_model(method, cfg, scene, dev)
    opt = model.make_optimizer()
    step, train_seconds = 0, 0.0
    if resume:
        ck = io.load_checkpoint(run_dir)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        io.set_rng_state(ck["rng"])
        step = int(ck["step"])
        train_seconds = float(ck.get("train_seconds", 0.0))
        if hasattr(model, "n_rays") and "n_rays" in ck:
            model.n_rays = int(ck["n_rays"])

    # all training rays once, kept on the device; a step draws a random subset of them
    from ..render.cameras import image_rays
    o_all, d_all = image_rays(train_ds.K, train_ds.c2w, train_ds.width, train_ds.height)
    o_all, d_all = o_all.reshape(-1, 3).to(dev), d_all.reshape(-1, 3).to(dev)
    rgb_all = train_ds.images.reshape(-1, 3).to(dev)
    n_total = rgb_all.shape[0]
    uses_ids = getattr(model, "uses_image_ids", False)
    if uses_ids:
        ids_all = torch.arange(len(train_ds), device=dev).repeat_interleave(train_ds.width * train_ds.height)

    limit_steps = max_steps if max_steps is not None else (None if max_minutes else cfg.get("max_steps"))
    state = {"step": step}
    budget_end = train_seconds + 60 * max_minutes if max_minutes is not None else None
    next_val_time = train_seconds + val_every_seconds if val_every_seconds else None

    def checkpoint():
        extra = {"n_rays": getattr(model, "n_rays", 0), "train_seconds": train_seconds}
        io.save_checkpoint(run_dir, state["step"], {"model": model.state_dict(),
                                                    "optimizer": opt.state_dict(),
                                                    "rng": io.get_rng_state(), **extra})

    logger = io.ScalarLogger(run_dir, resume_step=step if resume else None)
    bar = tqdm(total=limit_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{method}")
    rays_seen, t_last = 0, time.time()
    try:
        with io.install_sigint_checkpoint(checkpoint, defer=True) as guard:
            while True:
                if limit_steps is not None and step >= limit_steps:
                    break
                if budget_end is not None and train_seconds >= budget_end:
                    break
                t_step = time.perf_counter()
                model.train()
                model.before_step(step)
                n_rays = model.n_rays if hasattr(model, "next_batch_rays") else cfg["batch_size"]
                idx = torch.randint(0, n_total, (n_rays,), device=dev)
                for g in opt.param_groups:
                    g["lr"] = model.lr_at(step)
                kw = {"image_ids": ids_all[idx]} if uses_ids else {}
                out_ = model(o_all[idx], d_all[idx], training=True, **kw)
                loss = model.loss(out_, rgb_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if hasattr(model, "next_batch_rays"):
                    model.next_batch_rays(out_.get("n_samples", 0))
                step += 1
                train_seconds += time.perf_counter() - t_step
                state["step"] = step
                rays_seen += n_rays
                if step % log_every == 0 or step == 1:
                    with torch.no_grad():
                        mse = (out_["color"].detach().clamp(0, 1) - rgb_all[idx]).square().mean()
                        p = float(-10 * torch.log10(mse))
                    now = time.time()
                    rps = rays_seen / max(now - t_last, 1e-9)
                    rays_seen, t_last = 0, now
                    logger.log(step, {"train/loss": loss.item(), "train/psnr": p, "train/rays_per_s": rps,
                                      "train/lr": model.lr_at(step)})
                    bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{p:.2f}", rays_s=f"{rps:,.0f}")
                bar.update(1)
                timed_val = next_val_time is not None and train_seconds >= next_val_time
                if (val_every and step % val_every == 0) or timed_val:
                    model.eval()
                    vp, imgs = _val_psnr(model, val_ds, val_views)
                    logger.log(step, {"val/psnr": vp, "val/train_seconds": train_seconds})
                    io.save_png(run_dir / "val" / f"step_{step:08d}.png", imgs[0])
                    if timed_val:
                        next_val_time += val_every_seconds
                if ckpt_every and step % ckpt_every == 0:
                    checkpoint()
                guard.check()
    finally:
        bar.close()
    checkpoint()
    logger.close()
    return run_dir


def load_run(run_dir, device: str | None = None):
    """Rebuild a trained model from its run folder. Returns ``(model, run_config)``."""
    run_dir = Path(run_dir)
    saved = io.load_run_config(run_dir)
    method = saved["method"]
    dev = pick_device(device)
    model = build_model(method, saved["config"], saved["scene"], dev)
    ck = io.load_checkpoint(run_dir, map_location=dev)
    model.load_state_dict(ck["model"])
    model.eval()
    return model, saved


def evaluate(run_dir, data: str | None = None, split: str = "test", device: str | None = None,
             progress: bool = True, max_views: int | None = None) -> dict:
    """PSNR and SSIM per view and mean (and depth error where ground-truth depth exists); writes
    RUN/eval/metrics.json and side-by-side PNGs (ground truth | render | depth)."""
    from tqdm import tqdm

    from ..data import load_scene
    from ..metrics import psnr, ssim

    run_dir = Path(run_dir)
    model, saved = load_run(run_dir, device)
    ds = load_scene(data or saved["data"], split, downscale=saved["downscale"])
    n = len(ds) if max_views is None else min(len(ds), max_views)
    views = []
    out_dir = run_dir / "eval"
    t0 = time.time()
    for i in tqdm(range(n), disable=not progress, desc=f"eval {split}"):
        r = render_image(model, ds.K[i], ds.c2w[i], ds.width, ds.height)
        gt = ds.images[i]
        name = ds.names[i] if ds.names else str(i)
        name = name[2:] if name.startswith("./") else name
        v = {"name": name, "psnr": float(psnr(r["color"], gt)),
             "ssim": float(ssim(r["color"], gt))}
        if ds.depths is not None:
            gd = ds.depths[i]
            mask = torch.isfinite(gd) & (gd > 0)
            if ds.alphas is not None:
                mask &= ds.alphas[i] > 0.5
            if mask.any():
                v["depth_mae"] = float((r["depth"][mask] - gd[mask]).abs().mean())
        views.append(v)
        depth_rgb = torch.as_tensor(io.colorize_depth(r["depth"], saved["scene"]["near"], saved["scene"]["far"]))
        io.save_png(out_dir / f"{i:03d}_{v['name'].replace('/', '_')}.png",
                    torch.cat([gt, r["color"].clamp(0, 1), depth_rgb], 1))
    metrics = {"psnr": sum(v["psnr"] for v in views) / len(views),
               "ssim": sum(v["ssim"] for v in views) / len(views),
               "split": split, "n_views": len(views), "seconds_per_view": (time.time() - t0) / len(views),
               "views": views}
    depth = [v["depth_mae"] for v in views if "depth_mae" in v]
    if depth:
        metrics["depth_mae"] = sum(depth) / len(depth)
    io.atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def print_metrics_table(metrics: dict) -> str:
    has_d = "depth_mae" in metrics
    lines = [f"{'view':<24}{'PSNR':>9}{'SSIM':>8}" + (f"{'depth MAE':>11}" if has_d else "")]
    for v in metrics["views"]:
        lines.append(f"{v['name'][:23]:<24}{v['psnr']:>9.2f}{v['ssim']:>8.4f}" +
                     (f"{v.get('depth_mae', float('nan')):>11.4f}" if has_d else ""))
    lines.append(f"{'mean':<24}{metrics['psnr']:>9.2f}{metrics['ssim']:>8.4f}" +
                 (f"{metrics['depth_mae']:>11.4f}" if has_d else ""))
    return "\n".join(lines)


PROGRAMS = ("turntable", "test-views", "path")


def _path_from_json(path: str) -> tuple[torch.Tensor, dict]:
    """Camera path file: {"frames": [{"transform_matrix": 4x4}, ...], optional "camera_angle_x",
    "w", "h", "fps"} (OpenGL c2w, as in Blender transforms files)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: camera path file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not frames:
        raise ValueError(f"{p}: expected {{\"frames\": [{{\"transform_matrix\": 4x4}}, ...]}}")
    mats = []
    for i, f in enumerate(frames):
        m = torch.as_tensor(f.get("transform_matrix"), dtype=torch.float32) if isinstance(f, dict) else None
        if m is None or m.shape != (4, 4) or not torch.isfinite(m).all():
            raise ValueError(f"{p}: frame {i}: transform_matrix must be a finite 4x4 matrix")
        mats.append(m)
    return torch.stack(mats), doc


def render_program(run_dir, program: str = "turntable", path: str | None = None, out: str | None = None,
                   frames: int | None = None, device: str | None = None, progress: bool = True,
                   resolution: int | None = None, fps: int = 24) -> dict:
    """Render a camera program to MP4 + GIF with depth and opacity videos. Returns file paths."""
    from tqdm import tqdm

    from ..render.cameras import intrinsics_from_fov, scale_intrinsics, turntable_path

    if program not in PROGRAMS:
        raise ValueError(f"--program: expected one of {', '.join(PROGRAMS)}, got {program!r}")
    run_dir = Path(run_dir)
    model, saved = load_run(run_dir, device)
    scene = saved["scene"]
    W, H = int(scene["width"]), int(scene["height"])
    if resolution:
        H, W = int(round(H * resolution / W)), resolution
    from ..data import load_scene

    if "K" not in scene or "orbit_radius" not in scene:  # runs written before these were kept
        scene = {**scene, **scene_info(load_scene(saved["data"], "train", downscale=saved["downscale"]))}
    K = scale_intrinsics(torch.tensor(scene["K"], dtype=torch.float32), W / int(scene["width"]))
    if program == "turntable":
        poses = turntable_path(frames or 60, radius=scene["orbit_radius"],
                               elevation_deg=max(scene["orbit_elevation_deg"], 15.0))
    elif program == "test-views":
        try:
            test = load_scene(saved["data"], "test", downscale=saved["downscale"])
        except Exception:
            test = load_scene(saved["data"], "train", downscale=saved["downscale"])
        poses = test.c2w[: frames or len(test)]
    else:
        if not path:
            raise ValueError("--program path needs a camera path JSON file: aware3d render RUN --program path FILE.json")
        poses, doc = _path_from_json(path)
        if "camera_angle_x" in doc:
            K = intrinsics_from_fov(math.degrees(float(doc["camera_angle_x"])), W, H)
        fps = int(doc.get("fps", fps))
    out_dir = Path(out) if out else run_dir / "render" / program
    rgb, depth, acc = [], [], []
    for c2w in tqdm(poses, disable=not progress, desc=f"render {program}"):
        r = render_image(model, K, c2w, W, H)
        rgb.append(r["color"].clamp(0, 1))
        depth.append(torch.as_tensor(io.colorize_depth(r["depth"], scene["near"], scene["far"])))
        acc.append(r["opacity"].clamp(0, 1).unsqueeze(-1).expand(-1, -1, 3))
    files = {}
    for name, seq in (("rgb", rgb), ("depth", depth), ("opacity", acc)):
        stack = torch.stack(seq)
        files[f"{name}_mp4"] = str(io.save_video(out_dir / f"{name}.mp4", stack, fps=fps))
        files[f"{name}_gif"] = str(io.save_video(out_dir / f"{name}.gif", stack, fps=min(fps, 20)))
    files["first_frame"] = str(io.save_png(out_dir / "frame_000.png", rgb[0]))
    return files


def export_mesh(run_dir, resolution: int = 256, threshold: float | None = None, out: str | None = None,
                device: str | None = None, chunk: int = 2 ** 18) -> dict:
    """Marching cubes of the density on a resolution^3 grid over the scene box, written as PLY."""
    from ..utils.mesh import marching_cubes_mesh, write_ply

    run_dir = Path(run_dir)
    model, saved = load_run(run_dir, device)
    aabb = torch.as_tensor(saved["scene"]["aabb"], dtype=torch.float32)
    dev = next(model.parameters()).device
    lin = [torch.linspace(float(aabb[i]), float(aabb[i + 3]), resolution) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 3)
    dens = []
    with torch.no_grad():
        for i in range(0, grid.shape[0], chunk):
            dens.append(model.density(grid[i:i + chunk].to(dev)).float().cpu())
    vol = torch.cat(dens).reshape(resolution, resolution, resolution).numpy()
    level = float(threshold) if threshold is not None else 10.0
    verts, faces = marching_cubes_mesh(vol, level, aabb[:3].numpy(), aabb[3:].numpy())
    path = Path(out) if out else run_dir / "mesh.ply"
    write_ply(path, verts, faces)
    return {"path": str(path), "vertices": int(len(verts)), "faces": int(len(faces)), "level": level}
