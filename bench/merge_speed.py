"""Merge builds against their floor, and against mergekit, in the same run.

Makes a random Llama-architecture family (base + one fine-tune, bf16; 24 layers is about
0.74 GB per model) and builds, for each method (linear, task_arithmetic, ties) a recipe that
keeps 3/4 of the layers and merges every kept tensor of the two models, plus a take/drop
recipe (the same layers, every tensor a byte copy). Each recipe is imported from a mergekit
config, so both tools get the same instructions. Its floors, timed in the same rounds:

- merges: `cat` of every input shard to /dev/null, then `cp` of one file the size of the
  output and `sync` of that file (tailorc fsyncs its output): reading the inputs and
  writing the output once, with no arithmetic;
- take/drop: `cp` of the base model's shards (as bench/build.py and bench/vs_mergekit.py).

    python bench/merge_speed.py [--runs 3] [--layers 24] [--mergekit-yaml PATH]
                                [--before SRC] [--work DIR]

`--before SRC` adds a `tailorc` run from another source tree (e.g. `git archive HEAD`
unpacked in /tmp) to the same rounds, for a before/after table. Runs alternate within each
round; the table shows medians, and the largest peak RSS (wait4) of each job.
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
# Every job gets the same environment, all cores included. PASSIVE: OpenMP threads sleep at
# a barrier instead of spinning; on a machine shared with other work, spinning threads
# make torch (in mergekit, and in tailorc's whole-tensor merges) several times slower.
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
METHODS = {"linear": "weight: 0.5", "task_arithmetic": "weight: 0.5",
           "ties": "weight: 0.5, density: 0.5"}
NUMPY_ENGINE = ("linear", "task_arithmetic")  # built without torch by default on the CPU


def configs(layers: int) -> dict[str, str]:
    """mergekit YAML per job: keep layers [0, keep-1) and the last one. The merges begin
    and end with a zero-length slice of the base alone, so that both tools take the
    embeddings and the head from the base model."""
    keep = layers - layers // 4
    ranges = ((0, keep - 1), (layers - 1, layers))
    out = {"take/drop": "merge_method: passthrough\nbase_model: base\nslices:\n" + "".join(
        f"- sources: [{{model: base, layer_range: [{a}, {b}]}}]\n" for a, b in ranges)}
    for method, params in METHODS.items():
        slices = "".join(
            f"- sources: [{{model: base, layer_range: [{a}, {b}], parameters: {{{params}}}}}, "
            f"{{model: ft, layer_range: [{a}, {b}], parameters: {{{params}}}}}]\n"
            for a, b in ranges)
        alone = "- sources: [{model: base, layer_range: [0, 0], parameters: {weight: 1.0}}]\n"
        out[method] = (f"merge_method: {method}\nbase_model: base\nslices:\n"
                       f"{alone}{slices}{alone}")  # embeddings and head: the base's
    return out


def output_size(root: Path, recipe: Path) -> int:
    """Bytes of the output's shards, from the plan (no build needed)."""
    sys.path.insert(0, str(BENCH.parent))
    from recipe_compiler.compiler.frontdoor import load_checked
    from recipe_compiler.compiler.plan import lower

    loaded = load_checked(recipe, require_closed=True)
    return sum(s.size for s in lower(loaded.recipe, loaded.models).shards)


def jobs(root: Path, layers: int, mergekit: str | None, before: Path | None
         ) -> dict[str, tuple[list[str], dict[str, str]]]:
    """job name -> (command, environment); run from `root`, where base/ and ft/ live."""
    sys.path.insert(0, str(BENCH.parent))
    from recipe_compiler.interop.mergekit import import_config
    from recipe_compiler.language.printer import format_recipe

    shards = sorted(f"{m}/{p.name}" for m in ("base", "ft")
                    for p in (root / m).glob("*.safetensors"))
    cp = "cp " + " ".join(s for s in shards if s.startswith("base/")) + " cp-out/"
    tailorc = [sys.executable, "-c", "import sys; from recipe_compiler.cli import main; "
               "sys.exit(main(sys.argv[1:]))"]
    out = {"cp": (["sh", "-c", cp], ENV),
           "cp + sync": (["sh", "-c", f"{cp} && sync cp-out/*"], ENV),
           "import torch": ([sys.executable, "-c", "import torch"], ENV)}
    for job, text in configs(layers).items():
        name = job.replace("/", "_")
        (root / f"{name}.yml").write_text(text)
        recipe = root / f"{name}.tr"
        recipe.write_text(format_recipe(import_config(text, f"{name}.yml")))
        if job != "take/drop":
            ref = root / f"{name}.size"
            if not ref.exists() or ref.stat().st_size != output_size(root, recipe):
                _sized_file(ref, root / shards[0], output_size(root, recipe))
            floor = f"cat {' '.join(shards)} > /dev/null && cp {ref.name} cp-out/ && " \
                    f"sync cp-out/{ref.name}"
            out[f"floor {job}"] = (["sh", "-c", floor], ENV)
        build = ["build", recipe.name, "-o", "out-tailor", "--force", "--device", "cpu"]
        out[f"tailorc {job}"] = (tailorc + build, ENV)
        if job in NUMPY_ENGINE:  # the same build by torch, which it can also run
            out[f"torch {job}"] = (tailorc + build + ["--engine", "torch"], ENV)
        if before is not None:
            out[f"before {job}"] = (tailorc + build, dict(ENV, PYTHONPATH=str(before)))
        if mergekit:
            out[f"mergekit {job}"] = ([mergekit, f"{name}.yml", "out-mk",
                                       "--no-copy-tokenizer", "--no-write-model-card"], ENV)
    return out


