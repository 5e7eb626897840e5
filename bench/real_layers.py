"""Where each skill lives in the real SmolLM2 family, and what stitching can trade.

    python bench/real_layers.py --family FAMILY [--write-docs]

Starts from the strongest single-model pruner on the real family: the one-shot perplexity
pruner on the `lexicon` fine-tune (`tailorc prune FAMILY/lexicon --method ppl --calib
val/text.txt --samples 10`, its drops taken as that command writes them). Then, one
variant per row, a block of its kept slots is taken from another fine-tune, or merged
with it (task arithmetic against the base, the other fine-tune at a lower weight), and
every variant is scored with `tailorc eval` on the validation split (the split the search
sees). The rows show which layers carry which skill, and whether any stitch keeps two
skills at once: if a skill can only be gained where another is lost, no search over
takes and merges can keep both. With --write-docs the table goes to docs/results.md
between the real-layers markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_block  # noqa: E402  (bench/_docs.py)
from real_quality import models_block  # noqa: E402  (bench/real_quality.py)
from real_quality import run as tailorc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# label -> (first slot, last slot + 1, operation on those slots)
VARIANTS = {
    "ppl on lexicon (every kept slot from lexicon)": (0, 0, ""),
    "slots 0-5 from facts": (0, 6, "take(facts)"),
    "slots 0-11 from facts": (0, 12, "take(facts)"),
    "slots 26-29 from facts": (26, 30, "take(facts)"),
    "slots 0-11 merged with facts at 0.15": (0, 12, "merge(facts, lexicon, weights=[0.15, 1.0], "
                                             "method=task_arithmetic)"),
    "slots 0-11 merged with facts at 0.3": (0, 12, "merge(facts, lexicon, weights=[0.3, 1.0], "
                                            "method=task_arithmetic)"),
    "slots 0-11 merged with facts at 0.7": (0, 12, "merge(facts, lexicon, weights=[0.7, 1.0], "
                                            "method=task_arithmetic)"),
    "slots 0-5 from arith": (0, 6, "take(arith)"),
    "slots 6-11 from arith": (6, 12, "take(arith)"),
    "slots 20-29 from arith": (20, 30, "take(arith)"),
}


def ppl_drops(family: Path, work: Path) -> list[int]:
    out = work / "ppl-lexicon.tr"
    tailorc("prune", str(family / "lexicon"), "--method", "ppl", "--remove", "25%", "--calib",
            str(family / "tasks" / "val" / "text.txt"), "--samples", "10", "-o", str(out),
            "--force")
    found = re.search(r"drops \[([0-9, ]+)\]", out.read_text())
    assert found, "tailorc prune names its drops in the recipe's comments"
    return [int(x) for x in found.group(1).split(",")]


def variant(family: Path, drops: list[int], first: int, stop: int, op: str) -> str:
    lines = [models_block(family), "base_model = lexicon"]
    for i in range(30):
        slot = "drop" if i in drops else op if first <= i < stop else "take(lexicon)"
        lines.append(f"slot {i} = {slot}")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    family = args.family.expanduser().resolve()
    val = family / "tasks" / "val"
    rows = []
    with tempfile.TemporaryDirectory(prefix="real-layers-") as tmp:
        work = Path(tmp)
        drops = ppl_drops(family, work)
        for k, (label, (first, stop, op)) in enumerate(VARIANTS.items()):
            path = work / f"v{k}.tr"
            path.write_text(variant(family, drops, first, stop, op))
            tasks = [str(val / f"{t}.jsonl") for t in ("facts", "lexicon", "arith")]
            got = json.loads(tailorc("eval", str(path), "--tasks", *tasks, "--threads",
                                     str(args.threads), "--json"))
            (scores,) = got["models"].values()
            row = {t: 100 * scores["tasks"][t]["primary"] for t in ("facts", "lexicon", "arith")}
            rows.append((label, row))
            print(label, {t: round(v, 1) for t, v in row.items()}, flush=True)
    table = [f"Written by `python bench/real_layers.py --family FAMILY --write-docs` "
             f"(validation split, 100 items per skill; the perplexity pruner's drops on "
             f"`lexicon`: {drops}):", "",
             "| variant of ppl on lexicon | facts | lexicon | arith | facts + lexicon | mean |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r in rows:
        mean = (r["facts"] + r["lexicon"] + r["arith"]) / 3
        table.append(f"| {label} | {r['facts']:.1f} | {r['lexicon']:.1f} | {r['arith']:.1f} | "
                     f"{r['facts'] + r['lexicon']:.1f} | {mean:.1f} |")
    text = "\n".join(table)
    print("\n" + text)
    if args.write_docs:
        write_block(ROOT / "docs" / "results.md", "real-layers", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
