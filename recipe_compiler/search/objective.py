"""What a candidate's scores are worth to the search: one number, higher is better.

Consumes: the run's `Settings` (fitness, task weights, min_task_retention, ppl_weight), the
accuracy tasks and text tasks the evaluator scores, and — for every setting but the plain
mean — the dense models' own scores on the same items (`references`).
Produces: `Objective`, a callable from a candidate's per-task scores (accuracies, and
perplexities for text tasks) to its fitness.

- `fitness = mean`: the weighted mean of task accuracies (the paper's average score).
- `fitness = retention`: the weighted mean of each task's accuracy divided by the best dense
  source model's accuracy on it, so that a skill only one fine-tune has counts as much as one
  every model has, and no skill is silently abandoned for an easier one.
- `min_task_retention = 80%`: for every task below 80% of the dense base's score, the shortfall
  (as a share of that score) is subtracted, twice over, averaged over tasks.
- `ppl_weight = w`: subtracts w * log(candidate's text perplexity / the base's), when worse
  than the base: keeps the language model a language model. With `ppl_tolerance = r`, only
  the part beyond r times the base's counts: w * log(perplexity / (r * base's)), when
  positive, so that the term is a bound (perplexity at most r times the base's) rather than
  a price on every increase.
A candidate that could not be scored (any NaN) gets `FAILED_FITNESS`, below every other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

# Below every real fitness; finite, so that history.jsonl stays plain JSON.
FAILED_FITNESS = -1.0
FLOOR_PENALTY = 2.0  # per unit of shortfall below the floor, averaged over tasks


@dataclass(frozen=True)
class Objective:
    tasks: tuple[str, ...]  # accuracy tasks, in the evaluator's order
    weights: tuple[float, ...]
    texts: tuple[str, ...] = ()  # perplexity tasks
    kind: str = "mean"
    floor: float | None = None
    ppl_weight: float = 0.0
    ppl_tolerance: float = 1.0  # perplexity ratio to the base's below which the term is 0
    best: dict[str, float] = field(default_factory=dict)  # per task: best dense accuracy
    base: dict[str, float] = field(default_factory=dict)  # per task: the dense base's score

    @property
    def needs_references(self) -> bool:
        return self.kind != "mean" or self.floor is not None or (
            self.ppl_weight > 0 and bool(self.texts))

    def with_references(self, dense: dict[str, dict[str, float]], base: str) -> Objective:
        """`dense`: each source model's scores, the base's under `base`."""
        best = {t: max(scores[t] for scores in dense.values()) for t in self.tasks}
        return replace(self, best=best, base=dict(dense[base]))

    def __call__(self, scores: dict[str, float]) -> float:
        if any(math.isnan(v) for v in scores.values()):
            return FAILED_FITNESS
        total = sum(self.weights)
        value = sum(w * self._task_value(t, scores[t])
                    for w, t in zip(self.weights, self.tasks)) / total
        value -= self._floor_penalty(scores) + self._ppl_penalty(scores)
        return max(value, FAILED_FITNESS + 1e-6)

    def _task_value(self, task: str, score: float) -> float:
        if self.kind == "retention" and self.best:
            return score / self.best[task] if self.best[task] > 0 else 1.0
        return score

    def _floor_penalty(self, scores: dict[str, float]) -> float:
        if self.floor is None or not self.base:
            return 0.0
        short = [max(0.0, self.floor * self.base[t] - scores[t]) / self.base[t]
                 for t in self.tasks if self.base[t] > 0]
        return FLOOR_PENALTY * sum(short) / max(1, len(self.tasks))

    def _ppl_penalty(self, scores: dict[str, float]) -> float:
        if self.ppl_weight <= 0 or not self.base:
            return 0.0
        worse = [math.log(scores[t] / (self.ppl_tolerance * self.base[t])) for t in self.texts
                 if t in scores and self.base.get(t, 0) > 0]
        return self.ppl_weight * sum(max(0.0, w) for w in worse) / max(1, len(worse))
