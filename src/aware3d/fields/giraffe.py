"""GIRAFFE feature fields (Niemeyer & Geiger 2021, sec. 3.1).

A feature field maps a point x and a viewing direction d, both in the entity's canonical frame, and
the entity's shape and appearance codes to a density and an M_f-dimensional feature:

    h(gamma(x), gamma(d), z_s, z_a) -> (sigma, f)

Architecture as the official code: a ReLU trunk on gamma(x) where z_s is added (through a linear
layer) to the first layer and again with gamma(x) at the skip; sigma is read from the trunk; the
feature head adds z_a and gamma(d). Points and directions are divided by ``downscale`` before the
pi-scaled encoding (2 for objects, whose canonical box is [-1, 1]^3, so inputs lie in about
[-0.55, 0.55]; 12 for the background, which fills the whole depth range).

Two layouts: *padded* (points (B, P, 3), codes (B, Z)) and *packed* (points (S, 3) with
``index`` (S,) naming the batch element of each point), which the generator uses to evaluate an
object only at the samples inside its box.

:class:`NeuralRenderer` is GIRAFFE's 2D neural renderer pi_theta (sec. 3.3): volume-rendered
feature map -> RGB image.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render import giraffe_encoding
from ..render._checks import ShapeError, check_tensor


def encoding_blocks(x: torch.Tensor, n_freqs: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """GIRAFFE's encoding of x (..., D) in the block layout (sin block, cos block): (..., 2 L D)
    = [sin(2^k pi x) for k, then cos(2^k pi x) for k], k = 0..L-1 (each D wide). The values of
    :func:`aware3d.render.giraffe_encoding` (same float32 operations: the angles 2^k pi x_d come
    from one matmul in which each output has a single non-zero product, rounded once as the
    broadcast multiply), in the order :func:`encoding_block_order` gives; two contiguous halves
    instead of the reference's interleaved (k, sin / cos, d) layout, whose strided stack costs as
    much as the sines on a CPU. ``dtype`` (e.g. bfloat16 under autocast): written in that dtype
    (the same rounding as casting the float32 encoding, one pass fewer)."""
    D = x.shape[-1]
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi   # as the reference
    sel = torch.zeros(D, n_freqs, D, dtype=x.dtype, device=x.device)
    idx = torch.arange(D, device=x.device)
    sel[idx, :, idx] = freqs
    with torch.autocast(x.device.type, enabled=False):   # the angles in x's precision
        ang = x.reshape(-1, D) @ sel.reshape(D, n_freqs * D)                          # (P, L D)
    out = torch.empty(ang.shape[0], 2 * n_freqs * D, dtype=dtype or x.dtype, device=x.device)
    out[:, :n_freqs * D] = torch.sin(ang)
    out[:, n_freqs * D:] = torch.cos(ang)
    return out.reshape(*x.shape[:-1], 2 * n_freqs * D)


def encoding_block_order(dim: int, n_freqs: int) -> torch.Tensor:
    """Indices of :func:`encoding_blocks`' columns in the reference layout: reference[..., order]
    = blocks (so a layer's weight W of the reference acts on the blocks as W[:, order])."""
    return torch.arange(2 * n_freqs * dim).reshape(n_freqs, 2, dim).permute(1, 0, 2).reshape(-1)


class FeatureField(nn.Module):
    """h(gamma(x), gamma(d), z_s, z_a) -> (sigma, feature).

    Defaults are GIRAFFE's object field: 8 x 128 ReLU layers with the skip at block 4, PE with 10
    (points) and 4 (directions) frequencies, M_f = 128. The background field of the paper is
    ``FeatureField(hidden=64, n_blocks=4, skips=(), z_dim=128, downscale=12)``.
    """

    def __init__(self, hidden: int = 128, n_blocks: int = 8, skips=(4,), z_shape_dim: int = 256,
                 z_app_dim: int | None = None, feature_dim: int = 128, n_freq_pos: int = 10,
                 n_freq_dir: int = 4, downscale: float = 2.0, use_viewdirs: bool = True):
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks: expected >= 1, got {n_blocks}")
        z_app_dim = z_shape_dim if z_app_dim is None else z_app_dim
        self.hidden, self.n_blocks, self.feature_dim = hidden, n_blocks, feature_dim
        self.z_shape_dim, self.z_app_dim = z_shape_dim, z_app_dim
        self.n_freq_pos, self.n_freq_dir = n_freq_pos, n_freq_dir
        self.downscale, self.use_viewdirs = float(downscale), use_viewdirs
        pe_dim, pe_dir_dim = 6 * n_freq_pos, 6 * n_freq_dir
        # A skip after trunk block k (1-based, the official indexing); never after the last one.
        self.skips = tuple(k for k in skips if 1 <= k < n_blocks - 1)

        self.fc_in = nn.Linear(pe_dim, hidden)
        self.fc_z = nn.Linear(z_shape_dim, hidden)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_blocks - 1))
        self.fc_z_skips = nn.ModuleList(nn.Linear(z_shape_dim, hidden) for _ in self.skips)
        self.fc_p_skips = nn.ModuleList(nn.Linear(pe_dim, hidden) for _ in self.skips)
        self.sigma_out = nn.Linear(hidden, 1)
        self.feat_view = nn.Linear(hidden, hidden)
        self.fc_z_view = nn.Linear(z_app_dim, hidden)
        self.fc_view = nn.Linear(pe_dir_dim, hidden)
        self.feat_out = nn.Linear(hidden, feature_dim)
        # fast path (default): encodings in the block layout (encoding_blocks) and the layers that
        # read them with their weight columns in that order; False: the reference layout
        self.fast_encoding = True
        self.register_buffer("_order_pos", encoding_block_order(3, n_freq_pos), persistent=False)
        self.register_buffer("_order_dir", encoding_block_order(3, n_freq_dir), persistent=False)

    def encode(self, x: torch.Tensor, n_freqs: int) -> torch.Tensor:
        """gamma(x / downscale), GIRAFFE's pi-scaled form (no raw input), in the reference layout."""
        return giraffe_encoding(x / self.downscale, n_freqs)

    def _encode_for(self, x: torch.Tensor, n_freqs: int):
        """(encoding, column order or None) for the layers that read it: the block layout on the
        fast path (points that need no gradient), else the reference."""
        if self.fast_encoding and not x.requires_grad and x.dim() >= 1:
            order = self._order_pos if n_freqs == self.n_freq_pos else self._order_dir
            if order.numel() == 2 * n_freqs * x.shape[-1]:
                cast = torch.get_autocast_dtype(x.device.type) if (
                    x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)) else None
                return encoding_blocks(x / self.downscale, n_freqs, cast), order
        return self.encode(x, n_freqs), None

    @staticmethod
    def _linear_on(layer: nn.Linear, enc: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
        """layer(reference encoding), given the encoding in the layout ``order`` names."""
        if order is None:
            return layer(enc)
        return F.linear(enc, layer.weight.index_select(1, order), layer.bias)

    def forward(self, points: torch.Tensor, dirs: torch.Tensor | None, z_shape: torch.Tensor,
                z_app: torch.Tensor, index: torch.Tensor | None = None,
                dir_index: torch.Tensor | None = None, return_hidden: bool = False):
        """Evaluate the field.

        Padded: points (B, *S, 3), z_shape (B, Zs), z_app (B, Za), dirs broadcastable to points
        (e.g. one per ray: points (B, R, N, 3), dirs (B, R, 1, 3)) or None ->
        ``(sigma (B, *S), feature (B, *S, M_f))``.
        Packed: points (P, 3), ``index`` (P,) long in [0, B) naming each point's batch element,
        dirs (P, 3), or (D, 3) with ``dir_index`` (P,) naming each point's direction (one per ray)
        -> ``(sigma (P,), feature (P, M_f))``.
        ``sigma`` is the raw density (the renderer clamps it at zero). The view branch runs once
        per direction given, not once per point. With ``return_hidden`` the last hidden layer h
        (..., hidden) comes back instead of the feature: feature = ``self.feat_out(h)`` is affine
        in h, so a renderer may composite h and apply ``feat_out`` once per ray (exact).
        """
        check_tensor("points", points, (3,), floating=True)
        check_tensor("z_shape", z_shape, (self.z_shape_dim,), min_dims=2, floating=True)
        check_tensor("z_app", z_app, (self.z_app_dim,), min_dims=2, floating=True)
        if index is None:
            if points.dim() < 3 or points.shape[0] != z_shape.shape[0]:
                raise ShapeError(f"points: expected shape ({z_shape.shape[0]}, ..., 3) (batch of z_shape), "
                                 f"got {tuple(points.shape)}")
            view = (points.shape[0],) + (1,) * (points.dim() - 2)

            def per_point(v):  # (B, H) -> (B, 1, ..., 1, H)
                return v.reshape(*view, v.shape[-1])
            if dirs is not None:
                try:
                    torch.broadcast_shapes(dirs.shape, points.shape)
                except RuntimeError:
                    raise ShapeError(f"dirs: expected a shape broadcastable to points {tuple(points.shape)}, "
                                     f"got {tuple(dirs.shape)}") from None
        else:
            if points.dim() != 2 or index.shape != points.shape[:1]:
                raise ShapeError(f"index: expected shape ({points.shape[0]},) for packed points "
                                 f"{tuple(points.shape)}, got {tuple(index.shape)}")

            def per_point(v):  # (B, H) -> (P, H)
                return v.index_select(0, index)
            if dirs is not None:
                check_tensor("dirs", dirs, (3,), floating=True)
                want = points.shape[0] if dir_index is None else None
                if dirs.dim() != 2 or (want is not None and dirs.shape[0] != want):
                    raise ShapeError(f"dirs: expected shape ({want or 'D'}, 3) for packed points, "
                                     f"got {tuple(dirs.shape)}")
                if dir_index is not None and dir_index.shape != points.shape[:1]:
                    raise ShapeError(f"dir_index: expected shape ({points.shape[0]},), got {tuple(dir_index.shape)}")

        net = self._trunk(points, z_shape, per_point)
        sigma = self.sigma_out(net).squeeze(-1)

        # in-place adds / ReLUs on fresh layer outputs: linear layers save their inputs, not their
        # outputs, so this is autograd-safe and spares a large allocation per layer
        net = self.feat_view(net).add_(per_point(self.fc_z_view(z_app)))
        if self.use_viewdirs and dirs is not None:
            d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            v = self._linear_on(self.fc_view, *self._encode_for(d, self.n_freq_dir))
            if dir_index is not None:
                v = v.index_select(0, dir_index)
            net = net.add_(v).relu_()
        return (sigma, net) if return_hidden else (sigma, self.feat_out(net))

    def density(self, points: torch.Tensor, z_shape: torch.Tensor, index: torch.Tensor | None = None):
        """Density only (mesh extraction): the feature head is skipped. Layouts as :meth:`forward`."""
        if index is None:
            view = (points.shape[0],) + (1,) * (points.dim() - 2)
            per_point = lambda v: v.reshape(*view, v.shape[-1])  # noqa: E731
        else:
            per_point = lambda v: v.index_select(0, index)  # noqa: E731
        return self.sigma_out(self._trunk(points, z_shape, per_point)).squeeze(-1)

    def _trunk(self, points, z_shape, per_point):
        """Density trunk: z_s enters the first layer and again with gamma(x) at each skip."""
        p, order = self._encode_for(points, self.n_freq_pos)
        net = self._linear_on(self.fc_in, p, order).add_(per_point(self.fc_z(z_shape))).relu_()
        skip = 0
        for k, layer in enumerate(self.blocks, start=1):
            net = layer(net).relu_()
            if k in self.skips:
                # not in place: ReLU's backward needs its output unchanged
                net = (self._linear_on(self.fc_p_skips[skip], p, order)
                       + per_point(self.fc_z_skips[skip](z_shape))).add_(net)
                skip += 1
        return net

    def flops_per_point(self) -> int:
        """Multiply-adds x 2 of one point's evaluation (the per-batch z layers excluded)."""
        h, pe, ped = self.hidden, 6 * self.n_freq_pos, 6 * self.n_freq_dir
        macs = pe * h + (self.n_blocks - 1) * h * h + len(self.skips) * pe * h + h
        macs += h * h + (ped * h if self.use_viewdirs else 0) + h * self.feature_dim
        return 2 * macs


def object_field(**kw) -> FeatureField:
    """GIRAFFE's object field defaults (8 x 128, skip at 4, points / 2)."""
    cfg = dict(hidden=128, n_blocks=8, skips=(4,), z_shape_dim=256, feature_dim=128, downscale=2.0)
    cfg.update(kw)
    return FeatureField(**cfg)


def background_field(**kw) -> FeatureField:
    """GIRAFFE's background field defaults (4 x 64, no skip, z 128, points / 12)."""
    cfg = dict(hidden=64, n_blocks=4, skips=(), z_shape_dim=128, feature_dim=128, downscale=12.0)
    cfg.update(kw)
    return FeatureField(**cfg)


# --------------------------------------------------------------------------------------------------
# 2D neural renderer


class Blur(nn.Module):
    """[1 2 1]^T [1 2 1] / 16 low-pass filter, reflect padding (the official Blur layer)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).reshape(1, 1, 3, 3), persistent=False)

    def forward(self, x):
        c = x.shape[1]
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.expand(c, 1, 3, 3).to(x.dtype),
                        groups=c)


class NeuralRenderer(nn.Module):
    """pi_theta: feature map (B, M_f, h, w) -> RGB (B, 3, H, W) in [0, 1].

    Each block: nearest-neighbour x2 upsampling of the features, 3x3 conv, leaky ReLU; an RGB skip
    at every scale (3x3 conv to RGB added to the bilinearly upsampled and blurred RGB so far);
    final sigmoid. Channels halve every block down to ``min_feat``."""

    def __init__(self, n_feat: int = 128, input_dim: int = 128, out_dim: int = 3, min_feat: int = 32,
                 img_size: int = 64, feature_res: int = 16):
        super().__init__()
        n_blocks = int(round(math.log2(img_size / feature_res)))
        if feature_res * 2 ** n_blocks != img_size or n_blocks < 1:
            raise ValueError(f"img_size: expected feature_res ({feature_res}) times a power of 2 "
                             f"(>= 2), got {img_size}")
        self.n_blocks = n_blocks
        self.conv_in = nn.Identity() if n_feat == input_dim else nn.Conv2d(input_dim, n_feat, 1)
        ch = [n_feat] + [max(n_feat // 2 ** (i + 1), min_feat) for i in range(n_blocks)]
        self.conv_layers = nn.ModuleList(nn.Conv2d(ch[i], ch[i + 1], 3, 1, 1) for i in range(n_blocks))
        self.conv_rgb = nn.ModuleList([nn.Conv2d(input_dim, out_dim, 3, 1, 1)] +
                                      [nn.Conv2d(ch[i + 1], out_dim, 3, 1, 1) for i in range(n_blocks)])
        self.blur = Blur()

    def upsample_rgb(self, x):
        return self.blur(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        net = self.conv_in(x)
        rgb = self.upsample_rgb(self.conv_rgb[0](x))
        for i, layer in enumerate(self.conv_layers):
            net = F.leaky_relu(layer(F.interpolate(net, scale_factor=2, mode="nearest")), 0.2)
            rgb = rgb + self.conv_rgb[i + 1](net)
            if i < self.n_blocks - 1:
                rgb = self.upsample_rgb(rgb)
        return torch.sigmoid(rgb)
