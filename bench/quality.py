"""The baselines a practitioner would try, against GPTailor's search, on the zoo.

    tailorc zoo zoo                                   # once
    python bench/quality.py [--zoo zoo] [--seeds 0 1 2] [--write-docs]
    python bench/quality.py --quick                   # every row, quick zoo, tiny budgets

At ``--remove`` of 12 layers removed, every row is one way to get a smaller model:
the dense models; the dense task-arithmetic merge of all fine-tunes (``recipes/zoo_merge.tr``,
built with ``tailorc build``) and that merge pruned by each single-model pruner; each pruner on
each single model; random search over the full space with as many candidate evaluations as the
search used; the search (full space), the search without warm starts, the search without
merges (removal + selection) and removal only. Every method sees the same data: rankings,
calibration and search use the validation split (zoo/tasks/val), and every reported number is
on the test split (zoo/tasks). Rows that depend on a seed (searches) run once per ``--seeds``
value and report mean ± sd; the others are deterministic and run once. Raw results go to
``WORK/results.json`` and, with ``--write-docs``, to docs/results.json, the table in
docs/results.md and the curve in docs/results_curve.png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from recipe_compiler.evaluate import evaluate, load_task
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.prune import METHODS, calibration_texts, choose_drops, drop_recipe, encode
from recipe_compiler.search import make_evaluator, prepare, warm_starts
from recipe_compiler.search.genome import decode, random_genome
from recipe_compiler.search.run import Search
from recipe_compiler.search.space import rungs

ROOT = Path(__file__).resolve().parent.parent
SKILLS = ("math", "code", "recall", "strings")
MODELS = ("base", *SKILLS)
MERGE_RECIPE = ROOT / "recipes" / "zoo_merge.tr"
MERGE = "dense merge (task arithmetic, all fine-tunes)"
ALL_TAKES = "choose(drop, " + ", ".join(f"take({m})" for m in MODELS) + ")"
# label -> (slot op, warm starts, extra search settings). Each addition is measured on top
# of the one before; the ablations remove one part from the final configuration.
PLAIN = {}
RESCORE = {"final_limit": 150, "finalists": 8}
FLOOR = RESCORE | {"min_task_retention": "80%"}
PPL = FLOOR | {"ppl_weight": 0.5}
FINAL = PPL | {"local_search": 96}
SEARCHES = {
    "GPTailor search, plain (mean fitness)": ("?", True, PLAIN),
    "+ finalists re-scored on all validation items": ("?", True, RESCORE),
    "+ task floor 80%": ("?", True, FLOOR),
    "+ perplexity term": ("?", True, PPL),
    "+ local search (= GPTailor search)": ("?", True, FINAL),
    "GPTailor search, retention fitness": ("?", True, FINAL | {"fitness": "retention"}),
    "GPTailor search, metric prob (probability on the right choice)": (
        "?", True, FINAL | {"metric": "prob"}),
    "GPTailor search, half the local search spent on CMA-ES merge weights": (
        "?", True, FINAL | {"local_search": 48, "tune_weights": 48}),
    "GPTailor search, greedy start (greedy_start = true)": (
        "?", True, FINAL | {"greedy_start": "true"}),
    "GPTailor search, greedy start and sweep (greedy_sweep = true)": (
        "?", True, FINAL | {"greedy_start": "true", "greedy_sweep": "true"}),
    "GPTailor search, no warm starts": ("?", False, FINAL),
    "GPTailor search, no merge warm starts": ("?", True, FINAL | {"warm_merge": "false"}),
    "GPTailor search, no merges (removal + selection)": (ALL_TAKES, True, FINAL),
    "GPTailor search, removal only": ("choose(drop, take(base))", True, FINAL),
}
SEARCH = "+ local search (= GPTailor search)"  # the configuration the README reports
RANDOM = "random search (same evaluations as the search)"


@dataclass(frozen=True)
class Bench:
    """What every row shares: the zoo, the test tasks, the budget."""

    zoo: Path
    work: Path
    tasks: tuple  # test split: the skills, then text perplexity
    val_tasks: tuple  # validation split, the skills: what every choice is made on
    base_val: dict  # the dense base's validation scores
    tok: object
    remove: int
    limit: int | None  # test items per task (None: all)
    samples: int  # calibration items per skill for the pruners
    search: dict  # the search block's settings, less the seed


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path).eval(),
            AutoTokenizer.from_pretrained(path))


def test_scores(model, b: Bench) -> dict[str, float]:
    s = evaluate(model, b.tok, list(b.tasks), limit=b.limit, batch_size=64)
    out = {name: v.primary for name, v in s.items()}
    return out | {"mean": statistics.fmean(out[t] for t in SKILLS)}


def recipe_scores(text: str, where: Path, b: Bench) -> dict[str, float]:
    from recipe_compiler.compiler.check import load_and_check
    from recipe_compiler.execute.assemble import assemble
    from recipe_compiler.language.parser import parse

    recipe = parse(text, str(where / "r.tr"))
    models, diags = load_and_check(recipe, require_closed=True)
    if diags:
        raise RuntimeError(f"{where}: {diags}")
    return test_scores(assemble(recipe, models), b)


def prune_row(method: str, model_dir: Path, b: Bench) -> dict:
    """`tailorc prune MODEL --method M` calibrated on validation, scored on test."""
    from recipe_compiler.models.arch import find_architecture

    start = time.perf_counter()
    model, tok = load(model_dir)
    texts = [t for s in SKILLS for t in calibration_texts(
        b.zoo / "tasks" / "val" / f"{s}.jsonl", b.samples)]
    batch = encode(tok, texts, model.config.max_position_embeddings, "cpu")
    drops, _ = choose_drops(method, model, find_architecture(model.config.to_dict()), batch,
                            b.remove)
    seconds = time.perf_counter() - start
    recipe = drop_recipe("m", str(model_dir), model.config.num_hidden_layers, drops, [])
    return recipe_scores(format_recipe(recipe), b.work, b) | {
        "drops": sorted(drops), "seconds": round(seconds, 1)}


def build_merge(b: Bench) -> Path:
    """The dense merge, exactly as a user makes it: recipes/zoo_merge.tr, `tailorc build`."""
    recipe = b.work / "zoo_merge.tr"
    recipe.write_text(MERGE_RECIPE.read_text().replace('"../zoo/', f'"{b.zoo}/'))
    out = b.work / "merged"
    subprocess.run([sys.executable, "-m", "recipe_compiler.cli", "build", str(recipe), "-o",
                    str(out), "--force", "--device", "cpu"], check=True, capture_output=True)
    return out


def fixed_rows(b: Bench, on_row) -> dict[str, dict]:
    """The rows that do not depend on a seed: dense models, the merge, every pruner."""
    rows: dict[str, dict] = {}
    for name in MODELS:
        rows[f"dense {name}"] = test_scores(load(b.zoo / name)[0], b)
        on_row(f"dense {name}", rows[f"dense {name}"])
    merged = build_merge(b)
    rows[MERGE] = test_scores(load(merged)[0], b)
    on_row(MERGE, rows[MERGE])
    for method in METHODS:
        for name, path in (*((m, b.zoo / m) for m in MODELS), ("merge", merged)):
            key = f"{method} on {name}"
            rows[key] = prune_row(method, path, b)
            on_row(key, rows[key])
    return rows


def prepared(op: str, b: Bench, seed: int, warm: bool, tag: str, extra: dict | None = None):
    models = "\n".join(f'model {m} = "{b.zoo / m}"' for m in MODELS)
    settings = "\n".join(f"  {k} = {v}" for k, v in
                         (b.search | (extra or {}) | {"seed": seed}).items())
    if not warm:
        settings += "\n  warm_start = 0"
    text = (f"{models}\nslot 0..12 = {op}\nsearch {{\n  remove = {b.remove}\n"
            f'  tasks = "{b.zoo / "tasks" / "val"}"\n{settings}\n}}\n')
    where = b.work / f"{tag}-seed{seed}"
    where.mkdir(parents=True, exist_ok=True)
    (where / "space.tr").write_text(text)
    p = prepare(where / "space.tr", {})
    return p, make_evaluator(p), where


def finish(recipe, fitness: float, evaluations: int, seconds: float, b: Bench,
           where: Path) -> dict:
    """Test scores of the chosen recipe, and its mean and worst task (vs the dense base) on
    the whole validation split: what choices between configurations are made on."""
    from recipe_compiler.compiler.check import load_and_check
    from recipe_compiler.execute.assemble import assemble

    text = format_recipe(recipe)
    (where / "best.tr").write_text(text)
    models, _ = load_and_check(recipe, require_closed=True)
    model = assemble(recipe, models)
    scored = evaluate(model, b.tok, list(b.val_tasks), batch_size=64)
    val = {n: v.primary for n, v in scored.items()}
    return recipe_scores(text, where, b) | {
        "evaluations": evaluations, "seconds": round(seconds, 1), "val_fitness": fitness,
        "val_mean": statistics.fmean(val.values()), "val": val,
        "val_worst": min(val[t] / b.base_val[t] for t in SKILLS if b.base_val[t] > 0)}


def search_row(op: str, warm: bool, b: Bench, seed: int, tag: str, extra: dict) -> dict:
    """`tailorc evolve` in-process, step for step: warm starts, the dense references its
    objective needs, the genetic search, then the finish (finalists, local search). The
    evaluations count all of them."""
    from recipe_compiler.search.refine import finish as finish_search
    from recipe_compiler.search.session import use_references

    p, ev, where = prepared(op, b, seed, warm, tag, extra)
    start = time.perf_counter()
    seeds = warm_starts(ev, p.space) if warm else []

    def score(rs, rung):
        return [ev.scores(r, rung) for r in rs]

    s = Search(p.space, score, ev.fitness, warm=seeds)
    references = use_references(ev, p.space, score)
    pop, hof = s.run()
    best, final_scores = finish_search(s, pop, hof, score)
    return finish(decode(p.space, list(best)), ev.fitness(final_scores),
                  s.evaluations + references, time.perf_counter() - start, b, where)


def random_row(b: Bench, seed: int, budget: int) -> dict:
    """Random closed recipes from the full space, ``population`` at a time, each batch
    successively halved over the same rungs as the search, until ``budget`` evaluations;
    the best at full fidelity on validation is scored on test."""
    p, ev, where = prepared("?", b, seed, False, "random")
    rng = random.Random(seed)
    settings = p.space.settings
    n_rungs = len(rungs(settings))
    start, used, finals = time.perf_counter(), 0, []
    while used < budget:
        alive = [decode(p.space, random_genome(p.space, rng)) for _ in range(settings.population)]
        for rung in range(n_rungs):
            scored = sorted(((ev.fitness(ev.scores(r, rung)), k, r) for k, r in enumerate(alive)),
                            key=lambda t: (-t[0], t[1]))
            used += len(alive)
            if rung == n_rungs - 1:
                finals += [(f, r) for f, _, r in scored]
            alive = [r for _, _, r in scored[: max(1, math.ceil(len(scored) / settings.eta))]]
    fitness, best = max(finals, key=lambda t: t[0])
    return finish(best, fitness, used, time.perf_counter() - start, b, where)


def seed_rows(b: Bench, seed: int, on_row, only: list[str],
              reported: bool = True) -> dict[str, dict]:
    """`reported`: with `only`, run the reported configuration too (random search needs
    its evaluations; without random search, --keep-earlier can keep its earlier row)."""
    rows: dict[str, dict] = {}
    random_too = not only or any(o in RANDOM for o in only)
    for k, (label, (op, warm, extra)) in enumerate(SEARCHES.items()):
        if only and not any(o in label for o in only) and not (
                label == SEARCH and (reported or random_too)):
            continue
        rows[label] = search_row(op, warm, b, seed, f"search{k}", extra)
        on_row(f"{label} (seed {seed})", rows[label])
    if random_too:
        rows[RANDOM] = random_row(b, seed, rows[SEARCH]["evaluations"])
        on_row(f"{RANDOM} (seed {seed})", rows[RANDOM])
    return rows


def summary(runs: list[dict]) -> dict:
    """Mean and sd (0 for one run) of every number the runs share."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: (statistics.fmean(r[k] for r in runs),
                statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0) for k in keys}


