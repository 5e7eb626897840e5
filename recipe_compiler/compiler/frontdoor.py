"""The front door: read, parse and check a recipe in one call, for every command.

Consumes: a recipe file path.
Produces: `Loaded` — the recipe, its models' headers, its source text and every diagnostic
of argument parsing and checking together, sorted by position. Only a file that cannot be
read or parsed at all raises (`RecipeError`): with no tree there is nothing to check.

Argument problems (a bad weight, an unknown method) do not stop the checks: the builder
leaves the bad value unset, so the checker still reports a gap at slot 14 or an unknown
model in the same run. A check diagnostic that repeats one at the same place is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recipe_compiler.compiler.check import load_and_check
from recipe_compiler.compiler.parts import fix_ranges
from recipe_compiler.language.parser import parse_partial, read_source
from recipe_compiler.language.recipe import Recipe
from recipe_compiler.language.source import Diagnostic, RecipeError, Source
from recipe_compiler.models.index import Models


@dataclass(frozen=True)
class Loaded:
    recipe: Recipe
    models: Models
    source: Source
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity != "error"]

    def raise_errors(self, extra: list[Diagnostic] = ()) -> None:
        """Raise every error (with `extra` ones) together, quoting the recipe's lines."""
        errors = self.errors + [d for d in extra if d.severity == "error"]
        if errors:
            raise RecipeError(errors, self.source)


def load(path: str | Path, *, require_closed: bool = False) -> Loaded:
    """Read, parse and check the recipe at `path`; nothing is raised for its problems."""
    source = read_source(path)
    recipe, parse_diags = parse_partial(source.text, source.path)
    models, check_diags = load_and_check(recipe, require_closed=require_closed)
    seen = {(d.span, d.message) for d in parse_diags}
    diags = parse_diags + [d for d in check_diags if (d.span, d.message) not in seen]
    return Loaded(fix_ranges(recipe, models), models, source,
                  tuple(sorted(diags, key=Diagnostic.sort_key)))


def load_checked(path: str | Path, *, require_closed: bool = False) -> Loaded:
    """`load`, raising `RecipeError` with every error if there is any."""
    loaded = load(path, require_closed=require_closed)
    loaded.raise_errors()
    return loaded
