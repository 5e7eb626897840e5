"""Benchmark the search's evaluation: candidates per minute with caches off and on.

Runs the same seeded search on the zoo twice — every sharing off (each layer made and run
for each candidate, one row per multiple-choice option, as `tailorc eval` scores), then on
(layer, activation and score caches; each generation scored as a tree, the candidates that
go on through the same layer stacked into one call; one row per multiple-choice item with
the context shared by its choices; short items packed side by side) — and prints candidates
evaluated per minute, layer applications run, layer calls (fewer than layers run when rows
are stacked) and layers skipped, token cells run, and the largest difference between the two
runs' fitness values. Sharing contexts changes the shapes of the sums, so perplexities agree
to rounding (about 1e-9 relative), not bit for bit; the search must take the same path,
which the bench checks (same candidates, fitness within 1e-6).

    tailorc zoo zoo            # once (a few minutes)
    python bench/evolve.py [--recipe recipes/base.tr] [--generations 4] [--population 16]
    python bench/evolve.py --recipe-settings   # the recipe's own 24 x 12 (a few minutes)

The short default is dominated by generation 0, whose candidates (the warm starts: pruned
copies of different models) share few layer prefixes; over the recipe's own 12 generations
the children of earlier candidates share more, and so the speed-up is larger there.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(recipe: Path, overrides: dict, caches: bool) -> dict:
    """One seeded search. `seconds` and candidates per minute count the search alone: the
    warm starts before it (pruners ranking each model's layers, the same work with caches
    on or off) are timed apart, in `warm_seconds`."""
    from recipe_compiler.search import make_evaluator, prepare, warm_starts
    from recipe_compiler.search.run import Search

    p = prepare(recipe, overrides)
    ev = make_evaluator(p, caches=caches)  # caches off: contexts not shared either
    calls = {"n": 0}

    def score(recipes, rung):
        calls["n"] += len(recipes)
        return ev.scores_many(recipes, rung)  # with caches off: one by one

    start = time.perf_counter()
    warm = warm_starts(ev, p.space)  # seeded as `tailorc evolve` seeds
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    tokens, layer_calls = ev.stack.layer_tokens, ev.stack.layer_calls  # the search's alone
    first: dict = {}  # generation 0's tokens: its record comes first

    def generation(_record) -> None:
        first.setdefault("tokens", ev.stack.layer_tokens - tokens)

    search = Search(p.space, score, ev.fitness, warm=warm, on_generation=generation)
    pop, _ = search.run()
    seconds = time.perf_counter() - start
    cells = sum(g.ids.numel() for g in ev.inputs)
    return {"seconds": seconds, "warm_seconds": warm_seconds, "candidates": calls["n"],
            "cells": cells,
            "per_min": 60 * calls["n"] / seconds, "layers_run": ev.stats.act_misses,
            "layer_calls": ev.stack.layer_calls - layer_calls,
            "layers_skipped": ev.stats.act_hits,
            "layer_tokens": ev.stack.layer_tokens - tokens, "gen0_tokens": first["tokens"],
            "fitness": [i.fitness.values for i in pop],
            "best": max(i.fitness.values[0] for i in pop)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", type=Path, default=Path("recipes/base.tr"))
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1,
                    help="off/on pairs to run; the table shows the pair with the median "
                    "speed-up, and the line under it every pair's")
    ap.add_argument("--recipe-settings", action="store_true",
                    help="run the recipe's own population and generations (recipes/base.tr: "
                    "24 and 12, what `tailorc evolve` runs) rather than --generations and "
                    "--population; its table goes to its own block of docs/speed.md")
    ap.add_argument("--write-docs", action="store_true",
                    help="write the table into docs/speed.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = ({} if args.recipe_settings
                 else {"generations": args.generations, "population": args.population})
    pairs_run = []
    for _ in range(args.repeats):  # a shared machine's speed drifts: pair off with on
        off = run(args.recipe, overrides, caches=False)
        on = run(args.recipe, overrides, caches=True)
        pairs_run.append((on["per_min"] / off["per_min"], off, on))
    ratios = sorted(r for r, _, _ in pairs_run)
    _, off, on = sorted(pairs_run, key=lambda t: t[0])[(len(pairs_run) - 1) // 2]
    lines = ["| sharing | candidates | seconds | per minute | layers run | layer calls | "
             "layers skipped | tokens through layers | token cells, all batches | best fitness | "
             "warm starts s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in (("off", off), ("on", on)):
        lines.append(f"| {name} | {r['candidates']} | {r['seconds']:.1f} | {r['per_min']:.0f} | "
                     f"{r['layers_run']} | {r['layer_calls']} | {r['layers_skipped']} | "
                     f"{r['layer_tokens']:,} | "
                     f"{r['cells']} | "
                     f"{r['best']:.4f} | {r['warm_seconds']:.1f} |")
    pairs = list(zip(off["fitness"], on["fitness"]))
    diff = max((abs(a - b) for x, y in pairs for a, b in zip(x, y)), default=0.0)
    lines += ["", f"Speed-up **{on['per_min'] / off['per_min']:.2f}x** (the median pair); "
              f"every pair: {', '.join(f'{r:.2f}x' for r in ratios)}. Largest fitness "
              f"difference between the two runs {diff:.1e} over {len(pairs)} individuals. "
              f"Tokens through layers, off over on: "
              f"{off['layer_tokens'] / on['layer_tokens']:.2f}x (the work the sharing "
              f"saves; the speed-up is this times the off run's cost per token over the on "
              f"run's). Generation 0 (the warm starts and the rest of the first population, "
              f"few of which share a layer prefix): {on['gen0_tokens'] / on['layer_tokens']:.0%} "
              f"of the on run's tokens, {off['gen0_tokens'] / off['layer_tokens']:.0%} of the "
              f"off run's."]
    text = "\n".join(lines)
    print(text)
    if off["candidates"] != on["candidates"] or len(pairs) != len(on["fitness"]) or diff > 1e-6:
        raise SystemExit("sharing changed the results")
    if args.write_docs:
        import os
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from _docs import write_block

        shape = ("--recipe-settings" if args.recipe_settings else
                 f"--generations {args.generations} --population {args.population}")
        head = (f"Written by `python bench/evolve.py --recipe {args.recipe} {shape} --threads "
                f"{args.threads} --repeats {args.repeats} --write-docs` ({os.cpu_count()} "
                f"cores, load average {os.getloadavg()[0]:.1f} at the end).")
        write_block(Path(__file__).resolve().parent.parent / "docs" / "speed.md",
                    "evolve-recipe" if args.recipe_settings else "evolve",
                    f"{head}\n\n{text}", heading="## Search speed (`bench/evolve.py`)")


if __name__ == "__main__":
    main()
