"""Comments of a recipe, attached to the statements they describe, so `fmt` keeps them.

Consumes: the comment tokens the lexer saw, each statement's anchor and tree, the text.
Produces: `(anchor, lines above, trailing comment)` triples, plus a header and a footer.
"""

from __future__ import annotations

from lark import Token, Tree


def _attach_comments(tokens: list[Token], anchors: list[tuple[str, Tree]], text: str):
    """Give each comment to the statement it sits above or at the end of."""
    lines = text.split("\n")  # as Lark counts lines: a form feed or \r is not a line break
    out: list[tuple[str, list[str], str | None]] = [(a, [], None) for a, _ in anchors]
    header: list[str] = []
    footer: list[str] = []
    starts = [t.meta.line for _, t in anchors]
    ends = [t.meta.end_line for _, t in anchors]
    for tok in tokens:
        body = str(tok).rstrip()
        own_line = lines[tok.line - 1][: tok.column - 1].strip() == ""
        if not own_line:
            # At the end of a statement's last line, else of its first (`search {  # c`):
            # where the printer puts it back, so that fmt is stable.
            i = max((k for k, e in enumerate(ends) if e == tok.line), default=None)
            if i is None:
                i = next((k for k, s in enumerate(starts) if s == tok.line), None)
            if i is not None:
                out[i] = (out[i][0], out[i][1], body)
                continue
        nxt = next((k for k, s in enumerate(starts) if s > tok.line), None)
        if nxt is None:
            footer.append(body)
        elif nxt == 0 and _blank_line_between(lines, tok.line, starts[0]):
            header.append(body)
        else:
            out[nxt][1].append(body)
    result = [("header", tuple(header), None)] if header else []
    result += [(a, tuple(above), tr) for a, above, tr in out if above or tr]
    if footer:
        result.append(("footer", tuple(footer), None))
    return tuple(result)


def _blank_line_between(lines: list[str], after: int, before: int) -> bool:
    return any(not lines[i - 1].strip() for i in range(after + 1, before))
