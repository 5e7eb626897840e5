"""Benchmark `tailorc build` against `cp` of the same input files.

Makes two random Llama-architecture families (bf16; base + one fine-tune): one of a few
hundred MB per model and one three times larger. For each, builds a take/drop recipe (25% of
layers removed: every tensor is a byte copy) and a recipe that merges half of the slots, and
times `cp` of the input shards as the disk's limit. Runs alternate; the table shows medians.
Peak RSS is each process's own maximum resident set (from wait4).

    python bench/build.py [--runs 3] [--work /tmp/tailor-bench] [--scale 1]

Page cache is warm after the first run (every tool sees the same warm cache). tailorc
fsyncs its output before renaming it into place, so `cp + sync` is the fair disk limit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _runs import alternate  # bench/_runs.py
from checkpoints import make_in_child  # bench/checkpoints.py


def recipes(root: Path, layers: int) -> dict[str, Path]:
    keep = layers - layers // 4
    head = 'model base = "base"\nmodel ft = "ft"\n'
    prune = head + f"slot 0..{keep - 1} = take(base)\nslot {keep - 1}..{layers - 1} = drop\n" \
        f"slot {layers - 1} = take(base)\n"
    half = layers // 2
    merges = head + f"slot 0..{half} = take(base)\n" \
        f"slot {half}..{layers} = merge(base, ft, weights=[0.5, 0.5], method=linear)\n"
    out = {}
    for name, text in (("take/drop", prune), ("merges", merges)):
        path = root / f"{name.replace('/', '_')}.tr"
        path.write_text(text)
        out[name] = path
    return out


def bench_family(root: Path, layers: int, runs: int) -> list[tuple]:
    if not (root / "ft" / "config.json").exists():
        for name, seed in (("base", 1), ("ft", 2)):  # children: keep this process small
            make_in_child(root / name, layers, seed)
    inputs = sorted((root / "base").glob("*.safetensors"))
    in_bytes = sum(p.stat().st_size for p in inputs)
    tailorc = str(Path(sys.executable).parent / "tailorc")
    cp = ["cp", *map(str, inputs), str(root / "cp-out")]
    jobs = {"cp (base shards)": cp,
            "cp + sync": ["sh", "-c", " ".join(cp) + " && sync"]}
    for name, recipe in recipes(root, layers).items():
        jobs[f"tailorc {name}"] = [tailorc, "build", str(recipe), "-o", str(root / "out"),
                                   "--force", "--device", "cpu"]
    results = alternate({name: (cmd, {}) for name, cmd in jobs.items()}, runs, root,
                        ("cp-out",))
    rows = []
    for name, (wall, rss) in results.items():
        written = in_bytes if name.startswith("cp") else sum(
            p.stat().st_size for p in (root / "out").glob("*.safetensors"))
        rows.append((f"{in_bytes / 1e6:.0f} MB", name, wall, written / wall / 1e6, rss / 1e6))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-bench"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply model sizes")
    args = ap.parse_args()
    small = max(4, int(12 * args.scale))  # the prune recipe drops a quarter: 1 layer at 4
    rows = []
    for layers in (small, 3 * small + 6):  # the larger one has ~3x the bytes
        rows += bench_family(args.work / f"L{layers}", layers, args.runs)
    print(f"{'model':>8}  {'job':<20} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12}")
    for size, name, wall, rate, rss in rows:
        print(f"{size:>8}  {name:<20} {wall:>8.2f} {rate:>8.0f} {rss:>12.0f}")


if __name__ == "__main__":
    main()
