"""The search against the simpler ways to a smaller model, on the real SmolLM2 family.

    tailorc zoo --real family             # once (SmolLM2-135M-Instruct + 3 fine-tunes)
    python bench/real_quality.py --family family [--seeds 0 1 2] [--write-docs]

Everything a user runs goes through `tailorc`. At 25% of the 30 layers removed: the dense
models; a task-arithmetic merge of the three fine-tunes built with `tailorc build`, at 0.5
or 1.0 each, whichever scores better on validation; each of the four pruners (`tailorc
prune`: block influence, angular, ppl, SLEB) on each model and on that merge, calibrated on
the validation text; `tailorc evolve` with the configuration `recipes/base.tr` holds
(population 24, 12 generations, floor, perplexity term, successive halving over 25 and 50
validation items per task, local search 96) plus `metric = prob` and `ppl_tolerance =
2.2`, chosen on validation (`bench/real_choice.py`), its 8 finalists judged on validation items
50-99 alone (`holdout = true`: items the search never selected on); and random search over
the same space with as many evaluations as the search used, each on 25 items, its 8 best
then judged as the search's finalists are (through the Python API: it is a baseline, not a
command). Search, random search and calibration see the validation split only; the table is
`tailorc eval` on the test split, and the issue's targets are checked against it. With
--write-docs the table goes to docs/results.md (between the real-results markers) and the
raw numbers to docs/results_real.json; `--reuse-baselines` takes the rows that do not
depend on the search from such a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKILLS = ("facts", "lexicon", "arith")
MODELS = ("base", *SKILLS)
PRUNERS = ("block-influence", "angular", "ppl", "sleb")
SEARCH = "GPTailor search (tailorc evolve)"
RANDOM = "random search (same evaluations)"
TAILORC = str(Path(sys.executable).parent / "tailorc")
# The merge a mergekit user builds: task arithmetic of the three fine-tunes, at the weight
# of these that scores best on validation (v3 fine-tunes sum well, v2's did not).
MERGE_WEIGHTS = (0.5, 1.0)
MERGE = "dense merge (task arithmetic, weight chosen on validation)"


def run(*args: str) -> str:
    done = subprocess.run([TAILORC, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"tailorc {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def tasks_sha(family: Path) -> str:
    """The digest of the family's task files, both splits (items and English texts): a
    saved row, a pruner's choice or a cached score holds for these texts only."""
    h = hashlib.sha256()
    for f in sorted((family / "tasks").rglob("*")):
        if f.is_file():
            h.update(f.relative_to(family).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def models_block(family: Path) -> str:
    return "\n".join(f'model {m} = "{family / m}"' for m in MODELS)


# settings only the genetic search reads: random search's recipe (and the key its saved row
# is found by) leaves them out, so that its row stands for any of them
GA_ONLY = ("generations", "local_search", "greedy_start", "greedy_sweep", "warm_start",
           "tune_weights", "elite", "crossover", "mutation")


def search_recipe(family: Path, seed: int, a: argparse.Namespace, warm: bool = True) -> str:
    """recipes/base.tr's search, on this family (25 then 50 validation items per task by
    successive halving, the 8 finalists judged on the 50 the search never read: `holdout`),
    scoring an item by the probability on its right choice, perplexity up to 2.2 times the
    base's free (both chosen on validation: bench/real_choice.py, docs/results.md), with
    any `--setting KEY=VALUE` replacing or adding a setting; `warm=False`: random search's,
    without the settings only the genetic search reads."""
    settings = {
        "remove": "25%", "tasks": f'"{family / "tasks" / "val"}"',
        "population": a.population, "generations": a.generations, "limit": 50,
        "min_limit": 25, "final_limit": 100, "seed": seed,
        "methods": "[task_arithmetic]", "weight_range": "[0.0, 1.0]",
        "min_task_retention": "80%", "ppl_weight": 0.5, "finalists": 8,
        "local_search": a.local_search, "max_memory": '"1GB"', "holdout": "true"}
    # where --setting put them when the committed rows were saved (a saved row is found by
    # this text)
    settings |= {"ppl_tolerance": 2.2, "metric": "prob"}
    settings |= dict(kv.split("=", 1) for kv in getattr(a, "setting", None) or [])
    if not warm:
        settings = {k: v for k, v in settings.items() if k not in GA_ONLY}
    body = "".join(f"  {k} = {v}\n" for k, v in settings.items())
    return f"{models_block(family)}\nslot 0..30 = ?\nsearch {{\n{body}}}\n"


def scores(paths: dict[str, Path], family: Path, threads: int,
           split: str = "test") -> dict[str, dict]:
    tasks = family / "tasks" / ("val" if split == "val" else "")
    out = json.loads(run("eval", *map(str, paths.values()), "--tasks", str(tasks),
                         "--json", "--threads", str(threads)))
    rows = {}
    for label, doc in zip(paths, out["models"].values()):
        r = {t: v["primary"] for t, v in doc["tasks"].items()}
        r["mean"] = statistics.fmean(r[t] for t in SKILLS)
        rows[label] = r
    return rows


def baselines(family: Path, work: Path, threads: int,
              pruners: tuple[str, ...] = PRUNERS) -> dict[str, Path]:
    paths = {f"dense {m}": family / m for m in MODELS}
    merges = {}
    for w in MERGE_WEIGHTS:
        recipe = work / f"merge-{w}.tr"
        recipe.write_text(f"{models_block(family)}\nslot 0..30 = merge(facts, lexicon, "
                          f"arith, weights=[{w}, {w}, {w}], method=task_arithmetic)\n")
        run("build", str(recipe), "-o", str(work / f"merged-{w}"), "--force")
        merges[w] = work / f"merged-{w}"
    val = scores({w: path for w, path in merges.items()}, family, threads, "val")
    weight = max(MERGE_WEIGHTS, key=lambda w: val[w]["mean"])  # as a user would choose
    print(f"merge weight {weight} (validation means: "
          + ", ".join(f"{w}: {100 * val[w]['mean']:.1f}" for w in MERGE_WEIGHTS) + ")",
          flush=True)
    (work / "merged").unlink(missing_ok=True)
    (work / "merged").symlink_to(merges[weight].name)
    paths[MERGE] = work / "merged"
    calib = str(family / "tasks" / "val" / "text.txt")
    sha = json.loads((family / "family.json").read_text())["sha256"]
    sha["merge"] = hashlib.sha256(("".join(sha[m] for m in MODELS) + str(weight)).encode()
                                  ).hexdigest()
    text = hashlib.sha256(Path(calib).read_bytes()).hexdigest()
    for method in pruners:
        for name, path in (*((m, family / m) for m in MODELS), ("merge", work / "merged")):
            # these weights' choice on this calibration text
            key = hashlib.sha256((sha[name] + text).encode()).hexdigest()[:12]
            out = work / f"{method}-{name}-{key}.tr"
            if not out.exists():  # a pruner's choice is deterministic: reuse it
                run("prune", str(path), "--method", method, "--calib", calib, "-o",
                    str(out), "--force")
            paths[f"{method} on {name}"] = out
    return paths


def search(family: Path, work: Path, seed: int, a: argparse.Namespace) -> tuple[Path, dict]:
    recipe = work / f"search-{seed}.tr"
    recipe.write_text(search_recipe(family, seed, a))
    start = time.perf_counter()
    resume = a.resume_searches and (work / f"run-{seed}" / "state.json").is_file()
    greedy = getattr(a, "greedy_from", None)
    greedy = [] if greedy is None or greedy == seed else [
        "--greedy-from", str(work / f"run-{greedy}")]
    out = run("evolve", str(recipe), "-o", str(work / f"run-{seed}"),
              "--resume" if resume else "--force", "--threads", str(a.threads), *greedy)
    seconds = time.perf_counter() - start
    evaluations = int(out.split(" evaluations in ")[0].rsplit(" ", 1)[1])
    cost = {"seconds": round(seconds), "evaluations": evaluations}
    if resume:  # same seed, same result; the seconds are the resumed part's alone
        cost["resumed"] = True
    if greedy:  # the greedy's evaluations count; its seconds were seed `greedy_from`'s
        cost["greedy_from_seed"] = a.greedy_from
    return work / f"run-{seed}" / "best.tr", cost


def random_search(family: Path, work: Path, seed: int, budget: int,
                  a: argparse.Namespace, tasks: str) -> tuple[Path, dict]:
    """Random closed recipes from the search's space, a population at a time, each scored
    on the first rung's items, until `budget` evaluations less the finish; then, as the
    search finishes, its `finalists` best are scored on every validation item and the best
    there (same fitness as the search) is kept. `tasks`: the family's `tasks_sha`, part of
    the key its first-rung scores are cached under."""
    import torch

    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.genome import decode, random_genome
    from recipe_compiler.search.refine import all_rungs, on_holdout
    from recipe_compiler.search.session import use_references
    from recipe_compiler.search.space import rungs

    torch.set_num_threads(a.threads)
    space = work / f"random-{seed}.tr"
    space.write_text(search_recipe(family, seed, a, warm=False))
    p = prepare(space, {})
    ev = make_evaluator(p)
    rng = random.Random(seed)
    start, best = time.perf_counter(), (-math.inf, None)
    # the same objective as the search's: floor and perplexity against the dense models
    used = use_references(ev, p.space, lambda rs, rung: [ev.scores(r, rung) for r in rs])
    settings = p.space.settings
    seen: dict[tuple, tuple[float, object]] = {}
    # A candidate's first-rung scores do not depend on how the fitness weighs them: they are
    # kept per search space and seed, so that a re-run with another ppl_weight, floor or
    # fitness re-judges the same candidates instead of scoring them again.
    fitness_keys = ("ppl_weight", "ppl_tolerance", "min_task_retention", "fitness")
    space_key = hashlib.sha256("".join(
        line for line in space.read_text().splitlines(keepends=True)
        if line.split("=")[0].strip() not in fitness_keys).encode()
        + tasks.encode()).hexdigest()[:12]
    cache_path = work / f"random-{seed}-rung0-{space_key}.json"
    names = {t.name for t in (*ev.tasks, *ev.texts)}
    cached = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    cached = {k: v for k, v in cached.items() if set(v) == names}
    earlier = None
    if getattr(a, "reuse_task_scores", None):
        text_ev = text_evaluator(space, family, ev)
        earlier = EarlierTaskScores(
            sorted(a.reuse_task_scores.glob(f"random-{seed}-rung0-*.json")),
            {t.name for t in ev.tasks}, lambda r: ev.scores(r, 0),
            lambda r: text_ev.scores(r, 0))
    while used < budget - settings.finalists:
        for _ in range(min(settings.population, budget - settings.finalists - used)):
            genome = random_genome(p.space, rng)
            r = decode(p.space, genome)
            used += 1
            if repr(genome) not in cached:
                cached[repr(genome)] = (ev.scores(r, 0) if earlier is None
                                        else earlier.scores(repr(genome), r))
            seen.setdefault(repr(genome), (ev.fitness(cached[repr(genome)]), r))
        cache_path.write_text(json.dumps(cached) + "\n")
    finalists = sorted(seen.values(), key=lambda fr: -fr[0])[:settings.finalists]
    final, top = len(all_rungs(settings)) - 1, rungs(settings)
    sizes = {t.name: len(t.items) for t in ev.tasks}
    for _, r in finalists:
        used += 1
        scores = ev.scores(r, final)
        if settings.holdout:  # as the search's finish: the items past its limit alone
            scores = on_holdout(settings, sizes, scores, ev.scores(r, len(top) - 1), final)
        fitness = ev.fitness(scores)
        if fitness > best[0]:
            best = (fitness, r)
    out = work / f"random-{seed}-best.tr"
    out.write_text(format_recipe(best[1]))
    cost = {"seconds": round(time.perf_counter() - start), "evaluations": used}
    if earlier is not None:  # its wall seconds do not include scoring these candidates' tasks
        cost["task_scores_reused"] = earlier.reused
    return out, cost


class EarlierTaskScores:
    """First-rung scores from an earlier random search over the same space and seed on
    other English texts (`--reuse-task-scores DIR`): a candidate's task scores do not depend
    on the texts, so they are taken as they are and only the texts are scored again
    (`text_scores`, an evaluator of the texts alone: `text_evaluator`). The earlier cache
    is the one of `files` whose entry for the first candidate asked for holds exactly the
    task scores this run gives it (`full_scores`, run once); none does: the run stops."""

    def __init__(self, files: list[Path], tasks: set[str],
                 full_scores: Callable[[object], dict], text_scores: Callable[[object], dict]):
        if not files:
            sys.exit("--reuse-task-scores: no earlier random-SEED-rung0-*.json cache")
        self.files, self.tasks = files, tasks
        self.full_scores, self.text_scores = full_scores, text_scores
        self.old: dict | None = None
        self.reused = 0

    def scores(self, genome: str, recipe) -> dict[str, float]:
        if self.old is None:  # the first candidate: find the earlier cache that agrees
            full = self.full_scores(recipe)
            for f in self.files:
                old = json.loads(f.read_text())
                if genome in old and all(old[genome].get(t) == full[t] for t in self.tasks):
                    self.old = old
                    print(f"random search: task scores from {f}", flush=True)
                    return full
            sys.exit("--reuse-task-scores: no earlier cache has this run's first candidate "
                     "with the same task scores")
        if genome not in self.old:
            return self.full_scores(recipe)
        self.reused += 1
        return {**{t: self.old[genome][t] for t in self.tasks}, **self.text_scores(recipe)}


def text_evaluator(space: Path, family: Path, ev):
    """An evaluator of `space`'s search with the validation texts as its only tasks."""
    from recipe_compiler.search import make_evaluator, prepare

    texts = space.parent / f"{space.stem}-text"
    texts.mkdir(exist_ok=True)
    for t in ev.texts:
        link = texts / f"{t.name}.txt"
        link.unlink(missing_ok=True)
        link.symlink_to(family / "tasks" / "val" / f"{t.name}.txt")
    lines = [f'  tasks = "{texts}"\n' if line.strip().startswith("tasks =") else line
             for line in space.read_text().splitlines(keepends=True)
             if line.split("=")[0].strip() != "min_task_retention"]  # no tasks to floor
    recipe = space.parent / f"{space.stem}-text.tr"
    recipe.write_text("".join(lines))
    return make_evaluator(prepare(recipe, {}))


def saved(work: Path, kind: str, seed: int, key: str, a: argparse.Namespace) -> dict | None:
    """With --reuse-rows, the row an earlier run of this script measured for the same
    search (or random search) recipe text and budget; else None."""
    path = work / "rows" / f"{kind}-{seed}.json"
    if not a.reuse_rows or not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc["row"] if doc["key"] == key else None


def save(work: Path, kind: str, seed: int, key: str, row: dict) -> None:
    (work / "rows").mkdir(exist_ok=True)
    (work / "rows" / f"{kind}-{seed}.json").write_text(
        json.dumps({"key": key, "row": row}, indent=2) + "\n")


def row_budget(rows: dict[str, list[dict]], seed: int) -> int:
    """Random search's budget: as many evaluations as the search's run with this seed."""
    return next(r["evaluations"] for r in rows[SEARCH] if r["seed"] == seed)


def targets(rows: dict[str, list[dict]]) -> str:
    """The issue's targets, checked on the test split (means over seeds)."""
    def mean(label: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows[label])

    base = rows["dense base"][0]
    ours = {k: mean(SEARCH, k) for k in (*SKILLS, "mean", "text")}
    pruned = [k for k in rows if k.split(" on ")[0] in PRUNERS]
    singles = [k for k in pruned if not k.endswith(" on merge")]
    merged = [k for k in pruned if k.endswith(" on merge")]
    best_single = max(singles, key=lambda k: mean(k, "mean"))
    best_merged = max(merged, key=lambda k: mean(k, "mean"))
    lines = ["| target | result |", "|---|---|"]

    def ok(flag: bool) -> str:
        return "**met**" if flag else "**not met**"

    ret = ours["mean"] / base["mean"]
    lines.append(f"| ≥ 97% of the dense base's mean | {ok(ret >= 0.97)} ({100 * ret:.1f}%) |")
    for what, label in (("best single-model pruner", best_single),
                        ("best merge-then-prune", best_merged), ("random search", RANDOM)):
        if label not in rows:
            lines.append(f"| ≥ 5 points above the {what} | not measured in this run |")
            continue
        gap = 100 * (ours["mean"] - mean(label, "mean"))
        gap_ret = 100 * gap / 100 / base["mean"]
        lines.append(f"| ≥ 5 points above the {what} ({label}) | {ok(gap >= 5)} "
                     f"({gap:+.1f} points of mean score, {gap_ret:+.1f} retention points) |")
    seeds = [min(r[t] / base[t] for t in SKILLS if base[t] > 0) for r in rows[SEARCH]]
    worst = ", ".join(f"{100 * w:.0f}%" for w in seeds)
    lines.append(f"| no task below 80% of the dense base | {ok(min(seeds) >= 0.8)} "
                 f"(worst task per seed: {worst}) |")
    single_ppl = mean(best_single, "text")
    lowest = min(mean(k, "text") for k in singles)
    lines.append(f"| text perplexity no worse than the best single-model pruner's | "
                 f"{ok(ours['text'] <= single_ppl)} ({ours['text']:.2f} against "
                 f"{single_ppl:.2f}; the lowest of any single-model pruner: {lowest:.2f}) |")
    return "\n".join(lines)


def table(rows: dict[str, list[dict]]) -> str:
    base = rows["dense base"][0]
    lines = ["| model | " + " | ".join(SKILLS) + " | mean | retention vs base | worst task "
             "vs base | English ppl | evaluations | wall s |",
             "|---|" + "---:|" * (len(SKILLS) + 6)]
    for label, runs in rows.items():
        def cell(k: str, scale: float = 100, fmt: str = ".1f", runs=runs) -> str:
            vals = [r[k] for r in runs]
            sd = f" ± {scale * statistics.stdev(vals):{fmt}}" if len(vals) > 1 else ""
            return f"{scale * statistics.fmean(vals):{fmt}}{sd}"

        mean = statistics.fmean(r["mean"] for r in runs)
        worst = min(statistics.fmean(r[t] for r in runs) / base[t] for t in SKILLS)
        extra = (f"{cell('evaluations', 1, '.0f')} | {cell('seconds', 1, '.0f')}"
                 if "seconds" in runs[0] else "— | —")
        lines.append(f"| {label} | " + " | ".join(cell(t) for t in SKILLS)
                     + f" | {cell('mean')} | {100 * mean / base['mean']:.1f}% | "
                     f"{100 * worst:.0f}% | {cell('text', 1, '.2f')} | {extra} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", type=Path, default=Path("family"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-real-quality"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--local-search", type=int, default=96)
    ap.add_argument("--no-random", action="store_true", help="skip random search")
    ap.add_argument("--random-seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="run random search for these of the seeds only (default: all)")
    ap.add_argument("--random-budget", type=int, default=None, metavar="N",
                    help="random search's evaluations (default: as many as the search's run "
                    "with the same seed)")
    ap.add_argument("--resume-searches", action="store_true",
                    help="continue a search that an earlier run left in WORK/run-SEED "
                    "(tailorc evolve --resume: the same result; its wall seconds are then "
                    "the resumed part's)")
    ap.add_argument("--reuse-task-scores", type=Path, default=None, metavar="DIR",
                    help="random search: take each candidate's first-rung task scores from "
                    "an earlier run's cache in DIR (same space and seed, other English "
                    "texts) and score only the text again")
    ap.add_argument("--random-only", action="store_true",
                    help="run random search alone (with --random-budget), e.g. beside the "
                    "searches in other processes")
    ap.add_argument("--reuse-rows", action="store_true",
                    help="reuse a search's or random search's test row that an earlier run "
                    "saved in WORK/rows for the same recipe text (so seeds can run in "
                    "separate processes, then one call with every seed writes the docs)")
    ap.add_argument("--rows-only", action="store_true",
                    help="measure and save the seeds' rows (without the baselines, unless "
                    "--reuse-baselines gives them); print and write nothing else")
    ap.add_argument("--setting", action="append", metavar="KEY=VALUE",
                    help="one more search setting for the search and random search, e.g. "
                    "fitness=retention (repeatable; an experiment, not the configuration)")
    ap.add_argument("--reuse-baselines", type=Path, default=None, metavar="JSON",
                    help="take the dense models', merge's and pruners' rows from an earlier "
                    "run's docs/results_real.json on the same family (they do not depend "
                    "on the search's settings)")
    ap.add_argument("--random-from", type=Path, default=None, metavar="JSON",
                    help="with --no-random: take random search's rows from an earlier run's "
                    "raw results (same tasks and texts; it may be another build of the "
                    "family), so that the targets compare against it; the table says so")
    ap.add_argument("--baselines-only", action="store_true",
                    help="score the baselines, print them, save them to WORK/baselines.json "
                    "(for --reuse-baselines) and stop")
    ap.add_argument("--greedy-from", type=int, default=None, metavar="SEED",
                    help="with greedy_start: the other seeds take the greedy's path from "
                    "WORK/run-SEED (tailorc evolve --greedy-from; it does not depend on "
                    "the seed), once that run has finished its generation 0")
    ap.add_argument("--pruners", nargs="+", choices=PRUNERS, default=list(PRUNERS),
                    help="the single-model pruners run as baselines (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--docs-block", default="real-results", metavar="NAME",
                    help="with --write-docs: the docs/results.md block written (default "
                    "real-results; another must have its markers there already)")
    ap.add_argument("--raw", type=Path, default=ROOT / "docs" / "results_real.json",
                    metavar="JSON", help="with --write-docs: where the raw rows go")
    a = ap.parse_args()
    if a.random_only and not a.random_budget:
        ap.error("--random-only needs --random-budget (no search row to take it from)")
    family, work = a.family.resolve(), a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sha = json.loads((family / "family.json").read_text())["sha256"]
    tasks = tasks_sha(family)
    if a.reuse_baselines:
        earlier = json.loads(a.reuse_baselines.read_text())
        if earlier.get("family_sha256", sha) != sha:
            sys.exit(f"{a.reuse_baselines}: measured on other weights than {family}'s")
        if earlier.get("tasks_sha256") != tasks:
            sys.exit(f"{a.reuse_baselines}: measured on other tasks or texts than {family}'s")
        rows = {k: v for k, v in earlier["rows"].items() if k not in (SEARCH, RANDOM)}
    elif a.rows_only:  # the seeds' rows alone: a later call brings the baselines
        rows = {}
    else:
        paths = baselines(family, work, a.threads, tuple(a.pruners))
        rows = {k: [v] for k, v in scores(paths, family, a.threads).items()}
    print(f"baselines: {round(time.perf_counter() - started)} s", flush=True)
    if a.baselines_only:
        seconds = (earlier.get("seconds") if a.reuse_baselines
                   else round(time.perf_counter() - started))
        (work / "baselines.json").write_text(json.dumps(
            {"family": str(family), "family_sha256": sha, "tasks_sha256": tasks,
             "seconds": seconds, "rows": rows},
            indent=2) + "\n")
        text = table(rows)
        print(text)
        print(f"saved {work / 'baselines.json'}")
        if a.write_docs:
            from _docs import write_block

            cost = f"scored in {seconds} s on 2 cores; raw rows in WORK/baselines.json"
            write_block(ROOT / "docs" / "results.md", "real-baselines",
                        "Written by `python bench/real_quality.py --family FAMILY "
                        "--baselines-only --write-docs` (the baselines alone: dense models, "
                        f"the merge, each pruner on each; test split; {cost}).\n\n{text}",
                        heading="## The real family: the baselines")
        return
    randoms = a.seeds if a.random_seeds is None else a.random_seeds
    for seed in a.seeds:
        if not a.random_only:
            key = search_recipe(family, seed, a) + f"tasks {tasks}"
            row = saved(work, "search", seed, key, a)
            if row is None:
                best, cost = search(family, work, seed, a)
                row = (scores({SEARCH: best}, family, a.threads)[SEARCH] | cost
                       | {"seed": seed, "threads": a.threads})
                save(work, "search", seed, key, row)
            rows.setdefault(SEARCH, []).append(row)
            print(f"seed {seed}: {row}", flush=True)
        if not a.no_random and seed in randoms:
            budget = a.random_budget or row_budget(rows, seed)
            key = (search_recipe(family, seed, a, warm=False) + f"budget {budget}"
                   + f"tasks {tasks}")
            row = saved(work, "random", seed, key, a)
            if row is None:
                best, cost = random_search(family, work, seed, budget, a, tasks)
                row = (scores({RANDOM: best}, family, a.threads)[RANDOM] | cost
                       | {"seed": seed, "threads": a.threads})
                save(work, "random", seed, key, row)
            rows.setdefault(RANDOM, []).append(row)
            print(f"random, seed {seed}: {row}", flush=True)
    random_note = ""
    if a.random_from is not None and RANDOM not in rows:
        earlier = json.loads(a.random_from.read_text())
        if earlier.get("tasks_sha256") != tasks:
            sys.exit(f"{a.random_from}: measured on other tasks or texts than {family}'s")
        rows[RANDOM] = earlier["rows"][RANDOM]
        build = ("this build" if earlier.get("family_sha256") == sha else
                 "another build of the family (other bits, the same seed)")
        random_note = (f"\n\nThe random search row is `{a.random_from}`'s (seeds "
                       f"{', '.join(str(r['seed']) for r in rows[RANDOM])}, "
                       f"{rows[RANDOM][0]['evaluations']} evaluations each, measured on "
                       f"{build}), not re-run here.")
    if a.rows_only:
        return
    order = ["dense base", *(f"dense {m}" for m in SKILLS),
             MERGE, SEARCH, RANDOM]
    rows = {k: rows[k] for k in order if k in rows} | {
        k: v for k, v in rows.items() if k not in order}
    text = (table(rows) + random_note + "\n\nTargets (test split, means over seeds):\n\n"
            + targets(rows))
    print(text)
    total = round(time.perf_counter() - started)
    print(f"total {total} s")
    if a.write_docs:
        raw = {"family": str(family), "family_sha256": sha, "tasks_sha256": tasks,
               "seeds": a.seeds,
               "population": a.population,
               "settings": a.setting or [],
               "generations": a.generations, "local_search": a.local_search,
               "seconds": total, "rows": rows}
        a.raw.write_text(json.dumps(raw, indent=2) + "\n")
        from _docs import write_block

        seeds = " ".join(map(str, a.seeds))
        extra = "".join(f" --setting {kv}" for kv in a.setting or [])
        if a.random_seeds is not None:
            extra += " --random-seeds " + " ".join(map(str, a.random_seeds))
        if a.random_budget:
            extra += f" --random-budget {a.random_budget}"
        if a.reuse_rows:
            extra += " --reuse-rows"
            took = ("each run's wall seconds are in the table: runs went in separate "
                    "processes sharing 2 cores (each row's threads are in the raw numbers), "
                    "and this call collected their saved rows")
        else:
            took = f"the whole run took {total} s on 2 cores"
        if a.reuse_baselines:
            extra += " --reuse-baselines " + str(a.reuse_baselines)
        if a.generations != ap.get_default("generations"):
            extra += f" --generations {a.generations}"
        if a.greedy_from is not None:
            extra += f" --greedy-from {a.greedy_from}"
        if a.no_random:
            extra += " --no-random"
        if a.random_from is not None:
            extra += f" --random-from {a.random_from}"
        if a.docs_block != "real-results":
            extra += (f" --docs-block {a.docs_block} --raw "
                      f"{a.raw.resolve().relative_to(ROOT)}")
        block = (f"Written by `python bench/real_quality.py --family FAMILY "
                 f"--seeds {seeds}{extra} --write-docs` (SmolLM2-135M-Instruct family, 25% of "
                 f"its 30 layers removed, test split, mean ± sd over seeds; search: "
                 f"population {a.population}, {a.generations} generations, local search "
                 f"{a.local_search}; random search: as many "
                 f"evaluations; {took}; raw numbers in "
                 f"`{a.raw.resolve().relative_to(ROOT)}`).\n\n{text}")
        write_block(ROOT / "docs" / "results.md", a.docs_block, block,
                    heading="## The real family" if a.docs_block == "real-results" else None)


if __name__ == "__main__":
    main()
