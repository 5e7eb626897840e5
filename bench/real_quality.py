"""The search against the simpler ways to a smaller model, on the real SmolLM2 family.

    tailorc zoo --real family             # once (SmolLM2-135M-Instruct + 3 fine-tunes)
    python bench/real_quality.py --family family [--seeds 0 1 2] [--write-docs]

Everything goes through `tailorc` as a user would run it. At 25% of the 30 layers removed:
the dense models; a task-arithmetic merge of the three fine-tunes (weight 0.5 each) built
with `tailorc build`; block influence (ShortGPT) on each model and on that merge,
calibrated on the validation text; and `tailorc evolve` with the configuration
`recipes/base.tr` uses on the zoo (floor, perplexity term, local search), at a budget of
about 150 evaluations per seed. Search and calibration see the validation split only; the
table is `tailorc eval` on the test split. With --write-docs the table goes to
docs/results.md (between the real-results markers) and the raw numbers to
docs/results_real.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKILLS = ("facts", "lexicon", "arith")
MODELS = ("base", *SKILLS)
TAILORC = str(Path(sys.executable).parent / "tailorc")


def run(*args: str) -> str:
    done = subprocess.run([TAILORC, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"tailorc {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def models_block(family: Path) -> str:
    return "\n".join(f'model {m} = "{family / m}"' for m in MODELS)


def search_recipe(family: Path, seed: int, a: argparse.Namespace) -> str:
    return f"""{models_block(family)}
slot 0..30 = ?
search {{
  remove = 25%
  tasks = "{family / 'tasks' / 'val'}"
  population = {a.population}
  generations = {a.generations}
  limit = 20
  seed = {seed}
  min_task_retention = 80%
  ppl_weight = 0.5
  local_search = {a.local_search}
  max_memory = "1GB"
}}
"""


def scores(paths: dict[str, Path], family: Path, threads: int) -> dict[str, dict]:
    out = json.loads(run("eval", *map(str, paths.values()), "--tasks",
                         str(family / "tasks"), "--json", "--threads", str(threads)))
    rows = {}
    for label, doc in zip(paths, out["models"].values()):
        r = {t: v["primary"] for t, v in doc["tasks"].items()}
        r["mean"] = statistics.fmean(r[t] for t in SKILLS)
        rows[label] = r
    return rows


def baselines(family: Path, work: Path, threads: int) -> dict[str, Path]:
    paths = {f"dense {m}": family / m for m in MODELS}
    merge = work / "merge.tr"
    merge.write_text(f"{models_block(family)}\nslot 0..30 = merge(facts, lexicon, arith, "
                     "weights=[0.5, 0.5, 0.5], method=task_arithmetic)\n")
    run("build", str(merge), "-o", str(work / "merged"), "--force")
    paths["dense merge (task arithmetic, 0.5 each)"] = work / "merged"
    calib = str(family / "tasks" / "val" / "text.txt")
    for name, path in (*((m, family / m) for m in MODELS), ("merge", work / "merged")):
        out = work / f"bi-{name}.tr"
        run("prune", str(path), "--method", "block-influence", "--calib", calib, "-o",
            str(out), "--force")
        paths[f"block-influence on {name}"] = out
    return paths


def search(family: Path, work: Path, seed: int, a: argparse.Namespace) -> tuple[Path, dict]:
    recipe = work / f"search-{seed}.tr"
    recipe.write_text(search_recipe(family, seed, a))
    start = time.perf_counter()
    out = run("evolve", str(recipe), "-o", str(work / f"run-{seed}"), "--force",
              "--threads", str(a.threads))
    seconds = time.perf_counter() - start
    evaluations = int(out.split(" evaluations in ")[0].rsplit(" ", 1)[1])
    return work / f"run-{seed}" / "best.tr", {"seconds": round(seconds), "evaluations":
                                               evaluations}


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
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--local-search", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    family, work = a.family.resolve(), a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    paths = baselines(family, work, a.threads)
    rows = {k: [v] for k, v in scores(paths, family, a.threads).items()}
    label = "GPTailor search (tailorc evolve)"
    for seed in a.seeds:
        best, cost = search(family, work, seed, a)
        row = scores({label: best}, family, a.threads)[label] | cost | {"seed": seed}
        rows.setdefault(label, []).append(row)
        print(f"seed {seed}: {row}", flush=True)
    text = table(rows)
    print(text)
    total = round(time.perf_counter() - started)
    print(f"total {total} s")
    if a.write_docs:
        raw = {"family": str(family), "seeds": a.seeds, "population": a.population,
               "generations": a.generations, "local_search": a.local_search,
               "seconds": total, "rows": rows}
        (ROOT / "docs" / "results_real.json").write_text(json.dumps(raw, indent=2) + "\n")
        doc = ROOT / "docs" / "results.md"
        begin, end = "<!-- real-results:begin -->", "<!-- real-results:end -->"
        seeds = " ".join(map(str, a.seeds))
        block = (f"{begin}\nWritten by `python bench/real_quality.py --seeds {seeds} "
                 f"--write-docs` (SmolLM2-135M-Instruct family, 30 -> 23 layers, test split; "
                 f"search: population {a.population}, {a.generations} generations, local "
                 f"search {a.local_search}; the whole run took {total} s on 2 cores; raw "
                 f"numbers in `docs/results_real.json`).\n\n{text}\n{end}")
        current = doc.read_text()
        if begin in current:
            current = current.split(begin)[0] + block + current.split(end)[1]
        else:
            current += "\n## The real family\n\n" + block + "\n"
        doc.write_text(current)


if __name__ == "__main__":
    main()
