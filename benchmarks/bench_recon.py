"""Reconstruction benchmark: ngp vs nerf on a Blender scene at equal wall-clock budgets.

For each method: train on `train`, pause the clock at each checkpoint minute, measure mean PSNR on
the whole `val` split, continue. A quick 2-view validation every --probe-seconds of training time
locates when each method first reaches --target dB (the ratio of those times is the speed-up).
Also times the render of one full val frame.

    python benchmarks/bench_recon.py --data ../shared/data/nerf_synthetic/lego --downscale 4 \
        --ngp-minutes 1 3 10 --nerf-minutes 1 3 10 20

Prints a table; writes the numbers to benchmarks/results/recon_<scene>_<downscale>.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
        cores = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("CPU(s)"))
        return f"{name}, {cores} cores"
    except Exception:
        return platform.processor()


def first_time_reaching(run: Path, target: float) -> float | None:
    rows = list(csv.DictReader(open(run / "scalars.csv")))
    by_step: dict[int, dict] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), {})[r["tag"]] = float(r["value"])
    for step in sorted(by_step):
        v = by_step[step]
        if "val/psnr" in v and v["val/psnr"] >= target:
            return v["val/train_seconds"]
    return None


def bench_method(method: str, data: str, downscale: int, minutes: list[float], out: Path,
                 probe_seconds: float, preset: str | None, device: str | None,
                 eval_views: int | None = None) -> dict:
    import aware3d
    from aware3d import registry
    from aware3d.data import load_scene
    from aware3d.train.recon import render_image

    run = out / method
    if run.exists():
        import shutil
        shutil.rmtree(run)
    results, done = [], 0.0
    for m in minutes:
        registry.get(method).train(data, out=str(run), preset=preset, max_minutes=m - done,
                                   resume=done > 0, downscale=downscale, device=device, val_every=0,
                                   val_every_seconds=probe_seconds or None, val_views=2, ckpt_every=0)
        done = m
        metrics = aware3d.load(run, device=device).evaluate(split="val", max_views=eval_views)
        results.append({"minutes": m, "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"],
                        "val_views": metrics["n_views"]})
        print(f"  {method} @ {m:g} min: val PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}",
              flush=True)
    model = aware3d.load(run, device=device).model
    ds = load_scene(data, "val", downscale=downscale)
    render_image(model, ds.K[0], ds.c2w[0], ds.width, ds.height)  # warm-up
    t0 = time.perf_counter()
    render_image(model, ds.K[0], ds.c2w[0], ds.width, ds.height)
    frame_s = time.perf_counter() - t0
    return {"method": method, "checkpoints": results, "frame_seconds": frame_s,
            "frame_size": [ds.width, ds.height], "run": str(run)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/nerf_synthetic/lego"))
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--ngp-minutes", type=float, nargs="+", default=[1, 3, 10])
    ap.add_argument("--nerf-minutes", type=float, nargs="+", default=[1, 3, 10, 20])
    ap.add_argument("--methods", nargs="+", default=["ngp", "nerf"])
    ap.add_argument("--target", type=float, default=25.0)
    ap.add_argument("--probe-seconds", type=float, default=15.0,
                    help="training seconds between 2-view validation probes (0: none)")
    ap.add_argument("--nerf-probe-seconds", type=float, default=0.0,
                    help="probes for nerf (default none: one 200x200 nerf frame takes about a minute "
                         "on 2 CPU cores; its time to the target is then bounded by the checkpoints)")
    ap.add_argument("--eval-views", type=int, default=None,
                    help="val views measured at each checkpoint (default all)")
    ap.add_argument("--nerf-eval-views", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/runs")
    ap.add_argument("--device", default=None)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice, all cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    res = Path("benchmarks/results")
    res.mkdir(parents=True, exist_ok=True)
    res_file = res / f"recon_{Path(args.data).name}_ds{args.downscale}.json"

    def others() -> list:  # rows of methods this invocation does not run (read at write time)
        saved = json.loads(res_file.read_text()) if res_file.exists() else {"rows": []}
        return [r for r in saved.get("rows", []) if r["method"] not in args.methods]

    rows = []
    for method in args.methods:
        nerf = method == "nerf"
        minutes = args.nerf_minutes if nerf else args.ngp_minutes
        r = bench_method(method, args.data, args.downscale, minutes, out,
                         args.nerf_probe_seconds if nerf else args.probe_seconds, args.preset,
                         args.device, args.nerf_eval_views if nerf else args.eval_views)
        t = first_time_reaching(Path(r["run"]), args.target)
        if t is None:  # no probe saw it: bound it by the checkpoints
            hit = [c["minutes"] * 60 for c in r["checkpoints"] if c["val_psnr"] >= args.target]
            r["seconds_to_target_upper_bound"] = min(hit) if hit else None
        r["seconds_to_target"] = t
        rows.append(r)
        res_file.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": others() + rows},
                                       indent=2))
    rows = others() + rows
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name(0) if dev.startswith("cuda") else cpu_model()
    print()
    print(f"{Path(args.data).name} at 1/{args.downscale} resolution, trained on train, PSNR on val "
          f"({machine}, {torch.get_num_threads()} threads, torch {torch.__version__})")
    all_m = sorted({c["minutes"] for r in rows for c in r["checkpoints"]})
    head = f"{'method':<8}" + "".join(f"{f'{m:g} min':>10}" for m in all_m) + \
        f"{f'to {args.target:g} dB':>14}{'frame (s)':>11}"
    print(head)
    for r in rows:
        by = {c["minutes"]: c["val_psnr"] for c in r["checkpoints"]}
        t = r["seconds_to_target"]
        ub = r.get("seconds_to_target_upper_bound")
        t_s = f"{t:.0f} s" if t is not None else (f"<= {ub:.0f} s" if ub else f"> {max(by) * 60:.0f} s")
        print(f"{r['method']:<8}" + "".join(f"{by[m]:>10.2f}" if m in by else f"{'-':>10}" for m in all_m)
              + f"{t_s:>14}{r['frame_seconds']:>11.2f}")
    times = {r["method"]: r["seconds_to_target"] for r in rows}
    if times.get("ngp"):
        nerf_t = times.get("nerf")
        if nerf_t:
            print(f"speed-up to {args.target:g} dB: {nerf_t / times['ngp']:.1f}x")
        elif "nerf" in times:
            budget = max(c["minutes"] for r in rows if r["method"] == "nerf" for c in r["checkpoints"]) * 60
            print(f"speed-up to {args.target:g} dB: > {budget / times['ngp']:.1f}x (nerf did not reach it)")
    res_file.write_text(json.dumps({"machine": machine, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
                                    "rows": rows},
                                   indent=2))


if __name__ == "__main__":
    main()
