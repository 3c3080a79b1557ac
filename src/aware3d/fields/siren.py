"""FiLM-conditioned SIREN radiance field and its mapping network (pi-GAN, Chan et al. 2021, sec. 3).

    (gamma_i, beta_i)_i = MappingNetwork(z)                       frequencies and phase shifts
    h_i = sin(gamma_i (W_i h_{i-1} + b_i) + beta_i)                i = 1..L  (h_0 = box_scale x)
    sigma = w_s . h_L + b_s                                        raw density (renderer clamps)
    c = sigmoid(W_c sin(gamma_c (W_d [d, h_L] + b_d) + beta_c))    colour

The FiLM-SIREN layer itself is the pure function :func:`aware3d.render.encodings.film_siren`; this
module owns the parameters. Initialisation follows the paper / official code:

- SIREN layers: W ~ U(-sqrt(6/n)/w0, sqrt(6/n)/w0), n = fan-in (:func:`siren_init_`); the official
  code uses w0 = 25 for the hidden, density and colour layers (``init_w0``);
- first layer: W ~ U(-1/n, 1/n) (n = 3 for points);
- mapping network: 3 hidden layers (LeakyReLU 0.2), Kaiming-normal weights for LeakyReLU(0.2)
  (fan-in), the output layer's weights scaled by 0.25; its output ``r`` becomes frequencies
  ``gamma = freq_scale * r + freq_shift`` = 15 r + 30, so frequencies start near 30.

CIPS-3D uses the same pieces: import :class:`MappingNetwork` and :class:`FilmSirenField` (or
:func:`siren_layers_init_`) from here.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render._checks import ShapeError, check_tensor
from ..render.encodings import film_siren, siren_init_

__all__ = ["MappingNetwork", "FilmSirenField", "siren_layers_init_", "kaiming_leaky_init_"]


@torch.no_grad()
def kaiming_leaky_init_(linear: nn.Linear, slope: float = 0.2) -> nn.Linear:
    """Kaiming-normal weights for a LeakyReLU(slope) network, fan-in mode: std = gain / sqrt(n)
    with gain = sqrt(2 / (1 + slope^2)). The bias keeps PyTorch's default."""
    nn.init.kaiming_normal_(linear.weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
    return linear


@torch.no_grad()
def siren_layers_init_(layers, first: nn.Linear | None = None, w0: float = 25.0) -> None:
    """SIREN init of ``layers`` (iterable of nn.Linear) with frequency ``w0``; ``first`` (if given)
    gets the first-layer rule U(-1/n, 1/n)."""
    for layer in layers:
        siren_init_(layer.weight, w0=w0)
    if first is not None:
        siren_init_(first.weight, first=True)


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> (frequencies (B, n_out), phases (B, n_out)).

    ``n_layers`` hidden layers of width ``hidden`` with LeakyReLU(0.2) (pi-GAN: 3 x 256), one
    output layer producing 2 n_out values: the first half are frequencies, mapped to
    ``freq_scale * r + freq_shift``, the second half phase shifts. ``last_scale`` multiplies the
    output layer's initial weights (0.25 in the official code)."""

    def __init__(self, z_dim: int = 256, n_out: int = 9 * 256, hidden: int = 256, n_layers: int = 3,
                 freq_scale: float = 15.0, freq_shift: float = 30.0, last_scale: float = 0.25,
                 slope: float = 0.2):
        super().__init__()
        self.z_dim, self.n_out, self.slope = z_dim, n_out, slope
        self.freq_scale, self.freq_shift = float(freq_scale), float(freq_shift)
        dims = [z_dim] + [hidden] * n_layers
        self.hidden_layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(n_layers))
        self.out = nn.Linear(dims[-1], 2 * n_out)
        for layer in list(self.hidden_layers) + [self.out]:
            kaiming_leaky_init_(layer, slope)
        with torch.no_grad():
            self.out.weight.mul_(last_scale)

    def forward(self, z: torch.Tensor):
        check_tensor("z", z, (self.z_dim,), floating=True)
        h = z
        for layer in self.hidden_layers:
            h = F.leaky_relu(layer(h), self.slope)
        r = self.out(h)
        return r[..., :self.n_out] * self.freq_scale + self.freq_shift, r[..., self.n_out:]


