"""Writing a benchmark's table into the docs, between markers, so every figure in the docs
comes from the script that measured it.

    write_block(ROOT / "docs" / "speed.md", "evolve", text, heading="## Search speed")

replaces what lies between `<!-- evolve:begin -->` and `<!-- evolve:end -->` with `text`;
where the markers are missing, the block is appended under `heading` (or, with
`heading=None`, that is an error: the document must say where its table goes).
"""

from __future__ import annotations

from pathlib import Path


def write_block(path: Path, name: str, text: str, heading: str | None = "") -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc.split(begin)[0] + block + doc.split(end, 1)[1]
    elif heading is None:
        raise SystemExit(f"{path} lacks the {begin} / {end} markers")
    else:
        doc = doc.rstrip("\n") + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    path.write_text(doc)
