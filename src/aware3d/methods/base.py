"""The one surface every aware3d method gives, for both halves.

A method module defines ``METHOD``, one of

- :class:`FieldMethod`: posed photos in, a radiance field out (nerf, ngp, nerfw). Its config is a
  plain dict; ``build(cfg, scene, device)`` makes the model the reconstruction loop
  (:func:`aware3d.train.recon.train`) trains;
- :class:`GenerativeMethod`: an unposed image collection in, a 3D-aware generator out (giraffe,
  graf, pigan, hologan, cips3d). Its config is a dataclass; ``build(cfg)`` makes the object the GAN
  engine (:func:`aware3d.train.gan.train_gan`) trains.

Both give the same calls: ``presets`` (name -> one-line description), ``make_config``, ``build``,
``train`` (through the one loop of their kind), ``load`` (a run folder -> a :class:`Run`) and
``programs``. A loaded run gives ``render`` (a camera for fields, generator inputs for GANs),
``programs`` / ``render_program``, ``evaluate``, ``format_metrics`` and ``export_mesh``. Commands
call these and never ask which kind a method is; options a method does not take are refused with
a message naming them (:func:`call_with_options`).
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..programs import Program, find_program, program_table
from ..utils.device import pick_device

__all__ = ["Method", "FieldMethod", "GenerativeMethod", "Run", "FieldRun", "GenerativeRun",
           "call_with_options", "pick_device", "truncate_latents"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def call_with_options(fn: Callable, options: Mapping[str, Any], what: str, *args):
    """``fn(*args, **options)``, or a ValueError naming the options ``fn`` does not take (as
    command-line flags) and those it does. ``what`` names the call in the message ("render
    program turntable of ngp runs")."""
    params = list(inspect.signature(fn).parameters.items())[len(args):]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for _, p in params):
        names = [k for k, _ in params]
        bad = [k for k in options if k not in names]
        if bad:
            takes = [_flag(k) for k, p in params if p.default is not inspect.Parameter.empty]
            raise ValueError(f"{', '.join(_flag(k) for k in bad)}: does not apply to {what} "
                             f"(it takes {', '.join(takes) or 'no options'})")
    return fn(*args, **options)


def _check_presets(name: str, presets: Mapping[str, Any], descriptions: Mapping[str, str], default: str):
    missing = sorted(set(presets) - set(descriptions))
    extra = sorted(set(descriptions) - set(presets))
    if missing or extra:
        raise ValueError(f"{name}: every preset needs a one-line description "
                         f"(missing {missing}, unknown {extra})")
    if default not in presets:
        raise ValueError(f"{name}: default preset {default!r} is not one of {sorted(presets)}")


class Method:
    """What every method gives (see the module docstring). ``kind`` is "field" or "gan"."""

    kind: str = ""
    run_class: type

    def __init__(self, name: str, title: str, presets: Mapping[str, Any],
                 descriptions: Mapping[str, str], default_preset: str,
                 programs: Iterable[Program] = (), default_program: str | None = None,
                 paper: str = ""):
        _check_presets(name, presets, descriptions, default_preset)
        self.name, self.title, self.paper = name, title, paper
        self.preset_settings = presets
        self.presets: dict[str, str] = {k: descriptions[k] for k in presets}
        self.default_preset = default_preset
        self.program_table = program_table(programs)
        self.default_program = default_program

    @property
    def programs(self) -> dict[str, str]:
        """``{name: one-line description}`` of the method's render programs."""
        return {k: p.description for k, p in self.program_table.items()}

    def __repr__(self) -> str:
        return f"<aware3d method {self.name} ({self.kind}): {self.title}>"

    def load(self, run_dir, device: str | torch.device | None = None, checkpoint=None) -> "Run":
        raise NotImplementedError

    def default_settings(self) -> Mapping[str, Any]:
        """``{key: value}`` of the default preset."""
        cfg = self.make_config(self.default_preset)
        return cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)

    def settings(self) -> list[tuple[str, str, Any, str]]:
        """``(key, type, default, meaning)`` of every ``--set`` key, read off the config dataclass
        (default: the default preset's value)."""
        from ..utils.settings import describe_type, field_comments, field_types

        hints, docs, values = field_types(self.config_cls), field_comments(self.config_cls), self.default_settings()
        return [(k, describe_type(hints[k]), values.get(k), docs.get(k, "")) for k in hints
                if k not in ("preset", "data")]

    def describe(self) -> str:
        """The method's presets and settings, for ``aware3d train METHOD --help``."""
        lines = [f"{self.name}: {self.title} ({self.paper})", "", "presets (--preset; * the default):"]
        w = max(len(p) for p in self.presets)
        lines += [f"  {'*' if p == self.default_preset else ' '}{p:<{w}}  {d}" for p, d in self.presets.items()]
        rows = self.settings()
        kw = max(len(r[0]) for r in rows)
        tw = max(len(r[1]) for r in rows)
        lines += ["", f"settings (--set KEY=VALUE; default: the {self.default_preset} preset's value):"]
        for key, typ, default, meaning in rows:
            lines.append(f"  {key:<{kw}}  {typ:<{tw}}  {default!r:<12}  {meaning}".rstrip())
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Runs


