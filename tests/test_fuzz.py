"""Fuzzing the language: every input ends in a Recipe or in diagnostics, never a traceback.

Four generators, each checked against the same property (`outcome`):
- text drawn from the grammar itself (hypothesis' `from_lark` on the parser's own Lark object),
  with explicit strategies for the terminals so that tokens are separated and names, numbers
  and strings are drawn from values that matter (keywords, huge numbers, escapes, unicode);
- IR drawn directly (every kind of op, setting and value), printed and parsed back:
  `parse(format_recipe(r)) == compact_slots(r)` (adjacent equal slot declarations joined;
  every slot keeps its operation) and printing is idempotent;
- valid text mutated (tokens deleted, numbers swapped for huge ones, unknown names, unicode,
  truncation, empty files);
- recipes naming real model directories (the `family_root` fixture, broken and pickled ones
  included) sent through `load_and_check`, and through `lower` when they pass.

The fast tests run a fixed, derandomised set of examples (`FAST`, a few thousand in all,
well under 30 s); `pytest -m slow` runs `SLOW` random examples per test. Counts from the last
run are in docs/reliability.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import LarkStrategy, from_lark
from lark.grammar import NonTerminal

from recipe_compiler.compiler.check import check, load_and_check
from recipe_compiler.compiler.plan import lower
from recipe_compiler.language.parser import MAX_SLOTS, _lark, parse
from recipe_compiler.language.printer import compact_slots, format_recipe
from recipe_compiler.language.recipe import (
    DTYPES,
    MERGE_METHODS,
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
from recipe_compiler.language.source import Diagnostic, RecipeError, Source, render, render_all

ROOT = Path(__file__).parent.parent
SHIPPED = sorted((ROOT / "recipes").glob("*.tr")) + sorted((ROOT / "tests/golden").rglob("*.tr"))

FAST = {"grammar": 500, "unbounded": 30, "ir": 250, "mutate": 400, "check": 100}
SLOW = {k: v * 10 for k, v in FAST.items()}


def fast(name: str):
    return settings(max_examples=FAST[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def slow(name: str):
    return settings(max_examples=SLOW[name], deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# --- the property -----------------------------------------------------------------------


def outcome(text: str, path: str = "fuzz.tr") -> Recipe | list[Diagnostic]:
    """Parse `text`; a Recipe must round-trip, diagnostics must have spans and render."""
    try:
        recipe = parse(text, path)
    except RecipeError as exc:
        assert exc.diagnostics, "a RecipeError without diagnostics"
        for d in exc.diagnostics:
            assert d.span is not None and d.span.file == path, d
            assert d.severity == "error" and d.message
            rendered = render(d, exc.source)
            assert rendered.startswith(path)
        assert render_all(exc.diagnostics, Source(path, text))
        return exc.diagnostics
    assert_round_trips(recipe)
    return recipe


def assert_round_trips(recipe: Recipe) -> None:
    """fmt joins adjacent declarations of one operation into a range: the text parses back to
    the recipe so joined (the recipe itself when nothing joins), which gives every slot the
    same operation; printing that again changes nothing."""
    text = format_recipe(recipe)
    again = parse(text, "printed.tr")
    assert again == compact_slots(recipe), text
    assert again.ops() == recipe.ops()
    assert format_recipe(again) == text


# --- 1. text from the grammar -------------------------------------------------------------

KEYWORDS = ("model", "slot", "search", "drop", "take", "merge", "choose")
WORDS = ("base", "math", "code", "a", "linear", "slerp", "ties", "task_arithmetic", "true",
         "false", "weights", "method", "t", "density", "normalize", "layer", "scale", "name",
         "dtype", "base_model", "float32", "bfloat16", "float16", "int8", "population",
         "remove", "keep", "tasks", "x-y", "_", "qwen")
SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\t", "  ", " # note\n", "\r\n", "\f"])
HUGE = ("1e999", "-1e999", "9" * 30, "9" * 5000, "1" + "0" * 400 + ".5")


def _token(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A token followed by whitespace, so that `slot` and `0` never lex as `slot0`."""
    return st.tuples(strategy, SEPARATORS).map("".join)


def _regex(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True)


def _string_body() -> st.SearchStrategy[str]:
    pieces = st.sampled_from(["../zoo/base", "x", "é", "日本", "\\n", '\\"', "\\\\", "\\t",
                              "\\q", "\\x41", "\\u00e9", "\U0001f600", " ", "\r", "\x00"])
    return st.lists(pieces, max_size=4).map("".join)


