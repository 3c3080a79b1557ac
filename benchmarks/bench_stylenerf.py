"""StyleNeRF: parameters and inference time, 3D consistency with and without the upsampler, and speed
against the official code on the CPU.

    .venv/bin/python benchmarks/bench_stylenerf.py [--presets cpu64 ffhq256] [--batches 1 16] [--repeats 3]
    .venv/bin/python benchmarks/bench_stylenerf.py --consistency [--presets ffhq256] [--run RUN ...] \\
        [--yaw-step 10] [--seeds 0 1 2] [--json OUT.json]
    .venv/bin/python benchmarks/bench_stylenerf.py --official CHECKOUT [--batches 1 4] [--pairs 5] --threads 1
    .venv/bin/python benchmarks/bench_stylenerf.py --official CHECKOUT --train [--batches 2] [--pairs 3] --threads 1

Timing (default): one line per (preset, batch): generator / discriminator parameters and ms per
image (the best of ``repeats`` timed calls after one warm-up), at the preset's resolution, fully
grown.

``--consistency``: one sample rendered from two yaws (the prior's mean yaw -+ yaw_step / 2, mean
pitch), eval mode. (1) The NeRF-path depth reprojection error (the foreground's expected depth /
opacity, pixels with opacity > ``--opacity`` (0.5),
:func:`aware3d.methods.gan_common.depth_reprojection_error`).
(2) Image-space error: every opaque pixel of view 1 is lifted to 3D with view 1's NeRF depth,
projected into view 2, view 2's image read there (bilinear) and compared with view 1's pixel, over
pixels that land inside view 2 on an opaque pixel that sees the same point (view 2's depth there
within ``--occlusion-tol`` relative). Images in [0, 1]; mean absolute error over RGB. For (a) the
NeRF's own RGB at nerf_res, (a') the NeRF path (the upsampler's layers without the upsampling, on
the NeRF's features: the image the NeRF-path regulariser ties the final image to), (b) the final
image area-downsampled to nerf_res (the same pixels as (a)) and (c) the final image at full
resolution with the depth and opacity upsampled (bilinear).
"no warp" rows compare the same pixels without moving them (what the two views differ by at all).
Generators: untrained ``--presets`` (seed 0) and trained ``--run`` folders (their EMA generator).

``--official CHECKOUT``: the official generator (a work tree of facebookresearch/StyleNeRF; its
Python dependencies, e.g. einops, importable) built from its stylenerf_ffhq + paper256 configs on
the CPU in float32 (its upsampler's fp16 blocks switched to fp32), weights copied into aware3d's
``ffhq256_release`` (the same networks, the official nn_cat upsampler) and both timed in
alternating pairs on the same inputs: CPU time (``time.process_time``) per image, fully grown
(official alpha 1: 14 + 14 foreground and 4 background samples). The first pair is a warm-up. With
``--train``: the G and D training phases instead (:func:`train_phases_vs_official`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aware3d.methods import gan_common as gc
from aware3d.methods import stylenerf as sn
from aware3d.render.cameras import image_rays, intrinsics_from_fov, project

# --------------------------------------------------------------------------------------------------
# Timing


def timing(a) -> None:
    for preset in a.presets:
        m = sn.build(sn.make_config(preset))
        G = m.generator.eval().requires_grad_(False)
        nG = sum(p.numel() for p in G.parameters())
        nD = sum(p.numel() for p in m.discriminator.parameters())
        for b in a.batches:
            x = sn.sample_inputs(m.cfg, b, torch.Generator().manual_seed(0), train=False)
            with torch.no_grad():
                G(x)
                best = float("inf")
                for _ in range(a.repeats):
                    t = time.perf_counter()
                    G(x)
                    best = min(best, time.perf_counter() - t)
            print(f"{preset:10s} {m.cfg.resolution:4d}px  G {nG:>10,d}  D {nD:>10,d}  batch {b:3d}  "
                  f"{1000 * best / b:9.1f} ms/image")


# --------------------------------------------------------------------------------------------------
# 3D consistency with and without the upsampler


def warp_into(img_b: torch.Tensor, depth_a: torch.Tensor, K: torch.Tensor, c2w_a: torch.Tensor,
              c2w_b: torch.Tensor, depth_b: torch.Tensor, mask_b: torch.Tensor, tol: float):
    """View b's image (C, H, W) read at the projections of view a's pixels lifted with depth_a (H, W)
    (distance along the ray). Returns (warped (C, H, W), valid (H, W)): inside view b, on an opaque
    pixel of b (mask_b read > 0.999) whose depth agrees with the point's distance within ``tol``
    (relative)."""
    H, W = depth_a.shape
    o, d = image_rays(K.float(), c2w_a.float(), W, H)
    X = o + depth_a.float().unsqueeze(-1) * d
    uv, dist = project(X, K.float(), c2w_b.float())
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)[None]

    def read(t, mode="bilinear"):
        return F.grid_sample(t.float()[None], grid, mode=mode, align_corners=False, padding_mode="border")[0]

    warped = read(img_b)
    inside = (uv[..., 0] >= 0.5) & (uv[..., 0] <= W - 0.5) & (uv[..., 1] >= 0.5) & (uv[..., 1] <= H - 0.5)
    opaque = F.grid_sample(mask_b.float()[None, None], grid, align_corners=False)[0, 0] > 0.999
    seen = (read(depth_b[None])[0] - dist).abs() <= tol * dist
    return warped, inside & opaque & seen & (dist > 0)


@torch.no_grad()
def consistency(method, G, seed: int = 0, yaw_step: float = 10.0, tol: float = 0.02, opacity: float = 0.5) -> dict:
    """Depth reprojection and image-space warp errors of one sample between two yaws (module doc)."""
    cfg = method.cfg
    G = G.eval()
    r = method.angle_ranges()
    yaw, pitch = r["yaw"][2], r["pitch"][2]
    x = method.sample_inputs(1, torch.Generator().manual_seed(seed), train=False)
    views = []
    for dy in (-yaw_step / 2, yaw_step / 2):
        x["c2w"] = method.camera_from_angles(torch.tensor([yaw + dy]), torch.tensor([pitch]))
        out = G(x, return_aux=True)
        acc = out["opacity"][0]
        lo, lo_m = out["depth"][0] / acc.clamp_min(1e-6), acc > opacity
        views.append({"c2w": x["c2w"][0], "depth": lo, "mask": lo_m, "acc": acc,
                      "nerf": gc.to_unit(out["nerf"][0], method.image_range),
                      "image": gc.to_unit(out["image"][0], method.image_range),
                      "path": None if out["nerf_path"] is None else gc.to_unit(out["nerf_path"][0], method.image_range)})
    a, b = views
    rn, S = cfg.nerf_res, cfg.resolution
    Kn, Ks = intrinsics_from_fov(cfg.fov, rn), intrinsics_from_fov(cfg.fov, S)
    res = {"seed": seed, "yaw_step": yaw_step, "nerf_res": rn, "resolution": S, "opacity_threshold": opacity,
           "opacity_mean": [float(v["acc"].mean()) for v in views],
           "opaque_fraction": [float(v["mask"].float().mean()) for v in views]}
    res["depth_reprojection"] = gc.depth_reprojection_error(a["depth"], b["depth"], Kn, a["c2w"], b["c2w"],
                                                            a["mask"], b["mask"])

    def err(img_a, img_b, depth_a, mask_a, depth_b, mask_b, K):
        warped, valid = warp_into(img_b, depth_a, K, a["c2w"], b["c2w"], depth_b, mask_b, tol)
        valid = valid & mask_a
        n = int(valid.sum())
        if n == 0:
            return {"n_valid": 0, "mae": float("nan"), "mae_no_warp": float("nan"), "contrast": float("nan"),
                    "mae_rel": float("nan")}
        e = (warped - img_a).abs().mean(0)[valid]
        e0 = (img_b - img_a).abs().mean(0)[valid]
        px = img_a[:, valid]
        scale = float((px - px.mean(1, keepdim=True)).abs().mean())     # the image's own contrast there
        return {"n_valid": n, "fraction": n / float(mask_a.sum().clamp_min(1)), "mae": float(e.mean()),
                "mae_no_warp": float(e0.mean()), "contrast": scale, "mae_rel": float(e.mean()) / max(scale, 1e-12)}

    res["nerf_rgb"] = err(a["nerf"], b["nerf"], a["depth"], a["mask"], b["depth"], b["mask"], Kn)
    if a["path"] is not None:
        res["nerf_path"] = err(a["path"], b["path"], a["depth"], a["mask"], b["depth"], b["mask"], Kn)
    res["final_down"] = err(gc.resize_images(a["image"][None], rn)[0], gc.resize_images(b["image"][None], rn)[0],
                            a["depth"], a["mask"], b["depth"], b["mask"], Kn)

    def up(t):
        return F.interpolate(t[None, None].float(), size=(S, S), mode="bilinear", align_corners=False)[0, 0]

    res["final_full"] = err(a["image"], b["image"], up(a["depth"]), up(a["acc"]) > opacity, up(b["depth"]),
                            up(b["acc"]) > opacity, Ks)
    return res


def consistency_main(a) -> None:
    torch.set_num_threads(a.threads or torch.get_num_threads())
    gens = []
    for preset in a.presets:
        m = sn.build(sn.make_config(preset), seed=0)
        gens.append((f"{preset} (untrained, seed 0)", m, m.generator))
    for run in a.run:
        loaded = sn.METHOD.load(run, device="cpu")
        gens.append((f"{Path(run).name} ({loaded.config.preset}, step {loaded.step})", loaded.gan, loaded.G))
    rows = []
    for name, m, G in gens:
        for seed in a.seeds:
            t = time.process_time()
            r = consistency(m, G, seed, a.yaw_step, a.occlusion_tol, a.opacity)
            r["generator"], r["cpu_s"] = name, time.process_time() - t
            rows.append(r)
            d = r["depth_reprojection"]
            print(f"{name} seed {seed}: opacity mean {r['opacity_mean'][0]:.3f}, > {a.opacity}: "
                  f"{r['opaque_fraction'][0]:.2f}/{r['opaque_fraction'][1]:.2f}  "
                  f"depth reproj rel {d['mean_rel']:.4f} abs {d['mean_abs']:.4f} (n {d['n_valid']})")
            for k in ("nerf_rgb", "nerf_path", "final_down", "final_full"):
                if k not in r:
                    continue
                e = r[k]
                print(f"    {k:11s} MAE warped {e['mae']:.4f}  no warp {e['mae_no_warp']:.4f}  contrast "
                      f"{e['contrast']:.4f}  MAE / contrast {e['mae_rel']:.3f}  (n {e['n_valid']})")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


# --------------------------------------------------------------------------------------------------
# Against the official code


def official_generator(checkout: str, res: int = 256):
    """The official generator (stylenerf_ffhq + paper256, nn_cat upsampler) in float32 on the CPU, eval
    mode, alpha 1 (fully grown)."""
    import yaml

    sys.path.insert(0, str(checkout))
    # the official code imports two names numpy 2 moved; nothing it runs here uses them
    for mod, name, fn in (("numpy.lib.arraysetops", "isin", np.isin), ("numpy.lib.function_base", "angle", np.angle)):
        try:
            __import__(mod)
        except ImportError:
            stub = types.ModuleType(mod)
            setattr(stub, name, fn)
            sys.modules[mod] = stub
    from dnnlib.util import construct_class_by_name

    conf = Path(checkout) / "conf"
    m = yaml.safe_load((conf / "model" / "stylenerf_ffhq.yaml").read_text())
    spec = yaml.safe_load((conf / "spec" / "paper256.yaml").read_text())
    G = m["G_kwargs"]
    G["mapping_kwargs"]["num_layers"] = spec["map"]
    s = G["synthesis_kwargs"]
    s["num_fp16_res"] = 0
    s["upsampler_kwargs"]["channel_base"] = s["channel_base"]
    s["upsampler_kwargs"]["channel_max"] = s["channel_max"]
    g = construct_class_by_name(**G, c_dim=0, img_resolution=res, img_channels=3).eval().requires_grad_(False)
    for mod in g.modules():
        if hasattr(mod, "use_fp16"):
            mod.use_fp16 = False
    g.synthesis.set_alpha(1.0)
    return g


def transfer_into(og, G) -> None:
    """Copy the official generator's weights and buffers into aware3d's (ffhq256_release)."""
    names = {f"synthesis.b{r}.": f"upsampler.blocks.{i}." for i, r in enumerate(G.upsampler.resolutions)}
    sd = {}
    for n, v in og.state_dict().items():
        if "resample_filter" in n or n == "synthesis.alpha":
            continue
        n = n.replace("synthesis.fg_nerf.", "fg.").replace("synthesis.bg_nerf.", "bg.").replace("mapping.fc", "mapping.layers.")
        for k, w in names.items():
            if n.startswith(k):
                n = w + n[len(k):].replace("w_avg", "magnitude")
        sd[n] = v
    missing, unexpected = G.load_state_dict(sd, strict=False)
    missing = [k for k in missing if "resample_filter" not in k and k != "alpha"]
    if missing or unexpected:
        raise RuntimeError(f"weight transfer: missing {missing}, unexpected {unexpected}")


def alternate_pairs(official, ours, pairs: int, batch: int) -> dict[str, list[float]]:
    """CPU milliseconds per image of ``official()`` and ``ours()`` called in alternating order (the
    first round is a warm-up and not kept), ``pairs`` rounds."""
    times = {"official": [], "aware3d": []}
    for i in range(pairs + 1):
        order = (("official", official), ("aware3d", ours)) if i % 2 == 0 else \
            (("aware3d", ours), ("official", official))
        for name, fn in order:
            t = time.process_time()
            fn()
            if i:
                times[name].append(1000 * (time.process_time() - t) / batch)
    return times


def speed_vs_official(a) -> None:
    torch.set_num_threads(a.threads or 1)
    og = official_generator(a.official)
    from dnnlib.camera import get_camera_mat

    m = sn.build(sn.make_config("ffhq256_release"), seed=0)
    G = m.generator.eval().requires_grad_(False)
    transfer_into(og, G)
    n_params = (sum(p.numel() for p in og.parameters()), sum(p.numel() for p in G.parameters()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); parameters official {n_params[0]:,d}, "
          f"aware3d {n_params[1]:,d}")
    for b in a.batches:
        x = m.sample_inputs(b, torch.Generator().manual_seed(0), train=False)
        ws = og.mapping(x["z"], None)
        cam = get_camera_mat(fov=m.cfg.fov).repeat(b, 1, 1)
        c2w = x["c2w"].float()

        def run_official(ws=ws, cam=cam, c2w=c2w, z_bg=x["z_bg"]):
            return og.synthesis(ws, camera_matrices=(cam, c2w, None, None),
                                latent_codes=(None, None, z_bg, z_bg))["img"]

        def run_ours(x=x):
            return G(x)

        with torch.no_grad():
            diff = float((run_official() - run_ours()).abs().max())
            times = alternate_pairs(run_official, run_ours, a.pairs, b)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"batch {b}: official {med['official']:.0f} ms/image (min {min(times['official']):.0f}), "
              f"aware3d {med['aware3d']:.0f} ms/image (min {min(times['aware3d']):.0f}), "
              f"ratio aware3d / official {med['aware3d'] / med['official']:.3f}; {a.pairs} pairs; "
              f"max |image difference| {diff:.2e}")


def train_phases_vs_official(a) -> None:
    """CPU time of one G phase (G forward with the NeRF-path regulariser, critic, backward) and one D
    phase (G without gradients, critic on fakes and reals, backward) per image, official loss
    (training.loss.StyleGAN2Loss, phases Gmain / Dmain) against aware3d's objectives, the same
    weights, fully grown, training mode, alternating pairs."""
    torch.set_num_threads(a.threads or 1)
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    tvu = types.ModuleType("torchvision.utils")
    tvu.save_image = lambda *args, **kw: None                     # imported by the official loss, unused here
    sys.modules.setdefault("torchvision.utils", tvu)
    import yaml

    og = official_generator(a.official).train().requires_grad_(True)
    from dnnlib.util import construct_class_by_name
    from training.loss import StyleGAN2Loss

    conf = Path(a.official) / "conf"
    mcfg = yaml.safe_load((conf / "model" / "stylenerf_ffhq.yaml").read_text())
    spec = yaml.safe_load((conf / "spec" / "paper256.yaml").read_text())
    D = mcfg["D_kwargs"]
    D["epilogue_kwargs"]["mbstd_group_size"] = spec["mbstd"]
    D.update(num_fp16_res=0, channel_base=spec["fmaps"], progressive=True, lowres_head=32)
    od = construct_class_by_name(**D, c_dim=0, img_resolution=256, img_channels=3).train().requires_grad_(True)
    m = sn.build(sn.make_config("ffhq256_release", mbstd_group=min(8, a.batches[0])), seed=0)
    transfer_into(og, m.generator)
    m.discriminator.load_state_dict({"net." + k: v for k, v in od.state_dict().items()
                                     if "resample_filter" not in k and k != "alpha"}, strict=False)
    G, Dm = m.generator.train(), m.discriminator.train()
    loss = StyleGAN2Loss("cpu", og.mapping, og.synthesis, od, r1_gamma=spec["gamma"], **mcfg["loss_kwargs"])
    og.synthesis.set_alpha(1.0)
    od.set_alpha(1.0)
    b = a.batches[0]
    real = torch.rand(b, 3, 256, 256) * 2 - 1
    c0 = torch.zeros(b, 0)

    # as a training loop: only the phase's network takes gradients
    def off_g():
        og.requires_grad_(True), od.requires_grad_(False)
        og.zero_grad(set_to_none=True)
        loss.accumulate_gradients("Gmain", real, c0, torch.randn(b, 512), c0, None, sync=False, gain=1)

    def off_d():
        og.requires_grad_(False), od.requires_grad_(True)
        od.zero_grad(set_to_none=True)
        loss.accumulate_gradients("Dmain", {"img": real.clone()}, c0, torch.randn(b, 512), c0, None, sync=False,
                                  gain=1)

    def ours_g():
        G.requires_grad_(True), Dm.requires_grad_(False)
        G.zero_grad(set_to_none=True)
        m.generator_objective(G, Dm, m.sample_inputs(b))[0].backward()

    def ours_d():
        G.requires_grad_(False), Dm.requires_grad_(True)
        Dm.zero_grad(set_to_none=True)
        m.discriminator_objective(G, Dm, real, m.sample_inputs(b), 0.0)[0].backward()

    for phase, fo, fa in (("G phase", off_g, ours_g), ("D phase", off_d, ours_d)):
        times = alternate_pairs(fo, fa, a.pairs, b)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{phase}, batch {b}: official {med['official']:.0f} ms/image (min {min(times['official']):.0f}), "
              f"aware3d {med['aware3d']:.0f} ms/image (min {min(times['aware3d']):.0f}), "
              f"ratio {med['aware3d'] / med['official']:.3f}; {a.pairs} pairs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--consistency", action="store_true")
    ap.add_argument("--run", nargs="*", default=[], help="trained run folders (--consistency)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--yaw-step", type=float, default=10.0)
    ap.add_argument("--occlusion-tol", type=float, default=0.02)
    ap.add_argument("--opacity", type=float, default=0.5, help="foreground opacity above which a pixel is opaque")
    ap.add_argument("--json", default=None)
    ap.add_argument("--official", default=None, help="a work tree of the official StyleNeRF code")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--train", action="store_true", help="with --official: time the G and D training phases")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.official and a.train:
        a.batches = a.batches or [2]
        train_phases_vs_official(a)
    elif a.official:
        a.batches = a.batches or [1]
        speed_vs_official(a)
    elif a.consistency:
        a.presets = a.presets if a.presets is not None else ["ffhq256"]
        consistency_main(a)
    else:
        a.presets = a.presets or ["cpu64", "ffhq256"]
        a.batches = a.batches or [1, 16]
        timing(a)


if __name__ == "__main__":
    main()
