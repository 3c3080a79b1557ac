"""Image folders for the 3D-aware GANs.

:class:`ImageFolderDataset` reads every ``.jpg`` / ``.jpeg`` / ``.png`` (any letter case) under a
folder, recursively, or inside a ``.zip`` file, in sorted path order; hidden files and ``__MACOSX``
entries are ignored. Each image is centre-cropped to a square (the shorter side), resized to
``resolution`` with Lanczos (JPEGs are first reduced in the DCT domain when much larger), converted
to RGB (transparent pixels composited on white) and stored as uint8.

Caching: with ``cache=True`` (default) all images are decoded ONCE at construction into an
in-memory uint8 tensor ``images`` (N, 3, R, R) (10k images at 64x64 take 120 MB); nothing is
written to disk. With ``cache=False`` images are decoded on every access (for sets too big for
memory); files are then only checked with PIL's ``verify()`` at construction, and a file that
still fails to decode at access raises :class:`DataError`.

Unreadable / corrupt images are skipped with ONE warning that counts them. A folder with no images
or fewer than ``min_images`` usable ones raises :class:`DataError` at construction, before any
training starts. Folders written by :func:`aware3d.data.synth.synth_objects` (``images/`` +
``labels.json``) load directly; their labels are available as ``labels`` (one dict per image).
"""
from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .scene import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def _is_image_name(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    if any(p.startswith(".") or p == "__MACOSX" for p in parts if p):
        return False
    return name.lower().endswith(IMAGE_EXTS)


def load_square(fp, resolution: int) -> np.ndarray:
    """Decode an image (path or file object), centre-crop to a square, resize to ``resolution``.
    Returns uint8 (R, R, 3). Raises whatever PIL raises for a corrupt file."""
    from PIL import Image

    with Image.open(fp) as im:
        if im.format == "JPEG":
            im.draft("RGB", (resolution, resolution))
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im2 = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            im2 = im.convert("RGB")
    w, h = im2.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im2 = im2.crop((left, top, left + s, top + s))
    if s != resolution:
        im2 = im2.resize((resolution, resolution), Image.LANCZOS, reducing_gap=3.0)
    return np.array(im2, dtype=np.uint8)


class ImageFolderDataset:
    """Square RGB images from a folder tree or a .zip (see the module docstring).

    ``limit`` keeps only the first ``limit`` files (sorted order) before decoding, e.g. for quick
    runs; ``min_images`` is the fewest usable images accepted."""

    def __init__(self, path, resolution: int, flip: bool = True, cache: bool = True,
                 min_images: int = 1, limit: int | None = None, progress: bool = False):
        self.path = Path(path)
        self.resolution = int(resolution)
        self.flip = bool(flip)
        self.cache = bool(cache)
        if self.resolution < 1:
            raise ValueError(f"resolution: expected a positive integer, got {resolution}")
        if not self.path.exists():
            raise DataError(f"{self.path}: no such file or directory (expected an image folder or .zip)")
        self._zip = None
        if self.path.is_file():
            if not zipfile.is_zipfile(self.path):
                raise DataError(f"{self.path}: not a folder or a .zip archive")
            with zipfile.ZipFile(self.path) as z:
                names = sorted(n for n in z.namelist() if not n.endswith("/") and _is_image_name(n))
        else:
            names = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                           if p.is_file() and _is_image_name(p.relative_to(self.path).as_posix()))
        if not names:
            raise DataError(f"{self.path}: no images found (expected .jpg, .jpeg or .png files, "
                            f"searched recursively)")
        if limit is not None:
            names = names[:int(limit)]
        self._all_names = names
        self.skipped: list[str] = []
        if self.cache:
            arrs, kept = [], []
            it = names
            if progress:
                from tqdm import tqdm
                it = tqdm(names, desc=f"decoding {self.path.name}", unit="img")
            zf = zipfile.ZipFile(self.path) if self.path.is_file() else None
            try:
                for n in it:
                    try:
                        arrs.append(load_square(self._open(n, zf), self.resolution))
                        kept.append(n)
                    except Exception:
                        self.skipped.append(n)
            finally:
                if zf is not None:
                    zf.close()
            self.names = kept
            self.images = (torch.from_numpy(np.stack(arrs, 0)).permute(0, 3, 1, 2).contiguous()
                           if arrs else torch.zeros(0, 3, self.resolution, self.resolution, dtype=torch.uint8))
        else:
            # Lazy: only check that each file opens and passes PIL's verify() (cheap, no full
            # decode); files that still fail later raise DataError at access.
            from PIL import Image

            zf = zipfile.ZipFile(self.path) if self.path.is_file() else None
            kept = []
            try:
                for n in names:
                    try:
                        with Image.open(self._open(n, zf)) as im:
                            im.verify()
                        kept.append(n)
                    except Exception:
                        self.skipped.append(n)
            finally:
                if zf is not None:
                    zf.close()
            self.names = kept
            self.images = None
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} unreadable image(s) of "
                          f"{len(names)} (first: {self.skipped[0]})", stacklevel=2)
        if len(self.names) < max(1, int(min_images)):
            raise DataError(f"{self.path}: {len(self.names)} usable image(s) "
                            f"({len(self.skipped)} unreadable), expected at least {max(1, int(min_images))}")
        self.labels = self._read_labels()

    # ------------------------------------------------------------------------------------------
    def _open(self, name: str, zf=None):
        if zf is not None:
            return io.BytesIO(zf.read(name))
        if self.path.is_file():
            with zipfile.ZipFile(self.path) as z:
                return io.BytesIO(z.read(name))
        return self.path / name

    def _read_labels(self):
        f = self.path / "labels.json" if self.path.is_dir() else None
        if f is None or not f.is_file():
            return None
        from ._common import read_json

        meta = read_json(f)
        by_file = {e.get("file"): e for e in meta.get("images", []) if isinstance(e, dict)}
        return [by_file.get(n) for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def uint8(self, index) -> torch.Tensor:
        """uint8 (3, R, R) image ``index`` (no flip)."""
        if self.images is not None:
            return self.images[index]
        name = self.names[index]
        try:
            arr = load_square(self._open(name), self.resolution)
        except Exception as e:
            raise DataError(f"{self.path}: cannot decode image {name} ({type(e).__name__}: {e})") from None
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()

    def __getitem__(self, index: int) -> torch.Tensor:
        """Float (3, R, R) in [-1, 1], no flip."""
        return self.uint8(index).float() / 127.5 - 1.0

    def sample(self, batch: int, generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
        """``batch`` random images (with replacement) as float (batch, 3, R, R) in [-1, 1]; each is
        flipped horizontally with probability 1/2 when ``flip`` is set."""
        idx = torch.randint(len(self), (int(batch),), generator=generator)
        if self.images is not None:
            x = self.images[idx]
        else:
            x = torch.stack([self.uint8(int(i)) for i in idx], 0)
        x = x.float() / 127.5 - 1.0
        if self.flip:
            flips = torch.rand(int(batch), generator=generator) < 0.5
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        return x.to(device) if device is not None else x

    def __repr__(self) -> str:
        return (f"ImageFolderDataset({str(self.path)!r}, n={len(self)}, resolution={self.resolution}, "
                f"flip={self.flip}, cache={self.cache})")
