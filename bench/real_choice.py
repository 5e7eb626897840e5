"""The search's metric and perplexity bound chosen on validation, by a rule fixed before.

    python bench/real_choice.py --family FAMILY --pruners WORK \\
        "LABEL=SOURCE[;SOURCE...]" [...] [--pruners-val JSON] [--write-docs]

Each variant's winners, one per seed, are judged as the finish judges them: accuracy on
the validation items the search never selected on (items 50-99 a task, `holdout = true`)
and the validation text's perplexity. A SOURCE is

- `WORK:SEEDS`: a `bench/real_quality.py --work` directory's run-SEED/best.tr for each of
  the comma-separated SEEDS, scored now as `bench/real_reach.py` scores a winner (accuracy,
  whatever the search's metric);
- `JSON#LABEL:SEED`: the winner's row in a raw file `bench/real_reach.py` wrote (LABEL its
  variant, SEED the seed that run used), e.g. `docs/results_real_reach.json#metric prob:0`;
- `choice#LABEL:SEED`: a row of docs/results.md's real-choice table (`bench/val_choice.py`,
  a winner's best.tr header; the same measure for a search with `metric = acc`).

The reference R is the lowest validation-text perplexity of any single-model pruner (every
`METHOD-MODEL-SHA.tr` in `--pruners WORK` but the merge's), scored by `tailorc eval` on
FAMILY/tasks/val, or read from that command's saved `--json` output (`--pruners-val`;
docs/results_real_pruners_val.json is `tailorc eval METHOD-MODEL-SHA.tr ... --tasks
FAMILY/tasks/val --json --threads 1` run in a --baselines-only work directory).
The rule: among the variants whose mean validation perplexity is at most R, the highest
mean held-out validation accuracy; if none is, the lowest mean validation perplexity. Test
is printed for the record, never used. --write-docs writes docs/results.md's
real-choice-metric block.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

from real_quality import ROOT, SKILLS, run
from real_reach import PRUNED, WINNER, _mean, measure

CHOICE_ROW = re.compile(r"^\| (.+?) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                        re.M)


def winner_rows(source: str, family: Path) -> list[dict]:
    """[{seed, holdout, val_ppl, test, test_ppl}] for one SOURCE (points, perplexities)."""
    if source.startswith("choice#"):
        label, seed = source[len("choice#"):].rsplit(":", 1)
        doc = (ROOT / "docs" / "results.md").read_text()
        block = doc.split("<!-- real-choice:begin -->")[1].split("<!-- real-choice:end -->")[0]
        for m in CHOICE_ROW.finditer(block):
            if m.group(1) == label and m.group(2) == seed:
                v, vp, t, tp = map(float, m.groups()[2:])
                return [{"seed": int(seed), "holdout": v, "val_ppl": vp, "test": t,
                         "test_ppl": tp, "source": source}]
        raise SystemExit(f"{source}: no such row in docs/results.md's real-choice table")
    if "#" in source:
        path, rest = source.split("#", 1)
        label, seed = rest.rsplit(":", 1)
        raw = json.loads(Path(path).read_text())
        if label not in raw:
            raise SystemExit(f"{path}: no variant {label!r} (has: {', '.join(raw)})")
        row = next(r for r in raw[label] if r["what"] == WINNER)
        return [_row(row, int(seed), source)]
    work, seeds = source.rsplit(":", 1)
    return [_row(measure(family, Path(work), int(s), None, 0, ())[0], int(s),
                 f"{work}:{s}") for s in seeds.split(",")]


def _row(r: dict, seed: int, source: str) -> dict:
    return {"seed": seed, "holdout": _mean(r["holdout"]), "val_ppl": r["val_text"],
            "test": _mean(r["test"]), "test_ppl": r["test_text"], "source": source}


def choose(means: dict[str, dict[str, float]], reference: float) -> tuple[str, str]:
    """The rule: among the variants whose mean validation perplexity is at most
    `reference`, the highest mean held-out validation accuracy; if none is, the lowest mean
    validation perplexity. Returns (label, why)."""
    within = [label for label, m in means.items() if m["val_ppl"] <= reference]
    if within:
        return (max(within, key=lambda label: means[label]["holdout"]),
                "the highest held-out validation mean among those within R")
    return (min(means, key=lambda label: means[label]["val_ppl"]),
            "no variant is within R: the lowest mean validation perplexity")


def pruners_val(family: Path, pruners: Path, saved: Path | None) -> dict[str, float]:
    """Validation-text perplexity of every single-model pruner's recipe."""
    labels = {p.stem: f"{m.group(1)} on {m.group(2)}" for p in sorted(pruners.glob("*.tr"))
              if (m := PRUNED.match(p.name)) and m.group(2) != "merge"}
    if saved is not None:
        out = json.loads(saved.read_text())
    else:
        out = json.loads(run("eval", *(str(pruners / f"{stem}.tr") for stem in labels),
                             "--tasks", str(family / "tasks" / "val"), "--json",
                             "--threads", "1"))
    ppl = {}
    for name, doc in out["models"].items():  # eval names a recipe by its file's stem
        label = labels.get(Path(name).name.removesuffix(".tr"))
        if label is not None:
            ppl[label] = next(v["primary"] for t, v in doc["tasks"].items() if t not in SKILLS)
    if len(ppl) != len(labels):
        raise SystemExit(f"perplexities for {len(ppl)} of {len(labels)} pruners' recipes")
    return ppl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="LABEL=SOURCE[;SOURCE...]")
    ap.add_argument("--family", type=Path, required=True)
    ap.add_argument("--pruners", type=Path, required=True, metavar="WORK",
                    help="a real_quality.py --work directory with the pruners' recipes")
    ap.add_argument("--pruners-val", type=Path, default=None, metavar="JSON",
                    help="`tailorc eval PRUNERS --tasks FAMILY/tasks/val --json` saved")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    family = a.family.expanduser()
    ppl = pruners_val(family, a.pruners, a.pruners_val)
    lowest = min(ppl, key=ppl.get)
    reference = ppl[lowest]
    variants: dict[str, list[dict]] = {}
    for variant in a.variants:
        label, sources = variant.split("=", 1)
        variants[label] = [r for s in sources.split(";") for r in winner_rows(s, family)]
    lines = ["| variant | seed | held-out validation mean | validation ppl | test mean | "
             "test ppl |", "|---|---:|---:|---:|---:|---:|"]
    means = {}
    for label, rows in variants.items():
        for r in sorted(rows, key=lambda r: r["seed"]):
            lines.append(f"| {label} | {r['seed']} | {r['holdout']:.1f} | {r['val_ppl']:.1f} "
                         f"| {r['test']:.1f} | {r['test_ppl']:.1f} |")
        means[label] = {k: statistics.fmean(r[k] for r in rows)
                        for k in ("holdout", "val_ppl", "test", "test_ppl")}
    lines += ["", "| variant | seeds | held-out validation mean | validation ppl | within R | "
              "test mean (record) | test ppl (record) |", "|---|---:|---:|---:|---|---:|---:|"]
    for label, m in means.items():
        within = "yes" if m["val_ppl"] <= reference else "no"
        lines.append(f"| {label} | {len(variants[label])} | {m['holdout']:.1f} | "
                     f"{m['val_ppl']:.1f} | {within} | {m['test']:.1f} | {m['test_ppl']:.1f} |")
    chosen, why = choose(means, reference)
    lines += ["", f"R = {reference:.1f}, the lowest validation-text perplexity of the "
              f"{len(ppl)} single-model pruners ({lowest}; the others under 1000: "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ppl.items(), key=lambda kv: kv[1])
                          if k != lowest and v < 1000) + ").", "",
              f"Chosen: **{chosen}** ({why})."]
    body = "\n".join(lines)
    print(body)
    if a.write_docs:
        sys.path.insert(0, str(Path(__file__).parent))
        from _docs import write_block

        args = " ".join(shlex.quote(x) for x in sys.argv[1:]).replace(str(a.family),
                                                                       "FAMILY")
        write_block(ROOT / "docs" / "results.md", "real-choice-metric",
                    f"Written by `python bench/real_choice.py {args}`.\n\n{body}",
                    heading=None)


if __name__ == "__main__":
    main()
