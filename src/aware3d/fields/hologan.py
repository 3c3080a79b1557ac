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
           "official_rotation_matrix", "rotate_volume_official", "SameConvTranspose2d", "SameConvTranspose3d",
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

    ``head="offset"``: gamma = 1 + A w, beta = B w (the layer starts as plain instance norm; runs
    saved before the key). ``head="relu"``: (gamma, beta) = relu(A w + b) split in halves (official
    ``z_mapping_function``: one linear layer of z per AdaIN layer, ReLU, weights N(0, 0.02), bias 0;
    it starts at gamma ~ 0)."""

    def __init__(self, channels: int, w_dim: int, head: str = "offset"):
        super().__init__()
        if head not in ("offset", "relu"):
            raise ValueError(f"adain_head: expected 'offset' or 'relu', got {head!r}")
        self.head = head
        self.affine = nn.Linear(w_dim, 2 * channels)
        nn.init.normal_(self.affine.weight, std=0.02)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)
        if self.head == "relu":
            g, b = F.relu(s).chunk(2, dim=-1)
            return adain(x, g, b)
        g, b = s.chunk(2, dim=-1)
        return adain(x, 1.0 + g, b)


def _crop_same(y: torch.Tensor, x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Crop the unpadded transposed conv y of x to TensorFlow's 'SAME' output (s * n per spatial
    axis): the forward conv pads k - s in all, (k - s) // 2 before."""
    a = max(k - s, 0) // 2
    return y[(slice(None), slice(None)) + tuple(slice(a, a + s * n) for n in x.shape[2:])]


