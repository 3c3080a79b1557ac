"""CAM's 1D experiment (PAPERS.md card 9): an MLP fitting a 1D function with and without
coordinate-aware modulation, and the spectral-bias effect in one plot. The experiment itself is the
library's :func:`aware3d.fit.fit_signal` (also ``aware3d fit signal``); this script runs it at the
notebook's setting and writes the results where BENCHMARKS.md links them.

Setting (the one of CAM's 1D notebook):

- target: 200 samples of x in [0, 1], y = sum_{k=1..10} sin(2 pi (5k) x + phi_k), phases
  phi_k ~ U(0, 2 pi) drawn from torch's generator seeded with 31210 (frequencies 5, 10, ..., 50
  cycles over the interval);
- four networks, 4 Linear layers of width 64 then a Linear head (in -> 64 -> 64 -> 64 -> 64 -> 1):
  ``noenc`` (x itself), ``pe`` (sinusoidal encoding [x, sin(2^k x), sin(2^k x + pi/2)], k < 16:
  33 numbers), ``cam`` (x, and after every hidden Linear a scale / shift read by linear
  interpolation from a 64-point grid over x, initialised to 1 / 0), ``cam_pe`` (both);
- as in that notebook the hidden layers have **no activation function** (``--act relu`` adds ReLU
  after each hidden layer, CAM before it) and CAM has no feature normalisation;
- full-batch MSE, Adam lr 1e-3, 1500 steps.

Writes benchmarks/results/cam_1d.png (top: the fits over the target; bottom: the amplitude spectra
of the errors y_hat - y, in cycles per unit, with the target's frequencies marked) and
benchmarks/results/cam_1d.json (final MSE, parameters and CPU seconds per network).

Usage: ``python benchmarks/bench_cam_1d.py [--act none|relu] [--steps 1500]``
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aware3d.fit import fit_signal

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(steps: int = 1500, act: str = "none") -> dict:
    suffix = "" if act == "none" else f"_{act}"
    return fit_signal(None, RESULTS, steps=steps, act=act, progress=True, plot_name=f"cam_1d{suffix}.png",
                      json_name=f"cam_1d{suffix}.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--act", choices=("none", "relu"), default="none")
    a = ap.parse_args()
    torch.set_num_threads(1)
    run(a.steps, a.act)


if __name__ == "__main__":
    main()
