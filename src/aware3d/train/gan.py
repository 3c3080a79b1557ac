"""The GAN engine shared by the 3D-aware GANs (GIRAFFE, GRAF, pi-GAN, HoloGAN, CIPS-3D).

A method hands the engine a small object (see :class:`GanMethod`): its generator and discriminator
modules, ``sample_inputs(n, generator, train)`` drawing everything random the generator consumes
(batch first), the range of its images and the optimiser settings (:class:`GanConfig`). The engine
owns the rest:

- named phases per step: ``G`` (generator step, non-saturating loss), ``D`` (discriminator step,
  with R1 folded in when ``r1_interval == 1``) and ``R1`` (lazy R1 every ``r1_interval`` steps,
  weighted by the interval as in StyleGAN2);
- ``PL`` (path-length penalty, StyleGAN2 / official VolumeGAN, off unless ``pl_weight`` > 0): its
  own G step every ``pl_interval`` steps, after the G phase, on ``batch_size // pl_batch_shrink``
  fresh inputs; loss = ``pl_weight x pl_interval x`` E_i (length_i - running mean)^2
  (:mod:`aware3d.nets.path_length`: noise / sqrt(H W), lengths from d image / d ws, running mean
  with ``pl_decay``, kept in checkpoints). A method opts in by providing
  ``path_length_forward(G, inputs) -> (images, ws)``: G's training-mode images of ``inputs`` and the
  style tensor ws (B, L, w_dim) or (B, w_dim) they were computed from, in the autograd graph (the
  penalty differentiates the images with respect to ws). The G EMA follows the PL step;
- with ``lazy_correction``, StyleGAN2's correction of the learning rate and Adam betas of a network
  whose regulariser is its own lazy phase (:func:`lazy_ratio`);
- the generator EMA (``G_ema``), used for sample grids and evaluation;
- one explicit ``torch.Generator`` for every random draw (latents, noise, real batches), stored in
  checkpoints with the global RNG states, so a resumed run continues exactly;
- fixed-seed sample grids, scalars (CSV + TensorBoard), a tqdm bar with images/s and ETA, atomic
  checkpoints, Ctrl-C checkpoints, ``max_steps`` / ``max_minutes`` (of training time);
- the method's own phase losses where it has them (``generator_objective`` /
  ``discriminator_objective``: HoloGAN, CIPS-3D);
- data parallelism over processes (torchrun; gloo on CPU, nccl on GPU): every rank draws the same
  *global* batch from the shared generator and keeps its slice, and gradients are averaged with one
  all-reduce per phase, so N processes compute what one process computes with the global batch.
  (``DistributedDataParallel``'s reducer is not used: GAN phases freeze one network while the other
  trains and R1 needs a double backward; StyleGAN2-ADA all-reduces by hand for the same reasons.)
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GanConfig", "GanMethod", "GanEngine", "train_gan", "generator_loss", "discriminator_loss",
           "r1_penalty", "ema_update", "lazy_ratio", "setup_distributed", "tune_cpu_allocator", "to_unit"]


@dataclass
class GanConfig:
    """Optimisation and bookkeeping settings of a GAN run (plain data)."""

    batch_size: int = 32               # global batch (split over ranks)
    optimizer: str = "rmsprop"         # rmsprop | adam
    lr_g: float = 5e-4
    lr_d: float = 1e-4
    betas: tuple = (0.0, 0.99)         # adam only
    ema_beta: float = 0.999
    r1_weight: float = 10.0            # loss += r1_weight * E ||grad_x D(x)||^2 (official GIRAFFE form)
    r1_interval: int = 1               # 1: in every D step; k > 1: lazy, weight * k every k steps
    d_first: bool = False              # each step: D phase, then G (official GRAF, pi-GAN); False: G, then D
    grad_clip: float = 0.0             # > 0: clip the total gradient norm of G and of D to this (official pi-GAN)
    g_steps: int = 1                   # generator phases per step, each on fresh inputs (official HoloGAN: 2)
    max_steps: int | None = None
    max_minutes: float | None = None
    sample_every: int = 500
    checkpoint_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 3
    n_sample_grid: int = 16
    sample_seed: int = 1234
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    collapse_steps: int = 200          # warn when generated images stay constant this long (0: off)
    lazy_correction: bool = False      # StyleGAN2's lazy-regulariser correction (see lazy_ratio); False: none
    pl_weight: float = 0.0             # path-length penalty weight (0: off; the method needs path_length_forward)
    pl_interval: int = 4               # PL phase every pl_interval steps, weighted by the interval
    pl_decay: float = 0.01             # decay of the running mean of the path lengths
    pl_batch_shrink: int = 2           # the PL phase's global batch: batch_size // pl_batch_shrink


class CollapseWatch:
    """Notices a collapsed run: the generated batch constant (pixel std < ``tol``) in every D step
    for ``steps`` steps. That happens when the discriminator wins and the generator's output
    saturates (e.g. a final sigmoid pinned at 0: black images, zero gradient); such a run does not
    recover. :meth:`update` returns the warning once, then None."""

    def __init__(self, steps: int = 200, tol: float = 1e-3):
        self.steps, self.tol = int(steps), float(tol)
        self.since: int | None = None
        self.warned = False

    def update(self, step: int, scalars: dict) -> str | None:
        if self.steps <= 0 or self.warned or "fake_std" not in scalars:
            return None
        if float(scalars["fake_std"]) >= self.tol:
            self.since = None
            return None
        if self.since is None:
            self.since = step
        if step - self.since + 1 < self.steps:
            return None
        self.warned = True
        return (f"step {step}: every generated image has been constant (pixel std < {self.tol:g}) since "
                f"step {self.since}: the discriminator has won and the run will not recover. Stop it and "
                f"restart with a stronger R1 or a slower discriminator (e.g. --set r1_weight=10, "
                f"--set lr_d=...); `--resume` from a checkpoint before step {self.since} keeps the progress.")


class GanMethod(Protocol):
    """What a method provides to the engine."""

    name: str
    generator: nn.Module               # forward(inputs: dict) -> images (B, 3, H, W) in image_range
    discriminator: nn.Module           # forward(images) -> logits (B, 1)
    image_range: tuple                 # (lo, hi) of generated images; real ones are mapped to it

    def sample_inputs(self, n: int, generator: torch.Generator | None = None,
                      train: bool = True) -> dict: ...


# --------------------------------------------------------------------------------------------------
# Losses, regulariser, EMA (pure functions)


# the clock of the training budget (tests replace it with a fake one)
step_clock = time.perf_counter


def to_unit(images: torch.Tensor, image_range=(-1.0, 1.0)) -> torch.Tensor:
    """Generated images in ``image_range`` -> [0, 1] (clamped)."""
    lo, hi = image_range
    return ((images.float() - lo) / (hi - lo)).clamp(0, 1)


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: E[softplus(-D(G(z)))] = BCE(D(G(z)), 1)."""
    return F.softplus(-d_fake).mean()


def discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor):
    """``(loss_real, loss_fake)`` = (E[softplus(-D(x))], E[softplus(D(G(z)))])."""
    return F.softplus(-d_real).mean(), F.softplus(d_fake).mean()


def r1_penalty(d_real: torch.Tensor, x_real: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E_x ||grad_x D(x)||^2, differentiable (double backward).

    ``x_real`` must require grad and ``d_real`` = D(x_real) (B, ...). Returns a scalar: the batch
    mean of the per-sample squared gradient norm."""
    (grad,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=create_graph)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """p_ema <- beta p_ema + (1 - beta) p for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters()]
    m_params = [p.detach() for p in model.parameters()]
    if e_params:
        torch._foreach_mul_(e_params, beta)
        torch._foreach_add_(e_params, m_params, alpha=1.0 - beta)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


# --------------------------------------------------------------------------------------------------
# Distributed


def setup_distributed(device: str = "auto"):
    """Initialise torch.distributed from torchrun's environment if WORLD_SIZE > 1 (and not yet
    initialised). Returns ``(rank, world_size, device)``."""
    dev = resolve_device(device)
    if not dist.is_available():
        return 0, 1, dev
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        if dev.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1)))
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        return rank, world, dev
    return 0, 1, dev


def tune_cpu_allocator() -> bool:
    """Keep freed memory in the process (glibc: no mmap for large blocks, no trimming).

    A GAN step allocates and frees tensors of 100+ MB many times; served by fresh ``mmap``s every
    time, each first touch page-faults, which on a 2-core VM costs as much as the arithmetic.
    Returns True when the setting was applied (glibc only)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """:func:`aware3d.utils.device.pick_device` (``"auto"``: CUDA when available)."""
    from ..utils.device import pick_device

    return device if isinstance(device, torch.device) else pick_device(device)


# --------------------------------------------------------------------------------------------------
# The engine


def lazy_ratio(cfg: GanConfig, net: str) -> float:
    """StyleGAN2's correction for a regulariser that runs as its own optimiser step every k steps
    (k + 1 steps of that optimiser per k of the main loss): ``k / (k + 1)``, which multiplies the
    network's learning rate and is the exponent of its Adam betas (official VolumeGAN / StyleGAN2:
    D lr x 16/17 and betas ** (16/17) with lazy R1 every 16 steps). ``net`` is ``"D"`` (lazy R1:
    ``r1_weight`` > 0 and ``r1_interval`` > 1) or ``"G"`` (the path-length phase: ``pl_weight`` >
    0, k = ``pl_interval``). 1.0 without ``cfg.lazy_correction`` or without such a regulariser."""
    if not getattr(cfg, "lazy_correction", False):
        return 1.0
    if net == "D":
        k = int(cfg.r1_interval) if cfg.r1_weight > 0 and int(cfg.r1_interval) > 1 else 0
    elif net == "G":
        k = max(int(cfg.pl_interval), 1) if getattr(cfg, "pl_weight", 0.0) > 0 else 0
    else:
        raise ValueError(f"lazy_ratio: net is 'G' or 'D', got {net!r}")
    return k / (k + 1) if k > 0 else 1.0


def _make_optimizer(cfg: GanConfig, params, lr: float, ratio: float = 1.0):
    """RMSprop or Adam at ``lr`` x ``ratio`` (Adam: betas ** ``ratio``; :func:`lazy_ratio`)."""
    name = cfg.optimizer.lower()
    if ratio != 1.0:
        lr = lr * ratio
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8)
    if name == "adam":
        betas = tuple(cfg.betas) if ratio == 1.0 else tuple(float(b) ** ratio for b in cfg.betas)
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8)
    raise ValueError(f"optimizer: expected 'rmsprop' or 'adam', got {cfg.optimizer!r}")


class _SumOverRanks(torch.autograd.Function):
    """all_reduce (sum) with its gradient: the backward sums the ranks' gradients (a quantity of the
    global batch, e.g. the path lengths' mean, feeds every rank's loss)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _to(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in inputs.items()}


