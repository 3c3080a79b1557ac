"""One web viewer for both halves of aware3d (``aware3d view RUN``, ``aware3d train ... --viewer``):
fly through a radiance field and watch it train, or steer a 3D-aware GAN. Built on viser
(``pip install "aware3d[viewer]"``), which serves its page from the package: no network.

- :mod:`aware3d.viewer.core`: cameras, progressive rendering, GAN controls, camera paths and the
  training monitor, without any web code (tests drive these directly).
- :mod:`aware3d.viewer.app`: the viser page (:class:`~aware3d.viewer.app.Viewer`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .core import TrainingMonitor

__all__ = ["view", "start", "TrainingViewer", "DEFAULT_PORT"]

DEFAULT_PORT = 7007


def start(run, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **kw):
    """Start a viewer of the loaded ``run`` (or a run folder) and return it (a
    :class:`~aware3d.viewer.app.Viewer`; its ``url``; ``stop()`` ends it)."""
    from .app import Viewer, import_viser

    import_viser()  # the missing extra is named before any run is loaded
    if not hasattr(run, "method"):
        from ..api import load

        run = load(run)
    return Viewer(run, host=host, port=port, **kw)


def view(run, host: str = "127.0.0.1", port: int = DEFAULT_PORT, device=None, **kw) -> None:
    """``aware3d view RUN``: serve the viewer until Ctrl-C."""
    from .app import import_viser

    import_viser()
    if not hasattr(run, "method"):
        from ..api import load

        print(f"loading {run} ...", file=sys.stderr, flush=True)
        run = load(run, device=device)
    v = start(run, host=host, port=port, **kw)
    print(f"viewer of {run.method.name} run {run.path} at step {run.step}: {v.url}  (Ctrl-C stops it)",
          flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        v.stop()


class TrainingViewer:
    """The ``on_step`` hook of a training run that serves a viewer of the model being trained.
    The viewer starts at the first step (once the run's config is written); frames are rendered
    between steps, outside the training clock; pause waits there; "save checkpoint now" asks the
    loop for a checkpoint."""

    def __init__(self, method, run_dir, host: str = "127.0.0.1", port: int = DEFAULT_PORT, **kw):
        from .app import import_viser

        import_viser()
        self.method, self.run_dir = method, Path(run_dir)
        self.host, self.port, self.kw = host, port, kw
        self.monitor = TrainingMonitor()
        self.viewer = None
        self._field_hook = self._gan_hook = None

    def _start(self, run):
        from .app import Viewer

        self.viewer = Viewer(run, host=self.host, port=self.port, monitor=self.monitor, **self.kw)
        print(f"\nviewer: {self.viewer.url}  (training goes on; the viewer stops with it)", file=sys.stderr,
              flush=True)

    def on_step(self, *args):
        """``(step, model, scalars)`` from the field loop or ``(engine, scalars)`` from the GAN loop."""
        if self.viewer is None:
            self._start(self._run(*args))
            self._field_hook = self.monitor.field_hook(self.viewer.invalidate)
            self._gan_hook = self.monitor.gan_hook(self.viewer.invalidate)
        if len(args) == 3:
            return self._field_hook(*args)
        return self._gan_hook(*args)

    def _run(self, *args):
        from ..methods.base import FieldRun, GenerativeRun
        from ..train.io import load_run_config

        if len(args) == 3:
            step, model, _ = args
            return FieldRun(self.method, self.run_dir, model, load_run_config(self.run_dir), step=step)
        engine, _ = args
        cfg = self.method.config_from_dict(load_run_config(self.run_dir))
        return GenerativeRun(self.method, self.run_dir, cfg, engine.method, engine.G_ema, step=engine.step)

    def close(self):
        if self.viewer is not None:
            self.viewer.stop()
