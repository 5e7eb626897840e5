"""`tailorc`: the command line. The only module that prints or exits.

Consumes: command-line arguments.
Produces: checkpoints, listings and diagnostics on the terminal; exit status 0 (ok),
1 (a problem the user can fix: bad recipe, missing model, existing output, full disk) or
2 (an internal error: a bug in tailor, reported with a traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, frontdoor
from .check import concrete_ops, op_models
from .index import ModelError
from .parser import parse, read_source
from .plan import BuildError, size_change
from .printer import format_op, format_recipe
from .recipe import Choose, Drop, Open
from .source import Diagnostic, RecipeError, Source, render_all

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A one-line problem the user can fix; printed as `tailorc: error: ...`, exit 1."""


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
slerp (two models, t). Every merge also takes layer= and scale=.
Open slots for `tailorc evolve`: `slot 8..12 = ?` or `slot 8 = choose(drop, take(math))`,
tuned by a `search { key = value ... }` block. Slots 0..n-1 must each be defined once; the
output keeps the non-dropped slots in order.
"""


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
             "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
    t = text.strip().upper()
    num = t.rstrip("KMGTIB")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5GB or 500MB)") from None
    if unit not in units or not 0 < value * units.get(unit, 1) <= 1e15:  # also NaN and inf
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5GB or 500MB)")
    return max(1, int(value * units[unit]))


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
                 "(passthrough, linear, task_arithmetic and ties slices with scalar "
                 "parameters). What tailor cannot express exactly is an error naming the YAML "
                 "key and its line. Model paths are kept as written; tailor needs local "
                 "checkpoint directories, found relative to the recipe file.")
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
    v.add_argument("--threads", type=_whole(1, 1024), default=None, metavar="N",
                   help="torch CPU threads per process (default: 1)")
    v.add_argument("--no-cache", action="store_true",
                   help="turn off layer/activation/score caches (same results, slower)")
    v.add_argument("--resume", action="store_true",
                   help="continue from OUT/state.json (same seed: same result)")
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


# --- commands ----------------------------------------------------------------------


def _checked(path: Path, *, require_closed: bool):
    loaded = frontdoor.load(path, require_closed=require_closed)
    _print_diags(loaded.warnings, loaded.source)
    loaded.raise_errors()
    return loaded.recipe, loaded.models, loaded.source


def _print_diags(diags: list[Diagnostic], source: Source) -> None:
    if diags:
        err.print(render_all(diags, source), markup=False)


def cmd_check(args: argparse.Namespace) -> int:
    recipe, models, _ = _checked(args.recipe, require_closed=False)
    base = models[recipe.base_name or ""]
    per_layer = base.layer_param_count(0)
    table = Table(title=f"{args.recipe}: {recipe.slot_count} slots", title_justify="left")
    for col in ("slot", "operation", "sources", "params kept", "params removed"):
        table.add_column(col, justify="right" if col.startswith("params") else "left")
    kept = 0
    for decl in recipe.slots:
        for i in range(decl.start, decl.stop):
            op = decl.op
            names = sorted({m for o in concrete_ops(op) for m in op_models(o)})
            if isinstance(op, (Open, Choose)):
                params = ("?", "?")
            elif isinstance(op, Drop):
                params = ("0", f"{per_layer:,}")
            else:
                params = (f"{per_layer:,}", "0")
                kept += 1
            table.add_row(str(i), format_op(op), ", ".join(names) or "-", *params)
    out.print(table)
    summary = f"{args.recipe}: ok; {kept} layers kept of {recipe.slot_count} slots"
    n_open = sum(d.stop - d.start for d in recipe.open_slots())
    if n_open:
        summary += f"; {n_open} open for the search (build needs them filled)"
    else:
        total = base.param_count()
        after = total - per_layer * (base.num_layers - kept)
        summary += f"; parameters {total:,} -> {after:,} ({size_change(total, after)})"
    out.print(summary, markup=False)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import format_plan, lower

    recipe, models, _ = _checked(args.recipe, require_closed=True)
    plan = lower(recipe, models, shard_size=args.shard_size)
    out.print(format_plan(plan, verbose=args.verbose), markup=False, end="")
    return 0


def cmd_fmt(args: argparse.Namespace) -> int:
    source = read_source(args.recipe)
    text = format_recipe(parse(source.text, source.path))
    current = source.text
    if args.check:
        if text != current:
            err.print(f"{args.recipe}: not in canonical form (run: tailorc fmt -i {args.recipe})")
            return 1
        return 0
    if args.in_place:
        if text != current:
            args.recipe.write_text(text, encoding="utf-8")
        return 0
    out.print(text, markup=False, end="")
    return 0


def _device(requested: str | None, needed: bool = True) -> str:
    if not needed and requested in (None, "cpu"):
        return "cpu"  # a take/drop build computes nothing: skip importing torch
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    if not (requested == "cpu" or requested.startswith("cuda")):
        raise UserError(f"unknown device {requested!r} (use cpu or cuda)")
    return requested


def cmd_build(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .output import OutputError, check_output, write_checkpoint
    from .plan import Copy, human_bytes, human_count, lower

    recipe, models, _ = _checked(args.recipe, require_closed=True)
    try:
        check_output(recipe, args.output, force=args.force)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    plan = lower(recipe, models, shard_size=args.shard_size)
    device = _device(args.device, needed=not all(isinstance(t.expr, Copy) for t in plan.tasks))
    started = time.perf_counter()
    columns = (TextColumn("building"), BarColumn(), MofNCompleteColumn(),
               TextColumn("tensors"), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("build", total=sum(t.out.nbytes for t in plan.tasks))

        def on_progress(p) -> None:
            bar.update(task, completed=p.bytes)

        try:
            write_checkpoint(recipe, plan, args.output, force=args.force, device=device,
                             on_progress=on_progress,
                             on_warning=lambda m: err.print(f"tailorc: warning: {m}",
                                                            markup=False))
        except OutputError as exc:
            raise UserError(str(exc)) from None
    took = time.perf_counter() - started
    out.print(f"wrote {args.output}/ ({len(plan.shards)} shard(s), "
              f"{human_bytes(plan.write_bytes)}) in {took:.1f}s "
              f"({human_bytes(plan.write_bytes / max(took, 1e-9))}/s); parameters "
              f"{human_count(plan.params_before)} -> {human_count(plan.params_after)} "
              f"({size_change(plan.params_before, plan.params_after)})")
    return 0


# what `tailorc zoo` writes (trained or --random): the only names --force may delete
ZOO_NAMES = {"base", "math", "code", "recall", "strings", "tasks", "zoo.json"}


def cmd_zoo(args: argparse.Namespace) -> int:
    import shutil

    if args.dir.exists() and not args.dir.is_dir():
        raise UserError(f"{args.dir}: exists and is not a directory")
    if args.dir.exists() and any(args.dir.iterdir()):
        if not args.force:
            raise UserError(f"{args.dir}: already exists and is not empty (use --force)")
        names = {p.name for p in args.dir.iterdir()}
        if not names <= ZOO_NAMES:
            stranger = sorted(names - ZOO_NAMES)[0]
            raise UserError(f"{args.dir}: holds files a zoo does not ({stranger}); refusing "
                            "to replace it (remove it yourself, or choose another directory)")
        shutil.rmtree(args.dir)
    if args.random:
        from .families import make_family

        with err.status("making a random tiny family"):
            paths = make_family(args.dir, seed=args.seed)
        for name, path in paths.items():
            out.print(f"{name:<8} {path}", markup=False)
        return 0
    return _train_zoo(args)


def _train_zoo(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .zoo import build_zoo

    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=err) as bar:
        tasks: dict[str, int] = {}

        def on_progress(p) -> None:
            if p.model not in tasks:
                tasks[p.model] = bar.add_task(p.model, total=p.total, info="")
            info = f"loss {p.loss:.3f}" if p.loss is not None else p.phase
            bar.update(tasks[p.model], completed=p.step, total=p.total, info=info)

        manifest = build_zoo(args.dir, seed=args.seed, quick=args.quick, on_progress=on_progress)
    table = Table(title=f"zoo in {args.dir} (seed {manifest.seed}, trained in "
                  f"{manifest.train_seconds:.0f}s)", title_justify="left")
    for col in ("model", "skill", "weights sha256"):
        table.add_column(col)
    for name, skill, _, digest in manifest.models:
        table.add_row(name, skill, digest[:16])
    out.print(table)
    out.print(f"tasks: {', '.join(p.name for p in manifest.tasks)} in {args.dir}/tasks/",
              markup=False)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.harness:
        return _eval_harness(args)
    import torch

    from .evaluate import TaskError, evaluate, load_tasks, mean_score, scores_to_json
    from .evaluate.checkpoint import default_dtype, display_names, open_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.tasks:
        raise UserError("no tasks given (use --tasks FILE_OR_DIR ...)")
    try:
        tasks = load_tasks(args.tasks)
    except (TaskError, OSError) as exc:
        raise UserError(str(exc)) from None
    device = _device(args.device)
    dtype = args.dtype or default_dtype(device)
    results = {}
    with err.status("") as status:
        for name, path in zip(display_names(args.models), args.models):
            status.update(f"scoring {path}")
            opened = open_model(path, device=device, dtype=dtype)
            try:
                results[name] = evaluate(opened.model, opened.tokenizer, tasks,
                                         limit=args.limit, batch_size=args.batch_size,
                                         device=device)
            except TaskError as exc:
                raise UserError(str(exc)) from None
            del opened
    if args.json:
        import json

        doc = {"dtype": dtype, "device": device, "models": scores_to_json(results)}
        out.print(json.dumps(doc, indent=2), markup=False)
        return 0
    out.print(score_table(results, [t.name for t in tasks], mean_score))
    out.print(f"computed in {dtype} on {device}", markup=False)
    return 0


def score_table(results: dict, task_names: list[str], mean_score) -> Table:
    table = Table(title="scores (acc / exact match; ppl for text)", title_justify="left")
    table.add_column("model")
    for name in task_names:
        table.add_column(escape(name), justify="right")  # a file name is not markup
    table.add_column("mean", justify="right", style="bold")
    for model, scores in results.items():
        cells = []
        for name in task_names:
            s = scores[name]
            cells.append(f"{s.primary:.2f}" if s.kind == "ppl" else f"{100 * s.primary:.1f}")
        try:
            mean = f"{100 * mean_score(scores):.1f}"
        except ValueError:
            mean = "-"
        table.add_row(escape(model), *cells, mean)
    return table


def _eval_harness(args: argparse.Namespace) -> int:
    from .evaluate.checkpoint import display_names
    from .evaluate.harness import HarnessUnavailable, run_harness
    from .index import load_model

    results = {}
    for name, path in zip(display_names(args.models), args.models):
        if path.suffix == ".tr":
            raise UserError("--harness runs on checkpoint directories; build the recipe first")
        load_model(name, path)  # the same validation as every other command: no pickles
        try:
            results[name] = run_harness(
                path, args.harness, include_path=args.harness_include, limit=args.limit,
                device=_device(args.device), batch_size=args.batch_size)
        except HarnessUnavailable as exc:
            raise UserError(str(exc)) from None
    import json

    out.print(json.dumps(results, indent=2), markup=False)
    return 0


def cmd_evolve(args: argparse.Namespace) -> int:
    import torch

    from .evolve import EvolveError, evolve, prepare
    from .progress import EvolveProgress

    overrides = {
        "population": args.population, "generations": args.generations, "seed": args.seed,
        "limit": args.limit, "min_limit": args.min_limit,
        "tasks": tuple(str(p.resolve()) for p in args.tasks) if args.tasks else None,
        "objectives": tuple(o.strip() for o in args.objectives.split(","))
        if args.objectives else None,
    }
    threads = args.threads or 1  # tiny layers: one thread each beats thread contention
    torch.set_num_threads(threads)
    prepared = prepare(args.recipe, overrides)
    run_dir = args.output or Path("runs") / args.recipe.stem
    if (run_dir / "state.json").exists() and not args.resume:
        if not args.force:
            raise UserError(f"{run_dir} holds an earlier run (use --resume to continue it, "
                            "--force to start afresh, or -o for a new directory)")
        (run_dir / "state.json").unlink()
    settings = prepared.space.settings
    command = "tailorc evolve " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evolve"] \
        else f"tailorc evolve {args.recipe}"
    started = time.perf_counter()
    title = (f"evolving {args.recipe} -> {run_dir}/ (population {settings.population}, "
             f"{settings.generations} generations, keep {prepared.space.target_kept} of "
             f"{prepared.space.slot_count} layers)")
    with EvolveProgress(err, title, settings.generations) as progress:
        try:
            result = evolve(prepared, run_dir, command=command, workers=args.workers,
                            device=_device(args.device), threads=threads,
                            caches=not args.no_cache, resume=args.resume,
                            recipe_path=args.recipe, overrides=overrides,
                            on_generation=progress.on_generation, ray_address=args.ray)
        except EvolveError as exc:
            raise UserError(str(exc)) from None
    err.print()
    scores = ", ".join(f"{k} {v:.3f}" for k, v in result.best_scores.items())
    out.print(f"best fitness {result.best_fitness:.4f} ({scores}) after "
              f"{result.evaluations} evaluations in {time.perf_counter() - started:.0f}s",
              markup=False)
    for score, params, path in result.pareto:
        out.print(f"pareto: score {score:.4f}, {params:,} parameters: {path}", markup=False)
    out.print("wrote " + ", ".join(str(f) for f in result.files), markup=False)
    out.print(f"next: tailorc build {result.best} -o out/{args.recipe.stem}-tailored",
              markup=False)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .evaluate import TaskError
    from .evaluate.checkpoint import open_model
    from .prune import calibration_texts, choose_drops, drop_recipe, encode

    if args.model.suffix == ".tr":
        raise UserError(f"{args.model}: prune ranks a checkpoint's layers; give a checkpoint "
                        "directory (build the recipe first)")
    _check_new_file(args.output, args.force, inputs=[args.model, args.calib])
    if args.samples < 1:
        raise UserError(f"--samples {args.samples}: give a whole number >= 1")
    try:
        texts = calibration_texts(args.calib, args.samples)
    except (TaskError, OSError) as exc:
        raise UserError(str(exc)) from None
    if not texts:
        raise UserError(f"{args.calib}: no calibration texts")
    device = _device(args.device)
    opened = open_model(args.model, device=device, dtype="float32")
    info, model, tokenizer = opened.info, opened.model, opened.tokenizer
    k = _removal_count(args.remove, info.num_layers)
    batch = encode(tokenizer, texts, getattr(model.config, "max_position_embeddings", 2048),
                   device)
    with err.status(f"ranking {info.num_layers} layers by {args.method}") as status:
        try:
            drops, _ = choose_drops(args.method, model, info.arch, batch, k,
                                    on_step=lambda m: status.update(m))
        except ValueError as exc:
            raise UserError(str(exc)) from None
    rel = os.path.relpath(os.path.abspath(args.model), os.path.abspath(args.output.parent))
    header = [f"{args.method} pruning of {args.model}: {k} of {info.num_layers} layers removed",
              f"calibration: {args.calib} ({len(texts)} samples); drops {sorted(drops)}",
              f"command: tailorc prune {args.model} --method {args.method} --remove "
              f"{args.remove} --calib {args.calib}"]
    recipe = drop_recipe(_recipe_name(info.path.name), rel, info.num_layers, drops, header)
    _write_new(args.output, format_recipe(recipe), args.force, inputs=[args.model, args.calib])
    out.print(f"wrote {args.output}: drops layers {sorted(drops)}", markup=False)
    return 0


def _removal_count(spec: str, n_layers: int) -> int:
    """'25%' of the layers (rounded) or a count, between 1 and all layers but one."""
    from .prune import removal_count

    try:
        k = removal_count(spec, n_layers)
    except (ValueError, OverflowError):
        raise UserError(f"--remove {spec!r}: give a count or a percentage, e.g. 8 or "
                        "25%") from None
    if not 1 <= k <= n_layers - 1:
        raise UserError(f"--remove {spec!r} removes {k} of {n_layers} layers; give between 1 "
                        f"and {n_layers - 1}")
    return k


def _recipe_name(text: str) -> str:
    """A model name the recipe language accepts, made from a directory name."""
    import re

    name = re.sub(r"[^A-Za-z0-9_-]", "_", text) or "model"
    return name if name[0].isalpha() or name[0] == "_" else f"m_{name}"


def _check_new_file(path: Path, force: bool, inputs: list[Path] = ()) -> None:
    """Refuse to write `path` over a directory, an input, or (without --force) a file."""
    target = path.resolve()
    for given in inputs:
        src = given.resolve()
        if target == src or src in target.parents:
            where = "an input" if target == src else "inside an input"
            raise UserError(f"{path}: is {where} ({given}); write the output elsewhere")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name")
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: cannot write under {parent}, which is not a directory")


def _write_new(path: Path, text: str, force: bool, inputs: list[Path] = ()) -> None:
    """Write a small text output whole or not at all (temporary file, then rename)."""
    _check_new_file(path, force, inputs)
    tmp = path.with_name(f".{path.name}.tailor-tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None


def cmd_import(args: argparse.Namespace) -> int:
    from .mergekit import import_config

    try:
        text = args.config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"{args.config}: cannot read ({reason})") from None
    recipe = import_config(text, str(args.config))
    recipe_text = format_recipe(recipe)
    if args.output is None:
        out.print(recipe_text, markup=False, end="")
        return 0
    _write_new(args.output, recipe_text, args.force, inputs=[args.config])
    out.print(f"wrote {args.output} ({recipe.slot_count} slots from {len(recipe.models)} "
              f"model(s)); next: tailorc check {args.output}", markup=False)
    # mergekit resolves relative paths from its working directory, tailor from the recipe's
    moved = args.output.resolve().parent != args.config.resolve().parent
    if moved and any(not os.path.isabs(m.path) for m in recipe.models):
        err.print(f"tailorc: note: model paths are kept as written and are now relative to "
                  f"{args.output.parent or '.'}/", markup=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .mergekit import export_recipe

    recipe, models, source = _checked(args.recipe, require_closed=True)
    try:
        text = export_recipe(recipe, models)
    except RecipeError as exc:
        raise RecipeError(exc.diagnostics, source) from None  # quote the recipe's lines
    if args.output is None:
        out.print(text, markup=False, end="")
        return 0
    _write_new(args.output, text, args.force, inputs=[args.recipe])
    out.print(f"wrote {args.output}; run it with: mergekit-yaml {args.output} OUT", markup=False)
    return 0


COMMANDS = {"build": cmd_build, "check": cmd_check, "plan": cmd_plan, "fmt": cmd_fmt,
            "zoo": cmd_zoo, "eval": cmd_eval, "evolve": cmd_evolve,
            "prune": cmd_prune, "import": cmd_import, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # transformers' own progress bars and warnings would interleave with ours
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        return COMMANDS[args.command](args)
    except RecipeError as exc:
        err.print(render_all(exc.diagnostics, exc.source), markup=False)
        n = len(exc.diagnostics)
        err.print(f"{n} error{'s' if n != 1 else ''}; nothing was written", markup=False)
        return 1
    except (UserError, ModelError) as exc:
        err.print(f"tailorc: error: {exc}", markup=False)
        return 1
    except BuildError as exc:
        err.print(f"tailorc: error: {exc}; nothing was written", markup=False)
        return 1
    except KeyboardInterrupt:
        if args.command == "evolve":
            err.print("tailorc: interrupted; finished generations are saved: add --resume to "
                      "the same command to continue", markup=False)
        else:
            err.print("tailorc: interrupted; nothing was written", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001
        err.print(traceback.format_exc(), markup=False)
        err.print(f"tailorc: internal error: {exc!r}\nthis is a bug in tailor; please report "
                  "it with the traceback above", markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
