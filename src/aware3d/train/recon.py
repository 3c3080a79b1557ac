"""The reconstruction loop: train a radiance field on posed images, evaluate it, mesh it.

One loop serves every radiance-field method. It is handed the method's surface
(:class:`aware3d.methods.base.FieldMethod`: ``name``, ``make_config(preset, overrides, **explicit)``
and ``build(cfg, scene, device)``), never a method's name, so it imports no method. The model a
method builds provides ``forward(rays_o, rays_d, training=...) -> {"color", "depth", "opacity"}``,
``loss(out, target)``, ``make_optimizer()``, ``lr_at(step)``, ``before_step(step)``, ``density(x)``
and optionally ``next_batch_rays(n_samples)``. A model with ``uses_image_ids = True`` (per-image
embeddings, NeRF-W) also receives ``image_ids`` (R,) int64, the training image each ray comes from.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from ..utils.device import pick_device
from . import io


# the clock of the training budget (tests replace it with a fake one)
step_clock = time.perf_counter




def scene_info(ds) -> dict:
    """What a run keeps of its training scene (in its config): box, depth range, background, image
    size, the first view's intrinsics and the orbit of the training cameras (mean distance from the
    origin and mean elevation), so rendering never has to decode the training images again."""
    centres = ds.c2w[:, :3, 3].float()
    dist = centres.norm(dim=-1)
    elev = torch.rad2deg(torch.asin((centres[:, 2] / dist.clamp_min(1e-8)).clamp(-1, 1)))
    return {"aabb": ds.aabb.tolist(), "near": float(ds.near), "far": float(ds.far),
            "format": getattr(ds, "format", None), "has_alpha": getattr(ds, "alphas", None) is not None,
            "background": ds.background.tolist(), "width": ds.width, "height": ds.height,
            "K": ds.K[0].tolist(), "orbit_radius": float(dist.mean()),
            "orbit_elevation_deg": float(elev.mean()),
            # data frame -> scene frame (normalised captures) and SfM frame -> data frame, or None
            "dynamic": getattr(ds, "times", None) is not None,
            "transform": None if getattr(ds, "transform", None) is None else ds.transform.tolist(),
            "sfm_transform": None if getattr(ds, "sfm_transform", None) is None else ds.sfm_transform.tolist()}


@torch.no_grad()
def render_image(model, K: torch.Tensor, c2w: torch.Tensor, width: int, height: int,
                 chunk: int = 8192, time: float | None = None) -> dict:
    """Render one full frame in chunks of rays. K (3, 3), c2w (3, 4) or (4, 4) (OpenGL).
    ``time``: the moment in [0, 1] for models of dynamic scenes (``uses_times``; default 0).
    Returns color (H, W, 3), depth and opacity (H, W) on the CPU."""
    from ..render.cameras import image_rays

    dev = next(model.parameters()).device
    o, d = image_rays(K.to(dev, torch.float32), c2w.to(dev, torch.float32), width, height)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    outs = {"color": [], "depth": [], "opacity": []}
    kw = {"times": float(time or 0.0)} if getattr(model, "uses_times", False) else {}
    for i in range(0, o.shape[0], chunk):
        r = model(o[i:i + chunk], d[i:i + chunk], training=False, **kw)
        for k in outs:
            outs[k].append(r[k].float())
    return {k: torch.cat(v).reshape(height, width, *(() if k != "color" else (3,))).cpu()
            for k, v in outs.items()}


@torch.no_grad()
def field_is_dead(model, ds, dev, n_rays: int = 256) -> bool:
    """True when a fresh field sees no density on any of ``n_rays`` training rays (from the central
    crop of the images, where the scene is): with its density behind a ReLU, such a field gets no
    gradient and never learns. NeRF-style MLPs start this way for some seeds (the density head's
    output has one sign for every point once the trunk's activations have shrunk with depth)."""
    from ..render.cameras import rays_from_pixels

    g = torch.Generator().manual_seed(0)
    crop = center_crop_indices(len(ds), ds.width, ds.height, 0.5)
    idx = crop[torch.randint(0, crop.numel(), (n_rays,), generator=g)]
    img, pix = idx // (ds.width * ds.height), idx % (ds.width * ds.height)
    # only the sampled pixels' rays (through their centres, as image_rays), not whole images
    uv = torch.stack([pix % ds.width, pix // ds.width], -1).to(ds.K.dtype) + 0.5
    o, d = rays_from_pixels(ds.K[img], ds.c2w[img], uv)
    kw = {}
    if getattr(model, "uses_times", False) and getattr(ds, "times", None) is not None:
        kw["times"] = ds.times[img].to(dev)
    if getattr(model, "uses_image_ids", False):
        kw["image_ids"] = img.to(dev)
    was = model.training
    model.eval()
    try:
        out = model(o.to(dev), d.to(dev), training=False, **kw)
    finally:
        model.train(was)
    return not bool((out["opacity"] > 0).any())


def _live_model(model, method, cfg, scene, dev, ds, seed: int, progress: bool, tries: int = 8):
    """``model``, or when it starts dead (:func:`field_is_dead`) the first of the networks drawn from
    seeds seed + 1, seed + 2, ... that is not, saying so (deterministic for a given seed)."""
    for k in range(1, tries + 1):
        if not field_is_dead(model, ds, dev):
            return model
        if progress:
            print(f"the field drawn from seed {seed + k - 1} sees no density on any training ray (its ReLU'd "
                  f"density is 0 everywhere, so it would never learn): drawing it again from seed {seed + k}",
                  file=sys.stderr, flush=True)
        torch.manual_seed(seed + k)
        model = method.build(cfg, scene, dev)
    torch.manual_seed(seed)
    return model


def center_crop_indices(n_images: int, width: int, height: int, frac: float = 0.5) -> torch.Tensor:
    """Flat indices (into all training rays, image after image, row-major) of the pixels in the
    central ``frac`` x ``frac`` crop of every image: D-NeRF's (and NeRF's) ``precrop``, which keeps a
    white-background scene from collapsing to "empty" in its first steps."""
    if not 0 < frac <= 1:
        raise ValueError(f"precrop_frac: expected a fraction in (0, 1], got {frac}")
    dh, dw = int(height // 2 * frac), int(width // 2 * frac)
    rows = torch.arange(height // 2 - dh, height // 2 + dh) if dh else torch.tensor([height // 2])
    cols = torch.arange(width // 2 - dw, width // 2 + dw) if dw else torch.tensor([width // 2])
    pix = (rows[:, None] * width + cols[None, :]).reshape(-1)
    return (torch.arange(n_images)[:, None] * (width * height) + pix[None]).reshape(-1)


def _frame_time(ds, i: int) -> float | None:
    times = getattr(ds, "times", None)
    return None if times is None else float(times[i])


def _val_psnr(model, val, n_views: int = 2) -> tuple[float, list]:
    from ..metrics import psnr

    vals, images = [], []
    for i in range(min(n_views, len(val))):
        r = render_image(model, val.K[i], val.c2w[i], val.width, val.height, time=_frame_time(val, i))
        vals.append(float(psnr(r["color"], val.images[i])))
        images.append(torch.cat([val.images[i], r["color"]], 1))
    return sum(vals) / max(len(vals), 1), images


def train(method, data: str, out: str | None = None, preset: str | None = None,
          max_steps: int | None = None, max_minutes: float | None = None, resume: bool = False,
          seed: int = 0, downscale: int | str | None = "auto", batch_size: int | None = None,
          device: str | None = None,
          overrides=None, val_every: int = 500, ckpt_every: int = 1000, progress: bool = True,
          log_every: int = 25, val_every_seconds: float | None = None, val_views: int = 1,
          min_steps: int = 0, on_step=None) -> Path:
    """Train the radiance-field method ``method`` (its :class:`~aware3d.methods.base.FieldMethod`)
    on the posed dataset at ``data``; returns the run folder.

    ``max_minutes`` counts training time only: data loading, kernel builds, the first step of each
    invocation (warm-up), validation, checkpoints and logging pause the clock, and a resumed run
    continues the clock where its checkpoint left it (``train_seconds``). It is checked before each
    step, so a run stops within one step of it, but not before ``min_steps`` steps (a floor for
    slow machines: the demo's result stays recognisable under load).
    Validation runs every ``val_every`` steps and/or every ``val_every_seconds`` of training time
    on ``val_views`` views; its PSNR is logged as ``val/psnr`` next to ``val/train_seconds``.
    ``on_step(step, model, scalars)`` runs after every step, outside the training clock (the
    viewer renders and pauses there); ``scalars`` holds ``loss``, ``psnr`` (the latest measured),
    ``train_seconds`` and ``max_steps``; returning ``"checkpoint"`` saves one now.
    """
    from tqdm import tqdm

    from ..data import load_scene

    name = method.name
    out = out or f"runs/{name}-{Path(data).name}"
    run_dir = Path(out)
    if resume:
        saved = io.load_run_config(run_dir)
        cfg, seed, downscale = saved["config"], saved["seed"], saved["downscale"]
        _refuse_changes_on_resume(method, run_dir, saved, data, preset, overrides, batch_size)
        data = saved["data"]
    else:
        cfg = method.make_config(preset, overrides, batch_size=batch_size)
    dev = pick_device(device)
    torch.manual_seed(seed)
    if downscale in (None, "auto"):
        downscale, why = auto_downscale(data, dev)
        if progress:
            print(why, file=sys.stderr, flush=True)
    train_ds = load_scene(data, "train", downscale=int(downscale))
    try:
        val_ds = load_scene(data, "val", downscale=downscale)
    except Exception:  # single-split formats: validate on a couple of training views
        val_ds = train_ds
    scene = scene_info(train_ds)
    scene["n_images"] = len(train_ds)
    run_cfg = {"config": cfg, "data": str(Path(data).resolve()), "seed": seed, "downscale": downscale,
               "scene": scene}
    run_dir = io.prepare_run_dir(run_dir, name, run_cfg, resume=resume, write=False)
    with io.RunLock(run_dir):  # one trainer per run folder
        io.clean_orphan_temps(run_dir, report=progress)
        model = method.build(cfg, scene, dev)
        if not resume:
            model = _live_model(model, method, cfg, scene, dev, train_ds, seed, progress)
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
        # the config is written once the checkpoint it resumes has loaded: a rejected resume changes nothing
        io.write_run_config(run_dir, name, run_cfg)

        # all training rays once, kept on the device; a step draws a random subset of them
        from ..render.cameras import image_rays
        o_all, d_all = image_rays(train_ds.K, train_ds.c2w, train_ds.width, train_ds.height)
        o_all, d_all = o_all.reshape(-1, 3).to(dev), d_all.reshape(-1, 3).to(dev)
        rgb_all = train_ds.images.reshape(-1, 3).to(dev)
        n_total = rgb_all.shape[0]
        uses_ids = getattr(model, "uses_image_ids", False)
        if uses_ids:
            ids_all = torch.arange(len(train_ds), device=dev).repeat_interleave(train_ds.width * train_ds.height)
        precrop_steps = int(cfg.get("precrop_steps") or 0)
        if precrop_steps > 0:
            crop_idx = center_crop_indices(len(train_ds), train_ds.width, train_ds.height,
                                           float(cfg.get("precrop_frac", 0.5))).to(dev)
        uses_times = getattr(model, "uses_times", False)
        if uses_times:
            if train_ds.times is None:
                raise ValueError(f"{data}: {name} reconstructs dynamic scenes, whose frames carry a 'time' in "
                                 f"[0, 1] (the D-NeRF format); this dataset has none (for a static scene "
                                 f"train nerf or ngp; `aware3d data synth scene OUT --dynamic` makes a dynamic one)")
            times_all = train_ds.times.to(dev).repeat_interleave(train_ds.width * train_ds.height)

        limit_steps = max_steps if max_steps is not None else (None if max_minutes else cfg.get("max_steps"))
        if progress:
            parts = ([f"{max_minutes:g} minutes of training"] if max_minutes is not None else []) + \
                    ([f"at most {limit_steps} steps"] if limit_steps is not None else []) + \
                    ([f"at least {min_steps} steps"] if min_steps and max_minutes is not None else [])
            budget = ", ".join(parts) or "until stopped"
            print(start_summary(name, data, train_ds, cfg, dev, run_dir, budget=budget, resume_step=step,
                                images=f"{len(train_ds)} training / {len(val_ds) if val_ds is not train_ds else 0} "
                                       f"validation images"), file=sys.stderr, flush=True)
        if getattr(model, "needs_kernels", False):
            prepare_kernels(dev)
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
                   desc=name)
        rays_seen, t_last, t_post, first, p = 0, time.time(), 0.0, True, float("nan")
        try:
            with io.install_sigint_checkpoint(checkpoint, defer=True) as guard:
                while True:
                    if limit_steps is not None and step >= limit_steps:
                        break
                    if budget_end is not None and train_seconds >= budget_end and step >= min_steps:
                        break
                    t_step = step_clock()
                    model.train()
                    model.before_step(step)
                    n_rays = model.n_rays if hasattr(model, "next_batch_rays") else cfg["batch_size"]
                    if step < precrop_steps:  # the central crop of each image first (D-NeRF's precrop)
                        idx = crop_idx[torch.randint(0, crop_idx.numel(), (n_rays,), device=dev)]
                    else:
                        idx = torch.randint(0, n_total, (n_rays,), device=dev)
                    for g in opt.param_groups:
                        g["lr"] = model.lr_at(step)
                    kw = {"image_ids": ids_all[idx]} if uses_ids else {}
                    if uses_times:
                        kw["times"] = times_all[idx]
                    out_ = model(o_all[idx], d_all[idx], training=True, **kw)
                    loss = model.loss(out_, rgb_all[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if hasattr(model, "next_batch_rays"):
                        model.next_batch_rays(out_.get("n_samples", 0))
                    step += 1
                    dt = step_clock() - t_step
                    if first:  # warm-up (allocator, lazy kernel loading, first-use caches): not budgeted
                        first = False
                        rays_seen, t_last = 0, time.time()
                        if progress and dt > 2.0:
                            bar.write(f"first step took {dt:.1f} s (warm-up; not counted in the training time)",
                                      file=sys.stderr)
                        log_now = True
                    else:
                        train_seconds += dt
                        rays_seen += n_rays
                        log_now = step % log_every == 0
                    state["step"] = step
                    now = time.time()
                    if log_now or now - t_post >= 2.0:  # the bar's numbers: live every 2 s and at logs
                        with torch.no_grad():
                            mse = (out_["color"].detach().clamp(0, 1) - rgb_all[idx]).square().mean()
                            p = float(-10 * torch.log10(mse))
                        rps = rays_seen / max(now - t_last, 1e-9) if rays_seen else 0.0
                        if log_now:
                            logger.log(step, {"train/loss": loss.item(), "train/psnr": p, "train/rays_per_s": rps,
                                              "train/lr": model.lr_at(step)})
                        post = dict(loss=f"{loss.item():.4f}", psnr=f"{p:.2f}", rays_s=f"{rps:,.0f}")
                        if budget_end is not None:
                            post["min_left"] = f"{max(budget_end - train_seconds, 0) / 60:.1f}"
                        bar.set_postfix(post, refresh=False)
                        t_post = now
                        if rays_seen and now - t_last >= 10.0:  # rays/s over the last ~10 s
                            rays_seen, t_last = 0, now
                    bar.update(1)
                    timed_val = next_val_time is not None and train_seconds >= next_val_time
                    if (val_every and step % val_every == 0) or timed_val:
                        model.eval()
                        vp, imgs = _val_psnr(model, val_ds, val_views)
                        logger.log(step, {"val/psnr": vp, "val/train_seconds": train_seconds})
                        io.save_png(run_dir / "val" / f"step_{step:08d}.png", imgs[0])
                        if timed_val:
                            next_val_time += val_every_seconds
                    wanted = None
                    if on_step is not None:
                        wanted = on_step(step, model, {"loss": loss.item(), "psnr": p, "max_steps": limit_steps,
                                                       "train_seconds": train_seconds})
                    if (ckpt_every and step % ckpt_every == 0) or wanted == "checkpoint":
                        checkpoint()
                    guard.check()
        finally:
            bar.close()
        checkpoint()
        logger.close()
        return run_dir


# pixels per training image that a step's ray sampling and the evaluation handle well on a CPU
# (lego at 400 x 400; the fox at 480 x 270) and on a GPU
PIXEL_BUDGET = {"cpu": 300_000, "cuda": 2_000_000}


def auto_downscale(data, device, split: str = "train", budget: int | None = None) -> tuple[int, str]:
    """The smallest downscale in 1, 2, 4, 8, 16 that brings the dataset's images within the pixel
    budget of ``device`` (:data:`PIXEL_BUDGET`), and a sentence saying what was chosen."""
    from ..data import load_scene

    budget = budget or PIXEL_BUDGET.get(torch.device(device).type, PIXEL_BUDGET["cpu"])
    first = load_scene(data, split, downscale=1, limit=1)
    w, h = first.width, first.height
    factor = next((f for f in (1, 2, 4, 8, 16) if (w // f) * (h // f) <= budget), 16)
    why = (f"--downscale auto: {w}x{h} images -> {w // factor}x{h // factor} (downscale {factor}; at most "
           f"{budget:,} pixels per image on {torch.device(device).type}; --downscale N sets it)")
    return factor, why


def _refuse_changes_on_resume(method, run_dir, saved: dict, data, preset, overrides, batch_size) -> None:
    """A resumed run continues with its stored settings: a --set, --preset, --batch-size or --data
    that differs from them is an error naming each (values equal to the stored ones are fine)."""
    from ..utils.settings import check_setting, field_types

    cfg = saved["config"]
    hints = field_types(method.config_cls)
    changed = []
    for k, v in list(overrides or ()) + ([("batch_size", batch_size)] if batch_size is not None else []):
        if k not in cfg:
            raise ValueError(f"--set {k}=...: unknown key for {method.name}; known: {', '.join(sorted(cfg))}")
        if check_setting(k, v, hints.get(k, object), cfg[k], method.name) != cfg[k]:
            changed.append(f"--set {k}={v} (the run has {cfg[k]!r})")
    if preset and preset != cfg.get("preset"):
        changed.append(f"--preset {preset} (the run has {cfg.get('preset')})")
    if data and Path(data).resolve() != Path(saved["data"]).resolve():
        changed.append(f"--data {data} (the run trains on {saved['data']})")
    if changed:
        raise ValueError(f"{run_dir}: --resume continues the run with its stored settings; these differ: "
                         f"{'; '.join(changed)}. Drop them, or train a new run into another --out.")


def start_summary(method: str, data, ds, cfg: dict, device, run_dir, budget: str, resume_step: int = 0,
                  images: str | None = None) -> str:
    """What a training run is about to do, printed before it starts: data (format, images,
    resolution), preset, device and threads, budget and run folder."""
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else None
    lines = [
        f"aware3d train {method}" + (f" (resuming at step {resume_step})" if resume_step else ""),
        f"  data:    {data} ({getattr(ds, 'format', '?')}; {images or f'{len(ds)} images'} at "
        f"{ds.width}x{ds.height})",
        f"  preset:  {cfg.get('preset', '?')}",
        f"  device:  {device}" + (f" ({threads} threads of {os.cpu_count()} cores)" if threads else ""),
        f"  budget:  {budget} (data loading, kernel builds and the first step's warm-up are not counted)",
        f"  run:     {run_dir}",
    ]
    return "\n".join(lines)


def prepare_kernels(device) -> None:
    """Build (or load) the compiled kernels before the training clock starts."""
    try:
        from ..kernels import ensure_built
    except ImportError:  # an aware3d without the ahead-of-time API
        return
    ensure_built(torch.device(device))


def restore(model: torch.nn.Module, run_dir, checkpoint=None) -> int:
    """Load the weights of a run's checkpoint (a step or a file; default the latest) into ``model``
    and put it in eval mode. Returns the checkpoint's step."""
    dev = next(model.parameters()).device
    ck = io.load_checkpoint(io.checkpoint_file(run_dir, checkpoint), map_location=dev)
    model.load_state_dict(ck["model"])
    model.eval()
    return int(ck.get("step", 0))


def evaluate(model, saved: dict, ds, out_dir, split: str = "test", progress: bool = True,
             max_views: int | None = None, metrics_name: str = "metrics.json") -> dict:
    """PSNR and SSIM per view and mean (and depth error where ground-truth depth exists) of
    ``model`` on the dataset split ``ds``; writes ``out_dir/<metrics_name>`` and side-by-side PNGs
    (ground truth | render | depth). ``saved`` is the run config (its scene's near / far colour the
    depth)."""
    from tqdm import tqdm

    from ..metrics import psnr, ssim

    n = len(ds) if max_views is None else min(len(ds), max_views)
    views = []
    out_dir = Path(out_dir)
    t0 = time.time()
    for i in tqdm(range(n), disable=not progress, desc=f"eval {split}"):
        r = render_image(model, ds.K[i], ds.c2w[i], ds.width, ds.height, time=_frame_time(ds, i))
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
    io.atomic_write_text(out_dir / metrics_name, json.dumps(metrics, indent=2))
    metrics["path"] = str(out_dir / metrics_name)
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


def density_grid(model, aabb, resolution: int, chunk: int = 2 ** 18) -> torch.Tensor:
    """``model.density`` on a resolution^3 grid over the box ``aabb`` (6,), indexed (x, y, z)."""
    from ..utils.mesh import grid_values

    aabb = torch.as_tensor(aabb, dtype=torch.float32)
    dev = next(model.parameters()).device
    return grid_values(lambda p: model.density(p.to(dev)), aabb[:3], aabb[3:], resolution, chunk)


def mesh_level(vol: torch.Tensor, threshold: float | None, default: float = 10.0) -> float:
    """The iso-level of a density volume: ``threshold`` when given; else ``default`` (10) where the
    field crosses it, the middle of the density range where the field never reaches it, and the
    median of the densities where it is above it everywhere. A field with nothing to mesh is a ValueError."""
    lo, hi = float(vol.min()), float(vol.max())
    if not (hi > lo):
        raise ValueError(f"the density is {lo:g} everywhere in the scene box: nothing to mesh (is the run "
                         f"trained?)")
    if threshold is not None:
        return float(threshold)
    if lo < default < hi:
        return default
    return 0.5 * (lo + hi) if hi <= default else float(vol.median())


def level_hint(vol: torch.Tensor) -> str:
    q = torch.quantile(vol.flatten()[:: max(1, vol.numel() // 1_000_000)],
                       torch.tensor([0.5, 0.9, 0.99])).tolist()
    return (f"the density over the box spans {float(vol.min()):.3g} to {float(vol.max()):.3g} (median "
            f"{q[0]:.3g}, 90th percentile {q[1]:.3g}, 99th {q[2]:.3g}); try --threshold {q[1]:.3g}")


@torch.no_grad()
def density_mesh(model, aabb, path, resolution: int = 256, threshold: float | None = None,
                 colors: bool = True, transform=None) -> dict:
    """Marching cubes of ``model.density`` on a resolution^3 grid over the box ``aabb`` (6,) at the
    level :func:`mesh_level` picks, written as PLY to ``path`` with vertex colours (the field's
    colour seen from the outside, along the surface normal) where the model has ``point_color``.
    Never writes an empty mesh: no surface at the level is a ValueError naming a level to try.
    ``transform`` (4, 4): written vertices are mapped by it (another frame, see ``FieldRun.frame``)."""
    from ..utils.mesh import marching_cubes_mesh, write_ply

    aabb = torch.as_tensor(aabb, dtype=torch.float32)
    vol = density_grid(model, aabb, resolution)
    level = mesh_level(vol, threshold)
    if not float(vol.min()) < level < float(vol.max()):
        raise ValueError(f"no surface at density level {level:g}: {level_hint(vol)}")
    verts, faces = marching_cubes_mesh(vol.numpy(), level, aabb[:3].numpy(), aabb[3:].numpy())
    if len(faces) == 0:
        raise ValueError(f"no surface at density level {level:g}: {level_hint(vol)}")
    rgb = None
    if colors and hasattr(model, "point_color"):
        rgb = vertex_colors(model, torch.from_numpy(verts), torch.from_numpy(faces.astype("int64")))
    if transform is not None:
        from ..data.normalize import transform_points

        verts = transform_points(transform, verts).astype(verts.dtype)
    write_ply(path, verts, faces, rgb)
    return {"path": str(path), "vertices": int(len(verts)), "faces": int(len(faces)), "level": level,
            "colors": rgb is not None}


def vertex_colors(model, verts: torch.Tensor, faces: torch.Tensor, chunk: int = 2 ** 16):
    """Colour (V, 3) in [0, 1] of each vertex: ``model.point_color`` a little outside the surface,
    looking into it along the vertex normal (from the faces; the density gradient's direction)."""
    import numpy as np

    v = verts.float()
    n = torch.zeros_like(v)
    tri = v[faces]
    fn = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    for k in range(3):
        n.index_add_(0, faces[:, k], fn)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    edge = float((tri[:, 1] - tri[:, 0]).norm(dim=-1).mean()) if len(faces) else 1e-3
    dev = next(model.parameters()).device
    out = []
    for a in range(0, v.shape[0], chunk):
        vv, nn_ = v[a:a + chunk].to(dev), n[a:a + chunk].to(dev)
        # outside is where the density is lower: orient each normal that way
        inward = model.density(vv + edge * nn_).float() > model.density(vv - edge * nn_).float()
        nn_ = torch.where(inward[:, None], -nn_, nn_)
        out.append(model.point_color(vv + 0.5 * edge * nn_, -nn_).float().clamp(0, 1).cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 3), np.float32)


@torch.no_grad()
def point_cloud(model, ds, num_points: int = 100_000, min_opacity: float = 0.5, seed: int = 0,
                chunk: int = 8192, max_rays: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Coloured points back-projected from rendered depth of the dataset's views (as nerfstudio's
    ``ns-export pointcloud``): random pixels of random views are rendered, rays whose opacity
    reaches ``min_opacity`` give the point o + depth d (depth: expected distance along the unit ray)
    with the rendered colour. Returns ``(points (P, 3), colors (P, 3))``, P <= ``num_points``."""
    from ..render.cameras import rays_from_pixels

    g = torch.Generator().manual_seed(int(seed))
    dev = next(model.parameters()).device
    n_views = len(ds)
    pts, cols, drawn = [], [], 0
    max_rays = max_rays or 4 * num_points
    while sum(len(p) for p in pts) < num_points and drawn < max_rays:
        n = min(chunk, max_rays - drawn)
        view = torch.randint(0, n_views, (n,), generator=g)
        uv = torch.stack([torch.rand(n, generator=g) * ds.width, torch.rand(n, generator=g) * ds.height], -1)
        o, d = rays_from_pixels(ds.K[view], ds.c2w[view], uv)
        out = model(o.to(dev), d.to(dev), training=False)
        keep = (out["opacity"] >= min_opacity).cpu()
        depth = (out["depth"].cpu() / out["opacity"].cpu().clamp_min(1e-6))[keep]  # depth given a hit
        pts.append(o[keep] + depth[:, None] * d[keep])
        cols.append(out["color"].float().clamp(0, 1).cpu()[keep])
        drawn += n
    points, colors = torch.cat(pts)[:num_points], torch.cat(cols)[:num_points]
    return points, colors
