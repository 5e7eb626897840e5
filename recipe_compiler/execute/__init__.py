"""Run a plan: the only place that holds tensors during a build.

Consumes: a `Plan` (plan.py) and an empty directory (or nothing, for an in-memory build).
Produces: the plan's safetensors shards in that directory, byte for byte as planned, or a
`{name: tensor}` state dict.

Shard files are laid out up front (header written, file sized), then tasks run in disk
order and write their bytes at their planned offsets. `Copy` tasks move bytes file to file
(`copy_file_range`, no tensor is made); other tasks read their inputs, compute in float32
on the chosen device, and write the result. torch is imported only when a task computes: a
take/drop build is pure byte copies and starts in a fraction of a second.

Speed (docs/speed.md): while a task computes, a reader thread reads the next computing
task's inputs (reader.py), when they fit beside the current task within the plan's
predicted peak; held inputs stay in their stored dtype. On the CPU, elementwise tasks
(conversions, linear, task arithmetic) run slice by slice from the stored bytes to the
output dtype (fused.py), bit for bit the float32 arithmetic of the whole-tensor path, with
the slices shared out among `torch.get_num_threads()` threads; a writer thread writes each
result while the next task computes (writer.py). A CPU build whose every computing task is
a conversion or a linear or task-arithmetic merge runs those slices in numpy instead
(nptasks.py), the same bytes without the 2 s of starting torch.

Non-finite values (NaN, inf) are reported as warnings naming the tensor, never errors (a
model may hold them on purpose, e.g. masks): every floating-point input a task computes
with, every computed output (a cast to float16 can overflow to inf), and every byte-copied
tensor, scanned through a read-only mmap (in a scanning thread that runs ahead of the
copies, so that scanning and copying overlap). The scan reads each byte once more from the
page cache; `check_copies=False` skips it. Computed tensors are
tested with a sum (finite.py), and their values counted only when it is not finite. See
docs/reliability.md.
"""

from __future__ import annotations

import logging
import os  # noqa: F401  (callers reach os.pwrite etc. through this module)
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_compiler.compiler.plan import (
    WHOLE_AT_ONCE,
    Copy,
    Plan,
    Read,
    Task,
    sliced,
    task_memory,
)
from recipe_compiler.execute import fused, nptasks
from recipe_compiler.execute.finite import (
    NONFINITE_DTYPES,
    count_nonfinite_bytes,
    count_nonfinite_tensor,
    maybe_nonfinite,
)
from recipe_compiler.execute.reader import Inputs
from recipe_compiler.execute.writer import ShardFiles, tensor_bytes

_ShardFiles, _tensor_bytes = ShardFiles, tensor_bytes  # the names before writer.py

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True, slots=True)
class Progress:
    tensors: int
    total_tensors: int
    bytes: int
    total_bytes: int


ProgressFn = Callable[[Progress], None]
WarnFn = Callable[[str], None]  # one warning, a line naming the tensor and file

log = logging.getLogger("recipe_compiler")


def log_warning(message: str) -> None:
    """Default warning sink. With no logging configured, Python prints WARNING records
    to stderr as the bare message, which is what a user of `tailorc build` should see."""
    log.warning("tailorc: warning: %s", message)


@cache
def torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
        "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
        "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    }


_Inputs = Inputs  # the name before reader.py
_count_nonfinite_tensor = count_nonfinite_tensor


class _Warnings:
    """Non-finite tensors found during one build, each reported once."""

    def __init__(self, sink: WarnFn | None):
        self.sink = sink or log_warning
        self.seen: set[tuple[str, str]] = set()
        self.count = 0

    def nonfinite(self, key: tuple[str, str], n: int, message: str) -> None:
        if n and key not in self.seen:
            self.seen.add(key)
            self.give(key, n, message)

    def give(self, key: tuple[str, str], n: int, message: str) -> None:
        self.count += 1
        self.sink(f"{message} has {n:,} NaN/inf value(s)")

    def read(self, r: Read, n: int) -> None:
        self.nonfinite((r.file, r.tensor), n, f"{r.file}: tensor '{r.tensor}' of model "
                       f"'{r.model}'")


