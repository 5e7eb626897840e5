"""Shared by the recipe commands: the front door with warnings printed.

Consumes: a recipe path. Produces: the checked recipe, models and source, or raises
`RecipeError` with every error."""

from __future__ import annotations

from pathlib import Path

from recipe_compiler.cli.console import err
from recipe_compiler.compiler import frontdoor
from recipe_compiler.language.source import Diagnostic, Source, render_all


def checked(path: Path, *, require_closed: bool):
    loaded = frontdoor.load(path, require_closed=require_closed)
    print_diags(loaded.warnings, loaded.source)
    loaded.raise_errors()
    return loaded.recipe, loaded.models, loaded.source


def print_diags(diags: list[Diagnostic], source: Source) -> None:
    if diags:
        err.print(render_all(diags, source), markup=False)
