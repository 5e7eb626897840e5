"""`tailorc check`: a recipe against its models' headers; a table of slots and sizes."""

from __future__ import annotations

import argparse

from rich.table import Table

from recipe_compiler.cli.common import checked
from recipe_compiler.cli.console import out
from recipe_compiler.compiler.listing import size_change
from recipe_compiler.language.printer import format_op
from recipe_compiler.language.recipe import Choose, Drop, Open, concrete_ops, op_models


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
