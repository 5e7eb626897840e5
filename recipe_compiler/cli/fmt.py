"""`tailorc fmt`: a recipe in canonical form."""

from __future__ import annotations

import argparse

from recipe_compiler.cli.console import err, out
from recipe_compiler.language.parser import parse, read_source
from recipe_compiler.language.printer import format_recipe


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
