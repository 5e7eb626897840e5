"""Benchmark `tailorc build` against `mergekit-yaml` on the same inputs and recipes.

Installs nothing: needs `mergekit-yaml` on PATH or `--mergekit-yaml PATH` (e.g. a separate
venv: python3 -m venv /tmp/mk && /tmp/mk/bin/pip install torch mergekit).

For each random Llama-architecture family (base + one fine-tune; about 0.3 GB and 1 GB per
model in bf16, twice that in fp32) it runs, alternating tools within each round:
- a layer-pruning recipe (25% of layers removed; passthrough: every tensor a byte copy),
- a recipe that merges half of the layers (linear, 0.5/0.5),
- `cp` of the base model's shards, and `cp + sync` (tailorc fsyncs its output),
and the time to the first error for a layer index out of range (tailor finds it in the
headers; mergekit after starting up and loading).

    python bench/vs_mergekit.py [--mergekit-yaml PATH] [--runs 3] [--work DIR] [--quick]

Wall time is the median of the runs; peak RSS is the largest max-RSS the child reported
through os.wait4. The models are made in a child process so that this process stays small:
a forked child's max-RSS starts from its parent's resident set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from _runs import alternate  # bench/_runs.py
from checkpoints import make_in_child  # bench/checkpoints.py

BENCH = Path(__file__).resolve().parent
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def configs(layers: int) -> dict[str, str]:
    """mergekit YAML per job; the recipes are imported from these, so both tools get the
    same instructions."""
    keep = layers - layers // 4
    half = layers // 2
    prune = ("merge_method: passthrough\nbase_model: base\nslices:\n"
             f"- sources: [{{model: base, layer_range: [0, {keep - 1}]}}]\n"
             f"- sources: [{{model: base, layer_range: [{layers - 1}, {layers}]}}]\n")
    merges = ("merge_method: linear\nbase_model: base\nslices:\n"
              f"- sources: [{{model: base, layer_range: [0, {half}], "
              "parameters: {weight: 1.0}}]\n"
              f"- sources: [{{model: base, layer_range: [{half}, {layers}], parameters: "
              f"{{weight: 0.5}}}}, {{model: ft, layer_range: [{half}, {layers}], parameters: "
              "{weight: 0.5}}]\n"
              "- sources: [{model: base, layer_range: [0, 0], parameters: {weight: 1.0}}]\n")
    bad = ("merge_method: passthrough\nbase_model: base\nslices:\n"
           f"- sources: [{{model: base, layer_range: [0, {layers + 4}]}}]\n")
    return {"prune": prune, "merges": merges, "bad-layer": bad}


def jobs(root: Path, mergekit: str, tailorc: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (command, should succeed); run from `root`, where base/ and ft/ live."""
    sys.path.insert(0, str(BENCH.parent))
    from recipe_compiler.interop.mergekit import import_config
    from recipe_compiler.language.printer import format_recipe

    layers = int(__import__("json").loads((root / "base/config.json").read_text())
                 ["num_hidden_layers"])
    inputs = sorted(str(p.name) for p in (root / "base").glob("*.safetensors"))
    cp = "cp " + " ".join(f"base/{n}" for n in inputs) + " cp-out/"
    out: dict[str, tuple[list[str], bool]] = {"cp": (["sh", "-c", cp], True),
                                              "cp + sync": (["sh", "-c", cp + " && sync"], True)}
    for name, text in configs(layers).items():
        (root / f"{name}.yml").write_text(text)
        (root / f"{name}.tr").write_text(format_recipe(import_config(text, f"{name}.yml")))
        ok = name != "bad-layer"
        out[f"mergekit {name}"] = ([mergekit, f"{name}.yml", "out-mk", "--no-copy-tokenizer",
                                    "--no-write-model-card"], ok)
        out[f"tailorc {name}"] = ([tailorc, "build", f"{name}.tr", "-o", "out-tailor",
                                   "--force", "--device", "cpu"], ok)
    return out


def bench_family(root: Path, layers: int, dtype: str, runs: int, mergekit: str
                 ) -> list[tuple]:
    if not (root / "ft" / "config.json").exists():
        for name, seed in (("base", 1), ("ft", 2)):  # children: keep this process small
            make_in_child(root / name, layers, seed, dtype)
    size = sum(p.stat().st_size for p in (root / "base").glob("*.safetensors"))
    tailorc = str(Path(sys.executable).parent / "tailorc")
    todo = {name: (cmd, {"cwd": root, "env": ENV, "ok": ok})
            for name, (cmd, ok) in jobs(root, mergekit, tailorc).items()}
    res = alternate(todo, runs, root, ("cp-out", "out-mk", "out-tailor"))
    return [(f"{size / 1e9:.2f} GB {dtype}", name, wall, rss)
            for name, (wall, rss) in res.items()]


def print_table(rows: list[tuple]) -> None:
    walls = {(r[0], r[1]): r[2] for r in rows}
    rss = {(r[0], r[1]): r[3] for r in rows}
    print("| model | job | mergekit s | tailorc s | speed-up | mergekit RSS MB | "
          "tailorc RSS MB | RSS ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size in dict.fromkeys(r[0] for r in rows):
        for job in ("prune", "merges", "bad-layer"):
            m, t = walls[(size, f"mergekit {job}")], walls[(size, f"tailorc {job}")]
            mr, tr = rss[(size, f"mergekit {job}")], rss[(size, f"tailorc {job}")]
            print(f"| {size} | {job} | {m:.2f} | {t:.2f} | {m / t:.1f}x | {mr / 1e6:.0f} | "
                  f"{tr / 1e6:.0f} | {tr / mr:.2f} |")
        cp, sync = walls[(size, "cp")], walls[(size, "cp + sync")]
        prune = walls[(size, "tailorc prune")]
        print(f"| {size} | cp / cp + sync (base shards) | | {cp:.2f} / {sync:.2f} | "
              f"tailorc prune = {prune / cp:.2f}x cp, {prune / sync:.2f}x cp+sync | | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-yaml", default=shutil.which("mergekit-yaml"), metavar="PATH")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-vs-mergekit"))
    ap.add_argument("--quick", action="store_true", help="only the 0.3 GB bf16 family")
    ap.add_argument("--sizes", default="8,36", help="layers per family (default: 8,36)")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    args = ap.parse_args()
    if not args.mergekit_yaml:
        raise SystemExit("mergekit-yaml not found: put it on PATH or pass --mergekit-yaml")
    sizes = [8] if args.quick else [int(s) for s in args.sizes.split(",")]
    dtypes = ["bfloat16"] if args.quick else args.dtypes.split(",")
    rows = []
    for layers in sizes:  # 8 layers: ~0.33 GB in bf16; 36 layers: ~1.04 GB
        for dtype in dtypes:
            root = args.work / f"L{layers}-{dtype}"
            rows += bench_family(root, layers, dtype, args.runs, args.mergekit_yaml)
            print_table(rows)
            sys.stdout.flush()


if __name__ == "__main__":
    main()
