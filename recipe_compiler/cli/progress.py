"""Progress of long commands on the terminal (the consoles are `console.py`'s).

Consumes: a rich `Console` and per-step records (here: the search's `Generation`s, and its
status lines on the work between them: the greedy start's removals, the finish).
Produces: one plain line per finished generation or status — above a live status line on a
terminal, as flushed lines elsewhere (a log file, CI, `nohup`) so that a long search is
never silent.

The time left is the mean time of the generations after the first, times the generations
still to run: generation 0 scores the whole population (and warms caches) while later ones
score only new offspring, so it says nothing about their cost; until one is known, '?'.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

HEADER = (f"{'gen':>4} {'best':>8} {'mean':>8} {'evals':>7} {'evals/s':>8} {'cache':>6} "
          f"{'elapsed':>8} {'left':>7}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = round(seconds)
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s"


class EvolveProgress:
    def __init__(self, console: Console, title: str, generations: int):
        self.console = console
        self.title = title
        self.generations = generations  # generation indices 0..generations
        self.started = time.perf_counter()
        self.later: list[float] = []  # durations of generations after the first
        self.live: Live | None = None
        self.done = 0
        self.phase = ""  # the last on_status line, cleared by the next generation

    def __enter__(self) -> EvolveProgress:
        self.console.print(self.title, markup=False)
        self.console.print(HEADER, markup=False)
        if self.console.is_terminal:
            self.live = Live(self, console=self.console, refresh_per_second=2,
                             transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def left(self) -> float | None:
        if not self.later:
            return None
        return sum(self.later) / len(self.later) * (self.generations + 1 - self.done)

    def on_generation(self, g) -> None:
        self.done, self.phase = g.generation + 1, ""
        if g.generation > 0:
            self.later.append(g.seconds)
        hit = g.extra.get("cache_hit_rate")
        elapsed = time.perf_counter() - self.started
        line = (f"{g.generation:>4} {g.best:>8.4f} {g.mean:>8.4f} {g.evaluations:>7} "
                f"{g.evals_per_s:>8.1f} {f'{hit:.0%}' if hit is not None else '-':>6} "
                f"{_duration(elapsed):>8} {_duration(self.left()):>7}")
        self.console.print(line, markup=False)
        if self.live is None:
            self.console.file.flush()

    def on_status(self, message: str) -> None:
        """A line on work outside the generations (the greedy start, the finish): printed
        between the generation rows, and shown on the live line until the next one."""
        self.phase = message
        elapsed = time.perf_counter() - self.started
        self.console.print(f"     {message} [{_duration(elapsed)}]", markup=False,
                           highlight=False)
        if self.live is None:
            self.console.file.flush()

    def __rich__(self) -> Text:
        """The live status line, recomputed at each refresh so the clock keeps moving."""
        elapsed = time.perf_counter() - self.started
        phase = f"{self.phase}; " if self.phase else ""
        return Text(f"{phase}{self.done} of {self.generations + 1} generations done; "
                    f"{_duration(elapsed)} elapsed, about {_duration(self.left())} left")
