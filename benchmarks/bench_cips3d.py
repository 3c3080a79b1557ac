"""CIPS-3D speed and memory: aware3d's paper preset (``ffhq64``) beside the official code at the same
settings, on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_cips3d.py [--tasks gen1 gen16 train2] [--reps 3]
        [--official DIR --official-deps DIR ...] [--memory] [--profile gen1]

Tasks: ``gen1`` / ``gen16``: generation at 64^2 with batch 1 / 16 (eval mode, no gradients, the
prior's cameras, 12 + 12 samples; aware3d with its inference chunks, the official in one pass
without ``forward_points``); ``train2`` / ``train4``: one training step at batch 2 / 4 (4: the official
per-GPU batch):
D on real + fake with the auxiliary critic and R1, then G, Adam, gradient clipping at 10, and an
EMA update (aware3d: its GAN engine's ``train_step``; the official: the body of its
``exp/cips3d/scripts/train.py`` loop with ``train_ffhq``'s settings, whose EMA is tl2's and is
stood in for by aware3d's ``ema_update``).

Timing: one thread, calls alternating (aware3d, official, aware3d, ...) after one warm-up call each;
generation: both sides built in this process; training: one process per (side, rep), alternating
(both sides' training state in one process ran out of memory here at batch 4), each timing its
second step and reporting its peak resident set after the first. CPU time (``time.process_time``)
and wall time per call, the median of ``--reps`` per side, printed as ms per image (generation) or
s per step (training).

``--memory``: each (side, task) runs again in its own process, which prints its peak resident set
(``resource.getrusage(...).ru_maxrss``) after building the networks and drawing the inputs, and
after one call of the task; the difference is the task's own peak (torch's allocations are not
seen by tracemalloc, the resident set sees everything). ``--profile TASK``: torch.profiler's
table of aware3d's side of TASK (top 25 ops by self CPU time).

``--official DIR``: a checkout of PeterouZh/CIPS-3D (outside this repository) whose ``exp`` package
imports on this machine: its CUDA ops (``exp/comm/op``: fused_bias_act, upfirdn2d) need CPU forms
(bias + leaky ReLU x sqrt 2 and ``upfirdn2d_native``) and its ``tl2`` library must import
(``pip install tl2`` or stubs of the registry / logging helpers); ``--official-deps`` adds folders
to ``sys.path`` (einops, stubs). Without ``--official`` only aware3d's side runs.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from aware3d.methods import cips3d as cm

G_KWARGS = dict(fov=12, ray_start=0.88, ray_end=1.12, num_steps=12, h_stddev=0.3, v_stddev=0.155,
                hierarchical_sample=True, psi=1.0, sample_dist="gaussian")
G_CFG = dict(z_dim=256,
             nerf_cfg=dict(in_dim=3, hidden_dim=128, hidden_layers=2, rgb_dim=32, style_dim=128),
             mapping_nerf_cfg=dict(z_dim=256, hidden_dim=128, base_layers=4, head_layers=0),
             inr_cfg=dict(input_dim=32, style_dim=512, hidden_dim=512, pre_rgb_dim=3),
             mapping_inr_cfg=dict(z_dim=512, hidden_dim=512, base_layers=8, head_layers=0, add_norm=True,
                                  norm_out=True))
D_CFG = dict(diffaug=False, max_size=1024, channel_multiplier=2, first_downsample=False, stddev_group=0)
TASKS = {"gen1": ("gen", 1), "gen16": ("gen", 16), "train2": ("train", 2), "train4": ("train", 4)}


class _Noise:
    """A stand-in dataset: ``sample(n, generator)`` -> n images in [-1, 1] at 64^2."""

    def __init__(self, res: int = 64):
        self.res = res

    def sample(self, n, generator=None):
        return torch.rand(n, 3, self.res, self.res, generator=generator) * 2 - 1


# --------------------------------------------------------------------------------------------------
# aware3d


def aware3d_side(task: str, batch: int):
    """A zero-argument callable running one call of ``task`` with aware3d's ffhq64 preset."""
    from aware3d.train.gan import GanEngine

    torch.manual_seed(0)
    cfg = cm.make_config("ffhq64", batch_size=batch)
    m = cm.build(cfg)
    if task == "gen":
        G = m.generator.eval().requires_grad_(False)
        x = cm.sample_inputs(cfg, batch, torch.Generator().manual_seed(0), train=False)

        def run():
            with torch.no_grad():
                return G(x)
        return run
    engine = GanEngine(m, m.gan_config(batch_size=batch, device="cpu"))
    data = _Noise(cfg.resolution)

    def run():
        m.set_step(engine.step, engine)
        return engine.train_step(data)
    return run


# --------------------------------------------------------------------------------------------------
# the official code (imported from --official, outside this repository)


