"""The paper's comparison, reproduced on the zoo: dense models, single-model pruning
baselines, and GPTailor's ablation, at 25% of layers removed; plus a curve over 0-50%.

    tailorc zoo zoo                      # once
    python bench/quality.py [--zoo zoo] [--write-docs]

Every method sees the same data: rankings and the search use the validation split
(zoo/tasks/val), the table is scored on the test split (zoo/tasks) — never tuned on it.
With --write-docs the tables and the curve go to docs/results.md and docs/results_curve.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from recipe_compiler.evaluate import evaluate, load_task, mean_score
from recipe_compiler.execute.assemble import assemble
from recipe_compiler.language.parser import parse
from recipe_compiler.prune import METHODS, calibration_texts, choose_drops, drop_recipe, encode
from recipe_compiler.search import make_evaluator, prepare, warm_starts
from recipe_compiler.search.genome import decode
from recipe_compiler.search.run import Search

ROOT = Path(__file__).resolve().parent.parent
SKILLS = ("math", "code", "recall", "strings")


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(path).eval(),
            AutoTokenizer.from_pretrained(path))


def test_scores(model, tok, tasks, limit) -> dict[str, float]:
    s = evaluate(model, tok, tasks, limit=limit, batch_size=64)
    return {name: v.primary for name, v in s.items()} | {"mean": mean_score(s)}


def recipe_scores(text: str, where: Path, tasks, tok, limit) -> dict[str, float]:
    from recipe_compiler.compiler.check import load_and_check

    recipe = parse(text, str(where / "r.tr"))
    models, diags = load_and_check(recipe, require_closed=True)
    assert not diags, diags
    return test_scores(assemble(recipe, models), tok, tasks, limit)


def calib_batch(zoo: Path, tok, samples: int):
    texts = []
    for skill in SKILLS:
        texts += calibration_texts(zoo / "tasks" / "val" / f"{skill}.jsonl", samples)
    return encode(tok, texts, 512, "cpu")


def baseline(method: str, model_name: str, zoo: Path, k: int, tasks, limit, samples) -> dict:
    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.models.arch import find_architecture

    model, tok = load(zoo / model_name)
    arch = find_architecture(model.config.to_dict())
    drops, _ = choose_drops(method, model, arch, calib_batch(zoo, tok, samples), k)
    recipe = drop_recipe(model_name, str(zoo / model_name), model.config.num_hidden_layers,
                         drops, [])
    scores = recipe_scores(format_recipe(recipe), zoo, tasks, tok, limit)
    return scores | {"drops": sorted(drops)}


SPACES = {
    "removal only": "choose(drop, take(base))",
    "removal + selection": "choose(drop, take(base), " + ", ".join(
        f"take({m})" for m in SKILLS) + ")",
    "removal + selection + merging": "?",
}


def search(space_op: str, zoo: Path, work: Path, remove: int, budget: dict, tasks, tok,
           limit) -> dict:
    models = "\n".join(f'model {m} = "{zoo / m}"' for m in ("base", *SKILLS))
    settings = "\n".join(f"  {k} = {v}" for k, v in budget.items())
    text = (f"{models}\nslot 0..12 = {space_op}\nsearch {{\n  remove = {remove}\n"
            f'  tasks = "{zoo / "tasks" / "val"}"\n{settings}\n}}\n')
    work.mkdir(parents=True, exist_ok=True)
    path = work / "space.tr"
    path.write_text(text)
    p = prepare(path, {})
    ev = make_evaluator(p)
    start = time.perf_counter()
    warm = list(warm_starts(ev, p.space).values())  # exactly as `tailorc evolve` seeds
    s = Search(p.space, lambda rs, rung: [ev.scores(r, rung) for r in rs], ev.fitness,
               warm=warm)
    pop, hof = s.run()
    seconds = time.perf_counter() - start
    best = max(pop, key=lambda i: i.fitness.values[0])
    from recipe_compiler.language.printer import format_recipe

    recipe_text = format_recipe(decode(p.space, list(best)))
    (work / "best.tr").write_text(recipe_text)
    scores = recipe_scores(recipe_text, work, tasks, tok, limit)
    return scores | {"evaluations": s.evaluations, "seconds": round(seconds, 1),
                     "val_fitness": best.fitness.values[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", type=Path, default=ROOT / "zoo")
    ap.add_argument("--remove", type=int, default=3, help="layers removed of 12 (default 3)")
    ap.add_argument("--limit", type=int, default=None, help="test items per task (all)")
    ap.add_argument("--samples", type=int, default=32, help="calibration items per skill")
    ap.add_argument("--population", type=int, default=24)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--curve", default="0,1,2,3,4,5,6", help="layers removed for the curve")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-quality"))
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    zoo = args.zoo
    tasks = [load_task(zoo / "tasks" / f"{s}.jsonl") for s in SKILLS]
    _, tok = load(zoo / "base")
    budget = {"population": args.population, "generations": args.generations, "seed": 0,
              "limit": 100, "min_limit": 25}
    rows: dict[str, dict] = {}
    for name in ("base", *SKILLS):
        model, _ = load(zoo / name)
        rows[f"dense {name}"] = test_scores(model, tok, tasks, args.limit)
        print(name, rows[f"dense {name}"], flush=True)
    # the best single fine-tune is chosen on validation, like everything else tuned here
    val = [load_task(zoo / "tasks" / "val" / f"{s}.jsonl") for s in SKILLS]
    best_ft = max(SKILLS, key=lambda m: test_scores(load(zoo / m)[0], tok, val, None)["mean"])
    for method in METHODS:
        for model_name in ("base", best_ft):
            key = f"{method} on {model_name}"
            rows[key] = baseline(method, model_name, zoo, args.remove, tasks, args.limit,
                                 args.samples)
            print(key, rows[key], flush=True)
    for label, op in SPACES.items():
        rows[f"GPTailor: {label}"] = search(op, zoo, args.work / label.replace(" ", "_"),
                                            args.remove, budget, tasks, tok, args.limit)
        print(label, rows[f"GPTailor: {label}"], flush=True)
    curve = {"block-influence": {}, "sleb": {}, "GPTailor": {}}
    for k in map(int, args.curve.split(",")):
        for method in ("block-influence", "sleb"):
            curve[method][k] = (rows["dense base"]["mean"] if k == 0 else
                                baseline(method, "base", zoo, k, tasks, args.limit,
                                         args.samples)["mean"])
        curve["GPTailor"][k] = (rows["dense base"]["mean"] if k == 0 else search(
            "?", zoo, args.work / f"curve{k}", k, budget, tasks, tok, args.limit)["mean"])
        print("curve", k, {m: c[k] for m, c in curve.items()}, flush=True)
    (args.work / "results.json").write_text(json.dumps({"rows": rows, "curve": curve,
                                                        "best_ft": best_ft}, indent=2))
    table = render(rows, best_ft)
    print(table)
    if args.write_docs:
        plot_curve(curve, ROOT / "docs" / "results_curve.png")
        write_docs(table, rows, best_ft, args)


def render(rows: dict[str, dict], best_ft: str) -> str:
    base_mean = rows["dense base"]["mean"]
    best_dense = {t: max(rows[f"dense {m}"][t] for m in ("base", *SKILLS)) for t in SKILLS}
    head = ("| model | " + " | ".join(SKILLS) + " | mean | retention vs base | "
            "retention vs best dense |\n|---|" + "---:|" * (len(SKILLS) + 3))
    lines = [head]
    for name, r in rows.items():
        scored = [t for t in SKILLS if best_dense[t] > 0]
        per_task = sum(r[t] / best_dense[t] for t in scored) / max(1, len(scored))
        cells = " | ".join(f"{100 * r[t]:.1f}" for t in SKILLS)
        lines.append(f"| {name} | {cells} | {100 * r['mean']:.1f} | "
                     f"{100 * r['mean'] / base_mean:.1f}% | {100 * per_task:.1f}% |")
    return "\n".join(lines)


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


def write_docs(table: str, rows: dict, best_ft: str, args) -> None:
    path = ROOT / "docs" / "results.md"
    text = path.read_text() if path.exists() else ""
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    block = (f"{begin}\nMeasured with `python bench/quality.py --write-docs` ({args.remove} of "
             f"12 layers removed; search: population {args.population}, "
             f"{args.generations} generations, seed 0; best single fine-tune: "
             f"`{best_ft}`).\n\n{table}\n\n![curve](results_curve.png)\n{end}")
    if begin in text:
        text = text.split(begin)[0] + block + text.split(end)[1]
    else:
        text = text + "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
