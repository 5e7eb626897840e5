"""Probe: how far task feedback alone gets pruning the merge (a reach question, not a method).

    python bench/real_greedy.py --family FAMILY --work WORK [--by fitness|mean] [--out JSON]

WORK is a `bench/real_quality.py` work directory (its search-0.tr gives the search's space
and settings; its `merged` the merge weight chosen there). Starting from the dense
task-arithmetic merge in the search's space, remove one layer at a time: the one whose
removal leaves the best score on the first 50 validation items a task (the items the
search selects on), by the search's own fitness (`--by fitness`: `metric`, perplexity
bound and floor as configured) or by the mean of the skills' scores (`--by mean`), until
the search's size target. The end point is scored like `bench/real_reach.py`: accuracy on
the first 50 validation items, on the 50 held out, and on test, with the text's perplexity.
Test is printed for the record; nothing here chooses by it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import time
from pathlib import Path

SKILLS = ("facts", "lexicon", "arith")


def main() -> None:
    import torch

    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.genome import decode, genome_from_drops, merged
    from recipe_compiler.search.refine import holdout_scores
    from recipe_compiler.search.session import use_references

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--by", choices=("fitness", "mean"), default="fitness")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ppl-weight", type=float, default=None,
                    help="the fitness's ppl_weight (default: the recipe's)")
    ap.add_argument("--max-memory", default=None, metavar="SIZE",
                    help="the evaluator's memory budget, e.g. 3GB (default: the recipe's)")
    a = ap.parse_args()
    from recipe_compiler.search.space import parse_size

    more = {k: v for k, v in (("ppl_weight", a.ppl_weight),
                              ("max_memory", a.max_memory and parse_size(a.max_memory)))
            if v is not None}
    torch.set_num_threads(1)
    recipe = a.work / "search-0.tr"
    val_dir = str(a.family / "tasks" / "val")
    p = prepare(recipe, {"tasks": (val_dir,), "limit": 50, "min_limit": 50, "holdout": False,
                         "final_limit": None} | more)
    select = make_evaluator(p)
    # the dense models' references on the same 50 items a task, as the search's own are
    use_references(select, p.space, select.scores_many)
    same = {"metric": "acc", "holdout": False, "final_limit": None}
    val = make_evaluator(prepare(recipe, {"tasks": (val_dir,), "limit": 100, "min_limit": 50}
                                 | same))
    test = make_evaluator(prepare(recipe, {"tasks": (str(a.family / "tasks"),), "limit": 150,
                                           "min_limit": 150} | same))
    weight = float(re.sub(r"^merged-", "", (a.work / "merged").resolve().name))
    n = p.space.slot_count - p.space.target_kept
    # a full-size genome of the merge at `weight`; its drop flags are then set directly
    # (genome_from_drops repairs to the size target, which every step but the last misses)
    template = genome_from_drops(p.space, set(range(n)), random.Random(0), source=merged(weight))

    def pruned(drops: list[int]):
        return decode(p.space, [dataclasses.replace(g, drop=s.index in drops)
                                for s, g in zip(p.space.slots, template)])

    def criterion(scores: dict[str, float]) -> float:
        if a.by == "fitness":
            return select.fitness(scores)
        return sum(scores[s] for s in SKILLS) / len(SKILLS)

    drops: list[int] = []
    steps = []
    started = time.perf_counter()
    while len(drops) < n:
        left = [i for i in range(p.space.slot_count) if i not in drops]
        scored = select.scores_many([pruned(drops + [i]) for i in left], 0)
        best = max(range(len(left)), key=lambda k: criterion(scored[k]))
        drops.append(left[best])
        steps.append({"drop": left[best], "criterion": criterion(scored[best]),
                      "scores": scored[best]})
        print(f"{len(drops)} drop {left[best]:2d}  {a.by} {criterion(scored[best]):.4f}  "
              f"text {scored[best]['text']:.1f}  {round(time.perf_counter() - started)} s",
              flush=True)
    r = pruned(drops)
    first, every = val.scores(r, 0), val.scores(r, 1)
    held = holdout_scores(every, first, {t.name: len(t.items) for t in val.tasks}, 100, 50)
    t = test.scores(r, 0)
    row = {"by": a.by, "merge_weight": weight, "drops": sorted(drops), "order": drops,
           "steps": steps, "val_first": {s: first[s] for s in SKILLS},
           "holdout": {s: held[s] for s in SKILLS}, "val_text": every["text"],
           "test": {s: t[s] for s in SKILLS}, "test_text": t["text"],
           "seconds": round(time.perf_counter() - started), "recipe": format_recipe(r)}

    def mean(d: dict) -> float:
        return 100 * sum(d.values()) / len(d)

    print(f"drops {row['drops']}: validation first 50 {mean(row['val_first']):.1f}, held-out "
          f"{mean(row['holdout']):.1f}, validation ppl {row['val_text']:.1f}; test "
          f"{mean(row['test']):.1f}, test ppl {row['test_text']:.2f}")
    if a.out:
        a.out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
