"""Benchmark the search's evaluation: candidates per minute with caches off and on.

Runs the same seeded search on the zoo twice — every cache off, then on — and prints
candidates evaluated per minute, layer applications run and skipped, and whether the two runs
found identical fitness values (they must: caches change speed, not results).

    tailorc zoo zoo            # once (a few minutes)
    python bench/evolve.py [--recipe recipes/base.tr] [--generations 4] [--population 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(recipe: Path, overrides: dict, caches: bool) -> dict:
    from recipe_compiler.search import make_evaluator, prepare, warm_starts
    from recipe_compiler.search.run import Search

    p = prepare(recipe, overrides)
    ev = make_evaluator(p, caches=caches)
    calls = {"n": 0}

    def score(recipes, rung):
        calls["n"] += len(recipes)
        return [ev.scores(r, rung) for r in recipes]

    start = time.perf_counter()
    warm = list(warm_starts(ev, p.space).values())  # seeded as `tailorc evolve` seeds
    search = Search(p.space, score, ev.fitness, warm=warm)
    pop, _ = search.run()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "candidates": calls["n"],
            "per_min": 60 * calls["n"] / seconds, "layers_run": ev.stats.act_misses,
            "layers_skipped": ev.stats.act_hits, "fitness": [i.fitness.values for i in pop],
            "best": max(i.fitness.values[0] for i in pop)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=Path("recipes/base.tr"))
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {"generations": args.generations, "population": args.population}
    off = run(args.recipe, overrides, caches=False)
    on = run(args.recipe, overrides, caches=True)
    print(f"{'caches':<8} {'candidates':>10} {'seconds':>8} {'per min':>8} {'layers run':>11} "
          f"{'skipped':>8} {'best':>7}")
    for name, r in (("off", off), ("on", on)):
        print(f"{name:<8} {r['candidates']:>10} {r['seconds']:>8.1f} {r['per_min']:>8.0f} "
              f"{r['layers_run']:>11} {r['layers_skipped']:>8} {r['best']:>7.4f}")
    same = off["fitness"] == on["fitness"]
    print(f"speed-up {on['per_min'] / off['per_min']:.2f}x; identical fitness values: {same}")
    if not same:
        raise SystemExit("caches changed the results")


if __name__ == "__main__":
    main()
