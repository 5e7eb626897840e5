"""Elementwise tasks in numpy: merge builds on the CPU that never import torch.

Consumes: a task `capable` accepts (a `Convert`, or a `Combine` whose method has a
`numpy_formula`: linear, task arithmetic; float32, float16 or bfloat16 in and out) and
its inputs as stored, numpy arrays over the stored bytes (bfloat16 as uint16).
Produces: the output as a numpy array of the output dtype's bytes (bfloat16 as uint16),
the reads that may hold NaN/inf, and whether the output may.

Why: on the bench machine, starting torch takes 2.3 s, three times as long as the bytes of
a 0.75 GB merge take to move (docs/speed.md); numpy starts in a tenth of a second.
The arithmetic is the torch path's (execute/fused.py), slice for slice: each slice of the
inputs becomes float32 in a reused buffer, runs through the method's `numpy_formula` (the
same float32 operations in the same order as its torch formula), then takes the output
dtype. bfloat16 becomes float32 by a 16-bit shift (exact) and float32 becomes bfloat16 by
round-to-nearest-even on the bits, a NaN as 0xFFFF: what torch's vectorised cast does
(checked on every 32-bit pattern class in tests/test_speed_paths.py). So a build writes the
same bytes with either engine; the tests compare them.

The slices are shared out among threads as in fused.py (numpy releases the GIL in its
loops); the thread count is OMP_NUM_THREADS, else the CPUs this process may run on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial

import numpy as np

from recipe_compiler import methods
from recipe_compiler.compiler.plan import Combine, Convert, Read, Task
from recipe_compiler.execute.fused import share_out

SLICE = 32 * 1024  # entries: the float32 buffers of a slice stay in L2
STORED = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_NAN_BF16 = 0xFFFF


def capable(task: Task) -> bool:
    """Whether this module computes `task` (otherwise torch does)."""
    expr = task.expr
    if task.out.dtype not in STORED or any(r.dtype not in STORED for r in task.reads):
        return False
    if isinstance(expr, Convert):
        return True
    return isinstance(expr, Combine) and methods.get(expr.method).numpy_formula is not None


def stored_bytes(a: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def run(task: Task, raw: dict[Read, np.ndarray], check: set[Read], out_check: bool = True
        ) -> tuple[np.ndarray, list[Read], bool]:
    """The output; the reads in `check` that may hold NaN/inf (in the task's order); and
    whether the output may (tested only with `out_check`)."""
    out = np.empty(task.out.shape, dtype=STORED[task.out.dtype])
    work = partial(_slices, task, out.reshape(-1), check, out_check)
    flagged, bad = share_out(task, raw, work, SLICE, workers(), _pool)
    return out, flagged, bad


class _Buffers:
    """One worker's float32 slices: one per input (a bfloat16 input's low halves stay
    zero, so only its high halves are written), the result and a scratch."""

    def __init__(self, flat: dict[Read, np.ndarray], m: int):
        self.ins = {r: np.zeros(m, dtype=np.uint32 if r.dtype == "BF16" else np.float32)
                    for r in flat}
        self.y = np.empty(m, dtype=np.float32)
        self.tmp = np.empty(m, dtype=np.float32)
        self.bits = np.empty(m, dtype=np.uint32)


def _slices(task: Task, flat_out: np.ndarray, check: set[Read], out_check: bool,
            flat: dict[Read, np.ndarray], starts: Iterator[int]) -> tuple[set[Read], bool]:
    with np.errstate(all="ignore"):  # overflow and NaN are found and reported, not warned
        return _slices_quietly(task, flat_out, check, out_check, flat, starts)


def _slices_quietly(task: Task, flat_out: np.ndarray, check: set[Read], out_check: bool,
                    flat: dict[Read, np.ndarray], starts: Iterator[int]
                    ) -> tuple[set[Read], bool]:
    n = flat_out.size
    bufs = _Buffers(flat, min(n, SLICE))
    reads = list(flat)  # in the task's order; lists, as hashing a Read per slice costs
    arrays = [flat[r] for r in reads]
    ins = [bufs.ins[r] for r in reads]
    checked = [r in check for r in reads]
    formula = _formula_of(task, reads)
    flagged: set[Read] = set()
    out_bad = False
    for at in starts:
        m = min(SLICE, n - at)
        xs = [_as_float32(r, a[at:at + m], buf[:m]) for r, a, buf in zip(reads, arrays, ins)]
        y = formula(xs, bufs.y[:m], bufs.tmp[:m])
        calm = bool(np.isfinite(np.dot(y, y)))
        if not calm:  # some value is large, NaN or inf: find which inputs hold NaN/inf
            for r, x, c in zip(reads, xs, checked):
                if c and r not in flagged and not np.isfinite(x.sum()):
                    flagged.add(r)
        if _store(y, flat_out[at:at + m], task.out.dtype, bufs.bits[:m],
                  out_check and not out_bad, calm):
            out_bad = True
    return flagged, out_bad


def _as_float32(r: Read, a: np.ndarray, buf: np.ndarray) -> np.ndarray:
    if r.dtype == "F32":
        return a
    if r.dtype == "BF16":
        np.left_shift(a, 16, out=buf, dtype=np.uint32)
        return buf.view(np.float32)
    np.copyto(buf, a)  # float16: exact
    return buf


def _formula_of(task: Task, reads: list[Read]):
    """`merge.float_result` on slices, as a function of the slices of `reads` (in that
    order), the result buffer and a scratch: the formula, then the scale."""
    expr = task.expr
    if isinstance(expr, Convert):
        if expr.scale is None:
            return lambda xs, y, tmp: xs[0]
        scale = np.float32(expr.scale)
        return lambda xs, y, tmp: np.multiply(xs[0], scale, out=y)
    assert isinstance(expr, Combine)
    method = methods.get(expr.method)
    if method.needs_base and expr.base is None:
        raise ValueError(f"{expr.method} needs the base model's tensor")
    params = {"weights": expr.weights, "key": expr.key, **dict(expr.params)}
    at = [reads.index(r) for r in expr.inputs]
    b = reads.index(expr.base) if expr.base is not None else None
    scale = None if expr.scale is None else np.float32(expr.scale)

    def formula(xs: list[np.ndarray], y: np.ndarray, tmp: np.ndarray) -> np.ndarray:
        method.numpy_formula([xs[k] for k in at], None if b is None else xs[b], params, y,
                             tmp)
        if scale is not None:
            np.multiply(y, scale, out=y)
        return y

    return formula


# The least float32 magnitude each cast rounds to inf.
_OVERFLOW = {"F16": np.float32(65520.0),
             "BF16": np.array([0x7F7F8000], dtype=np.uint32).view(np.float32)[0]}


def _store(y: np.ndarray, dst: np.ndarray, dtype: str, bits: np.ndarray, check: bool,
           calm: bool = False) -> bool:
    """Cast the float32 slice `y` into `dst` (stored bytes of `dtype`); with `check`, True
    when the result may hold NaN/inf (False: it surely holds none). `calm`: y·y is finite,
    so every value is finite and below 2**64 in magnitude, far from bfloat16's overflow."""
    # bfloat16 needs the test anyway: a NaN's bits do not round to a NaN
    finite = calm or (bool(np.isfinite(y.sum())) if check or dtype == "BF16" else True)
    if dtype == "F32":
        dst[...] = y
    elif dtype == "F16":
        np.copyto(dst, y, casting="unsafe")  # round to nearest even, as torch
    else:  # bfloat16: round to nearest even on the bits
        u = y.view(np.uint32)
        np.right_shift(u, 16, out=bits)
        np.bitwise_and(bits, 1, out=bits)
        np.add(bits, 0x7FFF, out=bits)
        np.add(bits, u, out=bits)
        np.right_shift(bits, 16, out=bits)
        np.copyto(dst, bits, casting="unsafe")
        if not finite:
            dst[np.isnan(y)] = _NAN_BF16
    if not check or (calm and dtype == "BF16"):
        return False
    if finite and dtype in _OVERFLOW:  # a finite value may round to inf
        limit = _OVERFLOW[dtype]
        return bool(y.max() >= limit or y.min() <= -limit)
    return not finite


@cache
def workers() -> int:
    """Threads computing slices: OMP_NUM_THREADS (as torch reads it), else the CPUs."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, workers() - 1), thread_name_prefix="tailor-np-slice")
