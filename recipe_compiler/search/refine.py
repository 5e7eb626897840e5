"""Around the genetic search: the dense references, and the finish (finalists, local search).

Consumes: a `Search` (its space, settings and evaluation with successive halving), its
final population and hall of fame, and the `ScoreMap` that scores recipes (in this process,
worker processes or Ray actors alike).
Produces: the dense models' scores that `Objective` measures retention against; the rungs
the evaluator must prepare (the search's, plus the finalists' `final_limit`); and the run's
winner.

The finish exists because of the winner's curse: picking the best of hundreds of candidates
on a sample of items picks, in part, the candidate that was luckiest on that sample. So the
`finalists` best distinct candidates are scored again on `final_limit` items (by default all
the validation items there are, when that is more than the search's `limit`), and the winner
is the best there. With `holdout`, they are judged on the items past `limit` alone, which
the search never read: those the search selected on are no fresh sample. Then
`local_search` evaluations try single changes around the winner — one kept slot swapped
with a dropped one (the size stays), or one slot's source changed — keeping a change
whenever it scores better; then `tune_weights` evaluations tune the winner's merge weights
together (every weight of every merged slot) with CMA-ES (DEAP's `cma.Strategy`, seeded
from the run's seed), its structure fixed; and the winner is confirmed on the final items
(with `holdout`, it replaces the finalists' winner only if it is better there too).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from recipe_compiler.language.recipe import Recipe, SlotDecl, Take
from recipe_compiler.search.genome import decode, mutate_gene, repair
from recipe_compiler.search.space import SearchSpace, Settings, rungs

ScoreMap = Callable[[list[Recipe], int], list[dict[str, float]]]


def all_rungs(settings: Settings) -> tuple[int, ...]:
    """Items per task at each rung the evaluator must prepare: the search's, then the
    finalists' when it is larger."""
    out = rungs(settings)
    if settings.final_limit is not None and settings.final_limit > out[-1]:
        out += (settings.final_limit,)
    return out


def dense_recipe(space: SearchSpace, model: str) -> Recipe:
    """`model` whole: every slot its own layer, nothing dropped."""
    recipe = space.recipe
    return dataclasses.replace(recipe, slots=(SlotDecl(0, recipe.slot_count, Take(model)),),
                               search=None, comments=())


def references(space: SearchSpace, score: ScoreMap, rung: int) -> dict[str, dict[str, float]]:
    """Each source model's own scores at `rung` (the base's under its name)."""
    models = (space.base, *space.candidates)
    return dict(zip(models, score([dense_recipe(space, m) for m in models], rung)))


def finish(search, pop: list, hof, score: ScoreMap) -> tuple[object, dict[str, float]]:
    """The run's winner and its scores on the final items (see the module docstring)."""
    s = search.settings
    if search.multi:  # a Pareto front: every member is a winner at its size
        best = max(pop + list(hof.items), key=lambda i: i.fitness.values[0])
        return best, dict(best.scores)
    final = len(all_rungs(s)) - 1
    finalists = _finalists(pop + list(hof.items), s.finalists)
    best = _rescore(search, finalists, score, final, f"{len(finalists)} finalist(s) scored")
    if s.local_search > 0 or s.tune_weights > 0:
        start = best
        if s.local_search > 0:
            best = _local_search(search, best, s.local_search)
        if s.tune_weights > 0:
            best = _tune_weights(search, best, s.tune_weights)
        # its final scores, re-used if cached
        best = _rescore(search, [best], score, final, "the winner confirmed")
        if s.holdout and best is not start and search.fitness_of(best.final_scores) < \
                search.fitness_of(start.final_scores):
            best = start  # what the climb found on the search's items did not hold
    return best, dict(best.final_scores)


def holdout_scores(final: dict[str, float], last: dict[str, float], sizes: dict[str, int],
                   n_final: int, n_last: int) -> dict[str, float]:
    """Each scored task's score on its items [n_last, n_final) alone, from its scores on
    the first n_final and the first n_last items (means over items: exact); text
    perplexities stay the whole text's."""
    out = dict(final)
    for task, size in sizes.items():
        a, b = min(n_last, size), min(n_final, size)
        if b > a and task in final and task in last:
            out[task] = (b * final[task] - a * last[task]) / (b - a)
    return out


def on_holdout(settings: Settings, sizes: dict[str, int], final: dict[str, float],
               last: dict[str, float], rung: int) -> dict[str, float]:
    """`holdout_scores` for a search's settings: `final` scored at `rung` (of `all_rungs`),
    `last` at the search's own last rung (index `len(rungs(settings)) - 1`)."""
    return holdout_scores(final, last, sizes, all_rungs(settings)[rung], rungs(settings)[-1])


