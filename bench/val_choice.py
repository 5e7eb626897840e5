"""A setting chosen on validation: each variant's winner as its search judged it, beside test.

    python bench/val_choice.py "ppl_weight 0.5=/tmp/rq4:0,1" "ppl_weight 0.2=/tmp/rq5:0" \
        --reference 74.6 [--write-docs]

Each argument is LABEL=WORK:SEEDS, WORK a `bench/real_quality.py --work` directory whose
run-SEED/best.tr and rows/search-SEED.json that bench wrote. Validation is the winner's
`best.tr` header: its scores on the validation items the finalists were judged on (with
`holdout = true`, items the search never selected on) and its validation-text perplexity.
The choice rule, fixed before the runs: on the seeds every variant ran, the highest
validation mean among the variants whose validation perplexity is at most `--reference`
(the best single-model pruner's on the validation text); test is printed for the record,
not used. With --write-docs the table goes to docs/results.md between the real-choice
markers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from real_quality import ROOT, SKILLS

HEADER = re.compile(r"^# fitness \S+ on the search's tasks \((.*)\)$", re.M)


def validation(best: Path) -> dict[str, float]:
    found = HEADER.search(best.read_text())
    if not found:
        raise SystemExit(f"{best}: no fitness header (not a tailorc evolve best.tr)")
    return {k: float(v) for k, v in (kv.split(" ") for kv in found.group(1).split(", "))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="LABEL=WORK:SEEDS")
    ap.add_argument("--reference", type=float, required=True, metavar="PPL",
                    help="the validation perplexity a choice may not exceed")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    lines = ["| variant | seed | validation mean | validation ppl | test mean | test ppl |",
             "|---|---:|---:|---:|---:|---:|"]
    per_seed: dict[str, dict[int, tuple[float, float]]] = {}
    for variant in a.variants:
        label, rest = variant.split("=", 1)
        work, seeds = rest.rsplit(":", 1)
        per_seed[label] = {}
        for seed in map(int, seeds.split(",")):
            val = validation(Path(work) / f"run-{seed}" / "best.tr")
            test = json.loads((Path(work) / "rows" / f"search-{seed}.json").read_text())["row"]
            mean = statistics.fmean(val[t] for t in SKILLS)
            per_seed[label][seed] = (mean, val["text"])
            lines.append(f"| {label} | {seed} | {100 * mean:.1f} | {val['text']:.1f} | "
                         f"{100 * test['mean']:.1f} | {test['text']:.1f} |")
    common = sorted(set.intersection(*(set(v) for v in per_seed.values())))
    if not common:
        raise SystemExit("the variants share no seed to be compared on")
    means = {label: (statistics.fmean(v[s][0] for s in common),
                     statistics.fmean(v[s][1] for s in common))
             for label, v in per_seed.items()}
    allowed = {k: v for k, v in means.items() if v[1] <= a.reference}
    if allowed:  # the best mean within the reference perplexity
        chosen = max(allowed, key=lambda k: allowed[k][0])
    else:  # else the lowest perplexity
        chosen = min(means, key=lambda k: means[k][1])
    text = "\n".join(lines) + (
        f"\n\nChosen on validation, seed{'s' if len(common) > 1 else ''} "
        f"{', '.join(map(str, common))} (those every variant ran): **{chosen}** (the "
        f"highest validation mean among the variants at or below the reference perplexity "
        f"{a.reference:g}"
        + ("" if allowed else "; none was, so the lowest perplexity") + ").")
    print(text)
    if a.write_docs:
        from _docs import write_block

        args = " ".join(f'"{v}"' for v in a.variants)
        write_block(ROOT / "docs" / "results.md", "real-choice",
                    f"Written by `python bench/val_choice.py {args} --reference "
                    f"{a.reference:g} --write-docs`.\n\n{text}", heading=None)


if __name__ == "__main__":
    main()
