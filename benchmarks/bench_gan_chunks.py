"""Inference chunking of the radiance-field GAN generators, A/B in one run.

Each generator (untrained, the table's CPU presets at 64 x 64, ``bench_gans.SPECS``) renders the
same batches with its default chunk settings and with chunking switched off (one field / decoder
call for the whole batch), interleaved rep by rep so that both paths see the same machine state.
The two paths must give the same image (checked; max abs difference printed).

    python benchmarks/bench_gan_chunks.py --methods cips3d,graf --batch 1 16 --reps 5 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import bench_gans as bg  # beside this script (its folder is sys.path[0] when run as a script)

# what each method chunks at inference (config field -> "off" value)
CHUNKS = {"graf": {"chunk": 10 ** 9}, "pigan": {"chunk": 10 ** 9},
          "cips3d": {"chunk": 10 ** 9, "decode_chunk": 10 ** 9}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="graf,pigan,cips3d")
    ap.add_argument("--kind", choices=("faces", "objects"), default="objects")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        mod, spec = bg.load_module(name), bg.SPECS[name]
        _, method = bg.build(mod, spec[args.kind], **spec["res64"])
        G = method.generator.eval()
        on = {k: getattr(G.cfg, k) for k in CHUNKS[name]}
        for b in args.batch:
            x = method.sample_inputs(b, torch.Generator().manual_seed(0), train=False)
            times, imgs = {"chunked": [], "one call": []}, {}
            for rep in range(args.reps + 1):  # rep 0 warms both paths up
                for path, values in (("chunked", on), ("one call", CHUNKS[name])):
                    for k, v in values.items():
                        setattr(G.cfg, k, v)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        imgs[path] = G(x)
                    if rep:
                        times[path].append((time.perf_counter() - t0) * 1000 / b)
            for k, v in on.items():
                setattr(G.cfg, k, v)
            diff = (imgs["chunked"] - imgs["one call"]).abs().max().item()
            ms = {p: statistics.median(t) for p, t in times.items()}
            rows.append((name, spec[args.kind], b, ms["one call"], ms["chunked"], diff))
            print(f"  {name} b{b}: one call {ms['one call']:.1f} ms/img, chunked {ms['chunked']:.1f}",
                  flush=True)
    print("\n| method | preset | batch | one call (ms/img) | chunked (ms/img) | speed-up | max abs diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, preset, b, a, c, diff in rows:
        print(f"| {name} | {preset} | {b} | {a:.1f} | {c:.1f} | {a / c:.2f}x | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
