"""Evaluation metrics: PSNR and SSIM (:mod:`.image`), FID and KID (:mod:`.fid`).

``psnr``/``ssim`` are imported eagerly (torch only); the FID/KID names are resolved lazily so that
importing :mod:`aware3d.metrics` never loads scipy, tqdm or the Inception network.
"""
from __future__ import annotations

from .image import psnr, ssim

_LAZY_FID = ("InceptionFeatures", "frechet_distance", "kid", "compute_fid_kid", "feature_stats",
             "real_features", "metric_names", "fid_cache_dir")

__all__ = ["psnr", "ssim", *_LAZY_FID]


def __getattr__(name: str):
    if name in _LAZY_FID:
        from . import fid
        return getattr(fid, name)
    raise AttributeError(f"module 'aware3d.metrics' has no attribute {name!r}")
