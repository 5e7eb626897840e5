"""Task files: parse and validate them into immutable `Task` values.

Consumes a path to a task file and produces a `Task`:

* ``*.jsonl`` with one JSON object per line, either multiple-choice items
  ``{"context": str, "choices": [str, ...], "gold": int}`` (kind ``"mc"``) or generation items
  ``{"prompt": str, "answer": str}`` (kind ``"gen"``). Extra keys are ignored; blank lines are
  skipped; one file holds one kind only.
* ``*.txt``: a perplexity task (kind ``"ppl"``) whose single item is the whole text.
* ``*.yaml`` / ``*.yml``: an lm-eval-harness task YAML with local data, made into one of the
  above by lm-eval itself (`harness_tasks.py`; needs ``pip install '.[harness]'``).

A directory stands for its ``*.jsonl`` and ``*.txt`` files and the YAMLs among its ``*.yaml``
files that define a task (not dot files; not recursively).
Only regular files (or links to them) of at most `MAX_TASK_BYTES` are read, and nothing else is
opened in a way that could block (a FIFO would wait for a writer forever). Text is UTF-8, a
leading byte-order mark allowed; JSON is strict (no NaN or Infinity, no duplicate item keys);
strings must be valid Unicode (no lone surrogates, which JSON escapes can produce); ``gold`` is
a real integer (not a boolean, a float or a 5000-digit number) indexing ``choices``.

Every problem is reported as a `TaskError` naming ``file:line`` (``file`` alone when it is about
the whole file): a directory with no tasks, an empty file, two tasks with one name.
"""

from __future__ import annotations

import codecs
import json
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from recipe_compiler.textfile import FileProblem, read_regular

TaskKind = Literal["mc", "gen", "ppl"]

MC_KEYS = ("context", "choices", "gold")
GEN_KEYS = ("prompt", "answer")
TASK_SUFFIXES = (".jsonl", ".txt", ".yaml", ".yml")

# Larger files are refused before being read: far more than any evaluation could use.
MAX_TASK_BYTES = 128 * 2**20
# A JSON integer with more characters than this is kept unconverted (see `_HugeInt`).
MAX_INT_CHARS = 20


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


def load_task(path: str | Path, split: str | None = None) -> Task:
    """Read one task file; the kind comes from the extension and, for JSONL, the keys.
    `split="validation"`: an lm-eval YAML's validation documents where it has them (what a
    search tunes on); by default lm-eval's own evaluation split."""
    path = Path(path)
    if path.suffix not in TASK_SUFFIXES:
        raise TaskError(path, None, "unknown task file type (expected .jsonl, .txt, or an "
                        "lm-eval .yaml)")
    name = path.stem
    if not _is_unicode(name):
        raise TaskError(path, None, "the file name, which names the task, is not valid UTF-8")
    text = read_task_text(path)
    if path.suffix in (".yaml", ".yml"):
        from recipe_compiler.evaluate.harness_tasks import load_harness_task

        return load_harness_task(path, text, split)
    if path.suffix == ".txt":
        if not text.strip():
            raise TaskError(path, None, "perplexity text is empty")
        return Task(name=name, kind="ppl", items=(text,), path=path)
    kind, items = _parse_jsonl(path, text)
    return Task(name=name, kind=kind, items=tuple(items), path=path)


def load_tasks(paths: Iterable[str | Path], split: str | None = None) -> list[Task]:
    """Load several task files; a directory contributes its ``*.jsonl`` and ``*.txt`` files
    and its lm-eval task YAMLs."""
    tasks = [load_task(f, split) for path in map(Path, paths) for f in task_files(path)]
    seen: dict[str, Path] = {}
    for task in tasks:
        if task.name in seen:
            raise TaskError(
                task.path, None, f"task name {task.name!r} also used by {seen[task.name]}"
            )
        seen[task.name] = task.path
    return tasks


