"""NeRF in the Wild (Martin-Brualla et al., CVPR 2021; PAPERS.md card 2) on either backbone.

- Per-image appearance embeddings (GLO, 48-d, optimised with the network) condition only the static
  colour head; per-image transient embeddings (16-d) feed a transient head that predicts transient
  density, colour and uncertainty beta (softplus, + ``beta_min`` = 0.03 after compositing).
- Rendering composites static and transient densities along the ray (paper eq. 10):
  C = sum_i T_i (alpha^s_i c^s_i + alpha^t_i c^t_i) + (1 - opacity) * background, with
  T_i = exp(-sum_{j<i} (sigma^s_j + sigma^t_j) delta_j); beta(r) = beta_min + sum_i T_i alpha^t_i beta_i.
  In the padded (MLP) layout the last sample's spacing is "to infinity" for the static density (as
  NeRF) but the transient density only integrates over the sample's own spacing, so transients
  cannot swallow the background.
- Loss (fine): mean over rays of ||C - C^||^2 / (2 beta^2) + log(beta^2) / 2, plus
  lambda_u * mean(transient sigma) over all samples (lambda_u = 0.01); coarse (MLP backbone only):
  plain MSE of the static coarse network (no embeddings), as the paper. See :func:`nerfw_loss`.
- ``backbone``: ``"mlp"`` (NeRF MLP with hierarchical sampling; subclasses
  :class:`aware3d.methods.nerf.Model`) or ``"ngp"`` (hash-grid field, occupancy-grid marching and
  sample-count batching; subclasses :class:`aware3d.methods.ngp.Model`, reusing its marcher, packed
  weights kernel, optimiser groups and batch sizing). ``cam``: coordinate-aware modulation of the
  static colour branch (view direction; :mod:`aware3d.fields.cam`).
- ``static_weight`` * plain MSE of the static-only colour (not in the paper). 1 for the ngp
  backbone: it has no coarse network, so the static-only render of its field takes the coarse
  network's role. Without it the static colour drifts to black while the per-image transient head,
  which the paper's composite lets add colour on top of an opaque static surface, carries the colour.
  500 for the MLP backbone (0 in the ``paper`` preset): the uncertainty term weights a ray by
  1 / (2 beta^2), so rays the static field already fits (beta = beta_min) count ~(beta / beta_min)^2
  more than rays where the model has raised beta. On a hash grid each region has its own parameters
  and Adam rescales their steps, so that does not matter; an MLP shares every parameter, and its
  static field then stops learning whatever it has not fit yet (the objects of the wild scene stayed
  a blur, 16.7 dB vs nerf's 21.7 after 10 minutes). A static term on the same scale keeps it
  learning (20.8 dB; BENCHMARKS.md).
- ``transient_warmup`` (not in the paper; 0 in the ``paper`` preset, 200 in ``tiny``, 1000 in ``cpu``):
  the first steps train NeRF-A (appearance embeddings, no transient head). ``warmup_beta_min`` (on
  for mlp, off for ngp: measured) makes the warm-up loss NeRF-W's with beta = beta_min instead of
  the plain MSE, so its scale does not jump 555x when the head switches on. On short runs the
  uncertainty term otherwise takes its shortcut (raise beta and explain pixels with transient
  density) while the static field is still blurry, and the static scene never forms.
- ``beta_min_start`` / ``beta_anneal_steps`` (not in the paper; off by default): an annealed beta
  floor, log-linear from ``beta_min_start`` to ``beta_min`` over the steps after the warm-up (see
  :meth:`_NeRFWBase.beta_floor`). Measured on the MLP backbone (BENCHMARKS.md): it does not stop the
  uncertainty shortcut there, so it stays off.

Presets ``paper``, ``cpu``, ``tiny`` hold the keys of both backbones' presets of the same name plus
NeRF-W's own; keys the two backbones disagree on (``lr``, ``lr_final``, ``decay_steps``,
``max_steps``) and the transient head's size are ``None`` = "the chosen backbone's value", filled in
by :func:`resolve_config` when the model is built (``--set lr=...`` still overrides).

Evaluation as in the paper: :func:`evaluate_appearance_half` optimises each test image's appearance
embedding on its left half and measures PSNR / SSIM on the right half. Without image ids the model
renders the static scene with the mean training appearance (what ``aware3d eval`` measures).
Render programs (:mod:`aware3d.programs.nerfw`): ``appearance-interp``, ``static``, ``transient``,
``uncertainty``, beside the camera programs of every field. ``METHOD`` is its surface
(:class:`aware3d.methods.base.FieldMethod`).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import nerf as _nerf
from . import ngp as _ngp
from ..fields.cam import CAMNeRFMLP
from ..fields.nerfw import NeRFWHashField, NeRFWMLP
from ..programs.nerfw import PROGRAMS as NERFW_PROGRAMS
from ..programs.nerfw import render_view
from ..utils.settings import field_comments, field_types
from .base import FieldMethod
from ..render.samplers import hierarchical_samples, points_along_rays, stratified_samples
from ..render.volume import (accumulate_packed, apply_background, composite, deltas_from_t,
                             expected_depth, opacity, transmittance, volume_render)

BACKBONES = ("mlp", "ngp")

_NERFW = dict(backbone="mlp", cam=False, cam_res=4, appearance_dim=48, transient_dim=16,
              transient_width=None, transient_depth=None, beta_min=0.03, lambda_u=0.01,
              embed_std=0.1, transient_warmup=None, static_weight=None, warmup_beta_min=None,
              beta_min_start=None, beta_anneal_steps=0)
# transient head size per backbone when the preset leaves it None: the paper's 4 x 128 on the
# 256-wide MLP (half the trunk width: 4 x 32 on the 64-wide tiny preset); on the hash grid 2 layers
# as wide as its own MLPs (``hidden``: 64, 32 in tiny) so the field keeps its speed
_TRANSIENT = {"mlp": dict(transient_depth=4), "ngp": dict(transient_depth=2)}
# steps trained as NeRF-A (appearance embeddings, no transient head, beta = beta_min) before the transient
# head and the uncertainty loss switch on. Not in the paper (0 in the paper preset): on short runs the
# uncertainty term's shortcut (raise beta, explain pixels with transients) wins while the static
# field is still blurry and the static scene never forms; a static warm-up avoids it.
_WARMUP = {"paper": 0, "cpu": 1000, "tiny": 200}
# MLP backbone, non-paper presets: plain MSE of the static-only colour, weighted ~ 1 / (2 beta_min^2)
# (555) so it counts like the uncertainty term does on a well-fit ray (see the module docstring)
_MLP_STATIC_WEIGHT = 500.0


def _merged_preset(name: str) -> dict:
    a, b = _nerf.PRESETS[name], _ngp.PRESETS[name]
    cfg = {}
    for k in sorted(set(a) | set(b)):
        cfg[k] = None if (k in a and k in b and a[k] != b[k]) else a.get(k, b.get(k))
    cfg.update(_NERFW)
    return cfg


PRESETS = {name: _merged_preset(name) for name in ("paper", "cpu", "tiny")}


@dataclass
class _NeRFWOwn:
    backbone: str = "mlp"                       # field backbone: mlp (NeRF MLP) or ngp (hash grid)
    appearance_dim: int = 48                    # per-image appearance embedding size (0: none)
    transient_dim: int = 16                     # per-image transient embedding size
    transient_width: int | None = None          # transient head width (None: the backbone's default)
    transient_depth: int | None = None          # transient head layers (None: 4 on mlp, 2 on ngp)
    beta_min: float = 0.03                      # uncertainty floor added after compositing
    lambda_u: float = 0.01                      # weight of the mean transient density
    embed_std: float = 0.1                      # initial std of the embeddings
    transient_warmup: int | None = None         # first steps without the transient head (None: per preset)
    static_weight: float | None = None          # plain MSE on the static colour (None: per backbone)
    warmup_beta_min: bool | None = None         # warm-up loss with beta = beta_min (None: per backbone)
    beta_min_start: float | None = None         # annealed beta floor: its start (None: off)
    beta_anneal_steps: int = 0                  # steps of the beta-floor annealing


def _optional(cls):
    """The fields of ``cls`` with ``None`` allowed: "the chosen backbone's value"."""
    hints = field_types(cls)
    return [(f.name, hints[f.name] | None, dataclasses.field(default=None)) for f in dataclasses.fields(cls)
            if f.name not in ("preset",)]


# every key of both backbones (None where they differ: filled from the backbone) and NeRF-W's own
NeRFWConfig = dataclasses.make_dataclass(
    "NeRFWConfig",
    [*(fl for fl in _optional(_nerf.NeRFConfig)),
     *(fl for fl in _optional(_ngp.NGPConfig) if fl[0] not in {f.name for f in dataclasses.fields(_nerf.NeRFConfig)}),
     *((f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(_NeRFWOwn)),
     ("preset", str, dataclasses.field(default="cpu"))])
NeRFWConfig.__doc__ = ("Every setting of a NeRF-W run: NeRF-W's own, and those of both backbones "
                       "(None: the chosen backbone's value).")
NeRFWConfig.__field_docs__ = {**field_comments(_ngp.NGPConfig), **field_comments(_nerf.NeRFConfig),
                               **field_comments(_NeRFWOwn)}
DEFAULT_PRESET = "cpu"


def resolve_config(cfg: dict) -> dict:
    """Fill the ``None`` entries of a NeRF-W config from the chosen backbone's preset of the same
    name (in place; returns ``cfg``)."""
    backbone = cfg.get("backbone") or "mlp"
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
    cfg["backbone"] = backbone
    mod = _nerf if backbone == "mlp" else _ngp
    src = {**mod.PRESETS.get(cfg.get("preset") or DEFAULT_PRESET, mod.PRESETS[mod.DEFAULT_PRESET]),
           **_TRANSIENT[backbone]}
    if cfg.get("static_weight") is None:  # measured (BENCHMARKS.md, NeRF-W section); the paper: none
        cfg["static_weight"] = 1.0 if backbone == "ngp" else \
            (0.0 if (cfg.get("preset") or DEFAULT_PRESET) == "paper" else _MLP_STATIC_WEIGHT)
    if cfg.get("warmup_beta_min") is None:  # measured per backbone (BENCHMARKS.md, NeRF-W section)
        cfg["warmup_beta_min"] = backbone == "mlp"
    if cfg.get("transient_warmup") is None:
        cfg["transient_warmup"] = _WARMUP.get(cfg.get("preset") or DEFAULT_PRESET, 0)
    if cfg.get("transient_width") is None:
        cfg["transient_width"] = max(int(cfg.get("width") or src["width"]) // 2, 16) if backbone == "mlp" \
            else int(cfg.get("hidden") or src["hidden"])
    for k, v in list(cfg.items()):
        if v is None and k in src:
            cfg[k] = src[k]
    for k, v in {**_NERFW, **src}.items():
        cfg.setdefault(k, v)
    return cfg


def nerfw_loss(color: torch.Tensor, target: torch.Tensor, beta: torch.Tensor | None = None,
               transient_sigma: torch.Tensor | None = None, color_coarse: torch.Tensor | None = None,
               lambda_u: float = 0.01) -> torch.Tensor:
    """NeRF-W loss (paper eq. 13 + coarse term).

    Fine: mean_r [ ||C(r) - C^(r)||^2 / (2 beta(r)^2) + log(beta(r)^2) / 2 ] (squared norm over the
    3 channels) + lambda_u * mean(transient_sigma) (over every sample of the batch). Without ``beta``
    (no transient head) the fine term is the plain MSE. Coarse: plain MSE (mean over rays and
    channels) of ``color_coarse``."""
    if beta is None:
        loss = F.mse_loss(color, target)
    else:
        sq = (color - target).square().sum(-1)
        loss = (sq / (2 * beta.square()) + torch.log(beta)).mean()
        if transient_sigma is not None and transient_sigma.numel():
            loss = loss + lambda_u * transient_sigma.mean()
    if color_coarse is not None:
        loss = loss + F.mse_loss(color_coarse, target)
    return loss


class _NeRFWBase:
    """Embeddings, their look-up and the loss, shared by both backbones."""

    uses_image_ids = True
    _step = 1 << 62  # built for rendering / evaluation: past any warm-up

    def transient_active(self) -> bool:
        return self._step >= int(self.cfg.get("transient_warmup") or 0)

    def _init_codes(self, cfg: dict, scene: dict) -> None:
        n = int(scene.get("n_images") or 0)
        if n < 1:
            raise ValueError("nerfw: scene['n_images'] (the number of training images) is required "
                             "for the per-image embeddings")
        self.n_images = n
        std = float(cfg.get("embed_std", 0.1))
        self.appearance_codes = nn.Embedding(n, cfg["appearance_dim"]) if cfg["appearance_dim"] else None
        self.transient_codes = nn.Embedding(n, cfg["transient_dim"]) if cfg["transient_dim"] else None
        for e in (self.appearance_codes, self.transient_codes):
            if e is not None:
                nn.init.normal_(e.weight, 0.0, std)

    def default_appearance(self) -> torch.Tensor | None:
        """The appearance used without image ids: the mean of the training embeddings."""
        return None if self.appearance_codes is None else self.appearance_codes.weight.mean(0)

    def point_color(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """Static RGB (..., 3) at points x along directions d with the mean training appearance."""
        net = getattr(self, "fine", None) or getattr(self, "coarse", None) or self.field
        app = self.default_appearance()
        bias = None if app is None else net.appearance_bias(app.expand(x.shape[0], -1))
        return net(x, d, bias)["rgb"]

    def _codes(self, n: int, image_ids, appearance, transient):
        app = None
        if self.appearance_codes is not None:
            if appearance is not None:
                app = appearance.reshape(-1, appearance.shape[-1]).expand(n, -1) \
                    if appearance.dim() == 1 or appearance.shape[0] == 1 else appearance.reshape(n, -1)
            elif image_ids is not None:
                app = self.appearance_codes(image_ids.reshape(-1))
            else:
                app = self.default_appearance().expand(n, -1)
        use_t = (image_ids is not None and (not self.training or self.transient_active())) \
            if transient is None else bool(transient)
        trans = None
        if use_t and self.transient_codes is not None:
            if image_ids is None:
                raise ValueError("nerfw: the transient component needs image_ids")
            trans = self.transient_codes(image_ids.reshape(-1))
        return app, trans

    def before_step(self, step: int) -> None:
        self._step = int(step)

    def beta_floor(self) -> float:
        """beta_min at the current step. With ``beta_min_start`` set (not in the paper; off by
        default) the floor decays log-linearly from ``beta_min_start`` to ``beta_min`` over the
        ``beta_anneal_steps`` steps after the transient warm-up, and stays at ``beta_min_start``
        during the warm-up; evaluation and rendering (past every step) use ``beta_min``."""
        end = float(self.cfg["beta_min"])
        start, n = self.cfg.get("beta_min_start"), int(self.cfg.get("beta_anneal_steps") or 0)
        if start is None or n <= 0:
            return end
        k = self._step - int(self.cfg.get("transient_warmup") or 0)
        f = min(max(k / n, 0.0), 1.0)
        return float(start) ** (1.0 - f) * end ** f

    def loss(self, out: dict, target: torch.Tensor) -> torch.Tensor:
        beta = out.get("beta")
        if beta is None and self.transient_codes is not None and self.cfg.get("warmup_beta_min", True):
            # transient warm-up: the same loss with beta(r) = beta_min, i.e. NeRF-W with the transient
            # head silent. The plain MSE here made the loss ~1 / (2 beta_min^2) = 555x larger the step
            # the head switched on; Adam's second moments lag such a jump, so with the MLP preset's
            # beta2 = 0.999 the next updates were up to ~6.5x too large for hundreds of steps
            # (m / sqrt(v) ~ (1 - 0.9^k) / sqrt(1 - 0.999^k)), which saturated the colour head.
            # ``warmup_beta_min`` (default: mlp on, ngp off): on the hash grid (beta2 = 0.99, ~2x
            # for ~50 steps) the plain-MSE warm-up measured 0.7 dB better, so it stays there.
            beta = out["color"].new_full(out["color"].shape[:-1], self.beta_floor())
        loss = nerfw_loss(out["color"], target, beta, out.get("transient_sigma"),
                          out.get("color_coarse"), self.cfg["lambda_u"])
        w = float(self.cfg.get("static_weight") or 0.0)
        if w > 0 and ("beta" in out or self.cfg.get("warmup_beta_min", True)):
            # in a beta_min warm-up too, so the loss keeps its scale when the transient head switches on
            loss = loss + w * F.mse_loss(out.get("color_static", out["color"]), target)
        return loss

    def _code_parameters(self):
        return [p for e in (self.appearance_codes, self.transient_codes) if e is not None
                for p in e.parameters()]


def _field_kwargs(cfg: dict) -> dict:
    return dict(appearance_dim=cfg["appearance_dim"], transient_dim=cfg["transient_dim"],
                transient_width=cfg["transient_width"], transient_depth=cfg["transient_depth"],
                cam_res=cfg["cam_res"] if cfg["cam"] else None)


def composite_padded(f: dict, t: torch.Tensor, background, beta_min: float) -> dict:
    """Render a NeRF-W field's outputs at padded samples t (R, N) (see the module docstring).

    Returns color (full composite when the transient outputs are present, else static), color_static,
    depth, opacity, and with transients: beta (R,), transient_sigma (R, N), color_transient and
    opacity_transient (the transient field rendered alone, no background)."""
    static = volume_render(f["sigma"], f["rgb"], t, background=background)
    out = {"color_static": static["color"], "weights": static["weights"]}
    if "t_sigma" not in f:
        out.update(color=static["color"], depth=static["depth"], opacity=static["opacity"])
        return out
    deltas = deltas_from_t(t)
    dt = deltas.clone()
    if t.shape[-1] > 1:
        dt[..., -1] = t[..., -1] - t[..., -2]
    tau_s = f["sigma"].float().clamp_min(0) * deltas
    tau_t = f["t_sigma"].float() * dt
    a_s, a_t = -torch.expm1(-tau_s), -torch.expm1(-tau_t)
    T = transmittance(-torch.expm1(-(tau_s + tau_t)))
    w_s, w_t = T * a_s, T * a_t
    acc = opacity(T * -torch.expm1(-(tau_s + tau_t)))
    color = apply_background(composite(w_s, f["rgb"]) + composite(w_t, f["t_rgb"]), acc, background)
    w_alone = transmittance(a_t) * a_t
    out.update(color=color, depth=expected_depth(w_s + w_t, t), opacity=acc,
               beta=(w_t * f["t_beta"]).sum(-1) + beta_min, transient_sigma=f["t_sigma"],
               color_transient=composite(w_alone, f["t_rgb"]), opacity_transient=opacity(w_alone))
    return out


class NeRFWMLPModel(_NeRFWBase, _nerf.Model):
    """NeRF-W on the NeRF MLP: static coarse NeRF (plain MSE) + NeRF-W fine network."""

    def __init__(self, cfg: dict, scene: dict):
        _nerf.Model.__init__(self, cfg, scene)
        if cfg["n_fine"] <= 0:
            raise ValueError("nerfw: the mlp backbone needs n_fine > 0 (the NeRF-W head is the fine network)")
        if cfg["cam"]:
            self.coarse = CAMNeRFMLP(depth=cfg["depth"], width=cfg["width"], cam_res=cfg["cam_res"])
        self.fine = NeRFWMLP(depth=cfg["depth"], width=cfg["width"], **_field_kwargs(cfg))
        self._init_codes(cfg, scene)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                image_ids: torch.Tensor | None = None, appearance: torch.Tensor | None = None,
                transient: bool | None = None, background: torch.Tensor | None = None) -> dict:
        bg = self.background if background is None else background
        shape = rays_o.shape[:-1]
        o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        n = o.shape[0]
        t, bins = stratified_samples(self.near, self.far, self.cfg["n_coarse"], batch_shape=(n,),
                                     perturb=training, dtype=o.dtype, device=o.device)
        coarse = self._render(self.coarse, o, d, t, bg)
        t_all, _ = hierarchical_samples(t, bins, coarse["weights"], self.cfg["n_fine"],
                                        deterministic=not training)
        x = points_along_rays(o, d, t_all)
        app, trans = self._codes(n, image_ids, appearance, transient)
        ab = self.fine.appearance_bias(app)
        tb = self.fine.transient_bias(trans)
        f = self.fine(x, d.unsqueeze(-2).expand_as(x), None if ab is None else ab.unsqueeze(-2),
                      None if tb is None else tb.unsqueeze(-2))
        out = composite_padded(f, t_all, bg, self.beta_floor())
        out.pop("weights")
        out["color_coarse"] = coarse["color"]
        return {k: (v.reshape(*shape, *v.shape[1:]) if k != "transient_sigma" else v) for k, v in out.items()}

    @torch.no_grad()
    def appearance_renderer(self, rays_o: torch.Tensor, rays_d: torch.Tensor):
        """Everything of a static render that does not depend on the appearance embedding (samples,
        weights, the colour layer's pre-activation), computed once; returns ``fn(emb) -> color (R, 3)``
        equal to ``forward(rays_o, rays_d, appearance=emb)["color"]`` and differentiable in emb. Makes
        the per-test-image appearance optimisation cost a colour head per step, not a full render."""
        o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        t, bins = stratified_samples(self.near, self.far, self.cfg["n_coarse"], batch_shape=(o.shape[0],),
                                     perturb=False, dtype=o.dtype, device=o.device)
        coarse = self._render(self.coarse, o, d, t, self.background)
        t_all, _ = hierarchical_samples(t, bins, coarse["weights"], self.cfg["n_fine"], deterministic=True)
        x = points_along_rays(o, d, t_all)
        dd = d.unsqueeze(-2).expand_as(x)
        h = self.fine._trunk(x)
        pre = self.fine.color_pre(self.fine.feature(h), dd)
        w = volume_render(self.fine.sigma_head(h).squeeze(-1), torch.zeros_like(x), t_all)["weights"]
        acc, bg, fine = w.sum(-1), self.background, self.fine

        def fn(emb: torch.Tensor) -> torch.Tensor:
            rgb = fine.color_post(pre, dd, fine.appearance_bias(emb))
            return apply_background(composite(w, rgb), acc, bg)

        return fn

    def load_backbone_state(self, state: dict) -> list:
        """Load a NeRF (``methods.nerf``) model's state dict; returns the keys left at their init
        (embeddings, appearance layer, transient head, CAM grids)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"nerfw: unexpected backbone keys {unexpected}")
        return missing


