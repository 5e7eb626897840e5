"""Measure the tiny zoo: every model x every held-out task, plus two pruned copies of the base.

Consumes a zoo directory (built here with ``recipe_compiler.zoo.build_zoo`` unless ``--zoo``
names an existing one); produces a table on stdout and, with ``--write-docs``, the measured
section of ``docs/zoo.md``. The pruned rows drop layers in memory (no recipe machinery), to
show that removing layers from the base is not free.

    .venv/bin/python bench/zoo_table.py --out /tmp/zoo            # build, then score
    .venv/bin/python bench/zoo_table.py --zoo /tmp/zoo --write-docs
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipe_compiler.evaluate import evaluate, load_task
from recipe_compiler.zoo import build_zoo, load_manifest

DOC = Path(__file__).resolve().parent.parent / "docs" / "zoo.md"
BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"


def drop_layers(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """Keep only ``keep`` decoder layers, renumbering them so KV-cache indexing stays valid."""
    inner = model.model  # type: ignore[attr-defined]
    inner.layers = torch.nn.ModuleList(inner.layers[i] for i in keep)
    for new_idx, layer in enumerate(inner.layers):
        layer.self_attn.layer_idx = new_idx
    cfg = model.config  # type: ignore[attr-defined]
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, help="score an existing zoo instead of building one")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tailor-zoo"),
                    help="where to build the zoo (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="items per task")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--write-docs", action="store_true", help=f"update the table in {DOC}")
    ap.add_argument("--json", type=Path, help="also write the scores as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    if args.zoo is None:
        shutil.rmtree(args.out, ignore_errors=True)
        t0 = time.perf_counter()
        manifest = build_zoo(args.out, seed=args.seed, quick=args.quick)
        print(f"built {args.out} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    else:
        manifest = load_manifest(args.zoo)
    tasks = [load_task(p) for p in (manifest.tasks if args.split == "test"
                                    else manifest.val_tasks)]
    base_path = manifest.model_path("base")
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    n_layers = AutoModelForCausalLM.from_pretrained(base_path).config.num_hidden_layers
    mid = n_layers // 2
    rows: list[tuple[str, Path, list[int] | None]] = [
        (name, path, None) for name, _, path, _ in manifest.models]
    rows.append((f"base -top3 (keep 0-{n_layers - 4})", base_path, list(range(n_layers - 3))))
    rows.append((f"base -mid3 (drop {mid - 1}-{mid + 1})", base_path,
                 [i for i in range(n_layers) if not mid - 1 <= i <= mid + 1]))

    results: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for label, path, keep in rows:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        if keep is not None:
            drop_layers(model, keep)
        scores = evaluate(model, tokenizer, tasks, limit=args.limit)
        results[label] = {name: s.primary for name, s in scores.items()}
        print(f"scored {label}", file=sys.stderr)
    eval_s = time.perf_counter() - t0

    table = _markdown(results, tasks)
    print(table)
    print(f"\nzoo train time {manifest.train_seconds:.0f}s; scoring {eval_s:.0f}s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write_docs:
        note = (f"Seed {manifest.seed}, {'quick' if manifest.quick else 'full'} zoo, "
                f"{args.split} split, {args.limit or 'all'} items per task; training took "
                f"{manifest.train_seconds:.0f} s on this machine.")
        body = f"{BEGIN}\n{note}\n\n{table}\n{END}"
        doc = DOC.read_text()
        DOC.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: body, doc,
                              flags=re.S))
    return 0


def _markdown(results: dict[str, dict[str, float]], tasks: list) -> str:
    names = [t.name for t in tasks]
    heads = [f"{t.name} ({'ppl' if t.kind == 'ppl' else 'acc' if t.kind == 'mc' else 'em'})"
             for t in tasks]
    best = {n: (min if t.kind == "ppl" else max)(r[n] for r in results.values())
            for n, t in zip(names, tasks)}
    lines = ["| model | " + " | ".join(heads) + " |",
             "|---|" + "---:|" * len(names)]
    for label, r in results.items():
        cells = [(f"**{r[n]:.3f}**" if r[n] == best[n] else f"{r[n]:.3f}") for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
