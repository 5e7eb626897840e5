"""Run a plan: the only place that holds tensors during a build.

Consumes: a `Plan` (plan.py) and an empty directory (or nothing, for an in-memory build).
Produces: the plan's safetensors shards in that directory, byte for byte as planned, or a
`{name: tensor}` state dict.

Shard files are laid out up front (header written, file sized), then tasks run in disk
order and write their bytes at their planned offsets. `Copy` tasks move bytes file to file
(`copy_file_range`, no tensor is made); other tasks read their inputs, compute in float32
on the chosen device, and write the result. Memory held is one task's inputs, plus those
the next task reads again. torch is imported only when a task computes: a take/drop
build is pure byte copies and starts in a fraction of a second.

Non-finite values (NaN, inf) are reported as warnings naming the tensor, never errors (a
model may hold them on purpose, e.g. masks): every floating-point input a task computes
with, every computed output (a cast to float16 can overflow to inf), and every byte-copied
tensor, scanned through a read-only mmap before it is copied. The scan reads each byte
once more from the page cache (about 4 GB/s for float32 here): +15-40% on a build whose
inputs are already cached, little on one that reads from disk (the scan pulls the pages in
and the copy then finds them cached); `check_copies=False` skips it. See
docs/reliability.md.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_compiler.compiler.plan import (
    BuildError,
    Combine,
    Convert,
    Copy,
    Output,
    Plan,
    Read,
    Task,
)

if TYPE_CHECKING:
    import torch

CHUNK = 16 * 1024 * 1024


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


class _Inputs:
    """Input files, each opened once for the whole build."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        if path not in self.fds:
            try:
                self.fds[path] = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise BuildError(f"{path}: cannot open ({exc.strerror})") from None
        return self.fds[path]

    def read(self, r: Read) -> torch.Tensor:
        import torch

        dtype = torch_dtypes().get(r.dtype)
        if dtype is None:
            raise BuildError(f"{r.file}: tensor '{r.tensor}' has dtype {r.dtype}, which tailor "
                             "cannot compute with (it can only copy it unchanged)")
        if r.nbytes == 0:
            return torch.empty(r.shape, dtype=dtype)
        buf = bytearray(r.nbytes)
        view, done, fd = memoryview(buf), 0, self.fd(r.file)
        while done < r.nbytes:
            got = os.preadv(fd, [view[done:]], r.begin + done)
            if got == 0:
                raise BuildError(f"{r.file}: ended early while reading tensor '{r.tensor}' of "
                                 f"model '{r.model}' (was the file changed after checking?)")
            done += got
        return torch.frombuffer(buf, dtype=dtype).reshape(r.shape)

    def count_nonfinite(self, r: Read) -> int:
        """NaN/inf values in a tensor's bytes on disk, read through mmap in chunks (no
        tensor is made, torch is not needed); 0 for dtypes that cannot hold them."""
        if r.dtype not in NONFINITE_DTYPES or r.nbytes == 0:
            return 0
        fd = self.fd(r.file)
        page = mmap.ALLOCATIONGRANULARITY
        start = r.begin - r.begin % page
        try:
            m = mmap.mmap(fd, r.end - start, prot=mmap.PROT_READ, offset=start)
        except (OSError, ValueError) as exc:
            raise BuildError(f"{r.file}: cannot read tensor '{r.tensor}' ({exc})") from None
        try:
            bad, step = 0, CHUNK
            for at in range(r.begin - start, r.end - start, step):
                bad += _count_nonfinite(m, at, min(step, r.end - start - at), r.dtype)
            return bad
        finally:
            m.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


NONFINITE_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def _count_nonfinite(buf, offset: int, nbytes: int, dtype: str) -> int:
    import numpy as np

    a = np.frombuffer(buf, dtype=NONFINITE_DTYPES[dtype], count=nbytes // (
        8 if dtype == "F64" else 4 if dtype == "F32" else 2), offset=offset)
    if dtype == "BF16":  # numpy has no bfloat16: all exponent bits set is inf or NaN
        return int(np.count_nonzero((a & 0x7F80) == 0x7F80))
    return a.size - int(np.count_nonzero(np.isfinite(a)))


def _count_nonfinite_tensor(t: torch.Tensor) -> int:
    import torch

    if not t.is_floating_point():
        return 0
    finite = torch.isfinite(t)
    return 0 if bool(finite.all()) else int(t.numel() - finite.sum())


class _Warnings:
    """Non-finite tensors found during one build, each reported once."""

    def __init__(self, sink: WarnFn | None):
        self.sink = sink or log_warning
        self.seen: set[tuple[str, str]] = set()
        self.count = 0

    def nonfinite(self, key: tuple[str, str], n: int, message: str) -> None:
        if n and key not in self.seen:
            self.seen.add(key)
            self.count += 1
            self.sink(f"{message} has {n:,} NaN/inf value(s)")

    def read(self, r: Read, n: int) -> None:
        self.nonfinite((r.file, r.tensor), n, f"{r.file}: tensor '{r.tensor}' of model "
                       f"'{r.model}'")


