"""Golden files: error messages and plans, exactly as users see them.

Each `tests/golden/errors/X.tr` is checked against the fixture families; its rendered
diagnostics must equal `X.txt`. Each `tests/golden/plans/X.tr` is lowered; its listing must
equal `X.txt`. Regenerate with TAILOR_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import shutil

import pytest

from recipe_compiler.compiler.check import load_and_check
from recipe_compiler.compiler.listing import format_plan
from recipe_compiler.compiler.plan import lower
from recipe_compiler.language.parser import parse_file
from recipe_compiler.language.source import RecipeError, Source, render_all

from .conftest import GOLDEN, check_golden

ERRORS = sorted((GOLDEN / "errors").glob("*.tr"))
PLANS = sorted((GOLDEN / "plans").glob("*.tr"))


def diagnostics_text(path) -> str:
    try:
        recipe = parse_file(path)
    except RecipeError as exc:
        return render_all(exc.diagnostics, exc.source) + "\n"
    _, diags = load_and_check(recipe, require_closed=True)
    return render_all(diags, Source(str(path), path.read_text())) + "\n"


@pytest.mark.parametrize("golden", ERRORS, ids=[p.stem for p in ERRORS])
def test_error_messages(golden, family_root, monkeypatch):
    monkeypatch.chdir(family_root)
    shutil.copy(golden, family_root / "recipes" / golden.name)
    text = diagnostics_text(family_root.joinpath("recipes", golden.name).relative_to(family_root))
    assert "error:" in text
    check_golden(golden.with_suffix(".txt"), text)


@pytest.mark.parametrize("golden", PLANS, ids=[p.stem for p in PLANS])
def test_plans(golden, family_root, monkeypatch):
    monkeypatch.chdir(family_root)
    shutil.copy(golden, family_root / "recipes" / golden.name)
    recipe = parse_file(family_root.joinpath("recipes", golden.name).relative_to(family_root))
    models, diags = load_and_check(recipe, require_closed=True)
    assert not diags, render_all(diags)
    shard_size = 60_000 if "sharded" in golden.stem else 5 * 10**9
    check_golden(golden.with_suffix(".txt"),
                 format_plan(lower(recipe, models, shard_size=shard_size), verbose=True))
