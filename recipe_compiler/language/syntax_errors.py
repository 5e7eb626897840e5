"""Syntax errors of the recipe language as diagnostics a person can act on.

Consumes: Lark's `UnexpectedInput` and the recipe text. Produces: one `Diagnostic` with the
position, what was found, what was expected in words ('a number', "')'"), and a hint for
the usual mistakes (mergekit's `layer_range` or `slices` written into a recipe, ':' for
'..').
"""

from __future__ import annotations

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from recipe_compiler.language.source import Diagnostic, Span, error

_READABLE = {
    "NAME": "a name", "INT": "a whole number", "NUMBER": "a number", "PERCENT": "a percentage",
    "STRING": 'a quoted string', "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='", "DROP": "'drop'",
    "OPEN": "'?'", "TAKE": "'take'", "MERGE": "'merge'", "CHOOSE": "'choose'",
    "MODEL": "'model'", "SLOT": "'slot'", "SEARCH": "'search'", "__ANON_0": "'..'",
    "LESSTHAN": "'<='", "MORETHAN": "'>='", "$END": "end of file",
}


def _expected(names: set[str]) -> str:
    words = sorted({_READABLE.get(n, repr(n.strip('"').lower())) for n in names})
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def _syntax_error(exc: UnexpectedInput, path: str, text: str) -> Diagnostic:
    line, col = max(exc.line, 1), max(exc.column, 1)
    if isinstance(exc, UnexpectedCharacters):
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        return error(f"unexpected character {char!r}", Span(path, line, col, line, col + 1),
                     hint=_syntax_hint(char))
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        return error(
            f"unexpected end of file; expected {_expected(set(exc.expected))}",
            Span(path, line, col, line, col + 1),
        )
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    end = tok.end_column if tok.end_line == tok.line else col + 1
    return error(
        f"unexpected {tok.value!r}; expected {_expected(set(exc.expected))}",
        Span(path, line, col, line, end or col + 1),
        hint=_syntax_hint(tok.value),
    )


def _syntax_hint(found: str) -> str | None:
    if found in {"layers", "layer_range", "slice", "slices"}:
        return "slots are written 'slot 0..4 = take(base)' (half-open, like layer_range)"
    if found == ":":
        return "ranges are written with '..', e.g. 'slot 0..4 = take(base)'"
    return None
