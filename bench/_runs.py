"""Timing child processes for the build benchmarks: wall seconds and peak RSS (wait4), and
jobs alternated within each round, in a shuffled order, so that a slow moment of the
machine hits every tool.

    alternate({"cp": (["cp", ...], {}), "tailorc x": ([...], {"env": ENV})}, runs=3,
              root=work, clear=("cp-out", "out-tailor"))
    -> {"cp": (median seconds, largest peak RSS in bytes), ...}
"""

from __future__ import annotations

import os
import random
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
    """Each job (command, `timed` keywords) once per round, `runs` rounds, in an order
    shuffled afresh each round (seeded by the round): on a virtual machine's disk a job that
    follows a large write runs slower, and with a fixed order the same job had that place
    every round (tailorc's `linear` came out at 0.84x-0.93x the tree before it in three
    runs of bench/merge_speed.py, which 8 rounds of the two alone did not confirm). Before
    each job, the folders `clear` under `root` are removed, `root/cp-out` made afresh and
    the page cache's dirty pages written to disk (`sync`, untimed), so that a job that
    syncs its output (tailorc, every floor but `cp`) does not wait for the previous job's
    writes as well."""
    samples: dict[str, list[tuple[float, int]]] = {k: [] for k in jobs}
    for round_ in range(runs):
        order = list(jobs.items())
        random.Random(round_).shuffle(order)
        for name, (cmd, kw) in order:
            for d in clear:
                shutil.rmtree(root / d, ignore_errors=True)
            (root / "cp-out").mkdir()
            os.sync()
            samples[name].append(timed(cmd, **kw))
    return {k: (statistics.median(s[0] for s in v), max(s[1] for s in v))
            for k, v in samples.items()}
