"""`tailorc export`: a recipe as a mergekit config."""

from __future__ import annotations

import argparse

from recipe_compiler.cli.common import checked
from recipe_compiler.cli.console import out
from recipe_compiler.cli.files import write_new
from recipe_compiler.language.source import RecipeError


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
