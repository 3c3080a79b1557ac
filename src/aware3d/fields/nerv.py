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

FFNeRV's flow-guided frame aggregation (``agg``: the relative indices of the neighbouring frames,
the official ``--agg-ind``; empty = off, the independent-frame path alone), as CAM's FFNeRV code does
it: a 1x1 "flow head" after the third-from-last block gives, per neighbour k, an optical flow (2
channels) and an aggregation weight (1 channel) at that block's resolution; the last head gives 5
channels: the independent frame (3, through ``(tanh + 1) / 2``) and 2 blending logits. With a buffer
of every frame's latest independent output (float16; out-of-range neighbours read an all-zero
frame), each neighbour is warped by its flow (:func:`flow_warp`: the flow upsampled bilinearly to
the frame and scaled by the same factor, then ``grid_sample`` with border padding, in the official
convention), the warped neighbours are averaged with the softmax of their weights (upsampled
nearest) into the aggregated frame, and the final frame is the softmax(blend)-weighted sum of the
independent and the aggregated frame (:func:`aggregate_frames`). Training loss (the official one):
``lw * L(aggregated) + lw * L(independent) + L(final)`` (``agg_lw``, official ``--lw 0.1``).
Configs saved without the ``agg`` key are the independent-frame model of before.

Weight quantisation (QAT) of the compression setting is not implemented.
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
    # ffnerv: flow-guided aggregation from these relative frame indices (empty = off) and the loss
    # weight of the aggregated and independent frames
    agg: Sequence[int] = ()
    agg_lw: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "stem_hidden", tuple(int(s) for s in self.stem_hidden))
        object.__setattr__(self, "t_dims", tuple(int(s) for s in self.t_dims))
        object.__setattr__(self, "agg", tuple(int(s) for s in self.agg))
        if self.agg and self.model != "ffnerv":
            raise ValueError("agg (flow-guided frame aggregation) is FFNeRV's: model must be ffnerv")
        if self.agg and len(self.strides) < 3:
            raise ValueError(f"agg needs at least 3 blocks (the flow head sits after the third from last), "
                             f"got strides {self.strides}")
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
    # --strides 5 2 2 2 2 --t-dim 64 128 256 512 --mod-dim 60 (act gelu, norm none)
    # --agg-ind -2 -1 1 2 --lw 0.1: with the flow and blending heads (FFNeRV's aggregation)
    "ffnerv-rep": NeRVConfig("ffnerv", 9, 16, 156, (5, 2, 2, 2, 2), 1, 2, 96, "gelu",
                             t_dims=(64, 128, 256, 512), agg=(-2, -1, 1, 2)),
    # CPU defaults: 16x upsampling, so a 64x64 clip has a 4x4 feature map
    "nerv-cpu": NeRVConfig("nerv", 4, 4, 32, (2, 2, 2, 2), 1, 2, 32, "swish", stem_hidden=(256,)),
    "ffnerv-cpu": NeRVConfig("ffnerv", 4, 4, 64, (2, 2, 2, 2), 1, 2, 32, "gelu", t_dims=(8, 16, 32, 64),
                             agg=(-2, -1, 1, 2)),
}
PAPER_MOD_RES = 60  # CAM's --mod-dim for the FFNeRV representation setting
PAPER_AGG = (-2, -1, 1, 2)  # the official representation and compression lines' --agg-ind


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


