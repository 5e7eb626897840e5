"""Timing child processes for the build benchmarks: wall seconds and peak RSS (wait4), and
jobs alternated within each round so that a slow moment of the machine hits every tool.

    alternate({"cp": (["cp", ...], {}), "tailorc x": ([...], {"env": ENV})}, runs=3,
              root=work, clear=("cp-out", "out-tailor"))
    -> {"cp": (median seconds, largest peak RSS in bytes), ...}
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path


def timed(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
          ok: bool = True) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process; exits the benchmark when it
    succeeds or fails against `ok`."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if (status == 0) != ok:
        raise SystemExit(f"unexpected exit status {status}: {' '.join(cmd)}\n"
                         f"{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024


def alternate(jobs: dict[str, tuple[list[str], dict]], runs: int, root: Path,
              clear: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """Each job (command, `timed` keywords) once per round, in order, `runs` rounds; before
    each, the folders `clear` under `root` are removed and `root/cp-out` made afresh."""
    samples: dict[str, list[tuple[float, int]]] = {k: [] for k in jobs}
    for _ in range(runs):
        for name, (cmd, kw) in jobs.items():
            for d in clear:
                shutil.rmtree(root / d, ignore_errors=True)
            (root / "cp-out").mkdir()
            samples[name].append(timed(cmd, **kw))
    return {k: (statistics.median(s[0] for s in v), max(s[1] for s in v))
            for k, v in samples.items()}