def _finalists(inds: list, n: int) -> list:
    seen, out = set(), []
    for ind in sorted(inds, key=lambda i: -i.fitness.values[0]):
        key = tuple(ind)
        if key not in seen:
            seen.add(key)
            out.append(ind)
    return out[:n]


def _rescore(search, inds: list, score: ScoreMap, rung: int, what: str):
    """The best of `inds` on rung `rung`; each gets `final_scores`. `what` names the step
    on the search's status line when there is scoring to do."""
    if rung < len(rungs(search.settings)):  # no larger rung: the search's scores stand
        for ind in inds:
            ind.final_scores = dict(ind.scores)
        return inds[0]
    search.status(f"finish: {what} on {all_rungs(search.settings)[rung]} items per task")
    recipes = [decode(search.space, list(i)) for i in inds]
    results = score(recipes, rung)
    search.evaluations += len(inds)
    if search.settings.holdout:  # the items past the search's own: a fresh sample
        last = score(recipes, len(rungs(search.settings)) - 1)  # cached for those there
        results = [on_holdout(search.settings, search.task_sizes, f, la, rung)
                   for f, la in zip(results, last)]
    for ind, scores in zip(inds, results):
        ind.final_scores = scores
    return max(inds, key=lambda i: (search.fitness_of(i.final_scores), -inds.index(i)))


def _local_search(search, start, budget: int):
    """First-improvement hill climbing from `start`, one population-sized round at a time,
    at the search's own rungs; seeded by the run's seed."""
    rng = random.Random(search.settings.seed * 7919 + 1)
    space, current, spent = search.space, start, 0
    width = max(2, search.settings.population)
    while spent < budget:
        kids = [search._new(_neighbour(space, list(current), rng))
                for _ in range(min(width, budget - spent))]
        search.evaluate(kids)
        spent += len(kids)
        best = max(kids, key=lambda i: i.fitness.values[0])
        if best.fitness.values[0] > current.fitness.values[0]:
            current = best
        search.status(f"local search: {spent} of {budget} evaluations, best fitness "
                      f"{current.fitness.values[0]:.4f}")
    return current


def _neighbour(space: SearchSpace, genome: list, rng: random.Random) -> list:
    """One kept open slot swapped with a dropped one (the size stays), or one gene changed
    (then repaired to the size target)."""
    free = [i for i, s in enumerate(space.slots) if s.options is None]
    kept = [i for i in free if not genome[i].drop]
    dropped = [i for i in free if genome[i].drop]
    if kept and dropped and rng.random() < 0.5:
        i, j = rng.choice(kept), rng.choice(dropped)
        genome[i], genome[j] = genome[j], genome[i]
        return genome
    k = rng.randrange(len(genome))
    genome[k] = mutate_gene(space, space.slots[k], genome[k], rng)
    return repair(space, genome, rng)


class _Point(list):
    """A CMA-ES sample (DEAP's strategy sorts its samples by `.fitness`)."""

    fitness = None


def _tune_weights(search, start, budget: int):
    """CMA-ES over the merge weights of `start`'s kept merged slots, `budget` evaluations at
    the search's own rungs, a population-sized generation at a time; the best seen wins
    (`start` if none beats it). Samples are clipped to `weight_range` and rounded as the
    genome rounds weights."""
    import numpy as np
    from deap import cma

    space = search.space
    coords = [(k, space.candidates.index(m)) for k, g in enumerate(start)
              if space.slots[k].options is None and not g.drop and len(g.sources) > 1
              for m in g.sources]
    if not coords:
        return start
    lo, hi = space.settings.weight_range
    x0 = [start[k].weights[i] for k, i in coords]
    lam = max(4, min(search.settings.population, budget))
    saved = np.random.get_state()  # DEAP's strategy samples from numpy's global generator
    np.random.seed(search.settings.seed * 7919 + 2)
    try:
        strategy = cma.Strategy(centroid=x0, sigma=(hi - lo) / 6, lambda_=lam)
        best, spent = start, 0
        while spent < budget:
            points = strategy.generate(_Point)[: budget - spent]
            kids = []
            for x in points:
                genome = list(start)
                for (k, i), v in zip(coords, x):
                    w = list(genome[k].weights)
                    w[i] = round(min(hi, max(lo, float(v))), 3)
                    genome[k] = dataclasses.replace(genome[k], weights=tuple(w))
                kids.append(search._new(genome))
            search.evaluate(kids)
            spent += len(kids)
            for x, kid in zip(points, kids):
                x.fitness = kid.fitness
            if len(points) == lam:
                strategy.update(points)
            top = max(kids, key=lambda i: i.fitness.values[0])
            if top.fitness.values[0] > best.fitness.values[0]:
                best = top
            search.status(f"merge weights (CMA-ES): {spent} of {budget} evaluations, best "
                          f"fitness {best.fitness.values[0]:.4f}")
        return best
    finally:
        np.random.set_state(saved)
