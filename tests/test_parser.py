"""The language: what the example means, open slots, the search block, fmt round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_compiler.language.parser import parse, parse_file
from recipe_compiler.language.printer import format_recipe
from recipe_compiler.language.recipe import (
    Choose,
    Drop,
    Merge,
    ModelDecl,
    Name,
    Open,
    Percent,
    Recipe,
    Setting,
    SlotDecl,
    Take,
)
from recipe_compiler.language.source import RecipeError

ROOT = Path(__file__).parent.parent
SHIPPED = sorted((ROOT / "recipes").glob("*.tr"))


def test_example_means_what_its_comments_say():
    r = parse_file(ROOT / "recipes" / "example.tr")
    assert r == Recipe(
        name="tiny-tailored",
        models=(ModelDecl("base", "../zoo/base"), ModelDecl("math", "../zoo/math"),
                ModelDecl("code", "../zoo/code")),
        base_model="base",
        dtype="bfloat16",
        slots=(
            SlotDecl(0, 2, Take("base")),
            SlotDecl(2, 3, Take("math")),
            SlotDecl(3, 4, Merge(("math", "code"), "linear", weights=(0.6, 0.4))),
            SlotDecl(4, 5, Drop()),
            SlotDecl(5, 6, Merge(("math", "code"), "task_arithmetic", weights=(0.5, 0.3))),
            SlotDecl(6, 7, Take("code", layer=4)),
            SlotDecl(7, 8, Take("base", scale=0.5)),
        ),
    )
    ops = r.ops()
    assert len(ops) == 8 and ops[0] == ops[1] == Take("base")


def test_open_slots_and_search_block():
    r = parse("""
        model base = "b"
        model math = "m"
        slot 0..8 = take(base)
        slot 8..12 = ?
        slot 12 = choose(drop, take(math), merge(base, math, method=slerp, t=0.3))
        search { remove = 25%  population = 16  params <= 1.5e9  tasks = [math, "code"] }
    """)
    assert r.slots[1] == SlotDecl(8, 12, Open())
    assert r.slots[2].op == Choose((Drop(), Take("math"),
                                    Merge(("base", "math"), "slerp", t=0.3)))
    assert r.search == (
        Setting("remove", Percent(25.0)),
        Setting("population", 16),
        Setting("params", 1.5e9, op="<="),
        Setting("tasks", (Name("math"), "code")),
    )
    assert [d.start for d in r.open_slots()] == [8, 12]


def test_spans_point_at_the_argument():
    r = parse('model a = "x"\nslot 0 = merge(a, zz, weights=[1, 2])', "r.tr")
    span = r.slots[0].op.span_of("models.1")
    assert (span.line, span.col, span.end_col) == (2, 19, 21)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_fmt_round_trips_shipped_recipes(path):
    r = parse_file(path)
    text = format_recipe(r)
    assert parse(text) == r
    assert format_recipe(parse(text)) == text


def test_fmt_is_canonical_and_keeps_comments():
    messy = """# header comment

model   base="b"   # the base
dtype=float16
  # about slot zero
slot 0..3=take( base ,layer = 2 )
slot 3 = merge(base, base2, weights = [1, 2.50], normalize=false, method = task_arithmetic)
model base2 = "c"
search {population=4
# trailing
}
"""
    text = format_recipe(parse(messy))
    assert text == """# header comment

model base = "b"  # the base
model base2 = "c"
dtype = float16

# about slot zero
slot 0..3 = take(base, layer=2)
slot 3    = merge(base, base2, weights=[1.0, 2.5], method=task_arithmetic, normalize=false)

search {
  population = 4
}

# trailing
"""
    assert parse(text) == parse(messy)


@pytest.mark.parametrize("text", [
    "", "   \n# only a comment\n", "slot", "slot 0 =", "model = 3", "slot 0 = take()",
    "slot 0 = take(a, b)", "slot 0 = merge()", "slot 99999999999999999999 = drop",
    'model a = "unterminated', "slot 0 = take(a, layer=1.5)", "slot 0 = choose(?)",
    "slot 0 = merge(a, b, method=slerp)", "slot 0 = merge(a, method=ties)",
    "search { x = 1 } search { y = 2 }", "dtype = int8", "name = 3", "slot 0 = take(a, foo=1)",
    "slot 0 = take(ä)", "slot 0 = take(a)\x00", "slot 1..0 = drop", "base_model = \"a\"",
])
def test_bad_or_odd_text_gives_diagnostics_not_exceptions(text):
    try:
        r = parse(text, "x.tr")
    except RecipeError as exc:
        assert exc.diagnostics and all(d.span is not None for d in exc.diagnostics)
        assert "x.tr:" in str(exc)
    else:
        assert isinstance(r, Recipe)
        assert parse(format_recipe(r)) == r


def test_parsed_grammar_is_cached_and_a_bad_cache_is_rebuilt(tmp_path):
    """The LALR tables are kept in the user's cache; a corrupt cache file or a cache
    folder that cannot be made still parses, the same."""
    import os
    import subprocess
    import sys

    code = ("from recipe_compiler.language.parser import _lark, parse; "
            "print(parse('model base = \"b\"\\nslot 0 = drop\\n').slots); "
            "print(len(_lark().grammar.rule_defs))")  # the fuzz tests read the grammar

    def run(cache: Path) -> str:
        env = dict(os.environ, TAILOR_CACHE=str(cache))
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        return proc.stdout

    first = run(tmp_path / "cache")
    (cached,) = (tmp_path / "cache" / "grammar").iterdir()
    assert cached.suffix == ".lark" and cached.stat().st_size > 0
    assert run(tmp_path / "cache") == first  # from the cache
    cached.write_bytes(b"not a cache\n")
    assert run(tmp_path / "cache") == first
    (tmp_path / "afile").write_text("")
    assert run(tmp_path / "afile") == first  # no folder can be made under a file
