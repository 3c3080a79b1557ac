"""pi-GAN: CPU time of image generation and of one training step, and peak memory, at the paper's
celeba64 settings (SIREN 8 x 256 + mapping 3 x 256 of z 256, 12 + 12 samples, CCS encoder critic),
aware3d's fast field evaluation beside its layer-by-layer reference and, optionally, the official
marcoamonteiro/pi-GAN code (a checkout outside this repository) on the same machine.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pigan.py [--res 64] [--img-batch 16]
        [--train-batch 4] [--split 2] [--pairs 3] [--parts img train memory] [--core 0]
        [--official DIR --official-deps DIR]

Arms (``--arms``): ``aware3d`` (the generator as trained and rendered: :func:`aware3d.methods.pigan.fast_field`),
``reference`` (the same generator with ``fast = False``: :meth:`FilmSirenField.forward` layer by
layer, the evaluation aware3d used before the fast one), ``before`` (``--before DIR``: an earlier
aware3d copied to DIR/aware3d_before with its imports renamed, e.g. the commit before the fast
path, with its own celeba64 preset), ``official`` (``ImplicitGenerator3d`` with
``SPATIALSIRENBASELINE``; images by its inference function ``staged_forward`` (psi 1, its
``max_batch_size`` default), the training step as its ``train.py`` on a CPU: D step on fakes made
in ``batch_split`` parts without gradients, R1 on the reals, the position loss, clipping at 10; G
step in parts, each backpropagated, top-k; two EMAs). ``--official-deps`` must make
``torchsearchsorted`` importable (a stub calling ``torch.searchsorted`` will do).

Timing: one thread, CPU time (``time.process_time``) of each call, the arms alternating in pairs
after one warm-up call each, so that a loaded machine slows them alike; the median over pairs and
the ratio per pair. Memory: each (arm, part) in its own subprocess, the peak resident memory
(``VmHWM``; ``ru_maxrss`` beside it) after building the networks and after one call.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from aware3d.methods import pigan


class _Reals:
    """Random 'real' images in [-1, 1] at the render resolution (the engine's dataset surface)."""

    def __init__(self, res: int):
        self.res = res

    def sample(self, n, generator=None):
        return torch.rand(n, 3, self.res, self.res, generator=generator) * 2 - 1


def _aware(args, fast: bool, before: bool = False):
    if before:  # an earlier aware3d, copied with its package renamed aware3d_before
        sys.path.insert(0, args.before)
        from aware3d_before.methods import pigan as pm
        from aware3d_before.train import gan as gan_engine
    else:
        from aware3d.train import gan as gan_engine
        pm = pigan
    kw = {"batch_size": args.train_batch, "batch_split": (args.split,), "resolution": args.res,
          "stages": ((0, args.res, 56, 6e-5, 2e-4),)}
    names = {f.name for f in dataclasses.fields(pm.Config)}
    cfg = pm.make_config("celeba64", **{k: v for k, v in kw.items() if k in names})
    torch.manual_seed(0)
    m = pm.build(cfg)
    m.generator.fast = fast
    G = m.generator
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in m.discriminator.parameters())
    x = pm.sample_inputs(cfg, args.img_batch, torch.Generator().manual_seed(0), train=False)
    state = {}

    def image():
        G.eval()
        with torch.no_grad():
            return G(x)

    def train():
        if "engine" not in state:
            eng = gan_engine.GanEngine(m, m.gan_config(progress=False), device="cpu")
            m.set_step(0, eng)
            eng.G_ema.fast = fast
            state["engine"] = eng
        return state["engine"].train_step(state.setdefault("data", _Reals(args.res)))

    return {"image": image, "train": train, "params": (n_g, n_d)}