class SameConvTranspose3d(nn.ConvTranspose3d):
    """TensorFlow's ``conv3d_transpose(..., padding='SAME')`` with output size stride * input
    (official ``deconv3d``): an unpadded transposed conv cropped to stride * n per axis. For kernel
    3, stride 2 it keeps voxels 0 .. 2n - 1 of 2n + 1 (PyTorch's padding=1, output_padding=1 would
    keep 1 .. 2n, one voxel shifted)."""

    def __init__(self, cin: int, cout: int, k: int, s: int):
        super().__init__(cin, cout, k, s, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _crop_same(super().forward(x), x, self.kernel_size[0], self.stride[0])


class SameConvTranspose2d(nn.ConvTranspose2d):
    """TensorFlow's ``conv2d_transpose(..., padding='SAME')`` (official ``deconv2d``), as
    :class:`SameConvTranspose3d` in 2D (kernel 4, stride 1: crop 1 .. n of n + 3)."""

    def __init__(self, cin: int, cout: int, k: int, s: int):
        super().__init__(cin, cout, k, s, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _crop_same(super().forward(x), x, self.kernel_size[0], self.stride[0])


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


def official_rotation_matrix(yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotation of the official ``tf_rotation_around_grid_centroid`` in its voxel (x, y, z)
    coordinates: Rot_Z(elevation) @ Rot_Y(azimuth - pi / 2), with azimuth = 270 + yaw and
    elevation = pitch (degrees; the official CelebA prior, azimuth 220 .. 320, elevation
    -20 .. 20, is yaw, pitch = +-50, +-20)."""
    az = torch.deg2rad(torch.as_tensor(yaw_deg, dtype=torch.float32) + 270.0) - 0.5 * math.pi
    el = torch.deg2rad(torch.as_tensor(pitch_deg, dtype=torch.float32))
    az, el = torch.broadcast_tensors(az, el)
    ca, sa, ce, se = torch.cos(az), torch.sin(az), torch.cos(el), torch.sin(el)
    o, z = torch.ones_like(az), torch.zeros_like(az)
    r_y = torch.stack([ca, z, -sa, z, o, z, sa, z, ca], -1).reshape(*az.shape, 3, 3)
    r_z = torch.stack([ce, se, z, -se, ce, z, z, z, o], -1).reshape(*az.shape, 3, 3)
    return r_z @ r_y


def rotate_volume_official(volume: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """The official ``tf_3D_transform`` + ``transform_voxel_to_match_image`` on a cube
    (B, C, N, N, N) whose axes (2, 3, 4) are the official voxel axes (1, 2, 3), i.e. its (z, y, x).

    Output voxel p samples the input at R^-1 (p - N / 2) + N / 2 (voxel index units; the official
    centre is N / 2, half a voxel off the cube's centre), trilinearly, and is 0 where any coordinate
    is outside [0, N - 1) (``tf_interpolate`` clamps both corner indices there and their weights
    cancel). The result is in image layout (B, C, depth, rows, cols) = (x, reversed y, z), ready for
    :func:`project_volume`."""
    if volume.dim() != 5 or len(set(volume.shape[2:])) != 1:
        raise ValueError(f"volume: expected a cube (B, C, N, N, N), got shape {tuple(volume.shape)}")
    B, n = volume.shape[0], volume.shape[2]
    R = rotation.to(volume).expand(B, 3, 3)
    r = torch.arange(n, dtype=volume.dtype, device=volume.device)
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
    p = torch.stack([xx, yy, zz], -1).reshape(-1, 3) - 0.5 * n              # (N^3, 3) (x, y, z)
    src = torch.linalg.inv(R).unsqueeze(1) @ p.unsqueeze(-1)                # (B, N^3, 3, 1)
    src = src.squeeze(-1) + 0.5 * n
    inside = ((src >= 0) & (src < n - 1)).all(-1)                           # (B, N^3)
    grid = (2.0 * src / (n - 1) - 1.0).reshape(B, n, n, n, 3)
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out * inside.reshape(B, 1, n, n, n).to(out.dtype)
    # official transpose [0, 2, 1, 3, 4] then [:, ::-1]: rows = reversed y, cols = z, depth = x
    return out.permute(0, 1, 4, 3, 2).flip(3)


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
                 ch2d: tuple = (256, 64), resolution: int = 64, adain_head: str = "offset",
                 act: str = "lrelu", up3d_kernel: int = 4, rgb_layer: str = "conv3",
                 rotation: str = "centred"):
        super().__init__()
        self.z_dim, self.resolution = z_dim, resolution
        self.vol_res = 4 * 2 ** (len(ch3d) - 1)
        if self.vol_res * 2 ** len(ch2d) != resolution:
            raise ValueError(f"resolution: 4 * 2^{len(ch3d) - 1} * 2^{len(ch2d)} = "
                             f"{self.vol_res * 2 ** len(ch2d)} (from ch3d, ch2d), got {resolution}")
        if act not in ("lrelu", "relu"):
            raise ValueError(f"g_act: expected 'lrelu' or 'relu', got {act!r}")
        if up3d_kernel not in (3, 4):
            raise ValueError(f"up3d_kernel: expected 3 (official) or 4, got {up3d_kernel}")
        if rgb_layer not in ("conv3", "deconv4"):
            raise ValueError(f"rgb_layer: expected 'conv3' or 'deconv4', got {rgb_layer!r}")
        if rotation not in ("centred", "official"):
            raise ValueError(f"rotation: expected 'centred' or 'official', got {rotation!r}")
        self.act, self.rotation = act, rotation
        self.mlp = StyleMLP(z_dim, w_dim, mlp_layers)
        wd = self.mlp.out_dim
        self.const = nn.Parameter(torch.randn(1, ch3d[0], 4, 4, 4) * 0.02)
        self.adain3d = nn.ModuleList([AdaIN(ch3d[0], wd, adain_head)])
        self.up3d = nn.ModuleList()
        for a, b in zip(ch3d[:-1], ch3d[1:]):
            self.up3d.append(nn.ConvTranspose3d(a, b, 4, 2, 1) if up3d_kernel == 4
                             else SameConvTranspose3d(a, b, 3, 2))
            self.adain3d.append(AdaIN(b, wd, adain_head))
        post, c = [], ch3d[-1]
        for b in ch3d_post:
            post += [nn.Conv3d(c, b, 3, 1, 1), self._act_module()]
            c = b
        self.post3d = nn.Sequential(*post)
        self.projection = nn.Sequential(nn.Conv2d(c * self.vol_res, proj_ch, 1), self._act_module())
        self.up2d = nn.ModuleList()
        self.adain2d = nn.ModuleList()
        c = proj_ch
        for b in ch2d:
            self.up2d.append(nn.ConvTranspose2d(c, b, 4, 2, 1))
            self.adain2d.append(AdaIN(b, wd, adain_head))
            c = b
        # official g_h6: a 4x4 stride-1 transposed conv with TF 'SAME' padding
        self.to_rgb = nn.Conv2d(c, 3, 3, 1, 1) if rgb_layer == "conv3" else SameConvTranspose2d(c, 3, 4, 1)

    def _act_module(self) -> nn.Module:
        return nn.LeakyReLU(0.2) if self.act == "lrelu" else nn.ReLU()

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2) if self.act == "lrelu" else F.relu(x)

    def styles(self, z_shape: torch.Tensor, z_app: torch.Tensor | None = None):
        """(w_3d, w_2d): the style vectors of the 3D and the 2D AdaIN layers."""
        w3 = self.mlp(z_shape)
        w2 = w3 if z_app is None else self.mlp(z_app)
        return w3, w2

    def volume(self, w3: torch.Tensor) -> torch.Tensor:
        """Canonical (unrotated) 3D features (B, C, V, V, V) from the 3D style w3 (B, W)."""
        h = self.const.expand(w3.shape[0], -1, -1, -1, -1)
        h = self._act(self.adain3d[0](h, w3))
        for up, ada in zip(self.up3d, self.adain3d[1:]):
            h = self._act(ada(up(h), w3))
        return h

    def render(self, volume: torch.Tensor, rotation: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        """Rotate, 3D convs, project, 2D convs with AdaIN -> image (B, 3, S, S) in [-1, 1].

        ``rotation`` (B, 3, 3): :func:`rotation_matrix` for ``rotation="centred"``,
        :func:`official_rotation_matrix` for ``"official"`` (see :meth:`rotation_for`)."""
        rot = rotate_volume if self.rotation == "centred" else rotate_volume_official
        h = self.post3d(rot(volume, rotation))
        h = self.projection(project_volume(h))
        for up, ada in zip(self.up2d, self.adain2d):
            h = self._act(ada(up(h), w2))
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
        return self.render(self.volume(w3), self.rotation_for(yaw, pitch).to(w3), w2)

    def rotation_for(self, yaw_deg: torch.Tensor, pitch_deg: torch.Tensor) -> torch.Tensor:
        """The rotation :meth:`render` takes for a pose (degrees)."""
        if self.rotation == "official":
            return official_rotation_matrix(yaw_deg, pitch_deg)
        return rotation_matrix(yaw_deg, pitch_deg)


# --------------------------------------------------------------------------------------------------
# Discriminator


class HoloDiscriminator(nn.Module):
    """Official ``discriminator_IN`` / ``discriminator_IN_style_res128``: conv(3 -> ch) + LeakyReLU,
    then stride-2 convs (spectral norm) with instance norm (affine) and LeakyReLU down to 4x4; a
    linear logit; a latent head (linear 128, LeakyReLU, linear z_dim, tanh: z is drawn in [-1, 1]);
    per normalised layer a linear style classifier on the (mean, variance) of its
    pre-normalisation feature maps.

    ``kernel``: 4 (padding 1; runs saved before the key) or 5 (official ``conv2d`` k_h = k_w = 5
    with TF 'SAME' padding: 1 before, 2 after). ``style``: ``"concat"`` one Linear(2C, 1) on
    concat(mean, var) (runs saved before the key); ``"rows"`` one Linear(C, 1) scoring the mean and
    the variance as separate rows, (2B, 1) logits (official ``discriminator_IN_style_res128``,
    ``tf.concat([mean, var], 0)``); ``"none"`` no style classifiers (official ``discriminator_IN``,
    the released CelebA config).

    ``forward(x)`` is the plain GAN logit (B, 1) (what the engine's R1 phase needs);
    ``forward_all(x)`` returns ``{"logit", "style_logits": [(B or 2B, 1)] * L, "z_pred": (B, Z)}``."""

    def __init__(self, resolution: int = 64, ch: int = 64, max_ch: int = 512, z_dim: int = 128,
                 kernel: int = 4, style: str = "concat"):
        super().__init__()
        n = int(round(math.log2(resolution))) - 2
        if 2 ** (n + 2) != resolution or n < 2:
            raise ValueError(f"resolution: expected a power of 2 >= 16, got {resolution}")
        if kernel not in (4, 5):
            raise ValueError(f"d_kernel: expected 4 or 5 (official), got {kernel}")
        if style not in ("concat", "rows", "none"):
            raise ValueError(f"d_style: expected 'concat', 'rows' or 'none', got {style!r}")
        self.style = style
        pad = 1 if kernel == 4 else 0
        self.pad = None if kernel == 4 else (1, 2, 1, 2)   # TF 'SAME', stride 2, kernel 5
        chans = [min(ch * 2 ** i, max_ch) for i in range(n)]
        self.conv0 = nn.Conv2d(3, chans[0], kernel, 2, pad)
        self.convs = nn.ModuleList(nn.utils.spectral_norm(nn.Conv2d(a, b, kernel, 2, pad))
                                   for a, b in zip(chans[:-1], chans[1:]))
        self.norms = nn.ModuleList(nn.InstanceNorm2d(b, affine=True) for b in chans[1:])
        if style != "none":
            self.style_heads = nn.ModuleList(nn.Linear(2 * b if style == "concat" else b, 1) for b in chans[1:])
        feat = chans[-1] * 16
        self.logit = nn.Linear(feat, 1)
        self.latent = nn.Sequential(nn.Linear(feat, 128), nn.LeakyReLU(0.2), nn.Linear(128, z_dim), nn.Tanh())

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.pad is None else F.pad(x, self.pad)

    def forward_all(self, x: torch.Tensor) -> dict:
        h = F.leaky_relu(self.conv0(self._pad(x)), 0.2)
        styles = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = conv(self._pad(h))
            if self.style != "none":
                mean = h.mean((2, 3))
                var = h.var((2, 3), unbiased=False)
                stat = torch.cat([mean, var], 1 if self.style == "concat" else 0)
                styles.append(self.style_heads[i](stat))
            h = F.leaky_relu(norm(h), 0.2)
        flat = h.flatten(1)
        return {"logit": self.logit(flat), "style_logits": styles, "z_pred": self.latent(flat)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)["logit"]
