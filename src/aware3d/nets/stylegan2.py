"""StyleGAN2 building blocks (Karras et al. 2020), shared by the style-based 3D-aware GANs
(StyleNeRF, VolumeGAN). Pure PyTorch (no custom CUDA ops), equalised learning rate everywhere.

FIR filtering (upfirdn2d: upsample by zero insertion, pad, filter, downsample)
    setup_filter(f)                  1D taps -> normalised 2D filter (outer product)
    upfirdn2d(x, f, up, down, padding, gain)
    filter2d / upsample2d / downsample2d   same-size blur, 2x up (gain up^2), 2x down
    Blur(kernel=(1, 3, 3, 1))        filter2d as a module
Layers
    FullyConnectedLayer(in, out, activation, lr_mul, bias_init)
    Conv2dLayer(in, out, kernel, activation, up, down)          (FIR-filtered resampling)
    modulated_conv2d(x, weight, styles, demodulate, up, padding) StyleGAN2 eq. 1-3
    ModulatedConv2d(in, out, kernel, w_dim, demodulate=True, up=1)
                                     the synthesis layer: affine(w) -> style (bias 1), modulated
                                     conv, optional noise, bias, leaky ReLU x sqrt 2
    ToRGB(in, out, w_dim, kernel=1)  modulated conv without demodulation + bias
    MappingNetwork(z_dim, w_dim, layers, lr_mul=0.01)   z -> w, tracks w_avg (truncation)
Discriminator
    MinibatchStd(group_size, num_channels)
    DiscriminatorBlock / DiscriminatorEpilogue
    StyleGAN2Discriminator(resolution, channel_base, channel_max, architecture, mbstd_group)
                                     'resnet' or 'skip'; accepts images at any power-of-2 size
                                     <= resolution (progressive training) with a fade-in ``alpha``

Activations: ``"lrelu"`` (slope 0.2, gain sqrt 2), ``"relu"`` (gain sqrt 2), ``"linear"`` (gain 1),
as StyleGAN2's ``bias_act``; ``clamp`` (conv_clamp) bounds outputs after the gain.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["setup_filter", "upfirdn2d", "filter2d", "upsample2d", "downsample2d", "Blur",
           "bias_act", "normalize_2nd_moment", "FullyConnectedLayer", "Conv2dLayer",
           "modulated_conv2d", "ModulatedConv2d", "ToRGB", "MappingNetwork", "MinibatchStd",
           "DiscriminatorBlock", "DiscriminatorEpilogue", "StyleGAN2Discriminator", "channels_for"]

_GAINS = {"linear": 1.0, "lrelu": math.sqrt(2.0), "relu": math.sqrt(2.0)}

# --------------------------------------------------------------------------------------------------
# FIR filtering


def setup_filter(f: Sequence[float] | torch.Tensor = (1, 3, 3, 1), normalize: bool = True) -> torch.Tensor:
    """1D taps -> the 2D filter ``outer(f, f)`` (a 2D tensor is kept), divided by its sum."""
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 1:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding=0,
              gain: float = 1.0) -> torch.Tensor:
    """StyleGAN2's upfirdn2d (reference form): insert ``up - 1`` zeros between pixels, pad by
    ``padding`` (int or (x0, x1, y0, y1); negative crops), convolve with the 2D FIR ``f`` x
    ``gain`` (true convolution: the filter is flipped), keep every ``down``-th pixel."""
    B, C, H, W = x.shape
    px0, px1, py0, py1 = (padding,) * 4 if isinstance(padding, int) else padding
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(B, C, H * up, W * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    w = (f * gain).to(x).flip([0, 1])[None, None].expand(C, 1, *f.shape)
    x = F.conv2d(x, w, groups=C)
    return x[:, :, ::down, ::down] if down > 1 else x


def filter2d(x: torch.Tensor, f: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Blur with ``f`` keeping the size (StyleGAN2's filter2d padding)."""
    fh, fw = f.shape
    return upfirdn2d(x, f, padding=(fw // 2, (fw - 1) // 2, fh // 2, (fh - 1) // 2), gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """x ``up`` times larger: zero insertion + FIR ``f`` with gain up^2 (StyleGAN2's upsample2d)."""
    fh, fw = f.shape
    return upfirdn2d(x, f, up=up, padding=((fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2),
                     gain=up * up)


def downsample2d(x: torch.Tensor, f: torch.Tensor, down: int = 2) -> torch.Tensor:
    """x ``down`` times smaller: FIR ``f`` then every ``down``-th pixel (StyleGAN2's downsample2d)."""
    fh, fw = f.shape
    return upfirdn2d(x, f, down=down,
                     padding=((fw - down + 1) // 2, (fw - down) // 2, (fh - down + 1) // 2, (fh - down) // 2))


class Blur(nn.Module):
    """``filter2d`` with the normalised outer product of ``kernel`` (default StyleGAN2's [1, 3, 3, 1])."""

    def __init__(self, kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.register_buffer("f", setup_filter(kernel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return filter2d(x, self.f)


# --------------------------------------------------------------------------------------------------
# Layers


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """(x + b) -> activation -> x gain (default the activation's gain) -> clamp to +-clamp."""
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
    elif act == "relu":
        x = F.relu(x)
    elif act != "linear":
        raise ValueError(f"activation: expected linear, lrelu or relu, got {act!r}")
    g = _GAINS[act] if gain is None else gain
    if g != 1:
        x = x * g
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """y = act(x (W lr_mul / sqrt(in))^T + b lr_mul); W ~ N(0, 1) / lr_mul (equalised lr)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, w, b)
        return bias_act(F.linear(x, w), b, self.activation, dim=x.ndim - 1)


class Conv2dLayer(nn.Module):
    """Equalised-lr conv (W / sqrt(in k^2)), 'same' padding, optional 2x up / down with the FIR
    ``resample_filter`` (down: blur then stride 2; up: zero insertion + blur then conv), bias,
    activation with its gain (x ``gain`` at call), clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        f, p = self.resample_filter, self.padding
        if self.up > 1:
            x = upsample2d(x, f, self.up)
        if self.down > 1:
            fh, fw = f.shape
            d = self.down
            x = upfirdn2d(x, f, padding=(p + (fw - d + 1) // 2, p + (fw - d) // 2,
                                         p + (fh - d + 1) // 2, p + (fh - d) // 2))
            x = F.conv2d(x, w, stride=d)
        else:
            x = F.conv2d(x, w, padding=p)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, _GAINS[self.activation] * gain, clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2 eq. 1-3 as one grouped convolution: w'_{b,o,i,k} = s_{b,i} w_{o,i,k}; with
    ``demodulate`` w'' = w' / sqrt(sum_{i,k} w'^2 + eps) (the L2 norm over in x kh x kw per output
    channel). x (B, I, H, W), weight (O, I, k, k), styles (B, I). ``up`` = 2: x is first upsampled by
    zero insertion + the FIR ``resample_filter`` (gain 4). Returns (B, O, H up, W up)."""
    B = x.shape[0]
    w = weight.unsqueeze(0) * styles.reshape(B, 1, -1, 1, 1)          # (B, O, I, k, k)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + eps).rsqrt()
    if up > 1:
        x = upsample2d(x, resample_filter if resample_filter is not None else setup_filter().to(x), up)
    x = x.reshape(1, -1, *x.shape[2:])
    out = F.conv2d(x, w.reshape(-1, *w.shape[2:]).to(x.dtype), padding=padding, groups=B)
    return out.reshape(B, -1, *out.shape[2:])


class ModulatedConv2d(nn.Module):
    """The StyleGAN2 synthesis layer: style s = A(w) (equalised FC, bias 1), modulated (and
    demodulated) k x k conv of W ~ N(0, 1) (optionally after 2x FIR upsampling), optional
    per-pixel noise x a learnt strength (``use_noise``), bias, activation x its gain, clamp.
    ``forward(x (B, in, H, W), w (B, w_dim))`` -> (B, out, H up, W up)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, up: int = 1, activation: str = "lrelu", use_noise: bool = False,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), conv_clamp: float | None = None):
        super().__init__()
        self.up, self.demodulate, self.activation, self.conv_clamp = up, demodulate, activation, conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter), persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.use_noise = use_noise
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None,
                gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, self.demodulate, self.up, self.padding, self.resample_filter)
        if self.use_noise:
            if noise is None:
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, _GAINS[self.activation] * gain, clamp)


class ToRGB(nn.Module):
    """Modulated k x k conv without demodulation (style x 1 / sqrt(in k^2)) + bias: features -> RGB."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=self.padding)
        return bias_act(x, self.bias, "linear", 1.0, self.conv_clamp)


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): normalise z's second moment, ``layers`` equalised FC + leaky
    ReLU at learning-rate multiplier ``lr_mul`` (StyleGAN2: 8 layers, 0.01). In training the
    moving average ``w_avg`` (decay ``w_avg_beta``) is tracked for truncation: ``forward(z,
    truncation_psi=psi)`` returns w_avg + psi (w - w_avg)."""

    def __init__(self, z_dim: int, w_dim: int, layers: int = 8, lr_mul: float = 0.01,
                 w_avg_beta: float | None = 0.995, hidden: int | None = None):
        super().__init__()
        self.z_dim, self.w_dim, self.w_avg_beta = z_dim, w_dim, w_avg_beta
        dims = [z_dim] + [hidden or w_dim] * (layers - 1) + [w_dim]
        self.layers = nn.ModuleList(FullyConnectedLayer(dims[i], dims[i + 1], activation="lrelu", lr_mul=lr_mul)
                                    for i in range(layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = True) -> torch.Tensor:
        x = normalize_2nd_moment(z.float())
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None and self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


# --------------------------------------------------------------------------------------------------
# Discriminator


def channels_for(res: int, channel_base: int = 32768, channel_max: int = 512) -> int:
    """StyleGAN2's channel count at resolution ``res``: min(channel_base / res, channel_max)."""
    return min(int(channel_base) // res, channel_max)


class MinibatchStd(nn.Module):
    """Appends the mean (over channels in groups and pixels) of the per-group std over batch groups
    of ``group_size`` (StyleGAN2's minibatch standard deviation layer)."""

    def __init__(self, group_size: int | None = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size is not None else N
        if N % G:
            G = math.gcd(N, G)
        Fc = self.num_channels
        y = x.reshape(G, -1, Fc, C // Fc, H, W)
        y = (y - y.mean(0)).square().mean(0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, Fc, 1, 1)
        y = y.repeat(G, 1, H, W)
        return torch.cat([x, y], 1)


class DiscriminatorBlock(nn.Module):
    """fromRGB (first block or 'skip'), 3x3 conv, 3x3 conv with 2x FIR downsampling; 'resnet' adds
    a 1x1 downsampling skip (both branches x sqrt 0.5); 'skip' also downsamples the image."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int = 3, architecture: str = "resnet", conv_clamp: float | None = None):
        super().__init__()
        if architecture not in ("resnet", "skip", "orig"):
            raise ValueError(f"architecture: expected resnet, skip or orig, got {architecture!r}")
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, architecture
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None):
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """At 4x4: (fromRGB for 'skip'), minibatch std, 3x3 conv, FC, FC to one logit."""

    def __init__(self, in_channels: int, resolution: int = 4, img_channels: int = 3, architecture: str = "resnet",
                 mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu")
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None) -> torch.Tensor:
        if self.architecture == "skip":
            x = x + self.fromrgb(img)
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.out(self.fc(self.conv(x).flatten(1)))


class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2's critic: one :class:`DiscriminatorBlock` per resolution from ``resolution`` down to
    8 (channels :func:`channels_for`), then the 4x4 epilogue -> logits (B, 1).

    Progressive training (StyleNeRF): an image smaller than ``resolution`` enters at its own
    block (through that block's fromRGB; needs 'skip' or the full size), the blocks above are
    unused. With ``alpha`` in (0, 1) (fading in the top level) the image is blended with its 2x
    downsampled copy entering one block lower: x = alpha x + (1 - alpha) fromRGB(down(img))."""

    def __init__(self, resolution: int, channel_base: int = 32768, channel_max: int = 512, img_channels: int = 3,
                 architecture: str = "resnet", mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 conv_clamp: float | None = None, channels: dict | None = None):
        super().__init__()
        log2 = int(round(math.log2(resolution)))
        if 2 ** log2 != resolution or resolution < 4:
            raise ValueError(f"resolution: expected a power of 2 >= 4, got {resolution}")
        self.resolution, self.architecture = resolution, architecture
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        ch = channels or {r: channels_for(r, channel_base, channel_max) for r in self.block_resolutions + [4]}
        self.channels = ch
        for res in self.block_resolutions:
            setattr(self, f"b{res}", DiscriminatorBlock(ch[res] if res < resolution else 0, ch[res], ch[res // 2],
                                                         res, img_channels, architecture, conv_clamp))
        self.b4 = DiscriminatorEpilogue(ch[4], 4, img_channels, architecture, mbstd_group_size,
                                        mbstd_num_channels, conv_clamp)

    def forward(self, img: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        res = img.shape[-1]
        if res not in self.block_resolutions or res > self.resolution:
            raise ValueError(f"image size: expected a power of 2 in [8, {self.resolution}], got {res}")
        if res < self.resolution and self.architecture != "skip":
            raise ValueError("images below the full resolution need architecture='skip'")
        blocks = [r for r in self.block_resolutions if r <= res]
        fade = alpha is not None and 0 < alpha < 1 and len(blocks) > 1
        img0 = F.avg_pool2d(img, 2) if fade else None
        # as the official progressive critic: below the full size the entry block's fromRGB starts
        # x, and the block adds its fromRGB(img) once more
        x = None if res == self.resolution else getattr(self, f"b{res}").fromrgb(img)
        for r in blocks:
            block = getattr(self, f"b{r}")
            if fade and r == res // 2:
                img = img * alpha + img0 * (1 - alpha)
                x = x * alpha + block.fromrgb(img0) * (1 - alpha)
            x, img = block(x, img)
        return self.b4(x, img)