def read_task_text(path: Path) -> str:
    """The text of a regular file of at most `MAX_TASK_BYTES`, decoded as UTF-8 (a leading
    byte-order mark is dropped). Anything else is a `TaskError`, raised without blocking: a
    FIFO or device is refused before a byte is read from it."""
    data = _read_regular_file(path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise TaskError(
            path, 1, "UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8"
        )
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise TaskError(
            path,
            line,
            f"not UTF-8 text: byte 0x{data[at]:02x} at byte {column} of the line "
            f"({exc.reason}); save the file as UTF-8",
        ) from None


def task_files(path: Path) -> list[Path]:
    """`path` itself, or the task files in the directory `path` (dot files skipped: editor
    backups and lock files are not tasks; YAMLs only where they define an lm-eval task, not
    groups or the templates other YAMLs include)."""
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
        if not is_dir:
            return [path]
        files = sorted(
            p for p in path.iterdir() if p.suffix in TASK_SUFFIXES and not p.name.startswith(".")
        )
        files = [p for p in files if p.suffix not in (".yaml", ".yml") or _defines_task(p)]
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise TaskError(
            path, None, f"cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not files:
        raise TaskError(path, None, "no tasks found in this directory (expected *.jsonl, *.txt "
                        "or lm-eval task *.yaml)")
    return files


def _defines_task(path: Path) -> bool:
    from recipe_compiler.evaluate.harness_tasks import is_task_yaml

    try:
        return is_task_yaml(path, read_task_text(path))
    except TaskError:
        return True  # unreadable: loading it reports why


def _read_regular_file(path: Path) -> bytes:
    try:
        return read_regular(path, MAX_TASK_BYTES)
    except FileProblem as exc:
        raise TaskError(path, None, str(exc)) from None


class _BadJson(ValueError):
    """Raised from inside `json.loads` hooks; becomes a TaskError with the line number."""


@dataclass(frozen=True)
class _HugeInt:
    """A JSON integer too long to be any index: kept as its digits, never converted (Python
    refuses int() of over 4300 digits, and converting long ones is quadratic)."""

    digits: str


def _parse_int(text: str) -> int | _HugeInt:
    return int(text) if len(text) <= MAX_INT_CHARS else _HugeInt(text)


def _reject_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not a JSON value")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [k for k, _ in pairs]
        dupes = [k for k in MC_KEYS + GEN_KEYS if names.count(k) > 1]
        if dupes:
            raise _BadJson(f"duplicate key {dupes[0]!r}")
    return obj


def _parse_line(path: Path, lineno: int, line: str) -> Any:
    try:
        return json.loads(
            line, parse_int=_parse_int, parse_constant=_reject_constant, object_pairs_hook=_object
        )
    except json.JSONDecodeError as exc:
        raise TaskError(path, lineno, f"malformed JSON at column {exc.colno}: {exc.msg}") from None
    except _BadJson as exc:
        raise TaskError(path, lineno, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise TaskError(path, lineno, "malformed JSON: nested too deeply") from None


def _parse_jsonl(path: Path, text: str) -> tuple[TaskKind, list[McItem] | list[GenItem]]:
    kind: TaskKind | None = None
    items: list[Any] = []
    # JSON Lines ends lines at "\n" only: str.splitlines() would also split inside strings
    # holding U+2028, U+0085 or a form feed, which JSON allows unescaped.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj = _parse_line(path, lineno, line)
        if not isinstance(obj, dict):
            raise TaskError(path, lineno, f"expected a JSON object, got {_json_type(obj)}")
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
        keys = sorted(obj)
        shown = ", ".join(map(repr, keys[:8])) + (f", ... ({len(keys)} keys)" if keys[8:] else "")
        raise TaskError(
            path, lineno, f"expected keys {list(MC_KEYS)} or {list(GEN_KEYS)}, got [{shown}]"
        )
    wanted = MC_KEYS if is_mc else GEN_KEYS
    missing = [k for k in wanted if k not in obj]
    if missing:
        raise TaskError(path, lineno, f"missing key(s) {missing}")
    return "mc" if is_mc else "gen"


def _mc_item(path: Path, lineno: int, obj: dict[str, Any]) -> McItem:
    context = _string(path, lineno, "context", obj["context"])
    choices = obj["choices"]
    if not isinstance(choices, list) or not choices:
        raise TaskError(
            path, lineno, f"'choices' must be a non-empty list of strings, got {_describe(choices)}"
        )
    for i, choice in enumerate(choices):
        # An empty choice has no tokens to score and zero length for acc_norm.
        _string(path, lineno, f"choice {i}", choice, non_empty=True)
    gold = obj["gold"]
    if isinstance(gold, _HugeInt):
        digits = gold.digits.lstrip("-")
        raise TaskError(
            path,
            lineno,
            f"'gold' {gold.digits[:12]}... ({len(digits)} digits) out of range for "
            f"{len(choices)} choices",
        )
    if isinstance(gold, bool) or not isinstance(gold, int):
        raise TaskError(
            path, lineno, f"'gold' must be an integer index into 'choices', got {_describe(gold)}"
        )
    if not 0 <= gold < len(choices):
        raise TaskError(path, lineno, f"'gold' {gold} out of range for {len(choices)} choices")
    return McItem(context=context, choices=tuple(choices), gold=gold)


def _gen_item(path: Path, lineno: int, obj: dict[str, Any]) -> GenItem:
    prompt = _string(path, lineno, "prompt", obj["prompt"], non_empty=True)
    answer = _string(path, lineno, "answer", obj["answer"])
    if "\n" in answer.strip():
        # Generation stops at the first newline, so such an answer could never match.
        raise TaskError(path, lineno, "'answer' must not contain a newline")
    return GenItem(prompt=prompt, answer=answer)


def _string(path: Path, lineno: int, what: str, value: Any, *, non_empty: bool = False) -> str:
    """`value` if it is a (non-empty) string of valid Unicode, else a TaskError naming `what`."""
    label = what if what.startswith("choice ") else repr(what)
    if not isinstance(value, str) or (non_empty and not value):
        wanted = "a non-empty string" if non_empty else "a string"
        raise TaskError(path, lineno, f"{label} must be {wanted}, got {_describe(value)}")
    if not _is_unicode(value):
        # JSON can escape half a surrogate pair ("\ud800"); no tokenizer accepts the result.
        bad = next(i for i, ch in enumerate(value) if not _is_unicode(ch))
        raise TaskError(
            path,
            lineno,
            f"{label} holds a lone surrogate \\u{ord(value[bad]):04x} at "
            f"character {bad + 1}, which is not valid Unicode text",
        )
    return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(value: Any) -> str:
    """What a JSON value is, for messages: its type, and its value if short."""
    if isinstance(value, _HugeInt):
        return f"a {len(value.digits)}-character integer"
    kind = _json_type(value)
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return f"{kind} {json.dumps(value)}"
    if isinstance(value, str):
        return "an empty string" if not value else kind
    return kind


def _json_type(value: Any) -> str:
    types = [
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
        (_HugeInt, "integer"),
    ]
    return next((name for cls, name in types if isinstance(value, cls)), "null")
