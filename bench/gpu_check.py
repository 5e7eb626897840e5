"""The CUDA paths, checked in a few minutes on one GPU, with nothing downloaded.

Makes a random Llama family on the spot (base + 2 fine-tunes; `--layers`, `--hidden`),
with the zoo's tokenizer and small multiple-choice and generation tasks, then:

1. `tailorc build --device cuda` of a task-arithmetic merge, byte-compared with the CPU build;
2. the search's evaluator on the GPU (float32 and bfloat16): seconds per candidate, peak GPU
   memory, the store's budget; and the best candidate's fitness against `tailorc eval` of
   its built checkpoint on the GPU in float32;
3. merge throughput: `task_arithmetic` of three (hidden x MLP) bf16 tensors on the GPU
   through the build's merge code, in GB/s of inputs read plus output written, against the
   device's memory bandwidth (`--bandwidth`, GB/s).

    python bench/gpu_check.py [--layers 16] [--hidden 1024] [--out DIR]

Prints one table; `--out DIR` also writes it there (gpu_check.md).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEVICE = "cuda"  # --device cpu: a smoke test of this script where there is no GPU


def family(root: Path, layers: int, hidden: int) -> None:
    from recipe_compiler.zoo.families import make_family
    from recipe_compiler.zoo.tokenizer import build_tokenizer

    make_family(root, "llama", ("base", "math", "code"), layers=layers, hidden=hidden,
                seed=1, dtype=torch.bfloat16)
    tok = build_tokenizer()
    for name in ("base", "math", "code"):
        tok.save_pretrained(root / name)
    rng = random.Random(0)
    mc = [{"context": f"{a} + {b} =", "choices": [f" {a + b}", f" {a * b}", f" {a}"],
           "gold": 0} for a, b in ((rng.randint(1, 9), rng.randint(1, 9)) for _ in range(40))]
    gen = [{"prompt": f"say {w}:", "answer": f" {w}"} for w in
           ("".join(rng.choice("abcdefgh") for _ in range(3)) for _ in range(40))]
    (root / "tasks").mkdir()
    for name, rows in (("mc", mc), ("gen", gen)):
        (root / "tasks" / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))


def tailorc(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "recipe_compiler.cli", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"tailorc {' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def check_build(root: Path, layers: int) -> list[str]:
    recipe = root / "merge.tr"
    recipe.write_text(f'model base = "{root / "base"}"\nmodel math = "{root / "math"}"\n'
                      f'model code = "{root / "code"}"\nslot 0..{layers} = merge(math, code, '
                      "weights=[0.5, 0.5], method=task_arithmetic)\n")
    times = {}
    for device in dict.fromkeys((DEVICE, "cpu")):
        start = time.perf_counter()
        tailorc("build", str(recipe), "-o", str(root / f"built-{device}"), "--device", device)
        times[device] = time.perf_counter() - start
    same = all((root / f"built-{DEVICE}" / f.name).read_bytes() == f.read_bytes()
               for f in (root / "built-cpu").glob("*.safetensors"))
    return [f"| build --device {DEVICE} vs cpu (task arithmetic, {layers} layers) | "
            f"{times[DEVICE]:.1f} s vs {times['cpu']:.1f} s | identical bytes: {same} |"]


def check_search(root: Path, layers: int, dtype: str) -> list[str]:
    from recipe_compiler.language.printer import format_recipe
    from recipe_compiler.search import make_evaluator, prepare
    from recipe_compiler.search.genome import decode, random_genome

    recipe = root / f"space-{dtype}.tr"
    recipe.write_text(f'model base = "{root / "base"}"\nmodel math = "{root / "math"}"\n'
                      f'model code = "{root / "code"}"\nslot 0..{layers} = ?\nsearch {{\n'
                      f'  remove = 25%\n  tasks = "{root / "tasks"}"\n  limit = 40\n'
                      f'  dtype = {dtype}\n  max_memory = "4GB"\n}}\n')
    gpu = DEVICE == "cuda"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    p = prepare(recipe, {})
    ev = make_evaluator(p, device=DEVICE)
    rng = random.Random(0)
    cands = [decode(p.space, random_genome(p.space, rng)) for _ in range(8)]
    ev.scores(cands[0], 0)  # warm-up: kernels, first reads
    _sync()
    start = time.perf_counter()
    scores = [ev.scores(r, 0) for r in cands[1:]]
    _sync()
    per = (time.perf_counter() - start) / len(scores)
    peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else 0.0
    out = [f"| search on {DEVICE}, {dtype} | {per:.3f} s per candidate | peak GPU "
           f"{peak:,.0f} MB, budget {ev.store.cache.budget / 2**20:,.0f} MB, "
           f"{ev.stats.decoded} items decoded |"]
    if dtype == "float32":
        best = max(range(len(scores)), key=lambda i: ev.fitness(scores[i]))
        (root / "best.tr").write_text(format_recipe(cands[best + 1]))
        tailorc("build", str(root / "best.tr"), "-o", str(root / "best"), "--device", DEVICE)
        doc = json.loads(tailorc("eval", str(root / "best"), "--tasks", str(root / "tasks"),
                                 "--limit", "40", "--device", DEVICE, "--dtype", "float32",
                                 "--json"))
        tasks = next(iter(doc["models"].values()))["tasks"]
        evaluated = {k: v["primary"] for k, v in tasks.items()}
        out.append(f"| fitness vs tailorc eval of the built winner ({DEVICE}, float32) | "
                   f"{scores[best]} vs {evaluated} | equal: {scores[best] == evaluated} |")
    return out


def check_merge_throughput(hidden: int, bandwidth: float) -> list[str]:
    from recipe_compiler.compiler.plan import merge_expr
    from recipe_compiler.execute.merge import combine
    from recipe_compiler.language.recipe import Merge

    shape = (hidden * 4, int(hidden * 10.75))
    xs = [torch.randn(shape, device=DEVICE, dtype=torch.bfloat16) for _ in range(3)]
    expr = merge_expr(Merge(("a", "b"), method="task_arithmetic", weights=(0.5, 0.5)), (),
                      None, None, "k")
    for _ in range(3):
        combine(expr, [x.float() for x in xs[1:]], xs[0].float()).to(torch.bfloat16)
    _sync()
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        combine(expr, [x.float() for x in xs[1:]], xs[0].float()).to(torch.bfloat16)
    _sync()
    seconds = (time.perf_counter() - start) / runs
    moved = 4 * xs[0].numel() * 2  # three bf16 inputs read, one bf16 output written
    rate = moved / seconds / 1e9
    return [f"| merge throughput (task arithmetic, 3 x {shape[0]}x{shape[1]} bf16) | "
            f"{rate:,.0f} GB/s | {100 * rate / bandwidth:.0f}% of {bandwidth:,.0f} GB/s |"]


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--bandwidth", type=float, default=4800.0,
                    help="the device's memory bandwidth, GB/s (H200: 4800)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_check.py: no CUDA device")
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "none (cpu smoke test)"
    lines = [f"GPU: {name}; torch {torch.__version__}; random Llama "
             f"family, {a.layers} layers, hidden {a.hidden}, bf16", "",
             "| check | result | detail |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        family(root, a.layers, a.hidden)
        for step in (lambda: check_build(root, a.layers),
                     lambda: check_search(root, a.layers, "float32"),
                     lambda: check_search(root, a.layers, "bfloat16"),
                     lambda: check_merge_throughput(a.hidden, a.bandwidth)):
            lines += step()
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "gpu_check.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
