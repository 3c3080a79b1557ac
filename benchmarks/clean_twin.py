"""Clean twin of an ``aware3d data synth scene --wild`` folder: the same scene and cameras, with the
training views re-rendered in the canonical appearance and without occluders. A nerf trained on it
is the ceiling that NeRF-W can approach on the wild views (BENCHMARKS.md, NeRF-W section).

    python benchmarks/clean_twin.py /tmp/aware3d-bench/wild64b /tmp/aware3d-bench/clean64b
    python benchmarks/bench_nerfw.py --data /tmp/aware3d-bench/clean64b --configs nerf --minutes 10

The val and test views are copied unchanged (they are already clean); the copy's test views are
re-rendered once and compared with the originals as a check of the renderer.
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch


def render_clean(prims, K, c2w, res: int) -> np.ndarray:
    from aware3d.data import wild
    from aware3d.data.synth import _to_u8, render_views

    app = wild.CANONICAL
    r = render_views(prims, K, c2w, res, res, light_dir=app["light_dir"], ambient=app["ambient"])
    rgb, mask = r["rgb"][0].clamp(0, 1), r["mask"][0]
    return _to_u8(torch.cat([rgb * mask.unsqueeze(-1), mask.unsqueeze(-1).float()], -1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("wild", help="a folder written by `aware3d data synth scene OUT --wild`")
    ap.add_argument("out")
    a = ap.parse_args(argv)
    from PIL import Image

    from aware3d.data.synth import _save_png, named_scene
    from aware3d.render.cameras import intrinsics_from_fov

    src, dst = Path(a.wild), Path(a.out)
    meta = json.loads((src / "scene.json").read_text())
    if not meta.get("wild") or meta.get("scene") == "custom":
        raise SystemExit(f"{src / 'scene.json'}: expected a --wild scene of a named layout "
                         f"(wild={meta.get('wild')}, scene={meta.get('scene')})")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    prims, res = named_scene(meta["scene"]), int(meta["resolution"])
    K = intrinsics_from_fov(meta["fov_deg"], res, res)
    test = json.loads((src / "transforms_test.json").read_text())["frames"][0]
    mine = render_clean(prims, K, torch.tensor(test["transform_matrix"]), res)
    saved = np.asarray(Image.open(src / (test["file_path"] + ".png")))
    err = int(np.abs(mine.astype(int) - saved.astype(int)).max())
    if err > 1:
        raise SystemExit(f"{src}: re-rendered test view {test['file_path']} differs by {err}/255; "
                         "the scene was written by another version of the renderer")
    tr = json.loads((src / "transforms_train.json").read_text())
    for fr in tr["frames"]:
        _save_png(dst / (fr["file_path"] + ".png"),
                  render_clean(prims, K, torch.tensor(fr["transform_matrix"], dtype=torch.float32), res))
        fr.pop("appearance", None)
        fr.pop("transients", None)
    (dst / "transforms_train.json").write_text(json.dumps(tr, indent=2))
    meta.update(wild=False, clean_twin_of=str(src), max_occluders=0)
    (dst / "scene.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {dst}: {len(tr['frames'])} clean training views (test-view check: max diff {err}/255)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
