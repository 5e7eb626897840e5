"""Measure the tiny zoo: every model x every held-out task, the dense task-arithmetic merge of
all fine-tunes (``recipes/zoo_merge.tr``, built with ``tailorc build``), and two pruned copies
of the base.

Consumes a zoo directory (built here with ``recipe_compiler.zoo.build_zoo`` unless ``--zoo``
names an existing one), or with ``--seeds`` one full zoo per seed under ``--zoo-root``;
produces a table on stdout and, with ``--write-docs``, the measured section of ``docs/zoo.md``.
The pruned rows drop layers in memory (no recipe machinery), to show that removing layers from
the base is not free.

Training is bit-identical for a seed on one machine, not across CPUs (the vectorised kernels'
float summation order depends on the instruction set), so the documented table is the
``--seeds`` one: mean and min-max per cell over several seeds, not one run's numbers.

    .venv/bin/python bench/zoo_table.py --out /tmp/zoo            # build, then score
    .venv/bin/python bench/zoo_table.py --zoo /tmp/zoo --write-docs
    .venv/bin/python bench/zoo_table.py --seeds 0 1 2 --zoo-root /tmp/zoo_seeds --write-docs

With ``--seeds``, ``ZOO_ROOT/seedN`` is reused when it holds a finished zoo (``zoo.json``) of
that seed, and otherwise (re)built there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipe_compiler.evaluate import evaluate, load_task
from recipe_compiler.zoo import MANIFEST, ZooManifest, build_zoo, load_manifest

DOC = Path(__file__).resolve().parent.parent / "docs" / "zoo.md"
MERGE_RECIPE = DOC.parent.parent / "recipes" / "zoo_merge.tr"
MERGE_LABEL = "merge: task arithmetic of all fine-tunes"


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


def machine() -> str:
    """The CPU (``/proc/cpuinfo`` model name), its kernel level as torch sees it, and torch."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    try:
        cap = torch.backends.cpu.get_cpu_capability()
        name += f" ({platform.machine()}, torch kernels: {cap})"
    except AttributeError:
        name += f" ({platform.machine()})"
    return f"{name}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def score_zoo(manifest: ZooManifest, split: str, limit: int | None
              ) -> tuple[dict[str, dict[str, float]], list, float]:
    """Score every model and the two pruned bases; return (label -> task -> score, tasks, s)."""
    tasks = [load_task(p) for p in (manifest.tasks if split == "test"
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
    scratch = tempfile.TemporaryDirectory(prefix="tailor-zoo-merge-")
    rows.insert(len(manifest.models), (MERGE_LABEL, build_merge(manifest, Path(scratch.name)),
                                       None))
    for label, path, keep in rows:
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        if keep is not None:
            drop_layers(model, keep)
        scores = evaluate(model, tokenizer, tasks, limit=limit)
        results[label] = {name: s.primary for name, s in scores.items()}
        print(f"scored seed {manifest.seed}: {label}", file=sys.stderr)
    scratch.cleanup()
    return results, tasks, time.perf_counter() - t0


def build_merge(manifest: ZooManifest, where: Path) -> Path:
    """``recipes/zoo_merge.tr`` pointed at this zoo, built with ``tailorc build``."""
    recipe = where / "zoo_merge.tr"
    recipe.write_text(MERGE_RECIPE.read_text().replace('"../zoo/', f'"{manifest.root}/'))
    out = where / "merged"
    subprocess.run([sys.executable, "-m", "recipe_compiler.cli", "build", str(recipe), "-o",
                    str(out), "--device", "cpu"], check=True, capture_output=True)
    return out


def base_sha(manifest: ZooManifest) -> str:
    return next(sha for name, _, _, sha in manifest.models if name == "base")


def seed_zoo(root: Path, seed: int, quick: bool) -> ZooManifest:
    """``root/seedN``: reuse a finished zoo of that seed and size, else build it there."""
    out = root / f"seed{seed}"
    if (out / MANIFEST).exists():
        manifest = load_manifest(out)
        if manifest.seed != seed or manifest.quick != quick:
            raise SystemExit(f"{out} holds a {'quick' if manifest.quick else 'full'} zoo of "
                             f"seed {manifest.seed}, not the one asked for; remove it")
        print(f"reusing {out} (trained in {manifest.train_seconds:.0f}s)", file=sys.stderr)
        return manifest
    shutil.rmtree(out, ignore_errors=True)  # an unfinished build of this seed
    t0 = time.perf_counter()
    manifest = build_zoo(out, seed=seed, quick=quick)
    print(f"built {out} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", type=Path, help="score an existing zoo instead of building one")
    ap.add_argument("--out", type=Path, default=Path("/tmp/tailor-zoo"),
                    help="where to build the zoo (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, nargs="+", metavar="N",
                    help="one zoo per seed; report mean (min-max) per cell over the seeds")
    ap.add_argument("--zoo-root", type=Path, default=Path("/tmp/tailor-zoo-seeds"),
                    help="with --seeds: zoos live in ZOO_ROOT/seedN (reused when finished)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--limit", type=int, default=None, help="items per task")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--write-docs", action="store_true", help=f"update the table in {DOC}")
    ap.add_argument("--json", type=Path, help="also write the scores as JSON here")
    args = ap.parse_args(argv)
    if args.seeds is not None and args.zoo is not None:
        ap.error("--seeds and --zoo are exclusive (use --zoo-root with --seeds)")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        ap.error("--seeds has a repeated seed")
    torch.set_num_threads(1)
    if args.seeds is not None:
        return _multi_seed(args)

    if args.zoo is None:
        shutil.rmtree(args.out, ignore_errors=True)
        t0 = time.perf_counter()
        manifest = build_zoo(args.out, seed=args.seed, quick=args.quick)
        print(f"built {args.out} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    else:
        manifest = load_manifest(args.zoo)
    results, tasks, eval_s = score_zoo(manifest, args.split, args.limit)

    table = _markdown(results, tasks) + "\n\n" + _merge_summary([results], tasks)
    print(table)
    print(f"\nzoo train time {manifest.train_seconds:.0f}s; scoring {eval_s:.0f}s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write_docs:
        note = (f"Seed {manifest.seed} only, {'quick' if manifest.quick else 'full'} zoo, "
                f"{args.split} split, {args.limit or 'all'} items per task; base sha256 "
                f"`{base_sha(manifest)[:8]}…`; measured on {machine()}; training took "
                f"{manifest.train_seconds:.0f} s. One run's numbers: another CPU trains "
                f"different weights from the same seed.")
        _write_doc(f"{note}\n\n{table}")
    return 0


def _multi_seed(args: argparse.Namespace) -> int:
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    manifests: dict[int, ZooManifest] = {}
    tasks: list = []
    eval_s = 0.0
    for seed in args.seeds:
        manifests[seed] = seed_zoo(args.zoo_root, seed, args.quick)
        per_seed[seed], tasks, s = score_zoo(manifests[seed], args.split, args.limit)
        eval_s += s
        print(f"\nseed {seed} (base sha256 {base_sha(manifests[seed])[:8]}):\n"
              + _markdown(per_seed[seed], tasks) + "\n", file=sys.stderr)
    labels = list(per_seed[args.seeds[0]])
    if any(list(r) != labels for r in per_seed.values()):
        raise SystemExit("the zoos disagree on their models; are they all the same size?")

    table = (_markdown_spread(per_seed, tasks) + "\n\n"
             + _merge_summary(list(per_seed.values()), tasks))
    train = [manifests[s].train_seconds for s in args.seeds]
    shas = ", ".join(f"seed {s} `{base_sha(manifests[s])[:8]}…`" for s in args.seeds)
    print(table)
    print(f"\nbase sha256: {shas}", file=sys.stderr)
    print(f"zoo train time {min(train):.0f}-{max(train):.0f}s per zoo; scoring {eval_s:.0f}s "
          f"in all", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "split": args.split, "limit": args.limit,
            "seeds": {str(s): {"base_sha256": base_sha(manifests[s]),
                               "train_seconds": manifests[s].train_seconds,
                               "scores": per_seed[s]} for s in args.seeds},
        }, indent=2) + "\n")
    if args.write_docs:
        seeds = ", ".join(map(str, args.seeds))
        note = (f"Seeds {seeds}, one {'quick' if args.quick else 'full'} zoo each, "
                f"{args.split} split, {args.limit or 'all'} items per task. Each cell is the "
                f"mean over the {len(args.seeds)} seeds (geometric for perplexity) and, in "
                f"brackets, the lowest and highest seed; bold is the best mean per column. "
                f"Measured on {machine()}; "
                f"training took {min(train):.0f}-{max(train):.0f} s per zoo. "
                f"Base sha256 per seed: {shas}.")
        _write_doc(f"{note}\n\n{table}")
    return 0


def _write_doc(body: str) -> None:
    from _docs import write_block

    write_block(DOC, "zoo-table", body, heading=None)


def _merge_summary(per_seed: list[dict[str, dict[str, float]]], tasks: list) -> str:
    """How the family sits around its base, in numbers: each fine-tune's gain on its skill,
    its change on its worst other skill, and the share of each gain the merge keeps.
    """
    mean = {lab: {t.name: statistics.fmean(r[lab][t.name] for r in per_seed) for t in tasks}
            for lab in per_seed[0]}
    base, merge = mean["base"], mean[MERGE_LABEL]
    skills = [t.name for t in tasks if t.kind != "ppl" and t.name in mean]
    parts = []
    for s in skills:
        gain = mean[s][s] - base[s]
        worst = min(mean[s][o] - base[o] for o in skills if o != s)
        kept = f"{100 * (merge[s] - base[s]) / gain:.0f}%" if gain > 0 else "n/a"
        parts.append(f"`{s}` {100 * gain:+.0f} on its skill and {100 * worst:+.0f} on its "
                     f"worst other skill; the merge keeps {kept} of its gain")
    ppl = [t.name for t in tasks if t.kind == "ppl"]
    text = "; ".join(parts) + "."
    if ppl:
        worst = max(mean[s][ppl[0]] for s in skills)
        text += (f" Text perplexity: base {base[ppl[0]]:.2f}, fine-tunes up to {worst:.2f}, "
                 f"merge {merge[ppl[0]]:.2f}.")
    return ("Each fine-tune against the base, in points of score (means over the seeds), and "
            "the share of its gain the merge keeps: " + text)


def _heads(tasks: list) -> list[str]:
    return [f"{t.name} ({'ppl' if t.kind == 'ppl' else 'acc' if t.kind == 'mc' else 'em'})"
            for t in tasks]


def _markdown(results: dict[str, dict[str, float]], tasks: list) -> str:
    names = [t.name for t in tasks]
    best = {n: (min if t.kind == "ppl" else max)(r[n] for r in results.values())
            for n, t in zip(names, tasks)}
    lines = ["| model | " + " | ".join(_heads(tasks)) + " |",
             "|---|" + "---:|" * len(names)]
    for label, r in results.items():
        cells = [(f"**{r[n]:.3f}**" if r[n] == best[n] else f"{r[n]:.3f}") for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float, ppl: bool) -> str:
    """Scores in [0, 1] to two places; perplexities to three significant-ish digits."""
    if not ppl:
        return f"{x:.2f}"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _markdown_spread(per_seed: dict[int, dict[str, dict[str, float]]], tasks: list) -> str:
    """Mean (min-max) over the seeds per cell; bold marks the best mean in each column.

    Scores are averaged arithmetically; perplexities geometrically (the exp of the mean
    log-perplexity), since a fine-tune's perplexity can range over orders of magnitude
    between seeds and an arithmetic mean would be one seed's outlier.
    """
    names = [t.name for t in tasks]
    kinds = {t.name: t.kind for t in tasks}
    labels = list(next(iter(per_seed.values())))
    vals = {(lab, n): [r[lab][n] for r in per_seed.values()] for lab in labels for n in names}
    mean = {(lab, n): (statistics.geometric_mean(v) if kinds[n] == "ppl"
                       else statistics.fmean(v)) for (lab, n), v in vals.items()}
    best = {n: (min if t.kind == "ppl" else max)(mean[lab, n] for lab in labels)
            for n, t in zip(names, tasks)}
    lines = ["| model | " + " | ".join(_heads(tasks)) + " |",
             "|---|" + "---:|" * len(names)]
    for lab in labels:
        cells = []
        for n, t in zip(names, tasks):
            ppl = t.kind == "ppl"
            m = _fmt(mean[lab, n], ppl)
            cell = f"**{m}**" if m == _fmt(best[n], ppl) else m  # ties as printed
            cells.append(f"{cell} ({_fmt(min(vals[lab, n]), ppl)}–{_fmt(max(vals[lab, n]), ppl)})")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
