"""Scene contraction on a real capture (ngp): marching step rule, then contract on vs off.

Part ``stepping``: on the training rays of the capture, an ngp model (preset cpu, contraction on)
trains --steps steps twice, once with steps that grow as ||u||^2 beyond the inner cube (about
uniform in contracted space, the default) and once with exponential cone steps only
(--cone, instant-ngp's 1/256 for large scenes); it reports marched samples per ray and time per
step over the steps after the first 10.

Part ``ab``: two `aware3d train ngp` runs at equal wall-clock, at the same time, one core each
(``taskset -c 0`` / ``-c 1``): ``--set contract=true`` and ``--set contract=false``
(--background sets background_model for both, default auto: learnt on a capture without alpha;
``--baseline-fixed`` gives the contract=false run the fixed background, today's behaviour);
then `aware3d eval` (test PSNR) and one orbit frame of each, with its pixel statistics.

    python benchmarks/bench_contraction.py --data ../shared/data/instant_ngp/fox --minutes 4

Prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_recon import cpu_model  # noqa: E402

AWARE3D = [sys.executable, "-m", "aware3d"]


def stepping(data: str, steps: int, cone: float, downscale: int | str = "auto") -> list[dict]:
    from aware3d.data import load_scene
    from aware3d.methods import ngp
    from aware3d.render.cameras import image_rays
    from aware3d.train.recon import auto_downscale, prepare_kernels, scene_info

    dev = torch.device("cpu")
    if downscale == "auto":
        downscale = auto_downscale(data, dev)[0]
    ds = load_scene(data, "train", downscale=int(downscale))
    scene = scene_info(ds)
    o, d = image_rays(ds.K, ds.c2w, ds.width, ds.height)
    o, d, rgb = o.reshape(-1, 3), d.reshape(-1, 3), ds.images.reshape(-1, 3)
    prepare_kernels(dev)
    rows = []
    for name, contract_steps, cone_angle in (("||u||^2 steps (uniform in contracted space)", True, 0.0),
                                             (f"cone steps only, cone {cone:g}", False, cone)):
        torch.manual_seed(0)
        cfg = ngp.METHOD.make_config("cpu", [("contract", True), ("cone_angle", cone_angle)])
        model = ngp.METHOD.build(cfg, scene, dev)
        model.contract_steps = contract_steps
        opt = model.make_optimizer()
        per_ray, secs = [], []
        for step in range(steps):
            t = time.perf_counter()
            model.before_step(step)
            idx = torch.randint(0, rgb.shape[0], (model.n_rays,))
            out = model(o[idx], d[idx], training=True)
            loss = model.loss(out, rgb[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.next_batch_rays(out["n_samples"])
            if step >= 10:
                secs.append(time.perf_counter() - t)
                per_ray.append(out["n_samples"] / idx.numel())
        with torch.no_grad():  # samples per ray of the final grid, before early termination
            idx = torch.randint(0, rgb.shape[0], (4096,))
            ri, _, _ = model._march(o[idx], d[idx])
        rows.append({"variant": name, "samples_per_ray_training": sum(per_ray) / len(per_ray),
                     "marched_per_ray_end": ri.numel() / 4096, "seconds_per_step": sum(secs) / len(secs),
                     "psnr_last": float(-10 * torch.log10(loss.detach()))})
    return rows


def _train(data, out, contract, background, minutes, core, downscale):
    cmd = ["taskset", "-c", str(core), *AWARE3D, "train", "ngp", "--data", data, "--out", str(out),
           "--downscale", str(downscale), "--max-minutes", str(minutes), "--preset", "cpu",
           "--set", f"contract={str(contract).lower()}", "--set", f"background_model={background}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return cmd, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def ab(data, minutes, out_root: Path, background: str, baseline_fixed: bool, downscale, frames: int,
       eval_views: int = 2) -> list[dict]:
    runs = {"contract on": (out_root / "on", True, background),
            "contract off": (out_root / "off", False, "fixed" if baseline_fixed else background)}
    procs = []
    for core, (label, (out, contract, bg)) in enumerate(runs.items()):
        cmd, p = _train(data, out, contract, bg, minutes, core, downscale)
        print("$", " ".join(cmd[3:]), flush=True)
        procs.append(p)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"training failed ({p.args})")
    rows = []
    for label, (out, contract, bg) in runs.items():
        subprocess.run([*AWARE3D, "eval", str(out), "--max-views", str(eval_views)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        metrics = json.loads(max((out / "eval").glob("metrics*.json")).read_text())
        subprocess.run([*AWARE3D, "render", str(out), "--program", "orbit", "--frames", str(frames)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pngs = sorted((out / "render" / "orbit").glob("*.png"))
        from PIL import Image

        img = torch.tensor(list(Image.open(pngs[0]).convert("RGB").getdata()), dtype=torch.float32) / 255
        saved = json.loads((out / "config.json").read_text())
        ckpts = sorted((out / "checkpoints").glob("*.pt"))
        step = max((int(m.group()) for c in ckpts if (m := re.search(r"\d+", c.stem))), default=-1)
        rows.append({"run": label, "contract": saved["config"]["contract"],
                     "background": saved["config"]["background_model"], "steps": step,
                     "psnr": metrics.get("psnr"), "ssim": metrics.get("ssim"),
                     "frame": str(pngs[0]), "frame_mean": img.mean().item(), "frame_std": img.std().item(),
                     "frame_white": (img.min(dim=-1).values > 0.97).float().mean().item()})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared/data/instant_ngp/fox"))
    ap.add_argument("--part", choices=["stepping", "ab", "both"], default="both")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--cone", type=float, default=1 / 256)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--downscale", default="auto")
    ap.add_argument("--background", default="auto")
    ap.add_argument("--baseline-fixed", action="store_true")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--eval-views", type=int, default=2, help="test views evaluated (a contracted "
                    "270x480 view takes minutes on 2 loaded cores)")
    ap.add_argument("--out", default="/tmp/bench_contraction")
    a = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}  {cpu_model()}  torch {torch.__version__}")
    if a.part in ("stepping", "both"):
        rows = stepping(a.data, a.steps, a.cone, a.downscale)
        print(f"\n| step rule | samples/ray (training) | marched/ray (end) | s/step | train PSNR (last) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['variant']} | {r['samples_per_ray_training']:.1f} | {r['marched_per_ray_end']:.1f} | "
                  f"{r['seconds_per_step']:.3f} | {r['psnr_last']:.2f} |")
    if a.part in ("ab", "both"):
        rows = ab(a.data, a.minutes, Path(a.out), a.background, a.baseline_fixed, a.downscale, a.frames, a.eval_views)
        print(f"\n| run ({a.minutes:g} min, 1 core each) | contract | background | steps | test PSNR | SSIM | "
              f"orbit frame mean / std / white share |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['contract']} | {r['background']} | {r['steps']} | {r['psnr']:.2f} | "
                  f"{r['ssim']:.3f} | {r['frame_mean']:.3f} / {r['frame_std']:.3f} / {r['frame_white']:.3f} |")
        for r in rows:
            print(f"frame of {r['run']}: {r['frame']}")


if __name__ == "__main__":
    main()
