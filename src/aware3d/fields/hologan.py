"""HoloGAN networks (Nguyen-Phuoc et al., ICCV 2019; PAPERS.md card 7).

Data flow of the generator, each piece a function or module of its own:

    z --StyleMLP--> w --affine heads--> (gamma_l, beta_l) per AdaIN layer
    learnt constant (512, 4, 4, 4) --AdaIN--> 3D transposed convs with AdaIN --> (128, 16, 16, 16)
    rotate_volume(volume, R(yaw, pitch))        rigid rotation, trilinear resampling
    3D convs                                    (after the rotation: no AdaIN)
    projection unit: (C, D, H, W) -> (C*D, H, W), 1x1 conv + LeakyReLU (learns occlusion)
    2D transposed convs with AdaIN --> conv --> tanh image

Volume layout: (B, C, D, H, W). The camera looks along D (depth); H is the image's rows (y down),
W its columns (x right), as ``F.grid_sample``'s (z, y, x) = (D, H, W). Yaw turns about the vertical
(H) axis, pitch about the horizontal (W) axis.

The discriminator (:class:`HoloDiscriminator`) is the official ``discriminator_IN_style``: stride-2
convs with spectral norm and instance norm, plus (i) one linear "style" classifier per normalised
layer on the (mean, variance) of its feature maps (multi-scale style discriminators, paper eq. 4)
and (ii) a latent head predicting z (identity regulariser).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["adain", "AdaIN", "StyleMLP", "rotation_matrix", "angles_from_c2w", "rotate_volume", "project_volume",
           "HoloGenerator", "HoloDiscriminator"]


# --------------------------------------------------------------------------------------------------
# AdaIN


def adain(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Adaptive instance normalisation: gamma * (x - mean) / sqrt(var + eps) + beta.

    x (B, C, *spatial) (2D or 3D feature maps); gamma, beta (B, C). Mean and (biased) variance are
    taken per sample and channel over the spatial dims (official ``AdaIn``, eps 1e-8)."""
    if gamma.shape != x.shape[:2] or beta.shape != x.shape[:2]:
        raise ValueError(f"gamma, beta: expected shape {tuple(x.shape[:2])}, got "
                         f"{tuple(gamma.shape)} and {tuple(beta.shape)}")
    dims = tuple(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, keepdim=True, unbiased=False)
    view = (*x.shape[:2],) + (1,) * len(dims)
    return gamma.reshape(view) * (x - mean) * torch.rsqrt(var + eps) + beta.reshape(view)


class AdaIN(nn.Module):
    """AdaIN whose (gamma, beta) come from the style vector w by an affine head.

    gamma = 1 + A w, beta = B w (heads start at zero: the layer starts as plain instance norm;
    the official code uses relu(linear(z)), which starts at gamma ~ 0)."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.affine = nn.Linear(w_dim, 2 * channels)
        nn.init.normal_(self.affine.weight, std=0.02)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        g, b = self.affine(w).chunk(2, dim=-1)
        return adain(x, 1.0 + g, b)


class StyleMLP(nn.Module):
    """z (B, Z) -> w (B, W): ``n_layers`` linear + LeakyReLU 0.2 ("style from z by an MLP")."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 2):
        super().__init__()
        layers, d = [], z_dim
        for _ in range(n_layers):
            layers += [nn.Linear(d, w_dim), nn.LeakyReLU(0.2)]
            d = w_dim
        self.net = nn.Sequential(*layers) if layers else nn.Identity()
        self.out_dim = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# --------------------------------------------------------------------------------------------------
# Rigid transform of the feature volume and projection


def rotation_matrix(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """R = R_pitch @ R_yaw (..., 3, 3) in grid_sample's (x, y, z) = (W, H, D) coordinates.

    R_yaw turns about the vertical y axis (x -> -z for +90), R_pitch about the horizontal x axis
    (y -> z for +90)."""
    yaw = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=torch.float32))
    pitch = torch.deg2rad(torch.as_tensor(pitch_deg, dtype=torch.float32))
    yaw, pitch = torch.broadcast_tensors(yaw, pitch)
    cy, sy, cp, sp = torch.cos(yaw), torch.sin(yaw), torch.cos(pitch), torch.sin(pitch)
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    r_yaw = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], -1).reshape(*yaw.shape, 3, 3)
    r_pitch = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], -1).reshape(*yaw.shape, 3, 3)
    return r_pitch @ r_yaw