class Run:
    """A trained run, loaded (:func:`aware3d.load`). ``path``: the run folder; ``method``: its
    :class:`Method`; ``config``: its settings; ``checkpoint``: the checkpoint asked for (None: the
    latest); ``step``: the step of the loaded checkpoint."""

    def __init__(self, method: Method, path, config, checkpoint=None, step: int | None = None):
        self.method, self.path, self.config = method, Path(path), config
        self.checkpoint, self.step = checkpoint, step

    def __repr__(self) -> str:
        return f"<aware3d {self.method.name} run {self.path} at step {self.step}>"

    @property
    def programs(self) -> dict[str, str]:
        """``{name: one-line description}`` of the render programs of this run."""
        return self.method.programs

    @property
    def default_program(self) -> str | None:
        """What ``aware3d render RUN`` plays without ``--program`` (None: list the programs)."""
        return self.method.default_program

    def render_program(self, name: str, out=None, **options) -> dict:
        """Play render program ``name`` (hyphens or underscores) into ``out`` (default
        ``RUN/render/<name>``); ``options`` are the program's (``frames``, ``seed``, ``path``...).
        Returns ``{name: path}`` of the files written."""
        prog = find_program(self.method.program_table, name, f"{self.method.name} runs")
        out_dir = Path(out) if out is not None else self.path / "render" / prog.name
        return call_with_options(prog.fn, options, f"render program {prog.name} of {self.method.name} runs",
                                 self, out_dir)

    def metrics_name(self) -> str:
        """``metrics.json``, or ``metrics_step_XXXXXXXX.json`` when a particular checkpoint was loaded."""
        return "metrics.json" if self.checkpoint is None else f"metrics_step_{int(self.step or 0):08d}.json"

    def evaluate(self, **options) -> dict:
        raise NotImplementedError

    def format_metrics(self, metrics: dict) -> str:
        return "\n".join(f"{k:<12}{v:>12.4f}" for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool))

    def export_mesh(self, out=None, **options) -> dict:
        raise NotImplementedError

    def export_pointcloud(self, out=None, **options) -> dict:
        raise ValueError(f"{self.method.name} runs have no posed views to back-project depth from; point "
                         f"clouds come from radiance-field runs (nerf, ngp, nerfw)")


# --------------------------------------------------------------------------------------------------
# Radiance fields

#: frames exports can be written in (``FieldRun.frame``)
FRAMES = ("scene", "data", "sfm")


