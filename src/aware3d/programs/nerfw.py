"""NeRF-W render programs (:mod:`aware3d.methods.nerfw`): appearance interpolation between two
training images' embeddings, and the static part, the transient part and the uncertainty beta of
the training views. :func:`render_view` renders one frame with a training image's embeddings or a
given appearance code (also used by NeRF-W's evaluation)."""
from __future__ import annotations

from pathlib import Path

import torch

from . import Program


@torch.no_grad()
def render_view(model, K: torch.Tensor, c2w: torch.Tensor, width: int, height: int, *,
                image_id: int | None = None, appearance: torch.Tensor | None = None,
                keys=("color",), chunk: int = 8192) -> dict:
    """Render one frame in chunks: ``keys`` of the model's output as (H, W, ...) CPU tensors.
    ``image_id`` renders with that training image's embeddings (static + transient)."""
    from ..render.cameras import image_rays

    dev = next(model.parameters()).device
    o, d = image_rays(K.to(dev), c2w.to(dev), width, height)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    outs = {k: [] for k in keys}
    for i in range(0, o.shape[0], chunk):
        kw = {}
        if image_id is not None:
            kw["image_ids"] = torch.full((min(chunk, o.shape[0] - i),), int(image_id), dtype=torch.long,
                                         device=dev)
        if appearance is not None:
            kw["appearance"] = appearance.to(dev)
        r = model(o[i:i + chunk], d[i:i + chunk], training=False, **kw)
        for k in keys:
            outs[k].append(r[k].float())
    return {k: torch.cat(v).reshape(height, width, *v[0].shape[1:]).cpu() for k, v in outs.items()}






def most_different_pair(model) -> tuple[int, int]:
    """The two training images whose appearance embeddings are farthest apart."""
    w = model.appearance_codes.weight.detach()
    dist = torch.cdist(w, w)
    k = int(dist.argmax())
    return k // w.shape[0], k % w.shape[0]


def appearance_interp_frames(model, K, c2w, width: int, height: int, a: int, b: int,
                             n: int) -> torch.Tensor:
    """Static renders (n, H, W, 3) with appearance (1 - s) e_a + s e_b, s = 0 .. 1 (n values).
    The first frame is exactly the render with image a's embedding and the last with image b's."""
    w = model.appearance_codes.weight.detach()
    frames = []
    for s in torch.linspace(0, 1, max(int(n), 2)).tolist():
        emb = w[a] if s == 0.0 else (w[b] if s == 1.0 else (1 - s) * w[a] + s * w[b])
        frames.append(render_view(model, K, c2w, width, height, appearance=emb)["color"].clamp(0, 1))
    return torch.stack(frames)


def render_program(run, program: str, out_dir, frames: int | None = None,
                   images: tuple[int, int] | None = None, progress: bool = True, fps: int = 12) -> dict:
    """NeRF-W render programs; returns ``{name: path}`` of the written files.

    - ``appearance-interp``: ``frames`` (24) static renders from training image a's camera while the
      appearance moves from image a's embedding to image b's (``images``; default the two training
      images with the most different embeddings). MP4, GIF, first/last frame PNG, a strip PNG.
    - ``static`` / ``transient`` / ``uncertainty``: the first ``frames`` (8) training views with their
      own embeddings: the static part alone, the transient part alone (over the background), the
      uncertainty beta (turbo colour map from beta_min to the largest beta). MP4 and GIF over the views
      and a PNG grid (ground truth row over the program's row).
    """
    from tqdm import tqdm

    from ..train import io

    model, saved = run.model, run.saved
    ds = run.load_data("train")
    W, H = ds.width, ds.height
    out = Path(out_dir)
    files: dict = {}
    if program == "appearance-interp":
        if model.appearance_codes is None:
            raise ValueError("appearance-interp: this run has no appearance embeddings (appearance_dim=0)")
        a, b = images if images is not None else most_different_pair(model)
        seq = appearance_interp_frames(model, ds.K[a], ds.c2w[a], W, H, int(a), int(b), frames or 24)
        files["mp4"] = str(io.save_video(out / "appearance_interp.mp4", seq, fps=fps))
        files["gif"] = str(io.save_video(out / "appearance_interp.gif", seq, fps=fps))
        files["first_png"] = str(io.save_png(out / f"frame_first_image{a}.png", seq[0]))
        files["last_png"] = str(io.save_png(out / f"frame_last_image{b}.png", seq[-1]))
        pick = torch.linspace(0, len(seq) - 1, min(8, len(seq))).round().long()
        files["strip_png"] = str(io.save_png(out / "strip.png", io.make_grid(seq[pick], nrow=len(pick))))
        files["images"] = [int(a), int(b)]
        return files
    n = min(len(ds), frames or 8)
    rows, gts = [], []
    results = []
    for i in tqdm(range(n), disable=not progress, desc=f"render {program}"):
        results.append(render_view(model, ds.K[i], ds.c2w[i], W, H, image_id=i,
                                   keys=("color_static", "color_transient", "opacity_transient", "beta")))
        gts.append(ds.images[i])
    if program == "static":
        rows = [r["color_static"].clamp(0, 1) for r in results]
    elif program == "transient":
        bg = ds.background
        rows = [(r["color_transient"] + (1 - r["opacity_transient"]).unsqueeze(-1) * bg).clamp(0, 1)
                for r in results]
    else:
        bmin = float(saved["config"].get("beta_min", 0.03))
        bmax = max(float(r["beta"].max()) for r in results)
        rows = [torch.as_tensor(io.colorize_depth(r["beta"], bmin, max(bmax, bmin + 1e-6), invert=False))
                for r in results]
        files["beta_max"] = bmax
    seq = torch.stack(rows)
    files["mp4"] = str(io.save_video(out / f"{program}.mp4", seq, fps=max(1, fps // 4)))
    files["gif"] = str(io.save_video(out / f"{program}.gif", seq, fps=max(1, fps // 4)))
    files["grid_png"] = str(io.save_png(out / f"{program}_grid.png",
                                        io.make_grid(torch.cat([torch.stack(gts), seq]), nrow=n)))
    return files


def _program(name: str):
    def fn(run, out_dir, frames: int | None = None, progress: bool = True) -> dict:
        return render_program(run, name, out_dir, frames=frames, progress=progress)
    return fn


PROGRAMS = (
    Program("appearance-interp", "static renders while the appearance moves between two training "
            "images' embeddings", _program("appearance-interp")),
    Program("static", "the static part alone on the first training views", _program("static")),
    Program("transient", "the transient part alone (over the background) on the first training views",
            _program("transient")),
    Program("uncertainty", "the uncertainty beta (colour map) on the first training views",
            _program("uncertainty")),
)
