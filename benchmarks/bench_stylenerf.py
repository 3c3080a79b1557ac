"""StyleNeRF: parameters and inference time per image (EMA-style eval generator, no gradients).

    .venv/bin/python benchmarks/bench_stylenerf.py [--presets cpu64 ffhq256] [--batches 1 16] [--repeats 3]

Prints one line per (preset, batch): generator / discriminator parameters and ms per image (the
best of ``repeats`` timed calls after one warm-up), at the preset's resolution, fully grown.
"""
from __future__ import annotations

import argparse
import time

import torch

from aware3d.methods import stylenerf as sn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["cpu64", "ffhq256"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in a.presets:
        m = sn.build(sn.make_config(preset))
        G = m.generator.eval().requires_grad_(False)
        nG = sum(p.numel() for p in G.parameters())
        nD = sum(p.numel() for p in m.discriminator.parameters())
        for b in a.batches:
            x = sn.sample_inputs(m.cfg, b, torch.Generator().manual_seed(0), train=False)
            with torch.no_grad():
                G(x)
                best = float("inf")
                for _ in range(a.repeats):
                    t = time.perf_counter()
                    G(x)
                    best = min(best, time.perf_counter() - t)
            print(f"{preset:10s} {m.cfg.resolution:4d}px  G {nG:>10,d}  D {nD:>10,d}  batch {b:3d}  "
                  f"{1000 * best / b:9.1f} ms/image")


if __name__ == "__main__":
    main()
