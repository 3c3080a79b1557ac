"""Inception feature extraction (FID/KID) speed: the packaged TorchScript network as aware3d runs
it (fp32, `aware3d.metrics.fid.InceptionFeatures`), the same network frozen with
`torch.jit.freeze` + `optimize_for_inference`, and bf16 autocast, in one run on the same inputs
(each warmed up first: TorchScript optimises a graph over its first calls, and timing a cold
network makes anything measured after it look faster). bf16 is faster where the CPU has AMX, but
its features differ (~1.5% relative), so aware3d does not use it for the metrics.

    python benchmarks/bench_inception.py --threads 2 --batch 50 --reps 3

Prints a markdown table (images/s, speed-up, max |feature difference| against the reference).
"""
from __future__ import annotations

import argparse
import platform
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-bf16", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from aware3d.metrics.fid import InceptionFeatures

    ex = InceptionFeatures(device="cpu", progress=False)
    x = ex.preprocess(torch.rand(a.batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)))

    def timed(fn, autocast=False):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(3):  # warm-up: TorchScript's profiling executor optimises over the first calls
                y = fn(x)
            ts = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                y = fn(x)
                ts.append(time.perf_counter() - t0)
        return a.batch / min(ts), y.float().flatten(1)

    rows = []
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(ex.net.eval()))
    ref_speed, ref = timed(ex.net)
    rows.append(("TorchScript as packaged (aware3d)", ref_speed, 0.0))
    speed, y = timed(frozen)
    rows.append(("frozen + optimize_for_inference (not used)", speed, float((y - ref).abs().max())))
    if not a.no_bf16:
        speed, y = timed(ex.net, autocast=True)
        rows.append(("bf16 autocast (not used)", speed, float((y - ref).abs().max())))
    print(f"threads {torch.get_num_threads()}, batch {a.batch}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}; max |feature| {float(ref.abs().max()):.2f}")
    print("| path | images/s | speed-up | max abs feature diff |")
    print("|---|---|---|---|")
    for name, s, diff in rows:
        print(f"| {name} | {s:.2f} | {s / ref_speed:.2f}x | {diff:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