class FieldMethod(Method):
    """A radiance-field method. ``model(cfg, scene)`` builds its network (an ``nn.Module`` with the
    interface :mod:`aware3d.train.recon` documents); ``presets`` are dicts of settings;
    ``resolve_config(cfg)`` fills entries that depend on others (nerfw's backbone defaults);
    ``evaluators`` are other evaluation protocols by option name (nerfw: ``appearance_half``)."""

    kind = "field"

    def __init__(self, name: str, title: str, model: Callable, presets: Mapping[str, dict],
                 descriptions: Mapping[str, str], default_preset: str = "cpu", *, config_cls: type,
                 resolve_config: Callable[[dict], Any] | None = None,
                 programs: Iterable[Program] = (), evaluators: Mapping[str, Callable] | None = None,
                 paper: str = ""):
        from ..programs.field import PROGRAMS as CAMERA_PROGRAMS

        super().__init__(name, title, presets, descriptions, default_preset,
                         programs=tuple(CAMERA_PROGRAMS) + tuple(programs), default_program="turntable",
                         paper=paper)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        for p, settings in presets.items():
            extra = sorted(set(settings) - fields)
            if extra:
                raise ValueError(f"{name}: preset {p} has keys {extra} that {config_cls.__name__} lacks")
        self.config_cls = config_cls
        self.model = model
        self.resolve_config = resolve_config
        self.evaluators = dict(evaluators or {})

    def make_config(self, preset: str | None = None, overrides: Iterable[tuple[str, Any]] = (),
                    **explicit) -> dict:
        """The settings of ``preset`` (default the method's), then ``overrides`` ((key, value)
        pairs; strings are parsed as YAML and checked against the config dataclass's types), then
        the ``explicit`` values that are not None. Returns a plain dict (what a run stores)."""
        from ..utils.settings import check_setting, field_types

        preset = preset or self.default_preset
        if preset not in self.preset_settings:
            raise ValueError(f"--preset: {self.name} has presets {', '.join(self.preset_settings)}, "
                             f"got {preset!r}")
        cfg = dict(self.preset_settings[preset])
        hints = field_types(self.config_cls)
        for k, v in list(overrides or ()) + [(k, v) for k, v in explicit.items() if v is not None]:
            if k not in cfg:
                raise ValueError(f"--set {k}=...: unknown key for {self.name}; known: {', '.join(sorted(cfg))}")
            cfg[k] = check_setting(k, v, hints[k], cfg[k], self.name)
        cfg["preset"] = preset
        if self.resolve_config is not None:
            self.resolve_config(cfg)
        return cfg

    def build(self, cfg: dict, scene: dict, device=None) -> torch.nn.Module:
        """The model of settings ``cfg`` for a scene (``aware3d.train.recon.scene_info``)."""
        return self.model(cfg, scene).to(pick_device(device))

    def train(self, data, out=None, preset: str | None = None, max_steps: int | None = None,
              max_minutes: float | None = None, resume: bool = False, seed: int = 0,
              batch_size: int | None = None, device: str | None = None,
              overrides: Iterable[tuple[str, Any]] = (), downscale: int | str | None = None, **loop) -> Path:
        """Train on the posed dataset ``data`` through :func:`aware3d.train.recon.train`; returns
        the run folder (default ``runs/<method>-<data folder name>``). ``downscale``: an integer, or
        None / ``"auto"`` (the smallest power of 2 that fits the device's pixel budget, said when
        training starts). ``loop`` passes the loop's own options (``val_every``, ``ckpt_every``,
        ``progress``, ``log_every``, ``min_steps``...)."""
        from ..train import recon

        return recon.train(self, str(data), out=None if out is None else str(out), preset=preset,
                           max_steps=max_steps, max_minutes=max_minutes, resume=resume, seed=seed,
                           downscale="auto" if downscale in (None, "auto") else int(downscale),
                           batch_size=batch_size,
                           device=device, overrides=list(overrides or ()), **loop)

    def load(self, run_dir, device: str | torch.device | None = None, checkpoint=None) -> "FieldRun":
        from ..train import recon
        from ..train.io import load_run_config

        saved = load_run_config(run_dir)
        missing = [k for k in ("config", "scene", "data", "downscale") if k not in saved]
        if missing:
            raise ValueError(f"{run_dir}: not a complete {self.name} run (its config lacks "
                             f"{', '.join(missing)}; expected the --out folder of `aware3d train {self.name}`)")
        model = self.build(saved["config"], saved["scene"], device)
        step = recon.restore(model, run_dir, checkpoint)
        return FieldRun(self, run_dir, model, saved, checkpoint=checkpoint, step=step)


