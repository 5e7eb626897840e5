"""Parse recipe text into the IR.

Consumes: `.tr` text (grammar/tailor.lark).
Produces: a `Recipe`, or raises `RecipeError` with every syntax and argument problem found.

Two steps, as Lark recommends: Lark builds a parse tree with positions, then plain
functions here walk it into frozen dataclasses. Checks that need no model files (argument
types, known methods, duplicate settings) are done while walking and reported as
diagnostics; checks against the models live in check.py.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Token, Tree
from lark.exceptions import ConfigurationError, UnexpectedInput

from recipe_compiler import methods
from recipe_compiler.language.arguments import ArgumentReader, _show
from recipe_compiler.language.comments import _attach_comments
from recipe_compiler.language.recipe import (
    DTYPES,
    MERGE_FIELDS,
    MERGE_METHODS,
    PARTS,
    Choose,
    Drop,
    Merge,
    ModelDecl,
    Name,
    Op,
    Open,
    PartDecl,
    Recipe,
    Setting,
    SlotDecl,
    Take,
    Value,
    op_has_gradient,
)
from recipe_compiler.language.source import (
    Diagnostic,
    RecipeError,
    Source,
    Span,
    did_you_mean,
    error,
)
from recipe_compiler.language.syntax_errors import _syntax_error
from recipe_compiler.methods import Method, Param
from recipe_compiler.textfile import FileProblem, read_regular

TOP_SETTINGS = ("name", "base_model", "dtype")
MAX_RECIPE_BYTES = 16 * 2**20  # a recipe is a page of text; this is a typo (a model file)
MAX_SLOTS = 1 << 16  # far beyond any real model; keeps a typo from allocating billions

_GRAMMAR_PLACES = (
    Path(__file__).parent.parent / "grammar" / "tailor.lark",  # installed wheel
    Path(__file__).parent.parent.parent / "grammar" / "tailor.lark",  # source checkout
)

_local = threading.local()


def _on_comment(token: Token) -> Token:
    _local.comments.append(token)
    return token


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """The recipe parser. Building Lark's LALR tables took about 45 ms of every tailorc
    command (loading them takes 5), so they are kept in the user's cache
    (`default_cache()`), keyed by the grammar's text and the Lark and Python versions (Lark
    checks the key again on load and rebuilds on any mismatch or unreadable file). The
    cache is written under a temporary name and renamed, so a parallel process never reads
    half of it."""
    text = next(p for p in _GRAMMAR_PLACES if p.exists()).read_text()
    options = dict(parser="lalr", propagate_positions=True, maybe_placeholders=False,
                   lexer_callbacks={"COMMENT": _on_comment})
    cached = _grammar_cache(text)
    if cached is None:
        return Lark(text, **options)
    # cache_grammar: the loaded parser keeps `.grammar` too (the fuzz tests generate
    # recipes from it); Lark before 1.2 has no such option, and then no cache is used
    options["cache_grammar"] = True
    fresh = None if cached.exists() else cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    try:
        parser = Lark(text, cache=str(fresh or cached), **options)
    except (ConfigurationError, TypeError):
        del options["cache_grammar"]
        return Lark(text, **options)
    if fresh is not None:
        try:
            os.replace(fresh, cached)
        except OSError:
            fresh.unlink(missing_ok=True)
    return parser


def _grammar_cache(text: str) -> Path | None:
    """Where the parsed grammar is cached; None when the cache folder cannot be made."""
    from recipe_compiler import default_cache

    key = hashlib.sha256(f"{text}\0{lark.__version__}\0{sys.version_info[:2]}\0grammar"
                         .encode())
    folder = default_cache() / "grammar"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"tailor-{key.hexdigest()[:20]}.lark"


def read_source(path: str | Path) -> Source:
    """A recipe file's text; an unreadable file is a user error, not a traceback."""
    try:
        text = read_regular(path, MAX_RECIPE_BYTES).decode("utf-8")
    except (FileProblem, UnicodeDecodeError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else \
            str(exc).removeprefix("cannot read: ")
        diag = error(f"cannot read recipe: {reason}", Span.whole_file(str(path)))
        raise RecipeError([diag]) from None
    return Source(str(path), text)


def parse_file(path: str | Path) -> Recipe:
    """Parse a recipe file; an unreadable file is a user error, not a traceback."""
    source = read_source(path)
    return parse(source.text, source.path)


def parse(text: str, path: str = "<recipe>") -> Recipe:
    recipe, diags = parse_partial(text, path)
    if diags:
        raise RecipeError(diags, Source(path, text))
    return recipe


def parse_partial(text: str, path: str = "<recipe>") -> tuple[Recipe, list[Diagnostic]]:
    """The recipe and its argument problems; only a syntax error raises (no tree, no recipe).

    An operation with a bad argument keeps the rest of its meaning (the bad value is left
    unset), so the checker can still report every other problem in the same run.
    """
    _local.comments = []
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise RecipeError([_syntax_error(exc, path, text)], Source(path, text)) from None
    comments = list(_local.comments)
    builder = _Builder(path)
    recipe = builder.recipe(tree, comments, text)
    return recipe, builder.diags


# --- tree -> IR ----------------------------------------------------------------------


def _span(path: str, node: Tree | Token) -> Span:
    if isinstance(node, Token):
        return Span(path, node.line, node.column, node.end_line, node.end_column)
    m = node.meta
    return Span(path, m.line, m.column, m.end_line, m.end_column)


class _Builder(ArgumentReader):
    """Walks the parse tree; collects diagnostics instead of raising on the first one."""

    def __init__(self, path: str):
        self.path = path
        self.diags: list[Diagnostic] = []

    def err(self, msg: str, node: Tree | Token | Span, hint: str | None = None) -> None:
        span = node if isinstance(node, Span) else _span(self.path, node)
        self.diags.append(error(msg, span, hint))

    # statements

    def recipe(self, tree: Tree, comment_tokens: list[Token], text: str) -> Recipe:
        models: list[ModelDecl] = []
        slots: list[SlotDecl] = []
        parts: list[PartDecl] = []
        top: dict[str, Setting] = {}
        search: list[Setting] | None = None
        anchors: list[tuple[str, Tree]] = []
        for stmt in tree.children:
            kind = stmt.data
            if kind == "model_decl":
                decl = self.model_decl(stmt)
                if any(m.name == decl.name for m in models):
                    self.err(f"model '{decl.name}' is declared twice", stmt.children[0])
                models.append(decl)
                anchors.append((f"model:{decl.name}", stmt))
            elif kind == "slot_decl":
                decl = self.slot_decl(stmt)
                slots.append(decl)
                anchors.append((f"slot:{decl.start}", stmt))
            elif kind == "part_decl":
                part = self.part_decl(stmt, parts)
                parts.append(part)
                anchors.append((f"part:{part.part}", stmt))
            elif kind == "setting":
                setting = self.setting(stmt)
                self.top_setting(setting, top, stmt)
                anchors.append((setting.key, stmt))
            else:
                if search is not None:
                    self.err("the search block is given twice", stmt)
                search = self.search_block(stmt, anchors)
                anchors.append(("search", stmt))
        return Recipe(
            models=tuple(models),
            slots=tuple(slots),
            name=self._top_value(top, "name", str),
            base_model=self._top_value(top, "base_model", Name),
            dtype=self._top_value(top, "dtype", Name),
            search=tuple(search) if search is not None else None,
            parts=tuple(sorted(parts, key=lambda d: PARTS.index(d.part))),
            path=self.path,
            settings_spans=tuple((k, s.value_span) for k, s in top.items() if s.value_span),
            comments=_attach_comments(comment_tokens, anchors, text),
        )

    def model_decl(self, tree: Tree) -> ModelDecl:
        name_tok, path_tok = tree.children
        return ModelDecl(
            name=str(name_tok),
            path=self.string(path_tok),
            span=_span(self.path, name_tok),
            path_span=_span(self.path, path_tok),
        )

    def part_decl(self, tree: Tree, parts: list[PartDecl]) -> PartDecl:
        name_tree, op_tree = tree.children
        part = str(name_tree.children[0])
        if any(p.part == part for p in parts):
            self.err(f"'{part}' is set twice", name_tree)
        op = self.op(op_tree)
        if not isinstance(op, (Take, Merge)):
            self.err(f"'{part}' takes take(...) or merge(...), not '{_op_word(op)}'", op_tree,
                     hint="the search fills layer slots only")
        elif op.layer is not None or op.scale is not None:
            key = "layer" if op.layer is not None else "scale"
            self.err(f"'{part}' has no layers: {key}= applies to slots only", op.span_of(key))
        elif isinstance(op, Merge) and op_has_gradient(op):
            self.err(f"a gradient varies over a slot range; '{part}' takes one value",
                     op_tree)
        return PartDecl(part, op, span=_span(self.path, tree))

    def slot_decl(self, tree: Tree) -> SlotDecl:
        range_tree, op_tree = tree.children
        bounds = [self.whole(t) for t in range_tree.children if t.type == "INT"]
        if len(range_tree.children) == 2:  # `slot a..`: to the base model's last layer
            return SlotDecl(bounds[0], None, self.op(op_tree), span=_span(self.path, tree))
        start, stop = (bounds[0], bounds[0] + 1) if len(bounds) == 1 else bounds
        if stop > MAX_SLOTS:
            self.err(f"slot {stop - 1} is beyond the limit of {MAX_SLOTS} slots", range_tree)
            start, stop = min(start, MAX_SLOTS), min(stop, MAX_SLOTS)
        if stop <= start:
            self.err(
                f"empty slot range {start}..{stop}",
                range_tree,
                hint=f"ranges are half-open: 'slot {start}..{start + 1}' is slot {start} alone",
            )
        return SlotDecl(start, stop, self.op(op_tree), span=_span(self.path, tree))

    def setting(self, tree: Tree) -> Setting:
        key_tok, op_tree, value_tree = tree.children
        return Setting(
            key=str(key_tok),
            value=self.value(value_tree),
            op=str(op_tree.children[0]),
            span=_span(self.path, key_tok),
            value_span=_span(self.path, value_tree),
        )

    def top_setting(self, setting: Setting, top: dict[str, Setting], tree: Tree) -> None:
        key = setting.key
        if key not in TOP_SETTINGS:
            hint = "search settings go inside 'search { ... }'"
            self.err(f"unknown setting '{key}' ({did_you_mean(key, TOP_SETTINGS)})",
                     tree.children[0], hint=hint)
        elif key in top:
            self.err(f"'{key}' is set twice", tree.children[0])
        elif setting.op != "=":
            self.err(f"'{key}' takes '=', not '{setting.op}'", tree.children[1])
        else:
            top[key] = setting
            self._check_top(setting)

    def _check_top(self, s: Setting) -> None:
        span = s.value_span or s.span
        assert span is not None
        if s.key == "name" and not isinstance(s.value, str):
            self.err("'name' must be a quoted string", span)
        elif s.key == "base_model" and not isinstance(s.value, Name):
            self.err("'base_model' must be the name of a declared model", span)
        elif s.key == "dtype":
            v = s.value.id if isinstance(s.value, Name) else s.value
            if v not in DTYPES:
                self.err(f"unknown dtype {_show(s.value)} (known: {', '.join(DTYPES)})", span)

    @staticmethod
    def _top_value(top: dict[str, Setting], key: str, kind: type) -> str | None:
        s = top.get(key)
        if s is None or not isinstance(s.value, kind):
            return None
        value = s.value.id if isinstance(s.value, Name) else s.value
        if key == "dtype" and value not in DTYPES:
            return None
        return value

    def search_block(self, tree: Tree, anchors: list[tuple[str, Tree]]) -> list[Setting]:
        settings: list[Setting] = []
        for child in tree.children:
            s = self.setting(child)
            if any(prev.key == s.key for prev in settings):
                self.err(f"search setting '{s.key}' is set twice", child.children[0])
            settings.append(s)
            anchors.append((f"search:{s.key}", child))
        return settings

    # operations

    def op(self, tree: Tree) -> Op:
        spans = (("op", _span(self.path, tree)),)
        if tree.data == "drop":
            return Drop(spans=spans)
        if tree.data == "open":
            return Open(spans=spans)
        if tree.data == "choose":
            options = tuple(self.op(t) for t in tree.children[1:])
            for t, o in zip(tree.children[1:], options):
                if isinstance(o, (Open, Choose)):
                    self.err("choose(...) lists concrete operations, not '?' or choose", t)
            return Choose(options, spans=spans)
        keyword, args = tree.children
        positional, kwargs, arg_spans = self.args(args)
        spans = spans + tuple(arg_spans.items())
        self.arg_spans = arg_spans
        if tree.data == "take":
            return self.take(tree, positional, kwargs, spans)
        return self.merge(tree, positional, kwargs, spans)

    def args(self, tree: Tree) -> tuple[list[Token], dict[str, tuple[Value, Tree]], dict]:
        positional: list[Token] = []
        kwargs: dict[str, tuple[Value, Tree]] = {}
        spans: dict[str, Span] = {}
        for arg in tree.children:
            if arg.data == "positional":
                tok = arg.children[0]
                if kwargs:
                    self.err(f"model '{tok}' is listed after keyword arguments", tok)
                spans[f"models.{len(positional)}"] = _span(self.path, tok)
                positional.append(tok)
            else:
                key_tok, value_tree = arg.children
                if str(key_tok) in kwargs:
                    self.err(f"argument '{key_tok}' is given twice", key_tok)
                kwargs[str(key_tok)] = (self.value(value_tree), value_tree)
                spans[str(key_tok)] = _span(self.path, arg)
        return positional, kwargs, spans

    def take(self, tree: Tree, models: list[Token], kwargs: dict, spans: tuple) -> Take:
        if len(models) != 1:
            got = ", ".join(map(str, models)) or "none"
            self.err(f"take(...) takes exactly one model, got {got}", tree,
                     hint="to combine several models use merge(...)")
        self.known_kwargs("take", kwargs, ("layer", "scale"))
        return Take(
            model=str(models[0]) if models else "",
            layer=self.int_arg(kwargs, "layer"),
            scale=self.float_arg(kwargs, "scale", 0.0, None),
            spans=spans,
        )

    def merge(self, tree: Tree, models: list[Token], kwargs: dict, spans: tuple) -> Merge:
        names = tuple(str(m) for m in models)
        for i, m in enumerate(models):
            if str(m) in names[:i]:
                self.err(f"model '{m}' is listed twice in merge(...)", m)
        if not names:
            self.err("merge(...) needs at least one model", tree)
        method = methods.get(self.name_arg(kwargs, "method", MERGE_METHODS) or methods.DEFAULT)
        self.known_kwargs(f"merge(method={method.name})", kwargs,
                          tuple(p.name for p in method.params) + ("method", "layer", "scale"))
        values = {p.name: self.varying_arg(kwargs, p, len(names)) for p in method.params}
        self.merge_needs(tree, method, kwargs, len(names))
        fields = {k: values.pop(k, None) for k in MERGE_FIELDS}
        return Merge(
            models=names,
            method=method.name,
            **fields,
            layer=self.int_arg(kwargs, "layer"),
            scale=self.float_arg(kwargs, "scale", 0.0, None),
            params=tuple((k, v) for k, v in values.items() if v is not None),
            spans=spans,
        )

    def merge_needs(self, tree: Tree, method: Method, kwargs: dict, count: int) -> None:
        """The method's model count and required arguments."""
        low, high = method.min_models, method.max_models
        if low == high and count != low:
            self.err(f"{method.name} merges exactly {_NUMBERS.get(low, low)} models, got {count}",
                     tree)
        elif count and (count < low or (high is not None and count > high)):
            self.err(f"{method.name} merges {low} to {high or 'any number of'} models, "
                     f"got {count}", tree)
        for p in method.params:
            if not p.required or p.name in kwargs:
                continue
            if p.kind == "weights":
                self.err(f"merge(method={method.name}) needs weights=[...], one per model", tree)
            else:
                between = f" between {p.low:g} and {p.high:g}" if p.high is not None else ""
                self.err(f"merge(method={method.name}) needs {p.name}=...{between}", tree)

    def param_arg(self, kwargs: dict, p: Param, count: int) -> Value | None:
        if p.kind == "weights":
            return self.weights_arg(kwargs, count)
        if p.kind == "bool":
            return self.bool_arg(kwargs, p.name)
        if p.kind == "int":
            return self.int_arg(kwargs, p.name)
        return self.float_arg(kwargs, p.name, p.low if p.low is not None else -math.inf,
                              p.high, open_low=p.open_low)

_NUMBERS = {1: "one", 2: "two", 3: "three"}


def _op_word(op: Op) -> str:
    return {Drop: "drop", Open: "?", Choose: "choose(...)"}.get(type(op), "?")
