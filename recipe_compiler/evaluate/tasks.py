"""Task files: parse and validate them into immutable `Task` values.

Consumes a path to a task file and produces a `Task`:

* ``*.jsonl`` with one JSON object per line, either multiple-choice items
  ``{"context": str, "choices": [str, ...], "gold": int}`` (kind ``"mc"``) or generation items
  ``{"prompt": str, "answer": str}`` (kind ``"gen"``). Extra keys are ignored; blank lines are
  skipped; one file holds one kind only.
* ``*.txt``: a perplexity task (kind ``"ppl"``) whose single item is the whole text.

Every problem is reported as a `TaskError` naming ``file:line``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

TaskKind = Literal["mc", "gen", "ppl"]

MC_KEYS = ("context", "choices", "gold")
GEN_KEYS = ("prompt", "answer")


class TaskError(ValueError):
    """A task file is unreadable or malformed; the message starts with ``file:line``."""

    def __init__(self, path: Path | str, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class McItem:
    """One multiple-choice question: score each choice as a continuation of `context`."""

    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class GenItem:
    """One generation question: greedy output must equal `answer` after stripping whitespace."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Task:
    """A named list of items of one kind; `items` holds one text for a ``ppl`` task."""

    name: str
    kind: TaskKind
    items: tuple[McItem, ...] | tuple[GenItem, ...] | tuple[str, ...]
    path: Path


def load_task(path: str | Path) -> Task:
    """Read one task file; the kind comes from the extension and, for JSONL, the keys."""
    path = Path(path)
    text = _read_text(path)
    if path.suffix == ".txt":
        if not text.strip():
            raise TaskError(path, None, "perplexity text is empty")
        return Task(name=path.stem, kind="ppl", items=(text,), path=path)
    if path.suffix != ".jsonl":
        raise TaskError(path, None, "unknown task file type (expected .jsonl or .txt)")
    kind, items = _parse_jsonl(path, text)
    return Task(name=path.stem, kind=kind, items=tuple(items), path=path)


def load_tasks(paths: Iterable[str | Path]) -> list[Task]:
    """Load several task files; a directory contributes its ``*.jsonl`` and ``*.txt`` files."""
    tasks: list[Task] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".txt"))
            tasks.extend(load_task(f) for f in files)
        else:
            tasks.append(load_task(path))
    seen: dict[str, Path] = {}
    for task in tasks:
        if task.name in seen:
            raise TaskError(
                task.path, None, f"task name {task.name!r} also used by {seen[task.name]}"
            )
        seen[task.name] = task.path
    return tasks


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(path, None, f"not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise TaskError(path, None, f"cannot read: {exc.strerror or exc}") from exc


def _parse_jsonl(path: Path, text: str) -> tuple[TaskKind, list[McItem] | list[GenItem]]:
    kind: TaskKind | None = None
    items: list[Any] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(path, lineno, f"malformed JSON: {exc.msg}") from exc
        if not isinstance(obj, dict):
            raise TaskError(path, lineno, "expected a JSON object")
        line_kind = _item_kind(path, lineno, obj)
        if kind is not None and line_kind != kind:
            raise TaskError(
                path, lineno, f"mixed task kinds: a {line_kind!r} item after {kind!r} items"
            )
        kind = line_kind
        items.append(_mc_item(path, lineno, obj) if kind == "mc" else _gen_item(path, lineno, obj))
    if kind is None:
        raise TaskError(path, None, "no items")
    return kind, items


def _item_kind(path: Path, lineno: int, obj: dict[str, Any]) -> TaskKind:
    is_mc = any(k in obj for k in MC_KEYS)
    is_gen = any(k in obj for k in GEN_KEYS)
    if is_mc and is_gen:
        raise TaskError(path, lineno, "item mixes multiple-choice and generation keys")
    if not (is_mc or is_gen):
        raise TaskError(
            path, lineno, f"expected keys {list(MC_KEYS)} or {list(GEN_KEYS)}, got {sorted(obj)}"
        )
    wanted = MC_KEYS if is_mc else GEN_KEYS
    missing = [k for k in wanted if k not in obj]
    if missing:
        raise TaskError(path, lineno, f"missing key(s) {missing}")
    return "mc" if is_mc else "gen"


def _mc_item(path: Path, lineno: int, obj: dict[str, Any]) -> McItem:
    context, choices, gold = obj["context"], obj["choices"], obj["gold"]
    if not isinstance(context, str):
        raise TaskError(path, lineno, "'context' must be a string")
    if not isinstance(choices, list) or not choices:
        raise TaskError(path, lineno, "'choices' must be a non-empty list of strings")
    if not all(isinstance(c, str) and c for c in choices):
        # An empty choice has no tokens to score and zero length for acc_norm.
        raise TaskError(path, lineno, "every choice must be a non-empty string")
    if isinstance(gold, bool) or not isinstance(gold, int):
        raise TaskError(path, lineno, "'gold' must be an integer index into 'choices'")
    if not 0 <= gold < len(choices):
        raise TaskError(path, lineno, f"'gold' {gold} out of range for {len(choices)} choices")
    return McItem(context=context, choices=tuple(choices), gold=gold)


def _gen_item(path: Path, lineno: int, obj: dict[str, Any]) -> GenItem:
    prompt, answer = obj["prompt"], obj["answer"]
    if not isinstance(prompt, str) or not prompt:
        raise TaskError(path, lineno, "'prompt' must be a non-empty string")
    if not isinstance(answer, str):
        raise TaskError(path, lineno, "'answer' must be a string")
    if "\n" in answer.strip():
        # Generation stops at the first newline, so such an answer could never match.
        raise TaskError(path, lineno, "'answer' must not contain a newline")
    return GenItem(prompt=prompt, answer=answer)
