"""Full-reference image metrics: PSNR and SSIM.

Images are (..., H, W, C) tensors (C = 3 usually) with values in [0, max_val]; every leading dim is
a batch dim and the metrics return one value per image, shape (...).

SSIM follows Wang et al. 2004 with the constants used by the NeRF evaluation code: an 11x11
Gaussian window (sigma 1.5, normalized), K1 = 0.01, K2 = 0.03, population (not sample) statistics,
computed per channel over the "valid" region (no padding: the output map is (H - 10) x (W - 10)),
averaged over that map and the channels. This equals
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=max_val, channel_axis=-1)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aware3d.render._checks import ShapeError, check_tensor

__all__ = ["psnr", "ssim", "mse"]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    check_tensor("pred", pred, (None, None, None), floating=True)
    check_tensor("target", target, (None, None, None))
    if pred.shape != target.shape:
        raise ShapeError(f"pred and target: shapes differ: pred {tuple(pred.shape)}, "
                         f"target {tuple(target.shape)}")


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image over (H, W, C): shape (...)."""
    _check_pair(pred, target)
    return (pred - target.to(pred.dtype)).square().mean(dim=(-3, -2, -1))


def psnr(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``10 log10(max_val^2 / MSE)``, shape (...).

    Identical images give ``+inf``.
    """
    m = mse(pred, target)
    return 10.0 * torch.log10(torch.as_tensor(max_val, dtype=m.dtype, device=m.device) ** 2 / m)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0, window_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image, shape (...); identical images give 1.

    Both images must be at least ``window_size`` pixels in H and W. Computed in the input's float
    dtype (use float64 for reference-grade agreement; float32 agrees with it to ~1e-6).
    """
    _check_pair(pred, target)
    *lead, h, w, c = pred.shape
    if h < window_size or w < window_size:
        raise ShapeError(f"pred: SSIM needs H, W >= {window_size}, got shape {tuple(pred.shape)}")
    dtype = pred.dtype
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = target.to(dtype).reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    g = _gaussian_window(window_size, sigma, dtype, pred.device)
    gy, gx = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable "valid" Gaussian filter
        return F.conv2d(F.conv2d(t, gy), gx)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.reshape(-1, c, s.shape[-2], s.shape[-1]).mean(dim=(-3, -2, -1)).reshape(lead)
