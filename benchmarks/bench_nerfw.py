"""NeRF-W benchmark on the synthetic "wild" scene: nerf, ngp, nerfw (mlp) and nerfw (ngp) trained for
the same wall-clock time, measured on the CLEAN test views.

Two numbers per run:
- ``full``: PSNR / SSIM of whole test views (nerfw renders the static scene with the mean training
  appearance; what `aware3d eval` reports);
- ``half``: the paper's protocol (`aware3d eval RUN --appearance-half left`): nerfw optimises each test
  view's appearance embedding on the left half and is measured on the right half; nerf / ngp have
  nothing to optimise and are measured on the same right halves.

    python benchmarks/bench_nerfw.py --minutes 3 --preset tiny
    python benchmarks/bench_nerfw.py --data /tmp/wild --configs nerfw-mlp nerf --minutes 2

Generates the scene first when --data does not exist (synth_wild_scene, --views, --resolution).
Prints a markdown table; writes benchmarks/results/nerfw_<scene>.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

CONFIGS = {  # name -> (method, overrides)
    "nerf": ("nerf", []),
    "ngp": ("ngp", []),
    "nerfw-mlp": ("nerfw", [("backbone", "mlp")]),
    "nerfw-ngp": ("nerfw", [("backbone", "ngp")]),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/aware3d-bench/wild64")
    ap.add_argument("--views", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--minutes", type=float, default=3.0, help="training minutes per config")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--half-steps", type=int, default=100,
                    help="appearance steps per test view (0: skip the half protocol, full images only)")
    ap.add_argument("--out", default="/tmp/aware3d-bench/nerfw-runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for the nerfw configs (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the run folders and results file")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    import aware3d
    from aware3d import registry
    from aware3d.methods import nerfw

    data = Path(a.data)
    if not (data / "transforms_train.json").exists():
        from aware3d.data.wild import synth_wild_scene

        synth_wild_scene(data, n_views=a.views, resolution=a.resolution, seed=0, progress=False)
    rows = []
    for name in a.configs:
        method, ov = CONFIGS[name]
        if method == "nerfw":
            ov = ov + [tuple(kv.split("=", 1)) for kv in a.sets]
        run = Path(a.out) / (name + a.tag)
        if run.exists():
            shutil.rmtree(run)
        t0 = time.time()
        registry.get(method).train(str(data), out=str(run), preset=a.preset, max_minutes=a.minutes,
                                   progress=False, val_every=0, ckpt_every=0, device=a.device,
                                   overrides=ov)
        wall = time.time() - t0
        from aware3d.train.io import load_checkpoint

        ck = load_checkpoint(run)
        steps, secs = int(ck["step"]), float(ck.get("train_seconds", 0.0))
        full = aware3d.load(run, device=a.device).evaluate(progress=False)
        # a fresh load: the appearance-half protocol freezes the model's parameters
        half = nerfw.evaluate_appearance_half(aware3d.load(run, device=a.device), steps=a.half_steps,
                                              progress=False) \
            if a.half_steps > 0 else {"psnr": float("nan"), "ssim": float("nan"), "psnr_left": float("nan")}
        row = {"config": name + a.tag, "method": method, "overrides": ov, "steps": steps, "train_seconds": secs,
               "ms_per_step": 1000 * secs / max(steps, 1), "wall_seconds": wall,
               "psnr_full": full["psnr"], "ssim_full": full["ssim"],
               "psnr_half": half["psnr"], "ssim_half": half["ssim"], "psnr_left": half["psnr_left"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"scene {data.name} ({a.resolution} px, {a.views} views), preset {a.preset}, "
          f"{a.minutes:g} min each, {a.threads} thread(s), device {a.device}")
    print("| config | steps | ms/step | test PSNR (full) | SSIM (full) | right-half PSNR | right-half SSIM |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['steps']} | {r['ms_per_step']:.0f} | {r['psnr_full']:.2f} | "
              f"{r['ssim_full']:.3f} | {r['psnr_half']:.2f} | {r['ssim_half'] or float('nan'):.3f} |")
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"nerfw_{data.name}{a.tag}.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