class FieldRun(Run):
    """A trained radiance field. ``model``: the network (eval mode); ``saved``: the run config
    (``config``, ``data``, ``downscale``, ``scene``); ``scene``: the training scene's box, depth
    range, image size, intrinsics and camera orbit."""

    def __init__(self, method: FieldMethod, path, model, saved: dict, checkpoint=None, step=None):
        super().__init__(method, path, saved["config"], checkpoint=checkpoint, step=step)
        self.model, self.saved = model, saved
        self._scene = saved["scene"]
        self.time = 0.0  # the moment runs of dynamic scenes render by default (programs set it)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def default_program(self) -> str:
        """``training-path`` for captures (nerfstudio, COLMAP, LLFF data: the cameras are where the
        scene was seen from), ``turntable`` for object-centred synthetic scenes (Blender format)."""
        fmt = self._scene.get("format")
        return "training-path" if fmt in ("nerfstudio", "colmap", "llff") else "turntable"

    @property
    def scene(self) -> dict:
        if "K" not in self._scene or "orbit_radius" not in self._scene:
            # runs written before these were kept: read them off the training data once
            from ..train.recon import scene_info

            self._scene = {**self._scene, **scene_info(self.load_data("train"))}
        return self._scene

    def load_data(self, split: str = "train", data=None, downscale: int | None = None):
        """A split of the run's dataset (or of ``data``) at the run's downscale (or ``downscale``)."""
        from ..data import load_scene

        return load_scene(data or self.saved["data"], split, downscale=downscale or self.saved["downscale"])

    def intrinsics(self, width: int | None = None) -> torch.Tensor:
        """The training camera's K (3, 3), scaled to ``width`` pixels (default the training width)."""
        from ..render.cameras import scale_intrinsics

        W = int(self.scene["width"])
        return scale_intrinsics(torch.tensor(self.scene["K"], dtype=torch.float32), (width or W) / W)

    def orbit_camera(self, azimuth_deg: float = 0.0, elevation_deg: float | None = None,
                     radius: float | None = None) -> torch.Tensor:
        """c2w (4, 4) of a camera looking at the origin from the training cameras' orbit (their mean
        distance and, by default, elevation), at ``azimuth_deg`` about the world z axis."""
        from ..render.cameras import look_at, spherical_to_cartesian

        r = float(self.scene["orbit_radius"] if radius is None else radius)
        el = float(self.scene["orbit_elevation_deg"] if elevation_deg is None else elevation_deg)
        return look_at(spherical_to_cartesian(r, torch.tensor(el), torch.tensor(float(azimuth_deg))))

    def render(self, c2w: torch.Tensor, K: torch.Tensor | None = None, width: int | None = None,
               height: int | None = None, time: float | None = None) -> dict:
        """One view: c2w (4, 4) or (3, 4) OpenGL camera-to-world; K (3, 3) in pixels (default the
        training camera's, scaled to ``width``); size default the training image's; ``time`` in
        [0, 1] for runs of dynamic scenes (default ``self.time``, 0 unless set). Returns
        ``{"color" (H, W, 3), "depth" (H, W), "opacity" (H, W)}`` on the CPU."""
        from ..train.recon import render_image

        W = int(width or self.scene["width"])
        H = int(height or round(int(self.scene["height"]) * W / int(self.scene["width"])))
        K = self.intrinsics(W) if K is None else torch.as_tensor(K, dtype=torch.float32)
        t = self.time if time is None else float(time)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"time: expected a number in [0, 1], got {t}")
        return render_image(self.model, K, torch.as_tensor(c2w, dtype=torch.float32), W, H, time=t)

    def evaluate(self, data=None, split: str = "test", progress: bool = True,
                 max_views: int | None = None, downscale: int | None = None, **protocol) -> dict:
        """PSNR / SSIM (and depth error) on a split of the run's data (or ``data``), on its first
        ``max_views`` views, at the run's downscale (or ``downscale``); writes
        ``RUN/eval/metrics.json``. ``protocol``: another evaluation the method has (nerfw:
        ``appearance_half="left"``)."""
        from ..train import recon

        chosen = {k: v for k, v in protocol.items() if v not in (None, False)}
        for k in chosen:
            if k not in self.method.evaluators:
                raise ValueError(f"{_flag(k)}: does not apply to {self.method.name} runs "
                                 f"(it evaluates with --data, --split, --checkpoint"
                                 f"{''.join(', ' + _flag(e) for e in self.method.evaluators)})")
        if len(chosen) > 1:
            raise ValueError(f"choose one evaluation protocol, got {', '.join(map(_flag, chosen))}")
        if chosen:
            (k, v), = chosen.items()
            return self.method.evaluators[k](self, v, data=data, split=split, progress=progress,
                                             max_views=max_views, downscale=downscale)
        ds = self.load_data(split, data, downscale)
        return recon.evaluate(self.model, self.saved, ds, self.path / "eval", split=split,
                              progress=progress, max_views=max_views, metrics_name=self.metrics_name())

    def format_metrics(self, metrics: dict) -> str:
        from ..train.recon import print_metrics_table

        return print_metrics_table(metrics)

    def frame(self, frame: str = "scene"):
        """The 4x4 (numpy float64) from the run's scene frame to ``frame``, or None for the scene
        frame itself. ``"data"``: the frame of the dataset's files (undoing the load-time
        normalisation of :mod:`aware3d.data.normalize`); ``"sfm"``: the structure-from-motion
        model's frame (undoing also the ``applied_transform`` a processed capture records)."""
        import numpy as np

        if frame not in FRAMES:
            raise ValueError(f"frame: expected one of {', '.join(FRAMES)}, got {frame!r}")
        if frame == "scene":
            return None
        M = np.linalg.inv(np.asarray(self.scene["transform"])) if self.scene.get("transform") else np.eye(4)
        if frame == "sfm":
            if not self.scene.get("sfm_transform"):
                raise ValueError("frame sfm: this run's data records no structure-from-motion frame (only "
                                 "captures processed by `aware3d data process` or nerfstudio files with an "
                                 "applied_transform do); use --frame data")
            M = np.linalg.inv(np.asarray(self.scene["sfm_transform"])) @ M
        return M

    def export_mesh(self, out=None, resolution: int = 256, threshold: float | None = None,
                    frame: str = "scene") -> dict:
        """Marching cubes of the density over the scene box with vertex colours, written as PLY
        (default RUN/mesh.ply); the level is chosen from the field unless ``threshold`` is given,
        and an empty mesh is an error naming a level to try. ``frame``: see :meth:`frame`."""
        from ..train.recon import density_mesh

        M = self.frame(frame)
        path = Path(out) if out is not None else self.path / "mesh.ply"
        info = density_mesh(self.model, self.scene["aabb"], path, resolution=resolution, threshold=threshold,
                            transform=M)
        return {**info, "frame": frame}

    def export_pointcloud(self, out=None, num_points: int = 100_000, split: str = "train",
                          min_opacity: float = 0.5, seed: int = 0, frame: str = "scene") -> dict:
        """Coloured points back-projected from rendered depth of the ``split`` views (PLY, default
        RUN/pointcloud.ply): see :func:`aware3d.train.recon.point_cloud`. ``frame``: see :meth:`frame`."""
        from ..data.normalize import transform_points
        from ..train.recon import point_cloud
        from ..utils.mesh import write_ply

        M = self.frame(frame)
        ds = self.load_data(split)
        pts, cols = point_cloud(self.model, ds, num_points=num_points, min_opacity=min_opacity, seed=seed)
        if len(pts) == 0:
            raise ValueError(f"no rendered ray of the {split} views reached opacity {min_opacity:g}: nothing to "
                             f"export (is the run trained? try --min-opacity 0.1)")
        xyz = pts.double().numpy() if M is None else transform_points(M, pts.double().numpy())
        path = Path(out) if out is not None else self.path / "pointcloud.ply"
        write_ply(path, xyz.astype("float32"), torch.zeros(0, 3, dtype=torch.int32).numpy(), cols.numpy())
        return {"path": str(path), "points": int(len(pts)), "views": len(ds), "split": split, "frame": frame}


