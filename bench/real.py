"""Benchmark the search on a real model family: memory and time per candidate.

Scores one generation of candidates (random closed recipes of the family's space, seeded)
at a fixed number of items per task, in a fresh process per configuration so that each
peak RSS is its own, with 1, 2 and 4 fine-tunes beside the base. Prints a table: seconds per
candidate, peak resident memory, the store's budget and what it read; then builds the best
candidate of the two-fine-tune run with `tailorc build`, scores it with `tailorc eval` in the
same dtype, and says whether the two agree.

    tailorc zoo --real family          # once: SmolLM2-135M-Instruct + 3 fine-tunes
    python bench/real.py --family family [--device cpu] [--dtype float32]
        [--max-memory 400MB] [--candidates 8] [--limit 20]

The 4-fine-tune row names the family's fine-tunes round-robin (the fourth is the first
again, under another name): the store reads it as a separate model, which is what the row
measures. With --device cuda the same runs go on the GPU (peak GPU memory is added).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_recipe(family: Path, names: list[str], out: Path, a: argparse.Namespace) -> Path:
    members = [d.name for d in sorted(family.iterdir())
               if (d / "config.json").exists() and d.name != "base"]
    lines = [f'model base = "{family / "base"}"']
    for k, name in enumerate(names):
        lines.append(f'model {name} = "{family / members[k % len(members)]}"')
    layers = json.loads((family / "base" / "config.json").read_text())["num_hidden_layers"]
    lines += [f"slot 0..{layers} = ?", "search {", "  remove = 25%",
              f'  tasks = "{family / "tasks" / "val"}"', f"  limit = {a.limit}",
              f"  population = {a.candidates}", f'  max_memory = "{a.max_memory}"',
              f"  dtype = {a.dtype}", "}"]
    path = out / f"space-{len(names)}.tr"
    path.write_text("\n".join(lines) + "\n")
    return path


def one(recipe: Path, a: argparse.Namespace) -> dict:
    """Runs in a child process: set up, score `a.candidates` candidates, report."""
    import random

    import torch

    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.language.recipe import Take
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.genome import decode, random_genome

    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    p = prepare(recipe, {})
    ev = make_evaluator(p, device=a.device)
    setup = time.perf_counter() - start
    rng = random.Random(0)
    recipes = [decode(p.space, random_genome(p.space, rng)) for _ in range(a.candidates)]
    start = time.perf_counter()
    scores = [ev.scores(r, 0) for r in recipes]
    scoring = time.perf_counter() - start
    best = max(range(len(recipes)), key=lambda i: ev.fitness(scores[i]))
    base = p.models["base"]
    start = time.perf_counter()
    for i in range(min(8, base.num_layers)):  # read + convert, cold in the store
        ev.store._make(Take("base"), i)
    read_s = (time.perf_counter() - start) / min(8, base.num_layers)
    (recipe.parent / f"best-{recipe.stem}.tr").write_text(format_recipe(recipes[best]))
    gpu = torch.cuda.max_memory_allocated() if a.device.startswith("cuda") else 0
    return {"setup_s": setup, "per_candidate_s": scoring / len(recipes),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_gpu": gpu, "budget": ev.store.cache.budget,
            "kept_peak": ev.store.cache.peak, "layers_read": ev.store.stats.layers_read,
            "layers_merged": ev.store.stats.layers_merged, "best_scores": scores[best],
            "layer_params": base.layer_param_count(0), "layers": base.num_layers,
            "read_s_per_layer": read_s, "layer_tokens": ev.stack.layer_tokens,
            "s_per_layer_token": scoring / max(1, ev.stack.layer_tokens),
            "layers_run": ev.stack.layers_run, "kept": p.space.target_kept,
            "stored_bytes_per_param": next(iter(base.layer(0).values())).nbytes
            / max(1, next(iter(base.layer(0).values())).numel),
            "best": str(recipe.parent / f"best-{recipe.stem}.tr")}


def child(recipe: Path, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(recipe), "--device", a.device,
           "--dtype", a.dtype, "--max-memory", a.max_memory, "--candidates",
           str(a.candidates), "--limit", str(a.limit), "--threads", str(a.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"bench/real.py: a run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_against_eval(result: dict, family: Path, work: Path, a: argparse.Namespace) -> dict:
    """Build the winner, `tailorc eval` it in the same dtype; compare with its fitness."""
    tailorc = [str(Path(sys.executable).parent / "tailorc")]
    out = work / "winner"
    subprocess.run(tailorc + ["build", result["best"], "-o", str(out)], check=True,
                   capture_output=True)
    done = subprocess.run(tailorc + ["eval", str(out), "--tasks", str(family / "tasks" / "val"),
                                     "--limit", str(a.limit), "--dtype", a.dtype, "--device",
                                     a.device, "--json"],
                          check=True, capture_output=True, text=True)
    tasks = next(iter(json.loads(done.stdout)["models"].values()))["tasks"]
    evaluated = {k: v["primary"] for k, v in tasks.items() if k in result["best_scores"]}
    same = all(abs(evaluated[k] - v) < 1e-9 for k, v in result["best_scores"].items())
    return {"search": result["best_scores"], "eval": evaluated, "equal": same}


# Llama-2-7B's shapes: 32 layers of hidden 4096, MLP 11008; vocabulary 32000, untied head.
L7B = {"layers": 32, "layer_params": 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096,
       "other_params": 2 * 32000 * 4096 + 4096}


def projection(r: dict, a: argparse.Namespace) -> str:
    """Memory and time for a base + 4 fine-tunes of a 7B Llama, scaled from this run's
    measured per-layer costs by the ratio of layer sizes (same items, same token counts)."""
    ratio = L7B["layer_params"] / r["layer_params"]
    layer_gb = L7B["layer_params"] * 2 / 1e9  # bf16
    kept = L7B["layers"] - L7B["layers"] // 4
    # layer-tokens one candidate runs here (cache hits included), scaled to 24 kept layers
    tokens = r["layer_tokens"] / a.candidates * kept / r["kept"]
    cpu_s = r["s_per_layer_token"] * ratio * tokens
    gpu_s = tokens * 2 * L7B["layer_params"] / (a.gpu_tflops * 1e12)
    stored_gb = r["layer_params"] * r["stored_bytes_per_param"] / 1e9
    read_gbs = stored_gb / r["read_s_per_layer"]
    shell_gb = L7B["other_params"] * 2 / 1e9
    budget_gb = 24 * 0.8 - shell_gb
    merge_gb = 5 * L7B["layer_params"] * 4 / 1e9
    all_layers = 5 * L7B["layers"]
    return "\n".join([
        f"| quantity (7B Llama, base + 4 fine-tunes, {L7B['layers']} -> {kept} layers) | value "
        "| from |", "|---|---:|---|",
        f"| one layer, bf16 | {layer_gb:.2f} GB | 202M parameters |",
        f"| all source layers (5 models) | {all_layers * layer_gb:.0f} GB | what loading every "
        "model whole needs |",
        f"| embeddings + head + norm, bf16 | {shell_gb:.2f} GB | kept outside the budget |",
        f"| one candidate's layers | {kept * layer_gb:.1f} GB | the working set |",
        f"| budget on one 24 GB GPU (80% of free) | {budget_gb:.1f} GB | "
        f"{budget_gb / layer_gb:.0f} layers: a candidate plus {budget_gb / layer_gb - kept:.0f} "
        "shared |",
        f"| transient float32 inputs of a 5-model merge | {merge_gb:.1f} GB | within the "
        "budget's head-room |",
        f"| reading a layer (measured here: {read_gbs:.2f} GB/s incl. conversion) | "
        f"{layer_gb / read_gbs:.2f} s | each layer not in the budget, once per candidate at "
        "worst |",
        f"| CPU, 2 cores: one candidate | {cpu_s / 60:.0f} min | measured "
        f"{r['s_per_layer_token'] * 1e6:.1f} us per layer-token x {ratio:.0f} (layer size) x "
        f"{tokens:,.0f} layer-tokens |",
        f"| GPU: one candidate's compute | {gpu_s:.2f} s | assumed {a.gpu_tflops:.0f} TFLOP/s "
        "effective bf16 (assumed: the H200 check in this page ran a smaller family) |",
        "| Ray, N such GPUs | ~1/N of the above per generation | one evaluator and budget "
        "per GPU; candidates routed by layer prefix |",
    ])


def write_scaling(text: str, a: argparse.Namespace) -> None:
    from _docs import write_block

    write_block(ROOT / "docs" / "scaling.md", "real-scale", text,
                heading="## Memory and time at 7B")


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", type=Path, default=Path("family"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--max-memory", default="400MB")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fine-tunes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--gpu-tflops", type=float, default=50.0,
                    help="effective bf16 TFLOP/s assumed for the GPU projection")
    ap.add_argument("--write-docs", action="store_true",
                    help="write the tables into docs/scaling.md")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(one(a.child, a)))
        return
    if not (a.family / "base" / "config.json").exists():
        sys.exit(f"bench/real.py: no family at {a.family}; make one with "
                 f"`tailorc zoo --real {a.family}`")
    with tempfile.TemporaryDirectory(prefix="tailor-bench-real-") as tmp:
        work = Path(tmp)
        rows = {}
        for n in a.fine_tunes:
            names = [f"ft{k + 1}" for k in range(n)]
            rows[n] = child(write_recipe(a.family.resolve(), names, work, a), a)
        agree = check_against_eval(rows[2], a.family, work, a) if 2 in rows else None
    print(f"\nSearch on {a.family} ({a.device}, {a.dtype}, budget {a.max_memory}, "
          f"{a.candidates} candidates x {a.limit} items per task, {a.threads} threads)\n")
    print("| fine-tunes | setup | s / candidate | peak RSS | peak GPU | kept (peak) | "
          "layers read | layers merged |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        print(f"| {n} | {r['setup_s']:.1f} s | {r['per_candidate_s']:.2f} | "
              f"{mb(r['peak_rss'])} | {mb(r['peak_gpu'])} | {mb(r['kept_peak'])} | "
              f"{r['layers_read']} | {r['layers_merged']} |")
    if len(rows) > 1:
        peaks = [r["peak_rss"] for r in rows.values()]
        print(f"\npeak RSS spread over {', '.join(map(str, rows))} fine-tunes: "
              f"{100 * (max(peaks) / min(peaks) - 1):.1f}%")
    lines = [f"Measured with `python bench/real.py --family FAMILY --write-docs` on "
             f"{a.family.name} ({a.device}, {a.dtype}, budget {a.max_memory}, {a.candidates} "
             f"candidates x {a.limit} items per task, {a.threads} threads):", "",
             "| fine-tunes | setup | s / candidate | peak RSS | kept (peak) | layers read | "
             "layers merged |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n, r in rows.items():
        lines.append(f"| {n} | {r['setup_s']:.1f} s | {r['per_candidate_s']:.2f} | "
                     f"{mb(r['peak_rss'])} | {mb(r['kept_peak'])} | {r['layers_read']} | "
                     f"{r['layers_merged']} |")
    if agree is not None:
        verdict = "equal" if agree["equal"] else "DIFFERENT"
        lines += ["", f"Best candidate (2 fine-tunes): search scores {agree['search']}; "
                  f"`tailorc eval` of its build {agree['eval']}: {verdict}."]
    if 2 in rows:
        lines += ["", projection(rows[2], a)]
    print("\n".join(lines))
    if a.write_docs:
        write_scaling("\n".join(lines), a)


if __name__ == "__main__":
    main()
