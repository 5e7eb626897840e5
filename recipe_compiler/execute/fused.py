"""Elementwise tasks computed slice by slice, from the stored bytes to the output dtype.

Consumes: a `Convert` task, or a `Combine` whose method's formula is elementwise (each
output entry depends only on the inputs' entries at the same position; the method module
marks its formula `elementwise = True`), and its inputs as read (bf16, f16 or f32 tensors).
Produces: the output tensor in its dtype, which inputs may hold NaN/inf, and whether the
output may.

Each slice of `SLICE` entries is converted to float32 into a reused buffer, run through the
same formula (and scale) as a whole tensor would be, tested for NaN/inf with a sum while it
is in cache, and cast into its place in the output. The same float32 operations on the same
values, so the bytes are exactly those of the whole-tensor path in execute/__init__.py;
only the working set changes: a few MB that stay in cache instead of five or six float32
copies of the tensor, each written to memory and read back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import TYPE_CHECKING

from recipe_compiler.compiler.plan import Combine, Convert, Read, Task
from recipe_compiler.execute.finite import maybe_nonfinite

if TYPE_CHECKING:
    import torch

# Entries per slice: under torch's grain size (32768), so each op on a slice runs on the
# thread that calls it, with no OpenMP barrier; the slices are shared out among
# `_workers()` threads instead (torch releases the GIL), which keeps every core busy
# without threads spinning at barriers while another process holds a core.
SLICE = 30 * 1024


def run(task: Task, raw: dict[Read, torch.Tensor], check: set[Read], out_dtype: torch.dtype,
        out_check: bool) -> tuple[torch.Tensor, list[Read], bool]:
    """The task's output; the reads in `check` that may hold NaN/inf (in the task's order);
    and whether the output may (tested only with `out_check`)."""
    import torch

    out = torch.empty(task.out.shape, dtype=out_dtype)
    work = partial(_slices, task, out.view(-1), check, out_check)
    flagged, bad = share_out(task, raw, work, SLICE, _workers(), _pool)
    return out, flagged, bad


def share_out(task: Task, raw: dict, work: Callable, slice_len: int, workers: int,
              pool: Callable[[], ThreadPoolExecutor]) -> tuple[list[Read], bool]:
    """Run `work(flat, starts)` in this thread and up to `workers - 1` of `pool()`'s, all
    taking slices of `slice_len` entries from one iterator of slice starts; `flat` holds
    the inputs (torch tensors or numpy arrays) as 1-D views, each checked to have the
    output's entry count. Each call returns (reads that may hold NaN/inf, whether the
    output may); returned merged, the reads in the task's order. Both engines use it."""
    n = math.prod(task.out.shape)
    flat = {r: x.reshape(-1) for r, x in raw.items()}
    for r, x in flat.items():
        if len(x) != n:
            raise ValueError(f"tensor '{r.tensor}' of model '{r.model}' has shape "
                             f"{tuple(raw[r].shape)}, expected {task.out.shape}")
    job = partial(work, flat, iter(range(0, n, slice_len)))  # shared: each takes the next
    helpers = [pool().submit(job) for _ in range(min(workers, -(-n // slice_len)) - 1)]
    found = [job()] + [h.result() for h in helpers]
    flagged = set().union(*(f for f, _ in found))
    return [r for r in flat if r in flagged], any(bad for _, bad in found)


def _slices(task: Task, flat_out: torch.Tensor, check: set[Read], out_check: bool,
            flat: dict[Read, torch.Tensor], starts: Iterator[int]) -> tuple[set[Read], bool]:
    """Compute the slices this worker takes; the reads and whether the result may hold
    NaN/inf."""
    import torch

    n = flat_out.numel()
    bufs = {r: torch.empty(min(n, SLICE), dtype=torch.float32) for r in flat}
    flagged: set[Read] = set()
    out_bad = False
    for at in starts:
        m = min(SLICE, n - at)
        xs = {}
        for r, t in flat.items():
            x = bufs[r][:m]
            x.copy_(t[at:at + m])
            if r in check and r not in flagged and maybe_nonfinite(x):
                flagged.add(r)
            xs[r] = x
        y = flat_out[at:at + m]
        y.copy_(_formula(task, xs))
        if out_check and not out_bad and maybe_nonfinite(y):  # after the cast: it may overflow
            out_bad = True
    return flagged, out_bad


@cache
def _workers() -> int:
    """Threads computing slices: torch's thread count (OMP_NUM_THREADS, or the cores)."""
    import torch

    return max(1, torch.get_num_threads())


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, _workers() - 1), thread_name_prefix="tailor-slice")


def _formula(task: Task, xs: dict[Read, torch.Tensor]) -> torch.Tensor:
    from recipe_compiler.execute.merge import combine

    expr = task.expr
    if isinstance(expr, Convert):
        x = xs[expr.src]
        return x * expr.scale if expr.scale is not None else x
    assert isinstance(expr, Combine)
    return combine(expr, [xs[r] for r in expr.inputs],
                   xs[expr.base] if expr.base is not None else None)