def _official(args):
    if args.official_deps:
        sys.path.insert(0, args.official_deps)
    sys.path.insert(0, args.official)
    import curriculums  # the official code, outside the repository
    from discriminators.sgdiscriminators import CCSEncoderDiscriminator
    from generators.generators import ImplicitGenerator3d
    from siren.siren import SPATIALSIRENBASELINE

    torch.manual_seed(0)
    gen = ImplicitGenerator3d(SPATIALSIRENBASELINE, z_dim=256)
    gen.set_device("cpu")
    disc = CCSEncoderDiscriminator()
    meta = curriculums.extract_metadata(curriculums.CelebA, 0)
    meta.update(img_size=args.res, batch_size=args.train_batch, batch_split=args.split)
    n_g = sum(p.numel() for p in gen.parameters())
    n_d = sum(p.numel() for p in disc.parameters())
    opt_g = torch.optim.Adam(gen.parameters(), lr=meta["gen_lr"], betas=tuple(float(b) for b in meta["betas"]), weight_decay=0)
    opt_d = torch.optim.Adam(disc.parameters(), lr=meta["disc_lr"], betas=tuple(float(b) for b in meta["betas"]), weight_decay=0)
    emas = [([p.detach().clone() for p in gen.parameters()], d) for d in (0.999, 0.9999)]
    z_img = torch.randn(args.img_batch, 256, generator=torch.Generator().manual_seed(0))
    reals = _Reals(args.res)
    step = {"n": 0}

    def image():
        gen.eval()
        m = dict(meta, psi=1, nerf_noise=0.0, last_back=meta.get("eval_last_back", False))
        return gen.staged_forward(z_img, **m)[0]

    def train():  # train.py's step body, fp32 on a CPU (its autocast and GradScaler are CUDA-only)
        gen.train(), disc.train()
        m = dict(meta, nerf_noise=max(0.0, 1.0 - step["n"] / 5000.0))
        alpha = min(1.0, step["n"] / m["fade_steps"])
        B, split = m["batch_size"], m["batch_split"]
        real = reals.sample(B)
        with torch.no_grad():
            z = torch.randn(B, 256)
            sb = B // split
            parts = [gen(z[i * sb:(i + 1) * sb], **m) for i in range(split)]
            gen_imgs = torch.cat([p[0] for p in parts])
            gen_pos = torch.cat([p[1] for p in parts])
        real.requires_grad = True
        r_preds, _, _ = disc(real, alpha, **m)
        grad_real = torch.autograd.grad(r_preds.sum(), real, create_graph=True)[0]
        penalty = 0.5 * m["r1_lambda"] * (grad_real.view(B, -1).norm(2, dim=1) ** 2).mean()
        g_preds, g_lat, g_pos = disc(gen_imgs, alpha, **m)
        ident = torch.nn.MSELoss()(g_lat, z) * m["z_lambda"] + torch.nn.MSELoss()(g_pos, gen_pos) * m["pos_lambda"]
        d_loss = (torch.nn.functional.softplus(g_preds).mean() + torch.nn.functional.softplus(-r_preds).mean()
                  + penalty + ident)
        opt_d.zero_grad()
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), m["grad_clip"])
        opt_d.step()
        z = torch.randn(B, 256)
        for i in range(split):
            sz = z[i * sb:(i + 1) * sb]
            imgs, pos = gen(sz, **m)
            g_preds, g_lat, g_pos = disc(imgs, alpha, **m)
            k = math.ceil(max(0.99 ** (step["n"] / m["topk_interval"]), m["topk_v"]) * g_preds.shape[0])
            g_preds = torch.topk(g_preds, k, dim=0).values
            ident = torch.nn.MSELoss()(g_lat, sz) * m["z_lambda"] + torch.nn.MSELoss()(g_pos, pos) * m["pos_lambda"]
            g_loss = torch.nn.functional.softplus(-g_preds).mean() + ident
            g_loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), m["grad_clip"])
        opt_g.step()
        opt_g.zero_grad()
        with torch.no_grad():
            for shadow, decay in emas:
                for s, p in zip(shadow, gen.parameters()):
                    s.mul_(decay).add_(p.detach(), alpha=1 - decay)
        step["n"] += 1
        return float(d_loss), float(g_loss)

    return {"image": image, "train": train, "params": (n_g, n_d)}


