"""Merge arithmetic on float32 tensors, one function per method.

Consumes: the input tensors of one output tensor (already float32, on the compute device).
Produces: the merged float32 tensor.

The formulas follow mergekit's definitions so that configs carried over from it give the
same numbers (linear, task_arithmetic, ties with magnitude trimming and sum-based sign
election, slerp with its near-parallel fallback to lerp).
"""

from __future__ import annotations

import torch

from .plan import Combine


def combine(expr: Combine, xs: list[torch.Tensor], base: torch.Tensor | None) -> torch.Tensor:
    if expr.method == "linear":
        out = linear(xs, expr.weights, expr.normalize)
    elif expr.method == "task_arithmetic":
        assert base is not None
        out = task_arithmetic(xs, base, expr.weights, expr.normalize)
    elif expr.method == "ties":
        assert base is not None
        out = ties(xs, base, expr.weights, expr.density, expr.normalize)
    elif expr.method == "slerp":
        out = slerp(xs[0], xs[1], expr.t)
    else:  # check.py and the parser only let known methods through
        raise ValueError(f"unknown merge method {expr.method!r}")
    return out * expr.scale if expr.scale is not None else out


def _weighted_sum(ts, weights: tuple[float, ...]) -> torch.Tensor:
    """w0*t0 + w1*t1 + ..., left to right, one temporary at a time."""
    out = None
    for w, t in zip(weights, ts):
        term = w * t
        out = term if out is None else out.add_(term)
    assert out is not None
    return out


def linear(xs: list[torch.Tensor], weights: tuple[float, ...], normalize: bool) -> torch.Tensor:
    out = _weighted_sum(xs, weights)
    total = sum(weights)
    return out.div_(total) if normalize and total != 0 else out


def task_arithmetic(xs: list[torch.Tensor], base: torch.Tensor, weights: tuple[float, ...],
                    normalize: bool) -> torch.Tensor:
    delta = _weighted_sum((x - base for x in xs), weights)
    total = sum(weights)
    if normalize and total != 0:
        delta.div_(total)
    return base + delta


def ties(xs: list[torch.Tensor], base: torch.Tensor, weights: tuple[float, ...],
         density: float, normalize: bool) -> torch.Tensor:
    deltas = torch.stack([trim_magnitude(x - base, density) for x in xs])  # (K, *shape)
    w = torch.tensor(weights, dtype=deltas.dtype, device=deltas.device)
    w = w.view(-1, *([1] * (deltas.dim() - 1)))
    deltas = deltas * w
    # Elect a sign per element from the weighted sum; keep deltas that agree with it.
    elected = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
    mask = (deltas.sign() == elected).to(deltas.dtype)
    mixed = (deltas * mask).sum(dim=0)
    if normalize:
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        mixed = mixed / divisor
    return base + mixed


def trim_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude; zero the rest."""
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    flat = delta.reshape(-1)
    mask = torch.zeros_like(flat)
    if k > 0:
        top = torch.argsort(flat.abs(), descending=True)[:k]
        mask[top] = 1
    return (flat * mask).view_as(delta)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from `a` (t=0) to `b` (t=1), treating each tensor as one vector."""
    na, nb = a.norm(), b.norm()
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    dot = float((ua * ub).sum().clamp(-1.0, 1.0))
    if abs(dot) > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.acos(torch.tensor(dot, dtype=torch.float64))
    sin_theta = torch.sin(theta)
    s0 = float(torch.sin(theta - t * theta) / sin_theta)
    s1 = float(torch.sin(t * theta) / sin_theta)
    return s0 * a + s1 * b
