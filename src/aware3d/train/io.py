"""Run folders, checkpoints, logging and image/video outputs shared by every trainer.

Used by the reconstruction trainer and the GAN engine alike. Everything that touches the disk is
written atomically (temporary file in the same folder + fsync + ``os.replace``), so an interrupted
run never leaves a truncated checkpoint, config or video behind.

Run folder layout (``prepare_run_dir``)::

    <out>/
      config.yaml, config.json      the run's configuration as plain data (identical content)
      checkpoints/step_00001000.pt  numbered checkpoints, the newest ``keep`` are kept
      checkpoints/latest            text file naming the newest checkpoint
      scalars.csv                   long format: step,tag,value,wall_time (ScalarLogger)
      tb/                           TensorBoard event files (ScalarLogger)

Images are (H, W, C) arrays or tensors, float in [0, 1] or uint8, as everywhere in aware3d.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import enum
import io
import json
import math
import os
import pickle
import random
import re
import signal
import threading
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union

import numpy as np
import torch

from aware3d.utils.atomic import (atomic_open, atomic_write_bytes, atomic_write_text, fsync_dir,
                                  temp_path_for)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "atomic_save", "atomic_write_text", "atomic_write_bytes", "atomic_open",
    "CheckpointError", "CheckpointNotFoundError", "RunDirError",
    "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint",
    "get_rng_state", "set_rng_state",
    "prepare_run_dir", "write_run_config", "load_run_config", "to_plain", "RunLock", "clean_orphan_temps",
    "ScalarLogger",
    "to_uint8", "save_png", "make_grid", "save_video", "colorize_depth",
    "install_sigint_checkpoint", "SigintGuard",
]

CHECKPOINT_DIR = "checkpoints"
LATEST_POINTER = "latest"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read (corrupt, truncated, not a checkpoint)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint where one was expected."""


class RunDirError(FileExistsError):
    """The run folder cannot be used as asked (e.g. it holds a run and --resume was not given)."""


# --------------------------------------------------------------------------------------------------
# atomic torch.save
# --------------------------------------------------------------------------------------------------

def atomic_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; on failure the previous file stays intact."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


# --------------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------------

