"""GRAF at the paper's celeba64 settings: time per full image and per training step, and peak memory,
optionally beside the official autonomousvision/graf code built on the same CPU.

    .venv/bin/python benchmarks/bench_graf.py [--arms ref fast bf16 ckpt official] [--what image train]
        [--pairs 2] [--calls 1] [--batch 1] [--train-batch 8] [--official /path/to/graf-checkout]

Arms: ``ref`` (aware3d's reference path: :func:`aware3d.methods.graf.render_rays_reference` through
:meth:`GrafField.forward`, the rendering of aware3d before the fast path), ``fast`` (the default path,
:func:`aware3d.methods.graf.render_rays`), ``bf16`` (the fast path with ``autocast_bf16``), ``ckpt``
(the fast path with ``grad_chunk=128``: activation checkpointing in training), ``official`` (the
official Generator / Discriminator / GAN_stability Trainer, from ``--official``, a checkout outside
this repository; it needs only numpy and PyYAML besides torch: imageio / matplotlib are stubbed, the
CUDA ``torchsearchsorted`` by ``torch.searchsorted``).

Both sides use the same settings: 64^2 images, 8 x 256 trunk with skip 4, z 128 + 128, L = 10 / 4,
64 samples per ray in [7.5, 12.5] shifted per camera radius, patches of 32^2 rays, ndf 64, batch 8
for training (``--train-batch``), RMSprop, R1 10, EMA 0.999. ``image``: the generator in eval mode without gradients
renders ``--batch`` full images (official: ``generator.eval()`` and its ``FullRaySampler``, chunk 8192
rays, netchunk 65536 points). ``train``: one full training iteration (D step with R1 on real patches,
then G step, then the EMA update), on random images.

Every arm runs in its own process (peak memory would otherwise carry over from one arm to the next),
the arms in turn within each of ``--pairs`` rounds, one thread: after a warm-up call, ``--calls``
timed calls in CPU time (``time.process_time``); the process's peak resident memory (``ru_maxrss``)
after building the networks and at the end. Prints the median per arm, its speed-up over the
official (or over ``ref``) and the peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

import torch

from aware3d.methods import graf


class RandomImages:
    """A dataset of random images in [-1, 1] with the engine's ``sample(n, generator)``."""

    def __init__(self, res: int):
        self.res = res

    def __len__(self):
        return 1000

    def sample(self, n, generator=None):
        return torch.rand(n, 3, self.res, self.res, generator=generator) * 2 - 1


def aware3d_arm(arm: str, what: str, batch: int):
    """(call, G params, D params) for an aware3d arm."""
    from aware3d.train.gan import GanEngine, tune_cpu_allocator

    over = {"bf16": {"autocast_bf16": True}, "ckpt": {"grad_chunk": 128}}.get(arm, {})
    if what == "train":
        over["batch_size"] = batch
    cfg = graf.make_config("celeba64", **over)
    m = graf.build(cfg)
    m.generator.reference = arm == "ref"
    nG = sum(p.numel() for p in m.generator.parameters())
    nD = sum(p.numel() for p in m.discriminator.parameters())
    if what == "image":
        G = m.generator.eval()
        x = m.sample_inputs(batch, torch.Generator().manual_seed(0), train=False)

        def call():
            with torch.no_grad():
                G(x)
        return call, nG, nD
    tune_cpu_allocator()
    eng = GanEngine(m, m.gan_config(device="cpu"), device="cpu")
    m.set_step(0, eng)
    ds = m.wrap_dataset(RandomImages(cfg.resolution))
    return (lambda: eng.train_step(ds)), nG, nD


def official_arm(path: str, what: str, batch: int):
    """(call, G params, D params) for the official code at the celeba64 settings."""
    import numpy as np

    for name in ("imageio", "matplotlib", "matplotlib.pyplot", "tqdm"):
        mod = types.ModuleType(name)
        if name == "tqdm":
            mod.tqdm = lambda x, *a, **k: x
        sys.modules.setdefault(name, mod)
    ts = types.ModuleType("torchsearchsorted")  # the official CUDA extension; same operation
    ts.searchsorted = lambda a, v, side="left": torch.searchsorted(a, v, right=side == "right")
    sys.modules.setdefault("torchsearchsorted", ts)
    sys.path[:0] = [path, os.path.join(path, "submodules")]
    from argparse import Namespace

    # the official code, outside the repository
    from graf.models.discriminator import Discriminator
    from graf.models.generator import Generator
    from graf.transforms import FlexGridRaySampler, ImgToPatch
    from submodules.GAN_stability.gan_training.train import Trainer, update_average
    from submodules.nerf_pytorch.run_nerf_mod import create_nerf

    torch.manual_seed(0)
    np.random.seed(0)
    B = batch if what == "train" else 8  # the official chunk follows the training batch (8 in its configs)
    a = Namespace(i_embed=0, use_viewdirs=True, multires=10, multires_views=4, N_samples=64, N_importance=0,
                  netdepth=8, netwidth=256, netdepth_fine=8, netwidth_fine=256, perturb=1.0, raw_noise_std=1.0,
                  chunk=min(32768, 1024 * B), netchunk=65536, white_bkgd=False, feat_dim=256,
                  feat_dim_appearance=128)
    kw_train, kw_test, params, named = create_nerf(a)
    for k in (kw_train, kw_test):
        k.update(near=7.5, far=12.5)
    sampler = FlexGridRaySampler(N_samples=1024, min_scale=0.25, max_scale=1.0, scale_anneal=0.0025)
    H = W = 64
    focal = W / 2 / np.tan(0.5 * 10.0 * np.pi / 180)
    gen = Generator(H, W, focal, (9.5, 10.5), ray_sampler=sampler, render_kwargs_train=kw_train,
                    render_kwargs_test=kw_test, parameters=params, named_parameters=named, chunk=a.chunk,
                    range_u=(0.0, 0.25), range_v=(0.32898992833716556, 0.45642212862617093), device="cpu")
    D = Discriminator(nc=3, ndf=64, imsize=32, hflip=False)
    nG = sum(p.numel() for p in gen.parameters())
    nD = sum(p.numel() for p in D.parameters())
    if what == "image":
        gen.eval()
        z = torch.randn(batch, 256)

        def call():
            with torch.no_grad():
                gen(z)
        return call, nG, nD
    import copy

    from aware3d.train.gan import tune_cpu_allocator

    tune_cpu_allocator()
    g_opt = torch.optim.RMSprop(gen.parameters(), lr=5e-4, alpha=0.99, eps=1e-8)
    d_opt = torch.optim.RMSprop(D.parameters(), lr=1e-4, alpha=0.99, eps=1e-8)
    gen_test = copy.deepcopy(gen)
    gen_test.parameters = lambda: gen_test._parameters  # as the official train.py does
    gen_test.named_parameters = lambda: gen_test._named_parameters
    trainer = Trainer(gen, D, g_opt, d_opt, gan_type="standard", reg_type="real", reg_param=10.0)
    to_patch = ImgToPatch(gen.ray_sampler, (H, W, focal))
    y = torch.zeros(B)
    it = [0]

    def call():
        gen.ray_sampler.iterations = it[0]
        rgbs = to_patch(torch.rand(B, 3, H, W) * 2 - 1)
        trainer.discriminator_trainstep(rgbs, y=y, z=torch.randn(B, 256))
        gen.decrease_nerf_noise(it[0])
        trainer.generator_trainstep(y=y, z=torch.randn(B, 256))
        update_average(gen_test, gen, beta=0.999)
        it[0] += 1
    return call, nG, nD


