"""Frame-wise neural video representations: NeRV and FFNeRV's temporal-grid variant, with CAM's
temporal modulation (PAPERS.md cards 9 and 13).

A video of N frames is a function t -> frame, t = i / N for frame i (the normalisation of the
reference implementations). Two ways to get a small feature map from t:

- ``"nerv"`` (NeRV, Chen et al. 2021): positional encoding gamma(t) = (sin(b^k pi t), cos(b^k pi t))
  for k < L (b = 1.25, L = 40: 80 numbers) -> MLP (Linear + activation per layer, the last layer has
  fc_h * fc_w * fc_dim outputs) -> reshaped to a (fc_dim, fc_h, fc_w) feature map.
- ``"ffnerv"`` (FFNeRV, Lee et al. 2022): multi-resolution temporal grids, grid g holding T_g
  feature maps of (fc_dim / G, fc_h, fc_w) (Xavier-uniform init), read by linear interpolation at
  t * T_g (clamped at the last cell) and concatenated over the grids.

Then NeRV blocks: ``Conv3x3(C_in, C_out * s^2) -> PixelShuffle(s) -> norm -> activation``, one per
stride s (the first block widens to ``fc_dim * expansion`` channels, the next ones narrow by
``reduction`` down to ``lower_width``), so the frame is (fc_h * prod(s)) x (fc_w * prod(s)); a 1x1
head maps the last features to RGB through ``(tanh + 1) / 2``.

``mod_res > 0`` adds CAM (:class:`TemporalCAM`) in place of each block's norm, as CAM's FFNeRV code
does: per-channel instance normalisation (GroupNorm with one group per channel, no affine), then a
per-channel scale gamma(t) and shift beta(t) read by linear interpolation from a 1D grid of
``mod_res`` points over t in [0, 1] (point k at t = k / (mod_res - 1)), initialised to 1 and 0.

Not implemented: FFNeRV's flow-guided frame aggregation (the optical-flow / blending heads, the frame
buffer and the warping); ``"ffnerv"`` here is its grid-based independent-frame path.
Weight quantisation (QAT) of the compression setting is not implemented either.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = ("nerv", "ffnerv")


@dataclass(frozen=True)
class NeRVConfig:
    """Layer sizes of a NeRV / FFNeRV generator (names follow the reference command lines)."""

    model: str = "nerv"
    fc_h: int = 9
    fc_w: int = 16
    fc_dim: int = 26
    strides: tuple = (5, 2, 2, 2, 2)
    expansion: float = 1.0
    reduction: int = 2
    lower_width: int = 96
    act: str = "swish"
    # nerv: positional encoding base ** k, k < levels; one hidden stem layer of stem_hidden
    pe_base: float = 1.25
    pe_levels: int = 40
    stem_hidden: Sequence[int] = (512,)
    # ffnerv: temporal grid resolutions
    t_dims: Sequence[int] = (64, 128, 256, 512)
    # CAM: temporal modulation grid points (0 = off)
    mod_res: int = 0

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "stem_hidden", tuple(int(s) for s in self.stem_hidden))
        object.__setattr__(self, "t_dims", tuple(int(s) for s in self.t_dims))
        if self.model not in MODELS:
            raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {self.model!r}")
        if self.model == "ffnerv" and self.fc_dim % len(self.t_dims):
            raise ValueError(f"fc_dim {self.fc_dim} must be divisible by the number of temporal grids "
                             f"({len(self.t_dims)})")
        if self.mod_res == 1 or self.mod_res < 0:
            raise ValueError(f"mod_res: expected 0 (off) or >= 2, got {self.mod_res}")

    @property
    def upscale(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames this configuration produces."""
        return self.fc_h * self.upscale, self.fc_w * self.upscale

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Named configurations. The two "paper" ones are the reference command lines at 1280x720 (720 / 80
# = 9, 1280 / 80 = 16); the CPU ones are small stand-ins for frames of about 64-128 pixels.
CONFIGS: dict[str, NeRVConfig] = {
    # NeRV-S (NeRV's README / paper, 3.2M parameters): --embed 1.25_40 --stem_dim_num 512_1
    # --fc_hw_dim 9_16_26 --expansion 1 --reduction 2 --lower-width 96 --strides 5 2 2 2 2
    # --act swish --norm none --single_res
    "nerv-s": NeRVConfig("nerv", 9, 16, 26, (5, 2, 2, 2, 2), 1, 2, 96, "swish"),
    # CAM's FFNeRV "representation" line: --fc-hw-dim 9_16_156 --expansion 1 --lower-width 96
    # --strides 5 2 2 2 2 --t-dim 64 128 256 512 --mod-dim 60 (act gelu, norm none); without
    # the flow/blending heads
    "ffnerv-rep": NeRVConfig("ffnerv", 9, 16, 156, (5, 2, 2, 2, 2), 1, 2, 96, "gelu",
                             t_dims=(64, 128, 256, 512)),
    # CPU defaults: 16x upsampling, so a 64x64 clip has a 4x4 feature map
    "nerv-cpu": NeRVConfig("nerv", 4, 4, 32, (2, 2, 2, 2), 1, 2, 32, "swish", stem_hidden=(256,)),
    "ffnerv-cpu": NeRVConfig("ffnerv", 4, 4, 64, (2, 2, 2, 2), 1, 2, 32, "gelu", t_dims=(8, 16, 32, 64)),
}
PAPER_MOD_RES = 60  # CAM's --mod-dim for the FFNeRV representation setting


def default_config(model: str) -> str:
    return f"{model}-cpu"


def activation(name: str) -> nn.Module:
    acts = {"swish": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "leaky": nn.LeakyReLU, "none": nn.Identity}
    if name not in acts:
        raise ValueError(f"act: expected one of {', '.join(acts)}, got {name!r}")
    return acts[name]()


def nerv_positional_encoding(t: torch.Tensor, base: float = 1.25, levels: int = 40) -> torch.Tensor:
    """t (B,) -> (B, 2 * levels): [sin(b^0 pi t), cos(b^0 pi t), sin(b^1 pi t), cos(b^1 pi t), ...]."""
    freqs = (base ** torch.arange(levels, dtype=t.dtype, device=t.device)) * math.pi
    x = t.reshape(-1, 1) * freqs
    return torch.stack([torch.sin(x), torch.cos(x)], -1).reshape(t.shape[0], 2 * levels)


def interp_1d(grid: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along dim 0 of ``grid`` (T, ...) at real positions ``pos`` (B,) in grid
    units (0 = first entry), clamped to [0, T - 1]. Returns (B, ...)."""
    T = grid.shape[0]
    p = pos.clamp(0, T - 1)
    i0 = torch.floor(p + 1e-6).long().clamp(max=T - 1)
    i1 = (i0 + 1).clamp(max=T - 1)
    w = (p - i0.to(p.dtype)).clamp(0, 1).view(-1, *([1] * (grid.dim() - 1)))
    return (1 - w) * grid[i0] + w * grid[i1]


class TemporalCAM(nn.Module):
    """CAM over time for feature maps: ``norm(F) * gamma(t) + beta(t)``, gamma / beta per channel
    from 1D grids of ``resolution`` points over t in [0, 1]. ``norm``: per-channel instance
    normalisation over (H, W) without affine (``normalize=False``: identity).
    Parameters: 2 * resolution * channels."""

    def __init__(self, channels: int, resolution: int = 60, normalize: bool = True):
        super().__init__()
        if resolution < 2:
            raise ValueError(f"resolution: expected >= 2, got {resolution}")
        self.channels, self.resolution, self.normalize = int(channels), int(resolution), bool(normalize)
        self.norm = nn.GroupNorm(channels, channels, affine=False) if normalize else nn.Identity()
        self.scale = nn.Parameter(torch.ones(resolution, channels))
        self.shift = nn.Parameter(torch.zeros(resolution, channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pos = t.to(x.dtype) * (self.resolution - 1)
        g = interp_1d(self.scale, pos)[..., None, None]
        b = interp_1d(self.shift, pos)[..., None, None]
        return self.norm(x) * g + b

    def extra_repr(self) -> str:
        return f"channels={self.channels}, resolution={self.resolution}, normalize={self.normalize}"


class NeRVBlock(nn.Module):
    """Conv3x3(c_in -> c_out * s^2) -> PixelShuffle(s) -> [TemporalCAM] -> activation."""

    def __init__(self, c_in: int, c_out: int, stride: int, act: str = "swish", mod_res: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * stride * stride, 3, 1, 1)
        self.up = nn.PixelShuffle(stride)
        self.cam = TemporalCAM(c_out, mod_res) if mod_res else None
        self.act = activation(act)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(self.conv(x))
        if self.cam is not None:
            x = self.cam(x, t)
        return self.act(x)


class NeRV(nn.Module):
    """t (B,) in [0, 1) -> frames (B, 3, H, W) in [0, 1]; see the module docstring."""

    def __init__(self, config: NeRVConfig):
        super().__init__()
        c = self.config = config
        hw = c.fc_h * c.fc_w
        if c.model == "nerv":
            dims = [2 * c.pe_levels, *c.stem_hidden, hw * c.fc_dim]
            layers = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), activation(c.act)]
            self.stem = nn.Sequential(*layers)
            self.grids = None
        else:
            per = c.fc_dim // len(c.t_dims)
            self.stem = None
            self.grids = nn.ParameterList(
                [nn.Parameter(nn.init.xavier_uniform_(torch.empty(T, per, c.fc_h, c.fc_w))) for T in c.t_dims])
        blocks, ngf = [], c.fc_dim
        for i, s in enumerate(c.strides):
            new = int(ngf * c.expansion) if i == 0 else max(ngf // (1 if s == 1 else c.reduction), c.lower_width)
            blocks.append(NeRVBlock(ngf, new, s, c.act, c.mod_res))
            ngf = new
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ngf, 3, 1)

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """The (B, fc_dim, fc_h, fc_w) feature map ahead of the blocks."""
        c = self.config
        if self.stem is not None:
            return self.stem(nerv_positional_encoding(t, c.pe_base, c.pe_levels)).view(-1, c.fc_dim, c.fc_h, c.fc_w)
        return torch.cat([interp_1d(g, t * g.shape[0]) for g in self.grids], 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1).float()
        x = self.features(t)
        for blk in self.blocks:
            x = blk(x, t)
        return (torch.tanh(self.head(x)) + 1) * 0.5


def config_for_frames(name_or_config: str | NeRVConfig, height: int, width: int, **overrides) -> NeRVConfig:
    """A named configuration (or a config) with fc_h / fc_w set so its frames are (height, width);
    both must be multiples of the config's total upsampling."""
    c = CONFIGS[name_or_config] if isinstance(name_or_config, str) else name_or_config
    c = replace(c, **overrides) if overrides else c
    P = c.upscale
    if height % P or width % P:
        raise ValueError(f"frame size {width}x{height}: both sides must be multiples of the upsampling {P}")
    return replace(c, fc_h=height // P, fc_w=width // P)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["NeRVConfig", "CONFIGS", "MODELS", "NeRV", "NeRVBlock", "TemporalCAM", "interp_1d",
           "nerv_positional_encoding", "config_for_frames", "count_parameters", "PAPER_MOD_RES"]
