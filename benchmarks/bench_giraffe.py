"""GIRAFFE speed on this machine: ms per image and the G + D + R1 training step, against the
matmul peaks measured in the same run.

    python benchmarks/bench_giraffe.py [--threads N] [--repeats 3] [--clock wall|cpu] [--quick]

Rows: generation (EMA generator, no grad) at 64x64 (``celeba64`` preset) with batch 1 and 16 and
at 256x256 (``celebahq256``) with batch 1 and 4; one training step (generator phase, discriminator
phase with R1, EMA) at 64x64 with the paper's batch 32, with the discriminator in fp32 (default)
and in bf16 (``bf16_d=True``). FLOPs are counted by
``torch.utils.flop_counter`` (matmuls, convolutions, their backward passes) over exactly the work
timed; GFLOP/s = counted FLOPs / best time over ``--repeats`` (wall clock, or CPU seconds with
``--clock cpu``). The fp32 and bf16 peaks are
the best of a few 2048^3 matmuls. The load average is printed: on a shared machine other
processes take cores and the numbers drop.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from aware3d.methods import giraffe as gm
from aware3d.train.gan import GanEngine, tune_cpu_allocator


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of this process)


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times)


class _FlopCount(TorchDispatchMode):
    """FLOPs of every aten op torch's flop counter knows (matmul, conv and their backward).
    (FlopCounterMode's module hooks refuse the double backward of R1, so count at dispatch.)"""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        f = flop_registry.get(func._overloadpacket)
        if f is not None:
            self.flops += f(*args, **kwargs, out_val=out)
        return out


def count_flops(fn) -> float:
    with _FlopCount() as fc:
        fn()
    return float(fc.flops)


def matmul_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / best_time(lambda: a @ b, repeats, warmup=2) / 1e9


class RandomReal:
    def __init__(self, res):
        self.res = res

    def sample(self, n, generator=None):
        return torch.rand(n, 3, self.res, self.res, generator=generator) * 2 - 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 256x256 rows")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast in the generator")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU seconds of this process (with --threads 1, robust to other "
                         "processes sharing the cores; peaks are measured the same way)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    torch.manual_seed(0)
    load0 = os.getloadavg()
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    rows = []

    def add(name, seconds, flops, images):
        gfs = flops / seconds / 1e9
        rows.append((name, seconds * 1e3 / images, seconds, gfs, gfs / peak32, gfs / peak16))

    for preset, batches in (("celeba64", (1, 16)), ("celebahq256", (1, 4))):
        if args.quick and preset == "celebahq256":
            continue
        cfg = gm.make_config(preset, bf16=not args.fp32)
        G = gm.build(cfg).generator.eval().requires_grad_(False)
        for B in batches:
            x = gm.sample_inputs(cfg, B, torch.Generator().manual_seed(0), train=False)

            def gen():
                with torch.no_grad():
                    G(x)
            flops = count_flops(gen)
            add(f"generate {cfg.resolution}x{cfg.resolution} batch {B}", best_time(gen, args.repeats), flops, B)

    for bf16_d in (False, True):
        if bf16_d and args.fp32:
            continue
        cfg = gm.make_config("celeba64", bf16=not args.fp32, bf16_d=bf16_d, batch_size=32)
        method = gm.build(cfg)
        eng = GanEngine(method, method.gan_config(), device="cpu")
        data = RandomReal(cfg.resolution)
        eng.train_step(data)  # warm-up (allocations, oneDNN kernels)
        flops = count_flops(lambda: eng.train_step(data))
        name = "train step 64x64 batch 32 (G + D + R1)" + (", bf16 D" if bf16_d else "")
        add(name, best_time(lambda: eng.train_step(data), args.repeats, 0), flops, 32)
    load1 = os.getloadavg()

    print(f"# GIRAFFE on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, bf16 autocast {'off' if args.fp32 else 'on'}, "
          f"{args.clock} clock")
    print(f"# matmul peak (2048^3, best of 5): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    print(f"| {'case':<46} | {'ms/image':>9} | {'s/call':>7} | {'GFLOP/s':>8} | {'% fp32 peak':>11} | {'% bf16 peak':>11} |")
    print(f"|{'-' * 48}|{'-' * 11}|{'-' * 9}|{'-' * 10}|{'-' * 13}|{'-' * 13}|")
    for name, ms, s, gfs, f32, f16 in rows:
        print(f"| {name:<46} | {ms:>9.1f} | {s:>7.3f} | {gfs:>8.1f} | {100 * f32:>10.1f}% | {100 * f16:>10.1f}% |")


if __name__ == "__main__":
    main()
