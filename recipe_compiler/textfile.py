"""Reading a small input file (a recipe, a mergekit config, a task) without surprises.

Consumes: a path and a size limit.
Produces: the file's bytes, or `FileProblem` with a one-line reason (the caller adds the
path and its own wording): not a regular file (a FIFO would block the read forever, a
device never ends), too large, or unreadable. stdlib only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileProblem(Exception):
    """Why a file cannot be read, in words: 'not a regular file (a FIFO)'."""


def read_regular(path: str | Path, limit: int) -> bytes:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; on a
    # regular file it changes nothing. The type is checked on the open descriptor, so a file
    # swapped for something else after a check cannot slip through.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise FileProblem(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"not a regular file ({file_type(info.st_mode)})")
        if info.st_size > limit:
            raise FileProblem(f"{mib(info.st_size)}; files here are limited to {mib(limit)}")
        data = _read_at_most(fd, limit + 1, expected=info.st_size)
    except OSError as exc:
        raise FileProblem(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while being read
        raise FileProblem(f"grew while read; files here are limited to {mib(limit)}")
    return data


def _read_at_most(fd: int, limit: int, expected: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        # Ask for what the file should still hold (plus a little, to see the end): os.read
        # allocates the full request up front.
        chunk = os.read(fd, min(limit - total, max(expected - total, 0) + 65536))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def file_type(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), f"file type {stat.S_IFMT(mode):o}")


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