def _sized_file(path: Path, like: Path, size: int) -> None:
    """A file of `size` bytes of real tensor data (cycled from `like`)."""
    with open(like, "rb") as f:
        data = f.read(64 << 20)
    with open(path, "wb") as f:
        left = size
        while left:
            f.write(data[:left])
            left -= min(left, len(data))


def measure(root: Path, layers: int, runs: int, mergekit: str | None, before: Path | None
            ) -> dict[str, tuple[float, int]]:
    if not (root / "ft" / "config.json").exists():
        for name, seed in (("base", 1), ("ft", 2)):  # children: keep this process small
            make_in_child(root / name, layers, seed)
    todo = {name: (cmd, {"cwd": root, "env": env})
            for name, (cmd, env) in jobs(root, layers, mergekit, before).items()}
    return alternate(todo, runs, root, ("cp-out", "out-mk", "out-tailor"))


def print_table(size: str, res: dict[str, tuple[float, int]]) -> str:
    """Prints the table and returns it."""
    lines = [f"{size}: median wall seconds; floor = cat inputs + cp/sync of the output size "
             "(take/drop: cp of the base shards)", "",
             "| job | tailorc s | floor s | x floor | mergekit s | mergekit / tailorc | "
             "`--engine torch` s | before s | before / now | tailorc RSS MB | "
             "mergekit RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for job in ("take/drop", *METHODS):
        t, rss = res[f"tailorc {job}"]
        floor = res["cp" if job == "take/drop" else f"floor {job}"][0]
        mk = res.get(f"mergekit {job}")
        bf = res.get(f"before {job}")
        lines.append(f"| {job} | {t:.2f} | {floor:.2f} | {t / floor:.2f}x | "
                     f"{_cell(mk, '.2f')} | {_ratio(mk, t)} | "
                     f"{_cell(res.get(f'torch {job}'), '.2f')} | {_cell(bf, '.2f')} | "
                     f"{_ratio(bf, t)} | {rss / 1e6:.0f} | {_cell(mk, '.0f', 1, 1e6)} |")
    t, sync = res["tailorc take/drop"][0], res["cp + sync"][0]
    lines += ["", f"take/drop against `cp + sync` (tailorc fsyncs its output): {sync:.2f} s, "
              f"{t / sync:.2f}x. Starting Python and importing torch, which a merge build "
              f"on the torch engine pays and no floor does: {res['import torch'][0]:.2f} s."]
    text = "\n".join(lines)
    print("\n" + text)
    return text


def _cell(v: tuple[float, int] | None, fmt: str, k: int = 0, div: float = 1.0) -> str:
    return "" if v is None else format(v[k] / div, fmt)


def _ratio(v: tuple[float, int] | None, t: float) -> str:
    return "" if v is None else f"{v[0] / t:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mergekit-yaml", default=shutil.which("mergekit-yaml"), metavar="PATH")
    ap.add_argument("--before", type=Path, default=None, metavar="SRC")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layers", default="24", help="layers per family, comma-separated")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tailor-merge-speed"))
    ap.add_argument("--write-docs", action="store_true",
                    help="write the tables into docs/speed.md")
    args = ap.parse_args()
    tables = []
    for layers in (int(n) for n in args.layers.split(",")):
        root = args.work / f"L{layers}"
        res = measure(root, layers, args.runs, args.mergekit_yaml, args.before)
        gb = sum(p.stat().st_size for p in (root / "base").glob("*.safetensors")) / 1e9
        tables.append(print_table(f"{gb:.2f} GB bf16 per model, {layers} layers", res))
        sys.stdout.flush()
    if args.write_docs:
        from _docs import write_block

        load = os.getloadavg()[0]
        head = (f"Written by `python bench/merge_speed.py --runs {args.runs} --layers "
                f"{args.layers}{' --mergekit-yaml ...' if args.mergekit_yaml else ''}"
                f"{' --before ...' if args.before else ''} --write-docs` on "
                f"{os.cpu_count()} cores (load average {load:.1f} at the end).")
        write_block(BENCH.parent / "docs" / "speed.md", "merge-speed",
                    head + "\n\n" + "\n\n".join(tables), heading="### Results")


if __name__ == "__main__":
    main()