# --------------------------------------------------------------------------------------------------
# 3D-aware GANs


class GenerativeMethod(Method):
    """A 3D-aware GAN. ``config_cls``: its settings dataclass; ``build(cfg)``: the object the GAN
    engine trains (generator, discriminator, ``sample_inputs``, image range, optional hooks
    ``wrap_dataset``, ``set_step``, ``prepare_inference``); ``mesh``: ``mesh(run, out_path=...,
    seed=..., resolution=..., threshold=...)`` where the method has a density to mesh."""

    kind = "gan"

    def __init__(self, name: str, title: str, config_cls: type, build: Callable,
                 presets: Mapping[str, dict], descriptions: Mapping[str, str], default_preset: str,
                 programs: Iterable[Program] = (), mesh: Callable | None = None,
                 no_mesh_reason: str = "", paper: str = ""):
        super().__init__(name, title, presets, descriptions, default_preset, programs=programs,
                         default_program=None, paper=paper)
        self.config_cls, self.build_fn, self.mesh = config_cls, build, mesh
        self.no_mesh_reason = no_mesh_reason

    def make_config(self, preset: str | None = None, overrides: Iterable[tuple[str, Any]] = (),
                    **explicit):
        """The dataclass of ``preset`` (default the method's) with ``overrides`` ((key, value)
        pairs; strings parsed as YAML) and the ``explicit`` values that are not None."""
        from .gan_common import make_config

        return make_config(self.config_cls, self.preset_settings, preset or self.default_preset,
                           **dict(overrides or ()), **explicit)

    def config_from_dict(self, d: Mapping[str, Any]):
        from .gan_common import config_from_dict

        return config_from_dict(self.config_cls, d)

    def build(self, cfg, seed: int | None = None):
        """The method object of settings ``cfg``, networks initialised from ``seed`` (default
        cfg.seed), identically on every rank."""
        return self.build_fn(cfg, seed)

    def train(self, data, out=None, preset: str | None = None, max_steps: int | None = None,
              max_minutes: float | None = None, resume: bool = False, seed: int = 0,
              batch_size: int | None = None, device: str | None = None,
              overrides: Iterable[tuple[str, Any]] = (), on_step: Callable | None = None,
              progress: bool = True, **settings) -> Path:
        """Train on the image folder ``data`` through :func:`aware3d.train.gan.train_gan`; returns
        the run folder (default ``runs/<method>-<data folder name>``).

        ``overrides`` ((key, value) pairs) and ``settings`` are fields of the method's config
        (strings are parsed as YAML). With ``resume`` and a checkpoint in ``out`` the stored config
        is used (``batch_size`` and overrides still apply) and training continues from the latest
        checkpoint: the method's ``set_step`` puts it in the state of that step before the engine
        is built. ``on_step(engine, scalars)`` is called after every step. Multi-process:
        ``torchrun --nproc_per_node N`` (the global batch is split over the processes)."""
        import os

        from ..train import gan
        from ..train.io import load_run_config
        from .gan_common import (
            checkpoint_step,
            config_from_dict,
            image_dataset,
            replace_config,
        )

        if "downscale" in settings:
            raise ValueError(f"--downscale: applies to radiance fields, not to {self.name}; a GAN trains at "
                             f"its config's resolution (--set resolution=N)")
        run_dir = Path(out) if out is not None else Path("runs") / f"{self.name}-{Path(data).name}"
        kw = {**dict(overrides or ()), **settings}
        if device is not None:
            kw.setdefault("device", device)  # a config field (--set device=... wins)
        if batch_size is not None:
            kw["batch_size"] = batch_size  # --batch-size wins over --set batch_size=...
        start = checkpoint_step(run_dir) if resume and run_dir.is_dir() else None
        if start is not None:
            cfg = config_from_dict(self.config_cls, load_run_config(run_dir))
            cfg = replace_config(cfg, **kw)
        else:
            cfg = self.make_config(preset, **{"seed": seed, **kw})
        cfg = dataclasses.replace(cfg, data=str(data))
        dataset = image_dataset(data, cfg.resolution, flip=cfg.flip,
                                progress=progress and os.environ.get("RANK", "0") == "0")
        method = self.build(cfg)
        if hasattr(method, "wrap_dataset"):
            dataset = method.wrap_dataset(dataset)
        step_hook = getattr(method, "set_step", None)
        if step_hook is not None:
            step_hook(start or 0)
        gcfg = method.gan_config(max_steps=max_steps, max_minutes=max_minutes, progress=progress)

        def hook(engine, scalars):
            if step_hook is not None:
                step_hook(engine.step, engine)
            if on_step is not None:
                return on_step(engine, scalars)
            return None

        return gan.train_gan(method, dataset, run_dir, gcfg, resume=resume,
                             config=dataclasses.asdict(cfg), on_step=hook)

    def load(self, run_dir, device: str | torch.device | None = None, checkpoint=None,
             ema: bool = True) -> "GenerativeRun":
        """The run's checkpoint (a step or a file; default the latest): the EMA generator by
        default, in eval mode without gradients, after the method's ``prepare_inference()``."""
        from ..train.io import (
            _CKPT_RE,
            checkpoint_file,
            load_checkpoint,
            load_run_config,
        )

        cfg = self.config_from_dict(load_run_config(run_dir))
        gan = self.build(cfg)
        f = checkpoint_file(run_dir, checkpoint)
        state = load_checkpoint(f, map_location="cpu")
        gan.generator.load_state_dict(state["G_ema" if ema and "G_ema" in state else "G"])
        if hasattr(gan, "prepare_inference"):
            gan.prepare_inference()
        G = gan.generator.to(pick_device(device)).eval().requires_grad_(False)
        m = _CKPT_RE.match(f.name)
        step = int(m.group(1)) if m else int(state.get("step", 0))
        return GenerativeRun(self, run_dir, cfg, gan, G, checkpoint=checkpoint, step=step)