def get_rng_state() -> dict:
    """Snapshot of every RNG a run draws from: python ``random``, numpy's global RNG, torch CPU and
    (when available) all CUDA devices.

    Only plain Python containers, ints/floats/strings and tensors are used, so the result can be
    stored in a checkpoint and read back with ``torch.load(weights_only=True)``.
    """
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore a snapshot made by :func:`get_rng_state` (missing entries are left as they are)."""
    if "python" in state:
        v = state["python"]
        # tuples may come back as lists after a JSON/YAML round trip
        random.setstate((v[0], tuple(v[1]), v[2]))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else np.asarray(n["keys"])
        np.random.set_state((n["kind"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = list(state["cuda"])
        if len(cuda_states) != torch.cuda.device_count():
            warnings.warn(f"set_rng_state: checkpoint has RNG states for {len(cuda_states)} CUDA "
                          f"devices, this machine has {torch.cuda.device_count()}; restoring the "
                          f"first {min(len(cuda_states), torch.cuda.device_count())}")
        for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------

def _ckpt_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def list_checkpoints(run_dir: PathLike) -> list[Path]:
    """Numbered checkpoints of a run, oldest step first."""
    d = _ckpt_dir(run_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: PathLike) -> Path | None:
    """The checkpoint named by ``checkpoints/latest``, else the highest step present, else None."""
    d = _ckpt_dir(run_dir)
    pointer = d / LATEST_POINTER
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if name and (d / name).is_file():
            return d / name
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_file(run_dir: PathLike, checkpoint: int | str | PathLike | None = None) -> Path:
    """The checkpoint file a user names: None -> the latest; a step (int or digits) ->
    ``checkpoints/step_XXXXXXXX.pt``; otherwise a path to a ``.pt`` file.

    Raises :class:`CheckpointNotFoundError` naming the file looked for and the steps there are."""
    if checkpoint is None:
        f = latest_checkpoint(run_dir)
        if f is None:
            raise CheckpointNotFoundError(
                f"{_ckpt_dir(run_dir)}: no checkpoint found (expected step_XXXXXXXX.pt files)")
        return f
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        f = _ckpt_dir(run_dir) / f"step_{int(checkpoint):08d}.pt"
    else:
        f = Path(checkpoint)
    if not f.is_file():
        steps = [int(_CKPT_RE.match(q.name).group(1)) for q in list_checkpoints(run_dir)]
        raise CheckpointNotFoundError(f"{f}: no such checkpoint (checkpoint {checkpoint!r}; this run has "
                                      f"steps {steps or 'none'})")
    return f


def save_checkpoint(run_dir: PathLike, step: int, state: Mapping[str, Any], keep: int | None = 3
                    ) -> Path:
    """Write ``run_dir/checkpoints/step_{step:08d}.pt`` atomically and point ``latest`` at it.

    ``state`` is any ``torch.save``-able mapping (model/optimizer ``state_dict``s, ``get_rng_state()``
    ...); the stored dict always carries ``"step"``. Keep plain containers and tensors in it so it
    loads with ``weights_only=True``. Afterwards only the ``keep`` highest-step checkpoints remain
    (``keep=None`` or ``<= 0`` keeps all); the file just written is never pruned.
    Returns the checkpoint path.
    """
    step = int(step)
    if step < 0:
        raise ValueError(f"save_checkpoint: step must be >= 0, got {step}")
    d = _ckpt_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    payload = dict(state)
    payload.setdefault("step", step)
    path = d / f"step_{step:08d}.pt"
    atomic_save(payload, path)
    atomic_write_text(d / LATEST_POINTER, path.name + "\n")
    if keep is not None and keep > 0:
        ckpts = list_checkpoints(run_dir)
        stale = [p for p in ckpts[:-keep] if p != path] if len(ckpts) > keep else []
        for p in stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if stale:
            fsync_dir(d)
    return path


def load_checkpoint(run_dir_or_file: PathLike, map_location: Any = "cpu", *,
                    weights_only: bool = True) -> dict:
    """Load a checkpoint: a ``.pt`` file, or a run folder / its ``checkpoints`` folder (then the
    latest one).

    Raises :class:`CheckpointNotFoundError` naming what was looked for when there is none, and
    :class:`CheckpointError` naming the file when it is unreadable. ``weights_only=True`` (default)
    refuses arbitrary pickled objects; pass False only for files you trust.
    """
    p = Path(run_dir_or_file)
    if p.is_dir():
        run_dir = p.parent if p.name == CHECKPOINT_DIR and not (p / CHECKPOINT_DIR).is_dir() else p
        f = latest_checkpoint(run_dir)
        if f is None:
            raise CheckpointNotFoundError(
                f"{_ckpt_dir(run_dir)}: no checkpoint found (expected step_XXXXXXXX.pt files)")
    elif p.is_file():
        f = p
    else:
        raise CheckpointNotFoundError(f"{p}: checkpoint file or run folder does not exist")
    try:
        obj = torch.load(f, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if weights_only and "weights_only" in str(e).lower().replace(" ", "_"):
            raise CheckpointError(
                f"{f}: holds objects that weights_only=True refuses to unpickle; use "
                f"load_checkpoint(..., weights_only=False) only if you trust this file ({e})") from e
        raise CheckpointError(f"{f}: corrupt or not a torch checkpoint ({e})") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{f}: corrupt, truncated or not a torch checkpoint "
                              f"({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{f}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------------------------------
# run folder + config
# --------------------------------------------------------------------------------------------------

def to_plain(obj: Any) -> Any:
    """Convert a config to plain data (dict/list/str/int/float/bool/None) for YAML and JSON.

    Handles dataclasses, enums, paths, tuples/sets, numpy scalars/arrays, torch dtypes/devices and
    small tensors. Dict keys become strings. Anything else becomes ``str(obj)``.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_plain(v) for v in obj), key=repr)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return to_plain(obj.item())
    if isinstance(obj, np.ndarray):
        return to_plain(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return to_plain(obj.detach().cpu().tolist())
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    return str(obj)


def prepare_run_dir(out: PathLike, method: str, config: Mapping[str, Any], resume: bool = False,
                    write: bool = True) -> Path:
    """Create (or reopen) the run folder ``out`` and write ``config.yaml`` + ``config.json``.

    The written config is ``{"method": method, **to_plain(config)}``. A folder that already holds
    checkpoints is refused (:class:`RunDirError`) unless ``resume=True``; when resuming, the stored
    method must match. A folder without checkpoints (empty, or a run that died before its first
    checkpoint) is reused. With ``write=False`` only the checks run and the folders are made: a
    trainer writes the config (:func:`write_run_config`) once the checkpoint it resumes from has
    loaded, so a rejected resume changes nothing on disk. Returns the run folder as a Path.
    """
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: exists and is not a folder; choose another --out")
    has_ckpt = latest_checkpoint(run_dir) is not None if run_dir.is_dir() else False
    if has_ckpt and not resume:
        raise RunDirError(
            f"{run_dir}: already holds a run with checkpoints ({latest_checkpoint(run_dir).name}); "
            f"pass --resume to continue it, or choose a new --out")
    plain = to_plain(dict(config))
    if "method" in plain and plain["method"] != method:
        raise ValueError(f"prepare_run_dir: config['method'] = {plain['method']!r} disagrees with "
                         f"method={method!r}")
    plain = {"method": method, **{k: v for k, v in plain.items() if k != "method"}}
    if resume and has_ckpt:
        with contextlib.suppress(FileNotFoundError):
            old = load_run_config(run_dir)
            if old.get("method", method) != method:
                raise RunDirError(f"{run_dir}: holds a {old.get('method')!r} run, cannot resume it "
                                  f"as {method!r}; choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    _ckpt_dir(run_dir).mkdir(exist_ok=True)
    if write:
        write_run_config(run_dir, method, config)
    return run_dir


def write_run_config(run_dir: PathLike, method: str, config: Mapping[str, Any]) -> None:
    """``config.yaml`` + ``config.json`` of a run folder: ``{"method": method, **config}``."""
    import yaml

    plain = to_plain(dict(config))
    plain = {"method": method, **{k: v for k, v in plain.items() if k != "method"}}
    atomic_write_text(Path(run_dir) / "config.yaml",
                      yaml.safe_dump(plain, sort_keys=False, default_flow_style=False))
    atomic_write_text(Path(run_dir) / "config.json", json.dumps(plain, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------
# One trainer per run folder
# --------------------------------------------------------------------------------------------------

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """``RUN/.lock`` while a process trains in the run folder: ``{"pid", "host", "since"}``.

    A second trainer fails with a message naming the holder. The stale-lock rule: a lock written on
    this host by a process that no longer runs (killed, crashed) is taken over with a note; a lock
    from another host is never taken over (its process cannot be checked from here): delete the
    file once that process is gone."""

    def __init__(self, run_dir: PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        import socket

        host, me = socket.gethostname(), os.getpid()
        info = {"pid": me, "host": host, "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    held = {}
                pid, on = held.get("pid"), held.get("host")
                if on == host and pid is not None and not _pid_alive(pid) or (held == {} and self._old()):
                    warnings.warn(f"{self.path}: taking over the lock of process {pid} on {on} (since "
                                  f"{held.get('since', '?')}), which no longer runs", RuntimeWarning, stacklevel=3)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise RunDirError(
                    f"{self.path.parent}: another process is training in this run folder: pid {pid} on "
                    f"{on}, since {held.get('since', '?')}. Wait for it, or choose another --out. (A lock "
                    f"of a process that no longer runs on this host is taken over by itself; if the holder "
                    f"was on another machine and is gone, delete {self.path}.)") from None
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self.held = True
            return self
        raise RunDirError(f"{self.path}: could not take the run folder's lock")

    def _old(self, seconds: float = 60.0) -> bool:
        """An empty or unreadable lock file older than a minute: a writer that died mid-write."""
        try:
            return time.time() - self.path.stat().st_mtime > seconds
        except OSError:
            return True

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def clean_orphan_temps(run_dir: PathLike, report: bool = False) -> tuple[int, int]:
    """Delete the temporary checkpoint files (``checkpoints/.step_*.tmp.pt``) a killed write left
    behind; real checkpoints are never touched. Call it while holding the run's lock. Returns
    ``(files, bytes)`` removed; ``report`` says so on stderr when there were any."""
    n = size = 0
    folder = _ckpt_dir(run_dir)
    if not folder.is_dir():
        return 0, 0
    for p in folder.glob(".step_*.tmp*"):
        if p.is_file() and not _CKPT_RE.match(p.name):
            with contextlib.suppress(OSError):
                size += p.stat().st_size
                p.unlink()
                n += 1
    if report and n:
        import sys

        print(f"removed {n} temporary checkpoint file(s) ({size / 2**20:.1f} MiB) left by an interrupted "
              f"write", file=sys.stderr)
    return n, size


def load_run_config(run_dir: PathLike) -> dict:
    """The config saved by :func:`prepare_run_dir` (``config.json``, else ``config.yaml``)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent.parent if run_dir.parent.name == CHECKPOINT_DIR else run_dir.parent
    js, ym = run_dir / "config.json", run_dir / "config.yaml"
    if js.is_file():
        try:
            return json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{js}: not valid JSON ({e})") from e
    if ym.is_file():
        import yaml
        try:
            data = yaml.safe_load(ym.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{ym}: not valid YAML ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{ym}: expected a mapping, got {type(data).__name__}")
        return data
    raise FileNotFoundError(f"{run_dir}: no config.json or config.yaml (not a run folder?)")


# --------------------------------------------------------------------------------------------------
# scalar logging
# --------------------------------------------------------------------------------------------------

def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + "/")
        else:
            yield key, v


class ScalarLogger:
    """Scalars to ``run_dir/scalars.csv`` (long format ``step,tag,value,wall_time``) and to
    TensorBoard event files under ``run_dir/tb``; images to TensorBoard.

    New tags may appear at any step (long format needs no header rewrite). The CSV is appended to,
    so a resumed run continues the same file; it is flushed after every :meth:`log`. TensorBoard is
    optional: if it cannot be imported the logger warns once and writes the CSV only.
    Use as a context manager or call :meth:`close`.
    """

    CSV_NAME = "scalars.csv"
    TB_DIR = "tb"
    HEADER = ("step", "tag", "value", "wall_time")

    def __init__(self, run_dir: PathLike, tensorboard: bool = True, resume_step: int | None = None):
        """``resume_step``: the step of the checkpoint a resumed run starts from. Scalars logged
        after it by the interrupted run (they will be logged again) are dropped from the CSV and
        purged from TensorBoard, so every step appears once."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / self.CSV_NAME
        if resume_step is not None and self.csv_path.exists():
            self._truncate_csv(int(resume_step))
        new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
        self._csv_file = open(self.csv_path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(self.HEADER)
            self._csv_file.flush()
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as e:  # tensorboard missing or broken
                warnings.warn(f"ScalarLogger: TensorBoard unavailable ({e}); writing "
                              f"{self.csv_path.name} only")
            else:
                kw = {} if resume_step is None else {"purge_step": int(resume_step) + 1}
                self._tb = SummaryWriter(log_dir=str(self.run_dir / self.TB_DIR), **kw)

    def _truncate_csv(self, last_step: int) -> None:
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        keep = [r for r in rows[1:] if r and int(r[0]) <= last_step]
        if len(keep) == len(rows) - 1:
            return
        with atomic_open(self.csv_path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.HEADER)
            w.writerows(keep)

    @property
    def tb_dir(self) -> Path:
        return self.run_dir / self.TB_DIR

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Log ``{tag: value}`` at ``step``; nested dicts become ``a/b`` tags, tensors ``float``."""
        if self._csv_file is None:
            raise RuntimeError("ScalarLogger.log after close()")
        now = time.time()
        step = int(step)
        for tag, v in _flatten(scalars):
            if isinstance(v, torch.Tensor):
                v = v.detach()
                if v.numel() != 1:
                    raise ValueError(f"ScalarLogger.log: {tag!r} is a tensor with shape "
                                     f"{tuple(v.shape)}, expected a single value")
                v = v.item()
            v = float(v)
            self._csv.writerow((step, tag, repr(v), f"{now:.3f}"))
            if self._tb is not None:
                self._tb.add_scalar(tag, v, step, walltime=now)
        self._csv_file.flush()

    def log_image(self, step: int, tag: str, image: Any) -> None:
        """Log an (H, W, 3) (or H, W / H, W, 1 / H, W, 4) image, float in [0, 1] or uint8."""
        if self._tb is None:
            return
        img = to_uint8(image)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        self._tb.add_image(tag, img, int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._csv_file is not None:
            self._csv_file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = None

    def __enter__(self) -> "ScalarLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()


# --------------------------------------------------------------------------------------------------
# images and videos
# --------------------------------------------------------------------------------------------------

def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def to_uint8(img: Any) -> np.ndarray:
    """Array/tensor image to uint8: floats are clipped to [0, 1] and scaled by 255 (rounded);
    NaN becomes 0; uint8 passes through; bool becomes 0/255."""
    a = _to_numpy(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"to_uint8: integer images must be uint8, got {a.dtype}")
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(np.clip(a, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def save_png(path: PathLike, img: Any) -> Path:
    """Save an image as PNG atomically: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); float in [0, 1]
    or uint8. Creates parent folders. Returns the path."""
    from PIL import Image

    a = to_uint8(img)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        mode = "L"
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        mode = "RGB" if a.shape[-1] == 3 else "RGBA"
    else:
        raise ValueError(f"save_png: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or "
                         f"(H, W, 4), got {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a), mode=mode).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def make_grid(images: Any, nrow: int = 8, pad: int = 2, pad_value: float = 1.0):
    """Tile (N, H, W, C) images into one image with ``nrow`` images per row and ``pad`` pixels of
    ``pad_value`` between and around them (``pad_value`` in [0, 1]; scaled for uint8 input).

    Returns the same kind as the input (numpy array or torch tensor, same dtype and device).
    Output shape: (rows * (H + pad) + pad, ncol * (W + pad) + pad, C), ncol = min(nrow, N).
    """
    is_torch = isinstance(images, torch.Tensor)
    if not is_torch:
        images = np.asarray(images)
    if images.ndim == 3:  # (N, H, W) -> (N, H, W, 1)
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"make_grid: expected images of shape (N, H, W, C), got {tuple(images.shape)}")
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("make_grid: no images")
    ncol = max(1, min(int(nrow), n))
    nrows = (n + ncol - 1) // ncol
    fill = pad_value * 255 if images.dtype in (np.uint8, torch.uint8) else pad_value
    H, W = nrows * (h + pad) + pad, ncol * (w + pad) + pad
    if is_torch:
        grid = torch.full((H, W, c), fill, dtype=images.dtype, device=images.device)
    else:
        grid = np.full((H, W, c), fill, dtype=images.dtype)
    for k in range(n):
        r, q = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[k]
    return grid


def save_video(path: PathLike, frames: Any, fps: float = 30.0, quality: int = 8) -> Path:
    """Write frames (T, H, W, 3) or a sequence of (H, W, 3) images (float [0, 1] or uint8) to
    ``.mp4`` (H.264, yuv420p; odd sizes are edge-padded to even) or ``.gif`` (looping), chosen by
    the extension. Written atomically. Returns the path.

    Note: GIF encoders may merge consecutive identical frames.
    """
    import imageio.v2 as imageio

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".gif"):
        raise ValueError(f"save_video: {path}: extension must be .mp4 or .gif")
    seq = [to_uint8(f) for f in (frames if not isinstance(frames, (np.ndarray, torch.Tensor))
                                 else list(frames))]
    if not seq:
        raise ValueError(f"save_video: {path}: no frames")
    shape0 = seq[0].shape
    for i, f in enumerate(seq):
        if f.ndim == 2:
            seq[i] = f = np.repeat(f[..., None], 3, axis=-1)
        if f.ndim != 3 or f.shape[-1] not in (3, 4):
            raise ValueError(f"save_video: frame {i} has shape {f.shape}, expected (H, W, 3)")
        if f.shape[:2] != shape0[:2]:
            raise ValueError(f"save_video: frame {i} has shape {f.shape}, frame 0 has {shape0}")
        if f.shape[-1] == 4:
            seq[i] = f[..., :3]
    if ext == ".mp4":
        h, w = seq[0].shape[:2]
        ph, pw = h % 2, w % 2
        if ph or pw:
            seq = [np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") for f in seq]
        with temp_path_for(path) as tmp:
            writer = imageio.get_writer(str(tmp), format="FFMPEG", mode="I", fps=float(fps),
                                        codec="libx264", pixelformat="yuv420p", quality=quality,
                                        macro_block_size=1, ffmpeg_log_level="error")
            try:
                for f in seq:
                    writer.append_data(np.ascontiguousarray(f))
            finally:
                writer.close()
    else:
        from PIL import Image

        duration_ms = max(1, int(round(1000.0 / float(fps))))
        ims = [Image.fromarray(np.ascontiguousarray(f)) for f in seq]
        with atomic_open(path, "wb") as fh:
            ims[0].save(fh, format="GIF", save_all=True, append_images=ims[1:],
                        duration=duration_ms, loop=0)
    return path


# Turbo-like colormap: anchor colors at evenly spaced positions, linearly interpolated.
_TURBO_ANCHORS = np.array([
    [0.190, 0.072, 0.232],
    [0.276, 0.388, 0.855],
    [0.160, 0.650, 0.973],
    [0.095, 0.853, 0.776],
    [0.290, 0.975, 0.470],
    [0.640, 0.990, 0.237],
    [0.898, 0.860, 0.216],
    [0.993, 0.623, 0.154],
    [0.940, 0.370, 0.060],
    [0.780, 0.160, 0.010],
    [0.480, 0.016, 0.011],
], dtype=np.float32)


def _turbo(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0) * (len(_TURBO_ANCHORS) - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(_TURBO_ANCHORS) - 1)
    f = (t - i0)[..., None]
    return _TURBO_ANCHORS[i0] * (1 - f) + _TURBO_ANCHORS[i1] * f


def colorize_depth(depth: Any, near: float | None = None, far: float | None = None,
                   invert: bool = True):
    """Map a depth map (H, W) or (H, W, 1) to a turbo-like RGB image (H, W, 3) float in [0, 1].

    Depth is normalized with ``(d - near) / (far - near)`` and clipped; ``near``/``far`` default to
    the finite min/max. With ``invert=True`` (default) near is warm (red) and far is cool (blue).
    Non-finite depths (background, NaN, inf) are black. Returns numpy float32 for numpy input and a
    float32 tensor on the input's device for tensor input.
    """
    is_torch = isinstance(depth, torch.Tensor)
    dev = depth.device if is_torch else None
    d = _to_numpy(depth).astype(np.float32)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"colorize_depth: expected depth of shape (H, W) or (H, W, 1), got {d.shape}")
    valid = np.isfinite(d)
    if near is None:
        near = float(d[valid].min()) if valid.any() else 0.0
    if far is None:
        far = float(d[valid].max()) if valid.any() else 1.0
    t = (np.where(valid, d, near) - near) / max(float(far) - float(near), 1e-12)
    if invert:
        t = 1.0 - t
    rgb = _turbo(t).astype(np.float32)
    rgb[~valid] = 0.0
    return torch.from_numpy(rgb).to(dev) if is_torch else rgb


# --------------------------------------------------------------------------------------------------
# Ctrl-C -> checkpoint
# --------------------------------------------------------------------------------------------------

class SigintGuard:
    """Handle returned by :func:`install_sigint_checkpoint`.

    In deferred mode the first Ctrl-C only sets :attr:`requested`; call :meth:`check` at a safe
    point of the loop (between steps): it runs the callback and raises ``KeyboardInterrupt``.
    """

    def __init__(self, callback: Callable[[], Any], defer: bool):
        self.callback = callback
        self.defer = defer
        self.requested = False
        self.called = False
        self.aborted = False

    def _run_callback(self) -> None:
        if not self.called:
            self.called = True
            self.callback()

    def check(self) -> None:
        if self.requested:
            self._run_callback()
            raise KeyboardInterrupt

    def _handler(self, signum, frame):
        if self.defer and not self.requested:
            self.requested = True
            return
        # immediate mode, or a second Ctrl-C in deferred mode (abort now, no callback)
        if self.defer:
            self.aborted = True
        self.requested = True
        raise KeyboardInterrupt


@contextlib.contextmanager
def install_sigint_checkpoint(callback: Callable[[], Any], defer: bool = False
                              ) -> Iterator[SigintGuard]:
    """On Ctrl-C (SIGINT) inside the block, call ``callback()`` (e.g. save a checkpoint) once, then
    re-raise ``KeyboardInterrupt``.

    ``defer=False``: the interrupt lands wherever the code is; ``callback`` runs as the
    ``KeyboardInterrupt`` leaves the block. Its state may be mid-step, so the callback should save
    what is consistent (e.g. the last completed step's state).
    ``defer=True``: the first Ctrl-C only sets ``guard.requested``; the loop must call
    ``guard.check()`` between steps, which saves and raises. A second Ctrl-C interrupts at once
    without calling the callback (the user asked to abort). If the block ends normally after a
    deferred Ctrl-C, the callback runs and ``KeyboardInterrupt`` is raised at the exit.

    The previous SIGINT handler is restored on exit. Outside the main thread no handler can be
    installed; any ``KeyboardInterrupt`` leaving the block still triggers the callback.
    """
    guard = SigintGuard(callback, defer)
    installed = False
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, guard._handler)
        installed = True
    try:
        yield guard
        if guard.requested and not guard.called:
            # Ctrl-C arrived (deferred) but the loop ended before calling check()
            guard.check()
    except KeyboardInterrupt:
        if not guard.called and not guard.aborted:
            guard._run_callback()
        raise
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