class FilmSirenField(nn.Module):
    """pi-GAN's radiance field: ``n_layers`` FiLM-SIREN layers of width ``hidden`` on the points,
    a linear density head and a FiLM-SIREN colour layer on [d, h] with a sigmoid RGB head.

    Defaults are the paper's (8 x 256, mapping 3 x 256 from a 256-d z). ``box_scale`` multiplies
    points before the first layer (the official ``UniformBoxWarp(0.24)`` is ``box_scale=2/0.24``:
    faces fit a box of side 0.24 at camera distance 1).

    Call with a latent ``z`` (B, z_dim) or with precomputed ``freqs``/``phases`` (B, L + 1, hidden)
    from :meth:`modulation` (what interpolation and truncation manipulate).
    """

    def __init__(self, z_dim: int = 256, hidden: int = 256, n_layers: int = 8, map_hidden: int = 256,
                 map_layers: int = 3, in_dim: int = 3, box_scale: float = 1.0, init_w0: float = 25.0,
                 freq_scale: float = 15.0, freq_shift: float = 30.0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers: expected >= 1, got {n_layers}")
        self.z_dim, self.hidden, self.n_layers, self.in_dim = z_dim, hidden, n_layers, in_dim
        self.box_scale, self.init_w0 = float(box_scale), float(init_w0)
        self.layers = nn.ModuleList([nn.Linear(in_dim, hidden)] +
                                    [nn.Linear(hidden, hidden) for _ in range(n_layers - 1)])
        self.sigma_out = nn.Linear(hidden, 1)
        self.color_film = nn.Linear(hidden + 3, hidden)
        self.color_out = nn.Linear(hidden, 3)
        self.mapping = MappingNetwork(z_dim, (n_layers + 1) * hidden, map_hidden, map_layers,
                                      freq_scale, freq_shift)
        siren_layers_init_(list(self.layers[1:]) + [self.sigma_out, self.color_film, self.color_out],
                           first=self.layers[0], w0=init_w0)

    def modulation(self, z: torch.Tensor):
        """(freqs, phases), each (B, n_layers + 1, hidden): one row per FiLM layer (colour last)."""
        f, p = self.mapping(z)
        shape = (*z.shape[:-1], self.n_layers + 1, self.hidden)
        return f.reshape(shape), p.reshape(shape)

    def _mod(self, z, freqs, phases):
        if freqs is None or phases is None:
            if z is None:
                raise ValueError("FilmSirenField: pass z or both freqs and phases")
            return self.modulation(z)
        for name, v in (("freqs", freqs), ("phases", phases)):
            check_tensor(name, v, (self.n_layers + 1, self.hidden), floating=True)
        return freqs, phases

    def trunk(self, points: torch.Tensor, freqs: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
        check_tensor("points", points, (self.in_dim,), min_dims=3, floating=True)
        if points.shape[0] != freqs.shape[0]:
            raise ShapeError(f"points: expected shape ({freqs.shape[0]}, P, {self.in_dim}) (batch of "
                             f"the latent), got {tuple(points.shape)}")
        h = points * self.box_scale
        for i, layer in enumerate(self.layers):
            h = film_siren(h, layer.weight, layer.bias, freqs[:, i], phases[:, i])
        return h

    def forward(self, points: torch.Tensor, dirs: torch.Tensor, z: torch.Tensor | None = None, *,
                freqs: torch.Tensor | None = None, phases: torch.Tensor | None = None):
        """points, dirs (B, P, 3) -> ``(sigma (B, P) raw, rgb (B, P, 3) in [0, 1])``."""
        freqs, phases = self._mod(z, freqs, phases)
        if dirs.shape != points.shape:
            raise ShapeError(f"dirs: expected shape {tuple(points.shape)} (that of points), got {tuple(dirs.shape)}")
        h = self.trunk(points, freqs, phases)
        sigma = self.sigma_out(h).squeeze(-1)
        c = film_siren(torch.cat([dirs, h], -1), self.color_film.weight, self.color_film.bias,
                       freqs[:, -1], phases[:, -1])
        return sigma, torch.sigmoid(self.color_out(c))

    def density(self, points: torch.Tensor, z: torch.Tensor | None = None, *,
                freqs: torch.Tensor | None = None, phases: torch.Tensor | None = None) -> torch.Tensor:
        """Raw density only (mesh extraction): (B, P)."""
        freqs, phases = self._mod(z, freqs, phases)
        return self.sigma_out(self.trunk(points, freqs, phases)).squeeze(-1)

    @staticmethod
    def expected_init_bounds(fan_in: int, w0: float = 25.0, first: bool = False) -> float:
        """The half-width of the uniform init of a layer with ``fan_in`` inputs (tests, docs)."""
        return 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0
