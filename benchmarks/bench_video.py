"""CAM in time on video: nerv vs nerv + CAM and ffnerv vs ffnerv + CAM at equal steps and equal
parameters, and ffnerv with FFNeRV's flow-guided frame aggregation (``+agg``; the arms without it
have it turned off), on two short clips:

- ``synth``: 60 frames of 64x64 rendered by aware3d's ray caster (the "default_floor" scene, one
  turntable turn, :func:`aware3d.fit_video.synthetic_clip`);
- ``fox``: the 50 fox photos of instant-ngp's sample (sorted by name), area-resized to 48x96.

Equal parameters: CAM adds 2 * mod_res * (sum of block widths) parameters; the arm without CAM gets
the same number back as capacity (nerv: a wider stem hidden layer; ffnerv: more points in the
finest temporal grid), chosen to match within 0.5%.

Usage::

    python benchmarks/bench_video.py run --steps 4000          # both workers, one per core (taskset)
    python benchmarks/bench_video.py worker --arms synth:nerv,synth:nerv+cam --steps 4000
    python benchmarks/bench_video.py table                     # markdown table from the JSONs

Results: benchmarks/results/video/<video>_<arm>.json (metrics without the per-step curve) and
<video>_<arm>_psnr.png (per-frame PSNR).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results" / "video"
FOX = Path("/work/shared/data/instant_ngp/fox/images")
VIDEOS = {"synth": None, "fox": FOX}
ARMS = ("nerv", "nerv+cam", "ffnerv", "ffnerv+cam", "ffnerv+agg", "ffnerv+agg+cam")
MOD_RES = 16


def load(video: str) -> torch.Tensor:
    from aware3d.fit_video import load_frames, synthetic_clip

    if video == "synth":
        return synthetic_clip(60, 64)
    frames, _ = load_frames(VIDEOS[video], max_side=96, multiple=16)
    return frames


def matched_config(model: str, hw, cam: bool, agg: bool = False):
    """(config, overrides) for an arm; the arm without CAM gets CAM's parameter count back."""
    from aware3d.fields.nerv import CONFIGS, PAPER_AGG, NeRV, config_for_frames, count_parameters

    base = replace(CONFIGS[f"{model}-cpu"], agg=PAPER_AGG if agg else ())
    with_cam = count_parameters(NeRV(config_for_frames(base, *hw, mod_res=MOD_RES)))
    if cam:
        return base, with_cam
    best = None
    for k in range(0, 400):
        c = (replace(base, stem_hidden=(base.stem_hidden[0] + k,)) if model == "nerv"
             else replace(base, t_dims=(*base.t_dims[:-1], base.t_dims[-1] + k)))
        p = count_parameters(NeRV(config_for_frames(c, *hw)))
        if best is None or abs(p - with_cam) < abs(best[1] - with_cam):
            best = (c, p)
        if p > with_cam:
            break
    return best[0], with_cam


def worker(arms: list[str], steps: int, threads: int) -> None:
    from aware3d.fit import plot_curve
    from aware3d.fit_video import fit_video

    RES.mkdir(parents=True, exist_ok=True)
    cache = {}
    for spec in arms:
        video, arm = spec.split(":")
        frames = cache.setdefault(video, load(video))
        model, cam, agg = arm.split("+")[0], arm.endswith("+cam"), "+agg" in arm
        cfg, target = matched_config(model, frames.shape[1:3], cam, agg)
        t0 = time.time()
        m = fit_video(None, model, cam, steps, frames=frames, config=cfg, mod_res=MOD_RES, threads=threads,
                      write_files=False, seed=0, device="cpu")
        m.update(video=video, arm=arm, wall_s=time.time() - t0, params_target=target)
        stem = f"{video}_{arm.replace('+', '_')}"
        plot_curve([(i, v) for i, v in enumerate(m["psnr_per_frame"])], RES / f"{stem}_psnr.png",
                   xlabel="frame", title=f"{video}: {arm}, PSNR {m['psnr']:.2f} dB")
        (RES / f"{stem}.json").write_text(json.dumps(m, indent=1))
        print(f"{spec}: PSNR {m['psnr']:.2f} MS-SSIM {m['ms_ssim']:.4f} params {m['params']} "
              f"({m['seconds']:.0f} s train)", flush=True)


def table() -> str:
    rows = ["| video | arm | parameters | bpp (fp16) | steps (epochs) | PSNR (dB) | MS-SSIM (scales) | "
            "worst-frame PSNR | train s | train CPU s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for video in VIDEOS:
        for arm in ARMS:
            f = RES / f"{video}_{arm.replace('+', '_')}.json"
            if not f.exists():
                continue
            m = json.loads(f.read_text())
            rows.append(f"| {video} ({m['frames']} x {m['size'][0]}x{m['size'][1]}) | {arm} | {m['params']:,} | "
                        f"{m['bpp_fp16']:.2f} | {m['steps']} ({m['epochs']:.0f}) | {m['psnr']:.2f} | "
                        f"{m['ms_ssim']:.4f} ({m['ms_ssim_levels']}) | {min(m['psnr_per_frame']):.2f} | "
                        f"{m['seconds']:.0f} | {m.get('cpu_seconds', float('nan')):.0f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("run", "worker", "table"))
    ap.add_argument("--arms", default=None, help="comma-separated video:arm (worker mode)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--videos", default="synth,fox")
    ap.add_argument("--only", default=None, help="comma-separated arms (run mode; default all)")
    a = ap.parse_args()
    if a.mode == "worker":
        worker(a.arms.split(","), a.steps, threads=1)
    elif a.mode == "table":
        print(table())
    else:
        arms = a.only.split(",") if a.only else ARMS
        specs = [f"{v}:{arm}" for v in a.videos.split(",") for arm in arms]
        # one worker per core; each worker alternates arms so both cores see the same mix
        halves = [specs[0::2], specs[1::2]]
        procs = []
        for core, arms in enumerate(halves):
            cmd = ["taskset", "-c", str(core % (os.cpu_count() or 1)), sys.executable, __file__, "worker",
                   "--arms", ",".join(arms), "--steps", str(a.steps)]
            print(" ".join(cmd), flush=True)
            procs.append(subprocess.Popen(cmd))
        for p in procs:
            p.wait()
        print(table())


if __name__ == "__main__":
    main()