def grammar_terminals(start: str = "start") -> dict[str, st.SearchStrategy[str]]:
    """Cheap explicit strategies (drawing from each terminal's regex costs ~10x more)."""
    terminals, rules, ignore = _lark().grammar.compile([start], ())
    explicit = {t.name: _token(st.just(t.pattern.value)) for t in terminals
                if t.pattern.type == "str"}
    explicit.update({
        "NAME": _token(st.sampled_from(WORDS + KEYWORDS + ("x" * 200, "é"))),
        "INT": _token(st.integers(0, 20).map(str) | st.sampled_from(HUGE[2:4] + ("65536",))),
        "NUMBER": _token(st.sampled_from(("0", "1", "0.5", "-1", "2.5e-3", "1e3", "+.5", "7")
                                         + HUGE)),
        "PERCENT": _token(st.sampled_from(("25%", "0%", "100.5%", "-3%", "0.00001%",
                                           "9" * 400 + "%"))),
        "STRING": _token(_string_body().map(lambda b: f'"{b}"')),
        "OPEN": _token(st.just("?")),
        "__ANON_0": st.just(".."),
        "COMMENT": st.sampled_from(["# c\n", "#\n", "# ünïcode ☃\n", "#" + "x" * 50 + "\n"]),
        "__IGNORE_0": st.sampled_from([" ", "\n", "\t", "\r\n", "\f", "\n\n"]),
    })
    used = {t.name for r in rules for t in r.expansion} | set(ignore)
    return {k: v for k, v in explicit.items() if k in used}


class _Bounded(LarkStrategy):
    """`from_lark` with a depth limit: past `max_depth` each rule takes its shortest expansion
    (the base case of a recursion). Unbounded, `choose(...)` and `[...]` nest until texts
    average 3000 characters and cost 100 ms each to draw, finding nothing more."""

    def __init__(self, start: str, max_depth: int = 5):
        super().__init__(_lark(), start, grammar_terminals(start), st.characters(codec="utf-8"))
        self.max_depth, self.depth = max_depth, 0

    def draw_symbol(self, data, symbol, draw_state) -> None:
        if isinstance(symbol, NonTerminal) and self.depth >= self.max_depth:
            strategy = self.nonterminal_strategies[symbol.name]
            self.nonterminal_strategies[symbol.name] = st.just(strategy.elements[0])
            try:
                return self._deeper(data, symbol, draw_state)
            finally:
                self.nonterminal_strategies[symbol.name] = strategy
        return self._deeper(data, symbol, draw_state)

    def _deeper(self, data, symbol, draw_state) -> None:
        self.depth += 1
        try:
            super().draw_symbol(data, symbol, draw_state)
        finally:
            self.depth -= 1


# Statements drawn one rule at a time, a few per text: `start: statement*` draws long lists.
STATEMENTS = st.one_of([_Bounded(rule)
                        for rule in ("model_decl", "slot_decl", "search_block", "setting")])
GRAMMAR_TEXT = st.lists(STATEMENTS, max_size=6).map("".join)
# The plain generator too, on the grammar as a whole (fewer examples: it is slow).
UNBOUNDED_TEXT = from_lark(_lark(), explicit=grammar_terminals())


@fast("grammar")
@given(GRAMMAR_TEXT)
def test_grammar_text_parses_or_diagnoses(text):
    outcome(text)


@pytest.mark.slow
@slow("grammar")
@given(GRAMMAR_TEXT)
def test_grammar_text_parses_or_diagnoses_slow(text):
    outcome(text)


@fast("unbounded")
@given(UNBOUNDED_TEXT)
def test_unbounded_grammar_text_parses_or_diagnoses(text):
    outcome(text)


@pytest.mark.slow
@slow("unbounded")
@given(UNBOUNDED_TEXT)
def test_unbounded_grammar_text_parses_or_diagnoses_slow(text):
    outcome(text)


def test_grammar_generator_reaches_valid_recipes():
    """The generator is worth something only if some of its texts are valid recipes."""
    found = {"ok": 0, "error": 0}

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(GRAMMAR_TEXT)
    def run(text):
        found["ok" if isinstance(outcome(text), Recipe) else "error"] += 1

    run()
    assert found["ok"] >= 10 and found["error"] >= 10, found


# --- 2. IR, printed and parsed back -------------------------------------------------------

