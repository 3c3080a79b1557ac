"""Image fitting: a 2-D field f(x, y) -> RGB fitted to one image, with and without CAM
(coordinate-aware modulation, Lee et al. 2024, PAPERS.md card 9; the paper's image task).

Fields (coordinates are pixel centres mapped to [-1, 1]^2, x right, y down):

- ``"mlp"``: Fourier-feature MLP: pi-scaled positional encoding of (x, y) with L frequencies (L = 8
  for a 256-pixel side: the top frequency reaches the image's Nyquist rate), 4 hidden ReLU layers
  of 256, sigmoid RGB. With CAM: the last hidden layer's pre-activation is modulated by scale / shift
  grids over the pixel coordinate (``cam_res`` x ``cam_res``, default 32) after layer normalisation.
- ``"hash"``: a 2-D multiresolution hash grid (:class:`HashGrid2D`, a pure-PyTorch 2-D twin of
  Instant-NGP's encoding: 16 levels x 2 features (fewer below 256 px: 4 per octave), 2^15 entries per level, resolutions 16 ..
  the image side, dense indexing on coarse levels, xor hash with primes (1, 2654435761) on fine ones,
  bilinear interpolation, U(-1e-4, 1e-4) init) + an MLP 2 x 64 -> sigmoid RGB. The compiled 3-D
  ``aware3d.kernels.hashgrid.HashGrid`` is not used: a 2-D signal would waste half of every level's
  table on a z = 0 slice and 4 of the 8 trilinear corners. With CAM: the first hidden layer's
  pre-activation is modulated (``cam_res`` default 16).

Training: Adam (MLP: lr 1e-3; hash: lr 1e-2, betas (0.9, 0.99), eps 1e-15), a random batch of
``batch`` pixels per step (all pixels when the image is smaller), the full image evaluated every
``eval_every`` steps for the PSNR curve (evaluation time does not count in ``seconds``).
``max_seconds`` stops on training time for equal-wall-clock comparisons.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .fields.cam import CAM, count_parameters
from .render.encodings import positional_encoding

FIELDS = ("mlp", "hash")


class HashGrid2D(nn.Module):
    """Multiresolution hash encoding of 2-D points in [0, 1]^2 (pure PyTorch).

    Level l has resolution N_l = floor(base_res * b^l), b = exp((ln max_res - ln base_res) / (L-1));
    grid vertices (N_l + 1)^2 are indexed densely when they fit in the table of 2^log2_table rows,
    else by (i * 1) xor (j * 2654435761) mod T. Output (N, levels * features)."""

    def __init__(self, levels: int = 16, features: int = 2, log2_table: int = 15, base_res: int = 16,
                 max_res: int = 256):
        super().__init__()
        self.levels, self.features, self.table_size = levels, features, 2 ** log2_table
        b = math.exp((math.log(max_res) - math.log(base_res)) / max(levels - 1, 1))
        res = [int(math.floor(base_res * b ** lvl)) for lvl in range(levels)]
        self.register_buffer("res", torch.tensor(res, dtype=torch.long), persistent=False)
        self.register_buffer("dense", torch.tensor([(r + 1) ** 2 <= self.table_size for r in res]),
                             persistent=False)
        self.table = nn.Parameter(torch.empty(levels, self.table_size, features).uniform_(-1e-4, 1e-4))
        self.out_dim = levels * features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        res = self.res.to(x.dtype).view(-1, 1, 1)
        pos = x.clamp(0, 1).unsqueeze(0) * res  # (L, N, 2)
        i0 = pos.floor().long()
        i0 = torch.minimum(i0, self.res.view(-1, 1, 1) - 1)
        f = pos - i0.to(pos.dtype)
        offs = torch.tensor([[0, 0], [1, 0], [0, 1], [1, 1]], device=x.device)
        c = i0.unsqueeze(2) + offs.view(1, 1, 4, 2)  # (L, N, 4, 2)
        dense_idx = c[..., 0] + c[..., 1] * (self.res.view(-1, 1, 1) + 1)
        hashed = (c[..., 0] ^ (c[..., 1] * 2654435761)) % self.table_size
        idx = torch.where(self.dense.view(-1, 1, 1), dense_idx, hashed)
        fx, fy = f[..., 0:1], f[..., 1:2]
        w = torch.cat([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)  # (L, N, 4)
        lvl = torch.arange(self.levels, device=x.device).view(-1, 1, 1)
        vals = self.table[lvl, idx]  # (L, N, 4, F)
        out = (w.unsqueeze(-1) * vals).sum(2)  # (L, N, F)
        return out.permute(1, 0, 2).reshape(n, self.out_dim)


class FourierMLP(nn.Module):
    """PE(x, y) -> depth x width ReLU -> sigmoid RGB; optional CAM on the last hidden layer."""

    def __init__(self, n_freqs: int = 8, width: int = 256, depth: int = 4, cam_res: int | None = None):
        super().__init__()
        self.n_freqs = n_freqs
        dims = [4 * n_freqs + 2] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, 3)
        self.cam = CAM(width, 2, cam_res) if cam_res else None

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        h = positional_encoding(xy, self.n_freqs, include_input=True, scale=math.pi)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if self.cam is not None and i == len(self.layers) - 1:
                h = self.cam(h, xy)
            h = F.relu(h)
        return torch.sigmoid(self.out(h))


class HashImageField(nn.Module):
    """HashGrid2D -> 2 x 64 ReLU MLP -> sigmoid RGB; optional CAM on the first hidden layer."""

    def __init__(self, max_res: int = 256, levels: int = 16, log2_table: int = 15, hidden: int = 64,
                 cam_res: int | None = None):
        super().__init__()
        base = min(16, max_res)
        # 16 levels from 16 to 256+ px; fewer for small images (5 levels for 32 px)
        levels = min(levels, max(2, round(4 * math.log2(max_res / base)) + 1))
        self.grid = HashGrid2D(levels=levels, log2_table=log2_table, base_res=base, max_res=max_res)
        self.l1 = nn.Linear(self.grid.out_dim, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 3)
        self.cam = CAM(hidden, 2, cam_res) if cam_res else None

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        h = self.l1(self.grid(0.5 * (xy + 1)))
        if self.cam is not None:
            h = self.cam(h, xy)
        h = F.relu(self.l2(F.relu(h)))
        return torch.sigmoid(self.out(h))


def make_field(field: str, size: int, cam: bool = False, cam_res: int | None = None) -> nn.Module:
    """The image field ``field`` ("mlp" or "hash") for images whose longer side is ``size``."""
    if field == "mlp":
        return FourierMLP(n_freqs=max(4, math.ceil(math.log2(max(size, 2)))), cam_res=(cam_res or 32) if cam else None)
    if field == "hash":
        return HashImageField(max_res=max(size, 16), cam_res=(cam_res or 16) if cam else None)
    raise ValueError(f"--field: expected one of {', '.join(FIELDS)}, got {field!r}")


def load_image(path, max_side: int | None = 256) -> torch.Tensor:
    """RGB image as float (H, W, 3) in [0, 1], box-downscaled so its longer side is <= max_side."""
    from PIL import Image

    p = Path(path)
    try:
        im = Image.open(p)
        im.load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: image not found") from None
    except Exception as e:
        raise ValueError(f"{p}: cannot read as an image ({e})") from None
    im = im.convert("RGB")
    if max_side and max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.BOX)
    return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)


def pixel_coords(height: int, width: int) -> torch.Tensor:
    """Pixel centres in [-1, 1]^2 as (H * W, 2) = (x, y), row-major."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def plot_curve(points, path, title: str = "", xlabel: str = "step", ylabel: str = "PSNR (dB)",
               size=(640, 400), colours: dict | None = None, x_from_zero: bool = False) -> Path:
    """A line plot drawn with matplotlib (Agg, no display): ``points`` = [(x, y), ...] or a dict
    {label: [(x, y), ...]} for several lines (``colours``: {label: (r, g, b)} in 0..255; others
    take the default palette in order). Round tick values (:func:`nice_ticks`); ``x_from_zero``
    starts the x axis at 0; the legend sits outside the axes, right of the plot, so it never hides
    a curve. ``size`` is the PNG's (width, height) in pixels. Writes a PNG; returns its path."""
    import io as _io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .train.io import atomic_write_bytes

    series = points if isinstance(points, dict) else {"": points}
    series = {k: [(float(a), float(b)) for a, b in v if math.isfinite(float(b))] for k, v in series.items()}
    allp = [p for v in series.values() for p in v]
    W, H = size
    dpi = 100
    # a Figure of its own (no pyplot): no global backend switch, nothing shown, nothing kept open
    fig = Figure(figsize=(W / dpi, H / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if title:
        ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color=(0.88, 0.88, 0.88), linewidth=0.8)
    ax.set_axisbelow(True)
    if allp:
        x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
        y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
        if x_from_zero:
            x0 = min(x0, 0.0)
        if x1 <= x0:
            x1 = x0 + 1
        x1 += 0.03 * (x1 - x0)
        pad = max(0.05 * (y1 - y0), 0.5)
        y0, y1 = y0 - pad, y1 + pad
        palette = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
        for n, (label, pts) in enumerate(series.items()):
            col = tuple(c / 255 for c in (colours or {}).get(label, palette[n % len(palette)]))
            xs, ys = [q[0] for q in pts], [q[1] for q in pts]
            ax.plot(xs, ys, color=col, linewidth=2, marker="o", markersize=4,
                    label=label if label else None)
        ax.set_xticks(nice_ticks(x0, x1))
        ax.set_yticks(nice_ticks(y0, y1))
        ax.set_xlim(x0, x1)  # after the ticks, which would widen the limits to the outer ticks
        ax.set_ylim(y0, y1)
        if any(series):
            fig.legend(loc="outside right upper", frameon=False)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return atomic_write_bytes(path, buf.getvalue())


def fit_image(path, field: str = "mlp", cam: bool = False, steps: int = 1000, out=None, *,
              max_side: int = 256, batch: int = 2 ** 14, lr: float | None = None,
              eval_every: int | None = None, max_seconds: float | None = None, seed: int = 0,
              cam_res: int | None = None, device: str | None = None, progress: bool = False,
              image: torch.Tensor | None = None) -> dict:
    """Fit ``field`` (``"mlp"`` or ``"hash"``, ``cam`` adds CAM) to the image at ``path`` (or the
    tensor ``image`` (H, W, 3) in [0, 1]) for ``steps`` steps (or ``max_seconds`` of training time).

    Writes to ``out`` (default ``fit-<stem>-<field>[-cam]``): ``reconstruction.png`` (the fitted
    image), ``comparison.png`` (target | fit), ``psnr_curve.png`` and ``metrics.json``. Returns the
    metrics dict: psnr, ssim, steps, seconds (training only), seconds_per_step, params, field, cam,
    size, curve [[step, seconds, psnr], ...] and the written files."""
    from tqdm import tqdm

    from .metrics import psnr as psnr_fn
    from .metrics import ssim as ssim_fn
    from .train.io import atomic_write_text, save_png

    if field not in FIELDS:
        raise ValueError(f"--field: expected one of {', '.join(FIELDS)}, got {field!r}")
    if int(steps) < 1:
        raise ValueError(f"--steps: expected >= 1, got {steps}")
    target = image.float() if image is not None else load_image(path, max_side)
    stem = Path(path).stem if path is not None else "image"
    out_dir = Path(out) if out else Path(f"fit-{stem}-{field}{'-cam' if cam else ''}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    H, W = target.shape[:2]
    net = make_field(field, max(H, W), cam, cam_res).to(dev)
    coords = pixel_coords(H, W).to(dev)
    colors = target.reshape(-1, 3).to(dev)
    npx = coords.shape[0]
    if field == "hash":
        opt = torch.optim.Adam(net.parameters(), lr=lr or 1e-2, betas=(0.9, 0.99), eps=1e-15)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=lr or 1e-3)
    eval_every = eval_every or max(1, int(steps) // 40)
    gen = torch.Generator(device="cpu").manual_seed(seed)

    @torch.no_grad()
    def full():
        net.eval()
        pred = torch.cat([net(coords[i:i + 65536]) for i in range(0, npx, 65536)]).reshape(H, W, 3)
        net.train()
        return pred.float().cpu()

    curve, train_s, step = [], 0.0, 0
    bar = tqdm(total=int(steps), disable=not progress, desc=f"fit {field}{' +cam' if cam else ''}")
    while step < int(steps):
        t0 = time.perf_counter()
        if npx <= batch:
            xb, yb = coords, colors
        else:
            sel = torch.randint(0, npx, (batch,), generator=gen).to(dev)
            xb, yb = coords[sel], colors[sel]
        loss = F.mse_loss(net(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_s += time.perf_counter() - t0
        step += 1
        bar.update(1)
        done = step >= int(steps) or (max_seconds is not None and train_s >= max_seconds)
        if step % eval_every == 0 or step == 1 or done:
            curve.append([step, train_s, float(psnr_fn(full(), target))])
            bar.set_postfix(psnr=f"{curve[-1][2]:.2f}")
        if done:
            break
    bar.close()
    pred = full()
    final = float(psnr_fn(pred, target))
    metrics = {"psnr": final,
               "ssim": float(ssim_fn(pred, target)) if min(H, W) >= 11 else None,
               "field": field, "cam": bool(cam), "steps": step, "seconds": train_s,
               "seconds_per_step": train_s / max(step, 1), "params": count_parameters(net),
               "size": [W, H], "batch": min(batch, npx), "source": str(path) if path is not None else None,
               "device": str(dev), "curve": curve}
    files = {"reconstruction": str(save_png(out_dir / "reconstruction.png", pred.clamp(0, 1))),
             "comparison": str(save_png(out_dir / "comparison.png", torch.cat([target, pred.clamp(0, 1)], 1))),
             "psnr_curve": str(plot_curve([(c[0], c[2]) for c in curve], out_dir / "psnr_curve.png",
                                          title=f"fit image: {field}{' + CAM' if cam else ''} "
                                                f"({W}x{H}), final {final:.2f} dB"))}
    files["metrics"] = str(out_dir / "metrics.json")
    metrics["files"] = files
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


# ---------------------------------------------------------------------------------------------
# 1D signals: CAM's 1D experiment (`aware3d fit signal`, benchmarks/bench_cam_1d.py)

SIGNAL_ARMS = ("noenc", "pe", "cam", "cam_pe")
SIGNAL_LABELS = {"noenc": "MLP (x)", "pe": "MLP (PE)", "cam": "MLP (x) + CAM", "cam_pe": "MLP (PE) + CAM"}
SIGNAL_SEED = 31210  # the seed of CAM's 1D notebook


def signal_target(n: int = 200, seed: int = SIGNAL_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, 1), y (n, 1)) of CAM's 1D notebook: x = linspace(0, 1, n), y = sum_{k=1..10}
    sin(2 pi (5k) x + phi_k) (pi written 3.14159 as there), phi_k ~ U(0, 2 pi) from torch's generator
    seeded with ``seed`` (frequencies 5, 10, ..., 50 cycles over [0, 1])."""
    torch.manual_seed(seed)
    x = torch.linspace(0, 1, steps=n)
    y = torch.zeros_like(x)
    f, pi = 5, 3.14159
    for _ in range(10):
        phase = torch.rand(1) * 2 * pi
        y += torch.sin(2 * pi * f * x + phase)
        f += 5
    return x[:, None], y[:, None]


def load_signal(path) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Samples of a 1D function from a .npy or .csv file: one column / a 1-D array (y at evenly
    spaced x) or two columns (x, y; a CSV may start with a header line). x is mapped to [0, 1]
    (the networks' and CAM's domain) and the samples are sorted by x. Returns (x (n, 1), y (n, 1),
    [x_min, x_max] of the file's x)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file (expected samples of a 1D function, .npy or .csv)")
    if p.suffix.lower() == ".npy":
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{p}: cannot read as a .npy array ({e})") from None
    elif p.suffix.lower() in (".csv", ".txt"):
        try:
            lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
            try:
                float(lines[0].replace(";", ",").split(",")[0])
            except ValueError:
                lines = lines[1:]  # a header
            a = np.array([[float(v) for v in ln.replace(";", ",").split(",")] for ln in lines])
        except (ValueError, IndexError) as e:
            raise ValueError(f"{p}: cannot read as a CSV of numbers ({e})") from None
    else:
        raise ValueError(f"{p}: expected a .npy or .csv file of samples")
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 1:
        xs, ys = np.linspace(0.0, 1.0, a.shape[0]), a
    elif a.ndim == 2 and a.shape[1] == 2:
        xs, ys = a[:, 0], a[:, 1]
    else:
        raise ValueError(f"{p}: expected one column (y) or two columns (x, y), got shape {a.shape}")
    if xs.shape[0] < 2 or not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError(f"{p}: expected at least 2 finite samples, got {xs.shape[0]}")
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    lo, hi = float(xs[0]), float(xs[-1])
    if hi <= lo:
        raise ValueError(f"{p}: every sample has the same x ({lo})")
    x = torch.from_numpy((xs - lo) / (hi - lo)).float()[:, None]
    return x, torch.from_numpy(ys).float()[:, None], [lo, hi]


def sinusoidal_encoding_1d(x: torch.Tensor, max_deg: int = 16) -> torch.Tensor:
    """CAM's 1D encoding: [x, sin(2^k x) for k < max_deg, sin(2^k x + pi / 2) for k < max_deg]
    (no pi factor): 1 + 2 * max_deg numbers."""
    xb = x * (2.0 ** torch.arange(max_deg, dtype=x.dtype, device=x.device))
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], -1))], -1)


def grid_1d(grid: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``grid`` (R, C) at x in [0, 1] (point j at x = j / (R - 1)): (N, C)."""
    R = grid.shape[0]
    p = x.reshape(-1).clamp(0, 1) * (R - 1)
    i0 = p.floor().long().clamp(max=R - 2)
    w = (p - i0.to(p.dtype))[:, None]
    return (1 - w) * grid[i0] + w * grid[i0 + 1]


class Net1D(nn.Module):
    """CAM's 1D networks: ``n_hidden_layers + 1`` Linear layers of ``hidden`` then a Linear head.
    ``kind``: ``noenc`` (x itself), ``pe`` (:func:`sinusoidal_encoding_1d`), ``cam`` / ``cam_pe``
    (the same, and after every hidden Linear a scale / shift read from a ``grid``-point grid over x,
    one value per point shared by the channels, initialised to 1 / 0: the notebook's (1, 2, 64, 1)
    grids). As in the notebook the hidden layers have no activation (``act="relu"`` adds ReLU after
    each, CAM before it) and CAM no normalisation."""

    def __init__(self, kind: str, hidden: int = 64, n_hidden_layers: int = 3, grid: int = 64,
                 act: str = "none", max_deg: int = 16):
        super().__init__()
        if kind not in SIGNAL_ARMS:
            raise ValueError(f"kind: expected one of {', '.join(SIGNAL_ARMS)}, got {kind!r}")
        if act not in ("none", "relu"):
            raise ValueError(f"act: expected none or relu, got {act!r}")
        self.kind, self.act, self.max_deg = kind, act, max_deg
        d_in = 1 + 2 * max_deg if kind in ("pe", "cam_pe") else 1
        self.net = nn.ModuleList([nn.Linear(d_in, hidden)] +
                                 [nn.Linear(hidden, hidden) for _ in range(n_hidden_layers)])
        self.last = nn.Linear(hidden, 1)
        self.cam = kind.startswith("cam")
        if self.cam:
            self.scale = nn.ParameterList([nn.Parameter(torch.ones(grid, 1)) for _ in self.net])
            self.shift = nn.ParameterList([nn.Parameter(torch.zeros(grid, 1)) for _ in self.net])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = sinusoidal_encoding_1d(x, self.max_deg) if self.kind in ("pe", "cam_pe") else x
        for i, layer in enumerate(self.net):
            h = layer(h)
            if self.cam:
                h = grid_1d(self.scale[i], x) * h + grid_1d(self.shift[i], x)
            if self.act == "relu":
                h = torch.relu(h)
        return self.last(h)


def train_signal(kind: str, x: torch.Tensor, y: torch.Tensor, steps: int = 1500, lr: float = 1e-3,
                 act: str = "none", seed: int = SIGNAL_SEED, hidden: int = 64, layers: int = 4, grid: int = 64,
                 progress: bool = False, curve_every: int | None = None):
    """Full-batch MSE, Adam(lr), ``steps`` steps, the network initialised after ``torch.manual_seed
    (seed)``. Returns (net, y_hat (n, 1), final MSE, curve [[step, mse], ...])."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    net = Net1D(kind, hidden=hidden, n_hidden_layers=layers - 1, grid=grid, act=act)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    every = curve_every or max(1, steps // 100)
    curve = []
    bar = tqdm(range(steps), disable=not progress, desc=f"fit signal {kind}", leave=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # networks this small only lose time to a thread pool
    try:
        for s in bar:
            opt.zero_grad()
            loss = (net(x) - y).square().mean()
            loss.backward()
            opt.step()
            if s % every == 0:
                curve.append([s, loss.item()])
                if s % (5 * every) == 0:
                    bar.set_postfix(mse=f"{curve[-1][1]:.4g}", refresh=False)
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        yhat = net(x)
    mse = float((yhat - y).square().mean())
    curve.append([steps, mse])
    return net, yhat, mse, curve


def error_spectrum(err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(frequencies in cycles per unit interval, |rfft| / n) of a signal sampled on [0, 1]."""
    e = err.reshape(-1).double()
    n = e.numel()
    spec = torch.fft.rfft(e).abs() / n
    freqs = torch.fft.rfftfreq(n, d=1.0 / (n - 1))
    return freqs, spec


def plot_signal_fits(x, y, fits: dict, info: dict, path, marks=()) -> Path:
    """Top row: each arm's fit over the target; bottom row: the amplitude spectra of the errors
    y_hat - y (``marks``: frequencies to draw as vertical lines). Writes a PNG; returns its path."""
    import io as _io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .train.io import atomic_write_bytes

    colours = {"noenc": "tab:gray", "pe": "tab:blue", "cam": "tab:orange", "cam_pe": "tab:red"}
    fig = Figure(figsize=(3.5 * max(len(fits), 1), 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(fits), sharey="row", squeeze=False)
    xs, ys = x.reshape(-1).numpy(), y.reshape(-1).numpy()
    pad = 0.1 * (float(ys.max() - ys.min()) or 1.0)
    ft, st = error_spectrum(y - y.mean())
    fmax = float(max(marks)) * 1.4 if marks else float(ft[-1])
    for j, (kind, yhat) in enumerate(fits.items()):
        m = info["models"][kind]
        ax = axes[0, j]
        ax.plot(xs, ys, color="goldenrod", linestyle="--", linewidth=1.2, label="target")
        ax.plot(xs, yhat.reshape(-1).numpy(), color=colours[kind], linewidth=1.5, label="fit")
        ax.set_title(f"{SIGNAL_LABELS[kind]}\nMSE {m['mse']:.4g}, {m['params']:,} params")
        ax.set_ylim(float(ys.min()) - pad, float(ys.max()) + pad)
        ax.set_xlabel("x (mapped to [0, 1])")
        ax.grid(True, alpha=0.3)
        f, s = error_spectrum(yhat - y)
        ax = axes[1, j]
        ax.plot(ft.numpy(), st.numpy(), color="goldenrod", linewidth=1, alpha=0.6, label="target spectrum")
        ax.plot(f.numpy(), s.numpy(), color=colours[kind], linewidth=1.5, label="error spectrum")
        for fm in marks:
            ax.axvline(fm, color="black", alpha=0.12, linewidth=0.8)
        ax.set_xlabel("frequency (cycles over [0, 1])")
        ax.set_xlim(0, fmax)
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel("y")
    axes[1, 0].set_ylabel("|FFT| / n")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[1, 0].legend(loc="upper right", fontsize=8)
    st_ = info["setting"]
    fig.suptitle(f"CAM 1D: {st_['target']}, {st_['steps']} Adam steps, hidden activation: {st_['act']}")
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return atomic_write_bytes(path, buf.getvalue())


def fit_signal(path=None, out=None, *, arms=SIGNAL_ARMS, steps: int = 1500, lr: float = 1e-3,
               act: str = "none", hidden: int = 64, layers: int = 4, grid: int = 64, samples: int = 200,
               seed: int = SIGNAL_SEED, progress: bool = False, plot_name: str = "signal_fit.png",
               json_name: str = "results.json") -> dict:
    """CAM's 1D experiment: fit the notebook's sum of sines (``samples`` points; or the samples in
    ``path``, :func:`load_signal`) with each arm of ``arms`` (``noenc``: MLP on x, ``pe``: MLP on
    the sinusoidal encoding, ``cam`` / ``cam_pe``: each with CAM), ``layers`` Linear layers of
    ``hidden`` + a Linear head, full-batch MSE, Adam(lr) for ``steps`` steps. Writes ``out``/
    ``plot_name`` (fits and error spectra) and ``out``/``json_name`` (setting, per arm: final MSE,
    parameters, seconds, MSE curve). Returns that dict with the written files."""
    from .train.io import atomic_write_text

    arms = tuple(arms)
    bad = [a for a in arms if a not in SIGNAL_ARMS]
    if bad or not arms:
        raise ValueError(f"--arms: expected some of {', '.join(SIGNAL_ARMS)}, got {', '.join(bad) or 'none'}")
    for name, v in (("steps", steps), ("hidden", hidden), ("layers", layers), ("samples", samples)):
        if int(v) < 1:
            raise ValueError(f"--{name}: expected >= 1, got {v}")
    if int(grid) < 2:
        raise ValueError(f"--grid: expected >= 2, got {grid}")
    if path is None:
        x, y = signal_target(samples, SIGNAL_SEED)
        target, x_range, marks = "sum of sines at 5..50 cycles (CAM's notebook)", [0.0, 1.0], range(5, 55, 5)
    else:
        x, y, x_range = load_signal(path)
        target, marks = Path(path).name, ()
    out_dir = Path(out) if out else Path(f"fit-signal-{Path(path).stem if path else 'sines'}")
    info = {"setting": {"target": target, "source": str(path) if path else None, "samples": int(x.shape[0]),
                        "x_range": x_range, "steps": int(steps), "lr": lr, "act": act, "hidden": hidden,
                        "layers": layers, "grid": grid, "seed": seed, "loss": "MSE, full batch",
                        "optimizer": "Adam"}, "models": {}}
    fits = {}
    for kind in arms:
        t0 = time.process_time()
        net, yhat, mse, curve = train_signal(kind, x, y, int(steps), lr, act, seed, hidden, layers, grid,
                                             progress=progress)
        fits[kind] = yhat
        info["models"][kind] = {"label": SIGNAL_LABELS[kind], "mse": mse, "params": count_parameters(net),
                                "cpu_seconds": time.process_time() - t0, "curve": curve}
        if progress:
            print(f"{SIGNAL_LABELS[kind]:16s} MSE {mse:.6g}  ({info['models'][kind]['params']:,} parameters)",
                  flush=True)
    files = {"plot": str(plot_signal_fits(x, y, fits, info, out_dir / plot_name, marks)),
             "json": str(out_dir / json_name)}
    info["files"] = files
    atomic_write_text(out_dir / json_name, json.dumps(info, indent=1))
    return info
