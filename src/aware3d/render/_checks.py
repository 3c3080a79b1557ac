"""Argument checks shared by the rendering core.

Every public function of :mod:`aware3d.render` validates its tensors with these helpers so that a
wrong shape, dtype or device fails at the call with a message naming the argument, the shape it got
and the shape it expected, instead of deep inside a broadcast.
"""
from __future__ import annotations

from typing import Sequence

import torch


class ShapeError(ValueError):
    """A tensor argument has the wrong shape, dtype or device."""


def _fmt(spec: Sequence[object]) -> str:
    return "(" + ", ".join(str(s) for s in spec) + ")"


def check_tensor(name: str, t: object, trailing: Sequence[int | None] = (), *,
                 min_dims: int | None = None, floating: bool = False) -> torch.Tensor:
    """Check that ``t`` is a tensor whose last dims match ``trailing`` (None = any size).

    ``min_dims`` defaults to ``len(trailing)``. Returns ``t`` so calls can be chained.
    """
    if not isinstance(t, torch.Tensor):
        raise ShapeError(f"{name}: expected a torch.Tensor of shape {_fmt(['...', *trailing])}, "
                         f"got {type(t).__name__}")
    need = len(trailing) if min_dims is None else min_dims
    tail = tuple(t.shape[t.dim() - len(trailing):]) if t.dim() >= len(trailing) else None
    ok = t.dim() >= need and tail is not None and all(
        e is None or e == s for e, s in zip(trailing, tail))
    if not ok:
        want = _fmt(["...", *(("*" if e is None else e) for e in trailing)])
        raise ShapeError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise ShapeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t


def check_same_device(**tensors: torch.Tensor) -> None:
    """All given tensors live on one device."""
    devs = {k: v.device for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    if len(set(devs.values())) > 1:
        listing = ", ".join(f"{k} on {d}" for k, d in devs.items())
        raise ShapeError(f"tensors must be on one device: {listing}")


def check_leading(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, ndim_tail_a: int,
                  ndim_tail_b: int) -> None:
    """The batch dims (all but the last ``ndim_tail_*``) of ``a`` and ``b`` are equal."""
    la = tuple(a.shape[: a.dim() - ndim_tail_a])
    lb = tuple(b.shape[: b.dim() - ndim_tail_b])
    if la != lb:
        raise ShapeError(f"{name_a} and {name_b}: leading (batch) dims differ: {name_a} has {la} "
                         f"(shape {tuple(a.shape)}), {name_b} has {lb} (shape {tuple(b.shape)})")
