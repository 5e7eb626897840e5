"""`tailorc evolve`: search a recipe's open slots with a genetic algorithm.

Consumes: a recipe with open slots (`?`, `choose(...)`) and a `search { ... }` block.
Produces, in the run directory: `best.tr` (a closed canonical recipe that `tailorc build`
turns into a checkpoint), `pareto/*.tr` when size is an objective, `shortgpt.tr` (the
block-influence pruning of the base, for comparison), `history.jsonl`, `evolve.png`, and
`state.json` for `--resume`.

Stages: space.py (what may change) -> genome.py (individuals) -> fitness.py (scores, in
memory) -> run.py (the DEAP loop) -> report.py (files).
"""

from __future__ import annotations

from recipe_compiler.search.session import (
    EvolveError,
    LocalMap,
    Prepared,
    evolve,
    make_evaluator,
    prepare,
    warm_starts,
)
from recipe_compiler.search.space import Settings

__all__ = ["EvolveError", "LocalMap", "Prepared", "Settings", "evolve", "make_evaluator",
           "prepare", "warm_starts"]
