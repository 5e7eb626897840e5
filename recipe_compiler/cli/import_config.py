"""`tailorc import`: a mergekit config as a recipe."""

from __future__ import annotations

import argparse
import os

from recipe_compiler.cli.console import UserError, err, out
from recipe_compiler.cli.files import write_new
from recipe_compiler.language.printer import format_recipe


def cmd_import(args: argparse.Namespace) -> int:
    from recipe_compiler.interop.mergekit import import_config
    from recipe_compiler.textfile import FileProblem, read_regular

    try:
        text = read_regular(args.config, 16 * 2**20).decode("utf-8")
    except (FileProblem, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else \
            str(exc).removeprefix("cannot read: ")
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
