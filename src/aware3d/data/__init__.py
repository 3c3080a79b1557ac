"""Datasets: scene parsers (Blender, nerfstudio / instant-ngp, LLFF, COLMAP), image folders for the
GANs and built-in analytic ray-caster datasets (:mod:`aware3d.data.synth`).

Every scene parser returns a :class:`SceneDataset` in the one internal camera convention of
:mod:`aware3d.render.cameras` (OpenGL camera-to-world, OpenCV-style pixel intrinsics ``K``,
distance-along-ray depth). Problems with files raise :class:`DataError`, whose message names the
file, the frame (where there is one) and what was expected.

``load_scene(path)`` picks the parser by looking at what is in ``path``:

=====================================  ==========================================================
``transforms_{split}.json``            Blender / NeRF-synthetic (:mod:`aware3d.data.blender`)
``transforms.json``                    nerfstudio / instant-ngp (:mod:`aware3d.data.nerfstudio`)
``poses_bounds.npy``                   LLFF forward-facing (:mod:`aware3d.data.llff`)
``sparse/0/``, ``sparse/`` or a model  COLMAP text or binary model (:mod:`aware3d.data.colmap`)
folder with ``cameras.{bin,txt}``
=====================================  ==========================================================

Single-file formats (nerfstudio, LLFF, COLMAP) have no split of their own: ``split="all"`` returns
every frame, ``"train"`` every frame except each ``holdout``-th (default 8, the LLFF/NeRF habit) and
``"val"``/``"test"`` those held-out frames.
"""
from __future__ import annotations

from pathlib import Path

from .scene import BACKGROUNDS, DataError, SceneDataset, parse_background  # noqa: F401


def detect_format(path) -> tuple[str, Path]:
    """Which parser ``load_scene`` would use for ``path``: returns (format, root) with format one of
    ``"blender"``, ``"nerfstudio"``, ``"llff"``, ``"colmap"``; raises DataError when none fits."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or directory (expected a scene folder)")
    if p.is_file():
        name = p.name
        if name.startswith("transforms_") and name.endswith(".json"):
            return "blender", p.parent
        if name == "transforms.json" or name.endswith(".json"):
            return "nerfstudio", p
        if name == "poses_bounds.npy":
            return "llff", p.parent
        raise DataError(f"{p}: not a scene file (expected transforms*.json, poses_bounds.npy or a "
                        f"scene folder)")
    if any((p / f"transforms_{s}.json").is_file() for s in ("train", "val", "test")):
        return "blender", p
    if (p / "transforms.json").is_file():
        return "nerfstudio", p
    if (p / "poses_bounds.npy").is_file():
        return "llff", p
    from .colmap import find_model_dir

    if find_model_dir(p) is not None:
        return "colmap", p
    raise DataError(
        f"{p}: no known scene format found (looked for transforms_{{train,val,test}}.json (Blender), "
        f"transforms.json (nerfstudio / instant-ngp), poses_bounds.npy (LLFF), and a COLMAP model "
        f"cameras.{{bin,txt}} + images.{{bin,txt}} in sparse/0/, sparse/ or the folder itself)")


def load_scene(path, split: str = "train", downscale: int = 1, background="white",
               **kwargs) -> SceneDataset:
    """Load a posed scene, detecting its format (see the module docstring).

    split: ``"train"``, ``"val"``, ``"test"`` (or ``"all"`` for single-file formats). downscale:
    integer factor, images are area-resized and K scaled to match. background: ``"white"``,
    ``"black"`` or an RGB triple, composited behind transparent pixels. Extra keyword arguments go
    to the format's loader (e.g. ``holdout=8``, ``limit=``).
    """
    if int(downscale) != downscale or int(downscale) < 1:
        raise ValueError(f"downscale: expected an integer >= 1, got {downscale}")
    fmt, root = detect_format(path)
    if fmt == "blender":
        from .blender import load_blender as fn
    elif fmt == "nerfstudio":
        from .nerfstudio import load_nerfstudio as fn
    elif fmt == "llff":
        from .llff import load_llff as fn
    else:
        from .colmap import load_colmap as fn
    return fn(root, split=split, downscale=int(downscale), background=background, **kwargs)


__all__ = ["DataError", "SceneDataset", "load_scene", "detect_format", "parse_background"]