def angles_from_c2w(c2w: torch.Tensor):
    """(yaw, pitch) (...,) degrees of cameras looking at the origin: the azimuth and elevation of
    their position (inverse of
    :func:`aware3d.methods.hologan.camera_from_angles`)."""
    p = c2w[..., :3, 3]
    yaw = torch.rad2deg(torch.atan2(p[..., 1], p[..., 0]))
    pitch = torch.rad2deg(torch.asin((p[..., 2] / p.norm(dim=-1).clamp_min(1e-12)).clamp(-1, 1)))
    return yaw, pitch


def rotate_volume(volume: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate a feature volume (B, C, D, H, W) about its centre by ``rotation`` (B, 3, 3).

    Output voxel p samples the input at R^T p (R is orthonormal), trilinearly, zeros outside
    (``align_corners=False``: voxel centres are symmetric about 0, so a quarter turn of a cube is
    an exact permutation of voxels)."""
    if volume.dim() != 5:
        raise ValueError(f"volume: expected (B, C, D, H, W), got shape {tuple(volume.shape)}")
    B = volume.shape[0]
    R = rotation.to(volume).expand(B, 3, 3)
    theta = torch.cat([R.transpose(1, 2), torch.zeros(B, 3, 1, dtype=R.dtype, device=R.device)], 2)
    grid = F.affine_grid(theta, list(volume.shape), align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def project_volume(volume: torch.Tensor) -> torch.Tensor:
    """Fold depth into channels: (B, C, D, H, W) -> (B, C * D, H, W) (the projection unit's
    reshape; the 1x1 conv after it then decides per pixel which depths are visible)."""
    B, C, D, H, W = volume.shape
    return volume.reshape(B, C * D, H, W)


# --------------------------------------------------------------------------------------------------
# Generator


class HoloGenerator(nn.Module):
    """HoloGAN generator: (z, yaw, pitch) -> image (B, 3, S, S) in [-1, 1].

    ``ch3d`` are the channels of the constant and of each 3D up-block (constant 4^3, then x2 per
    block: (512, 256, 128) gives 16^3 x 128); ``ch3d_post`` the 3D convs after the rotation;
    ``proj_ch`` the projection unit's output; ``ch2d`` the 2D up-blocks with AdaIN (x2 each).
    Training feeds one z to every AdaIN layer; :meth:`styles` also takes two codes, z_shape for
    the 3D layers and z_app for the 2D ones (the paper's shape / appearance split)."""

    def __init__(self, z_dim: int = 128, w_dim: int = 256, mlp_layers: int = 2,
                 ch3d: tuple = (512, 256, 128), ch3d_post: tuple = (64, 64), proj_ch: int = 512,
                 ch2d: tuple = (256, 64), resolution: int = 64):
        super().__init__()
        self.z_dim, self.resolution = z_dim, resolution
        self.vol_res = 4 * 2 ** (len(ch3d) - 1)
        if self.vol_res * 2 ** len(ch2d) != resolution:
            raise ValueError(f"resolution: 4 * 2^{len(ch3d) - 1} * 2^{len(ch2d)} = "
                             f"{self.vol_res * 2 ** len(ch2d)} (from ch3d, ch2d), got {resolution}")
        self.mlp = StyleMLP(z_dim, w_dim, mlp_layers)
        wd = self.mlp.out_dim
        self.const = nn.Parameter(torch.randn(1, ch3d[0], 4, 4, 4) * 0.02)
        self.adain3d = nn.ModuleList([AdaIN(ch3d[0], wd)])
        self.up3d = nn.ModuleList()
        for a, b in zip(ch3d[:-1], ch3d[1:]):
            self.up3d.append(nn.ConvTranspose3d(a, b, 4, 2, 1))
            self.adain3d.append(AdaIN(b, wd))
        post, c = [], ch3d[-1]
        for b in ch3d_post:
            post += [nn.Conv3d(c, b, 3, 1, 1), nn.LeakyReLU(0.2)]
            c = b
        self.post3d = nn.Sequential(*post)
        self.projection = nn.Sequential(nn.Conv2d(c * self.vol_res, proj_ch, 1), nn.LeakyReLU(0.2))
        self.up2d = nn.ModuleList()
        self.adain2d = nn.ModuleList()
        c = proj_ch
        for b in ch2d:
            self.up2d.append(nn.ConvTranspose2d(c, b, 4, 2, 1))
            self.adain2d.append(AdaIN(b, wd))
            c = b
        self.to_rgb = nn.Conv2d(c, 3, 3, 1, 1)

    def styles(self, z_shape: torch.Tensor, z_app: torch.Tensor | None = None):
        """(w_3d, w_2d): the style vectors of the 3D and the 2D AdaIN layers."""
        w3 = self.mlp(z_shape)
        w2 = w3 if z_app is None else self.mlp(z_app)
        return w3, w2

    def volume(self, w3: torch.Tensor) -> torch.Tensor:
        """Canonical (unrotated) 3D features (B, C, V, V, V) from the 3D style w3 (B, W)."""
        h = self.const.expand(w3.shape[0], -1, -1, -1, -1)
        h = F.leaky_relu(self.adain3d[0](h, w3), 0.2)
        for up, ada in zip(self.up3d, self.adain3d[1:]):
            h = F.leaky_relu(ada(up(h), w3), 0.2)
        return h

    def render(self, volume: torch.Tensor, rotation: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        """Rotate, 3D convs, project, 2D convs with AdaIN -> image (B, 3, S, S) in [-1, 1]."""
        h = self.post3d(rotate_volume(volume, rotation))
        h = self.projection(project_volume(h))
        for up, ada in zip(self.up2d, self.adain2d):
            h = F.leaky_relu(ada(up(h), w2), 0.2)
        return torch.tanh(self.to_rgb(h))

    def forward(self, inputs: dict) -> torch.Tensor:
        """inputs: ``z_shape`` and ``z_app`` (B, Z) (or one ``z``), and the pose: ``c2w`` (B, 4, 4)
        of a camera looking at the origin (its azimuth / elevation become yaw / pitch) or ``yaw``
        and ``pitch`` (B,) in degrees."""
        if "z_shape" in inputs:
            w3, w2 = self.styles(inputs["z_shape"], inputs["z_app"])
        else:
            w3, w2 = self.styles(inputs["z"])
        if "c2w" in inputs:
            yaw, pitch = angles_from_c2w(inputs["c2w"].float())
        else:
            yaw, pitch = inputs["yaw"], inputs["pitch"]
        R = rotation_matrix(yaw, pitch).to(w3)
        return self.render(self.volume(w3), R, w2)


# --------------------------------------------------------------------------------------------------
# Discriminator


class HoloDiscriminator(nn.Module):
    """Official ``discriminator_IN_style``: conv(3 -> ch) + LeakyReLU, then stride-2 4x4 convs
    (spectral norm) with instance norm (affine) and LeakyReLU down to 4x4; a linear logit; a latent
    head (linear 128, LeakyReLU, linear z_dim, tanh: z is drawn in [-1, 1]); per normalised layer a
    linear style classifier on concat(mean, variance) of its pre-normalisation feature maps.

    ``forward(x)`` is the plain GAN logit (B, 1) (what the engine's R1 phase needs);
    ``forward_all(x)`` returns ``{"logit", "style_logits": [(B, 1)] * L, "z_pred": (B, Z)}``."""

    def __init__(self, resolution: int = 64, ch: int = 64, max_ch: int = 512, z_dim: int = 128):
        super().__init__()
        n = int(round(math.log2(resolution))) - 2
        if 2 ** (n + 2) != resolution or n < 2:
            raise ValueError(f"resolution: expected a power of 2 >= 16, got {resolution}")
        chans = [min(ch * 2 ** i, max_ch) for i in range(n)]
        self.conv0 = nn.Conv2d(3, chans[0], 4, 2, 1)
        self.convs = nn.ModuleList(nn.utils.spectral_norm(nn.Conv2d(a, b, 4, 2, 1))
                                   for a, b in zip(chans[:-1], chans[1:]))
        self.norms = nn.ModuleList(nn.InstanceNorm2d(b, affine=True) for b in chans[1:])
        self.style_heads = nn.ModuleList(nn.Linear(2 * b, 1) for b in chans[1:])
        feat = chans[-1] * 16
        self.logit = nn.Linear(feat, 1)
        self.latent = nn.Sequential(nn.Linear(feat, 128), nn.LeakyReLU(0.2), nn.Linear(128, z_dim), nn.Tanh())

    def forward_all(self, x: torch.Tensor) -> dict:
        h = F.leaky_relu(self.conv0(x), 0.2)
        styles = []
        for conv, norm, head in zip(self.convs, self.norms, self.style_heads):
            h = conv(h)
            mean = h.mean((2, 3))
            var = h.var((2, 3), unbiased=False)
            styles.append(head(torch.cat([mean, var], 1)))
            h = F.leaky_relu(norm(h), 0.2)
        flat = h.flatten(1)
        return {"logit": self.logit(flat), "style_logits": styles, "z_pred": self.latent(flat)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)["logit"]
