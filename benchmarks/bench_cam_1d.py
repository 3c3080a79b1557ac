"""CAM's 1D experiment (PAPERS.md card 9): an MLP fitting a 1D function with and without
coordinate-aware modulation, and the spectral-bias effect in one plot.

Setting (the one of CAM's 1D notebook):

- target: 200 samples of x in [0, 1], y = sum_{k=1..10} sin(2 pi (5k) x + phi_k), phases
  phi_k ~ U(0, 2 pi) drawn from torch's generator seeded with 31210 (frequencies 5, 10, ..., 50
  cycles over the interval);
- four networks, 4 Linear layers of width 64 then a Linear head (in -> 64 -> 64 -> 64 -> 64 -> 1):
  ``noenc`` (x itself), ``pe`` (sinusoidal encoding [x, sin(2^k x), sin(2^k x + pi/2)], k < 16:
  33 numbers), ``cam`` (x, and after every hidden Linear a per-channel scale / shift read by linear
  interpolation from a 64-point grid over x, initialised to 1 / 0), ``cam_pe`` (both);
- as in that notebook the hidden layers have **no activation function** (``--act relu`` adds ReLU
  after each hidden layer, CAM before it) and CAM has no feature normalisation;
- full-batch MSE, Adam lr 1e-3, 1500 steps.

Writes benchmarks/results/cam_1d.png (top: the fits over the target; bottom: the amplitude spectra
of the errors y_hat - y, in cycles per unit, with the target's frequencies marked) and
benchmarks/results/cam_1d.json (final MSE and parameters per network).

Usage: ``python benchmarks/bench_cam_1d.py [--act none|relu] [--steps 1500]``
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("noenc", "pe", "cam", "cam_pe")


def target_function(n: int = 200, seed: int = 31210) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, 1), y (n, 1)) of the notebook's sum of 10 sines (frequencies 5..50)."""
    torch.manual_seed(seed)
    x = torch.linspace(0, 1, steps=n)
    y = torch.zeros_like(x)
    f, pi = 5, 3.14159
    for _ in range(10):
        phase = torch.rand(1) * 2 * pi
        y += torch.sin(2 * pi * f * x + phase)
        f += 5
    return x[:, None], y[:, None]


def sinusoidal_encoding(x: torch.Tensor, max_deg: int = 16) -> torch.Tensor:
    """[x, sin(2^k x) for k < max_deg, sin(2^k x + pi / 2) for k < max_deg] (no pi factor)."""
    xb = x * (2.0 ** torch.arange(max_deg, dtype=x.dtype))
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], -1))], -1)


