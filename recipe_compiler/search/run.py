"""The genetic search (DEAP): generations of genomes, evaluated in memory, checkpointed.

Consumes: a `SearchSpace`, a way to score recipes (`ScoreMap`), and a run directory.
Produces: the best recipe (or the Pareto front of score vs size), one history record per
generation, and a state file from which `--resume` continues to the same result.

Every random choice comes from Python's `random` module seeded with the run's seed (DEAP's
selection operators use it too), and its state is saved with each generation, so a run that
is interrupted and resumed ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deap import base, creator, tools

from recipe_compiler.language.recipe import Recipe
from recipe_compiler.search.genome import (
    MERGED,
    Gene,
    Genome,
    WarmStart,
    crossover,
    decode,
    genome_from_drops,
    kept_count,
    merge_seeds,
    merge_weight,
    mutate,
    random_genome,
)
from recipe_compiler.search.space import SearchSpace, rungs

# recipes and a rung -> per-task scores, one dict per recipe (in order)
ScoreMap = Callable[[list[Recipe], int], list[dict[str, float]]]

STATE_VERSION = 2  # 2: JSON instead of pickle


def _creators(n_objectives: int) -> type:
    name = f"Individual{n_objectives}"
    if not hasattr(creator, name):
        weights = (1.0,) if n_objectives == 1 else (1.0, -1.0)
        creator.create(f"Fitness{n_objectives}", base.Fitness, weights=weights)
        creator.create(name, list, fitness=getattr(creator, f"Fitness{n_objectives}"),
                       scores=dict, rung=int)
    return getattr(creator, name)


@dataclass
class Generation:
    """What the live display and history.jsonl show for one generation."""

    generation: int
    best: float
    mean: float
    evaluations: int
    seconds: float
    evals_per_s: float
    best_scores: dict[str, float]
    best_recipe: Recipe = field(repr=False)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"generation": self.generation, "best": self.best, "mean": self.mean,
                "evaluations": self.evaluations, "seconds": round(self.seconds, 3),
                "evals_per_s": round(self.evals_per_s, 3), "best_scores": self.best_scores,
                **self.extra}


class Search:
    def __init__(self, space: SearchSpace, score: ScoreMap, fitness: Callable[[dict], float],
                 *, warm: list[WarmStart | set[int]] | None = None,
                 state_path: str | None = None,
                 on_generation: Callable[[Generation], None] | None = None,
                 extra_stats: Callable[[], dict] | None = None,
                 task_sizes: dict[str, int] | None = None,
                 greedy_from: str | None = None,
                 on_status: Callable[[str], None] | None = None):
        self.space, self.score, self.fitness_of = space, score, fitness
        self.task_sizes = task_sizes or {}  # items per scored task (the finish's holdout)
        self.settings = space.settings
        self.multi = "size" in self.settings.objectives
        self.Individual = _creators(2 if self.multi else 1)
        # A plain set of drops is a heuristic applied to every model.
        self.warm = [w if isinstance(w, WarmStart) else WarmStart("", frozenset(w))
                     for w in warm or []]
        self.state_path = state_path
        self.on_generation = on_generation
        self.extra_stats = extra_stats or dict
        self.history: list[dict] = []  # history.jsonl records, restored on resume
        self.evaluations = 0
        self.greedy_from = greedy_from  # a run whose greedy path this one takes
        # one line on work outside the generations (the greedy start, the finish), which
        # can take as long as they do
        self.on_status = on_status

    def status(self, message: str) -> None:
        if self.on_status is not None:
            self.on_status(message)

    # --- individuals -----------------------------------------------------------------

    def _new(self, genome: Genome):
        ind = self.Individual(genome)
        ind.scores, ind.rung = {}, -1
        return ind

    def initial_population(self):
        """Warm starts first, in their order — each heuristic's drops applied to its own
        sources, or to the merge of every candidate (when open slots may merge), the base,
        then every candidate, as GPTailor seeds its search — then random individuals. A seed
        that repeats an earlier one (same drops on the same model) is left out."""
        s = self.settings
        merged = (MERGED,) if merge_seeds(self.space) else ()
        models = (*merged, self.space.base, *self.space.candidates)
        seeds = list(dict.fromkeys(  # a repeated seed (same drops, same model) once
            (frozenset(w.drops), m, w.swaps) for w in self.warm for m in (w.sources or models)
            if m in models or (merged and merge_weight(m) is not None)))
        n_warm = min(len(seeds), max(int(round(s.population * s.warm_start)),
                                     int(s.greedy_start)))  # the greedy's, whatever the share
        pop = [self._new(genome_from_drops(self.space, set(drops), random, m, swaps))
               for drops, m, swaps in seeds[:n_warm]]
        while len(pop) < s.population:
            pop.append(self._new(random_genome(self.space, random)))
        return pop

    # --- evaluation: successive halving over rungs -------------------------------------

    def evaluate(self, inds: list) -> None:
        todo = [ind for ind in inds if not ind.fitness.valid]
        rungs = len(self._rungs())
        alive = todo
        for rung in range(rungs):
            recipes = [decode(self.space, list(ind)) for ind in alive]
            for ind, scores in zip(alive, self.score(recipes, rung)):
                ind.scores, ind.rung = scores, rung
            self.evaluations += len(alive)
            if rung + 1 < rungs:
                alive = sorted(alive, key=lambda i: -self.fitness_of(i.scores))
                alive = alive[: max(1, math.ceil(len(alive) / self.settings.eta))]
        finals = [self.fitness_of(i.scores) for i in todo if i.rung == rungs - 1]
        cap = min(finals) if finals else math.inf
        for ind in todo:
            value = self.fitness_of(ind.scores)
            if ind.rung < rungs - 1:
                # A candidate stopped early must not outrank one that earned the full test.
                value = min(value, cap)
            params = self.space.params(kept_count(self.space, list(ind)))
            ind.fitness.values = (value, float(params)) if self.multi else (value,)

    def _greedy(self) -> dict:
        """`greedy_start`: the greedy pruner's answer leads the warm starts; what generation
        0's history record tells of it."""
        from recipe_compiler.search.greedy import greedy_start, reused, warm_start

        if self.greedy_from is not None:
            try:
                record = reused(self.greedy_from, self.fingerprint())
            except ValueError as exc:
                raise StateError(str(exc)) from None
            self.warm.insert(0, warm_start(record))
            self.evaluations += record["evaluations"]
            self.status(f"greedy start: the path of {self.greedy_from} ({record['start']}, "
                        f"drops {', '.join(map(str, record['drops']))}; "
                        f"{record['evaluations']} evaluations counted)")
            return {"greedy": record | {"reused_from": str(self.greedy_from)}}
        warm, record = greedy_start(self)
        self.warm.insert(0, warm)
        return {"greedy": record}

    def _rungs(self) -> tuple[int, ...]:
        return rungs(self.settings)

    # --- the loop ----------------------------------------------------------------------

    def run(self, *, resume: bool = False):
        s = self.settings
        state = self._load() if resume else None
        if self.greedy_from is not None and not s.greedy_start:
            raise StateError("--greedy-from needs greedy_start = true in the search block")
        if state is None:
            random.seed(s.seed)
            start = time.perf_counter()
            greedy = self._greedy() if s.greedy_start else {}
            pop = self.initial_population()
            hof = tools.ParetoFront() if self.multi else tools.HallOfFame(max(1, s.elite))
            self.evaluate(pop)
            hof.update(pop)
            self._record(0, pop, hof, start, greedy)
            first = 1
        else:
            pop, hof, first = state
        for gen in range(first, s.generations + 1):
            start = time.perf_counter()
            pop = self._next_generation(pop, hof)
            self._record(gen, pop, hof, start)
        return pop, hof

    def _next_generation(self, pop, hof):
        s = self.settings
        if self.multi:
            pop = tools.selNSGA2(pop, len(pop))  # assigns the crowding distances DCD reads
            parents = (tools.selTournamentDCD(pop, len(pop)) if len(pop) % 4 == 0
                       else random.sample(pop, len(pop)))
        else:
            parents = tools.selTournament(pop, len(pop), tournsize=3)
        offspring = self._vary([self._clone(p) for p in parents])
        self.evaluate(offspring)
        if self.multi:
            new = tools.selNSGA2(pop + offspring, len(pop))
        else:
            elites = [self._clone(i) for i in hof.items[: s.elite]]
            new = elites + sorted(offspring, key=lambda i: -i.fitness.values[0])[
                : len(pop) - len(elites)]
        hof.update(new)
        return new

    def _vary(self, kids: list) -> list:
        """DEAP's varAnd: crossover pairs with one probability, then mutate each child with
        another; children left untouched keep their parent's fitness."""
        s = self.settings
        for i in range(1, len(kids), 2):
            if random.random() < s.crossover:
                a, b = crossover(self.space, kids[i - 1], kids[i], random)
                kids[i - 1][:], kids[i][:] = a, b
                del kids[i - 1].fitness.values, kids[i].fitness.values
        for ind in kids:
            if random.random() < s.mutation:
                ind[:] = mutate(self.space, ind, random, 2.0 / max(1, len(ind)))
                del ind.fitness.values
        return kids

    def _clone(self, ind):
        c = self.Individual(list(ind))
        c.fitness.values, c.scores, c.rung = ind.fitness.values, dict(ind.scores), ind.rung
        return c

    def _record(self, gen: int, pop, hof, start: float, extra: dict | None = None) -> None:
        seconds = time.perf_counter() - start
        values = [i.fitness.values[0] for i in pop]
        best = max(pop, key=lambda i: i.fitness.values[0])
        evals = self.evaluations
        new = evals - (self.history[-1]["evaluations"] if self.history else 0)
        record = Generation(gen, best.fitness.values[0], sum(values) / len(values), evals,
                            seconds, new / seconds if seconds else 0.0, dict(best.scores),
                            decode(self.space, list(best)),
                            {**self.extra_stats(), **(extra or {})})
        self.history.append(record.to_json())
        self._save(gen, pop, hof)
        if self.on_generation is not None:
            self.on_generation(record)

    # --- checkpoints -------------------------------------------------------------------

    def _pack(self, ind) -> dict:
        return {"genome": [dataclasses.asdict(g) for g in ind],
                "fitness": list(ind.fitness.values), "scores": ind.scores, "rung": ind.rung}

    def _unpack(self, packed: dict):
        ind = self._new(genes_of(packed))
        ind.fitness.values = tuple(packed["fitness"])
        ind.scores, ind.rung = dict(packed["scores"]), packed["rung"]
        return ind

    def _save(self, gen: int, pop, hof) -> None:
        """JSON, never pickle: a run directory from elsewhere cannot run code on resume.
        Python's float repr round-trips exactly, so resuming reaches the same result."""
        if self.state_path is None:
            return
        version, internal, gauss = random.getstate()
        state = {"version": STATE_VERSION, "generation": gen,
                 "fingerprint": self.fingerprint(),
                 "population": [self._pack(i) for i in pop],
                 "hof": [self._pack(i) for i in hof.items],
                 "random": [version, list(internal), gauss], "evaluations": self.evaluations,
                 "history": self.history}
        tmp = f"{self.state_path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def fingerprint(self) -> str:
        return repr((self.space.recipe, self.settings))

    def _load(self):
        if self.state_path is None or not os.path.exists(self.state_path):
            return None
        state = _read_state(self.state_path)
        if state.get("version") != STATE_VERSION or state.get("fingerprint") != self.fingerprint():
            raise StateError(f"{self.state_path}: saved by a different recipe or settings; "
                             "remove it or run without --resume")
        try:
            pop = [self._unpack(p) for p in state["population"]]
            hof_items = [self._unpack(p) for p in state["hof"]]
            version, internal, gauss = state["random"]
            random.setstate((version, tuple(internal), gauss))
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.state_path}: not a state this version of tailor wrote "
                             f"({exc!r}); remove it or run without --resume") from None
        hof = tools.ParetoFront() if self.multi else tools.HallOfFame(
            max(1, self.settings.elite))
        # Set the hall of fame as saved: re-inserting would reverse the order of ties.
        hof.items = hof_items
        hof.keys = [i.fitness for i in reversed(hof.items)]
        self.evaluations = state["evaluations"]
        self.history = state["history"]
        return pop, hof, state["generation"] + 1


def genes_of(packed: dict) -> list[Gene]:
    """The genome of an individual as state.json saves it (JSON lists back to tuples)."""
    return [Gene(**{k: tuple(v) if isinstance(v, list) else v for k, v in g.items()})
            for g in packed["genome"]]


class StateError(ValueError):
    """A saved state that cannot be resumed (unreadable, or another recipe's); one line."""


def _read_state(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateError(f"{path}: cannot read the saved state ({type(exc).__name__}); remove "
                         "it or run without --resume") from None
    if not isinstance(state, dict):
        raise StateError(f"{path}: not a saved search state; remove it or run without --resume")
    return state


def write_history(path: str, history: list[dict]) -> None:
    with open(path, "w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
