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
