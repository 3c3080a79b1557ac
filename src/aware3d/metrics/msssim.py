"""Multi-scale SSIM (Wang, Simoncelli, Bovik 2003), as used to score video representations.

Images are (..., H, W, C) with values in [0, max_val]; one value per image, shape (...).

At each of M scales (the image box-downsampled by 2 between scales, odd sides padded as
``avg_pool2d(kernel 2, padding = side % 2)`` does), the per-channel SSIM terms are computed with the
11x11 Gaussian window (sigma 1.5, "valid" region, K1 = 0.01, K2 = 0.03, as :func:`.image.ssim`):
the contrast-structure term cs_j = mean((2 cov + C2) / (var_x + var_y + C2)) and, at the last scale,
the full SSIM. MS-SSIM = prod_{j < M} relu(cs_j)^{w_j} * relu(ssim_M)^{w_M}, per channel, then averaged
over channels, with the weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) -- the same formula and
constants as the ``pytorch_msssim`` package used by NeRV / FFNeRV code.

Five scales need the smaller side to exceed 10 * 2^4 = 160 pixels. For smaller images ``levels=None``
uses as many scales as fit (the coarsest must still hold an 11-pixel window: min side >= 11 * 2^(M-1))
and renormalises the first M weights to sum to 1; :func:`ms_ssim_levels` says how many that is.
With M = 1 MS-SSIM equals SSIM.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aware3d.render._checks import ShapeError

from .image import _check_pair, _gaussian_window

__all__ = ["ms_ssim", "ms_ssim_levels", "MS_SSIM_WEIGHTS"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_levels(height: int, width: int, window_size: int = 11, max_levels: int = 5) -> int:
    """Scales used for an H x W image by ``ms_ssim(levels=None)``: all five when the smaller side
    exceeds (window_size - 1) * 16, else the most M with min side >= window_size * 2^(M-1)."""
    side = min(height, width)
    if side > (window_size - 1) * 2 ** (max_levels - 1):
        return max_levels
    m = 1
    while m < max_levels and side >= window_size * 2 ** m:
        m += 1
    return m


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, max_val: float = 1.0, levels: int | None = None,
            window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
            weights=MS_SSIM_WEIGHTS) -> torch.Tensor:
    """MS-SSIM per image, shape (...); identical images give 1. See the module docstring."""
    _check_pair(pred, target)
    *lead, h, w, c = pred.shape
    if min(h, w) < window_size:
        raise ShapeError(f"pred: MS-SSIM needs H, W >= {window_size}, got shape {tuple(pred.shape)}")
    m = ms_ssim_levels(h, w, window_size, len(weights)) if levels is None else int(levels)
    if not 1 <= m <= len(weights):
        raise ValueError(f"levels: expected 1..{len(weights)}, got {levels}")
    wts = torch.tensor(weights[:m], dtype=torch.float64)
    if m < len(weights):
        wts = wts / wts.sum()
    dtype = pred.dtype
    x = pred.reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    y = target.to(dtype).reshape(-1, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    g = _gaussian_window(window_size, sigma, dtype, pred.device)
    gy, gx = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gy), gx)

    out = torch.ones(x.shape[0], dtype=dtype, device=pred.device)
    for j in range(m):
        if min(x.shape[-2:]) < window_size:
            raise ShapeError(f"pred: {m} MS-SSIM scales need min(H, W) >= {window_size * 2 ** (m - 1)}, "
                             f"got shape {tuple(pred.shape)}")
        mu_x, mu_y = blur(x), blur(y)
        var_x = blur(x * x) - mu_x * mu_x
        var_y = blur(y * y) - mu_y * mu_y
        cov = blur(x * y) - mu_x * mu_y
        cs_map = (2 * cov + c2) / (var_x + var_y + c2)
        if j < m - 1:
            cs = cs_map.mean(dim=(-2, -1)).reshape(-1)
            out = out * F.relu(cs) ** float(wts[j])
            pad = (x.shape[-1] % 2, x.shape[-2] % 2)  # (W, H) padding as avg_pool2d(padding=side % 2)
            x = F.avg_pool2d(x, 2, padding=(pad[1], pad[0]))
            y = F.avg_pool2d(y, 2, padding=(pad[1], pad[0]))
        else:
            l_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
            s = (l_map * cs_map).mean(dim=(-2, -1)).reshape(-1)
            out = out * F.relu(s) ** float(wts[j])
    return out.reshape(-1, c).mean(-1).reshape(lead)
