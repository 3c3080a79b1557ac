"""The scene dataset every parser returns, the error every parser raises and the background
colours (see :mod:`aware3d.data`). Kept apart from the package so that the parsers import these
without importing the package that imports them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch


class DataError(ValueError):
    """A dataset file is missing, unreadable or inconsistent. The message names the file, the
    frame (when there is one) and what was expected."""


BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def parse_background(background) -> torch.Tensor:
    """``"white"``, ``"black"`` or three floats in [0, 1] -> tensor (3,)."""
    if isinstance(background, str):
        if background not in BACKGROUNDS:
            raise ValueError(f"background: expected 'white', 'black' or three floats in [0, 1], "
                             f"got {background!r}")
        return torch.tensor(BACKGROUNDS[background], dtype=torch.float32)
    bg = torch.as_tensor(background, dtype=torch.float32).flatten()
    if bg.numel() != 3 or not torch.isfinite(bg).all() or (bg < 0).any() or (bg > 1).any():
        raise ValueError(f"background: expected 'white', 'black' or three floats in [0, 1], "
                         f"got {background!r}")
    return bg


@dataclass
class SceneDataset:
    """A posed image set in the internal convention.

    images: float32 (N, H, W, 3) in [0, 1], already composited on ``background`` where the files
    had alpha. alphas: (N, H, W) in [0, 1] or None (no alpha in the files). c2w: (N, 4, 4) OpenGL
    camera-to-world. K: (N, 3, 3) pixel intrinsics of the images as returned (after any downscale;
    images are undistorted, so K is a plain pinhole). near / far: ray bounds for rendering. aabb:
    (6,) scene bound (xmin, ymin, zmin, xmax, ymax, zmax) in world units. depths: (N, H, W)
    distance along the ray, 0 where unknown / background, or None. names: one file name per frame.
    distortion: (N, 4) OpenCV k1 k2 p1 p2 of the original cameras (already removed from the images)
    or None. background: (3,) the colour composited behind transparent pixels. transform: (4, 4)
    float64 similarity from the data files' frame to this dataset's frame when the loader
    normalised the scene (:mod:`aware3d.data.normalize`), else None (the files' frame).
    sfm_transform: (4, 4) float64 from the structure-from-motion model's frame to the files' frame
    where the files record one (nerfstudio's ``applied_transform``), else None. times: (N,) float32
    in [0, 1], the moment each frame shows (dynamic scenes in the D-NeRF format), else None.
    """

    images: torch.Tensor
    c2w: torch.Tensor
    K: torch.Tensor
    width: int
    height: int
    near: float
    far: float
    aabb: torch.Tensor
    names: list = field(default_factory=list)
    alphas: torch.Tensor | None = None
    depths: torch.Tensor | None = None
    distortion: torch.Tensor | None = None
    background: torch.Tensor = field(default_factory=lambda: torch.ones(3))
    format: str = ""
    source: str = ""
    transform: torch.Tensor | None = None
    sfm_transform: torch.Tensor | None = None
    times: torch.Tensor | None = None

    def __post_init__(self):
        """Geometry a renderer cannot use is refused here, for every format: the message names the
        data file (``source``) and the frame."""
        where = self.source or f"{self.format or 'scene'} dataset"
        near, far = float(self.near), float(self.far)
        if not (math.isfinite(near) and math.isfinite(far)) or near <= 0 or near >= far:
            raise DataError(f"{where}: ray bounds near={near:g}, far={far:g}: expected 0 < near < far (finite)")
        bad = ~torch.isfinite(self.c2w.reshape(len(self.c2w), -1)).all(-1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{where}: {self._frame(i)}: camera-to-world has NaN or inf entries")
        K = self.K.reshape(-1, 3, 3)
        bad = ~torch.isfinite(K.reshape(len(K), -1)).all(-1) | (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{where}: {self._frame(i)}: intrinsics need finite, positive focal lengths, "
                            f"got fx={float(K[i, 0, 0]):g}, fy={float(K[i, 1, 1]):g}")
        if self.times is not None:
            t = self.times.reshape(-1)
            bad = ~torch.isfinite(t) | (t < 0) | (t > 1)
            if t.numel() != len(self.c2w) or bad.any():
                i = int(bad.nonzero()[0]) if bad.any() else 0
                raise DataError(f"{where}: {self._frame(i)}: time must be a number in [0, 1] for every frame "
                                f"(D-NeRF format), got {float(t[i]) if t.numel() > i else None}")
        cx, cy = K[:, 0, 2], K[:, 1, 2]
        bad = (cx < -self.width) | (cx > 2 * self.width) | (cy < -self.height) | (cy > 2 * self.height)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{where}: {self._frame(i)}: principal point ({float(cx[i]):g}, {float(cy[i]):g}) "
                            f"lies far outside the {self.width}x{self.height} image (expected within one "
                            f"image size of it; were cx / cy given in another unit?)")

    def _frame(self, i: int) -> str:
        name = self.names[i] if self.names and i < len(self.names) else None
        return f"frame {i}" + (f" ({name!r})" if name else "")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rays(self, index: int | Sequence[int] | None = None):
        """World rays through every pixel centre of the frames ``index`` (all by default).
        Returns ``(rays_o, rays_d)`` each (n, H, W, 3) (or (H, W, 3) for an int index)."""
        from ..render.cameras import image_rays

        idx = slice(None) if index is None else index
        return image_rays(self.K[idx], self.c2w[idx], self.width, self.height)

    def __repr__(self) -> str:  # keep it short: never print the tensors
        extra = [n for n in ("alphas", "depths", "distortion", "times") if getattr(self, n) is not None]
        return (f"SceneDataset(format={self.format!r}, n={len(self)}, {self.width}x{self.height}, "
                f"near={self.near:.3g}, far={self.far:.3g}, aabb={[round(float(v), 3) for v in self.aabb]}"
                + (f", with {'/'.join(extra)}" if extra else "") + ")")
