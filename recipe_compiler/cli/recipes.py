"""Commands on recipes: check, plan, build, fmt, import, export.

Consumes: parsed arguments. Produces: listings on `out`, diagnostics on `err`, and files
(a checkpoint directory, a recipe, a mergekit config); raises `RecipeError`/`UserError`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.table import Table

from recipe_compiler import frontdoor
from recipe_compiler.cli.console import UserError, err, out, pick_device
from recipe_compiler.cli.files import write_new
from recipe_compiler.language.parser import parse, read_source
from recipe_compiler.language.printer import format_op, format_recipe
from recipe_compiler.language.recipe import Choose, Drop, Open, concrete_ops, op_models
from recipe_compiler.language.source import Diagnostic, RecipeError, Source, render_all
from recipe_compiler.plan import size_change


def checked(path: Path, *, require_closed: bool):
    loaded = frontdoor.load(path, require_closed=require_closed)
    _print_diags(loaded.warnings, loaded.source)
    loaded.raise_errors()
    return loaded.recipe, loaded.models, loaded.source


def _print_diags(diags: list[Diagnostic], source: Source) -> None:
    if diags:
        err.print(render_all(diags, source), markup=False)


def cmd_check(args: argparse.Namespace) -> int:
    recipe, models, _ = checked(args.recipe, require_closed=False)
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
    from recipe_compiler.plan import format_plan, lower

    recipe, models, _ = checked(args.recipe, require_closed=True)
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

    from recipe_compiler.execute.output import OutputError, check_output, write_checkpoint
    from recipe_compiler.plan import Copy, human_bytes, human_count, lower

    recipe, models, _ = checked(args.recipe, require_closed=True)
    try:
        check_output(recipe, args.output, force=args.force)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    plan = lower(recipe, models, shard_size=args.shard_size)
    device = pick_device(args.device, needed=not all(isinstance(t.expr, Copy) for t in plan.tasks))
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


def cmd_import(args: argparse.Namespace) -> int:
    from recipe_compiler.interop.mergekit import import_config

    try:
        if args.config.exists() and not args.config.is_file():  # a FIFO would block the read
            raise OSError(21, "not a regular file")
        if args.config.stat().st_size > 16 * 2**20:
            raise OSError(27, "larger than 16 MiB; not a mergekit config")
        text = args.config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UserError(f"{args.config}: cannot read ({reason})") from None
    recipe = import_config(text, str(args.config))
    recipe_text = format_recipe(recipe)
    if args.output is None:
        out.print(recipe_text, markup=False, end="")
        return 0
    write_new(args.output, recipe_text, args.force, inputs=[args.config])
    out.print(f"wrote {args.output} ({recipe.slot_count} slots from {len(recipe.models)} "
              f"model(s)); next: tailorc check {args.output}", markup=False)
    # mergekit resolves relative paths from its working directory, tailor from the recipe's
    moved = args.output.resolve().parent != args.config.resolve().parent
    if moved and any(not os.path.isabs(m.path) for m in recipe.models):
        err.print(f"tailorc: note: model paths are kept as written and are now relative to "
                  f"{args.output.parent or '.'}/", markup=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from recipe_compiler.interop.mergekit import export_recipe

    recipe, models, source = checked(args.recipe, require_closed=True)
    try:
        text = export_recipe(recipe, models)
    except RecipeError as exc:
        raise RecipeError(exc.diagnostics, source) from None  # quote the recipe's lines
    if args.output is None:
        out.print(text, markup=False, end="")
        return 0
    write_new(args.output, text, args.force, inputs=[args.recipe])
    out.print(f"wrote {args.output}; run it with: mergekit-yaml {args.output} OUT", markup=False)
    return 0
