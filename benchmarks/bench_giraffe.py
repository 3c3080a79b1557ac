"""GIRAFFE speed on this machine: ms per image and the G + D + R1 training step, against the
matmul peaks measured in the same run.

    python benchmarks/bench_giraffe.py [--threads N] [--repeats 3] [--clock wall|cpu] [--quick]
    python benchmarks/bench_giraffe.py --official CHECKOUT [--official-deps DIR] --threads 1 [--pairs 5]
        [--reference] [--cases NAME]

``--official CHECKOUT`` (a checkout of autonomousvision/giraffe outside this repository; with
``--official-deps`` a folder put on the path first, e.g. stand-ins for kornia and torchvision.utils
where those are not installed) times the official generator and trainer against aware3d's in pairs:
each round runs the official case, then aware3d's, on the CPU-time clock (``time.process_time``),
with the official ``configs/64res/celeba_64.yaml`` (over ``configs/default.yaml``) and aware3d's
``celeba64`` preset (same parameter counts, checked). Cases: generation with the EMA generator
(``mode='val'``, no grad) at batch 1 and 16, and one training step at batch 32 (the official
``Trainer.train_step``: G step with EMA, then D step with R1 10 and RMSprop, against aware3d's engine
step, with its discriminator in fp32 and in bf16). ``--reference`` adds aware3d's reference
encoding path (``FeatureField.fast_encoding`` off) to each round, as a before / after column.

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
import functools
import os
import platform
import re
import statistics
import sys
import time
import types

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


def _update_recursive(a: dict, b: dict) -> None:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _update_recursive(a[k], v)
        else:
            a[k] = v


def official_model(checkout: str, deps: str | None = None, config: str = "configs/64res/celeba_64.yaml"):
    """The official GIRAFFE model and trainer class built from its own config files (outside this
    repository). Its evaluation module (FID through torchvision's Inception) is not needed to time
    a step and is replaced by an empty module."""
    import yaml

    sys.path[:0] = [checkout] + ([deps] if deps else [])
    stub = types.ModuleType("im2scene.eval")
    stub.calculate_activation_statistics = stub.calculate_frechet_distance = None
    sys.modules.setdefault("im2scene.eval", stub)
    from im2scene.giraffe import (
        config as official_config,  # the official code, outside the repo
    )
    from im2scene.giraffe.training import Trainer

    with open(os.path.join(checkout, "configs", "default.yaml")) as f:
        cfg = yaml.load(f, Loader=yaml.Loader)
    with open(os.path.join(checkout, config)) as f:
        _update_recursive(cfg, yaml.load(f, Loader=yaml.Loader))
    model = official_config.get_model(cfg, device="cpu")
    return cfg, model, Trainer


def _set_fast_encoding(generator, flag: bool) -> None:
    for f in (generator.object_field, generator.background_field):
        f.fast_encoding = flag


def run_pairs(args) -> None:
    """Official vs aware3d, alternating in each round, CPU time of this process. With
    ``--reference`` aware3d also runs with its reference encoding path (``fast_encoding`` off: the
    code before the block-layout encoding) in each round, as a third column."""
    clock = time.process_time
    ocfg, omodel, Trainer = official_model(args.official, args.official_deps)
    cfg = gm.make_config("celeba64", bf16=not args.fp32)
    method = gm.build(cfg)
    n_off = (sum(p.numel() for p in omodel.generator.parameters()),
             sum(p.numel() for p in omodel.discriminator.parameters()))
    n_a3d = (sum(p.numel() for p in method.generator.parameters()),
             sum(p.numel() for p in method.discriminator.parameters()))
    if n_off != n_a3d:
        raise SystemExit(f"parameter counts differ: official G / D {n_off}, aware3d {n_a3d}")
    cases = []
    og = omodel.generator_test.eval()
    ag = method.generator.eval().requires_grad_(False)
    for B in (1, 16):
        def off(B=B):
            with torch.no_grad():
                og(batch_size=B, mode="val")

        def a3d(B=B):
            x = gm.sample_inputs(cfg, B, train=False)
            with torch.no_grad():
                ag(x)
        cases.append((f"generate 64x64 batch {B}", B, off, a3d, ag))

    bs = int(args.train_batch or ocfg["training"]["batch_size"])
    op = torch.optim.RMSprop if ocfg["training"]["optimizer"] == "RMSprop" else torch.optim.Adam
    opt_g = op(omodel.generator.parameters(), lr=ocfg["training"]["learning_rate"],
               **ocfg["training"]["optimizer_kwargs"])
    opt_d = op(omodel.discriminator.parameters(), lr=ocfg["training"]["learning_rate_d"])
    trainer = Trainer(omodel, opt_g, opt_d, device="cpu")
    res = int(ocfg["data"]["img_size"])
    if args.train_batch:
        # the official trainer calls generator() with its default batch (32) for the fakes
        omodel.generator.forward = functools.partial(omodel.generator.forward, batch_size=bs)

    def off_step():
        trainer.train_step({"image": torch.rand(bs, 3, res, res)})
    data = RandomReal(cfg.resolution)
    for bf16_d in (False, True):
        if bf16_d and args.fp32:
            continue
        name = f"train step 64x64 batch {bs}" + (", aware3d bf16 D" if bf16_d else "")
        if args.cases and not re.search(args.cases, name):
            continue   # the engine is built only for the cases that run (memory)
        c = gm.make_config("celeba64", bf16=not args.fp32, bf16_d=bf16_d, batch_size=bs)
        m = gm.build(c)
        eng = GanEngine(m, m.gan_config(), device="cpu")
        cases.append((name, bs, off_step, lambda eng=eng: eng.train_step(data), m.generator))

    ref = "aware3d reference encoding ms/image (best / median) | " if args.reference else ""
    print(f"# GIRAFFE official vs aware3d, pairs on the CPU-time clock, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, aware3d bf16 autocast {'off' if args.fp32 else 'on'} (official: fp32); "
          f"G / D parameters {n_a3d[0]:,} / {n_a3d[1]:,} both; load average {os.getloadavg()[0]:.1f}")
    print(f"| case | official ms/image (best / median) | {ref}aware3d ms/image (best / median) | "
          "speed-up (best / median) |")
    print("|---|---|---|" + ("---|" if args.reference else "") + "---|")
    for name, B, off, a3d, gen in cases:
        if args.cases and not re.search(args.cases, name):
            continue

        def a3d_ref(a3d=a3d, gen=gen):
            _set_fast_encoding(gen, False)
            try:
                a3d()
            finally:
                _set_fast_encoding(gen, True)
        runs = [off, a3d_ref, a3d] if args.reference else [off, a3d]
        for fn in runs:
            fn()  # warm-up (allocations, oneDNN kernels)
        times = [[] for _ in runs]
        for _ in range(args.pairs):
            for fn, acc in zip(runs, times):
                t = clock()
                fn()
                acc.append(clock() - t)
        best = [min(t) for t in times]
        med = [statistics.median(t) for t in times]
        cols = " | ".join(f"{1e3 * b / B:.1f} / {1e3 * m / B:.1f}" for b, m in zip(best, med))
        print(f"| {name} | {cols} | {best[0] / best[-1]:.2f}x / {med[0] / med[-1]:.2f}x |", flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 256x256 rows")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast in the generator")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU seconds of this process (with --threads 1, robust to other "
                         "processes sharing the cores; peaks are measured the same way)")
    ap.add_argument("--official", default=None, help="official autonomousvision/giraffe checkout (outside the repo): "
                    "time it against aware3d in pairs")
    ap.add_argument("--official-deps", default=None, help="a folder put on the path before the official code")
    ap.add_argument("--pairs", type=int, default=5, help="rounds of (official, aware3d) per case with --official")
    ap.add_argument("--cases", default=None, help="with --official: only the cases whose name matches this "
                    "regular expression (e.g. 'generate', 'batch 32$', 'bf16 D'; one training case per process "
                    "keeps the memory down: the official step at batch 32 alone takes several GB)")
    ap.add_argument("--train-batch", type=int, default=None, help="with --official: the training step's batch "
                    "(default the official config's 32; the official step at 32 peaks near 9.5 GB: its object field runs at "
                    "every sample with gradients; with this option its fakes take this batch too)")
    ap.add_argument("--reference", action="store_true", help="with --official: also aware3d's reference "
                    "encoding path (fast_encoding off) in each round")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    torch.manual_seed(0)
    if args.official:
        run_pairs(args)
        return
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
