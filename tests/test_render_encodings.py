"""Positional encoding, spherical harmonics, FiLM-SIREN and CAM."""
import math

import pytest
import torch

from aware3d.render import ShapeError
from aware3d.render.encodings import (cam_modulate, film_siren, giraffe_encoding, nerf_encoding,
                                      positional_encoding, siren_init_, spherical_harmonics)


def test_positional_encoding_hand_values():
    x = torch.tensor([[0.25]])
    enc = positional_encoding(x, 2, scale=math.pi)
    # sin(pi/4), cos(pi/4), sin(pi/2), cos(pi/2)
    s = math.sqrt(0.5)
    torch.testing.assert_close(enc, torch.tensor([[s, s, 1.0, 0.0]]), atol=1e-6, rtol=0)
    assert nerf_encoding(torch.zeros(5, 3), 10).shape == (5, 63)  # NeRF: 3 + 3*2*10
    assert nerf_encoding(torch.zeros(5, 3), 4).shape == (5, 27)
    assert giraffe_encoding(torch.zeros(5, 3), 10).shape == (5, 60)
    torch.testing.assert_close(nerf_encoding(x, 1), torch.tensor([[0.25, math.sin(0.25), math.cos(0.25)]]))


def test_spherical_harmonics_orthonormal():
    # Monte-Carlo over the sphere: E[Y_i Y_j] * 4 pi = delta_ij for an orthonormal real SH basis.
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    Y = spherical_harmonics(d, 4)
    gram = (Y.T @ Y) / d.shape[0] * 4 * math.pi
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def test_film_siren_hand_value_and_init_bounds():
    x = torch.tensor([[[1.0, 2.0]]])
    W = torch.tensor([[0.5, -0.25]])
    b = torch.tensor([0.1])
    out = film_siren(x, W, b, torch.tensor([[2.0]]), torch.tensor([[0.3]]))
    assert out.item() == pytest.approx(math.sin(2.0 * (0.5 - 0.5 + 0.1) + 0.3))
    w = torch.empty(256, 256)
    siren_init_(w, first=False, w0=30.0)
    bound = math.sqrt(6 / 256) / 30
    assert w.abs().max().item() <= bound
    # uniform variance bound^2 / 3
    assert w.var().item() == pytest.approx(bound ** 2 / 3, rel=0.05)
    siren_init_(w, first=True)
    assert w.abs().max().item() <= 1 / 256


def test_cam_identity_at_initialisation():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(100, 8, generator=g)
    coords = torch.rand(100, 3, generator=g) * 2 - 1
    ones, zeros = torch.ones(8, 4, 4, 4), torch.zeros(8, 4, 4, 4)
    torch.testing.assert_close(cam_modulate(f, coords, ones, zeros, normalize=False), f)
    normed = cam_modulate(f, coords, ones, zeros, normalize=True)
    torch.testing.assert_close(normed.mean(-1), torch.zeros(100), atol=1e-5, rtol=0)


def test_cam_reads_grid_linearly():
    # A 2-point 1-D grid with scales (1, 3): at coordinate 0 (the middle) the scale is 2.
    f = torch.ones(3, 1)
    scale = torch.tensor([[1.0, 3.0]])
    shift = torch.tensor([[0.0, 1.0]])
    out = cam_modulate(f, torch.tensor([[-1.0], [0.0], [1.0]]), scale, shift, normalize=False)
    torch.testing.assert_close(out, torch.tensor([[1.0], [2.5], [4.0]]))
    # 2-D grid: grid (C, R_y, R_x) read with (x, y)
    grid = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    out = cam_modulate(torch.ones(2, 1), torch.tensor([[1.0, -1.0], [-1.0, 1.0]]), grid,
                       torch.zeros_like(grid), normalize=False)
    torch.testing.assert_close(out, torch.tensor([[1.0], [2.0]]))


def test_gradcheck_encodings_float64():
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: positional_encoding(v, 3, scale=math.pi), (x,))
    d = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=-1).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: spherical_harmonics(v, 4), (d,))
    f = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    c = (torch.rand(5, 2, dtype=torch.float64) * 1.8 - 0.9)
    sg = torch.rand(4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: cam_modulate(a, c, s, torch.zeros_like(s)), (f, sg))


def test_bad_shapes():
    with pytest.raises(ShapeError, match="scale_grid"):
        cam_modulate(torch.ones(3, 4), torch.zeros(3, 2), torch.ones(5, 2, 2), torch.zeros(4, 2, 2))
    with pytest.raises(ShapeError, match="x: expected shape"):
        film_siren(torch.ones(1, 2, 3), torch.ones(4, 2), torch.ones(4), torch.ones(1, 4), torch.ones(1, 4))
    with pytest.raises(ShapeError, match="d: expected shape"):
        spherical_harmonics(torch.ones(4, 2))
