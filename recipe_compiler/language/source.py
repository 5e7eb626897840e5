"""Source positions, diagnostics and the one error renderer.

Consumes: recipe text and positions found by the parser or the checker.
Produces: `Diagnostic`s and their rendering as

    recipes/x.tr:3:14: error: unknown model 'qwen' (known: base, math)
      slot 3 = take(qwen)
                    ^~~~

Every stage reports user-caused problems as diagnostics; `RecipeError` carries a
list of them so that all problems found are reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def whole_file(file: str) -> Span:
        return Span(file, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    message: str
    span: Span | None = None
    hint: str | None = None

    def sort_key(self) -> tuple:
        s = self.span
        return (s.file, s.line, s.col) if s else ("", 0, 0)


@dataclass(frozen=True, slots=True)
class Source:
    """The text of one recipe file, kept so diagnostics can quote it."""

    path: str
    text: str = field(repr=False)

    def line(self, number: int) -> str | None:
        lines = self.text.split("\n")  # as the parser counts lines (not at \f or a lone \r)
        return lines[number - 1] if 1 <= number <= len(lines) else None


class RecipeError(Exception):
    """One or more user-caused problems; the CLI renders them and exits 1."""

    def __init__(self, diagnostics: list[Diagnostic], source: Source | None = None):
        self.diagnostics = sorted(diagnostics, key=Diagnostic.sort_key)
        self.source = source
        super().__init__(render_all(self.diagnostics, source))


def error(message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic("error", message, span, hint)


def warning(message: str, span: Span | None = None, hint: str | None = None) -> Diagnostic:
    return Diagnostic("warning", message, span, hint)


def render(diag: Diagnostic, source: Source | None = None) -> str:
    """Render one diagnostic: a `file:line:col:` header, the source line and a caret."""
    span = diag.span
    if span is None:
        head = f"tailorc: {diag.severity}: {diag.message}"
    elif span.line == 0:
        head = f"{span.file}: {diag.severity}: {diag.message}"
    else:
        head = f"{span.file}:{span.line}:{span.col}: {diag.severity}: {diag.message}"
    lines = [head]
    text = source.line(span.line) if (source and span and span.line) else None
    if text is not None:
        width = span.end_col - span.col if span.end_line == span.line else len(text) - span.col + 1
        width = max(1, width)
        lines.append(f"  {text}")
        lines.append("  " + " " * (span.col - 1) + "^" + "~" * (width - 1))
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def render_all(diags: list[Diagnostic], source: Source | None = None) -> str:
    return "\n".join(render(d, source) for d in diags)


def did_you_mean(word: str, known: list[str] | tuple[str, ...]) -> str:
    """A `(known: a, b)` or `did you mean 'x'?` suffix for unknown-name messages."""
    import difflib

    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"known: {', '.join(known)}" if known else "none are declared"


def first_line(exc: BaseException) -> str:
    """An exception from a library as one line of a user-facing message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
