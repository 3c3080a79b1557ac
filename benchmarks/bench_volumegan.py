"""VolumeGAN: parameters and time per image (generator in eval mode, no gradients), optionally beside
the official genforce/volumegan generator with the same weights' shapes on the same CPU.

    .venv/bin/python benchmarks/bench_volumegan.py [--presets cpu ffhq256] [--batches 1 16] [--repeats 3]
        [--threads 1] [--official /tmp/vg_official --official-deps /tmp/vg_deps]

Prints one line per (preset, batch): generator / discriminator parameters, wall ms per image and CPU
ms per image (process time: on a shared machine the fairer number), the best of ``repeats`` timed
calls after one warm-up, at the preset's resolution. ``--official DIR`` (a checkout of the official
code outside this repository, with einops and easydict importable from ``--official-deps``) also
times the official VolumeGANGenerator built with the paper preset's settings (impl='ref', const
noise, 12 + 12 samples) at the paper presets' resolutions, in the same process.

    .venv/bin/python benchmarks/bench_volumegan.py --train-cycles 3 [--train-preset cpu] [--threads 1]

times training instead: engines for the preset as it is, with the path-length penalty (pl_weight 2
every 4 steps, half batches, lazy correction) and with progressive growing held at each level of
detail (lod 0 is the preset itself), on random images; one cycle = 4 consecutive training steps
(one R1 and one PL phase each), the variants alternating cycle by cycle; prints the median CPU
(process time) and wall seconds per step of each.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from aware3d.methods import volumegan as vm


def _time(fn, repeats: int):
    fn()
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    return best_wall, best_cpu


def _official(path: str, deps: str | None, cfg):
    if deps:
        sys.path.insert(0, deps)
    sys.path.insert(0, path)
    from models.volumegan_generator import VolumeGANGenerator  # noqa: the official code, outside the repo

    ps = dict(num_steps=cfg.n_samples, ray_start=cfg.depth_range[0], ray_end=cfg.depth_range[1], radius=cfg.radius,
              horizontal_mean=math.pi / 2, horizontal_stddev=0.3, vertical_mean=math.pi / 2,
              vertical_stddev=0.155, camera_dist="gaussian", fov=cfg.fov, perturb_mode=None)
    return VolumeGANGenerator(resolution=cfg.resolution, nerf_res=cfg.nerf_res, z_dim=cfg.z_dim,
                              mapping_layers=cfg.map_layers, fmaps_base=cfg.fmaps_base, rgb_init_res_out=False,
                              embed_cfg=dict(input_dim=3, max_freq_log2=cfg.n_freqs - 1, N_freqs=cfg.n_freqs),
                              fg_cfg=dict(num_layers=cfg.mlp_layers, hidden_dim=cfg.mlp_hidden,
                                          activation_type="lrelu"),
                              bg_cfg=None, out_dim=cfg.feat_dim, ps_cfg=ps, hs_cfg=dict(clamp_mode="relu"),
                              vr_cfg=dict(clamp_mode="relu")).eval().requires_grad_(False)


class _RandomImages:
    def __init__(self, res: int, n: int = 64):
        self.images = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def sample(self, n, generator=None):
        return self.images[torch.randint(0, len(self.images), (n,), generator=generator)]


def train_cycles(preset: str, cycles: int) -> None:
    from aware3d.train.gan import GanEngine

    base = vm.make_config(preset)
    init_lod = int(math.log2(base.resolution // base.nerf_res))
    variants = {"preset": {}, "+ path length": {"pl_weight": 2.0, "lazy_correction": True}}
    for lod in range(init_lod, 0, -1):  # progressive growing held at a level (no fade)
        variants[f"+ pg lod {lod}"] = {"use_pg": True, "pg_training_img": 10 ** 12, "_lod": lod}
    engines = {}
    for name, kw in variants.items():
        lod = kw.pop("_lod", None)
        m = vm.build(vm.make_config(preset, **kw))
        e = GanEngine(m, m.gan_config(device="cpu", progress=False))
        if lod is not None:
            for mod in (e.G.renderer, e.G_ema.renderer, e.D):
                mod.lod.fill_(float(lod))
        engines[name] = e
    data = _RandomImages(base.resolution)
    for e in engines.values():  # warm-up cycle
        for _ in range(4):
            e.train_step(data)
    times = {n: [] for n in engines}
    for _ in range(cycles):
        for name, e in engines.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(4):
                e.train_step(data)
            times[name].append(((time.process_time() - c) / 4, (time.perf_counter() - t) / 4))
    for name, ts in times.items():
        cpu = sorted(c for c, _ in ts)[len(ts) // 2]
        wall = sorted(w for _, w in ts)[len(ts) // 2]
        print(f"train {preset:8s} {name:16s} batch {base.batch_size}: {cpu:7.3f} s/step CPU  {wall:7.3f} s/step wall "
              f"(median of {len(ts)} cycles of 4 steps)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["cpu", "ffhq256"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--official", default=None, help="official genforce/volumegan checkout (outside the repo)")
    ap.add_argument("--official-deps", default=None, help="a folder with einops and easydict")
    ap.add_argument("--train-cycles", type=int, default=0, help="time training steps instead (see above)")
    ap.add_argument("--train-preset", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.train_cycles:
        train_cycles(a.train_preset, a.train_cycles)
        return
    for preset in a.presets:
        m = vm.build(vm.make_config(preset))
        G = m.generator.eval().requires_grad_(False)
        nG = sum(p.numel() for p in G.parameters())
        nD = sum(p.numel() for p in m.discriminator.parameters())
        off = None
        if a.official and preset in ("ffhq256", "celeba128"):
            off = _official(a.official, a.official_deps, m.cfg)
        for b in a.batches:
            x = vm.sample_inputs(m.cfg, b, torch.Generator().manual_seed(0), train=False)
            with torch.no_grad():
                wall, cpu = _time(lambda: G(x), a.repeats)
            print(f"aware3d  {preset:10s} {m.cfg.resolution:4d}px  G {nG:>10,d}  D {nD:>10,d}  batch {b:3d}  "
                  f"{1000 * wall / b:9.1f} ms/image wall  {1000 * cpu / b:9.1f} ms/image CPU", flush=True)
            if off is not None:
                z = torch.randn(b, m.cfg.z_dim)
                with torch.no_grad():
                    wall, cpu = _time(lambda: off(z, noise_mode="const", impl="ref"), a.repeats)
                n_off = sum(p.numel() for p in off.parameters())
                print(f"official {preset:10s} {m.cfg.resolution:4d}px  G {n_off:>10,d}  {'':14s}  batch {b:3d}  "
                      f"{1000 * wall / b:9.1f} ms/image wall  {1000 * cpu / b:9.1f} ms/image CPU", flush=True)


if __name__ == "__main__":
    main()