def official_side(task: str, batch: int):
    import logging

    logging.disable(logging.CRITICAL)
    from exp.cips3d.models import (
        discriminator as od,  # the official code, outside the repo
    )
    from exp.cips3d.models import generator as og

    from aware3d.train.gan import ema_update

    torch.manual_seed(0)
    G = og.GeneratorNerfINR(**G_CFG, device="cpu")
    if task == "gen":
        G = G.eval().requires_grad_(False)
        zs = G.get_zs(batch)

        def run():
            with torch.no_grad():
                return G(zs, img_size=64, **G_KWARGS)[0]
        return run
    import copy

    D = od.Discriminator_MultiScale_Aux(**D_CFG)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.999))
    data, gen = _Noise(64), torch.Generator().manual_seed(0)
    state = {"step": 0}
    softplus = torch.nn.functional.softplus

    def run():  # exp/cips3d/scripts/train.py, one iteration, train_ffhq (img_size 64, alpha 1)
        step = state["step"]
        real = data.sample(batch, gen)
        nerf_noise = max(0, 1.0 - step / 5000.0)
        G.train(), D.train()
        G.requires_grad_(False), D.requires_grad_(True)
        with torch.no_grad():
            g_imgs, _ = G(G.get_zs(batch), img_size=64, nerf_noise=nerf_noise, return_aux_img=True,
                          forward_points=None, grad_points=None, **G_KWARGS)
        real = torch.cat([real, real], 0).requires_grad_()
        r_preds, _, _ = D(real, alpha=1.0, use_aux_disc=True)
        grad_real = torch.autograd.grad(outputs=r_preds.sum(), inputs=real, create_graph=True)[0]
        pen = 0.5 * 10.0 * grad_real.flatten(start_dim=1).square().sum(dim=1, keepdim=True) + 0.0 * r_preds
        g_preds, _, _ = D(g_imgs, alpha=1.0, use_aux_disc=True)
        d_loss = (softplus(g_preds) + softplus(-r_preds) + pen).mean()
        opt_d.zero_grad()
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(D.parameters(), 10.0)
        opt_d.step()
        G.requires_grad_(True), D.requires_grad_(False)
        gen_imgs, _ = G(G.get_zs(batch), img_size=64, nerf_noise=nerf_noise, return_aux_img=True,
                        grad_points=256 ** 2, forward_points=None, **G_KWARGS)
        g_preds, _, _ = D(gen_imgs, alpha=1.0, use_aux_disc=True)
        softplus(-g_preds).mean().backward()
        torch.nn.utils.clip_grad_norm_(G.parameters(), 10.0)
        opt_g.step()
        opt_g.zero_grad()
        ema_update(G_ema, G, 0.999)
        state["step"] += 1
        return d_loss
    return run


# --------------------------------------------------------------------------------------------------


def _call(fn):
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _child(side: str, task: str) -> None:
    """Build, one call (its peak resident set), one more call (its CPU and wall time)."""
    kind, batch = TASKS[task]
    fn = (aware3d_side if side == "aware3d" else official_side)(kind, batch)
    base = _maxrss_mib()
    fn()
    peak = _maxrss_mib()
    wall, cpu = _call(fn)
    print(json.dumps({"side": side, "task": task, "base_mib": base, "peak_mib": peak, "cpu_s": cpu, "wall_s": wall}))


def _run_child(a, side: str, task: str) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(a.threads), "--child", side, task]
    if a.official:
        cmd += ["--official", a.official]
    if a.official_deps:
        cmd += ["--official-deps", *a.official_deps]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def _paths(a) -> list[str]:
    return [p for p in [a.official, *(a.official_deps or [])] if p]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--official", default=None, help="official PeterouZh/CIPS-3D checkout (outside the repo)")
    ap.add_argument("--official-deps", nargs="*", default=None, help="folders added to sys.path (einops, stubs)")
    ap.add_argument("--memory", action="store_true", help="peak resident set per (side, task), one process each")
    ap.add_argument("--profile", default=None, choices=list(TASKS), help="torch.profiler table of aware3d's side")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sys.path[:0] = _paths(a)
    if a.child:
        _child(*a.child)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)", flush=True)
    sides = ["aware3d"] + (["official"] if a.official else [])
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        kind, batch = TASKS[a.profile]
        fn = aware3d_side(kind, batch)
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if not a.no_timing:
        for task in a.tasks:
            kind, batch = TASKS[task]
            times = {s: [] for s in sides}
            if kind == "train":  # one process per (side, rep), alternating: the two sides' training
                for _ in range(a.reps):  # state does not fit in one process on a small machine
                    for s in sides:
                        r = _run_child(a, s, task)
                        times[s].append((r["wall_s"], r["cpu_s"]))
                        print(f"{task:7s} {s:9s} peak RSS {r['peak_mib']:8.0f} MiB (after build {r['base_mib']:.0f}, "
                              f"task +{r['peak_mib'] - r['base_mib']:.0f}); step {r['cpu_s']:.2f} s CPU", flush=True)
            else:
                fns = {s: (aware3d_side if s == "aware3d" else official_side)(kind, batch) for s in sides}
                for s in sides:
                    fns[s]()                                   # warm-up
                for _ in range(a.reps):
                    for s in sides:
                        times[s].append(_call(fns[s]))
                del fns
            for s in sides:
                wall = statistics.median(t[0] for t in times[s])
                cpu = statistics.median(t[1] for t in times[s])
                if kind == "gen":
                    print(f"{task:7s} {s:9s} {1000 * cpu / batch:9.1f} ms/image CPU  {1000 * wall / batch:9.1f} wall "
                          f"(median of {a.reps}; CPU per call {[round(t[1], 2) for t in times[s]]} s)", flush=True)
                else:
                    print(f"{task:7s} {s:9s} {cpu:9.2f} s/step CPU  {wall:9.2f} wall "
                          f"(median of {a.reps}; CPU per call {[round(t[1], 2) for t in times[s]]} s)", flush=True)
            if len(sides) == 2:
                ratio = statistics.median(t[1] for t in times["official"]) / statistics.median(t[1] for t in times["aware3d"])
                print(f"{task:7s} official / aware3d CPU time: {ratio:.2f}x", flush=True)
    if a.memory:
        for task in a.tasks:
            for s in sides:
                r = _run_child(a, s, task)
                print(f"{task:7s} {s:9s} peak RSS {r['peak_mib']:8.0f} MiB (after build {r['base_mib']:.0f}, "
                      f"task +{r['peak_mib'] - r['base_mib']:.0f})", flush=True)


if __name__ == "__main__":
    main()
