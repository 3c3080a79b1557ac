"""NeRF-W (MLP backbone) started from a trained nerf run: does the uncertainty loss keep a sharp
static scene, or does the transient head take the objects over again? (BENCHMARKS.md, NeRF-W on the
MLP backbone after 60 minutes.)

    python benchmarks/nerfw_from_nerf.py --nerf-run /tmp/aware3d-bench/nerfw-runs60/nerf-60min \
        --data /tmp/aware3d-bench/wild64b --minutes 8 --out /tmp/aware3d-bench/nerfw-from-nerf

Copies every backbone tensor of the nerf run whose name and shape match (coarse and fine MLPs);
the appearance and transient parts start fresh. Prints full-image and right-half PSNR.
"""
from __future__ import annotations

import argparse
import json
import shutil

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nerf-run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--out", default="/tmp/aware3d-bench/nerfw-from-nerf")
    ap.add_argument("--half-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    import aware3d
    from aware3d import registry
    from aware3d.methods import nerfw
    from aware3d.train.io import load_checkpoint, save_checkpoint

    shutil.rmtree(a.out, ignore_errors=True)
    ov = [("backbone", "mlp")] + [tuple(kv.split("=", 1)) for kv in a.sets]
    method = registry.get("nerfw")
    method.train(a.data, out=a.out, preset=a.preset, max_steps=1, progress=False, val_every=0,
                 ckpt_every=0, overrides=ov)
    ck, src = load_checkpoint(a.out), load_checkpoint(a.nerf_run)["model"]
    copied = [k for k, v in src.items() if k in ck["model"] and ck["model"][k].shape == v.shape]
    for k in copied:
        ck["model"][k] = src[k].clone()
    print(f"copied {len(copied)} tensors from {a.nerf_run}", flush=True)
    save_checkpoint(a.out, int(ck["step"]), ck)
    method.train(a.data, out=a.out, resume=True, max_minutes=a.minutes, progress=False,
                 val_every=0, ckpt_every=0)
    full = aware3d.load(a.out).evaluate(progress=False)
    half = nerfw.evaluate_appearance_half(aware3d.load(a.out), steps=a.half_steps, progress=False)
    print(json.dumps({"steps": int(load_checkpoint(a.out)["step"]), "psnr_full": full["psnr"],
                      "psnr_half": half["psnr"], "ssim_half": half["ssim"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