def _as_float(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    import torch

    return t.to(device=device, dtype=torch.float32)


def compute(task: Task, inputs: _Inputs, held: dict[Read, torch.Tensor],
            device: torch.device, warnings: _Warnings | None = None) -> torch.Tensor:
    """The output tensor of a non-copy task, in its output dtype, on the CPU."""
    from recipe_compiler.execute.merge import combine

    def value(r: Read) -> torch.Tensor:
        if r not in held:
            x = inputs.read(r)
            if warnings is not None:
                warnings.read(r, _count_nonfinite_tensor(x))
            held[r] = _as_float(x, device)
        return held[r]

    expr = task.expr
    if isinstance(expr, Convert):
        out = value(expr.src)
        if expr.scale is not None:
            out = out * expr.scale
    else:
        assert isinstance(expr, Combine)
        xs = [value(r) for r in expr.inputs]
        out = combine(expr, xs, value(expr.base) if expr.base is not None else None)
    out = out.to(torch_dtypes()[task.out.dtype]).cpu()
    if warnings is not None and not any((r.file, r.tensor) in warnings.seen
                                        for r in task.reads):
        # finite inputs, non-finite result: an overflow in the merge or in the cast
        warnings.nonfinite(("", task.out.name), _count_nonfinite_tensor(out),
                           f"output tensor '{task.out.name}' (computed from finite inputs; "
                           f"overflow in {task.out.dtype}?)")
    return out


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    import torch

    flat = t.contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


class _ShardFiles:
    """Output shards, laid out up front so tasks can write in any order."""

    def __init__(self, plan: Plan, out_dir: Path):
        self.plan, self.fds, self.paths = plan, [], []
        for shard in plan.shards:
            path = out_dir / shard.file_name
            fd = _guard(path, lambda p=path: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                                       0o644))
            self.fds.append(fd)
            self.paths.append(path)
            _guard(path, lambda fd=fd, s=shard: _pwrite_all(fd, memoryview(s.header), 0))
            _guard(path, lambda fd=fd, s=shard: os.ftruncate(fd, s.size))

    def where(self, out: Output) -> tuple[int, int, Path]:
        k = out.shard
        return self.fds[k], len(self.plan.shards[k].header) + out.begin, self.paths[k]

    def write(self, out: Output, data: memoryview) -> None:
        fd, offset, path = self.where(out)
        _guard(path, lambda: _pwrite_all(fd, data, offset))

    def copy(self, out: Output, src: Read, inputs: _Inputs) -> None:
        fd, offset, path = self.where(out)
        _guard(path, lambda: _copy_range(inputs.fd(src.file), fd, src, offset))

    def close(self, sync: bool = True) -> None:
        for fd, path in zip(self.fds, self.paths):
            if sync:
                _guard(path, lambda fd=fd: os.fsync(fd))
            os.close(fd)
        self.fds = []


def _guard(path: Path, action: Callable[[], object]):
    try:
        return action()
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise BuildError(f"{path}: no space left on device") from None
        raise BuildError(f"{path}: cannot write ({exc.strerror})") from None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _copy_range(src_fd: int, dst_fd: int, src: Read, dst_offset: int) -> None:
    done, n = 0, src.nbytes
    while done < n:
        try:
            got = os.copy_file_range(src_fd, dst_fd, n - done, src.begin + done,
                                     dst_offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            got = _copy_chunk(src_fd, dst_fd, min(CHUNK, n - done), src.begin + done,
                              dst_offset + done)
        if got == 0:
            raise BuildError(f"{src.file}: ended early while copying tensor '{src.tensor}'")
        done += got


def _copy_chunk(src_fd: int, dst_fd: int, n: int, src_off: int, dst_off: int) -> int:
    data = os.pread(src_fd, n, src_off)
    _pwrite_all(dst_fd, memoryview(data), dst_off)
    return len(data)


def execute(plan: Plan, out_dir: Path, *, device: str = "cpu",
            on_progress: ProgressFn | None = None, on_warning: WarnFn | None = None,
            check_copies: bool = True) -> int:
    """Write the plan's shards into `out_dir`; return the number of warnings given. On
    error, files may be partial: the caller builds into a temporary directory and removes it
    (see output.py)."""
    dev = _device(plan, device)
    inputs, shards, warnings = _Inputs(), None, _Warnings(on_warning)
    try:
        shards = _ShardFiles(plan, out_dir)
        held: dict[Read, torch.Tensor] = {}
        for task in _with_progress(plan, on_progress):
            if isinstance(task.expr, Copy):
                src = task.expr.src
                if check_copies and (src.file, src.tensor) not in warnings.seen:
                    warnings.read(src, inputs.count_nonfinite(src))
                shards.copy(task.out, src, inputs)
            else:
                out = compute(task, inputs, held, dev, warnings)
                shards.write(task.out, _tensor_bytes(out))
            held = {r: held[r] for r in task.keep if r in held}
        shards.close()
        return warnings.count
    finally:
        if shards is not None and shards.fds:
            shards.close(sync=False)
        inputs.close()


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