EARLIER = " †"  # marks a row measured by the earlier run that --keep-earlier reused
EARLIER_NOTE = ("† measured by the earlier run whose results `--reuse` named, with the code "
                "of that time; the other rows are this run's.")


def render(runs: dict[str, list[dict]], earlier: tuple[str, ...] = ()) -> str:
    """One line per row: mean ± sd over seeds, retention and the worst task vs the base;
    rows in `earlier` are marked."""
    stats = {label: summary(r) for label, r in runs.items()}
    base = stats["dense base"]
    head = ("| model | " + " | ".join(SKILLS) + " | mean | retention vs base | worst task vs "
            "base | text ppl | evaluations | wall s | val mean | val worst vs base |\n|---|"
            + "---:|" * (len(SKILLS) + 8))
    lines = [head]
    for label, st in stats.items():
        pm = len(runs[label]) > 1

        def cell(k: str, scale: float = 100.0, fmt: str = ".1f", st=st, pm=pm) -> str:
            m, sd = st[k]
            return f"{scale * m:{fmt}}" + (f" ± {scale * sd:{fmt}}" if pm else "")

        worst = min(st[t][0] / base[t][0] for t in SKILLS if base[t][0] > 0)
        cost = (cell("evaluations", 1, ".0f") if "evaluations" in st else "—",
                cell("seconds", 1, ".0f") if "seconds" in st else "—")
        name = label + (EARLIER if label in earlier else "")
        lines.append(f"| {name} | " + " | ".join(cell(t) for t in SKILLS)
                     + f" | {cell('mean')} | {100 * st['mean'][0] / base['mean'][0]:.1f}% | "
                     f"{100 * worst:.0f}% | {cell('text', 1, '.2f')} | {cost[0]} | {cost[1]} | "
                     + (f"{cell('val_mean')} | {cell('val_worst', 100, '.0f')}% |"
                        if "val_mean" in st else "— | — |"))
    return "\n".join(lines)