def grid_1d(grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``grid`` (R, C) at x in [0, 1] (point j at x = j / (R - 1)): (N, C)."""
    R = grid.shape[0]
    p = x.reshape(-1).clamp(0, 1) * (R - 1)
    i0 = p.floor().long().clamp(max=R - 2)
    w = (p - i0.to(p.dtype))[:, None]
    return (1 - w) * grid[i0] + w * grid[i0 + 1]


class Net1D(nn.Module):
    def __init__(self, kind: str, hidden: int = 64, n_hidden_layers: int = 3, grid: int = 64,
                 act: str = "none"):
        super().__init__()
        if kind not in MODELS:
            raise ValueError(f"kind: expected one of {MODELS}, got {kind!r}")
        self.kind, self.act = kind, act
        d_in = 33 if kind in ("pe", "cam_pe") else 1
        self.net = nn.ModuleList([nn.Linear(d_in, hidden)] +
                                 [nn.Linear(hidden, hidden) for _ in range(n_hidden_layers)])
        self.last = nn.Linear(hidden, 1)
        self.cam = kind.startswith("cam")
        if self.cam:
            # per layer: scale (initialised to 1) and shift (0) over grid points; one value per
            # grid point shared by all channels, as the notebook's (1, 2, 64, 1) grids
            self.scale = nn.ParameterList([nn.Parameter(torch.ones(grid, 1)) for _ in self.net])
            self.shift = nn.ParameterList([nn.Parameter(torch.zeros(grid, 1)) for _ in self.net])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = sinusoidal_encoding(x) if self.kind in ("pe", "cam_pe") else x
        for i, layer in enumerate(self.net):
            h = layer(h)
            if self.cam:
                h = grid_1d(self.scale[i], x) * h + grid_1d(self.shift[i], x)
            if self.act == "relu":
                h = torch.relu(h)
        return self.last(h)


def train(kind: str, x, y, steps: int = 1500, lr: float = 1e-3, act: str = "none", seed: int = 31210):
    torch.manual_seed(seed)
    net = Net1D(kind, act=act)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        yhat = net(x)
    return net, yhat, float((yhat - y).square().mean())


def error_spectrum(err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies in cycles per unit interval, |rfft| / n) of a signal sampled on [0, 1]."""
    e = err.reshape(-1).double()
    n = e.numel()
    spec = torch.fft.rfft(e).abs() / n
    freqs = torch.fft.rfftfreq(n, d=1.0 / (n - 1))
    return freqs, spec


def run(steps: int = 1500, act: str = "none") -> dict:
    x, y = target_function()
    out = {"setting": {"steps": steps, "lr": 1e-3, "act": act, "samples": 200, "hidden": 64, "layers": 4,
                       "grid": 64, "seed": 31210}, "models": {}}
    fits = {}
    for kind in MODELS:
        t0 = time.time()
        net, yhat, mse = train(kind, x, y, steps, act=act)
        fits[kind] = yhat
        out["models"][kind] = {"mse": mse, "params": sum(p.numel() for p in net.parameters()),
                               "seconds": time.time() - t0}
        print(f"{kind:7s} MSE {mse:.4f} ({out['models'][kind]['params']} parameters)", flush=True)
    suffix = "" if act == "none" else f"_{act}"
    out["plot"] = str(plot(x, y, fits, out, RESULTS / f"cam_1d{suffix}.png").relative_to(ROOT))
    (RESULTS / f"cam_1d{suffix}.json").write_text(json.dumps(out, indent=1))
    return out


def plot(x, y, fits: dict, info: dict, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colours = {"noenc": "tab:gray", "pe": "tab:blue", "cam": "tab:orange", "cam_pe": "tab:red"}
    labels = {"noenc": "MLP (x)", "pe": "MLP (PE)", "cam": "MLP (x) + CAM", "cam_pe": "MLP (PE) + CAM"}
    fig = Figure(figsize=(14, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(fits), sharey="row")
    xs, ys = x.reshape(-1).numpy(), y.reshape(-1).numpy()
    for j, (kind, yhat) in enumerate(fits.items()):
        m = info["models"][kind]
        ax = axes[0, j]
        ax.plot(xs, ys, color="goldenrod", linestyle="--", linewidth=1.2, label="target")
        ax.plot(xs, yhat.reshape(-1).numpy(), color=colours[kind], linewidth=1.5, label="fit")
        ax.set_title(f"{labels[kind]}\nMSE {m['mse']:.4f}, {m['params']:,} params")
        ax.set_ylim(-6, 6)
        ax.set_xlabel("x")
        ax.grid(True, alpha=0.3)
        f, s = error_spectrum(yhat - y)
        ft, st = error_spectrum(y)
        ax = axes[1, j]
        ax.plot(ft.numpy(), st.numpy(), color="goldenrod", linewidth=1, alpha=0.6, label="target spectrum")
        ax.plot(f.numpy(), s.numpy(), color=colours[kind], linewidth=1.5, label="error spectrum")
        for k in range(1, 11):
            ax.axvline(5 * k, color="black", alpha=0.12, linewidth=0.8)
        ax.set_xlabel("frequency (cycles over [0, 1])")
        ax.set_xlim(0, 70)
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("y")
    axes[1, 0].set_ylabel("|FFT| / n")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[1, 0].legend(loc="upper right", fontsize=8)
    act = info["setting"]["act"]
    fig.suptitle(f"CAM 1D: sum of sines at 5..50 cycles, {info['setting']['steps']} Adam steps, "
                 f"hidden activation: {act}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--act", choices=("none", "relu"), default="none")
    a = ap.parse_args()
    torch.set_num_threads(1)
    run(a.steps, a.act)


if __name__ == "__main__":
    main()