NAMES = st.sampled_from(("base", "math", "code", "m-2", "_x")) | _regex(
    r"[A-Za-z_][A-Za-z0-9_\-]{0,8}").filter(lambda s: s not in KEYWORDS + ("true", "false"))
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
UNIT = st.floats(0.0, 1.0)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@st.composite
def merges(draw) -> Merge:
    method = draw(st.sampled_from(MERGE_METHODS))
    n = 2 if method == "slerp" else draw(st.integers(1, 4))
    models = tuple(draw(st.lists(NAMES, min_size=n, max_size=n, unique=True)))
    weights = None
    if method != "slerp" and (method != "linear" or draw(st.booleans())):
        weights = tuple(draw(st.lists(FLOATS, min_size=n, max_size=n)))
    return Merge(
        models=models, method=method, weights=weights,
        normalize=draw(st.none() | st.booleans()) if method != "slerp" else None,
        density=draw(st.none() | st.floats(0.0, 1.0, exclude_min=True))
        if method == "ties" else None,
        t=draw(UNIT) if method == "slerp" else None,
        layer=draw(st.none() | st.integers(0, 10**18 - 1)),
        scale=draw(st.none() | st.floats(0.0, 1e300)),
    )


TAKES = st.builds(Take, NAMES, st.none() | st.integers(0, 10**18 - 1),
                  st.none() | st.floats(0.0, allow_infinity=False))
CLOSED = st.one_of(st.just(Drop()), TAKES, merges())
OPS = st.one_of(CLOSED, st.just(Open()), st.lists(CLOSED, min_size=1, max_size=4)
                .map(lambda xs: Choose(tuple(xs))))
VALUES = st.recursive(
    st.one_of(TEXT, st.integers(-(10**18) + 1, 10**18 - 1), FLOATS, st.booleans(), NAMES.map(Name),
              st.floats(-1e6, 1e6).map(Percent)),
    lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=8)


@st.composite
def slot_decls(draw) -> tuple[SlotDecl, ...]:
    decls = []
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, MAX_SLOTS - 1))
        stop = draw(st.integers(start + 1, min(MAX_SLOTS, start + 40)))
        decls.append(SlotDecl(start, stop, draw(OPS)))
    return tuple(decls)


@st.composite
def recipes(draw) -> Recipe:
    names = draw(st.lists(NAMES, max_size=4, unique=True))
    search = draw(st.none() | st.lists(
        st.builds(Setting, NAMES, VALUES, st.sampled_from(("=", "<=", ">="))), max_size=5,
        unique_by=lambda s: s.key).map(tuple))
    return Recipe(
        models=tuple(ModelDecl(n, draw(TEXT)) for n in names),
        slots=draw(slot_decls()),
        name=draw(st.none() | TEXT),
        base_model=draw(st.none() | NAMES),
        dtype=draw(st.none() | st.sampled_from(DTYPES)),
        search=search,
    )


@fast("ir")
@given(recipes())
def test_printed_ir_parses_back_to_itself(recipe):
    assert_round_trips(recipe)


@pytest.mark.slow
@slow("ir")
@given(recipes())
def test_printed_ir_parses_back_to_itself_slow(recipe):
    assert_round_trips(recipe)


# --- 3. valid text, mutated -------------------------------------------------------------

TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_\-]*|[0-9.eE+\-]+%?|\.\.'
                   r'|<=|>=|\S')


def _seed_texts() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in SHIPPED]
    return texts + ['model a = "x"\nslot 0..4 = take(a)\n']


SEEDS = _seed_texts()


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS) | recipes().map(format_recipe))
    for _ in range(draw(st.integers(1, 3))):
        toks = [(m.start(), m.end()) for m in TOKEN.finditer(text)]
        kind = draw(st.sampled_from(("delete", "number", "name", "unicode", "truncate",
                                     "duplicate", "empty", "swap")))
        if kind == "empty" or not toks:
            return draw(st.sampled_from(("", "\n", " ", "# only a comment", "\ufeff")))
        a, b = toks[draw(st.integers(0, len(toks) - 1))]
        if kind == "delete":
            text = text[:a] + text[b:]
        elif kind == "number":
            text = text[:a] + draw(st.sampled_from(HUGE + ("-1", "0", "1.5", "65536", "7%",
                                                           "1e-400"))) + text[b:]
        elif kind == "name":
            text = text[:a] + draw(st.sampled_from(("qwen", "maths", "take", "?", "é",
                                                    "slot", "x" * 300))) + text[b:]
        elif kind == "unicode":
            text = text[:a] + draw(st.text(min_size=1, max_size=3)) + text[a:]
        elif kind == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        elif kind == "duplicate":
            text = text[:b] + text[a:]
        else:
            c, d = toks[draw(st.integers(0, len(toks) - 1))]
            if b <= c:
                text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
    return text