def curve_points(b: Bench, ks: list[int], base_mean: float, seed: int) -> dict:
    curve: dict[str, dict[int, float]] = {"block-influence": {}, "sleb": {}, "GPTailor": {}}
    for k in ks:
        for name in curve:
            curve[name][k] = base_mean
        if k == 0:
            continue
        bk = Bench(**{**b.__dict__, "remove": k})
        for method in ("block-influence", "sleb"):
            curve[method][k] = prune_row(method, b.zoo / "base", bk)["mean"]
        op, warm, extra = SEARCHES[SEARCH]  # the reported configuration
        curve["GPTailor"][k] = search_row(op, warm, bk, seed, f"curve{k}", extra)["mean"]
        print("curve", k, {m: c[k] for m, c in curve.items()}, flush=True)
    return curve


def plot_curve(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curve.items():
        xs = sorted(points)
        ax.plot([100 * x / 12 for x in xs], [100 * points[x] for x in xs], marker="o",
                label=name)
    ax.set(xlabel="layers removed (%)", ylabel="mean test score (%)",
           title="zoo: mean score vs layers removed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(raw: dict) -> str:
    """The command line that measured `raw`, as the docs cite it."""
    flags = ""
    if raw.get("earlier"):
        only = " ".join(f'"{o}"' for o in raw.get("only", []))
        flags = f" --reuse docs/results.json --only {only} --keep-earlier" + (
            " --curve ''" if raw.get("curve_earlier") else "")
    return f"python bench/quality.py --seeds {' '.join(map(str, raw['seeds']))}{flags} " \
           "--write-docs"


def write_docs(table: str, args, has_curve: bool, raw: dict) -> None:
    from _docs import write_block

    seeds = " ".join(map(str, args.seeds))
    block = (f"Measured with `{command(raw)}` "
             f"({args.remove} of 12 layers removed; zoo base `{raw['base_sha256'][:8]}…`; "
             f"search: population {args.population}, {args.generations} generations, seeds "
             f"{seeds}; pruners calibrated on {raw['samples']} validation items per skill; "
             f"test split; the whole run took {raw['seconds']:.0f} s on one thread; raw results "
             f"in `docs/results.json`"
             + ("; the rows without a seed were measured by an earlier run of this script on "
                "the same zoo and reused with `--reuse`" if raw.get("reused") else "")
             + f").\n\n{table}\n"
             + (f"\n{EARLIER_NOTE}" + (" So is the curve." if raw.get("curve_earlier")
                                          else "") + "\n" if raw.get("earlier") else "")
             + ("\n![curve](results_curve.png)\n" if has_curve else ""))
    write_block(ROOT / "docs" / "results.md", "results", block.rstrip("\n"))


DEMO_ROWS = ("dense base", MERGE)


def demo_table(raw: dict) -> str:
    """The README's table: the dense base and merge, the best of each kind of baseline (by
    test mean, the most favourable choice for them), random search and the search."""
    stats = {label: summary(r) for label, r in raw["rows"].items()}
    base = stats["dense base"]["mean"][0]

    def best(pred) -> str:
        return max((k for k in stats if pred(k)), key=lambda k: stats[k]["mean"][0])

    rows = [*DEMO_ROWS,
            best(lambda k: any(k.startswith(m) for m in METHODS) and not k.endswith("merge")),
            best(lambda k: any(k.startswith(m) for m in METHODS) and k.endswith("merge")),
            RANDOM, SEARCH]
    lines = ["| model (12 -> 9 layers but the dense ones) | mean | retention | worst task | "
             "text ppl |", "|---|---:|---:|---:|---:|"]
    for label in rows:
        st = stats[label]
        worst = min(st[t][0] / stats["dense base"][t][0] for t in SKILLS)
        sd = f" ± {100 * st['mean'][1]:.1f}" if len(raw["rows"][label]) > 1 else ""
        name = "GPTailor search (tailorc evolve)" if label == SEARCH else label
        name += EARLIER if label in raw.get("earlier", ()) else ""
        lines.append(f"| {name} | {100 * st['mean'][0]:.1f}{sd} | "
                     f"{100 * st['mean'][0] / base:.1f}% | {100 * worst:.0f}% | "
                     f"{st['text'][0]:.2f} |")
    return "\n".join(lines)


def write_readme(raw: dict) -> None:
    from _docs import write_block

    if "<!-- demo:begin -->" not in (ROOT / "README.md").read_text():
        return
    seeds = " ".join(map(str, raw["seeds"]))
    block = (f"Written by `{command(raw)}` "
             f"(zoo v2, {raw['remove']} of 12 layers removed, test split, search seeds "
             f"{seeds}; retention is the mean over the dense base's, worst task the lowest "
             f"task score over the dense base's):\n\n{demo_table(raw)}"
             + (f"\n\n{EARLIER_NOTE}" if raw.get("earlier") else ""))
    write_block(ROOT / "README.md", "demo", block, heading=None)


def parse_args(argv: list[str] | None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, help="the zoo (default: ./zoo; --quick: a quick zoo "
                    "built in WORK/quickzoo)")
    ap.add_argument("--remove", type=int, default=3, help="layers removed of 12 (default 3)")
    ap.add_argument("--limit", type=int, default=None, help="test items per task (all)")
    ap.add_argument("--samples", type=int, default=32, help="calibration items per skill")
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--curve", default="0,1,2,3,4,5,6",
                    help="layers removed for the curve (first seed only); '' for none")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-quality"))
    ap.add_argument("--quick", action="store_true",
                    help="quick zoo, tiny budgets: every row in about a minute (smoke test)")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--only", nargs="+", default=[], metavar="TEXT",
                    help="run only the search rows whose label contains TEXT (and the "
                    "reported configuration, which random search matches)")
    ap.add_argument("--reuse", type=Path, metavar="JSON",
                    help="take the rows not run now (dense models, pruners) from an earlier "
                    "results.json")
    ap.add_argument("--keep-earlier", action="store_true",
                    help="with --reuse and --only: also keep the seeded rows not run now from "
                    "that file (marked † in the tables), e.g. to re-measure the reported "
                    "configuration alone after a change that leaves the others be; the "
                    "reported configuration then runs only if --only names it (or random "
                    "search)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="measure nothing: print (and with --write-docs, write) the table of "
                    "a results.json this script wrote")
    args = ap.parse_args(argv)
    if args.quick:
        args.population, args.generations, args.limit, args.samples = 4, 2, 10, 4
        args.curve = "0,1" if args.curve == ap.get_default("curve") else args.curve
    return args


