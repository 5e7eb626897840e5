"""The two consoles and the one user-facing error of the command line.

Consumes: nothing. Produces: `out` (results, stdout), `err` (diagnostics and progress,
stderr) and `UserError`, a one-line problem the user can fix (exit 1).
"""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A one-line problem the user can fix; printed as `tailorc: error: ...`, exit 1."""


def pick_device(requested: str | None, needed: bool = True) -> str:
    if not needed and requested in (None, "cpu"):
        return "cpu"  # a take/drop build computes nothing: skip importing torch
    if requested == "cpu" or (requested is None and not _maybe_gpu()):
        return "cpu"  # asking torch would cost 2 s of import (a CPU merge may not need it)
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise UserError(f"unknown device {requested!r} (use cpu or cuda)")
    return requested


def _maybe_gpu() -> bool:
    """False only when this machine surely has no GPU torch could use: Linux without the
    device files of NVIDIA's or AMD's drivers. Anywhere else, ask torch."""
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd",
                                           "/dev/dxg"))
