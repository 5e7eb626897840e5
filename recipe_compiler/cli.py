"""`tailorc`: the command line. The only module that prints or exits.

Consumes: command-line arguments.
Produces: checkpoints, listings and diagnostics on the terminal; exit status 0 (ok),
1 (a problem the user can fix: bad recipe, missing model, existing output, full disk) or
2 (an internal error: a bug in tailor, reported with a traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__
from .check import concrete_ops, load_and_check, op_models
from .index import ModelError
from .parser import parse_file
from .plan import BuildError
from .printer import format_op, format_recipe
from .recipe import Choose, Drop, Open, Recipe
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
    if unit not in units or value <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 5GB or 500MB)")
    return int(value * units[unit])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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

    z = command("zoo", "make a tiny model family to try tailor on",
                "Write DIR/base, DIR/math, DIR/code: a tiny Llama family.")
    z.add_argument("dir", type=Path, metavar="DIR")
    z.add_argument("--seed", type=int, default=0)
    z.add_argument("--random", action="store_true",
                   help="random weights (seconds; nothing learned)")
    z.add_argument("--force", action="store_true", help="replace DIR if it exists")
    return p


# --- commands ----------------------------------------------------------------------


def _parse(path: Path) -> tuple[Recipe, Source]:
    recipe = parse_file(path)
    return recipe, Source(str(path), path.read_text(encoding="utf-8"))


def _checked(path: Path, *, require_closed: bool):
    recipe, source = _parse(path)
    models, diags = load_and_check(recipe, require_closed=require_closed)
    errors = [d for d in diags if d.severity == "error"]
    _print_diags([d for d in diags if d.severity != "error"], source)
    if errors:
        raise RecipeError(errors, source)
    return recipe, models, source


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
        summary += f"; parameters {total:,} -> {after:,} ({1 - after / total:.1%} removed)"
    out.print(summary, markup=False)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import format_plan, lower

    recipe, models, _ = _checked(args.recipe, require_closed=True)
    plan = lower(recipe, models, shard_size=args.shard_size)
    out.print(format_plan(plan, verbose=args.verbose), markup=False, end="")
    return 0


def cmd_fmt(args: argparse.Namespace) -> int:
    recipe, _ = _parse(args.recipe)
    text = format_recipe(recipe)
    current = args.recipe.read_text(encoding="utf-8")
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
                             on_progress=on_progress)
        except OutputError as exc:
            raise UserError(str(exc)) from None
    took = time.perf_counter() - started
    removed = 1 - plan.params_after / plan.params_before
    out.print(f"wrote {args.output}/ ({len(plan.shards)} shard(s), "
              f"{human_bytes(plan.write_bytes)}) in {took:.1f}s "
              f"({human_bytes(plan.write_bytes / max(took, 1e-9))}/s); parameters "
              f"{human_count(plan.params_before)} -> {human_count(plan.params_after)} "
              f"({removed:.1%} removed)")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    import shutil

    from .families import make_family

    if args.dir.exists() and any(args.dir.iterdir()) and not args.force:
        raise UserError(f"{args.dir}: already exists and is not empty (use --force)")
    if args.force:
        shutil.rmtree(args.dir, ignore_errors=True)
    with err.status("making a random tiny family"):
        paths = make_family(args.dir, seed=args.seed)
    for name, path in paths.items():
        out.print(f"{name:<6} {path}")
    return 0


COMMANDS = {"build": cmd_build, "check": cmd_check, "plan": cmd_plan, "fmt": cmd_fmt,
            "zoo": cmd_zoo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        err.print("tailorc: interrupted; nothing was written", markup=False)
        return 130
    except Exception as exc:  # noqa: BLE001
        err.print(traceback.format_exc(), markup=False)
        err.print(f"tailorc: internal error: {exc!r}\nthis is a bug in tailor; please report "
                  "it with the traceback above", markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
