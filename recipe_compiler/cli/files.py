"""Small text outputs (recipes, configs) written safely.

Consumes: an output path, its text, `--force` and the command's inputs.
Produces: the file, whole or not at all; never over a directory or an input, and never over
an existing file without `--force`.
"""

from __future__ import annotations

import os
from pathlib import Path

from recipe_compiler.cli.console import UserError


def input_holding(path: Path, inputs) -> Path | None:
    """The input that `path` is, or lies inside (through links and `..` alike), if any."""
    target = path.resolve()
    for given in inputs:
        src = Path(given).resolve()
        if target == src or src in target.parents:
            return Path(given)
    return None


def check_new_file(path: Path, force: bool, inputs: list[Path] = ()) -> None:
    """Refuse to write `path` over a directory, an input, or (without --force) a file."""
    given = input_holding(path, inputs)
    if given is not None:
        where = "an input" if path.resolve() == given.resolve() else "inside an input"
        raise UserError(f"{path}: is {where} ({given}); write the output elsewhere")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name")
    if path.exists() and not force:
        raise UserError(f"{path}: already exists (use --force to replace it)")
    check_parent(path)


def check_parent(path: Path) -> None:
    """The nearest existing ancestor of `path` is a directory (else mkdir fails midway)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: cannot write under {parent}, which is not a directory")


def write_new(path: Path, text: str, force: bool, inputs: list[Path] = ()) -> None:
    """Write a small text output whole or not at all (temporary file, then rename)."""
    check_new_file(path, force, inputs)
    tmp = path.with_name(f".{path.name}.tailor-tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