def truncate_latents(inputs: dict, keys, psi: float, mean: dict | None = None) -> dict:
    """Each latent ``inputs[k]`` for k in ``keys`` moved towards its mean, ``mean + psi (z - mean)``
    (mean 0 for the Gaussian latents the GANs draw, or ``mean[k]``); other inputs are kept."""
    out = dict(inputs)
    for k in keys:
        if k in out and torch.is_tensor(out[k]):
            m = 0.0 if mean is None or k not in mean else mean[k].to(out[k])
            out[k] = m + float(psi) * (out[k] - m)
    return out


class GenerativeRun(Run):
    """A trained 3D-aware GAN. ``gan``: the method object (``sample_inputs``, controls);
    ``G``: its EMA generator (eval mode); ``config``: the settings dataclass."""

    def __init__(self, method: GenerativeMethod, path, config, gan, G, checkpoint=None, step=None):
        super().__init__(method, path, config, checkpoint=checkpoint, step=step)
        self.gan, self.G = gan, G

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def sample(self, seed: int = 0, n: int = 1) -> dict:
        """The generator inputs of ``n`` samples drawn from ``seed`` (latents, poses, camera; the
        evaluation distribution, without training noise). Edit them, then :meth:`render`."""
        return self.gan.sample_inputs(int(n), torch.Generator().manual_seed(int(seed)), train=False)

    def truncate(self, inputs: dict, psi: float) -> dict:
        """The truncation trick on the inputs of :meth:`sample`: ``mean + psi (w - mean)``. Where
        the generator takes its mapping network's output as an input (pi-GAN's frequencies and
        phases) w is that output and the mean is over 10,000 latents (seed 0), as in pi-GAN's
        official code; otherwise w is each latent of the method's ``latent_groups`` and the mean
        is 0 (the Gaussian latents' mean). psi = 1 changes nothing, psi = 0 gives the mean sample."""
        if float(psi) == 1.0:
            return inputs
        field = getattr(self.G, "field", None)
        if "z" in inputs and field is not None and hasattr(field, "modulation"):
            with torch.no_grad():
                if getattr(self, "_mean_modulation", None) is None:
                    z = torch.randn(10_000, inputs["z"].shape[-1], generator=torch.Generator().manual_seed(0))
                    f, p = field.modulation(z.to(self.device))
                    self._mean_modulation = (f.mean(0, keepdim=True), p.mean(0, keepdim=True))
                f, p = field.modulation(inputs["z"].to(self.device))
            mf, mp = self._mean_modulation
            out = dict(inputs)
            out["freqs"], out["phases"] = mf + float(psi) * (f - mf), mp + float(psi) * (p - mp)
            return out
        groups = getattr(self.gan, "latent_groups", None) or {}
        keys = {k for ks in groups.values() for k in ks} or {k for k in inputs if k.startswith("z")}
        return truncate_latents(inputs, sorted(keys), psi)

    @torch.no_grad()
    def render(self, inputs: dict, chunk: int = 16, **controls) -> dict:
        """Generate from ``inputs`` (:meth:`sample`). Returns ``{"color": (B, H, W, 3) in [0, 1]}``
        on the CPU (and ``"alpha"`` (B, H, W) where the generator gives one, e.g. GIRAFFE with
        ``return_alpha=True``). ``controls`` go to the generator (GIRAFFE: ``objects``,
        ``background``)."""
        from ..train.gan import to_unit

        n = next(v for v in inputs.values() if torch.is_tensor(v)).shape[0]
        colors, alphas = [], []
        for a in range(0, n, chunk):
            part = {k: (v[a:a + chunk].to(self.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
            out = self.G(part, **controls)
            img = out["image"] if isinstance(out, dict) else out
            colors.append(to_unit(img, self.gan.image_range).permute(0, 2, 3, 1).cpu())
            if isinstance(out, dict) and "alpha" in out:
                alphas.append(out["alpha"][:, 0].float().cpu())
        res = {"color": torch.cat(colors)}
        if alphas:
            res["alpha"] = torch.cat(alphas)
        return res

    def evaluate(self, n_gen: int = 5000, data=None, seed: int = 0, batch_size: int = 50,
                 extractor: Callable | None = None) -> dict:
        """FID and KID of the EMA generator on ``n_gen`` images against the real images of
        ``data`` (default the run's training folder) at the run's resolution; writes
        ``RUN/eval/metrics.json`` (``metrics_step_XXXXXXXX.json`` for a chosen checkpoint).
        ``extractor``: another feature extractor for tests (default the Inception network)."""
        from .gan_common import evaluate_generator

        return evaluate_generator(self, n_gen=n_gen, data=data, seed=seed, batch_size=batch_size,
                                  extractor=extractor)

    def export_mesh(self, out=None, resolution: int = 128, threshold: float | None = None,
                    seed: int = 0, **options) -> dict:
        """Marching-cubes mesh of the sample drawn from ``seed`` as PLY (default
        ``RUN/mesh_seed<seed>.ply``; GIRAFFE: ``object_index``)."""
        if self.method.mesh is None:
            raise ValueError(f"{self.method.name} has no density to mesh ({self.method.no_mesh_reason})")
        return call_with_options(self.method.mesh, dict(out_path=out, resolution=resolution,
                                                        threshold=threshold, seed=seed, **options),
                                 f"{self.method.name} mesh export", self)
