"""Writing the output shards: laid out up front, then filled at planned offsets.

Consumes: a `Plan`'s shard layout, computed tensors and byte ranges of input files.
Produces: the shard files, fsynced on `close`. Computed tensors are written by one writer
thread while the next task computes (`write_later`, at most one waiting); byte copies use
`copy_file_range` (no tensor is made). Every OS error becomes a `BuildError` naming the
file, with "no space left on device" for ENOSPC.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from recipe_compiler.compiler.plan import BuildError, Output, Plan, Read
from recipe_compiler.execute.reader import CHUNK, Inputs

WRITEBACK = 64 << 20  # start writing a shard back to disk after this many new bytes

if TYPE_CHECKING:
    import torch


def tensor_bytes(t) -> memoryview:
    """The bytes of a CPU tensor, or of a numpy array (the torch-free engine's results)."""
    if not hasattr(t, "is_floating_point"):  # a numpy array: no torch needed
        from recipe_compiler.execute.nptasks import stored_bytes

        return stored_bytes(t)
    import torch

    flat = t.contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


class ShardFiles:
    """Output shards, laid out up front so tasks can write in any order."""

    def __init__(self, plan: Plan, out_dir: Path):
        self.plan, self.fds, self.paths = plan, [], []
        self.pool: ThreadPoolExecutor | None = None
        self.pending: Future[None] | None = None
        self.unflushed: list[int] = []  # bytes written to each shard since its last flush
        for shard in plan.shards:
            path = out_dir / shard.file_name
            fd = _guard(path, lambda p=path: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                                       0o644))
            self.fds.append(fd)
            self.paths.append(path)
            self.unflushed.append(0)
            _guard(path, lambda fd=fd, s=shard: _pwrite_all(fd, memoryview(s.header), 0))
            _guard(path, lambda fd=fd, s=shard: os.ftruncate(fd, s.size))

    def where(self, out: Output) -> tuple[int, int, Path]:
        k = out.shard
        return self.fds[k], len(self.plan.shards[k].header) + out.begin, self.paths[k]

    def write(self, out: Output, data: memoryview) -> None:
        fd, offset, path = self.where(out)
        _guard(path, lambda: _pwrite_all(fd, data, offset))
        self.written(out.shard, len(data))

    def written(self, k: int, n: int) -> None:
        """Count bytes written to shard k; past `WRITEBACK`, ask the kernel to start writing
        the shard's dirty pages to disk, so that the fsync of `close` finds most of them
        written while the build went on."""
        self.unflushed[k] += n
        if self.unflushed[k] >= WRITEBACK:
            self.unflushed[k] = 0
            start_writeback(self.fds[k])

    def write_later(self, out: Output, t: torch.Tensor) -> None:
        """Write from the writer thread while the next task computes. At most one write
        waits, so one output more is held; its error is raised here or by `close`."""
        self.wait()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="tailor-write")
        self.pending = self.pool.submit(self.write, out, tensor_bytes(t))

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def copy(self, out: Output, src: Read, inputs: Inputs) -> None:
        fd, offset, path = self.where(out)
        _guard(path, lambda: _copy_range(inputs.fd(src.file), fd, src, offset))
        self.written(out.shard, src.nbytes)

    def close(self, sync: bool = True) -> None:
        try:
            self.wait()
        except BuildError:
            if sync:
                raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None
        for fd, path in zip(self.fds, self.paths):
            if sync:
                _guard(path, lambda fd=fd: os.fsync(fd))
            os.close(fd)
        self.fds = []


_SYNC_FILE_RANGE_WRITE = 2


@cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (Linux), which Python's os module does not wrap; None
    elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def start_writeback(fd: int) -> None:
    """Start writing fd's dirty pages to disk without waiting for them: the later fsync
    then waits only for what is left. A hint: where it is missing or fails, fsync does
    all the work, as before."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


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