@fast("mutate")
@given(mutated())
def test_mutated_text_parses_or_diagnoses(text):
    outcome(text)


@pytest.mark.slow
@slow("mutate")
@given(mutated())
def test_mutated_text_parses_or_diagnoses_slow(text):
    outcome(text)


@pytest.mark.parametrize("text", [
    "", "\ufeff", "\x00", "slot 0 = take(a, layer=" + "9" * 5000 + ")",
    "slot " + "9" * 5000 + " = drop", "search { x = 1e999 }", "search { x = 1e-999 }",
    "search { p = " + "9" * 400 + "% }", 'model a = "C:\\models\\x"', 'model a = "\\u00e9"',
    'model a = "é\\n"', "slot 0 = take(a, scale=1e400)", 'name = "\\\\"\r\rmodel a = "x"',
    "# c\fslot 0 = drop", "slot 0..65537 = drop",
])
def test_edge_cases(text):
    outcome(text)


def test_escapes_mean_one_thing():
    r = parse('model a = "é\\n\\t\\"\\\\"')
    assert r.models[0].path == 'é\n\t"\\'
    with pytest.raises(RecipeError, match=r"unknown escape '\\m'"):
        parse('model a = "C:\\models"')
    with pytest.raises(RecipeError, match="out of range"):
        parse("search { x = 1e999 }")
    with pytest.raises(RecipeError, match="too large"):
        parse("slot 0 = take(a, layer=" + "9" * 5000 + ")")


# --- 4. check (and lower) against real model directories ----------------------------------

MODEL_DIRS = ("fam/base", "fam/math", "fam/code", "wide/base", "gpt/base", "pickled",
              "broken", "noconfig", "missing")


@st.composite
def checked_recipes(draw, root: Path) -> Recipe:
    """Recipes whose models are real directories, most of them usable, with fuzzed slots."""
    picks = draw(st.lists(st.sampled_from(MODEL_DIRS[:3]) | st.sampled_from(MODEL_DIRS),
                          min_size=1, max_size=3))
    names = ("base", "math", "code")[: len(picks)]
    models = tuple(ModelDecl(n, str(root / p)) for n, p in zip(names, picks))
    known = st.sampled_from(names) | st.just("qwen")
    take = st.builds(Take, known, st.none() | st.integers(0, 9),
                     st.none() | st.floats(0.0, 3.0))
    merge = st.builds(lambda ms, w, method, t: Merge(
        tuple(dict.fromkeys(ms)) if method != "slerp" else (ms[0], "math"), method,
        None if method == "slerp" else tuple(w[: len(dict.fromkeys(ms))]),
        t=t if method == "slerp" else None),
        st.lists(known, min_size=1, max_size=3), st.lists(st.floats(-2, 2), min_size=3,
                                                          max_size=3),
        st.sampled_from(MERGE_METHODS), UNIT)
    op = st.one_of(st.just(Drop()), take, merge, st.just(Open()))
    slots, start = [], 0
    for _ in range(draw(st.integers(0, 5))):
        start = draw(st.sampled_from((start, start, max(0, start - 1), start + 1)))
        stop = start + draw(st.integers(1, 4))
        slots.append(SlotDecl(start, stop, draw(op)))
        start = stop
    return Recipe(models, tuple(slots), base_model=draw(st.none() | st.sampled_from(names)),
                  dtype=draw(st.none() | st.sampled_from(DTYPES)),
                  path=str(root / "recipes" / "fuzz.tr"))


def _check_property(recipe: Recipe) -> None:
    models, diags = load_and_check(recipe, require_closed=True)
    for d in diags:
        assert d.message and d.severity in ("error", "warning", "note")
        assert render(d, None)
    assert check(recipe, models) is not None
    if not [d for d in diags if d.severity == "error"]:
        plan = lower(recipe, models, shard_size=40_000)
        assert plan.tasks and plan.shards


@pytest.fixture(scope="module")
def check_strategy(family_root):
    return checked_recipes(family_root)


def test_check_never_raises(check_strategy):
    @fast("check")
    @given(check_strategy)
    def run(recipe):
        _check_property(recipe)

    run()


@pytest.mark.slow
def test_check_never_raises_slow(check_strategy):
    @slow("check")
    @given(check_strategy)
    def run(recipe):
        _check_property(recipe)

    run()