class NeRFWNGPModel(_NeRFWBase, _ngp.Model):
    """NeRF-W on the hash-grid field with occupancy marching (methods.ngp machinery)."""

    _occ_image = 0

    def __init__(self, cfg: dict, scene: dict):
        _ngp.Model.__init__(self, cfg, scene)
        bf16 = self.field.autocast_bf16
        self.field = NeRFWHashField(self.aabb, levels=cfg["levels"], features=cfg["features"],
                                    log2_table=cfg["log2_table"], base_res=cfg["base_res"],
                                    max_res=cfg["max_res"], hidden=cfg["hidden"], autocast_bf16=bf16,
                                    **_field_kwargs(cfg))
        self._init_codes(cfg, scene)

    def forward(self, rays_o: torch.Tensor, rays_d: torch.Tensor, *, training: bool = False,
                image_ids: torch.Tensor | None = None, appearance: torch.Tensor | None = None,
                transient: bool | None = None, background: torch.Tensor | None = None) -> dict:
        bg = self.background if background is None else background
        shape = rays_o.shape[:-1]
        o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        n = o.shape[0]
        app, trans = self._codes(n, image_ids, appearance, transient)
        ab = self.field.appearance_bias(app)
        tb = self.field.transient_bias(trans)
        idx, t0, t1 = self._march(o, d)
        if idx.numel() and self.cfg["early_stop_T"] > 0:
            with torch.no_grad():
                xm = o[idx] + 0.5 * (t0 + t1)[:, None] * d[idx]
                dens = self.field.total_density(xm, None if tb is None else tb[idx])
                _, T = self._weights(dens, t1 - t0, idx, n)
                keep = T > self.cfg["early_stop_T"]
            idx, t0, t1 = idx[keep], t0[keep], t1[keep]
        tm, delta = 0.5 * (t0 + t1), t1 - t0
        x = o[idx] + tm[:, None] * d[idx]
        f = self.field(x, d[idx], None if ab is None else ab[idx], None if tb is None else tb[idx])
        ws, _ = self._weights(f["sigma"], delta, idx, n)
        acc_s = accumulate_packed(ws, idx, n)
        color_s = apply_background(accumulate_packed(ws[:, None] * f["rgb"], idx, n), acc_s, bg)
        out = {"color_static": color_s, "n_samples": int(idx.numel())}
        if "t_sigma" not in f:
            out.update(color=color_s, opacity=acc_s, depth=accumulate_packed(ws * tm, idx, n))
        else:
            sig_s, sig_t = f["sigma"].float(), f["t_sigma"].float()
            w_tot, T = self._weights(sig_s + sig_t, delta, idx, n)
            w_s = T * -torch.expm1(-sig_s.clamp_min(0) * delta)
            w_t = T * -torch.expm1(-sig_t * delta)
            acc = accumulate_packed(w_tot, idx, n)
            color = apply_background(accumulate_packed(w_s[:, None] * f["rgb"] + w_t[:, None] * f["t_rgb"],
                                                       idx, n), acc, bg)
            out.update(color=color, opacity=acc, depth=accumulate_packed((w_s + w_t) * tm, idx, n),
                       beta=accumulate_packed(w_t * f["t_beta"], idx, n) + self.beta_floor(),
                       transient_sigma=sig_t)
            if not self.training:  # the transient field alone: render programs only
                w_alone, _ = self._weights(sig_t, delta, idx, n)
                out.update(color_transient=accumulate_packed(w_alone[:, None] * f["t_rgb"], idx, n),
                           opacity_transient=accumulate_packed(w_alone, idx, n))
        return {k: (v.reshape(*shape, *v.shape[1:]) if isinstance(v, torch.Tensor) and k != "transient_sigma"
                    else v) for k, v in out.items()}

    @torch.no_grad()
    def appearance_renderer(self, rays_o: torch.Tensor, rays_d: torch.Tensor):
        """As :meth:`NeRFWMLPModel.appearance_renderer`: marching, early termination, weights and the
        colour MLP's first pre-activation once; ``fn(emb) -> color (R, 3)``."""
        o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        n = o.shape[0]
        idx, t0, t1 = self._march(o, d)
        if idx.numel() and self.cfg["early_stop_T"] > 0:
            xm = o[idx] + 0.5 * (t0 + t1)[:, None] * d[idx]
            _, T = self._weights(self.field.density(xm), t1 - t0, idx, n)
            keep = T > self.cfg["early_stop_T"]
            idx, t0, t1 = idx[keep], t0[keep], t1[keep]
        x = o[idx] + 0.5 * (t0 + t1)[:, None] * d[idx]
        sigma, geo = self.field._geometry(x)
        di = d[idx]
        pre = self.field.color_pre(geo, di)
        w, _ = self._weights(sigma, t1 - t0, idx, n)
        acc, bg, field = accumulate_packed(w, idx, n), self.background, self.field

        def fn(emb: torch.Tensor) -> torch.Tensor:
            rgb = field.color_post(pre, di, field.appearance_bias(emb))
            return apply_background(accumulate_packed(w[:, None] * rgb, idx, n), acc, bg)

        return fn

    def _occupancy_density(self, x: torch.Tensor) -> torch.Tensor:
        """Static density plus the transient density of one training image (cycled over updates),
        so the decayed-max occupancy grid also keeps the cells the transients occupy."""
        if self.transient_codes is not None and self.field.transient is not None and self.transient_active():
            tb = self.field.transient_bias(self.transient_codes.weight[self._occ_image])
            return self.field.total_density(x, tb.expand(x.shape[0], -1))
        return type(self.field).density(self.field, x)

    def before_step(self, step: int) -> None:
        # methods.ngp refreshes its occupancy grid from ``self.field.density``; for the duration of
        # its call that name answers with the static + transient occupancy density
        self._step = int(step)
        self._occ_image = (step // max(int(self.cfg.get("occ_every", 16)), 1)) % self.n_images
        self.field.density = self._occupancy_density
        try:
            _ngp.Model.before_step(self, step)
        finally:
            del self.field.density

    def make_optimizer(self):
        opt = _ngp.Model.make_optimizer(self)
        codes = self._code_parameters()
        if codes:
            opt.add_param_group({"params": codes, "weight_decay": 0.0})
        return opt

    def load_backbone_state(self, state: dict) -> list:
        """Load an Instant-NGP (``methods.ngp``) model's state dict; returns the keys left at init."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"nerfw: unexpected backbone keys {unexpected}")
        return missing


def Model(cfg: dict, scene: dict) -> nn.Module:
    """The NeRF-W model of ``cfg["backbone"]`` (fills the config's backbone defaults in place)."""
    resolve_config(cfg)
    return NeRFWMLPModel(cfg, scene) if cfg["backbone"] == "mlp" else NeRFWNGPModel(cfg, scene)


# ------------------------------------------------------------------------------------------------
# rendering helpers, paper evaluation, render programs


def evaluate_appearance_half(run, half: str = "left", data: str | None = None, split: str = "test",
                             steps: int = 100, lr: float = 0.02, batch: int = 4096, progress: bool = True,
                             max_views: int | None = None, seed: int = 0, downscale: int | None = None) -> dict:
    """The paper's protocol: per test image, optimise its appearance embedding (from the mean
    training embedding, Adam, ``steps`` full-batch steps, network frozen, static render, MSE) on the
    LEFT half of the image (a fixed random subset of at most ``batch`` of its pixels, whose
    appearance-independent render parts are computed once: see ``appearance_renderer``); report
    PSNR / SSIM on the RIGHT half.

    ``run``: a loaded run (:func:`aware3d.load`); ``half``: the half the appearance is optimised on
    (``"left"``, the paper's). Also works on runs of methods without embeddings (nerf, ngp): then
    nothing is optimised and the same right-half metrics are reported, for comparison. Writes
    RUN/eval/metrics.json and one PNG per view (ground truth | render, the optimised half marked).
    Returns the metrics dict."""
    from tqdm import tqdm

    from ..metrics import psnr, ssim
    from ..render.cameras import image_rays
    from ..train import io

    if half != "left":
        raise ValueError(f"--appearance-half: expected 'left' (the paper's protocol), got {half!r}")
    run_dir, model = run.path, run.model
    dev = next(model.parameters()).device
    for p in model.parameters():
        p.requires_grad_(False)
    ds = run.load_data(split, data, downscale)
    has_app = getattr(model, "appearance_codes", None) is not None
    n = len(ds) if max_views is None else min(len(ds), max_views)
    W, H = ds.width, ds.height
    half = W // 2
    gen = torch.Generator().manual_seed(int(seed))
    views, t0 = [], time.time()
    out_dir = run_dir / "eval"
    for i in tqdm(range(n), disable=not progress, desc=f"eval {split} (appearance half)"):
        gt = ds.images[i]
        emb = None
        if has_app:
            o, d = image_rays(ds.K[i].to(dev), ds.c2w[i].to(dev), W, H)
            lo, ld = o[:, :half].reshape(-1, 3), d[:, :half].reshape(-1, 3)
            lt = gt[:, :half].reshape(-1, 3).to(dev)
            sel = torch.randperm(lo.shape[0], generator=gen)[:batch].to(dev)
            fn = model.appearance_renderer(lo[sel], ld[sel])
            lt = lt[sel]
            emb = model.default_appearance().detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([emb], lr=lr)
            with torch.enable_grad():
                for _ in range(int(steps)):
                    loss = F.mse_loss(fn(emb), lt)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            emb = emb.detach()
        pred = render_view(model, ds.K[i], ds.c2w[i], W, H, appearance=emb)["color"].clamp(0, 1)
        right_p, right_g = pred[:, half:], gt[:, half:]
        v = {"name": ds.names[i] if ds.names else str(i),
             "psnr": float(psnr(right_p, right_g)),
             "ssim": float(ssim(right_p, right_g)) if min(H, W - half) >= 11 else None,
             "psnr_left": float(psnr(pred[:, :half], gt[:, :half])),
             "psnr_full": float(psnr(pred, gt))}
        views.append(v)
        mark = pred.clone()
        mark[:, half - 1: half + 1] = torch.tensor([1.0, 0.0, 0.0])
        stem = v["name"][2:] if v["name"].startswith("./") else v["name"]
        io.save_png(out_dir / f"{i:03d}_{stem.replace('/', '_')}_half.png", torch.cat([gt, mark], 1))
    ss = [v["ssim"] for v in views if v["ssim"] is not None]
    metrics = {"protocol": "appearance optimised on the left half, measured on the right half",
               "appearance_optimised": bool(has_app), "steps": int(steps) if has_app else 0,
               "psnr": sum(v["psnr"] for v in views) / len(views),
               "ssim": sum(ss) / len(ss) if ss else None,
               "psnr_left": sum(v["psnr_left"] for v in views) / len(views),
               "psnr_full": sum(v["psnr_full"] for v in views) / len(views),
               "split": split, "n_views": len(views),
               "seconds_per_view": (time.time() - t0) / len(views), "views": views}
    io.atomic_write_text(out_dir / run.metrics_name(), json.dumps(metrics, indent=2))
    metrics["path"] = str(out_dir / run.metrics_name())
    return metrics


PRESET_DESCRIPTIONS = {
    "paper": "the paper's settings on the chosen backbone (mlp: 8 x 256, 64 + 128 samples)",
    "cpu": "the same model with CPU-sized batches, a static-colour term and a NeRF-A warm-up (the default)",
    "tiny": "a narrow network for tests and quick looks",
}

METHOD = FieldMethod(
    "nerfw", "NeRF in the Wild", Model, PRESETS, PRESET_DESCRIPTIONS, DEFAULT_PRESET, config_cls=NeRFWConfig,
    resolve_config=resolve_config, programs=NERFW_PROGRAMS,
    evaluators={"appearance_half": evaluate_appearance_half},
    paper="Martin-Brualla et al., CVPR 2021")
