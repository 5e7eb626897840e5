"""Reach or selection: what a finished real-family search had in hand, scored on test.

    python bench/real_reach.py --family FAMILY --baselines WORK \\
        "LABEL=WORK:SEED" [...] [--write-docs]

Each LABEL=WORK:SEED names a `bench/real_quality.py --work` directory whose run-SEED/ that
bench's search left (state.json: the last population and hall of fame; best.tr: the
winner). `--baselines WORK` is the directory whose one-pass pruners' recipes
(`METHOD-MODEL-SHA.tr`, from `real_quality.py --baselines-only`) are rebuilt in the
search's space, as generation 0 seeds them (the merge's at the weight chosen there).

Every distinct candidate is scored on the validation items the search selected on (the
first 50 a task), on the 50 it never read (the finish's held-out items), and on the test
split, with the text's perplexity on each split. Test is for the record only: nothing here
chooses. Two questions: did the search hold a candidate well above the baselines on test
(reach), and would the held-out items have found it (selection)? With --write-docs the
summary goes to docs/results.md (real-reach markers, or `--block NAME`'s) and every row
to docs/results_real_reach.json (docs/results_NAME.json).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shlex
import statistics
import sys
from pathlib import Path

from real_quality import ROOT, SKILLS

WINNER = "winner (best.tr)"
PRUNED = re.compile(r"(.+)-(base|facts|lexicon|arith|merge)-[0-9a-f]{12}\.tr$")


def candidates(work: Path, seed: int, space, baselines: Path | None, top: int,
               pruned_on: tuple[str, ...]) -> list[tuple]:
    """(what, recipe, search fitness or None): the winner, the `top` best distinct of the
    last population and hall of fame, then the pruners' answers on the `pruned_on`
    models (all when empty)."""
    from recipe_compiler.compiler.frontdoor import load_checked
    from recipe_compiler.search.genome import decode, genome_from_drops, merged
    from recipe_compiler.search.run import genes_of

    run = work / f"run-{seed}"
    out = [(WINNER, load_checked(run / "best.tr", require_closed=True).recipe, None)]
    state = json.loads((run / "state.json").read_text())
    out += sorted((("search", decode(space, genes_of(packed)), packed["fitness"][0])
                   for packed in state["population"] + state["hof"]), key=lambda c: -c[2])
    if baselines is not None:
        weight = float((baselines / "merged").resolve().name.split("-", 1)[1])
        for path in sorted(baselines.glob("*.tr")):
            m = PRUNED.match(path.name)
            if not m or (pruned_on and m.group(2) not in pruned_on):
                continue
            drops = re.search(r"drops \[([\d, ]+)\]", path.read_text()).group(1)
            model = m.group(2)
            source = merged(weight) if model == "merge" else (None if model == "base"
                                                               else model)
            genome = genome_from_drops(space, set(map(int, drops.split(", "))),
                                       random.Random(0), source=source)
            out.append((f"{m.group(1)} on {model}", decode(space, genome), None))
    seen, unique, kept = set(), [], 0
    for what, recipe, fitness in out:
        if recipe in seen or (what == "search" and kept == top):
            continue
        seen.add(recipe)
        unique.append((what, recipe, fitness))
        kept += what == "search"
    return unique


def measure(family: Path, work: Path, seed: int, baselines: Path | None, top: int,
            pruned_on: tuple[str, ...]) -> list[dict]:
    import torch

    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.refine import holdout_scores

    torch.set_num_threads(1)
    recipe = work / f"search-{seed}.tr"
    p = prepare(recipe, {})
    # accuracy, whatever the search's metric; the items are rungs: 50 and 100 on
    # validation, all 150 on test (a min_limit at the limit: a single rung)
    same = {"metric": "acc", "holdout": False, "final_limit": None}
    val = make_evaluator(prepare(recipe, {"tasks": (str(family / "tasks" / "val"),),
                                          "limit": 100, "min_limit": 50} | same))
    test = make_evaluator(prepare(recipe, {"tasks": (str(family / "tasks"),), "limit": 150,
                                           "min_limit": 150} | same))
    assert val.rungs == (50, 100) and test.rungs == (150,), (val.rungs, test.rungs)
    sizes = {t.name: len(t.items) for t in val.tasks}
    rows = []
    for what, r, fitness in candidates(work, seed, p.space, baselines, top, pruned_on):
        first, every = val.scores(r, 0), val.scores(r, 1)
        held = holdout_scores(every, first, sizes, 100, 50)
        t = test.scores(r, 0)
        row = {"what": what, "fitness": fitness,
               "val_first": {s: first[s] for s in SKILLS},
               "holdout": {s: held[s] for s in SKILLS}, "val_text": every["text"],
               "test": {s: t[s] for s in SKILLS}, "test_text": t["text"],
               "recipe": format_recipe(r)}
        rows.append(row)
        print(f"{what:24s} {_mean(row['val_first']):5.1f} {_mean(row['holdout']):5.1f} "
              f"{row['val_text']:7.1f} {_mean(row['test']):5.1f} {row['test_text']:7.1f}",
              flush=True)
    return rows


def _mean(scores: dict[str, float]) -> float:
    return 100 * statistics.fmean(scores[s] for s in SKILLS)


def summary(label: str, rows: list[dict]) -> list[str]:
    search = [r for r in rows if r["what"] == "search"]
    winner = rows[0]
    pruned = [r for r in rows if r["what"] not in ("search", WINNER)]
    lines = [f"**{label}** (the {len(search)} best distinct candidates of the last population "
             f"and hall of fame by search fitness, {len(pruned)} pruners' answers)", "",
             "| candidate | search fitness | validation, first 50 | held-out 50 | "
             "validation ppl | test mean | test ppl |", "|---|---:|---:|---:|---:|---:|---:|"]

    def line(name: str, r: dict) -> str:
        fit = "" if r["fitness"] is None else f"{r['fitness']:.3f}"
        return (f"| {name} | {fit} | {_mean(r['val_first']):.1f} | {_mean(r['holdout']):.1f} "
                f"| {r['val_text']:.1f} | {_mean(r['test']):.1f} | {r['test_text']:.1f} |")

    lines.append(line("the winner (after local search)", winner))
    for k, r in enumerate(search):
        lines.append(line(f"population #{k + 1}", r))
    best_pruned = sorted(pruned, key=lambda r: -_mean(r["holdout"]))[:3]
    lines += [line(r["what"], r) for r in best_pruned]
    if search and pruned:
        reach = max(search, key=lambda r: _mean(r["test"]))
        lines += ["", f"Best test mean among these {len(search)}: "
                  f"{_mean(reach['test']):.1f} (population #{search.index(reach) + 1}, "
                  f"held-out {_mean(reach['holdout']):.1f}); the winner: "
                  f"{_mean(winner['test']):.1f}; the pruners' best on test: "
                  f"{max(_mean(r['test']) for r in pruned):.1f}."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="LABEL=WORK:SEED")
    ap.add_argument("--family", type=Path, required=True)
    ap.add_argument("--baselines", type=Path, default=None, metavar="WORK")
    ap.add_argument("--top", type=int, default=8, help="population members scored, best "
                    "first by search fitness (default 8: the finish's finalists' count)")
    ap.add_argument("--pruned-on", nargs="*", default=["merge"], metavar="MODEL",
                    help="the pruners' answers on these models (default: merge; none "
                    "given: every model)")
    ap.add_argument("--block", default="real-reach",
                    help="the docs/results.md block to write (default real-reach); the raw "
                    "rows go to docs/results_<block, with _ for ->.json")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    family = a.family.expanduser()
    raw, text = {}, []
    for variant in a.variants:
        label, rest = variant.split("=", 1)
        work, seed = rest.rsplit(":", 1)
        rows = measure(family, Path(work), int(seed), a.baselines, a.top,
                       tuple(a.pruned_on))
        raw[label] = rows
        text += summary(label, rows) + [""]
    body = "\n".join(text).rstrip()
    print(body)
    if a.write_docs:
        sys.path.insert(0, str(Path(__file__).parent))
        from _docs import write_block

        args = " ".join(shlex.quote(x) for x in sys.argv[1:]).replace(str(a.family),
                                                                       "FAMILY")
        raw_path = f"docs/results_{a.block.replace('-', '_')}.json"
        head = (f"Written by `python bench/real_reach.py {args}` (raw rows, with every "
                f"candidate's recipe: `{raw_path}`).")
        write_block(ROOT / "docs" / "results.md", a.block, f"{head}\n\n{body}",
                    heading=None)
        (ROOT / raw_path).write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