def _arms(args) -> dict:
    make = {"aware3d": lambda: _aware(args, True), "reference": lambda: _aware(args, False),
            "before": lambda: _aware(args, True, before=True), "official": lambda: _official(args)}
    return {k: make[k]() for k in args.arms}


def _timed(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def timing(args, part: str) -> dict:
    arms = _arms(args)
    for a in arms.values():
        a[part]()  # warm-up
    times = {k: [] for k in arms}
    for i in range(args.pairs):
        order = list(arms) if i % 2 == 0 else list(arms)[::-1]
        for k in order:
            times[k].append(_timed(arms[k][part]))
        print(f"  {part} pair {i}: " + "  ".join(f"{k} {times[k][-1]:.2f} s" for k in arms), flush=True)
    n = args.img_batch if part == "image" else 1
    out = {k: {"median_s": statistics.median(v), "per_call_s": v, "per_image_ms": 1000 * statistics.median(v) / n,
               "params_G_D": arms[k]["params"]} for k, v in times.items()}
    for k in arms:
        if k != "aware3d" and "aware3d" in arms:
            out[k]["ratio_to_aware3d_per_pair"] = [b / a for a, b in zip(times["aware3d"], times[k])]
    return out


def _peaks_mb() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) in MiB. ru_maxrss of a process started by fork + exec can keep the
    parent's high-water mark (Linux carries it over exec); VmHWM is that of this program's memory
    map alone, so it is the one reported as the peak."""
    hwm = float("nan")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, hwm


def memory_child(args) -> None:
    arm = _arms(args)[args.arms[0]]
    built = _peaks_mb()
    arm[args.mem_part]()
    peak = _peaks_mb()
    print(json.dumps({"built_hwm_mb": built[1], "peak_hwm_mb": peak[1], "peak_ru_maxrss_mb": peak[0]}))


def memory(args) -> dict:
    out = {}
    for part in ("image", "train"):
        for arm in args.arms:
            cmd = [sys.executable, __file__, "--mem-child", "--mem-part", part, "--arms", arm, "--res", str(args.res),
                   "--img-batch", str(args.img_batch), "--train-batch", str(args.train_batch), "--split", str(args.split)]
            if args.official:
                cmd += ["--official", args.official] + (["--official-deps", args.official_deps] if args.official_deps else [])
            if args.before:
                cmd += ["--before", args.before]
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            line = [s for s in r.stdout.splitlines() if s.startswith("{")]
            out[f"{arm}_{part}"] = json.loads(line[-1]) if line else {"error": r.stderr[-400:]}
            print(f"  memory {arm:9s} {part:5s} {out[f'{arm}_{part}']}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--img-batch", type=int, default=16)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--split", type=int, default=2, help="batch_split of the training step (official CelebA: 2)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["image", "train", "memory"])
    ap.add_argument("--arms", nargs="+", default=["aware3d", "reference", "before", "official"])
    ap.add_argument("--core", type=int, default=None, help="pin the process to this core")
    ap.add_argument("--official", default=None, help="official marcoamonteiro/pi-GAN checkout (outside the repo)")
    ap.add_argument("--official-deps", default=None, help="a folder with a torchsearchsorted module")
    ap.add_argument("--before", default=None, help="a folder with an earlier aware3d copied as aware3d_before")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--mem-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mem-part", default="image", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    if not args.official:
        args.arms = [a for a in args.arms if a != "official"]
    if not args.before:
        args.arms = [a for a in args.arms if a != "before"]
    if args.mem_child:
        memory_child(args)
        return 0
    res = {"torch": torch.__version__, "threads": torch.get_num_threads(), "args": vars(args)}
    for part in args.parts:
        print(part, flush=True)
        res[part] = memory(args) if part == "memory" else timing(args, part)
    print(json.dumps({k: v for k, v in res.items() if k != "args"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