class _TaskWarnings(_Warnings):
    """The warnings of one task computed in a worker thread, kept until the build's own
    `_Warnings` takes them in task order (`replay`), so that they read the same as when
    every task ran in turn."""

    def __init__(self, build: _Warnings):
        super().__init__(None)
        self.seen = set(build.seen)
        self.found: list[tuple[tuple[str, str], int, str]] = []

    def give(self, key: tuple[str, str], n: int, message: str) -> None:
        self.found.append((key, n, message))

    def replay(self, build: _Warnings) -> None:
        for found in self.found:
            build.nonfinite(*found)


def _as_float(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    import torch

    return t.to(device=device, dtype=torch.float32)


def compute(task: Task, inputs: _Inputs, held: dict[Read, torch.Tensor],
            device: torch.device | None, warnings: _Warnings | None = None) -> torch.Tensor:
    """The output tensor of a non-copy task, in its output dtype, on the CPU. `held` maps
    reads to tensors as stored (CPU); the task's fresh reads are added to it. `device`
    None: the numpy engine (nptasks.py), which holds numpy arrays of the stored bytes and
    returns one (bfloat16 as uint16)."""
    lite = device is None
    fresh = [r for r in dict.fromkeys(task.reads) if r not in held]
    for r in fresh:
        held[r] = inputs.read_array(r) if lite else inputs.read(r)
    if lite or (device.type == "cpu" and sliced(task)):
        raw = {r: held[r] for r in dict.fromkeys(task.reads)}
        check = set(fresh) if warnings else set()
        if lite:
            out, flagged, maybe = nptasks.run(task, raw, check, warnings is not None)
        else:
            out, flagged, maybe = fused.run(task, raw, check, torch_dtypes()[task.out.dtype],
                                            warnings is not None)
        if warnings is not None:
            for r in flagged:  # in the order the task reads them, like the whole path
                x = held[r]
                warnings.read(r, count_nonfinite_bytes(_tensor_bytes(x), 0, x.nbytes, r.dtype)
                              if lite else count_nonfinite_tensor(x))
            _check_output(task, out, maybe, warnings)
        return out
    return _compute_whole(task, held, fresh, device, warnings)


def _compute_whole(task: Task, held: dict[Read, torch.Tensor], fresh: list[Read],
                   device: torch.device, warnings: _Warnings | None) -> torch.Tensor:
    from recipe_compiler.execute.merge import float_result

    floats: dict[Read, torch.Tensor] = {}

    def value(r: Read) -> torch.Tensor:
        if r not in floats:
            floats[r] = _as_float(held[r], device)
            if warnings is not None and r in fresh:
                x = held[r]  # as stored: a cast of float64 may overflow
                warnings.read(r, count_nonfinite_tensor(x) if maybe_nonfinite(x) else 0)
        return floats[r]

    out = float_result(task.expr, value).to(torch_dtypes()[task.out.dtype]).cpu()
    if warnings is not None:
        _check_output(task, out, maybe_nonfinite(out), warnings)
    return out


def _check_output(task: Task, out: torch.Tensor, maybe: bool, warnings: _Warnings) -> None:
    """Warn of NaN/inf in a result computed from finite inputs: an overflow in the merge or
    in the cast. `maybe`: whether the output may hold any (`maybe_nonfinite`)."""
    if any((r.file, r.tensor) in warnings.seen for r in task.reads):
        return
    dtype = task.out.dtype
    if dtype not in NONFINITE_DTYPES or not maybe:
        return
    n = count_nonfinite_bytes(_tensor_bytes(out), 0, out.nbytes, dtype)
    warnings.nonfinite(("", task.out.name), n, f"output tensor '{task.out.name}' (computed "
                       f"from finite inputs; overflow in {dtype}?)")


class _ReadAhead:
    """Which inputs to read while a task computes: those of the next computing task, when
    they fit beside what this task holds within the plan's predicted peak memory."""

    def __init__(self, plan: Plan, cpu: bool):
        self.tasks, self.peak = plan.tasks, plan.peak_bytes
        self.cpu = cpu  # computing on the CPU: elementwise tasks run slice by slice
        self.next: dict[int, int] = {}
        following = None
        for k in range(len(plan.tasks) - 1, -1, -1):
            self.next[k] = following  # type: ignore[assignment]
            if not isinstance(plan.tasks[k].expr, Copy):
                following = k

    def start(self, k: int, inputs: Inputs, busy: int = 0) -> None:
        """`busy`: bytes held by whole-tensor tasks still computing beside task k."""
        j = self.next.get(k)
        if j is None:
            return
        task, nxt = self.tasks[k], self.tasks[j]
        reads = [r for r in dict.fromkeys(nxt.reads) if r not in task.keep]
        if busy + self.holds(task) + sum(r.nbytes for r in reads) <= self.peak:
            inputs.prefetch(reads)

    def holds(self, task: Task) -> int:
        """Bytes the task holds at its peak: its inputs as stored and its output, plus the
        float32 slices when fused; what the plan predicts otherwise."""
        if not (self.cpu and sliced(task)):
            return task_memory(task)
        reads = tuple(dict.fromkeys(task.reads))
        slices = 4 * min(fused.SLICE, task.out.nbytes) * (len(reads) + 4)
        # + the previous output, which the writer thread may still hold
        return sum(r.nbytes for r in reads) + 2 * task.out.nbytes + slices


ENGINES = ("auto", "torch", "numpy")


def numpy_engine(plan: Plan, device: str, engine: str = "auto") -> bool:
    """Whether the plan runs on the torch-free engine (nptasks.py): on the CPU, when every
    task is a copy or one it computes (``engine="auto"``), or always (``"numpy"``, which
    raises ValueError for a plan it cannot run)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (use {', '.join(ENGINES)})")
    able = device == "cpu" and all(isinstance(t.expr, Copy) or nptasks.capable(t)
                                   for t in plan.tasks)
    if engine == "numpy" and not able:
        raise ValueError("the numpy engine runs on the CPU, and only conversions and "
                         "linear or task-arithmetic merges of float32/float16/bfloat16")
    return able and engine != "torch" and not all(isinstance(t.expr, Copy)
                                                   for t in plan.tasks)


def execute(plan: Plan, out_dir: Path, *, device: str = "cpu",
            on_progress: ProgressFn | None = None, on_warning: WarnFn | None = None,
            check_copies: bool = True, engine: str = "auto") -> int:
    """Write the plan's shards into `out_dir`; return the number of warnings given. On
    error, files may be partial: the caller builds into a temporary directory and removes it
    (see output.py). `engine`: see `numpy_engine`; both give the same bytes."""
    lite = numpy_engine(plan, device, engine)
    dev = None if lite else _device(plan, device)
    inputs, shards, warnings, whole = _Inputs(), None, _Warnings(on_warning), None
    try:
        shards = _ShardFiles(plan, out_dir)
        held: dict[Read, torch.Tensor] = {}
        ahead = _ReadAhead(plan, lite or (dev is not None and dev.type == "cpu"))
        if check_copies:  # the scans run ahead of the copies, in their own thread
            inputs.scan_ahead([t.expr.src for t in plan.tasks if isinstance(t.expr, Copy)])
        whole = _Whole(dev, shards, warnings)
        for k, task in enumerate(_with_progress(plan, on_progress)):
            if isinstance(task.expr, Copy):
                src = task.expr.src
                if check_copies and (src.file, src.tensor) not in warnings.seen:
                    warnings.read(src, inputs.count_nonfinite(src))
                shards.copy(task.out, src, inputs)
            elif whole.takes(task):
                whole.start(task, inputs, held)
                ahead.start(k, inputs, whole.busy() - task_memory(task))
            else:
                whole.finish()
                ahead.start(k, inputs)
                out = compute(task, inputs, held, dev, warnings)
                shards.write_later(task.out, out)
            held = {r: held[r] for r in task.keep if r in held}
        whole.finish()
        shards.close()
        return warnings.count
    finally:
        if shards is not None and shards.fds:
            shards.close(sync=False)
        if whole is not None:
            whole.close()
        inputs.close()


class _Whole:
    """Whole-tensor tasks on the CPU (TIES, DARE, slerp: not `sliced`), `WHOLE_AT_ONCE` at a
    time, each in a worker thread. Their time goes mostly to operations that run on one
    core (TIES's sort of every magnitude), so two tasks at once use two cores; the plan's
    predicted peak counts both. Inputs are read on the calling thread, in plan order;
    results are written and warnings given in plan order too."""

    def __init__(self, dev: torch.device | None, shards: ShardFiles, warnings: _Warnings):
        self.cpu = dev is not None and dev.type == "cpu"
        self.dev, self.shards, self.warnings = dev, shards, warnings
        self.pool: ThreadPoolExecutor | None = None
        self.running: list[tuple[Task, Future, _TaskWarnings]] = []

    def takes(self, task: Task) -> bool:
        return self.cpu and not sliced(task)

    def busy(self) -> int:
        return sum(task_memory(t) for t, _, _ in self.running)

    def start(self, task: Task, inputs: Inputs, held: dict[Read, torch.Tensor]) -> None:
        if any(r in held for r in task.reads):
            self.finish()  # an input kept from a running task: its warnings come first
        while len(self.running) >= WHOLE_AT_ONCE:
            self._finish_oldest()
        fresh = [r for r in dict.fromkeys(task.reads) if r not in held]
        for r in fresh:
            held[r] = inputs.read(r)
        mine = {r: held[r] for r in dict.fromkeys(task.reads)}
        found = _TaskWarnings(self.warnings)
        if self.pool is None:
            self.pool = ThreadPoolExecutor(WHOLE_AT_ONCE, thread_name_prefix="tailor-whole")
        job = self.pool.submit(_compute_whole, task, mine, fresh, self.dev, found)
        self.running.append((task, job, found))

    def _finish_oldest(self) -> None:
        task, job, found = self.running.pop(0)
        out = job.result()
        found.replay(self.warnings)
        self.shards.write_later(task.out, out)

    def finish(self) -> None:
        while self.running:
            self._finish_oldest()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def execute_to_state_dict(plan: Plan, *, device: str = "cpu",
                          on_progress: ProgressFn | None = None) -> dict[str, torch.Tensor]:
    """Assemble the planned model in memory (for evaluation without writing a checkpoint)."""
    import torch

    dev = torch.device(device)
    inputs, out = _Inputs(), {}
    try:
        held: dict[Read, torch.Tensor] = {}
        for task in _with_progress(plan, on_progress):
            if isinstance(task.expr, Copy):
                tensor = inputs.read(task.expr.src).clone()
            else:
                tensor = compute(task, inputs, held, dev)
            out[task.out.name] = tensor.to(dev)
            held = {r: held[r] for r in task.keep if r in held}
    finally:
        inputs.close()
    return out


def _device(plan: Plan, device: str) -> torch.device | None:
    if all(isinstance(t.expr, Copy) for t in plan.tasks):
        return None  # nothing to compute: no need to load torch
    import torch

    return torch.device(device)


def _with_progress(plan: Plan, on_progress: ProgressFn | None):
    total_bytes = sum(t.out.nbytes for t in plan.tasks)
    done = 0
    for k, task in enumerate(plan.tasks):
        yield task
        done += task.out.nbytes
        if on_progress is not None:
            on_progress(Progress(k + 1, len(plan.tasks), done, total_bytes))
