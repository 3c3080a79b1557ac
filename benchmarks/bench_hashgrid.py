"""Hash-grid encoding throughput: forward + backward (grad w.r.t. the table), compiled vs reference.

Paper settings (Instant-NGP): L=16 levels, F=2, T=2^19, N_min=16, N_max=2048, float32.
Prints one markdown table row per (backend, batch): median time of a forward+backward and
samples/s. The compiled kernels are built (or loaded from cache) before timing.

    python benchmarks/bench_hashgrid.py [--batches 16 18] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from aware3d.kernels import _build
from aware3d.kernels.hashgrid import grid_resolutions, hash_encode


def time_fwd_bwd(x: torch.Tensor, table: torch.Tensor, res: list[int], backend: str,
                 repeats: int) -> tuple[float, float]:
    """Median seconds of forward alone and of forward+backward."""
    grad = torch.randn(x.shape[0], table.shape[0] * table.shape[2])
    fwd, both = [], []
    for i in range(repeats + 1):  # first round warms up (allocator, caches)
        t0 = time.perf_counter()
        with torch.no_grad():
            hash_encode(x, table, res, backend=backend)
        t1 = time.perf_counter()
        table.grad = None
        out = hash_encode(x, table, res, backend=backend)
        out.backward(grad)
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            both.append(t2 - t1)
    return statistics.median(fwd), statistics.median(both)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 18], help="log2 batch sizes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backends", nargs="+", default=["compiled", "reference"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "compiled" in args.backends:
        t0 = time.perf_counter()
        _build.require_extension("cpu")
        print(f"compiled kernels ready in {time.perf_counter() - t0:.1f} s (build or cache load)")

    torch.manual_seed(0)
    L, F, T = 16, 2, 2 ** 19
    res = grid_resolutions(L, 16, 2048)
    table = torch.empty(L, T, F).uniform_(-1e-4, 1e-4).requires_grad_(True)
    print(f"\nhash grid L={L} F={F} T=2^19 N=16..2048 float32, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}\n")
    print("| backend | batch | fwd ms | fwd+bwd ms | fwd+bwd samples/s |")
    print("|---|---|---|---|---|")
    for lb in args.batches:
        x = torch.rand(2 ** lb, 3)
        for backend in args.backends:
            fwd, both = time_fwd_bwd(x, table, res, backend, args.repeats)
            print(f"| {backend} | 2^{lb} | {fwd * 1e3:.1f} | {both * 1e3:.1f} | "
                  f"{x.shape[0] / both / 1e6:.2f} M |", flush=True)


if __name__ == "__main__":
    main()
