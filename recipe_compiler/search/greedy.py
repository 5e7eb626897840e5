"""Greedy layer removal by the search's own fitness: a warm start that reads the tasks.

Consumes: a `Search` (its space, settings, `ScoreMap` and fitness), before generation 0.
Produces: a `WarmStart` — the slots to drop from the best dense start, and with
`greedy_sweep` the slots to take from another source — and the path that led there (one
record per removal), every evaluation counted in the run's.

The pruning heuristics of `warm_starts` read activations or a text; none reads the tasks
the search is judged on. This one does, as SLEB removes blocks one at a time but by the
search's fitness (accuracy, floor, perplexity term) rather than by perplexity alone:

1. the start is the best dense model of the space at the search's last rung: each source
   model whole, and, when generation 0 may hold merges (`warm_merge`, several candidates),
   the task-arithmetic merge of every candidate at 0.5 and at 1.0 each (within
   `weight_range`);
2. until the size target, every slot still kept that may be dropped is tried dropped, and
   the one whose removal leaves the best fitness is dropped (ties: the lowest slot);
3. with `greedy_sweep`, every kept open slot is tried from each other dense start (a slot
   of the merge at 1.0 taken from the base, a fine-tune or the merge at 0.5), and the
   changes that raised the fitness are applied together, best first, each kept only if the
   fitness rises again. Why: pruning the merge at 1.0 keeps the fine-tunes' skills but
   costs perplexity, which the search's perplexity term then forbids; removals alone can
   only trade the two, where a source change in a few slots (the last layer from the base,
   on the real family) may recover the language at little cost in skill.

On the real family (30 slots, 25% removed) that is 8 removals and 212 evaluations at 50
items a task, beside about 600 for the genetic search: the probe `bench/real_greedy.py`
found its end point at 50.0 on test against 45.1 for block influence on the merge.

Nothing here is random, so the path does not depend on the seed: a run with another seed
may take it from an earlier run's generation-0 record (`tailorc evolve --greedy-from RUN`,
`reused`), provided the two runs' spaces and settings differ in the seed alone; the
evaluations it cost count in the new run's as they did in the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from recipe_compiler.search.genome import (
    WarmStart,
    decode,
    kept_count,
    merge_seeds,
    merge_start_weights,
    merge_weight,
    merged,
    with_drops,
    with_swaps,
)
from recipe_compiler.search.space import rungs


@dataclass(frozen=True)
class Step:
    """One removal: the slot dropped, the fitness after it, the evaluations it took."""

    slot: int
    fitness: float
    evaluations: int

    def to_json(self) -> dict:
        return {"slot": self.slot, "fitness": self.fitness, "evaluations": self.evaluations}


def starts(space) -> list[str]:
    """The dense starts tried, as `with_drops` sources: merges first, then the models."""
    out = [merged(w) for w in merge_start_weights(space)] if merge_seeds(space) else []
    return out + [space.base, *space.candidates]


def greedy_start(search) -> tuple[WarmStart, dict]:
    """(the warm start, generation 0's record of it: start, source, drops, evaluations,
    path); see the module docstring."""
    space, rung = search.space, len(rungs(search.settings)) - 1
    before = search.evaluations

    def scored(genomes: list) -> list[tuple[float, dict]]:
        results = search.score([decode(space, g) for g in genomes], rung)
        search.evaluations += len(genomes)
        return [(search.fitness_of(r), r) for r in results]

    def fitness_of(genomes: list) -> list[float]:
        return [f for f, _ in scored(genomes)]

    sources = starts(space)
    search.status(f"greedy start: scoring {len(sources)} dense starts")
    dense = fitness_of([with_drops(space, set(), s) for s in sources])
    best = max(range(len(sources)), key=lambda k: (dense[k], -k))
    source = sources[best]
    label = _label(source)
    todo = kept_count(space, with_drops(space, set(), source)) - space.target_kept
    search.status(f"greedy start: {label} (fitness {dense[best]:.4f}); removing {todo} "
                  "slot(s) one at a time")
    drops: set[int] = set()
    path: list[Step] = []
    while kept_count(space, with_drops(space, drops, source)) > space.target_kept:
        left = [s.index for s in space.slots if s.can_drop and s.index not in drops]
        if not left:
            break
        values = fitness_of([with_drops(space, drops | {i}, source) for i in left])
        k = max(range(len(left)), key=lambda j: (values[j], -j))
        drops.add(left[k])
        path.append(Step(left[k], values[k], len(left)))
        search.status(f"greedy start: removed slot {left[k]} ({len(path)} of {todo}, "
                      f"fitness {values[k]:.4f}, {len(left)} evaluations)")
    record = {"start": label, "source": source, "drops": sorted(drops),
              "path": [step.to_json() for step in path]}
    if search.settings.greedy_sweep:
        reached = path[-1].fitness if path else dense[best]
        record |= _sweep(search, scored, drops, source, reached)
    record["evaluations"] = search.evaluations - before
    return warm_start(record), record


def _sweep(search, scored, drops: set[int], source: str, reached: float) -> dict:
    """`greedy_sweep`: every kept open slot of the end point tried from each other dense
    start (one change at a time), then the changes that raised the fitness applied together,
    best first, each kept only if the fitness rises again (one change per slot). What the
    record adds: `swaps` ([slot, source] pairs) and `sweep` (every change tried, its fitness
    and scores; the changes kept; the fitness reached)."""
    space = search.space
    end = with_drops(space, drops, source)
    others = [s for s in starts(space) if s != source]
    moves = [(slot.index, other) for k, slot in enumerate(space.slots)
             if slot.options is None and not end[k].drop for other in others]
    search.status(f"greedy sweep: trying {len(moves)} source change(s) (each kept slot from "
                  f"{len(others)} other dense start(s)), from fitness {reached:.4f}")
    results = scored([with_swaps(space, end, {i: o}) for i, o in moves])
    tried = [{"slot": i, "source": o, "fitness": f, "scores": r}
             for (i, o), (f, r) in zip(moves, results)]
    better = sorted((t for t in tried if t["fitness"] > reached),
                    key=lambda t: (-t["fitness"], t["slot"], others.index(t["source"])))
    swaps: dict[int, str] = {}
    current = reached
    for t in better:
        if t["slot"] in swaps:
            continue
        trial = swaps | {t["slot"]: t["source"]}
        value = t["fitness"] if not swaps else \
            scored([with_swaps(space, end, trial)])[0][0]
        if value > current:
            swaps, current = trial, value
            search.status(f"greedy sweep: slot {t['slot']} from {_label(t['source'])} "
                          f"(fitness {value:.4f})")
    search.status(f"greedy sweep: {len(swaps)} source change(s) kept, fitness "
                  f"{reached:.4f} -> {current:.4f}")
    return {"swaps": [[i, o] for i, o in sorted(swaps.items())],
            "sweep": {"tried": tried, "kept": [[i, o] for i, o in swaps.items()],
                      "fitness": current}}


def _label(source: str) -> str:
    weight = merge_weight(source)
    return source if weight is None else f"the merge at {weight:g} each"


def warm_start(record: dict) -> WarmStart:
    """The warm start a greedy record (this run's or an earlier one's) stands for."""
    return WarmStart(f"greedy on {record['start']}", frozenset(record["drops"]),
                     (record["source"],),
                     tuple((int(i), str(o)) for i, o in record.get("swaps", ())))


def _seedless(fingerprint: str) -> str:
    """A run's fingerprint with its seed (and the recipe file's name) left out."""
    fingerprint = re.sub(r"\bfile='(?:[^'\\]|\\.)*'", "file=F", fingerprint)
    fingerprint = re.sub(r"\bpath='(?:[^'\\]|\\.)*', settings_spans=", "path=F, settings_spans=",
                         fingerprint)  # the recipe's own path (a model's path stays)
    fingerprint = re.sub(r"(key='seed', value=)\d+", r"\1S", fingerprint)
    return re.sub(r"\bseed=\d+", "seed=S", fingerprint)


def reused(run_dir: Path, fingerprint: str) -> dict:
    """An earlier run's greedy record (generation 0's `greedy`), checked to come from the
    same space and settings but for the seed; `ValueError` with a one-line reason."""
    from recipe_compiler.search.run import StateError, _read_state

    path = Path(run_dir) / "state.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (--greedy-from needs a run that has finished "
                         "generation 0)")
    try:
        state = _read_state(str(path))
    except StateError as exc:
        raise ValueError(str(exc)) from None
    history = state.get("history") or [{}]
    record = history[0].get("greedy") if isinstance(history[0], dict) else None
    if not isinstance(record, dict) or not {"start", "source", "drops",
                                                       "evaluations"} <= set(record):
        raise ValueError(f"{path}: that run did not use greedy_start")
    if _seedless(str(state.get("fingerprint"))) != _seedless(fingerprint):
        raise ValueError(f"{path}: saved by another recipe or settings; --greedy-from needs a "
                         "run of the same space that differs in its seed alone")
    return record