def make_bench(args) -> Bench:
    zoo = args.zoo
    if zoo is None and args.quick:
        zoo = args.work / "quickzoo"
        if not (zoo / "zoo.json").exists():
            from recipe_compiler.zoo import build_zoo

            build_zoo(zoo, seed=0, quick=True)
    zoo = (zoo or ROOT / "zoo").resolve()
    tasks = (*(load_task(zoo / "tasks" / f"{s}.jsonl") for s in SKILLS),
             load_task(zoo / "tasks" / "text.txt"))
    val_tasks = tuple(load_task(zoo / "tasks" / "val" / f"{s}.jsonl") for s in SKILLS)
    search = ({"population": args.population, "generations": args.generations, "limit": 10,
               "min_limit": 5} if args.quick else
              {"population": args.population, "generations": args.generations, "limit": 100,
               "min_limit": 25})
    args.work.mkdir(parents=True, exist_ok=True)
    base, tok = load(zoo / "base")
    base_val = {n: v.primary for n, v in evaluate(base, tok, list(val_tasks),
                                                   batch_size=64).items()}
    return Bench(zoo, args.work.resolve(), tasks, val_tasks, base_val, tok, args.remove,
                 args.limit, args.samples, search)


def publish(raw: dict, args) -> None:
    """Print the table; with --write-docs also docs/results.{md,json} (and the curve)."""
    table = render(raw["rows"], tuple(raw.get("earlier", ())))
    print(table)
    if args.write_docs:
        (ROOT / "docs" / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
        curve = {m: {int(k): v for k, v in c.items()} for m, c in raw["curve"].items()}
        if curve:
            plot_curve(curve, ROOT / "docs" / "results_curve.png")
        for key in ("remove", "seeds"):
            setattr(args, key, raw[key])
        args.population, args.generations = (raw["search"]["population"],
                                              raw["search"]["generations"])
        write_docs(table, args, bool(curve), raw)
        write_readme(raw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        publish(json.loads(args.render.read_text()), args)
        return 0
    torch.set_num_threads(1)
    b = make_bench(args)
    started = time.perf_counter()

    def on_row(label: str, row: dict) -> None:
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        print(f"[{time.perf_counter() - started:6.0f}s] {label}: {shown}", flush=True)

    from recipe_compiler.zoo import load_manifest

    zoo_sha = next(h for n, _, _, h in load_manifest(b.zoo).models if n == "base")
    if args.reuse is not None:  # the rows that need no seed, measured before
        old_raw = json.loads(args.reuse.read_text())
        if old_raw.get("base_sha256", zoo_sha) != zoo_sha:  # another machine's zoo draw
            sys.exit(f"{args.reuse}: measured on a zoo whose base is "
                     f"{old_raw['base_sha256'][:8]}…, not {b.zoo}'s {zoo_sha[:8]}… "
                     "(docs/zoo.md: zoos differ across CPUs); run without --reuse")
        old = old_raw["rows"]
        fixed = {k: v for k, v in old.items() if "seed" not in v[0]}
        runs = dict(fixed)
    else:
        runs = {label: [row] for label, row in fixed_rows(b, on_row).items()}
    for seed in args.seeds:
        for label, row in seed_rows(b, seed, on_row, args.only,
                                    reported=not (args.reuse and args.keep_earlier)).items():
            runs.setdefault(label, []).append(row | {"seed": seed})
    earlier = []
    if args.reuse is not None and args.keep_earlier:
        earlier = [k for k in old if k not in runs]
        runs = {k: runs.get(k, old[k]) for k in old} | runs  # the earlier file's order
    raw = {"zoo": str(b.zoo), "base_sha256": zoo_sha, "remove": args.remove,
           "reused": args.reuse is not None,
           "seeds": args.seeds, "search": b.search, "limit": args.limit,
           "samples": args.samples, "seconds": round(time.perf_counter() - started, 1),
           "rows": runs, "curve": {}, "earlier": earlier, "only": args.only}
    # written before the curve too, so that an hour of rows outlives a failure there
    (b.work / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    ks = [int(k) for k in args.curve.split(",") if k.strip()]
    if ks:
        raw["curve"] = curve_points(b, ks, runs["dense base"][0]["mean"], args.seeds[0])
    elif earlier:
        raw["curve"], raw["curve_earlier"] = old_raw.get("curve", {}), True
    if ks or earlier:
        raw["seconds"] = round(time.perf_counter() - started, 1)
        (b.work / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    publish(raw, args)
    print(f"total {raw['seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
