"""CAM benchmark: PSNR with and without coordinate-aware modulation at equal wall-clock time.

Images (`aware3d fit image`): three photos of ../shared/data/instant_ngp/fox/images, box-downscaled
to --max-side, fitted by the Fourier MLP and the 2-D hash-grid field, each with and without CAM,
for --seconds of training time each (the same budget for all four configurations).

Radiance fields (--lego): nerf and ngp backbones with and without CAM (view-direction grids on the
colour branch) on ../shared/data/nerf_synthetic/lego --downscale 4, --lego-minutes each, mean PSNR on
the first --val-views test views. Runs through the nerfw method with both embeddings switched off
(appearance_dim=0, transient_dim=0), which is exactly the backbone (same fields, same sampling and
loss) plus, with cam=true, the CAM grids.

    python benchmarks/bench_cam.py --seconds 90 --max-side 128 --batch 4096
    python benchmarks/bench_cam.py --skip-images --lego --lego-minutes 3

Prints markdown tables (parameters, ms per step, steps, PSNR); writes benchmarks/results/cam.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FOX = ROOT.parent / "shared" / "data" / "instant_ngp" / "fox" / "images"
LEGO = ROOT.parent / "shared" / "data" / "nerf_synthetic" / "lego"


def bench_images(a) -> list[dict]:
    from aware3d.fit import fit_image

    rows = []
    for name in a.images:
        path = FOX / name
        for field in ("mlp", "hash"):
            for cam in {"both": (False, True), "on": (True,), "off": (False,)}[a.lego_cam]:
                m = fit_image(str(path), field=field, cam=cam, steps=10 ** 9, max_seconds=a.seconds,
                              max_side=a.max_side, out=str(Path(a.out) / f"{Path(name).stem}-{field}{'-cam' if cam else ''}"),
                              eval_every=a.eval_every, batch=a.batch, device=a.device)
                row = {"image": name, "field": field, "cam": cam, "psnr": m["psnr"], "ssim": m["ssim"],
                       "steps": m["steps"], "seconds": m["seconds"], "ms_per_step": 1000 * m["seconds_per_step"],
                       "params": m["params"], "size": m["size"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def bench_lego(a) -> list[dict]:
    import aware3d
    from aware3d import registry

    rows = []
    for backbone in a.lego_methods:  # the methods themselves, with and without --cam
        for cam in {"both": (False, True), "on": (True,), "off": (False,)}[a.lego_cam]:
            run = Path(a.out) / f"lego-{backbone}{'-cam' if cam else ''}"
            if run.exists():
                shutil.rmtree(run)
            ov = [("cam", cam)]
            preset = a.lego_preset_mlp if backbone == "nerf" else a.lego_preset_ngp
            registry.get(backbone).train(str(a.lego_data), out=str(run), preset=preset, downscale=4,
                                         max_minutes=a.lego_minutes, progress=False, val_every=0,
                                         ckpt_every=0, device=a.device, overrides=ov)
            from aware3d.train.io import load_checkpoint

            ck = load_checkpoint(run)
            loaded = aware3d.load(run, device=a.device)
            n_params = sum(p.numel() for p in loaded.model.parameters())
            m = loaded.evaluate(split="test", progress=False, max_views=a.val_views)
            row = {"scene": "lego/4", "backbone": backbone, "cam": cam, "preset": preset,
                   "psnr": m["psnr"], "ssim": m["ssim"], "steps": int(ck["step"]),
                   "seconds": float(ck["train_seconds"]),
                   "ms_per_step": 1000 * float(ck["train_seconds"]) / max(int(ck["step"]), 1),
                   "params": n_params}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", default=None,
                    help="file names in the fox images folder (default: its first, middle and last)")
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=60.0, help="training seconds per image configuration")
    ap.add_argument("--batch", type=int, default=4096, help="random pixels per step")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--skip-images", action="store_true")
    ap.add_argument("--lego", action="store_true", help="also the radiance-field comparison on lego")
    ap.add_argument("--lego-data", default=str(LEGO))
    ap.add_argument("--lego-minutes", type=float, default=3.0)
    ap.add_argument("--lego-preset-mlp", default="tiny")
    ap.add_argument("--lego-preset-ngp", default="cpu")
    ap.add_argument("--lego-methods", nargs="+", default=["nerf", "ngp"], choices=["nerf", "ngp"])
    ap.add_argument("--lego-cam", choices=("both", "on", "off"), default="both",
                    help="lego runs with CAM, without, or both (default)")
    ap.add_argument("--results-name", default="cam.json", help="results file in --results")
    ap.add_argument("--val-views", type=int, default=5)
    ap.add_argument("--out", default="/tmp/aware3d-bench/cam")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = {"args": vars(a)}
    if not a.skip_images:
        if not FOX.is_dir():
            raise SystemExit(f"{FOX}: fox images not found")
        if not a.images:
            names = sorted(p.name for p in FOX.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            a.images = [names[0], names[len(names) // 2], names[-1]]
        rows = out["images"] = bench_images(a)
        print(f"\nfit image, fox photos at <= {a.max_side} px, batch {a.batch}, {a.seconds:g} s of training each, "
              f"{a.threads} thread(s), {a.device}")
        print("| image | field | CAM | params | ms/step | steps | PSNR | SSIM |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['image']} | {r['field']} | {'yes' if r['cam'] else 'no'} | {r['params']:,} | "
                  f"{r['ms_per_step']:.0f} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    if a.lego:
        rows = out["lego"] = bench_lego(a)
        print(f"\nlego --downscale 4, {a.lego_minutes:g} min each, PSNR on {a.val_views} test views")
        print("| backbone | preset | CAM | params | ms/step | steps | PSNR | SSIM |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['backbone']} | {r['preset']} | {'yes' if r['cam'] else 'no'} | {r['params']:,} | "
                  f"{r['ms_per_step']:.0f} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    f = res / a.results_name  # keep the other part's rows when only one part was run
    saved = json.loads(f.read_text()) if f.is_file() else {}
    if "lego" in out or "images" in out:
        saved.setdefault("args_by_part", {})["lego" if "lego" in out else "images"] = out.pop("args")
    saved.update(out)
    f.write_text(json.dumps(saved, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