def flow_warp(frames: torch.Tensor, flows: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Warp ``frames`` (M, C, H, W) by ``flows`` (M, 2, h, w) (x, y displacements in flow-map pixels),
    as the official FFNeRV code: the flow is upsampled bilinearly by s = W / w and multiplied by s;
    the sampling grid is (pixel + flow) / ((W - 1) / 2, (H - 1) / 2) - 1, read by ``grid_sample``
    (bilinear, border padding). ``align_corners=False`` is the official call (torch's default), whose
    grid convention differs from the normalisation above: a zero flow samples pixel x at
    x * W / (W - 1) - 1/2 (clamped), a slight zoom, not the identity; ``align_corners=True`` makes a
    zero flow the identity."""
    H, W = frames.shape[-2:]
    s = float(W) / flows.shape[-1]
    flows = F.interpolate(flows, scale_factor=s, mode="bilinear", align_corners=False) * s
    ys, xs = torch.meshgrid(torch.arange(H, dtype=frames.dtype, device=frames.device),
                            torch.arange(W, dtype=frames.dtype, device=frames.device), indexing="ij")
    base = torch.stack((xs, ys)).unsqueeze(0)
    half = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=frames.dtype, device=frames.device).view(1, 2, 1, 1)
    grid = ((flows + base) / half - 1).permute(0, 2, 3, 1)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)


def aggregate_frames(independent: torch.Tensor, blend: torch.Tensor, flow_out: torch.Tensor,
                     neighbours: torch.Tensor, align_corners: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """FFNeRV's two aggregations. ``independent`` (B, 3, H, W), ``blend`` (B, 2, H, W) logits,
    ``flow_out`` (B, 3K, h, w) = K flows (2 channels each, neighbour-major) then K weight logits,
    ``neighbours`` (B, K, 3, H, W). Returns (aggregated, final), each (B, 3, H, W):
    aggregated = sum_k softmax_k(upsample_nearest(w_k)) * warp(neighbour_k, flow_k);
    final = softmax(blend)[0] * independent + softmax(blend)[1] * aggregated."""
    B, K = neighbours.shape[:2]
    H, W = neighbours.shape[-2:]
    h, w = flow_out.shape[-2:]
    flows = flow_out[:, :2 * K].reshape(B * K, 2, h, w)
    warped = flow_warp(neighbours.reshape(B * K, 3, H, W), flows, align_corners).reshape(B, K, 3, H, W)
    w1 = torch.softmax(F.interpolate(flow_out[:, 2 * K:], size=(H, W), mode="nearest"), 1)
    agg = (warped * w1.unsqueeze(2)).sum(1)
    w2 = torch.softmax(blend, 1).unsqueeze(2)
    final = (torch.stack([independent, agg], 1) * w2).sum(1)
    return agg, final


class FrameBuffer:
    """Every frame's latest independent output (float16, as the official buffer), plus an all-zero
    frame at index N that out-of-range neighbours read."""

    def __init__(self, n_frames: int, height: int, width: int, device=None):
        self.n = int(n_frames)
        self.frames = torch.zeros(self.n + 1, 3, height, width, dtype=torch.float16, device=device)

    def update(self, idx: torch.Tensor, frames: torch.Tensor) -> None:
        self.frames[idx] = frames.detach().to(torch.float16)

    def neighbours(self, idx: torch.Tensor, offsets) -> torch.Tensor:
        """(B, K, 3, H, W) float32: frames idx + offsets, the zero frame where out of range."""
        a = idx.reshape(-1, 1) + torch.tensor(list(offsets), device=idx.device, dtype=torch.long)
        a = torch.where((a >= 0) & (a < self.n), a, torch.full_like(a, self.n))
        return self.frames[a].float()


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
        self.agg_at = len(blocks) - 3 if c.agg else None  # the flow head's block (official: len - 3)
        if c.agg:
            w_flow = blocks[self.agg_at].conv.out_channels // blocks[self.agg_at].up.upscale_factor ** 2
            self.flow_head = nn.Conv2d(w_flow, 3 * len(c.agg), 1)
        self.head = nn.Conv2d(ngf, 5 if c.agg else 3, 1)

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """The (B, fc_dim, fc_h, fc_w) feature map ahead of the blocks."""
        c = self.config
        if self.stem is not None:
            return self.stem(nerv_positional_encoding(t, c.pe_base, c.pe_levels)).view(-1, c.fc_dim, c.fc_h, c.fc_w)
        return torch.cat([interp_1d(g, t * g.shape[0]) for g in self.grids], 1)

    def heads(self, t: torch.Tensor) -> dict:
        """{"independent": (B, 3, H, W) in [0, 1]} and, with ``agg``, "blend" (B, 2, H, W) logits and
        "flow" (B, 3K, h, w) (K flows, then K weight logits) for :func:`aggregate_frames`."""
        t = t.reshape(-1).float()
        x = self.features(t)
        out = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x, t)
            if i == self.agg_at:
                out["flow"] = self.flow_head(x)
        y = self.head(x)
        out["independent"] = (torch.tanh(y[:, :3]) + 1) * 0.5
        if self.config.agg:
            out["blend"] = y[:, 3:5]
        return out

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """The independent frames (B, 3, H, W) in [0, 1] (with ``agg``, before aggregation: see
        :func:`render_aggregated` for the final frames)."""
        return self.heads(t)["independent"]


@torch.no_grad()
def render_aggregated(net: NeRV, ts: torch.Tensor, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All N frames (t = ts, frame i at ts[i]) as the official evaluation makes them: the buffer is
    filled with every frame's independent output first, then each frame is aggregated from it.
    Returns (final, independent), each (N, 3, H, W). Without ``agg`` both are the independent frames."""
    N = ts.shape[0]
    outs = [net.heads(ts[i:i + chunk]) for i in range(0, N, chunk)]
    indep = torch.cat([o["independent"] for o in outs])
    if not net.config.agg:
        return indep, indep
    buf = FrameBuffer(N, *indep.shape[-2:], device=indep.device)
    buf.update(torch.arange(N, device=indep.device), indep)
    finals = []
    for k, o in enumerate(outs):
        idx = torch.arange(k * chunk, k * chunk + o["independent"].shape[0], device=indep.device)
        finals.append(aggregate_frames(o["independent"], o["blend"], o["flow"], buf.neighbours(idx, net.config.agg))[1])
    return torch.cat(finals), indep


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


__all__ = ["NeRVConfig", "CONFIGS", "MODELS", "NeRV", "NeRVBlock", "TemporalCAM", "interp_1d", "flow_warp",
           "aggregate_frames", "FrameBuffer", "render_aggregated", "PAPER_AGG",
           "nerv_positional_encoding", "config_for_frames", "count_parameters", "PAPER_MOD_RES"]
