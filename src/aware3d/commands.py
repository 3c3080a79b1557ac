"""Handlers of the `aware3d` subcommands (imported only once a command runs)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .cli import RECON_METHODS



def _method_of(run: str) -> str:
    from .train.io import load_run_config

    p = Path(run)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: run folder not found (expected the --out folder of `aware3d train`)")
    return load_run_config(p)["method"]


def _gan(method: str):
    import importlib

    return importlib.import_module(f"aware3d.methods.{method}")


def cmd_data(args, parser) -> int:
    if args.data_command != "synth" or not getattr(args, "synth_kind", None):
        parser.parse_args(["data", "synth", "--help"])
        return 2
    from .data import synth

    if args.synth_kind == "scene":
        kw = dict(n_views=args.views, resolution=args.resolution, hemisphere=not args.sphere, seed=args.seed)
        if args.wild:
            from .data.wild import synth_wild_scene

            synth_wild_scene(args.out, **kw)
            print(f"wrote a posed scene with per-image lighting and transient occluders in the training "
                  f"views, clean test views (Blender format) to {args.out}")
        else:
            synth.synth_scene(args.out, **kw)
            print(f"wrote a posed scene (Blender format: train/val/test, depth, masks) to {args.out}")
    else:
        synth.synth_objects(args.out, count=args.count, resolution=args.resolution,
                            objects=args.objects, seed=args.seed)
        print(f"wrote {args.count} images of {args.objects[0]}-{args.objects[1]} objects to {args.out}")
    return 0


def cmd_train(args, parser) -> int:
    m = args.method
    if m in RECON_METHODS:
        from .train.recon import train

        overrides = list(args.overrides)
        if args.backbone:
            if m != "nerfw":
                raise ValueError(f"--backbone applies to nerfw only (got method {m})")
            overrides.append(("backbone", args.backbone))
        if args.cam:
            overrides.append(("cam", "true"))
        run = train(m, args.data, out=args.out, preset=args.preset, max_steps=args.max_steps,
                    max_minutes=args.max_minutes, resume=args.resume, seed=args.seed,
                    downscale=args.downscale, batch_size=args.batch_size, device=args.device,
                    overrides=overrides)
    else:
        import yaml

        kw = {k: yaml.safe_load(v) for k, v in args.overrides}
        if args.preset:
            kw["preset"] = args.preset  # else the method's own default (its CPU preset)
        if args.device:
            kw.setdefault("device", args.device)  # a GAN config field (--set device=... wins)
        run = _gan(m).train(args.data, args.out or f"runs/{m}-{Path(args.data).name}",
                            max_steps=args.max_steps, max_minutes=args.max_minutes,
                            resume=args.resume, seed=args.seed, batch_size=args.batch_size, **kw)
    print(f"run folder: {run}")
    return 0


def cmd_eval(args, parser) -> int:
    method = _method_of(args.run)
    if args.checkpoint is not None and method in RECON_METHODS:
        raise ValueError(f"--checkpoint applies to GAN runs (this run is {method})")
    if args.appearance_half and method != "nerfw":
        raise ValueError(f"--appearance-half applies to nerfw runs (this run is {method})")
    if args.appearance_half:
        from .methods.nerfw import evaluate_appearance_half
        from .train.recon import print_metrics_table

        metrics = evaluate_appearance_half(args.run, data=args.data, split=args.split)
        print(print_metrics_table(metrics))
    elif method in RECON_METHODS:
        from .train.recon import evaluate, print_metrics_table

        metrics = evaluate(args.run, data=args.data, split=args.split)
        print(print_metrics_table(metrics))
    else:
        metrics = _gan(method).evaluate(args.run, n_gen=args.n_gen, data=args.data, checkpoint=args.checkpoint)
        print("\n".join(f"{k:<12}{v:>12.4f}" for k, v in metrics.items() if isinstance(v, (int, float))))
    print(f"wrote {metrics.get('path', Path(args.run) / 'eval' / 'metrics.json')}")
    return 0


def cmd_render(args, parser) -> int:
    method = _method_of(args.run)
    if method in RECON_METHODS:
        from .train.recon import PROGRAMS, render_program

        extra = ()
        if method == "nerfw":
            from .methods import nerfw

            extra = nerfw.PROGRAMS
        if args.list:
            print("\n".join(PROGRAMS + extra))
            return 0
        if args.program in extra:
            files = nerfw.render(args.run, args.program, out_dir=args.out, frames=args.frames)
        else:
            files = render_program(args.run, args.program or "turntable", path=args.path, out=args.out,
                                   frames=args.frames)
    else:
        import importlib.util

        where = f"aware3d.programs.{method}"
        prog = importlib.import_module(where if importlib.util.find_spec(where) else f"aware3d.methods.{method}")
        if args.list or not args.program:
            print("\n".join(prog.PROGRAMS))
            return 0
        kw = {} if args.frames is None else {"n_frames": args.frames}
        files = prog.render(args.run, args.program, out_dir=args.out, seed=args.seed, **kw)
    for k, v in (files.items() if isinstance(files, dict) else enumerate(files)):
        print(f"{k}: {v}")
    return 0


def cmd_export(args, parser) -> int:
    if args.export_kind != "mesh":
        parser.parse_args(["export", "--help"])
        return 2
    method = _method_of(args.run)
    if method in RECON_METHODS:
        from .train.recon import export_mesh

        info = export_mesh(args.run, resolution=args.resolution, threshold=args.threshold, out=args.out)
    elif method == "giraffe":
        out = args.out or str(Path(args.run) / f"mesh_seed{args.seed}_object{args.object}.ply")
        info = _gan(method).export_object_mesh(args.run, seed=args.seed, object_index=args.object,
                                               resolution=args.resolution, out_path=out)
    else:
        mod = _gan(method)
        if not hasattr(mod, "export_mesh"):
            raise ValueError(f"{method} has no radiance field to mesh (its 3D representation is a "
                             f"learnt feature volume); mesh export exists for nerf, ngp, nerfw, "
                             f"giraffe, graf, pigan and cips3d")
        out = args.out or str(Path(args.run) / f"mesh_seed{args.seed}.ply")
        info = mod.export_mesh(args.run, seed=args.seed, resolution=args.resolution, out_path=out)
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_fit(args, parser) -> int:
    if args.fit_kind != "image":
        parser.parse_args(["fit", "--help"])
        return 2
    from .fit import fit_image

    m = fit_image(args.path, field=args.field, cam=args.cam, steps=args.steps, out=args.out, progress=True)
    print(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} after {m['steps']} steps "
          f"({m['seconds']:.1f} s, {m['params']:,} parameters)")
    for k, v in m.get("files", {}).items():
        print(f"{k}: {v}")
    return 0


def cmd_demo(args, parser) -> int:
    """Synthesise a scene, train ngp for a couple of minutes, render a turntable, print PSNR."""
    from .data.synth import synth_scene
    from .train.recon import evaluate, render_program, train

    out = Path(args.out)
    data = out / "scene"
    t0 = time.time()
    if not (data / "transforms_train.json").exists():
        print(f"[1/4] synthesising a scene of analytic primitives in {data}")
        synth_scene(data, n_views=100, resolution=96, hemisphere=True, seed=0)
    run = out / "run"
    print(f"[2/4] training ngp for {args.minutes:g} minutes")
    resume = (run / "checkpoints").is_dir()
    if resume:
        print("      (an earlier demo run exists there: continuing it)")
    # dense warm-up: on this small, tight scene early pruning greys out faint objects
    # (BENCHMARKS.md: 16.60 -> 19.50 dB in a 1.5-minute A/B). A hash grid sized for 96-px images
    # (2^16 entries per level, finest level 256): the cpu preset's 2^19 x 1024 grid, made for
    # 200-800 px, took 2.5x the time per step and left the objects grey and noisy (19.98 -> 28.32 dB
    # in a 2-minute A/B, BENCHMARKS.md)
    train("ngp", str(data), out=str(run), max_minutes=args.minutes, resume=resume,
          device=args.device, val_every=0,
          overrides=[("occ_dense_warmup", True), ("log2_table", 16), ("max_res", 256)])
    print("[3/4] evaluating on the held-out test views")
    metrics = evaluate(run, split="test", device=args.device)
    print("[4/4] rendering a turntable")
    files = render_program(run, "turntable", frames=48, device=args.device)
    print()
    print(f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} over {metrics['n_views']} views"
          f" (took {(time.time() - t0) / 60:.1f} min)")
    print(f"turntable video: {files['rgb_mp4']}  (GIF: {files['rgb_gif']})")
    print(f"depth video:     {files['depth_mp4']}")
    print(f"side-by-sides:   {run / 'eval'}")
    print(f"metrics:         {run / 'eval' / 'metrics.json'}")
    return 0
