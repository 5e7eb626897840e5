"""Reading input tensors, with one reader thread that reads ahead.

Consumes: `Read`s (byte ranges of safetensors files). Produces: CPU tensors of the stored
dtype (or numpy arrays, for the torch-free engine), exactly the stored bytes, and counts
of non-finite values on disk (for byte copies).

`prefetch(reads)` hands reads to a background thread, which fills their buffers while the
caller computes (`os.preadv` releases the GIL); `read(r)` then waits for that buffer
instead of reading. The caller decides what to prefetch, and so bounds the memory: the
executor reads ahead only what fits beside the current task within the plan's peak (see
execute/__init__.py). An error in the thread (a short file) is raised by `read`.

`scan_ahead(reads)` likewise counts NaN/inf in byte-copied tensors in a scanning thread
(numpy releases the GIL), so the scan of the next tensors overlaps the copy of this one;
it holds no tensor, only a 16 MB chunk at a time.
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from recipe_compiler.compiler.plan import BuildError, Read
from recipe_compiler.execute.finite import NONFINITE_DTYPES, count_nonfinite_bytes

if TYPE_CHECKING:
    import torch

CHUNK = 16 * 1024 * 1024


class Inputs:
    """Input files, each opened once for the whole build, and the reads in flight."""

    def __init__(self) -> None:
        self.fds: dict[str, int] = {}
        self.pending: dict[Read, Future] = {}
        self.scans: dict[Read, Future[int]] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.scanner: ThreadPoolExecutor | None = None
        self.lock = threading.Lock()  # fds are opened from the threads too

    def fd(self, path: str) -> int:
        with self.lock:
            if path not in self.fds:
                try:
                    self.fds[path] = os.open(path, os.O_RDONLY)
                except OSError as exc:
                    raise BuildError(f"{path}: cannot open ({exc.strerror})") from None
            return self.fds[path]

    def prefetch(self, reads: list[Read]) -> None:
        """Start reading these tensors' bytes in the reader thread."""
        for r in reads:
            if r in self.pending or r.nbytes == 0:
                continue
            if self.pool is None:
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="tailor-read")
            self.pending[r] = self.pool.submit(self._bytes, r, self.fd(r.file))

    def read(self, r: Read) -> torch.Tensor:
        import torch

        from recipe_compiler.execute import torch_dtypes

        dtype = torch_dtypes().get(r.dtype)
        if dtype is None:
            raise BuildError(f"{r.file}: tensor '{r.tensor}' has dtype {r.dtype}, which tailor "
                             "cannot compute with (it can only copy it unchanged)")
        if r.nbytes == 0:
            return torch.empty(r.shape, dtype=dtype)
        return torch.frombuffer(self._take(r), dtype=dtype).reshape(r.shape)

    def read_array(self, r: Read):
        """The tensor as a numpy array of its stored bytes (bfloat16 as uint16), for the
        torch-free engine (nptasks.py), which takes only float32/float16/bfloat16."""
        import numpy as np

        from recipe_compiler.execute.nptasks import STORED

        dtype = STORED[r.dtype]
        if r.nbytes == 0:
            return np.empty(r.shape, dtype=dtype)
        return np.frombuffer(self._take(r), dtype=dtype).reshape(r.shape)

    def _take(self, r: Read):
        """The bytes of `r`: those the reader thread read ahead, else read now."""
        ahead = self.pending.pop(r, None)
        return ahead.result() if ahead is not None else self._bytes(r, self.fd(r.file))

    @staticmethod
    def _bytes(r: Read, fd: int):
        """A buffer of r's bytes: an uninitialised numpy array, since `bytearray(n)` would
        first write n zeros, one more pass over every input byte."""
        import numpy as np

        buf = np.empty(r.nbytes, dtype=np.uint8)
        view, done = memoryview(buf), 0
        while done < r.nbytes:
            got = os.preadv(fd, [view[done:]], r.begin + done)
            if got == 0:
                raise BuildError(f"{r.file}: ended early while reading tensor '{r.tensor}' of "
                                 f"model '{r.model}' (was the file changed after checking?)")
            done += got
        return buf

    def scan_ahead(self, reads: list[Read]) -> None:
        """Start counting these tensors' NaN/inf values, in order, in the scanning thread."""
        for r in reads:
            if r in self.scans or r.dtype not in NONFINITE_DTYPES or r.nbytes == 0:
                continue
            if self.scanner is None:
                self.scanner = ThreadPoolExecutor(1, thread_name_prefix="tailor-scan")
            self.scans[r] = self.scanner.submit(self._count_nonfinite, r)

    def count_nonfinite(self, r: Read) -> int:
        """NaN/inf values in a tensor's bytes on disk, read through mmap in chunks (no
        tensor is made, torch is not needed); 0 for dtypes that cannot hold them."""
        ahead = self.scans.pop(r, None)
        return ahead.result() if ahead is not None else self._count_nonfinite(r)

    def _count_nonfinite(self, r: Read) -> int:
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
                bad += count_nonfinite_bytes(m, at, min(step, r.end - start - at), r.dtype)
            return bad
        finally:
            m.close()

    def close(self) -> None:
        """Wait for the threads (they may be using a file), then close every file."""
        for pool, pending in ((self.pool, self.pending), (self.scanner, self.scans)):
            if pool is not None:
                for f in pending.values():
                    f.cancel()
                pool.shutdown(wait=True)
            pending.clear()
        self.pool = self.scanner = None
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
