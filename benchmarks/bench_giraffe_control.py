"""GIRAFFE controllability: does moving one object move it across the image?

For ``--scenes`` random scenes of a trained run (EMA generator, fixed seed), object 0 is slid along
the camera's right axis projected onto the ground plane: its coordinate along that axis goes from
``-amp`` to ``+amp`` in ``--steps`` equal steps while its coordinate along the camera's forward
axis stays as sampled (``amp`` = half the preset's translation range, so the sweep stays inside
the range the objects were trained in; sliding +-amp around the sampled position instead pushes
objects out of the frame, where the centroid stops at the border). Each step renders object 0 alone with its alpha
(``G(inputs, objects=[0], background=False, return_alpha=True)``); the alpha-weighted centroid's x
coordinate is recorded. A scene passes when the object is visible (alpha mass >= ``--min-mass``
pixels) in at least ``--min-visible`` steps and the centroid moves strictly to the right between
every pair of consecutive visible steps. The pass rate is the controllability figure (target: at
least 90% of 100 scenes).

    python benchmarks/bench_giraffe_control.py RUN [--scenes 100 --steps 9 --seed 0]

Prints the rate and writes RUN/eval/controllability.json and a PNG strip of the first scenes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


@torch.no_grad()
def controllability(G, cfg, n_scenes: int = 100, steps: int = 9, seed: int = 0, min_mass: float = 4.0,
                    min_visible: int = 5, chunk: int = 25) -> dict:
    from aware3d.methods import giraffe as gm
    from aware3d.programs.giraffe import _ground_axes

    g = torch.Generator().manual_seed(seed)
    base = gm.sample_inputs(cfg, n_scenes, g, train=False)
    amp = 0.5 * abs(cfg.translation_max[0] - cfg.translation_min[0])
    right, _ = _ground_axes(base["c2w"])
    offsets = torch.linspace(-amp, amp, steps)
    cx = torch.zeros(n_scenes, steps)
    mass = torch.zeros(n_scenes, steps)
    strips = []
    for k, off in enumerate(offsets):
        x = {kk: v.clone() for kk, v in base.items()}
        t = x["obj_translation"][:, 0, :2]
        along = (t * right[:, :2]).sum(-1, keepdim=True)
        t += (float(off) - along) * right[:, :2]  # position along the camera's right axis = off
        alphas = []
        for a in range(0, n_scenes, chunk):
            part = {kk: v[a:a + chunk] for kk, v in x.items()}
            alphas.append(G(part, objects=[0], background=False, return_alpha=True)["alpha"][:, 0].float())
        alpha = torch.cat(alphas)  # (n, H, W)
        W = alpha.shape[-1]
        xs = torch.arange(W, dtype=torch.float32) + 0.5
        m = alpha.sum(dim=(1, 2))
        mass[:, k] = m
        cx[:, k] = (alpha.sum(dim=1) * xs).sum(-1) / m.clamp_min(1e-8)
        strips.append(alpha[:8])
    visible = mass >= min_mass
    passed = []
    for i in range(n_scenes):
        c = cx[i][visible[i]]
        ok = bool(visible[i].sum() >= min_visible and (c[1:] > c[:-1]).all())
        passed.append(ok)
    rate = sum(passed) / n_scenes
    return {"scenes": n_scenes, "steps": steps, "amplitude": amp, "pass_rate": rate,
            "passed": sum(passed), "mean_visible_steps": float(visible.float().sum(1).mean()),
            "centroid_x": cx.tolist(), "alpha_mass": mass.tolist(), "_strips": strips}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--scenes", type=int, default=100)
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-mass", type=float, default=4.0)
    ap.add_argument("--min-visible", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from aware3d.methods import giraffe as gm
    from aware3d.train.io import save_png

    run = gm.METHOD.load(args.run, device="cpu")
    cfg, G = run.config, run.G
    t0 = time.perf_counter()
    res = controllability(G, cfg, args.scenes, args.steps, args.seed, args.min_mass, args.min_visible)
    strips = res.pop("_strips")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "controllability.json").write_text(json.dumps(res))
    # rows: scenes, columns: sweep steps (object-only alpha)
    grid = torch.cat([torch.cat([s[i] for s in strips], dim=1) for i in range(strips[0].shape[0])], dim=0)
    save_png(out / "controllability_alpha.png", grid[..., None].expand(-1, -1, 3))
    print(f"controllability: {res['passed']}/{res['scenes']} scenes ({100 * res['pass_rate']:.0f}%) move "
          f"object 0's alpha centroid monotonically left -> right over {res['steps']} steps of "
          f"+-{res['amplitude']:.2f} (mean visible steps {res['mean_visible_steps']:.1f}); "
          f"{res['seconds']} s; {out / 'controllability.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
