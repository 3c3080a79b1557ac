"""Structure from motion on the instant-ngp fox photos, then ngp on our poses vs the shipped poses.

1. ``process_images`` on ../shared/data/instant_ngp/fox/images (50 photos, 1080x1920; ``--max-size``
   960 by default, i.e. 540x960): seconds per stage, images registered / given, sparse points, mean
   reprojection error.
2. ngp (``--preset``, default cpu) for ``--steps`` steps on the processed scene (at downscale
   ``--proc-downscale``) and on the shipped transforms.json (at ``--ref-downscale``), both about
   270x480, each evaluated (PSNR / SSIM) on its own held-out cameras of the same photos: aware3d's
   holdout, every 8th frame of the file (0001, 0012, 0027, 0042, 0073, 0089, 0110 in both files
   when every photo registers; checked and printed). Each reconstruction is judged against its own
   cameras, which is fair because the photos are the same.
3. A video made from the 50 photos in name order (``--video-fps`` frames per second, H.264 through
   imageio-ffmpeg, at the processed size) processed with ``process_video`` (``--video-frames``
   frames, sequential matching).

    python benchmarks/bench_process.py --work /tmp/bench_process

Prints a table; writes everything to WORK/bench_process.json (the processed scenes, runs and the
video stay in WORK).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOX = ROOT.parent / "shared" / "data" / "instant_ngp" / "fox"


from bench_recon import cpu_model  # noqa: E402  (the benchmarks' one machine description)


def train_and_eval(data: Path, run: Path, downscale: int, steps: int, preset: str) -> dict:
    import aware3d
    from aware3d.data import load_scene

    if run.exists():
        shutil.rmtree(run)
    test = load_scene(data, "test", downscale=downscale)
    t0 = time.perf_counter()
    aware3d.method("ngp").train(str(data), out=str(run), preset=preset, max_steps=steps,
                                downscale=downscale, val_every=0, ckpt_every=steps, progress=True,
                                device="cpu")
    train_s = time.perf_counter() - t0
    m = aware3d.load(run, device="cpu").evaluate(split="test", progress=False)
    return {"data": str(data), "downscale": downscale, "size": [test.width, test.height],
            "test_views": [Path(n).name for n in test.names], "psnr": float(m["psnr"]),
            "ssim": float(m.get("ssim", float("nan"))), "train_seconds": round(train_s, 1)}


def make_video(images_dir: Path, path: Path, size: tuple[int, int], fps: int) -> int:
    import imageio.v2 as imageio
    import numpy as np
    from PIL import Image

    files = sorted(images_dir.glob("*.jpg"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=9, macro_block_size=2) as w:
        for f in files:
            with Image.open(f) as im:
                w.append_data(np.asarray(im.convert("RGB").resize(size, Image.Resampling.BOX)))
    return len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fox", default=str(FOX), help="the instant-ngp fox folder")
    ap.add_argument("--work", default="/tmp/bench_process", help="where scenes, runs and the video go")
    ap.add_argument("--max-size", type=int, default=960, help="longer image side for SfM (px)")
    ap.add_argument("--matching", default="auto")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--proc-downscale", type=int, default=2)
    ap.add_argument("--ref-downscale", type=int, default=4)
    ap.add_argument("--video-frames", type=int, default=25)
    ap.add_argument("--video-fps", type=int, default=10)
    ap.add_argument("--skip", nargs="*", default=[], choices=["process", "train", "video"])
    a = ap.parse_args()

    from aware3d.data.process import process_images, process_video

    fox, work = Path(a.fox), Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res_path = work / "bench_process.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {}
    res.update({"machine": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                "args": {k: v for k, v in vars(a).items()}})
    scene = work / "fox_processed"
    if "process" not in a.skip:
        res["process"] = process_images(fox / "images", scene, max_size=a.max_size,
                                        matching=a.matching, overwrite=True)
        res_path.write_text(json.dumps(res, indent=2))
    if "train" not in a.skip:
        res["ngp_processed"] = train_and_eval(scene, work / "runs" / "ngp-processed",
                                              a.proc_downscale, a.steps, a.preset)
        res_path.write_text(json.dumps(res, indent=2))
        res["ngp_shipped"] = train_and_eval(fox, work / "runs" / "ngp-shipped", a.ref_downscale,
                                            a.steps, a.preset)
        res["same_test_photos"] = (res["ngp_processed"]["test_views"] == res["ngp_shipped"]["test_views"])
        res_path.write_text(json.dumps(res, indent=2))
    if "video" not in a.skip:
        video = work / "fox.mp4"
        w, h = res.get("process", {}).get("camera", {}).get("width", 540), \
            res.get("process", {}).get("camera", {}).get("height", 960)
        n = make_video(fox / "images", video, (w, h), a.video_fps)
        res["video"] = {"file": str(video), "frames": n, "size": [w, h], "fps": a.video_fps,
                        "summary": process_video(video, work / "fox_video", num_frames=a.video_frames,
                                                 overwrite=True)}
        res_path.write_text(json.dumps(res, indent=2))

    print(f"\nfox, {res['machine']}, {res['date']}")
    if "process" in res:
        p = res["process"]
        print(f"process_images (max side {a.max_size} px, {p['matching']} matching, {p['pairs']} pairs): "
              f"{p['images_registered']}/{p['images_given']} registered, {p['points']} points, "
              f"reprojection {p['mean_reprojection_error_px']:.3f} px")
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in p["seconds"].items()))
    if "ngp_shipped" in res:
        print(f"\nngp preset {a.preset}, {a.steps} steps, PSNR / SSIM on the held-out photos "
              f"({', '.join(res['ngp_shipped']['test_views'])}; same photos in both: {res['same_test_photos']})")
        print(f"{'poses':<28}{'size':>10}{'PSNR':>8}{'SSIM':>8}{'train s':>9}")
        for k, label in (("ngp_processed", "process_images (ours)"), ("ngp_shipped", "shipped transforms.json")):
            r = res[k]
            print(f"{label:<28}{r['size'][0]:>5}x{r['size'][1]:<4}{r['psnr']:>8.2f}{r['ssim']:>8.3f}"
                  f"{r['train_seconds']:>9.0f}")
    if "video" in res:
        v, s = res["video"], res["video"]["summary"]
        print(f"\nprocess_video ({v['frames']} frames at {v['size'][0]}x{v['size'][1]}, {v['fps']} fps -> "
              f"{len(s['selected_frames'])} kept, {s['matching']}, {s['pairs']} pairs): "
              f"{s['images_registered']}/{s['images_given']} registered, {s['points']} points, "
              f"reprojection {s['mean_reprojection_error_px']:.3f} px, {s['seconds']['total']:.0f} s")
    print(f"\nresults: {res_path}")


if __name__ == "__main__":
    main()
