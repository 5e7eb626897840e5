"""The argument parser of `tailorc`: every command, flag and range, and the recipe help.

Consumes: nothing. Produces: `build_parser()`. Usage errors exit 1 (a problem the user can
fix), keeping 2 for bugs in tailor; numeric flags are range-checked where they are parsed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe_compiler import __version__

RECIPE_HELP = """\
A recipe (.tr file) names models and says what fills each layer slot:

  name = "tiny-tailored"            # optional; goes into the model card
  model base = "../zoo/base"        # HF checkpoint dirs, relative to the recipe file
  model math = "../zoo/math"
  model code = "../zoo/code"
  base_model = base                 # embeddings, norm, head, config, tokenizer (default: first)
  dtype = bfloat16                  # float32 | float16 | bfloat16 (default: as the base)

  slot 0..2 = take(base)            # half-open range, like mergekit's layer_range: slots 0, 1
  slot 2    = take(math)            # slot i takes layer i by default
  slot 3    = merge(math, code, weights=[0.6, 0.4], method=linear)
  slot 4    = drop
  slot 5    = merge(math, code, weights=[0.5, 0.3], method=task_arithmetic)
  slot 6    = take(code, layer=4)   # any source layer; reorder and duplicate freely
  slot 7    = take(base, scale=0.5) # scale the layer's residual contribution

