"""CAM's 1D experiment (aware3d.fit's signal part, `aware3d fit signal`, benchmarks/bench_cam_1d.py):
the target, the networks, CAM at init, a short fit, the command line and user sample files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from aware3d import fit as b
from aware3d.cli import main as cli_main


def test_target_has_the_ten_frequencies():
    x, y = b.signal_target()
    assert x.shape == y.shape == (200, 1)
    f, s = b.error_spectrum(y)
    top = sorted(float(v) for v in f[torch.topk(s, 10).indices])
    assert [round(v / 5) * 5 for v in top] == list(range(5, 55, 5))


def test_grid_1d_by_hand():
    g = torch.tensor([[0.0], [10.0], [20.0]])  # points at x = 0, 0.5, 1
    x = torch.tensor([[0.0], [0.25], [0.9], [1.0]])
    assert torch.allclose(b.grid_1d(g, x).flatten(), torch.tensor([0.0, 5.0, 18.0, 20.0]))


def test_encoding_by_hand():
    x = torch.tensor([[0.5]])
    e = b.sinusoidal_encoding_1d(x, 3)
    want = [0.5, math.sin(0.5), math.sin(1.0), math.sin(2.0), math.cos(0.5), math.cos(1.0), math.cos(2.0)]
    assert torch.allclose(e[0], torch.tensor(want), atol=1e-6)


@pytest.mark.parametrize("pe", [False, True])
@pytest.mark.parametrize("act", ["none", "relu"])
def test_cam_at_init_leaves_the_network_unchanged(pe, act):
    # the same seed builds the same Linear layers (CAM's grids draw nothing): the CAM arm starts as
    # the plain arm, as train_signal builds them
    torch.manual_seed(0)
    plain = b.Net1D("pe" if pe else "noenc", act=act)
    torch.manual_seed(0)
    cam = b.Net1D("cam_pe" if pe else "cam", act=act)
    x = torch.rand(50, 1)
    assert torch.allclose(plain(x), cam(x), atol=1e-6)
    # 2 * 64 grid values per hidden layer, 4 hidden layers
    assert b.count_parameters(cam) - b.count_parameters(plain) == 4 * 2 * 64


def test_cam_fits_high_frequencies_better_in_a_short_run():
    x, y = b.signal_target()
    mse = {k: b.train_signal(k, x, y, steps=300)[2] for k in ("pe", "cam_pe")}
    assert mse["cam_pe"] < 0.5 * mse["pe"]


def test_cli_fit_signal_few_steps(tmp_path, capsys):
    out = tmp_path / "o"
    rc = cli_main(["fit", "signal", "--steps", "5", "--out", str(out)])
    r = capsys.readouterr()
    assert rc == 0, r.err[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert list(res["models"]) == ["noenc", "pe", "cam", "cam_pe"]
    assert res["setting"]["samples"] == 200 and res["setting"]["steps"] == 5
    for k, m in res["models"].items():
        assert math.isfinite(m["mse"]) and m["curve"][-1] == [5, m["mse"]], k
    # the CAM arms start from the plain arms' network: equal loss before the first step
    assert res["models"]["cam"]["curve"][0] == res["models"]["noenc"]["curve"][0]
    assert res["models"]["cam_pe"]["curve"][0] == res["models"]["pe"]["curve"][0]
    assert res["models"]["cam"]["params"] - res["models"]["noenc"]["params"] == 512
    assert (out / "signal_fit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MLP (PE) + CAM" in r.out and "MSE" in r.out


def test_cli_fit_signal_from_user_files(tmp_path, capsys):
    xs = np.linspace(-2.0, 3.0, 40)
    ys = np.sin(3 * xs)
    (tmp_path / "s.csv").write_text("x,y\n" + "\n".join(f"{a},{c}" for a, c in zip(xs[::-1], ys[::-1])))
    np.save(tmp_path / "s.npy", ys.astype(np.float32))
    x, y, rng = b.load_signal(tmp_path / "s.csv")
    assert rng == [-2.0, 3.0] and float(x[0]) == 0.0 and float(x[-1]) == 1.0  # sorted by x, mapped to [0, 1]
    assert torch.allclose(y[:, 0], torch.from_numpy(ys).float())
    x2, y2, rng2 = b.load_signal(tmp_path / "s.npy")
    assert rng2 == [0.0, 1.0] and torch.allclose(x2, x) and torch.allclose(y2, y)
    rc = cli_main(["fit", "signal", str(tmp_path / "s.csv"), "--arms", "pe,cam_pe", "--steps", "3",
                   "--out", str(tmp_path / "o")])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(res["models"]) == ["pe", "cam_pe"] and res["setting"]["samples"] == 40
    (tmp_path / "bad.csv").write_text("1,2,3\n4,5,6\n")
    capsys.readouterr()
    assert cli_main(["fit", "signal", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o2")]) == 2
    assert "two columns" in capsys.readouterr().err
    assert cli_main(["fit", "signal", "--arms", "mlp", "--out", str(tmp_path / "o3")]) == 2
