"""Argument values of the recipe language, read off the parse tree.

Consumes: Lark trees and tokens of values (numbers, strings, names, percentages, lists) and
of keyword arguments. Produces: Python values (int, float, bool, str, `Name`, `Percent`,
tuples), or None with a diagnostic through the walker's `err` (a huge number, an unknown
escape, a value of the wrong kind or out of range), so that every problem is reported.
"""

from __future__ import annotations

import math

from lark import Token, Tree

from recipe_compiler.language.recipe import ByGroup, Gradient, Name, Percent, Value, varies
from recipe_compiler.language.source import Span, did_you_mean

MAX_DIGITS = 18  # whole numbers up to 10**18: every real count; Python's int() caps at 4300
ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}  # what printer.py writes


class ArgumentReader:
    """Mixed into the tree walker, which provides `err(message, node, hint=None)` and
    `arg_spans` (the current call's argument spans)."""

    path: str
    arg_spans: dict

    def known_kwargs(self, where: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
        for key, (_, tree) in kwargs.items():
            if key not in allowed:
                self.err(f"{where} has no argument '{key}' ({did_you_mean(key, allowed)})",
                         self.arg_spans.get(key) or tree)

    def int_arg(self, kwargs: dict, key: str) -> int | None:
        if key not in kwargs:
            return None
        value, tree = kwargs[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.err(f"'{key}' must be a whole number >= 0, got {_show(value)}", tree)
            return None
        return value

    def float_arg(self, kwargs: dict, key: str, low: float, high: float | None,
                  open_low: bool = False) -> float | None:
        if key not in kwargs:
            return None
        value, tree = kwargs[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.err(f"'{key}' must be a number, got {_show(value)}", tree)
            return None
        too_low = value <= low if open_low else value < low
        if too_low or (high is not None and value > high):
            bound = f"in ({low:g}, {high:g}]" if open_low else (
                f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}")
            self.err(f"'{key}' must be {bound}, got {_show(value)}", tree)
            return None
        return float(value)

    def bool_arg(self, kwargs: dict, key: str) -> bool | None:
        if key not in kwargs:
            return None
        value, tree = kwargs[key]
        if not isinstance(value, bool):
            self.err(f"'{key}' must be true or false, got {_show(value)}", tree)
            return None
        return value

    def name_arg(self, kwargs: dict, key: str, known: tuple[str, ...]) -> str | None:
        if key not in kwargs:
            return None
        value, tree = kwargs[key]
        name = value.id if isinstance(value, Name) else value
        if name not in known:
            self.err(f"unknown {key} {_show(value)} ({did_you_mean(str(name), known)})", tree)
            return None
        return name

    def weights_arg(self, kwargs: dict, count: int) -> tuple[float, ...] | None:
        if "weights" not in kwargs:
            return None
        value, tree = kwargs["weights"]
        ok = isinstance(value, tuple) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        if not ok:
            self.err(f"'weights' must be a list of numbers, got {_show(value)}", tree)
            return None
        if len(value) != count:
            self.err(f"'weights' lists {len(value)} number(s) for {count} model(s)", tree)
            return None
        return tuple(float(v) for v in value)

    def varying_arg(self, kwargs: dict, p, count: int) -> Value | None:
        """A method parameter, which may vary: a gradient over the slot range, a by_group
        value per tensor group, and for a per-model parameter a list of one per model."""
        if p.name not in kwargs or p.kind not in ("weights", "float"):
            return self.param_arg(kwargs, p, count)
        per_model_list = p.kind == "float" and p.per_model and isinstance(kwargs[p.name][0],
                                                                            tuple)
        if not varies(kwargs[p.name][0]) and not per_model_list:
            return self.param_arg(kwargs, p, count)
        value, tree = kwargs[p.name]
        if p.kind == "float" and not isinstance(value, tuple):
            return value if self.varying_ok(p, value, tree, inside_list=False) else None
        if not isinstance(value, tuple) or (p.kind == "float" and not p.per_model):
            self.err(f"'{p.name}' must be a number, a gradient(...) or a by_group(...), "
                     f"got {_show(value)}", tree)
            return None
        if len(value) != count:
            self.err(f"'{p.name}' lists {len(value)} value(s) for {count} model(s)", tree)
            return None
        ok = all(self.varying_ok(p, v, tree, inside_list=True) for v in value)
        return tuple(v if isinstance(v, (Gradient, ByGroup)) else float(v) for v in value) \
            if ok else None

    def varying_ok(self, p, value: object, tree: Tree, inside_list: bool) -> bool:
        """Every number a varying value can take is a finite number in the parameter's range."""
        if isinstance(value, ByGroup):
            if inside_list and value.other is None:
                self.err(f"a by_group(...) inside '{p.name}' needs other=...: every tensor "
                         "needs a value for each model", tree)
                return False
            values = [v for _, v in value.groups] + ([value.other] if value.other is not None
                                                     else [])
            if any(isinstance(v, ByGroup) for v in values):
                self.err("by_group(...) values are numbers or gradients, not by_group", tree)
                return False
            return all(self.varying_ok(p, v, tree, inside_list) for v in values)
        points = value.points if isinstance(value, Gradient) else (value,)
        for x in points:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                self.err(f"'{p.name}' takes numbers, got {_show(x)}", tree)
                return False
            bound = p.bound() if hasattr(p, "bound") else None
            if bound is not None and not p.in_range(float(x)):
                self.err(f"'{p.name}' must be {bound}, got {_show(x)}", tree)
                return False
        return True

    def call(self, tree: Tree) -> Value:
        """`gradient(a, b, ...)` or `by_group(group=value, ..., other=value)`."""
        name, args = str(tree.children[0]), tree.children[1:]
        positional = [self.value(a.children[0]) for a in args if a.data == "value_arg"]
        keywords = [(str(a.children[0]), self.value(a.children[1]), a) for a in args
                    if a.data == "keyword"]
        if name == "gradient":
            ok = not keywords and len(positional) >= 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in positional)
            if not ok:
                self.err("gradient(...) takes two or more numbers, e.g. gradient(0, 0.5, 1)",
                         tree)
                return Gradient((0.0, 0.0))
            return Gradient(tuple(float(v) for v in positional))
        if name == "by_group":
            if positional or not keywords:
                self.err("by_group(...) takes group=value arguments, e.g. "
                         "by_group(self_attn=0.3, mlp=0.7, other=0.5)", tree)
                return ByGroup(())
            seen: set[str] = set()
            for key, _, node in keywords:
                if key in seen:
                    self.err(f"group '{key}' is given twice", node)
                seen.add(key)
            return ByGroup(tuple((k, v) for k, v, _ in keywords if k != "other"),
                           next((v for k, v, _ in keywords if k == "other"), None))
        self.err(f"unknown function '{name}' (known: gradient, by_group)", tree.children[0])
        return Gradient((0.0, 0.0))

    def value(self, tree: Tree) -> Value:
        kind = tree.data
        if kind == "list":
            return tuple(self.value(c) for c in tree.children)
        if kind == "call":
            return self.call(tree)
        tok = tree.children[0]
        text = str(tok)
        if kind == "string":
            return self.string(tok)
        if kind == "percent":
            return Percent(self.finite(text[:-1], tok))
        if kind == "number":
            return self.whole(tok) if text.lstrip("+-").isdigit() else self.finite(text, tok)
        if text in ("true", "false"):
            return text == "true"
        return Name(text)

    # Numbers and strings are checked here, not left to Python: float("1e999") is inf (which
    # no printer can write back), int() refuses over 4300 digits, and a string's escapes
    # must mean one thing (found by tests/test_fuzz.py).

    def whole(self, tok: Token) -> int:
        text = str(tok)
        if len(text.lstrip("+-0")) > MAX_DIGITS:
            self.err(f"number {_clip(text)} is too large (at most {MAX_DIGITS} digits)", tok)
            return 0
        return int(text)

    def finite(self, text: str, tok: Token) -> float:
        value = float(text)
        if not math.isfinite(value):
            self.err(f"number {_clip(text)} is out of range", tok)
            return 0.0
        return value

    def string(self, tok: Token) -> str:
        body = str(tok)[1:-1]
        if "\\" not in body:
            return body
        out, i = [], 0
        while i < len(body):
            c = body[i]
            if c == "\\":
                nxt = body[i + 1]  # STRING never ends in a lone backslash
                if nxt not in ESCAPES:
                    col = tok.column + 1 + i
                    self.err(f"unknown escape '\\{nxt}' in a string", Span(
                        self.path, tok.line, col, tok.line, col + 2),
                        hint="escapes are \\\\ \\\" \\n \\t \\r; write \\\\ "
                             "for a backslash (or use / in paths)")
                out.append(ESCAPES.get(nxt, nxt))
                i += 2
            else:
                out.append(c)
                i += 1
        return "".join(out)


def _clip(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-10:]}"


def _show(value: Value) -> str:
    if isinstance(value, Name):
        return value.id
    if isinstance(value, Percent):
        return f"{value.value:g}%"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, (Gradient, ByGroup)):
        from recipe_compiler.language.printer import format_value

        return format_value(value)
    return str(value).lower() if isinstance(value, bool) else repr(value)
