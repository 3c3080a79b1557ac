"""benchmarks/bench_cam_1d.py: CAM's 1D experiment (target, networks, CAM at init, a short fit)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cam_1d.py"
_spec = importlib.util.spec_from_file_location("bench_cam_1d", _path)
b = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(b)


def test_target_has_the_ten_frequencies():
    x, y = b.target_function()
    assert x.shape == y.shape == (200, 1)
    f, s = b.error_spectrum(y)
    top = sorted(float(v) for v in f[torch.topk(s, 10).indices])
    assert [round(v / 5) * 5 for v in top] == list(range(5, 55, 5))


def test_grid_1d_by_hand():
    g = torch.tensor([[0.0], [10.0], [20.0]])  # points at x = 0, 0.5, 1
    x = torch.tensor([[0.0], [0.25], [0.9], [1.0]])
    assert torch.allclose(b.grid_1d(g, x).flatten(), torch.tensor([0.0, 5.0, 18.0, 20.0]))


@pytest.mark.parametrize("pe", [False, True])
def test_cam_at_init_leaves_the_network_unchanged(pe):
    torch.manual_seed(0)
    plain = b.Net1D("pe" if pe else "noenc")
    cam = b.Net1D("cam_pe" if pe else "cam")
    cam.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(50, 1)
    assert torch.allclose(plain(x), cam(x), atol=1e-6)
    # 2 * 64 grid values per hidden layer, 4 hidden layers
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(cam) - n(plain) == 4 * 2 * 64


def test_cam_fits_high_frequencies_better_in_a_short_run():
    x, y = b.target_function()
    mse = {k: b.train(k, x, y, steps=300)[2] for k in ("pe", "cam_pe")}
    assert mse["cam_pe"] < 0.5 * mse["pe"]
