"""What a finished search leaves in its run directory.

Consumes: the search (history, space), its final population and hall of fame.
Produces: best.tr, pareto/NN.tr (score vs size), shortgpt.tr (the base pruned by block
influence), history.jsonl and evolve.png; returns an `EvolveResult` for the CLI.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from recipe_compiler.compiler.listing import size_change
from recipe_compiler.execute.output import relocate
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.language.recipe import Drop, Merge, Recipe, SlotDecl, Take
from recipe_compiler.search.genome import WarmStart, decode, genome_from_drops, kept_count
from recipe_compiler.search.run import write_history


@dataclass
class EvolveResult:
    best: Path
    best_fitness: float
    best_scores: dict[str, float]
    pareto: list[tuple[float, int, Path]]  # (score, params, recipe)
    files: list[Path]
    evaluations: int


def _with_header(recipe: Recipe, lines: list[str]) -> Recipe:
    return dataclasses.replace(recipe, comments=(("header", tuple(f"# {x}" for x in lines),
                                                  None),))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _describe(space, ind, command: str, what: str, fitness: float | None = None,
              scores: dict | None = None) -> list[str]:
    kept = kept_count(space, list(ind))
    before = space.params(space.slot_count)
    after = space.params(kept)
    scores = scores if scores is not None else ind.scores
    fitness = fitness if fitness is not None else ind.fitness.values[0]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    return [
        f"{what}, found by: {command}",
        f"fitness {fitness:.4f} on the search's tasks ({shown})",
        f"layers kept {kept} of {space.slot_count}; parameters {before:,} -> {after:,} "
        f"({size_change(before, after)})",
    ]


def write_outputs(p, search, pop, hof, run_dir: Path, *, command: str,
                  heuristics: list[WarmStart], best=None,
                  best_scores: dict[str, float] | None = None) -> EvolveResult:
    """`best` and its `best_scores` (on the final items): the finish's winner; by default
    the fittest of the population and hall of fame."""
    import random

    space = search.space
    files = []
    if best is None:
        best = max(pop + list(hof.items), key=lambda i: i.fitness.values[0])
    best_scores = best_scores if best_scores is not None else dict(best.scores)
    best_fitness = search.fitness_of(best_scores)
    recipe = relocate(decode(space, list(best)), run_dir)
    _write(run_dir / "best.tr", format_recipe(_with_header(
        recipe, _describe(space, best, command, "best recipe", best_fitness, best_scores))))
    files.append(run_dir / "best.tr")
    pareto = []
    if search.multi:
        (run_dir / "pareto").mkdir(exist_ok=True)
        front = sorted(hof.items, key=lambda i: i.fitness.values[1])
        for k, ind in enumerate(front):
            path = run_dir / "pareto" / f"{k:02d}.tr"
            r = relocate(decode(space, list(ind)), run_dir / "pareto")
            _write(path, format_recipe(_with_header(
                r, _describe(space, ind, command, f"Pareto point {k}"))))
            pareto.append((ind.fitness.values[0], int(ind.fitness.values[1]), path))
            files.append(path)
    shortgpt = next((w.drops for w in heuristics if w.name == "block-influence"), None)
    if shortgpt is not None:
        g = genome_from_drops(space, set(shortgpt), random.Random(0))
        r = relocate(_plain_base(decode(space, g), space.base), run_dir)
        ranked = sorted(shortgpt)
        dropped = [i for i, op in enumerate(r.ops()) if isinstance(op, Drop)]
        moved = "" if dropped == ranked else (
            f" (block influence chose slots {ranked}; the recipe fixes some of them, so "
            "the search's repair moved those drops to open slots)")
        _write(run_dir / "shortgpt.tr", format_recipe(_with_header(r, [
            "the base model pruned by block influence (ShortGPT), for comparison",
            f"drops slots {dropped}{moved}"])))
        files.append(run_dir / "shortgpt.tr")
    write_history(str(run_dir / "history.jsonl"), search.history)
    files.append(run_dir / "history.jsonl")
    png = run_dir / "evolve.png"
    if plot(search.history, decode(space, list(best)), [m.name for m in p.recipe.models], png):
        files.append(png)
    return EvolveResult(run_dir / "best.tr", best_fitness, best_scores, pareto, files,
                        search.evaluations)


def _plain_base(recipe: Recipe, base: str) -> Recipe:
    """Every kept slot takes the base's own layer (a pure single-model pruning)."""
    slots = tuple(SlotDecl(d.start, d.stop, d.op if isinstance(d.op, Drop) else Take(base))
                  for d in recipe.slots)
    return dataclasses.replace(recipe, slots=slots)


def plot(history: list[dict], best: Recipe, models: list[str], path: Path) -> bool:
    """Best and mean fitness per generation, and the best recipe's slot map."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    gens = [h["generation"] for h in history]
    ax1.plot(gens, [h["best"] for h in history], marker="o", label="best")
    ax1.plot(gens, [h["mean"] for h in history], marker=".", label="mean")
    ax1.set(xlabel="generation", ylabel="fitness", title="fitness per generation")
    ax1.xaxis.get_major_locator().set_params(integer=True)
    ax1.legend()
    ops = best.ops()
    grid = [[0.0] * len(ops) for _ in models]
    for i, op in enumerate(ops):
        if isinstance(op, Take):
            grid[models.index(op.model)][i] = 1.0
        elif isinstance(op, Merge):
            for m, w in zip(op.models, op.weights or [1.0] * len(op.models)):
                grid[models.index(m)][i] = 0.3 + 0.7 * min(1.0, abs(w))
    ax2.imshow(grid, aspect="auto", cmap="Blues", vmin=0, vmax=1)
    ax2.set_yticks(range(len(models)), models)
    ax2.set_xticks(range(len(ops)), [str(i) for i in range(len(ops))])
    ax2.set(xlabel="slot (blank column: dropped)", title="best recipe: source of each slot")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