class GanEngine:
    """Holds G, D, G_ema, both optimisers and the run's random generator; runs the phases.

    ``rank`` / ``world_size`` default to the torch.distributed group when one is initialised."""

    def __init__(self, method: GanMethod, cfg: GanConfig, device: torch.device | str | None = None,
                 rank: int | None = None, world_size: int | None = None):
        self.method, self.cfg = method, cfg
        self.device = resolve_device(device if device is not None else cfg.device)
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size: the global batch {cfg.batch_size} must divide over "
                             f"{self.world} processes")
        self.local_batch = cfg.batch_size // self.world
        self.G = method.generator.to(self.device)
        self.D = method.discriminator.to(self.device).to(memory_format=torch.channels_last)
        if self.world > 1:
            self._broadcast_params(self.G)
            self._broadcast_params(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g = _make_optimizer(cfg, self.G.parameters(), cfg.lr_g, lazy_ratio(cfg, "G"))
        self.opt_d = _make_optimizer(cfg, self.D.parameters(), cfg.lr_d, lazy_ratio(cfg, "D"))
        self.rng = torch.Generator().manual_seed(int(cfg.seed))
        self.step = 0
        self.pl_on = getattr(cfg, "pl_weight", 0.0) > 0
        if self.pl_on:
            if getattr(method, "path_length_forward", None) is None:
                raise ValueError(f"pl_weight: {method.name} has no path_length_forward(G, inputs) -> (images, ws)")
            self.pl_batch = max(cfg.batch_size // max(int(cfg.pl_batch_shrink), 1), 1)
            if self.pl_batch % self.world:
                raise ValueError(f"pl_batch_shrink: the path-length batch {self.pl_batch} must divide over "
                                 f"{self.world} processes")
            self.pl_mean = torch.zeros((), device=self.device)
        lo, hi = method.image_range
        self._real_scale, self._real_shift = (hi - lo) / 2.0, (hi + lo) / 2.0

    # -- random draws: one global draw, each rank keeps its slice ----------------------------------
    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        return self._slice_n(x, self.cfg.batch_size)

    def _slice_n(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """This rank's part of a global batch of ``n``."""
        k = n // self.world
        return x[self.rank * k:(self.rank + 1) * k]

    def draw_inputs(self, train: bool = True) -> dict:
        inputs = self.method.sample_inputs(self.cfg.batch_size, self.rng, train)
        return _to({k: self._slice(v) if torch.is_tensor(v) else v for k, v in inputs.items()}, self.device)

    def draw_real(self, dataset) -> torch.Tensor:
        """Real batch from ``dataset.sample(n, generator)`` ([-1, 1]) mapped to the image range."""
        x = dataset.sample(self.cfg.batch_size, self.rng)
        x = self._slice(torch.as_tensor(x)).to(self.device, torch.float32)
        return (x * self._real_scale + self._real_shift).contiguous(memory_format=torch.channels_last)

    # -- gradient averaging ------------------------------------------------------------------------
    def _broadcast_params(self, module: nn.Module) -> None:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def _average_grads(self, module: nn.Module) -> None:
        if self.world == 1:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for p in params:
            n = p.numel()
            p.grad = flat[off:off + n].view_as(p).clone()
            off += n

    def _clip(self, module: nn.Module) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), float(self.cfg.grad_clip))

    # -- phases ------------------------------------------------------------------------------------
    def phase_generator(self, ema: bool = True) -> dict:
        """G: minimise the non-saturating loss of D on fresh fakes (or the method's
        ``generator_objective(G, D, inputs) -> (loss, scalars)`` where it has one); then the EMA
        update (unless ``ema`` is False: a PL phase follows and updates it)."""
        self.G.train().requires_grad_(True)
        self.D.train().requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        objective = getattr(self.method, "generator_objective", None)
        if objective is not None:
            loss, out = objective(self.G, self.D, self.draw_inputs(train=True))
        else:
            fake = self.G(self.draw_inputs(train=True))
            loss = generator_loss(self.D(fake))
            out = {"loss_G": loss.detach()}
        loss.backward()
        self._average_grads(self.G)
        self._clip(self.G)
        self.opt_g.step()
        if ema:
            ema_update(self.G_ema, self.G, self.cfg.ema_beta)
        return out

    def phase_path_length(self) -> dict:
        """PL: the path-length penalty's own G step (:mod:`aware3d.nets.path_length`) on
        ``pl_batch`` fresh inputs and noise (drawn globally from the run's generator, each rank
        keeping its slice; the running mean uses the global batch mean, all-reduced with its
        gradient, so N processes compute the gradient of one with the global batch), weighted by
        ``pl_weight x pl_interval``; then the EMA update."""
        from ..nets.path_length import path_length_penalty

        cfg, n = self.cfg, self.pl_batch
        self.G.train().requires_grad_(True)
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        inputs = self.method.sample_inputs(n, self.rng, True)
        inputs = _to({k: self._slice_n(v, n) if torch.is_tensor(v) else v for k, v in inputs.items()}, self.device)
        images, ws = self.method.path_length_forward(self.G, inputs)
        noise = self._slice_n(torch.randn((n, *images.shape[1:]), generator=self.rng), n).to(images.device)

        def batch_mean(lengths):  # over the global batch, differentiable: its gradient reaches every rank
            if self.world == 1:
                return lengths.mean()
            return _SumOverRanks.apply(lengths.sum()) / (lengths.shape[0] * self.world)

        pen, lengths, mean = path_length_penalty(images, ws, self.pl_mean, cfg.pl_decay, noise, batch_mean)
        self.pl_mean.copy_(mean)
        (pen.mean() * (cfg.pl_weight * max(int(cfg.pl_interval), 1))).backward()
        self._average_grads(self.G)
        self.opt_g.step()
        ema_update(self.G_ema, self.G, cfg.ema_beta)
        return {"PL": pen.detach().mean(), "pl_length": lengths.detach().mean()}

    def phase_discriminator(self, real: torch.Tensor, with_r1: bool) -> dict:
        """D: real vs fresh fakes (generated without gradient), + R1 on the reals if ``with_r1``
        (or the method's ``discriminator_objective(G, D, real, inputs, r1_weight) -> (loss,
        scalars)`` where it has one; ``r1_weight`` is 0 on steps without inline R1)."""
        self.G.train().requires_grad_(False)
        self.D.train().requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        objective = getattr(self.method, "discriminator_objective", None)
        if objective is not None:
            r1 = self.cfg.r1_weight if with_r1 else 0.0
            loss, out = objective(self.G, self.D, real, self.draw_inputs(train=True), r1)
            loss.backward()
            self._average_grads(self.D)
            self._clip(self.D)
            self.opt_d.step()
            return out
        x_real = real.detach().requires_grad_(with_r1)
        d_real = self.D(x_real)
        with torch.no_grad():
            fake = self.G(self.draw_inputs(train=True))
        d_fake = self.D(fake)
        l_real, l_fake = discriminator_loss(d_real, d_fake)
        loss = l_real + l_fake
        out = {"loss_D": (l_real + l_fake).detach(), "loss_D_real": l_real.detach(),
               "loss_D_fake": l_fake.detach(), "D_real": d_real.detach().mean(),
               "D_fake": d_fake.detach().mean(), "fake_std": fake.detach().float().std()}
        if with_r1:
            pen = r1_penalty(d_real, x_real)
            loss = loss + self.cfg.r1_weight * pen
            out["R1"] = pen.detach()
        loss.backward()
        self._average_grads(self.D)
        self._clip(self.D)
        self.opt_d.step()
        return out

    def phase_r1(self, real: torch.Tensor) -> dict:
        """Lazy R1: its own D step every ``r1_interval`` steps, weighted by the interval."""
        self.D.train().requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        x_real = real.detach().requires_grad_(True)
        pen = r1_penalty(self.D(x_real), x_real)
        (self.cfg.r1_weight * self.cfg.r1_interval * pen).backward()
        self._average_grads(self.D)
        self.opt_d.step()
        return {"R1": pen.detach()}

    def phases(self, step: int) -> list[str]:
        """Names of the phases run at (0-based) ``step``."""
        k = max(int(self.cfg.r1_interval), 1)
        gs = ["G"] * max(int(getattr(self.cfg, "g_steps", 1)), 1)
        if getattr(self, "pl_on", False) and step % max(int(self.cfg.pl_interval), 1) == 0:
            gs = [*gs, "PL"]
        names = ["D", *gs] if self.cfg.d_first else [*gs, "D"]
        if k > 1 and self.cfg.r1_weight > 0 and step % k == 0:
            names.append("R1")
        return names

    def train_step(self, dataset) -> dict:
        """One training step (all its phases) on a real batch drawn from ``dataset``."""
        names = self.phases(self.step)
        inline_r1 = self.cfg.r1_weight > 0 and max(int(self.cfg.r1_interval), 1) == 1
        out = {}
        g_steps = max(int(getattr(self.cfg, "g_steps", 1)), 1)
        pl_now = "PL" in names

        def generator_phases():
            for i in range(g_steps):
                out.update(self.phase_generator(ema=not (pl_now and i == g_steps - 1)))
            if pl_now:  # official VolumeGAN / StyleGAN2 order: G, PL, D, R1
                out.update(self.phase_path_length())

        if self.cfg.d_first:  # the real batch is drawn first, then D's fakes, then G's inputs
            real = self.draw_real(dataset)
            out.update(self.phase_discriminator(real, with_r1=inline_r1))
            generator_phases()
        else:
            generator_phases()
            real = self.draw_real(dataset)
            out.update(self.phase_discriminator(real, with_r1=inline_r1))
        if "R1" in names:
            out.update(self.phase_r1(real))
        self.step += 1
        if self.world > 1:  # report global-batch means, as one process would
            keys = sorted(out)
            vals = torch.stack([out[k].float().reshape(()) for k in keys])
            dist.all_reduce(vals)
            out = dict(zip(keys, vals / self.world))
        return {k: float(v) for k, v in out.items()}

    # -- sampling ----------------------------------------------------------------------------------
    def fixed_inputs(self, n: int | None = None) -> dict:
        """The sample grid's inputs: drawn from ``sample_seed``, never from the run's generator."""
        g = torch.Generator().manual_seed(int(self.cfg.sample_seed))
        return _to(self.method.sample_inputs(n or self.cfg.n_sample_grid, g, False), self.device)

    @torch.no_grad()
    def sample_grid(self, inputs: dict | None = None, chunk: int = 16) -> torch.Tensor:
        """EMA images of the fixed inputs tiled into one (H, W, 3) image in [0, 1]."""
        from .io import make_grid

        inputs = inputs if inputs is not None else self.fixed_inputs()
        n = next(v for v in inputs.values() if torch.is_tensor(v)).shape[0]
        imgs = []
        for a in range(0, n, chunk):
            part = {k: v[a:a + chunk] if torch.is_tensor(v) else v for k, v in inputs.items()}
            imgs.append(self.G_ema(part).float())
        x = torch.cat(imgs)
        lo, hi = self.method.image_range
        x = ((x - lo) / (hi - lo)).clamp(0, 1).permute(0, 2, 3, 1).cpu()
        return make_grid(x, nrow=int(math.ceil(math.sqrt(n))))

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        from .io import get_rng_state

        return {"step": self.step, "G": self.G.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "rng": self.rng.get_state(),
                "global_rng": get_rng_state(), "method": self.method.name,
                "world_size": self.world, **({"pl_mean": self.pl_mean.detach().cpu()} if self.pl_on else {})}

    def load_state_dict(self, state: dict) -> None:
        from .io import set_rng_state

        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.rng.set_state(state["rng"])
        if "global_rng" in state:
            set_rng_state(state["global_rng"])
        if self.pl_on and "pl_mean" in state:
            self.pl_mean.copy_(state["pl_mean"])
        self.step = int(state["step"])


# --------------------------------------------------------------------------------------------------
# The loop


def start_summary(name: str, config: dict, dataset, cfg: GanConfig, device, world: int, run_dir,
                  resume_step: int = 0) -> str:
    """What a GAN run is about to do: data (images, resolution), preset, batch, device and threads
    (processes), budget and run folder."""
    res = config.get("resolution")
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else None
    budget = (f"{cfg.max_minutes:g} minutes of training" if cfg.max_minutes is not None else
              f"{cfg.max_steps} steps")
    lines = [
        f"aware3d train {name}" + (f" (resuming at step {resume_step})" if resume_step else ""),
        f"  data:    {config.get('data', '?')} (image folder; {len(dataset)} images"
        + (f" at {res}x{res})" if res else ")"),
        f"  preset:  {config.get('preset', '?')}, batch {cfg.batch_size}",
        f"  device:  {device}" + (f" ({threads} threads of {os.cpu_count()} cores)" if threads else "")
        + (f", {world} processes" if world > 1 else ""),
        f"  budget:  {budget}" + (" (data loading and the first step's warm-up are not counted)"
                                  if cfg.max_minutes is not None else ""),
        f"  run:     {run_dir}",
    ]
    return "\n".join(lines)


def train_gan(method: GanMethod, dataset, run_dir, cfg: GanConfig, *, resume: bool = False,
              config: dict | None = None, on_step: Callable[[GanEngine, dict], Any] | None = None,
              engine_cls: type | None = None) -> Path:
    """Train until ``cfg.max_steps`` (total, counting resumed steps) or ``cfg.max_minutes`` (of
    training-step time in this invocation: data loading, the first step's warm-up, sample grids and
    checkpoints are not counted; checked before each step, so a run stops within one step of it)
    and return the run folder. ``config`` (plain data) is written to the run folder
    with the engine settings; rank 0 alone writes. ``on_step(engine, scalars)`` (returning ``"checkpoint"`` saves one now) is called after
    every step (tests, custom logging). ``engine_cls`` swaps in a :class:`GanEngine` subclass
    (a method with its own phase losses)."""
    from .io import RunLock, prepare_run_dir

    if cfg.max_steps is None and cfg.max_minutes is None:
        raise ValueError("train_gan: give max_steps or max_minutes (otherwise training never ends)")
    rank, world, device = setup_distributed(cfg.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    run_dir = Path(run_dir)
    plain = {**(config or {}), "gan": dataclasses.asdict(cfg), "world_size": world}
    lock = None
    if rank == 0:
        prepare_run_dir(run_dir, method.name, plain, resume=resume, write=False)
        lock = RunLock(run_dir).acquire()  # one trainer per run folder
    try:
        return _train_gan_locked(method, dataset, run_dir, cfg, resume, plain, on_step, engine_cls,
                                 rank, world, device)
    finally:
        if lock is not None:
            lock.release()


def _train_gan_locked(method, dataset, run_dir: Path, cfg: GanConfig, resume: bool, plain: dict,
                      on_step, engine_cls, rank: int, world: int, device) -> Path:
    from .io import (ScalarLogger, clean_orphan_temps, install_sigint_checkpoint, latest_checkpoint,
                     load_checkpoint, save_checkpoint, save_png, write_run_config)

    if rank == 0:
        clean_orphan_temps(run_dir, report=cfg.progress)
    if world > 1:
        dist.barrier()
    engine = (engine_cls or GanEngine)(method, cfg, device=device, rank=rank, world_size=world)
    resumed = resume and latest_checkpoint(run_dir) is not None
    if resumed:
        state = load_checkpoint(run_dir, map_location="cpu")
        try:
            engine.load_state_dict(state)
        except RuntimeError as e:  # networks of other shapes: settings that change the architecture
            from .io import RunDirError

            first = str(e).strip().splitlines()[0]
            raise RunDirError(f"{run_dir}: cannot resume: its checkpoint (step {state.get('step')}) does not fit "
                              f"the networks of these settings ({first}); a --set that changes the "
                              f"architecture (e.g. resolution) needs a new --out. Nothing was changed.") from e
    if rank == 0:  # written once the checkpoint it resumes has loaded: a rejected resume changes nothing
        write_run_config(run_dir, method.name, plain)
    config = {k: v for k, v in plain.items() if k not in ("gan", "world_size")}
    logger = ScalarLogger(run_dir, resume_step=engine.step if resumed else None) if rank == 0 else None
    fixed = engine.fixed_inputs() if rank == 0 else None

    def checkpoint():
        if rank == 0:
            save_checkpoint(run_dir, engine.step, engine.state_dict(), keep=cfg.keep_checkpoints)

    def samples():
        if rank == 0:
            grid = engine.sample_grid(fixed)
            save_png(run_dir / "samples" / f"step_{engine.step:08d}.png", grid)
            logger.log_image(engine.step, "samples", grid)

    bar = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        print(start_summary(method.name, config or {}, dataset, cfg, device, world, run_dir,
                            resume_step=engine.step if resumed else 0), file=sys.stderr, flush=True)
        bar = tqdm(total=cfg.max_steps, initial=engine.step, unit="step", dynamic_ncols=True,
                   desc=f"{method.name}", smoothing=0.1)
    train_seconds, first = 0.0, True  # the budget: step time after the first (warm-up) step
    start_step = engine.step
    last_saved = engine.step
    collapse = CollapseWatch(cfg.collapse_steps)
    try:
        with install_sigint_checkpoint(checkpoint, defer=True) as guard:
            if engine.step == 0 and cfg.sample_every > 0:
                samples()
            while True:
                if cfg.max_steps is not None and engine.step >= cfg.max_steps:
                    break
                if cfg.max_minutes is not None and train_seconds / 60.0 >= cfg.max_minutes:
                    break
                t_step = step_clock()
                scalars = engine.train_step(dataset)
                dt = step_clock() - t_step
                if first:  # warm-up: first-use allocations and caches, not counted in the budget
                    first = False
                    if bar is not None and dt > 2.0:
                        bar.write(f"first step took {dt:.1f} s (warm-up; not counted in the training time)",
                                  file=sys.stderr)
                else:
                    train_seconds += dt
                counted = engine.step - start_step - 1
                ips = (counted if counted > 0 else 1) * cfg.batch_size / max(train_seconds if counted > 0 else dt,
                                                                             1e-9)
                scalars["images_per_s"] = ips
                wanted = on_step(engine, scalars) if on_step is not None else None
                warning = collapse.update(engine.step, scalars)
                if warning and rank == 0:
                    import warnings

                    (bar.write if bar is not None else print)(f"WARNING: {warning}")
                    warnings.warn(warning, RuntimeWarning, stacklevel=2)
                if rank == 0:
                    if cfg.log_every > 0 and (engine.step % cfg.log_every == 0 or engine.step == 1):
                        logger.log(engine.step, scalars)
                    if bar is not None:
                        post = {"img/s": f"{ips:.1f}", "G": f"{scalars['loss_G']:.3f}",
                                "D": f"{scalars['loss_D']:.3f}"}
                        if cfg.max_minutes is not None:
                            post["min_left"] = f"{max(cfg.max_minutes - train_seconds / 60, 0):.1f}"
                        bar.set_postfix(post, refresh=False)
                        bar.update(1)
                    if cfg.sample_every > 0 and engine.step % cfg.sample_every == 0:
                        samples()
                    if (cfg.checkpoint_every > 0 and engine.step % cfg.checkpoint_every == 0) or wanted == "checkpoint":
                        checkpoint()
                        last_saved = engine.step
                guard.check()
            if engine.step != last_saved:
                checkpoint()
            if rank == 0 and cfg.sample_every > 0 and engine.step % cfg.sample_every != 0:
                samples()
    finally:
        if bar is not None:
            bar.close()
        if logger is not None:
            logger.close()
    if world > 1:
        dist.barrier()
    return run_dir
