"""Tensor arithmetic shared by the merge formulas; imported only when a formula runs.

Consumes: float32 tensors (one per model, plus the base model's) and plain numbers.
Produces: float32 tensors. The definitions follow mergekit's (merge_methods/, sparsify.py):
magnitude trimming, sum-based sign election, random drop with L1 rescaling, slerp with its
near-parallel fallback to lerp.
"""

from __future__ import annotations

import hashlib
import math

import torch


def weighted_sum(ts, weights: tuple[float, ...]) -> torch.Tensor:
    """w0*t0 + w1*t1 + ..., left to right, one temporary at a time."""
    out = None
    for w, t in zip(weights, ts):
        term = w * t
        out = term if out is None else out.add_(term)
    assert out is not None, "a merge needs at least one tensor"
    return out


def trim_magnitude(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude; zero the rest.

    The k = int(density * numel) entries kept are those of
    `argsort(|delta|, descending=True, stable=True)[:k]`: the largest magnitudes, and among
    entries tied at the k-th largest, the lowest-indexed. mergekit sorts without `stable`,
    so which tied entries it keeps is whatever its device's sort leaves in front; on bf16
    models, whose task vectors take few distinct values, about 1% of entries can differ
    from its CPU output, each by the threshold's magnitude. Without ties the kept entries
    are the same."""
    flat = delta.reshape(-1)
    keep = Trim.of(flat, density)
    return delta if keep is None else keep.apply(flat, 0).view_as(delta)


class Trim:
    """Which entries of a flat task vector magnitude trimming keeps, found once for the
    whole tensor and applied to any slice of it: those above the k-th largest magnitude
    `kth`, and those equal to it up to index `last` (or an explicit mask, when a NaN makes
    the order a sort's)."""

    def __init__(self, kth: float, last: int, mask: torch.Tensor | None = None):
        self.kth, self.last, self.mask = kth, last, mask

    @classmethod
    def of(cls, flat: torch.Tensor, density: float) -> Trim | None:
        """None: every entry is kept (the delta is returned as it is)."""
        n = flat.numel()
        k = int(density * n) if density < 1 else n
        if k >= n:
            return None
        if k <= 0:  # nothing kept: every entry is multiplied by 0
            return cls(math.inf, -1)
        mag = flat.abs()
        if bool(torch.isnan(mag).any()):  # a sort puts NaN first; kthvalue has no order for it
            mask = torch.zeros_like(mag, dtype=torch.bool)
            mask[torch.argsort(mag, descending=True, stable=True)[:k]] = True
            return cls(math.inf, -1, mask)
        kth = _kth_largest(mag, k)
        short = k - int((mag > kth).sum())  # >= 1: entries equal to kth still to keep
        return cls(kth, int((mag == kth).nonzero()[short - 1]))

    def keep(self, part: torch.Tensor, at: int) -> torch.Tensor:
        """The mask of the slice `part`, which starts at entry `at` of the flat tensor."""
        if self.mask is not None:
            return self.mask[at:at + part.numel()]
        mag = part.abs()
        upto = self.last - at + 1  # entries of the slice where a tie is kept
        if upto >= part.numel():
            return mag >= self.kth
        keep = mag > self.kth
        if upto > 0:
            keep[:upto] = mag[:upto] >= self.kth
        return keep

    def apply(self, part: torch.Tensor, at: int) -> torch.Tensor:
        return part * self.keep(part, at)


def _kth_largest(mag: torch.Tensor, k: int) -> float:
    """The k-th largest entry of a NaN-free 1-D tensor. On the CPU numpy's introselect,
    three times torch's `kthvalue` there (40 vs 150 ms on 12M float32 entries)."""
    n = mag.numel()
    if mag.device.type == "cpu" and mag.dtype in (torch.float32, torch.float64):
        import numpy as np

        return float(np.partition(mag.numpy(), n - k)[n - k])
    return float(torch.kthvalue(mag, n - k + 1).values)


SLICE = 30 * 1024  # entries of a slice's (K, entries) tensors: under torch's grain size
# (32768), so no operation on a slice opens an OpenMP team (the whole-tensor merges run two
# at once, one per core); and its deltas and masks stay in L2


def ties(xs: list, base: torch.Tensor, densities, weights: tuple[float, ...],
         normalize: bool) -> torch.Tensor:
    """base + consensus(stack(trim_magnitude(x - base, d) for x, d)), computed slice by
    slice once each model's trimming threshold is known: the same float32 operations on
    the same entries, without a (K, ...) stack of whole tensors."""
    flats = [x.reshape(-1) for x in xs]
    b = base.reshape(-1)
    trims = [Trim.of(f - b, d) for f, d in zip(flats, densities)]

    def deltas(at: int, to: int) -> torch.Tensor:
        out = torch.empty((len(flats), to - at), dtype=b.dtype, device=b.device)
        for i, (f, trim) in enumerate(zip(flats, trims)):
            torch.sub(f[at:to], b[at:to], out=out[i])
            if trim is not None:
                out[i].mul_(trim.keep(out[i], at))
        return out

    return _sliced(b, deltas, weights, normalize).view_as(base)


def sign_elected(base: torch.Tensor, deltas: list, weights: tuple[float, ...],
                 normalize: bool) -> torch.Tensor:
    """base + consensus(stack(deltas)), slice by slice."""
    flats = [d.reshape(-1) for d in deltas]
    b = base.reshape(-1)
    return _sliced(b, lambda at, to: torch.stack([f[at:to] for f in flats]), weights,
                   normalize).view_as(base)


def _sliced(b: torch.Tensor, deltas, weights: tuple[float, ...], normalize: bool
            ) -> torch.Tensor:
    step = max(1, SLICE // len(weights))
    if b.device.type != "cpu" or b.numel() <= step:
        return b + consensus(deltas(0, b.numel()), weights, normalize)
    out = torch.empty_like(b)
    w = torch.tensor(weights, dtype=b.dtype).view(-1, 1)  # (K, 1), for (K, entries) slices
    for at in range(0, b.numel(), step):
        to = min(at + step, b.numel())
        torch.add(b[at:to], consensus(deltas(at, to), w, normalize), out=out[at:to])
    return out


def seed_for(seed: int, key: str, k: int) -> int:
    """A 63-bit generator seed from the merge's seed, the tensor's name and the model's
    position: stable across runs, machines and Python's hash randomisation."""
    digest = hashlib.blake2b(f"{seed}:{key}:{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def drop_and_rescale(delta: torch.Tensor, density: float, rescale: bool, seed: int) -> torch.Tensor:
    """DARE: keep each entry with probability `density` (a seeded Bernoulli mask drawn on
    the CPU, so every device gets the same one); with `rescale`, scale the kept entries so
    the L1 norm is unchanged (mergekit's RescaleNorm.l1, eps 1e-7)."""
    if density >= 1:
        return delta
    gen = torch.Generator(device="cpu").manual_seed(seed)
    mask = (torch.rand(delta.shape, generator=gen, dtype=torch.float32) < density)
    masked = delta * mask.to(device=delta.device, dtype=delta.dtype)
    if not rescale:
        return masked
    before, after = delta.abs().sum(), masked.abs().sum()
    if before < 1e-7 or after < 1e-7:
        return masked
    return masked * (before / after)


def consensus(deltas: torch.Tensor, weights: tuple[float, ...] | torch.Tensor,
              normalize: bool) -> torch.Tensor:
    """TIES: weight the (K, *shape) deltas, elect a sign per entry from their sum and add
    the deltas that agree with it (divided by their weights' sum with `normalize`).
    `weights` may be given as the (K, 1, ...) tensor this makes of them."""
    w = weights if isinstance(weights, torch.Tensor) else _weights(weights, deltas)
    deltas = deltas * w
    elected = (deltas.sum(dim=0) >= 0).to(deltas.dtype).mul_(2).sub_(1)
    mask = (deltas.sign() == elected).to(deltas.dtype)
    mixed = deltas.mul_(mask).sum(dim=0)
    if normalize:
        divisor = mask.mul_(w).sum(dim=0)
        mixed = mixed.div_(divisor.masked_fill_(divisor == 0, 1))
    return mixed


def _weights(weights: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(weights, dtype=like.dtype, device=like.device)
    return w.view(-1, *([1] * (like.dim() - 1)))  # (K, 1, ...)


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
