"""Tensor arithmetic shared by the merge formulas; imported only when a formula runs.

Consumes: float32 tensors (one per model, plus the base model's) and plain numbers.
Produces: float32 tensors. The definitions follow mergekit's (merge_methods/, sparsify.py):
magnitude trimming, sum-based sign election, random drop with L1 rescaling, slerp with its
near-parallel fallback to lerp.
"""

from __future__ import annotations

import hashlib

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

    Which entries are kept is what mergekit's `argsort(|delta|, descending=True)[:k]`
    keeps, bit for bit. `kthvalue` finds the k-th largest magnitude without a sort; when no
    other entry shares that magnitude, or all those that do are kept, the entries kept are
    exactly those at or above it. When it is 0, every nonzero entry is kept whichever zeros
    the sort picks, and a zero times 1 or 0 is the same zero (sign included): the nonzero
    entries are the answer (a model's delta to itself, all zeros, costs no sort). Otherwise
    torch's (unstable) sort breaks the tie, and only the sort itself can say how: the sort
    then runs as before. bf16 models hit that case (their task vectors take few distinct
    values); float32 ones mostly do not."""
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    flat = delta.reshape(-1)
    mask = torch.zeros_like(flat)
    if k > 0:
        mag = flat.abs()
        keep = None if _ties_likely(mag) else _top_by_threshold(mag, k)
        if keep is not None:
            mask.masked_fill_(keep, 1)
        else:
            mask[torch.argsort(mag, descending=True)[:k]] = 1
    return (flat * mask).view_as(delta)


SAMPLE = 4096


def _ties_likely(mag: torch.Tensor) -> bool:
    """Whether many entries share a magnitude, judged on an evenly spaced sample: then
    entries tie at the threshold too, the sort must settle them, and `kthvalue` (a third of
    a sort's time) would be spent for nothing. bf16 task vectors repeat about half their
    sampled magnitudes; float32 ones almost none. A guess about speed only: either way the
    kept entries are those of the sort."""
    n = mag.numel()
    if n <= SAMPLE:
        return False
    sample = mag[:: n // SAMPLE][:SAMPLE]
    return torch.unique(sample).numel() < 0.9 * SAMPLE


def _top_by_threshold(mag: torch.Tensor, k: int) -> torch.Tensor | None:
    """The k largest entries of `mag` as a bool mask, when the k-th largest value settles
    them; None when entries equal to it must be chosen among, or any is NaN."""
    n = mag.numel()
    if k >= n:
        return torch.ones_like(mag, dtype=torch.bool)
    kth = torch.kthvalue(mag, n - k + 1).values  # the k-th largest
    if not bool(torch.isfinite(kth)):
        return None
    if bool(kth == 0):  # fewer than k nonzero entries: all of them are kept
        return mag > 0 if not bool(torch.isnan(mag).any()) else None
    keep = mag >= kth
    if int(keep.sum()) != k:  # ties at the threshold (or NaN, never >= anything)
        return None
    return keep if not bool(torch.isnan(mag).any()) else None


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


def consensus(deltas: torch.Tensor, weights: tuple[float, ...], normalize: bool) -> torch.Tensor:
    """TIES: weight the (K, *shape) deltas, elect a sign per entry from their sum and add
    the deltas that agree with it (divided by their weights' sum with `normalize`)."""
    w = torch.tensor(weights, dtype=deltas.dtype, device=deltas.device)
    w = w.view(-1, *([1] * (deltas.dim() - 1)))  # (K, 1, ...)
    deltas = deltas * w
    elected = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
    mask = (deltas.sign() == elected).to(deltas.dtype)
    mixed = (deltas * mask).sum(dim=0)
    if normalize:
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        mixed = mixed / divisor
    return mixed


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