merge methods: linear (weights, normalize=true), task_arithmetic (weights; relative to the
base model's layer at the same source index), ties (weights, density, normalize=true),
slerp (two models, t), dare_linear / dare_ties (weights, density, rescale=true, seed=0;
random drop seeded for byte-identical rebuilds). Every merge also takes layer= and scale=.
Open slots for `tailorc evolve`: `slot 8..12 = ?` or `slot 8 = choose(drop, take(math))`,
tuned by a `search { key = value ... }` block. Slots 0..n-1 must each be defined once; the
output keeps the non-dropped slots in order.
"""


def _size(text: str) -> int:
    from recipe_compiler.search.space import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(low: int, high: int = 10**9):
    """An argparse type: a whole number in [low, high], else a usage error (exit 1)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({low} to {high})")
        return value

    parse.__name__ = "whole number"
    return parse


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 (a problem the user can fix), keeping 2 for bugs in tailor."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tailorc",
        description="Compress a family of LLMs by cutting and stitching transformer layers.",
        epilog=RECIPE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tailorc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description or help,
                              epilog=RECIPE_HELP if name in ("check", "build") else None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    b = command("build", "build a recipe into a Hugging Face checkpoint directory",
                "Check RECIPE against its models, then write OUT/ with safetensors shards, "
                "config.json, tokenizer, a model card and the canonical recipe. The output "
                "appears only when complete.")
    b.add_argument("recipe", type=Path, metavar="RECIPE")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="output directory (refused if it exists, unless --force)")
    b.add_argument("--shard-size", type=_size, default="5GB", metavar="SIZE",
                   help="largest output shard (default: 5GB)")
    b.add_argument("--device", default=None, metavar="DEV",
                   help="where merges are computed: cpu or cuda (default: cuda if available)")
    b.add_argument("--engine", choices=("auto", "torch", "numpy"), default="auto",
                   help="what computes merges on the CPU (the same bytes either way): numpy "
                        "for conversions and linear or task-arithmetic merges, which spares "
                        "starting torch; torch for everything (default: auto, numpy when "
                        "it can)")
    b.add_argument("--force", action="store_true", help="replace OUT if it exists")

    c = command("check", "check a recipe against its models' headers (reads no weights)")
    c.add_argument("recipe", type=Path, metavar="RECIPE")

    pl = command("plan", "print the tensor plan a build would run (reads no weights)")
    pl.add_argument("recipe", type=Path, metavar="RECIPE")
    pl.add_argument("--shard-size", type=_size, default="5GB", metavar="SIZE")
    pl.add_argument("-v", "--verbose", action="store_true", help="list every tensor task")

    f = command("fmt", "print a recipe in canonical form (comments kept)")
    f.add_argument("recipe", type=Path, metavar="RECIPE")
    group = f.add_mutually_exclusive_group()
    group.add_argument("-i", "--in-place", action="store_true", help="rewrite the file")
    group.add_argument("--check", action="store_true",
                       help="exit 1 if the file is not in canonical form")

    im = command("import", "convert a mergekit config (YAML) into a recipe",
                 "Convert a mergekit config into a recipe that builds the same tensors "
                 "(passthrough slices and the merge methods tailor has: linear, "
                 "task_arithmetic, ties, dare_linear, dare_ties). What tailor cannot "
                 "express exactly is an error naming the YAML key and its line. Models are "
                 "kept as written: local directories (found relative to the recipe file) or "
                 "Hugging Face Hub ids.")
    im.add_argument("config", type=Path, metavar="CONFIG")
    im.add_argument("-o", "--output", type=Path, default=None, metavar="RECIPE",
                    help="write the recipe here (default: print it)")
    im.add_argument("--force", action="store_true", help="replace RECIPE if it exists")

    ex = command("export", "write a recipe as another tool's config",
                 "Check RECIPE against its models' headers, then write it as a mergekit config "
                 "that builds the same tensors. What mergekit cannot express is an error "
                 "pointing at the recipe.")
    ex.add_argument("recipe", type=Path, metavar="RECIPE")
    ex.add_argument("--to", choices=["mergekit"], required=True, help="the config format")
    ex.add_argument("-o", "--output", type=Path, default=None, metavar="CONFIG",
                    help="write the config here (default: print it)")
    ex.add_argument("--force", action="store_true", help="replace CONFIG if it exists")

    z = command("zoo", "train a tiny model family (base + fine-tunes) and its tasks",
                "Train DIR/base (a 12-layer Llama on a mixture of skills) and one fine-tune "
                "per skill (DIR/math, DIR/code, ...), with held-out tasks in DIR/tasks/ "
                "(validation split in DIR/tasks/val/). Deterministic from --seed.")
    z.add_argument("dir", type=Path, metavar="DIR")
    z.add_argument("--seed", type=_whole(0, 2**32 - 1), default=0)
    z.add_argument("--quick", action="store_true", help="a smaller zoo in seconds (for tests)")
    z.add_argument("--random", action="store_true",
                   help="random weights, no training (base, math, code; nothing learned)")
    z.add_argument("--real", action="store_true",
                   help="SmolLM2-135M-Instruct and 3 short fine-tunes (facts, lexicon, arith; "
                        "needs the real extra); cached: a second run reuses what exists")
    z.add_argument("--force", action="store_true", help="replace DIR if it exists")

    v = command("evolve", "search a recipe's open slots with a genetic algorithm",
                "Fill RECIPE's open slots ('?', choose(...)) by a DEAP genetic search scored "
                "in memory (no checkpoint per candidate). Settings come from the recipe's "
                "search { ... } block; flags override them. Writes OUT/best.tr (build it with "
                "tailorc build), history.jsonl, evolve.png and a resumable state.")
    v.add_argument("recipe", type=Path, metavar="RECIPE")
    v.add_argument("-o", "--output", type=Path, default=None, metavar="OUT",
                   help="run directory (default: runs/<recipe name>)")
    v.add_argument("--population", type=_whole(2, 100_000), default=None, metavar="N")
    v.add_argument("--generations", type=_whole(1, 1_000_000), default=None, metavar="N")
    v.add_argument("--seed", type=_whole(0, 2**32 - 1), default=None, metavar="N")
    v.add_argument("--limit", type=_whole(1), default=None, metavar="N",
                   help="examples per task at full fidelity")
    v.add_argument("--min-limit", type=_whole(1), default=None, metavar="N",
                   help="examples per task at the first successive-halving rung")
    v.add_argument("--tasks", type=Path, nargs="+", default=None, metavar="PATH",
                   help="task files or directories (default: the search block's)")
    v.add_argument("--objectives", default=None, metavar="LIST",
                   help="'score' (default) or 'score,size' for an NSGA-II Pareto front")
    v.add_argument("--workers", type=_whole(0, 1024), default=0, metavar="N",
                   help="evaluate in N local worker processes (with --ray: N actors)")
    v.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="evaluate on a Ray cluster ('auto': the one this machine joined); "
                        "--workers N caps the actors (default: one per CPU, or per GPU "
                        "with --device cuda); pip install '.[ray]'")
    v.add_argument("--device", default=None, metavar="DEV")
    v.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="compute dtype (default: float32 on cpu, bfloat16 on cuda)")
    v.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                   help="bytes for layers and activations per process, e.g. 2GB "
                        "(default: a quarter of RAM, or 80%% of free GPU memory)")
    v.add_argument("--threads", type=_whole(1, 1024), default=None, metavar="N",
                   help="torch CPU threads per process (default: 1)")
    v.add_argument("--no-cache", action="store_true",
                   help="turn off layer/activation/score caches (same results, slower)")
    v.add_argument("--resume", action="store_true",
                   help="continue from OUT/state.json (same seed: same result)")
    v.add_argument("--greedy-from", type=Path, default=None, metavar="RUN",
                   help="with greedy_start: take the greedy's path from RUN, an earlier run "
                        "of the same recipe and settings with another seed (the path does "
                        "not depend on the seed; its evaluations count here too)")
    v.add_argument("--force", action="store_true",
                   help="start afresh even if OUT holds an earlier run")

    pr = command("prune", "write a drop-only recipe by a single-model pruning method",
                 "Rank MODEL's layers on calibration text and write a recipe that drops the "
                 "least useful: block-influence (ShortGPT), angular (Gromov et al., a "
                 "contiguous block), ppl (Shortened LLaMA: one-shot perplexity), sleb "
                 "(iterative perplexity).")
    pr.add_argument("model", type=Path, metavar="MODEL", help="a Hugging Face checkpoint dir")
    pr.add_argument("--method", required=True, choices=("block-influence", "angular", "ppl",
                                                        "sleb"))
    pr.add_argument("--remove", default="25%", metavar="N|P%",
                    help="layers to remove: a count or a percentage (default 25%%)")
    pr.add_argument("--calib", type=Path, required=True, metavar="FILE",
                    help="calibration data: a .txt file (one text per line) or a task .jsonl")
    pr.add_argument("--samples", type=_whole(1, 1_000_000), default=64, metavar="N")
    pr.add_argument("-o", "--output", type=Path, required=True, metavar="RECIPE")
    pr.add_argument("--device", default=None, metavar="DEV")
    pr.add_argument("--force", action="store_true", help="replace RECIPE if it exists")

    e = command("eval", "score models (checkpoint dirs or recipes) on tasks",
                "Score each MODEL — a Hugging Face checkpoint directory, or a recipe (.tr) "
                "assembled in memory — on each task: multiple choice by log-likelihood (acc, "
                "acc_norm), generation by greedy exact match, perplexity on a .txt file.")
    e.add_argument("models", type=Path, nargs="+", metavar="MODEL")
    e.add_argument("--tasks", type=Path, nargs="+", default=[], metavar="PATH",
                   help="task files (.jsonl, .txt) or directories of them")
    e.add_argument("--limit", type=_whole(1), default=None, metavar="N",
                   help="first N items per task")
    e.add_argument("--batch-size", type=_whole(1, 100_000), default=32, metavar="N")
    e.add_argument("--device", default=None, metavar="DEV", help="cpu or cuda (default: cuda "
                   "if available)")
    e.add_argument("--threads", type=_whole(1, 1024), default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    e.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="compute dtype (default: float32 on cpu, bfloat16 on cuda); printed "
                        "with the scores")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--harness", nargs="+", default=None, metavar="TASK",
                   help="run these lm-eval-harness tasks instead (pip install '.[harness]')")
    e.add_argument("--harness-include", type=Path, default=None, metavar="DIR",
                   help="a folder of lm-eval task YAMLs to add to the harness's own")
    return p
