"""How fast the viewer's frames are: the refined and coarse frames of a radiance-field run and the
image of a GAN run, as the viewer renders them (:mod:`aware3d.viewer.core`).

    python benchmarks/bench_viewer.py --field RUN [--gan RUN | --gan-preset objects64] [--threads 2]

``--field``: an ngp run (the issue's figure is an ngp run on lego; train one with
``aware3d train ngp --data ../shared/data/nerf_synthetic/lego --max-minutes 5 --out RUN``).
``--gan``: a GAN run; without it GIRAFFE's ``objects64`` preset networks are built with random
weights (the frame time does not depend on what the weights learnt). Each frame is timed from
8 camera positions around the scene (a warm-up frame first), and the median, the slowest and the
goal are printed. Results go to benchmarks/results/viewer.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _time(fn, n: int) -> list[float]:
    fn(0)  # warm-up
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def field_rows(run_dir: str, n: int) -> list[dict]:
    import aware3d
    from aware3d.viewer.core import FieldView, View

    run = aware3d.load(run_dir, device="cpu")
    fv = FieldView(run)
    fov = 2 * math.atan(0.5 * float(run.scene["height"]) / float(run.scene["K"][1][1]))
    rows = []
    for label, side, goal in (("refined 256x256", 256, 1.0), ("coarse 96x96", 96, 0.2)):
        def frame(i, side=side):
            fv.render(View(run.orbit_camera(azimuth_deg=45.0 * i).float(), fov, 1.0), side)
        t = _time(frame, n)
        rows.append({"what": f"{run.method.name} {Path(run_dir).name}: {label}", "median_s": statistics.median(t),
                     "max_s": max(t), "goal_s": goal})
    return rows


def gan_rows(run_dir: str | None, preset: str, n: int) -> list[dict]:
    from aware3d import registry
    from aware3d.methods.base import GenerativeRun
    from aware3d.viewer.core import GanControls

    if run_dir:
        import aware3d

        run = aware3d.load(run_dir, device="cpu")
        name = f"{run.method.name} {Path(run_dir).name}"
    else:
        m = registry.get("giraffe")
        cfg = m.make_config(preset)
        gan = m.build(cfg)
        if hasattr(gan, "prepare_inference"):
            gan.prepare_inference()
        G = gan.generator.eval().requires_grad_(False)
        run = GenerativeRun(m, Path("."), cfg, gan, G, step=0)
        name = f"giraffe {preset} (random weights)"
    c = GanControls(run)
    res = run.config.resolution

    def frame(i):
        c.yaw = c.ranges["yaw"][0] + (i * 37.0) % max(c.ranges["yaw"][1] - c.ranges["yaw"][0], 1.0)
        c.image()
    t = _time(frame, n)
    return [{"what": f"{name}: {res}x{res} image", "median_s": statistics.median(t), "max_s": max(t), "goal_s": 0.1}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--field", default=None, help="a radiance-field run folder (ngp on lego for the issue's figure)")
    ap.add_argument("--gan", default=None, help="a GAN run folder (default: GIRAFFE --gan-preset, random weights)")
    ap.add_argument("--gan-preset", default="objects64")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "viewer.json"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    if a.field:
        rows += field_rows(a.field, a.frames)
    rows += gan_rows(a.gan, a.gan_preset, a.frames)
    print(f"{'frame':<56} {'median':>9} {'slowest':>9} {'goal':>7}  met")
    for r in rows:
        print(f"{r['what']:<56} {r['median_s'] * 1000:>7.0f}ms {r['max_s'] * 1000:>7.0f}ms {r['goal_s'] * 1000:>5.0f}ms  "
              f"{'yes' if r['median_s'] <= r['goal_s'] else 'NO'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    info = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average_1min": load, "torch": torch.__version__, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(info, indent=2))
    print(f"{info['cpu']}, {info['cores']} cores, {info['threads']} threads, load {load}: wrote {a.out}")


if __name__ == "__main__":
    main()
