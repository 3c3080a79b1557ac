"""Crash-safe file writes.

Every writer here follows the same recipe: write into a temporary file *in the destination's
directory* (so the final rename never crosses a file system), flush and ``fsync`` it, then
``os.replace`` it over the destination and (best effort) ``fsync`` the directory. A reader therefore
sees either the complete old file or the complete new one, never a truncated file, even if the
process is killed or the disk fills up half way. On any error the temporary file is removed and the
destination is left untouched.

Only the standard library is imported here, so this module is cheap to import from anywhere.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "temp_path_for", "fsync_dir"]

# mkstemp creates files with mode 0600; give committed files the usual permissions instead.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def fsync_dir(directory: PathLike) -> None:
    """Flush a directory entry to disk (best effort; a no-op where the OS does not allow it)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_path_for(path: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary *path* next to ``path`` that is renamed onto ``path`` on success.

    For writers that insist on opening the file themselves (video encoders, ``np.savez``): the
    temporary name keeps ``path``'s suffix so format detection by extension still works. The
    caller writes the file; on a clean exit it is fsynced and atomically moved onto ``path``; on an
    exception it is deleted and ``path`` is left as it was.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}",
                                    dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    with contextlib.suppress(OSError):
        os.chmod(tmp, _FILE_MODE)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{dest}: the writer did not create the temporary file {tmp}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in _FULL:
            raise _disk_full(dest, e) from e
        raise


# "no space left on device" and "disk quota exceeded"
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _disk_full(dest: Path, e: OSError) -> OSError:
    """The error a full disk gives, naming the file and saying the old one is intact."""
    import shutil

    try:
        free = f"{shutil.disk_usage(dest.parent).free / 2**20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    old = f"the previous {dest.name} is unchanged" if dest.exists() else f"{dest.name} was not created"
    return OSError(e.errno, f"{dest}: the disk is full ({e.strerror}; {free}) while writing it; {old}. "
                            f"Free some space and run the command again (--resume continues a run)")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None,
                newline: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing through a temporary file; commit atomically on clean exit.

    ``mode`` must be a write mode (``"w"``, ``"wb"``, ``"wt"``). Text modes default to UTF-8.
    """
    if not mode.startswith("w") or "+" in mode:
        raise ValueError(f"atomic_open: mode must be 'w', 'wb' or 'wt', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with temp_path_for(path) as tmp:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically. Returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``\\n`` line endings kept as given). Returns the path."""
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)
    return Path(path)
