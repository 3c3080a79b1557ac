"""Handlers of the `aware3d` subcommands (imported only once a command runs).

Each handler calls the method surface (:mod:`aware3d.methods.base`) through the registry and
:func:`aware3d.load`; none asks which kind of method it has. Options a user gave that a method (or
a render program) does not take are refused by the surface with a message naming them.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _given(**options) -> dict:
    """The options a user set (None: not given on the command line)."""
    return {k: v for k, v in options.items() if v is not None}


def cmd_data(args, parser) -> int:
    if args.data_command == "process":
        if not getattr(args, "process_kind", None):
            parser.parse_args(["data", "process", "--help"])
            return 2
        from .data import process

        common = dict(matching=args.matching, max_size=args.max_size, overwrite=args.overwrite,
                      verbose=args.verbose)
        if args.process_kind == "images":
            summary = process.process_images(args.src, args.out, **common)
        else:
            summary = process.process_video(args.src, args.out, num_frames=args.num_frames, **common)
        print(f"wrote a posed scene to {args.out}: train on it with `aware3d train ngp --data {args.out}`")
        print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, indent=2,
                         default=str))
        return 0
    if args.data_command != "synth" or not getattr(args, "synth_kind", None):
        parser.parse_args(["data", "synth", "--help"])
        return 2
    from .data import synth

    if args.synth_kind == "scene":
        kw = dict(n_views=args.views, resolution=args.resolution, hemisphere=not args.sphere, seed=args.seed)
        if args.dynamic and args.wild:
            raise ValueError("--dynamic and --wild: choose one (a dynamic scene, or a static one with "
                             "per-image lighting and occluders)")
        if args.dynamic:
            from .data.dynamic import synth_dynamic_scene

            n_test = max(1, args.views // 10)
            synth_dynamic_scene(args.out, n_train=max(1, args.views - 2 * n_test), n_val=n_test, n_test=n_test,
                                resolution=args.resolution, seed=args.seed)
            print(f"wrote a dynamic scene (D-NeRF format: frames with a time in [0, 1]) to {args.out}: train on it "
                  f"with `aware3d train dnerf --data {args.out}`")
        elif args.wild:
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


def cmd_doctor(args, parser) -> int:
    from .doctor import format_report, report

    print(format_report(report(build=not args.no_build)))
    return 0


def cmd_methods(args, parser) -> int:
    from . import registry

    width = max(len(n) for n in registry.METHODS) + 2
    for name in registry.METHODS:
        m = registry.get(name)
        print(f"{name:<{width}}{m.title}  [{m.kind}]  {m.paper}")
        if args.verbose:
            for p, desc in m.presets.items():
                star = "*" if p == m.default_preset else " "
                print(f"    {star}{p:<14}{desc}")
    if not args.verbose:
        print("\n(--verbose lists every method's presets; * marks the default)")
    return 0


def cmd_train(args, parser) -> int:
    from . import registry
    from .methods.base import call_with_options

    method = registry.get(args.method)
    overrides = list(args.overrides)
    if args.backbone:
        overrides.append(("backbone", args.backbone))
    if args.cam:
        overrides.append(("cam", "true"))
    options = dict(out=args.out, preset=args.preset, max_steps=args.max_steps,
                   max_minutes=args.max_minutes, resume=args.resume, seed=args.seed,
                   batch_size=args.batch_size, device=args.device, overrides=overrides)
    options.update(_given(downscale=args.downscale))
    watcher = None
    if args.viewer:
        from .viewer import TrainingViewer

        if options["out"] is None:  # the loops' default, named here so the viewer knows the folder
            options["out"] = f"runs/{method.name}-{Path(args.data).name}"
        watcher = TrainingViewer(method, options["out"], host=args.host, port=args.port)
        options["on_step"] = watcher.on_step
        print(f"the viewer starts at http://localhost:{args.port} once the first step has run",
              file=sys.stderr, flush=True)
    try:
        run = call_with_options(method.train, options, f"training {method.name}", args.data)
    finally:
        if watcher is not None:
            watcher.close()
    print(f"run folder: {run}")
    return 0


def cmd_view(args, parser) -> int:
    from .viewer import view

    view(args.run, host=args.host, port=args.port, device=args.device, refined=args.resolution)
    return 0


def cmd_eval(args, parser) -> int:
    from .api import load
    from .methods.base import call_with_options

    run = load(args.run, device=args.device, checkpoint=args.checkpoint)
    options = _given(data=args.data, split=args.split, n_gen=args.n_gen,
                     appearance_half=args.appearance_half, max_views=args.max_views, downscale=args.downscale)
    metrics = call_with_options(run.evaluate, options, f"evaluating {run.method.name} runs")
    print(run.format_metrics(metrics))
    print(f"wrote {metrics.get('path', run.path / 'eval' / run.metrics_name())}")
    return 0


def cmd_render(args, parser) -> int:
    from .api import load

    program, path = (args.program or [None])[0], args.path
    if args.program and len(args.program) > 1:  # --program path FILE.json
        if len(args.program) > 2 or path is not None:
            raise ValueError(f"--program: expected a name and at most one file, got {' '.join(args.program)}")
        path = args.program[1]
    run = load(args.run, device=args.device)
    program = program or run.default_program
    if args.list or not program:
        width = max(len(n) for n in run.programs)
        print("\n".join(f"{n:<{width}}  {d}" for n, d in run.programs.items()))
        return 0
    options = _given(frames=args.frames, seed=args.seed, samples=args.samples, path=path,
                     resolution=args.resolution, time=args.time)
    files = run.render_program(program, out=args.out, **options)
    for k, v in files.items():
        print(f"{k}: {v}")
    return 0


def cmd_export(args, parser) -> int:
    if args.export_kind not in ("mesh", "pointcloud"):
        parser.parse_args(["export", "--help"])
        return 2
    from .api import load
    from .methods.base import call_with_options

    run = load(args.run, device=args.device)
    if args.export_kind == "mesh":
        options = _given(resolution=args.resolution, threshold=args.threshold, seed=args.seed,
                         object_index=args.object, frame=args.frame)
        export = run.export_mesh
    else:
        options = _given(num_points=args.num_points, min_opacity=args.min_opacity, frame=args.frame)
        export = run.export_pointcloud
    info = call_with_options(export, {"out": args.out, **options},
                             f"{args.export_kind} export of {run.method.name} runs")
    print(json.dumps(info, indent=2, default=str))
    return 0


def cmd_fit(args, parser) -> int:
    if args.fit_kind == "video":
        from .fit_video import fit_video

        m = fit_video(args.path, model=args.model, cam=args.cam, steps=args.steps, out=args.out,
                      max_side=args.resolution, config=args.config, mod_res=args.mod_res,
                      max_frames=args.max_frames, batch=args.batch, seed=args.seed, device=args.device,
                      progress=True, aggregation=args.flow_aggregation)
        print(f"PSNR {m['psnr']:.2f} dB, MS-SSIM {m['ms_ssim']:.4f} ({m['ms_ssim_levels']} scales) over "
              f"{m['frames']} frames of {m['size'][0]}x{m['size'][1]} after {m['steps']} steps "
              f"({m['seconds']:.1f} s); {m['params']:,} parameters, {m['bpp_fp16']:.3f} bits per pixel "
              f"at float16")
        if m.get("aggregation"):
            print(f"flow-guided aggregation from frames {m['aggregation']}: independent frames alone "
                  f"{m['psnr_independent']:.2f} dB")
        for k, v in m.get("files", {}).items():
            print(f"{k}: {v}")
        return 0
    if args.fit_kind == "signal":
        from .fit import fit_signal

        r = fit_signal(args.path, args.out, arms=[a.strip() for a in args.arms.split(",") if a.strip()],
                       steps=args.steps, lr=args.lr, act=args.act, hidden=args.hidden, layers=args.layers,
                       grid=args.grid, samples=args.samples, seed=args.seed, progress=True)
        print(f"{r['setting']['target']}: {r['setting']['samples']} samples, {args.steps} steps")
        for k, v in r["files"].items():
            print(f"{k}: {v}")
        return 0
    if args.fit_kind != "image":
        parser.parse_args(["fit", "--help"])
        return 2
    from .fit import fit_image

    m = fit_image(args.path, field=args.field, cam=args.cam, steps=args.steps, out=args.out, progress=True,
                  max_side=args.resolution)
    print(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f} after {m['steps']} steps "
          f"({m['seconds']:.1f} s, {m['params']:,} parameters)")
    for k, v in m.get("files", {}).items():
        print(f"{k}: {v}")
    return 0


# the demo's floor: on its scene, 250 steps gave 25.5 dB test PSNR and 500 steps 28.9 dB
# (BENCHMARKS.md, "The demo's budget"), so a machine too loaded to reach that many steps in the
# time budget still ends with a recognisable result
DEMO_MIN_STEPS = 300


def cmd_demo(args, parser) -> int:
    """Synthesise a scene, train ngp for a couple of minutes, render a turntable, print PSNR."""
    from . import registry
    from .api import load
    from .data.synth import synth_scene

    out = Path(args.out)
    data = out / "scene"
    t0 = time.time()
    if not (data / "transforms_train.json").exists():
        print(f"[1/4] synthesising a scene of analytic primitives in {data}")
        synth_scene(data, n_views=100, resolution=96, hemisphere=True, seed=0)
    run_dir = out / "run"
    print(f"[2/4] training ngp for {args.minutes:g} minutes of training time, at least {DEMO_MIN_STEPS} steps "
          f"(building the kernels and loading the images come first and are not counted)")
    resume = (run_dir / "checkpoints").is_dir()
    if resume:
        print("      (an earlier demo run exists there: continuing it)")
    # dense warm-up: on this small, tight scene early pruning greys out faint objects
    # (BENCHMARKS.md: 16.60 -> 19.50 dB in a 1.5-minute A/B). A hash grid sized for 96-px images
    # (2^16 entries per level, finest level 256): the cpu preset's 2^19 x 1024 grid, made for
    # 200-800 px, took 2.5x the time per step and left the objects grey and noisy (19.98 -> 28.32 dB
    # in a 2-minute A/B, BENCHMARKS.md)
    registry.get("ngp").train(str(data), out=str(run_dir), max_minutes=args.minutes, resume=resume,
                              device=args.device, val_every=0, min_steps=DEMO_MIN_STEPS,
                              overrides=[("occ_dense_warmup", True), ("log2_table", 16), ("max_res", 256)])
    run = load(run_dir, device=args.device)
    print("[3/4] evaluating on the held-out test views")
    metrics = run.evaluate(split="test")
    print("[4/4] rendering a turntable")
    files = run.render_program("turntable", frames=48)
    print()
    print(f"test PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f} over {metrics['n_views']} views"
          f" (took {(time.time() - t0) / 60:.1f} min)")
    print(f"turntable video: {files['rgb_mp4']}  (GIF: {files['rgb_gif']})")
    print(f"depth video:     {files['depth_mp4']}")
    print(f"side-by-sides:   {run_dir / 'eval'}")
    print(f"metrics:         {run_dir / 'eval' / 'metrics.json'}")
    return 0
