"""Ray-marching throughput through an occupancy grid: compiled vs reference (rays/s).

Scene: box [-1,1]^3, 128^3 grid whose occupied cells form a sphere shell (radius 0.5-0.6, ~6% of
the cells, like a trained object), rays from a camera ring at radius 2.5 aimed near the centre,
default step sqrt(3)/1024 x 2. Also times render_weights_packed forward+backward on the samples.

    python benchmarks/bench_marching.py [--rays 4096 16384] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from aware3d.kernels import _build
from aware3d.kernels.marching import OccupancyGrid, march_rays, render_weights_packed


def scene(n_rays: int, res: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    grid = OccupancyGrid(resolution=res)
    r = grid.cell_centers().norm(dim=-1)
    grid.binary.copy_((r > 0.5) & (r < 0.6))
    ang = torch.rand(n_rays, generator=gen) * 6.2832
    o = torch.stack([2.5 * ang.cos(), 2.5 * ang.sin(), torch.rand(n_rays, generator=gen) - 0.5], -1)
    target = (torch.rand(n_rays, 3, generator=gen) - 0.5) * 1.2
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return grid, o, d


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rays", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    _build.require_extension("cpu")
    print(f"compiled kernels ready in {time.perf_counter() - t0:.1f} s (build or cache load)")
    print(f"\nmarching 128^3 grid, shell occupancy, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| op | backend | rays | samples | ms | rays/s |")
    print("|---|---|---|---|---|---|")
    for n in args.rays:
        grid, o, d = scene(n)
        for backend in ("compiled", "reference"):
            out = march_rays(o, d, 0.0, 10.0, grid, backend=backend)
            sec = median_time(lambda: march_rays(o, d, 0.0, 10.0, grid, backend=backend),
                              args.repeats)
            print(f"| march_rays | {backend} | {n} | {out[0].numel()} | {sec * 1e3:.1f} | "
                  f"{n / sec / 1e6:.3f} M |", flush=True)
        ri, t0s, t1s = out
        sig = torch.rand(ri.numel()).mul(20).requires_grad_(True)
        for backend in ("compiled", "reference"):
            def step():
                w, T = render_weights_packed(sig, t1s - t0s, ri, n, backend=backend)
                (w.sum() + T.sum()).backward()
            sec = median_time(step, args.repeats)
            print(f"| weights fwd+bwd | {backend} | {n} | {ri.numel()} | {sec * 1e3:.1f} | "
                  f"{n / sec / 1e6:.3f} M |", flush=True)


if __name__ == "__main__":
    main()
