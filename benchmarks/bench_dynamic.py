"""Dynamic-scene benchmark: D-NeRF and T-NeRF, MLP and hash-grid backbones, with and without CAM, at
equal training time on the built-in dynamic scene.

Makes the scene once (``aware3d data synth scene DATA --dynamic --views V --resolution R``), then
trains every configuration for --minutes of training time (the loop's clock: data loading, kernel
builds and the first step's warm-up are not counted; with ``--clock cpu``, the default, the loop's
clock is the process's CPU time, so other jobs on the machine do not shorten a run) two at a time, one pinned per core
(``taskset -c 0`` / ``taskset -c 1``, OMP_NUM_THREADS=1 so torch runs one thread), then evaluates
each run on its core with ``aware3d eval RUN`` (PSNR / SSIM on every test view at its held-out
time). Parameters are counted from the loaded model; steps are the last checkpoint's.

    python benchmarks/bench_dynamic.py --minutes 5
    python benchmarks/bench_dynamic.py --minutes 3 --parallel 8   # all at once, 4 pinned per core
    python benchmarks/bench_dynamic.py --minutes 5 --only mlp     # one backbone
    python benchmarks/bench_dynamic.py --table                    # print the table of what ran

Writes benchmarks/results/dynamic/<config>.json per run and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AWARE3D = [sys.executable, "-m", "aware3d"]
# training with the loop's step clock on the process's CPU time (--clock cpu): other jobs sharing
# the cores then do not shorten a run's budget
CPU_CLOCK = [sys.executable, "-c", "import sys, time; import aware3d.train.recon as r; "
             "r.step_clock = time.process_time; from aware3d.cli import main; sys.exit(main(sys.argv[1:]))"]
CONFIGS = [(m, b, c) for b in ("mlp", "ngp") for c in (False, True) for m in ("dnerf", "tnerf")]
# (the MLP backbone's cpu preset, D-NeRF's 8 x 256 networks with 64 + 128 samples, takes ~12 s of one
# core per step: ~20 steps in a few minutes; the benchmark's MLP runs use the tiny preset by default)


def name_of(method: str, backbone: str, cam: bool) -> str:
    return f"{method}-{backbone}{'-cam' if cam else ''}"


def train_cmd(a, method, backbone, cam, run: Path) -> list[str]:
    cmd = [*(CPU_CLOCK if a.clock == "cpu" else AWARE3D), "train", method, "--data", str(a.data), "--out", str(run), "--max-minutes", str(a.minutes),
           "--backbone", backbone, "--seed", "0", "--preset", a.preset_mlp if backbone == "mlp" else a.preset_ngp]
    return cmd + (["--cam"] if cam else []) + [x for kv in a.set for x in ("--set", kv)]


def launch(cmd: list[str], core: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    f = open(log, "a")
    f.write("$ taskset -c %d %s\n" % (core, " ".join(cmd)))
    f.flush()
    return subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=f, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT)


def summarize(run: Path) -> dict:
    import torch

    import aware3d
    from aware3d.train import io

    r = aware3d.load(run, device="cpu")
    ck = torch.load(io.latest_checkpoint(run), map_location="cpu", weights_only=False)
    m = json.loads((run / "eval" / "metrics.json").read_text())
    return {"params": sum(p.numel() for p in r.model.parameters()), "steps": int(ck["step"]),
            "train_seconds": float(ck.get("train_seconds", 0.0)), "psnr": m["psnr"], "ssim": m.get("ssim"),
            "n_views": m.get("n_views")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/aware3d-bench-dynamic/scene"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dynamic")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/aware3d-bench-dynamic"))
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--views", type=int, default=120)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="the training budget in the process's CPU time (default) or wall-clock time")
    ap.add_argument("--parallel", type=int, default=2,
                    help="runs at a time, pinned alternately to cores 0 and 1 (default 2: one per core)")
    ap.add_argument("--preset-mlp", default="tiny", help="preset of the MLP-backbone runs (default tiny)")
    ap.add_argument("--preset-ngp", default="cpu", help="preset of the hash-grid runs (default cpu)")
    ap.add_argument("--only", choices=("mlp", "ngp"), default=None, help="one backbone")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE passed to every run")
    ap.add_argument("--table", action="store_true", help="only print the table of the stored results")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.table:
        if not (a.data / "transforms_train.json").is_file():
            subprocess.run([*AWARE3D, "data", "synth", "scene", str(a.data), "--dynamic", "--views", str(a.views),
                            "--resolution", str(a.resolution)], check=True, cwd=ROOT)
        todo = [c for c in CONFIGS if a.only in (None, c[1])]
        a.runs.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(todo), a.parallel):
            pair = todo[i:i + a.parallel]
            procs = []
            for k, (m, b, c) in enumerate(pair):
                run = a.runs / name_of(m, b, c)
                procs.append(launch(train_cmd(a, m, b, c, run), k % 2, a.runs / f"{name_of(m, b, c)}.log"))
            for p in procs:
                p.wait()
            procs = [launch([*AWARE3D, "eval", str(a.runs / name_of(m, b, c))], k % 2,
                            a.runs / f"{name_of(m, b, c)}.log") for k, (m, b, c) in enumerate(pair)]
            for p in procs:
                p.wait()
            for (m, b, c) in pair:
                run = a.runs / name_of(m, b, c)
                row = {"method": m, "backbone": b, "cam": c, "minutes": a.minutes,
                       "clock": a.clock,
                       "command": " ".join(["aware3d", *train_cmd(a, m, b, c, run)[len(CPU_CLOCK if a.clock == "cpu" else AWARE3D):]]),
                       "date": time.strftime("%Y-%m-%d"), **summarize(run)}
                (a.out / f"{name_of(m, b, c)}.json").write_text(json.dumps(row, indent=1))
                print(json.dumps(row), flush=True)
    print("| method | backbone | CAM | parameters | steps | test PSNR | test SSIM |")
    print("|---|---|---|---:|---:|---:|---:|")
    for m, b, c in CONFIGS:
        f = a.out / f"{name_of(m, b, c)}.json"
        if f.is_file():
            r = json.loads(f.read_text())
            print(f"| {m} | {b} | {'yes' if c else 'no'} | {r['params']:,} | {r['steps']:,} | {r['psnr']:.2f} | "
                  f"{r['ssim']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
