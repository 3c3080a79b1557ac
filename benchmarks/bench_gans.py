"""The 3D-aware GANs side by side: size, speed, 3D consistency and (optionally) FID after a few
minutes of training. One markdown table for every GAN module present (giraffe, graf, pigan,
hologan, cips3d; missing ones are skipped).

Per method, on its CPU preset rendered at 64 x 64:

- parameters of G and D;
- ms per generated image (EMA-style inference, no gradient) at batch 1 and batch 16;
- 3D consistency: one sample rendered from two camera yaws ``--yaw-step`` degrees apart; every
  pixel of the second view with a surface (opacity > 0.5) is lifted to 3D with its depth,
  projected into the first view and compared with the depth rendered there
  (:func:`aware3d.methods.gan_common.depth_reprojection_error`, mean |error| relative to the depth).
  GIRAFFE and CIPS-3D: the depth of their radiance / feature field at the volume-rendering
  resolution (their images come from a 2D renderer on top, which this does not test); HoloGAN has
  no density field, so none;
- with ``--minutes M``: each of ``--train`` (default graf, pigan) is trained on its CPU preset for M
  minutes in ``--points`` chunks; after each chunk FID/KID on ``--fid-n`` generated images against
  the first ``--fid-real`` real images (at the training resolution; small N: biased upwards, only
  comparable within this table). ``fid_vs_minutes.png`` plots FID against training minutes.

    python benchmarks/bench_gans.py --threads 2                       # size, speed, consistency
    python benchmarks/bench_gans.py --minutes 4 --points 2 --fid-n 200 --data ../shared/data/celeba_10k
    python benchmarks/bench_gans.py --minutes 4 --data synth          # synth_objects (generated)

Writes ``results.json``, ``table.md`` and the plot to ``--out`` (default ``out/bench_gans``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

ALL = ("giraffe", "graf", "pigan", "hologan", "cips3d", "stylenerf", "volumegan")

# CPU presets (faces / synthetic objects) and what makes them render 64 x 64
SPECS = {
    "giraffe": dict(faces="cpu32_faces", objects="cpu64", res64=dict(resolution=64)),
    "graf": dict(faces="cpu32_faces", objects="cpu32", res64=dict(resolution=64, patch=32)),
    # pi-GAN keeps its progressive growing: the CPU presets' 16 -> 32 stages, then 64 from step 1200
    "pigan": dict(faces="cpu32_faces", objects="cpu32",
                  res64=dict(stages=((0, 16, 8, 2e-4, 4e-4), (400, 32, 8, 2e-4, 4e-4),
                                     (1200, 64, 8, 2e-4, 4e-4)), resolution=64)),
    "hologan": dict(faces="cpu", objects="cpu_objects", res64=dict(resolution=64)),
    "cips3d": dict(faces="cpu", objects="cpu_objects", res64=dict(resolution=64)),
    "stylenerf": dict(faces="cpu64", objects="cpu64_objects", res64=dict(resolution=64)),
    "volumegan": dict(faces="cpu", objects="cpu_objects", res64=dict(resolution=64)),
}
COLORS = {"giraffe": (31, 119, 180), "graf": (214, 39, 40), "pigan": (44, 160, 44),
          "hologan": (148, 103, 189), "cips3d": (255, 127, 14), "stylenerf": (140, 86, 75),
          "volumegan": (227, 119, 194)}


def load_module(name: str):
    if importlib.util.find_spec(f"aware3d.methods.{name}") is None:
        return None
    try:
        return importlib.import_module(f"aware3d.methods.{name}")
    except Exception as e:  # a module mid-edit by someone else: skip it, say why
        print(f"skipping {name}: import failed ({type(e).__name__}: {e})")
        return None


def build(mod, preset: str, **overrides):
    """(cfg, method) as inference sees it: ``prepare_inference()`` sets e.g. pi-GAN's render
    resolution to the final one (its first training stage renders at 16 x 16)."""
    cfg = mod.METHOD.make_config(preset, **overrides)
    torch.manual_seed(0)
    method = mod.METHOD.build(cfg)
    if hasattr(method, "prepare_inference"):
        method.prepare_inference()
    return cfg, method


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def ms_per_image(method, batch: int, reps: int) -> float:
    G = method.generator.eval()
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(reps + 1):
        x = method.sample_inputs(batch, g, train=False)
        t0 = time.perf_counter()
        G(x)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch


# --------------------------------------------------------------------------------------------------
# 3D consistency


@torch.no_grad()
def consistency(name: str, mod, cfg, method, G, yaw_step: float) -> dict:
    """Depth reprojection error between two yaws of one sample, or {"none": reason}."""
    from aware3d.methods.gan_common import depth_reprojection_error
    from aware3d.render.cameras import intrinsics_from_fov

    g = torch.Generator().manual_seed(0)
    G = G.eval()
    views = []
    if name == "hologan":
        return {"none": "no density field: 3D features are projected by a learnt 2D unit"}
    if name == "giraffe":
        from aware3d.render.compose import compose
        from aware3d.render.volume import volume_render

        x = method.sample_inputs(1, g, train=False)
        el = 0.5 * (cfg.elevation_range[0] + cfg.elevation_range[1])
        az = 0.5 * (cfg.azimuth_range[0] + cfg.azimuth_range[1])
        res = cfg.feature_res
        for dy in (0.0, yaw_step):
            x["c2w"] = method.camera_pose(torch.tensor([el]), torch.tensor([az + dy]))
            sig, feat, t = G.entity_fields(x)
            s, f = compose(sig, feat)
            out = volume_render(s, f, t)
            acc = out["opacity"].reshape(res, res)
            views.append((out["depth"].reshape(res, res) / acc.clamp_min(1e-6), acc > 0.5, x["c2w"][0]))
        note = f"feature-field depth {res}^2, 2D renderer on top"
    else:  # camera_from_angles / angle_ranges interface (gan_common)
        r = method.angle_ranges()
        yaw, pitch = r["yaw"][2], r["pitch"][2]
        x = method.sample_inputs(1, g, train=False)
        for dy in (0.0, yaw_step):
            x["c2w"] = method.camera_from_angles(torch.tensor([yaw + dy]), torch.tensor([pitch]))
            if name in ("cips3d", "stylenerf", "volumegan"):  # depth of the NeRF features
                d = G(x, return_aux=True)["depth"][0]
                views.append((d, d > 0, x["c2w"][0]))
            else:
                out = G(x, return_dict=True)
                views.append((out["depth"][0] / out["opacity"][0].clamp_min(1e-6), out["opacity"][0] > 0.5,
                              x["c2w"][0]))
        res = views[0][0].shape[-1]
        note = f"image depth {res}^2" if name not in ("cips3d", "stylenerf", "volumegan") else \
            f"NeRF feature depth {res}^2, 2D decoder on top"
    K = intrinsics_from_fov(cfg.fov, res)
    (da, ma, ca), (db, mb, cb) = views
    err = depth_reprojection_error(da, db, K, ca, cb, ma, mb)
    err["note"] = note
    return err


# --------------------------------------------------------------------------------------------------
# FID after training


def real_images(data: str, res: int, n: int) -> torch.Tensor:
    from aware3d.data.imagefolder import ImageFolderDataset

    ds = ImageFolderDataset(data, res, flip=False, limit=n)
    n = len(ds) if n is None else min(n, len(ds))
    return ds.images[:n].float() / 255.0 if ds.images is not None else \
        torch.stack([ds.uint8(i) for i in range(n)]).float() / 255.0


def load_trained(name: str, mod, run: Path, step: int | None = None):
    """(cfg, method, G) of a run's EMA generator (its checkpoint at ``step``, default the latest)
    on the CPU: the settings dataclass, the method object (``sample_inputs``, ``image_range``) and
    the EMA generator in eval mode."""
    loaded = mod.METHOD.load(run, device="cpu", checkpoint=step)
    return loaded.config, loaded.gan, loaded.G


def fid_of_run(name: str, mod, run: Path, data: str, n_gen: int, n_real: int | None,
               step: int | None = None) -> dict:
    """FID/KID of the EMA generator of ``run`` (its checkpoint at ``step``, default the latest)
    against the first ``n_real`` real images (all of them when None or 0)."""
    from aware3d.methods import gan_common as gc
    from aware3d.metrics.fid import compute_fid_kid

    cfg, method, G = load_trained(name, mod, run, step)
    sample = method.sample_inputs
    image_range = method.image_range
    g = torch.Generator().manual_seed(123)

    @torch.no_grad()
    def generate(n):
        return gc.to_unit(G(sample(n, g, train=False)), image_range)

    real = real_images(data, cfg.resolution, n_real or None)
    res = compute_fid_kid(generate, real, n_gen, batch_size=50, progress=False,
                          cache_key=f"{Path(data).resolve()}@{cfg.resolution}@first{n_real or 'all'}")
    return dict(res, n_real=int(real.shape[0]))


def save_grid(method, G, path: Path) -> None:
    """The 8x8 sample grid of the table (64 samples, seed 7: the same latents at every point)."""
    from aware3d.methods import gan_common as gc
    from aware3d.train.io import make_grid, save_png

    with torch.no_grad():
        imgs = gc.to_unit(G(method.sample_inputs(64, torch.Generator().manual_seed(7), train=False)),
                          method.image_range)
    save_png(path, make_grid(imgs.float().permute(0, 2, 3, 1), nrow=8))


def grids(src: Path, prefix: str) -> int:
    """The sample grid of every curve point of a finished (or kept, ``--keep-generators``) run,
    rendered again from its checkpoint: ``<prefix>_<minutes>min.png``."""
    saved = json.loads((src / "results.json").read_text())
    for name, row in saved["results"].items():
        mod = load_module(name)
        for p in row.get("curve", []):
            path = Path(f"{prefix}_{p['minutes']:g}min.png")
            save_grid(*load_trained(name, mod, src / "runs" / name, p["steps"])[1:], path)
            print(f"  {name}: step {p['steps']} -> {path}")
    return 0


def train_curve(name: str, mod, preset: str, data: str, out: Path, at_minutes: list[float],
                n_gen: int, n_real: int, overrides: dict | None = None, defer_fid: bool = False) -> list[dict]:
    """Train ``name`` until each of ``at_minutes`` (training wall clock: FID and sample grids pause
    it, a resumed chunk continues the run), then FID/KID of the EMA generator and an 8x8 sample
    grid (``runs/NAME/curve_<minutes>min.png``). ``defer_fid``: train through every point first
    (saving a checkpoint at each), then measure FID on those checkpoints: one uninterrupted
    training process, and the FID of the early points is not paid for inside the training budget."""
    from aware3d.methods.gan_common import checkpoint_step

    run = out / "runs" / name
    if run.exists():
        import shutil

        shutil.rmtree(run)
    curve, done = [], 0.0
    for p, m in enumerate(at_minutes):
        t0 = time.time()
        mod.METHOD.train(data, str(run), preset=preset, max_minutes=m - done, resume=p > 0, seed=0,
                         sample_every=100000, checkpoint_every=100000, **(overrides or {}))
        done = m
        steps = checkpoint_step(run)
        t1 = time.time()
        save_grid(*load_trained(name, mod, run)[1:], run / f"curve_{m:g}min.png")
        curve.append({"minutes": round(done, 2), "steps": steps, "train_wall_s": round(t1 - t0, 1)})
        print(f"  {name}: {done:g} min, {steps} steps", flush=True)
        if not defer_fid and n_gen > 0:
            add_fid(name, mod, run, data, n_gen, n_real, curve[-1])
    if defer_fid and n_gen > 0:
        for point in curve:
            add_fid(name, mod, run, data, n_gen, n_real, point)
    return curve


def add_fid(name: str, mod, run: Path, data: str, n_gen: int, n_real: int | None, point: dict) -> dict:
    """FID/KID of the run's checkpoint at ``point["steps"]`` into ``point`` (metric named after
    the number of generated images)."""
    t1 = time.time()
    at = f"{point['minutes']:g} min (step {point['steps']})" if point.get("minutes") is not None \
        else f"step {point['steps']}"
    print(f"  {name}: measuring fid{n_gen // 1000}k at {at}, started {time.strftime('%H:%M:%S')}",
          flush=True)
    res = fid_of_run(name, mod, run, data, n_gen, n_real, step=point["steps"])
    fid_key = next(k for k in res if k.startswith("fid"))
    kid_key = next(k for k in res if k.startswith("kid") and not k.endswith("_std"))
    point.update(fid=res[fid_key], kid=res[kid_key], metric=fid_key, n_real=res.get("n_real"),
                 fid_wall_s=round(time.time() - t1, 1))
    print(f"  {name}: {at}, {fid_key} {res[fid_key]:.1f}, "
          f"{kid_key} {res[kid_key]:.4f}", flush=True)
    return point


# --------------------------------------------------------------------------------------------------
# Plot (matplotlib, through aware3d.fit.plot_curve: legend outside the axes)


def _has_fid(point: dict) -> bool:
    return "fid" in point and math.isfinite(point["fid"])


def plot_curves(curves: dict, path: Path, title: str) -> Path:
    """FID vs training minutes, one line per method in its fixed colour."""
    from aware3d.fit import plot_curve

    series = {name: [(c["minutes"], c["fid"]) for c in curve if _has_fid(c)] for name, curve in curves.items()}
    metric = title.split(" ")[0]
    return plot_curve(series, path, title, xlabel="training minutes", ylabel=metric,
                      colours={k: COLORS[k] for k in series if k in COLORS}, x_from_zero=True)


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--train", default="graf,pigan", help="methods to train when --minutes > 0")
    ap.add_argument("--minutes", type=float, default=0.0)
    ap.add_argument("--points", type=int, default=2, help="FID evaluations along the training "
                    "(equal chunks of --minutes; --at overrides)")
    ap.add_argument("--at", type=float, nargs="+", default=None,
                    help="training minutes at which to measure FID (e.g. 15 30 60)")
    ap.add_argument("--native-res", action="store_true",
                    help="train at the CPU preset's own resolution instead of 64 x 64")
    ap.add_argument("--synth-count", type=int, default=2000)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the trained methods (YAML value), repeatable")
    ap.add_argument("--merge", nargs="+", default=None, metavar="OUT",
                    help="only merge the results.json of these --out folders (or results files) into "
                    "one table and plot")
    ap.add_argument("--speed", default=None, metavar="OUT",
                    help="with --merge: take every method's ms/img from this run (a run without "
                    "training, so that all methods are timed alike)")
    ap.add_argument("--data", default="../shared/data/celeba_10k", help="image folder or 'synth'")
    ap.add_argument("--fid-n", type=int, default=200,
                    help="generated images per FID point (0: train and keep the checkpoints only; "
                    "measure later with --refid)")
    ap.add_argument("--fid-real", type=int, default=1000, help="real images for FID (0: all)")
    ap.add_argument("--defer-fid", action="store_true",
                    help="train through every --at point first, then measure FID on their checkpoints")
    ap.add_argument("--refid", default=None, metavar="OUT",
                    help="only re-measure the FID curve of a finished run of this script (its "
                    "results.json and kept checkpoints) with --fid-n / --fid-real, into --out "
                    "(written after every point; points --out already has with this protocol are kept)")
    ap.add_argument("--follow", default=None, metavar="OUT",
                    help="measure FID (--fid-n / --fid-real) of every checkpoint of the training run "
                    "in OUT/runs/NAME (NAME from --methods) as it appears, while it trains on another "
                    "core; points go to OUT/follow_fid/ (one file each), which --refid then reuses. Stops after "
                    "--points checkpoints, or once OUT/results.json has no point left unmeasured")
    ap.add_argument("--newest-first", action="store_true",
                    help="with --follow: measure the newest unmeasured checkpoint first")
    ap.add_argument("--keep-generators", nargs=2, default=None, metavar=("OUT", "DEST"),
                    help="copy a finished run of this script (OUT/results.json, OUT/follow_fid/, "
                    "OUT/runs/NAME configs) into DEST with only the EMA generator of each kept "
                    "checkpoint: small enough to keep, and --refid DEST measures it later")
    ap.add_argument("--grids", nargs=2, default=None, metavar=("OUT", "PREFIX"),
                    help="render the sample grid of every curve point of OUT (a run of this script "
                         "or a --keep-generators folder) again, to PREFIX_<minutes>min.png")
    ap.add_argument("--yaw-step", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="training budget clock: wall (the loop's own clock) or cpu (this process's "
                         "CPU time: on a shared machine, steps close to what an idle core gives)")
    ap.add_argument("--out", default="out/bench_gans")
    args = ap.parse_args(argv)
    if args.clock == "cpu":
        from aware3d.train import gan as gan_engine

        gan_engine.step_clock = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.merge, out, args.speed)
    if args.refid:
        return refid(Path(args.refid), out, args.fid_n, args.fid_real)
    if args.follow:
        return follow(Path(args.follow), args.methods.split(",")[0].strip(), args.data, args.fid_n,
                      args.fid_real, args.points, newest_first=args.newest_first)
    if args.grids:
        return grids(Path(args.grids[0]), args.grids[1])
    if args.keep_generators:
        return keep_generators(Path(args.keep_generators[0]), Path(args.keep_generators[1]))
    at = args.at or [args.minutes * (p + 1) / args.points for p in range(args.points)]
    if args.at:
        args.minutes = max(args.at)
    data, kind = args.data, "faces"
    if (Path(data) / "labels.json").is_file():  # a `data synth objects` folder: the objects presets
        kind = "objects"
    if data == "synth":
        from aware3d.data.synth import synth_objects

        data, kind = str(out / "synth_objects"), "objects"
        if not (Path(data) / "labels.json").is_file():
            synth_objects(data, count=args.synth_count, resolution=32 if args.native_res else 64,
                          objects=(1, 2), progress=False, num_threads=torch.get_num_threads())

    results = {}
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        mod = load_module(name)
        if mod is None:
            print(f"skipping {name}: no module aware3d.methods.{name}")
            continue
        spec = SPECS[name]
        preset = spec[kind]
        cfg, method = build(mod, preset, **spec["res64"])
        row = {"preset": f"{preset} @64", "params_G": n_params(method.generator),
               "params_D": n_params(method.discriminator)}
        row["ms_b1"] = ms_per_image(method, 1, args.reps)
        row["ms_b16"] = ms_per_image(method, 16, max(1, args.reps - 1))
        try:
            row["consistency"] = consistency(name, mod, cfg, method, method.generator, args.yaw_step)
            if "note" in row["consistency"]:
                row["consistency"]["note"] += ", untrained"
        except Exception as e:  # an API that moved: report instead of failing the whole table
            row["consistency"] = {"none": f"failed: {type(e).__name__}: {e}"}
        print(f"{name}: G {row['params_G']:,} D {row['params_D']:,} params, {row['ms_b1']:.1f} ms/img (b1), "
              f"{row['ms_b16']:.1f} ms/img (b16), consistency {row['consistency']}")
        if args.minutes > 0 and name in args.train.split(","):
            row["train_preset"] = preset
            row["train_res"] = "native" if args.native_res else 64
            import yaml

            ov = {} if args.native_res else dict(spec["res64"])
            ov.update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.sets)})
            row["overrides"] = ov
            row["curve"] = train_curve(name, mod, preset, data, out, at, args.fid_n, args.fid_real, ov,
                                       defer_fid=args.defer_fid)
            if "none" not in row["consistency"]:  # 3D consistency of the trained EMA generator
                tcfg, tmethod, tG = load_trained(name, mod, out / "runs" / name)
                row["consistency"] = consistency(name, mod, tcfg, tmethod, tG, args.yaw_step)
                row["consistency"]["note"] += f", trained {args.minutes:g} min"
        results[name] = row

    write_outputs(results, out, {"torch": torch.__version__, "threads": torch.get_num_threads(), "clock": args.clock,
                                 "cpu": platform.processor(), "args": vars(args), "data": data})
    return 0


def write_outputs(results: dict, out: Path, meta: dict) -> None:
    """results.json, table.md and (when any method has a curve) fid_vs_minutes.png in ``out``."""
    lines = ["| method | preset | params G / D | ms/img b1 | ms/img b16 | depth reproj. err (rel / abs) | FID (min: value) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        c = r["consistency"]
        cons = c["none"] if "none" in c else (
            f"{100 * c['mean_rel']:.2f}% / {c['mean_abs']:.4f} ({c['n_valid']} px, {c['note']})"
            if c["n_valid"] else f"no overlapping surface ({c['note']})")
        fid = ", ".join(f"{p['minutes']:g}: {p['fid']:.1f}" if "fid" in p else f"{p['minutes']:g}: -"
                        for p in r.get("curve", [])) or "-"
        lines.append(f"| {name} | {r['preset']} | {r['params_G'] / 1e6:.3f}M / {r['params_D'] / 1e6:.3f}M | "
                     f"{r['ms_b1']:.1f} | {r['ms_b16']:.1f} | {cons} | {fid} |")
    table = "\n".join(lines)
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    (out / "table.md").write_text(table + "\n")
    print()
    print(table)
    curves = {k: v["curve"] for k, v in results.items() if "curve" in v}
    if curves:
        a = meta.get("args", {})
        metric = next(c["metric"] for v in curves.values() for c in v if "metric" in c) if any(
            "metric" in c for v in curves.values() for c in v) else "FID"
        p = plot_curves(curves, out / "fid_vs_minutes.png",
                        f"{metric} vs training minutes on {Path(str(meta.get('data', a.get('data', '')))).name}")
        print(f"plot: {p}")


def _results_file(f) -> Path:
    """An --out folder of this script (its results.json) or a results file itself."""
    f = Path(f)
    return f if f.is_file() else f / "results.json"


def merge(folders: list, out: Path, speed: str | None = None) -> int:
    """One table and one plot from several runs of this script (e.g. one process per method).
    With ``speed`` (a run of this script without training), every method's ms/img are taken from
    that one run, so that all of them were timed by the same code on the same machine state."""
    results, metas = {}, []
    for f in folders:
        saved = json.loads(_results_file(f).read_text())
        results.update(saved["results"])
        metas.append(saved["meta"])
    meta = {"merged": [str(f) for f in folders], "data": metas[0].get("data", ""),
            "threads": [m.get("threads") for m in metas]}
    if speed:
        timed = json.loads(_results_file(speed).read_text())["results"]
        for name, row in results.items():
            if name in timed:
                row["ms_b1"], row["ms_b16"] = timed[name]["ms_b1"], timed[name]["ms_b16"]
                row["ms_source"] = str(speed)
        meta["speed"] = str(speed)
    write_outputs(results, out, meta)
    return 0


_FID_KEYS = ("fid", "kid", "metric", "n_real", "fid_wall_s")  # what add_fid writes into a point


def _protocol(n_gen: int, n_real: int | None) -> dict:
    return dict(fid_n=n_gen, fid_real=n_real or "all")


def _followed_points(src: Path, n_gen: int, n_real: int | None) -> dict:
    """{(name, step): point} that ``follow`` measured in ``src`` with this protocol."""
    points = {}
    for f in sorted((src / "follow_fid").glob("*.json")):
        saved = json.loads(f.read_text())
        if saved.get("protocol") == _protocol(n_gen, n_real):
            points[(saved["name"], int(saved["steps"]))] = saved["point"]
    return points


def _claim(path: Path) -> bool:
    """Take ``path`` (a claim file holding our pid) unless a live process holds it."""
    import os

    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(path.read_text() or 0), 0)
                return False  # a live follower measures it
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # its follower died: take it over
                continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def follow(out: Path, name: str, data: str, n_gen: int, n_real: int | None, points: int,
           newest_first: bool = False, poll_s: float = 20.0) -> int:
    """FID of each checkpoint of the run ``out``/runs/``name`` as the trainer writes it (this runs
    beside the trainer, on another core): one file per point in ``out``/follow_fid/, each written
    atomically. Several followers may share a run (each claims a point before measuring it; e.g.
    one ``newest_first`` on the trainer's core once it is done). Ends after ``points`` measured
    checkpoints, or once ``out``/results.json exists and each of its points is measured."""
    from aware3d.train.io import _CKPT_RE, list_checkpoints
    from aware3d.utils.atomic import atomic_write_text

    if n_gen <= 0:
        raise SystemExit("--follow needs --fid-n > 0")
    mod = load_module(name)
    run, fdir = out / "runs" / name, out / "follow_fid"
    fdir.mkdir(parents=True, exist_ok=True)
    print(f"following {run}", flush=True)
    while True:
        measured = {s for (nm, s) in _followed_points(out, n_gen, n_real) if nm == name}
        steps = [int(_CKPT_RE.match(p.name).group(1)) for p in list_checkpoints(run)]
        steps = steps[::-1] if newest_first else steps
        todo = [s for s in steps if s not in measured]
        claimed = next((s for s in todo if _claim(fdir / f"{name}_step_{s:08d}.claim")), None)
        if claimed is not None:
            point = {"steps": claimed, "minutes": None}
            try:
                add_fid(name, mod, run, data, n_gen, n_real, point)
                atomic_write_text(fdir / f"{name}_step_{claimed:08d}.json", json.dumps(dict(
                    protocol=_protocol(n_gen, n_real), name=name, steps=claimed,
                    point={k: point[k] for k in _FID_KEYS}), indent=2))
            finally:
                (fdir / f"{name}_step_{claimed:08d}.claim").unlink(missing_ok=True)
            continue
        if len(measured) >= points:
            return 0
        if (out / "results.json").is_file():
            curve = json.loads((out / "results.json").read_text())["results"].get(name, {}).get("curve", [])
            if curve and all(p["steps"] in measured for p in curve):
                return 0
        time.sleep(poll_s)


def keep_generators(src: Path, dest: Path) -> int:
    """``src`` (a finished run of this script) -> ``dest`` with results, configs and, of every
    kept checkpoint, only its step and EMA generator (what FID and the render programs load)."""
    import io
    import shutil

    from aware3d.train.io import list_checkpoints, load_checkpoint
    from aware3d.utils.atomic import atomic_write_bytes

    dest.mkdir(parents=True, exist_ok=True)
    if (src / "results.json").is_file():
        shutil.copyfile(src / "results.json", dest / "results.json")
    for f in sorted((src / "follow_fid").glob("*.json")):
        (dest / "follow_fid").mkdir(exist_ok=True)
        shutil.copyfile(f, dest / "follow_fid" / f.name)
    total = 0
    for run in sorted((src / "runs").glob("*")):
        for fname in ("config.json", "config.yaml"):
            if (run / fname).is_file():
                (dest / "runs" / run.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run / fname, dest / "runs" / run.name / fname)
        for ck in list_checkpoints(run):
            state = load_checkpoint(ck)
            key = "G_ema" if "G_ema" in state else "G"
            buf = io.BytesIO()
            torch.save({"step": state["step"], key: state[key]}, buf)
            atomic_write_bytes(dest / "runs" / run.name / "checkpoints" / ck.name, buf.getvalue())
            total += buf.tell()
            print(f"  {ck} -> {dest / 'runs' / run.name / 'checkpoints' / ck.name} ({buf.tell() / 1e6:.2f} MB)")
    print(f"kept {total / 1e6:.1f} MB in {dest}")
    return 0


def refid(src: Path, out: Path, n_gen: int, n_real: int) -> int:
    """The FID curve of a finished run (``src``/results.json and ``src``/runs/NAME checkpoints)
    re-measured with another protocol (e.g. fid5k against the whole real set). ``out``/results.json
    is rewritten after every point, and a point it already holds with this protocol is not measured
    again, so an interrupted re-measurement continues where it stopped (``out`` may be ``src``)."""
    from aware3d.utils.atomic import atomic_write_text

    saved = json.loads((src / "results.json").read_text())
    done = {}
    if (out / "results.json").is_file():
        prev = json.loads((out / "results.json").read_text())
        prev_refid = prev.get("meta", {}).get("refid", {})
        if {k: prev_refid.get(k) for k in ("fid_n", "fid_real")} == _protocol(n_gen, n_real):
            done = {(name, p["steps"]): p for name, row in prev["results"].items()
                    for p in row.get("curve", []) if "fid" in p}
    for key, p in _followed_points(src, n_gen, n_real).items():  # measured while it trained
        done.setdefault(key, p)
    data = saved["meta"]["data"]
    meta = dict(saved["meta"], refid=dict(source=str(src), **_protocol(n_gen, n_real)))
    todo = [(name, p) for name, row in saved["results"].items() for p in row.get("curve", [])]
    for name, point in todo:  # reset every point first: a half-updated file never mixes protocols
        for k in _FID_KEYS:
            point.pop(k, None)
        point.update({k: v for k, v in done.get((name, point["steps"]), {}).items() if k in _FID_KEYS})
    for name, point in todo:
        if "fid" in point:
            print(f"  {name}: {point['minutes']:g} min already measured ({point['fid']:.1f})", flush=True)
            continue
        add_fid(name, load_module(name), src / "runs" / name, data, n_gen, n_real, point)
        atomic_write_text(out / "results.json",
                          json.dumps({"meta": meta, "results": saved["results"]}, indent=2, default=str))
    write_outputs(saved["results"], out, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
