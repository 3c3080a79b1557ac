"""Inception feature extraction (FID/KID) speed: the packaged TorchScript network as loaded vs the
frozen one aware3d runs (`aware3d.metrics.fid.InceptionFeatures`), in one run on the same inputs.
Also prints bf16 autocast for information: faster where the CPU has AMX, but its features differ
(~1.5% relative), so aware3d does not use it for the metrics.

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
            y = fn(x)  # warm-up (and the frozen graph's first-run optimisation)
            ts = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                y = fn(x)
                ts.append(time.perf_counter() - t0)
        return a.batch / min(ts), y.float().flatten(1)

    rows = []
    ref_speed, ref = timed(ex.reference_net)
    rows.append(("TorchScript as packaged (reference)", ref_speed, 0.0))
    speed, y = timed(ex.net)
    rows.append(("frozen (aware3d default)", speed, float((y - ref).abs().max())))
    if not a.no_bf16:
        speed, y = timed(ex.reference_net, autocast=True)
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