def build(arm, what, batch, official):
    if arm == "official":
        if not official:
            raise SystemExit("--official PATH is needed for the official arm")
        return official_arm(official, what, batch)
    return aware3d_arm(arm, what, batch)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One arm in this process: build, one warm-up call, ``--calls`` timed calls (CPU time); peak
    resident memory after building and at the end."""
    torch.set_num_threads(args.threads)
    call, nG, nD = build(args.child, args.what[0], args.batch if args.what[0] == "image" else args.train_batch,
                         args.official)
    built = maxrss_mb()
    call()
    times = []
    for _ in range(args.calls):
        c = time.process_time()
        call()
        times.append(time.process_time() - c)
    print(json.dumps({"arm": args.child, "what": args.what[0], "built_mb": built, "peak_mb": maxrss_mb(),
                      "G": nG, "D": nD, "times": times}))


def _available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


def run_child(args, arm: str, what: str) -> dict | None:
    waited = 0
    while _available_mb() < args.min_free_mb and waited < 600:  # a shared machine: do not push others out
        time.sleep(10)
        waited += 10
    cmd = [sys.executable, __file__, "--child", arm, "--what", what, "--batch", str(args.batch), "--train-batch",
           str(args.train_batch), "--threads", str(args.threads), "--calls", str(args.calls)]
    if args.official:
        cmd += ["--official", args.official]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    if out.returncode:
        print(f"{what} {arm}: failed (exit {out.returncode}): {out.stderr[-1500:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", nargs="+", default=["ref", "fast", "bf16", "official"])
    ap.add_argument("--what", nargs="+", default=["image", "train"], choices=["image", "train"])
    ap.add_argument("--pairs", type=int, default=2, help="rounds; each runs every arm once, in turn")
    ap.add_argument("--calls", type=int, default=1, help="timed calls per arm and round (after a warm-up)")
    ap.add_argument("--batch", type=int, default=1, help="images per call for 'image'")
    ap.add_argument("--train-batch", type=int, default=8, help="images per training step (paper: 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--official", default=None, help="official autonomousvision/graf checkout (outside the repo)")
    ap.add_argument("--min-free-mb", type=float, default=6000, help="wait for this much available memory "
                    "before starting each arm's process (up to 10 minutes)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    print(f"torch {torch.__version__}, {args.threads} thread(s), each arm in its own process", flush=True)
    for what in args.what:
        res = {arm: [] for arm in args.arms}
        for _ in range(args.pairs):
            for arm in args.arms:
                r = run_child(args, arm, what)
                if r is not None:
                    res[arm].append(r)
                    print(f"  {what} {arm}: {', '.join(f'{t:.2f}' for t in r['times'])} s CPU, peak "
                          f"{r['peak_mb']:.0f} MB", flush=True)
        med = {arm: statistics.median(t for r in rs for t in r["times"]) for arm, rs in res.items() if rs}
        base = "official" if "official" in med else ("ref" if "ref" in med else None)
        per = args.batch if what == "image" else 1
        for arm, rs in res.items():
            if not rs:
                continue
            ts = [t for r in rs for t in r["times"]]
            rel = f"  {med[base] / med[arm]:5.2f}x vs {base}" if base else ""
            unit = "s/image" if what == "image" else "s/step"
            print(f"{what:5s} {arm:8s} {med[arm] / per:8.2f} {unit} (CPU, median of {len(ts)}){rel}   peak "
                  f"{max(r['peak_mb'] for r in rs):6.0f} MB (built {max(r['built_mb'] for r in rs):5.0f} MB)   "
                  f"G {rs[0]['G']:,d} D {rs[0]['D']:,d}", flush=True)


if __name__ == "__main__":
    main()
