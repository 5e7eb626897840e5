"""Fuzzing task and calibration files: every input loads or is a `TaskError`, quickly.

Generators (hypothesis, structured rather than random bytes):
- JSONL task files built from items (multiple choice, generation), either valid, when they must
  load to exactly the items written, or mutated: a field swapped for a value of the wrong type,
  a huge or non-finite number, a lone surrogate, a deep nest; keys dropped, duplicated or from
  the other kind; lines truncated, spliced with junk or replaced; files re-encoded (Latin-1,
  UTF-16, raw surrogates), cut mid-character, or plain binary junk. Valid files vary too: a
  BOM, CRLF, blank lines, U+2028 unescaped inside strings, extra keys;
- perplexity ``.txt`` files, valid and mutated the same way;
- directories of such files, with dot files, other files and subdirectories named like tasks;
- calibration files for `prune.calibration_texts` (``.txt`` lines or task files).
The property: a list of well-formed tasks, or a one-line `TaskError` naming the file, in well
under a second. A sample also goes end to end through ``tailorc eval`` on a tiny model, which
must exit 0 (when the files load) or 1, never 2 (an internal error).

The fast tests run a fixed, derandomised set (`FAST`, a few hundred cases in all);
`pytest -m slow` runs `SLOW` random ones. Hand-picked regression tests follow the fuzzers.
"""

from __future__ import annotations

import codecs
import functools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recipe_compiler.evaluate import GenItem, McItem, Task, TaskError, load_task, load_tasks
from recipe_compiler.evaluate import tasks as tasks_module
from recipe_compiler.prune import calibration_texts

FAST = {"jsonl": 250, "txt": 60, "dirs": 60, "calib": 80, "cli": 24}
SLOW = {"jsonl": 2500, "txt": 500, "dirs": 500, "calib": 600, "cli": 200}
SECONDS = 2.0  # per case; loading is milliseconds, so this only catches hangs and blow-ups


def fast(name: str):
    return settings(max_examples=FAST[name], deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def slow(name: str):
    return settings(max_examples=SLOW[name], deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


# --- generators ---------------------------------------------------------------------------

# Characters that have broken line splitting, JSON or tokenizers somewhere.
SPECIAL = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1e", "\x00", "\ufeff", "é", "日本",
           "\U0001f600", "\r", "\n", " ", "\t", "\\", '"', "{", "}", "[/]", "[bold]"]
SURROGATES = ["\ud800", "\udfff", "\udc80", "a\ud83d"]
# Values a field should never hold, as JSON text (Python's json cannot write most of them),
# by family, so that each family comes up often.
WEIRD_NUMBERS = ["9" * 5000, "-" + "9" * 5000, "9" * 21, "18446744073709551616", "1e999",
                 "-1e999", "1e-999", "1.0", "0.0", "-0", "1E2", "-1", "7", "2147483648"]
NON_JSON = ["NaN", "Infinity", "-Infinity", "nan", "undefined", "0x10", "01", "+1", ".5"]
WRONG_TYPES = ["true", "false", "null", "[]", "{}", '""', '" "', '"0"', "[1, 2]", '["a", 1]',
               "[null]", '[""]', '["a", ""]', '[["a"]]', '{"a": "b"}', '"a\\nb"', '"\\u0000"',
               '"' + "x" * 5000 + '"']
DEEP = ["[" * 3000 + "]" * 3000, '{"a": ' * 2000 + "1" + "}" * 2000, "[" * 50 + "]" * 50]
WEIRD = WEIRD_NUMBERS + NON_JSON + WRONG_TYPES + DEEP
weird_values = st.one_of(*(st.sampled_from(family) for family in (WEIRD_NUMBERS, WRONG_TYPES,
                                                                     NON_JSON, DEEP)))
BAD_LINES = ["[1, 2]", '"text"', "42", "null", "true", "{", "}", "{}", "[" * 5000, "\x00",
             '{"a": 1,}', "{'context': 'a'}", '{"context": "a" "choices": []}', "\ufeff{}"]


@dataclass(frozen=True)
class Case:
    """A file to write and what loading it must give: the items, or None when unknown."""

    name: str
    data: bytes
    expected: tuple | None


_CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(SPECIAL))


@functools.cache  # building strategies anew for every draw was most of the run time
def texts(min_size: int = 0, max_size: int = 10) -> st.SearchStrategy[str]:
    return st.lists(_CHARS, min_size=min_size, max_size=max_size).map("".join)


def json_text(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


EXTRA_KEYS = [("id", 7), ("meta", {"src": "x", "n": [1.5, None]}), ("label", "B"), ("tags", [])]
_EXTRAS = st.lists(st.sampled_from(range(len(EXTRA_KEYS))), max_size=2, unique=True)
_CHOICES = st.lists(texts(min_size=1), min_size=1, max_size=4)


@st.composite
def items(draw, kind: str) -> tuple[Any, list[tuple[str, Any]]]:
    """A valid item and its (key, value) pairs, with extra keys the loader ignores."""
    if kind == "mc":
        choices = draw(_CHOICES)
        gold = draw(st.integers(0, len(choices) - 1))
        context = draw(texts())
        item: Any = McItem(context=context, choices=tuple(choices), gold=gold)
        pairs = [("context", context), ("choices", choices), ("gold", gold)]
    else:
        prompt = draw(texts(min_size=1))
        answer = draw(texts()).replace("\n", " ")  # a newline inside could never match
        item = GenItem(prompt=prompt, answer=answer)
        pairs = [("prompt", prompt), ("answer", answer)]
    pairs += [EXTRA_KEYS[i] for i in draw(_EXTRAS)]
    order = draw(st.permutations(tuple(range(len(pairs)))))
    return item, [pairs[i] for i in order]


@st.composite
def mutated_pairs(draw, pairs: list[tuple[str, Any]], kind: str) -> list[tuple[str, str]]:
    """The pairs as JSON text, with one to three fields broken."""
    raw = [(k, json_text(v, draw(st.booleans()))) for k, v in pairs]
    other = ["prompt", "answer"] if kind == "mc" else ["context", "choices", "gold"]
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["replace", "surrogate", "replace", "delete", "duplicate",
                                    "replace", "foreign", "rename"]))
        # aim at the item's own fields (extra keys are ignored anyway), gold first
        keys = [k for k in ("gold", "choices", "context", "answer", "prompt") if k in dict(raw)]
        target = draw(st.sampled_from(keys or ["id"]))
        i = next((j for j, (k, _) in enumerate(raw) if k == target), 0)
        if how == "replace" and raw:
            raw[i] = (raw[i][0], draw(weird_values))
        elif how == "surrogate" and raw:
            text = draw(texts()) + draw(st.sampled_from(SURROGATES))
            value = [text] if raw[i][0] == "choices" else text
            raw[i] = (raw[i][0], json_text(value, draw(st.sampled_from([True, True, False]))))
        elif how == "delete" and raw:
            del raw[i]
        elif how == "duplicate" and raw:
            raw.append((raw[i][0], draw(st.sampled_from(WEIRD + ['"x"', "0", '["x"]']))))
        elif how == "foreign":
            raw.append((draw(st.sampled_from(other)), '"x"'))
        elif raw:
            key = draw(st.sampled_from(["", "Context", "gold ", "choice", "\ud800"]))
            raw[i] = (key, raw[i][1])
    return raw


def object_line(raw: list[tuple[str, str]], spacing: str) -> str:
    body = ("," + spacing).join(f"{json.dumps(k)}:{spacing}{v}" for k, v in raw)
    return "{" + spacing + body + spacing + "}"


@st.composite
def jsonl_cases(draw) -> Case:
    """A JSONL task file: valid (items known) or mutated at the field, line or byte level."""
    kind = draw(st.sampled_from(["mc", "gen"]))
    drawn = draw(st.lists(items(kind), min_size=1, max_size=4))
    mutate = draw(st.sampled_from(["field", "none", "line", "field", "bytes", "none", "none"]))
    spacing = draw(st.sampled_from(["", " ", "  ", "\t"]))
    lines = []
    for k, (_, pairs) in enumerate(drawn):
        if mutate == "field" and k == len(drawn) - 1:
            raw = draw(mutated_pairs(pairs, kind))
        else:
            raw = [(key, json_text(v, draw(st.booleans()))) for key, v in pairs]
        lines.append(object_line(raw, spacing))
        lines += draw(st.lists(st.sampled_from(["", " ", "\t", "\x0c", "\r"]), max_size=2))
    if mutate == "line":
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["truncate", "junk", "replace"]))
        if how == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(len(lines[i]) - 1, 0)))]
        elif how == "junk":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(texts(min_size=1, max_size=4)) + lines[i][at:]
        else:
            lines[i] = draw(st.sampled_from(BAD_LINES))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    data = draw(st.sampled_from([b"", codecs.BOM_UTF8])) + text.encode("utf-8", "surrogatepass")
    if mutate == "bytes":
        data = draw(mangled_bytes(text))
    suffix = draw(st.sampled_from([".jsonl"] * 30 + [".txt", ".csv", "", ".JSONL"]))
    expected = tuple(item for item, _ in drawn) if mutate == "none" and suffix == ".jsonl" else None
    return Case(draw(st.sampled_from(["task", "quiz", "日本", "a.b", "x y"])) + suffix, data,
                expected)


def mangled_bytes(text: str) -> st.SearchStrategy[bytes]:
    """`text` in a wrong encoding, cut mid-character, or replaced by junk."""
    raw = text.encode("utf-8", "surrogatepass")
    return st.one_of(
        st.just((text + "\u00e9\ud800").encode("utf-8", "surrogatepass")),
        st.just(text.encode("latin-1", "replace") + "café".encode("latin-1")),
        st.just(text.encode("utf-16", "surrogatepass")),
        st.just(text.encode("utf-16-be", "surrogatepass")),
        st.just("ünïcödé".encode()[:3] + raw),
        st.integers(0, len(raw)).map(lambda n: raw[:n] + "é".encode()[:1]),
        st.binary(max_size=200),
        st.binary(max_size=50).map(lambda junk: raw + junk),
        st.just(b""),
        st.just(b"\x00" * 64),
    )


@st.composite
def txt_cases(draw) -> Case:
    """A perplexity text: valid (at least one visible character) or broken."""
    text = draw(texts()) + draw(st.sampled_from("aZ9日.")) + draw(texts(max_size=30))
    how = draw(st.sampled_from(["none", "none", "bom", "blank", "bytes"]))
    if how == "blank":
        blank = draw(st.lists(st.sampled_from([" ", "\n", "\t", "\r\n", "\x0c", "\u2028"]),
                              max_size=6))
        return Case("text.txt", "".join(blank).encode("utf-8"), None)
    if how == "bytes":
        return Case("text.txt", draw(mangled_bytes(text)), None)
    if how == "bom":
        return Case("text.txt", codecs.BOM_UTF8 + text.encode("utf-8"), (text,))
    # a leading U+FEFF is read as a byte-order mark
    return Case("text.txt", text.encode("utf-8"), (text.removeprefix("\ufeff"),))


# --- the property -------------------------------------------------------------------------


def check_task(task: Task) -> None:
    """What every loaded task must satisfy for the evaluator to use it."""
    assert task.kind in ("mc", "gen", "ppl") and task.items
    task.name.encode("utf-8")
    for item in task.items:
        if task.kind == "ppl":
            assert isinstance(item, str) and item.strip()
            item.encode("utf-8")
        elif task.kind == "mc":
            assert isinstance(item, McItem) and item.choices
            assert type(item.gold) is int and 0 <= item.gold < len(item.choices)
            for s in (item.context, *item.choices):
                assert isinstance(s, str)
                s.encode("utf-8")
            assert all(item.choices)
        else:
            assert isinstance(item, GenItem) and item.prompt
            (item.prompt + item.answer).encode("utf-8")
            assert "\n" not in item.answer.strip()


def check_error(exc: TaskError, roots: list[Path]) -> None:
    """A one-line, printable message that starts with the file (under one of `roots`)."""
    message = str(exc)
    assert "\n" not in message, message
    message.encode("utf-8")
    assert message.startswith(exc.path), message
    assert any(exc.path.startswith(str(root)) for root in roots), (exc.path, roots)
    if exc.line is not None:
        assert message.startswith(f"{exc.path}:{exc.line}: "), message


def outcome(paths: list[Path], load: Callable = load_tasks) -> Any:
    """Load; returns what loaded or the TaskError. Anything else, or slowness, fails."""
    start = time.monotonic()
    try:
        result = load(paths)
    except TaskError as exc:
        check_error(exc, paths)
        # (pytest --hypothesis-show-statistics lists how often each kind of error came up)
        event("error: " + " ".join(str(exc).removeprefix(exc.path).split()[1:4]))
        result = exc
    else:
        event("loaded")
    elapsed = time.monotonic() - start
    assert elapsed < SECONDS, f"took {elapsed:.1f}s"
    if not isinstance(result, TaskError) and load is load_tasks:
        for task in result:
            check_task(task)
    return result


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per example (pytest's tmp_path is shared by all of a test's examples)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-tasks-") as tmp:
        yield Path(tmp)


def write(root: Path, case: Case) -> Path:
    path = root / case.name
    path.write_bytes(case.data)
    return path


def check_file_case(case: Case) -> Any:
    with scratch() as root:
        path = write(root, case)
        result = outcome([path])
        if case.expected is not None:
            assert not isinstance(result, TaskError), (result, case)
            assert [t.items for t in result] == [case.expected]
            assert result[0].name == Path(case.name).stem
        return result


# --- 1. task files ------------------------------------------------------------------------


@fast("jsonl")
@given(jsonl_cases())
def test_jsonl_files_load_or_fail_cleanly(case):
    check_file_case(case)


@pytest.mark.slow
@slow("jsonl")
@given(jsonl_cases())
def test_jsonl_files_load_or_fail_cleanly_slow(case):
    check_file_case(case)


@fast("txt")
@given(txt_cases())
def test_text_files_load_or_fail_cleanly(case):
    check_file_case(case)


@pytest.mark.slow
@slow("txt")
@given(txt_cases())
def test_text_files_load_or_fail_cleanly_slow(case):
    check_file_case(case)


# --- 2. directories -----------------------------------------------------------------------


@st.composite
def dir_cases(draw) -> tuple[list[Case], list[str], bool]:
    """Files for one directory, subdirectories to add, and whether it must load."""
    cases = []
    names: set[str] = set()
    for case in draw(st.lists(st.one_of(jsonl_cases(), txt_cases()), max_size=4)):
        stem = draw(st.sampled_from(["a", "b", "c", "日本"]))
        if case.name.endswith((".jsonl", ".txt")):
            name, expected = stem + Path(case.name).suffix, case.expected
        else:
            name, expected = stem + draw(st.sampled_from([".csv", ".md", ""])), None
        if name not in names:
            names.add(name)
            cases.append(Case(name, case.data, expected))
    extras = draw(st.lists(st.sampled_from(["sub.jsonl", "plain", "x.txt"]), max_size=2,
                           unique=True))
    hidden = draw(st.booleans())
    if hidden:  # dot files are skipped, however broken
        cases.append(Case(".#a.jsonl", b"\xff\xfe junk", None))
    tasks = [c for c in cases if c.name.endswith((".jsonl", ".txt")) and not c.name[0] == "."]
    stems = [Path(c.name).stem for c in tasks]
    must_load = (bool(tasks) and all(c.expected is not None for c in tasks)
                 and len(set(stems)) == len(stems)
                 and not any(e.endswith((".jsonl", ".txt")) for e in extras))
    return cases, extras, must_load


def check_dir_case(drawn) -> None:
    cases, extras, must_load = drawn
    with scratch() as root:
        folder = root / "tasks"
        folder.mkdir()
        for case in cases:
            write(folder, case)
        for sub in extras:
            (folder / sub).mkdir()
        result = outcome([folder])
        if must_load:
            assert not isinstance(result, TaskError), result
            want = sorted((c for c in cases if c.expected is not None and c.name[0] != "."),
                          key=lambda c: folder / c.name)
            assert [t.items for t in result] == [c.expected for c in want]


@fast("dirs")
@given(dir_cases())
def test_task_directories_load_or_fail_cleanly(drawn):
    check_dir_case(drawn)


@pytest.mark.slow
@slow("dirs")
@given(dir_cases())
def test_task_directories_load_or_fail_cleanly_slow(drawn):
    check_dir_case(drawn)


# --- 3. calibration files -----------------------------------------------------------------


@st.composite
def calib_cases(draw) -> tuple[Case, int]:
    """A calibration file (lines of text, or a task file) and a sample count."""
    case = draw(st.one_of(jsonl_cases(), txt_cases()))
    if case.name.endswith(".txt") and case.expected is not None:
        # one text per non-empty line, stripped
        lines = [ln.strip() for ln in case.expected[0].splitlines()]
        case = Case(case.name, case.data, tuple(ln for ln in lines if ln) or None)
    return case, draw(st.integers(1, 5))


def check_calib_case(drawn) -> None:
    case, samples = drawn
    with scratch() as root:
        path = write(root, case)
        result = outcome([path], load=lambda paths: calibration_texts(paths[0], samples))
        if isinstance(result, TaskError):
            assert case.expected is None, (result, case)
            return
        assert isinstance(result, list) and 0 < len(result) <= samples
        assert all(isinstance(t, str) and t for t in result)
        for t in result:
            t.encode("utf-8")
        if case.expected is not None and path.suffix == ".txt":
            assert result == list(case.expected[:samples])


@fast("calib")
@given(calib_cases())
def test_calibration_files_load_or_fail_cleanly(drawn):
    check_calib_case(drawn)


@pytest.mark.slow
@slow("calib")
@given(calib_cases())
def test_calibration_files_load_or_fail_cleanly_slow(drawn):
    check_calib_case(drawn)


# --- 4. end to end through the CLI --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama with the zoo's character tokenizer (make_family writes none)."""
    from recipe_compiler.zoo.families import make_family
    from recipe_compiler.zoo.tokenizer import build_tokenizer

    path = make_family(tmp_path_factory.mktemp("tiny"), "llama", ("base",), layers=2,
                       seed=0)["base"]
    build_tokenizer().save_pretrained(path)
    return path


def cli_eval(model: Path, *tasks: Path) -> int:
    from recipe_compiler.cli import main

    return main(["eval", str(model), "--tasks", *map(str, tasks), "--threads", "1"])


def check_cli_case(model: Path, case: Case) -> None:
    with scratch() as root:
        path = write(root, case)
        loads = not isinstance(outcome([path]), TaskError)
        code = cli_eval(model, path)
        assert code == (0 if loads else 1), (code, case)


@fast("cli")
@given(case=st.one_of(jsonl_cases(), txt_cases()))
def test_cli_eval_exits_0_or_1(tiny_model, case):
    check_cli_case(tiny_model, case)


@pytest.mark.slow
@slow("cli")
@given(case=st.one_of(jsonl_cases(), txt_cases()))
def test_cli_eval_exits_0_or_1_slow(tiny_model, case):
    check_cli_case(tiny_model, case)


# --- 5. hand-picked regressions -----------------------------------------------------------

MC = {"context": "2+2=", "choices": ["4", "5"], "gold": 0}


def mc_line(**changes: Any) -> str:
    return json.dumps({**MC, **changes})


def finishes(fn: Callable[[], Any], seconds: float = 10.0, unblock: Path | None = None) -> Any:
    """fn()'s result or exception, failing (not hanging) if it takes over `seconds`. A call
    blocked opening the FIFO `unblock` is released by opening it for writing."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if unblock is not None:
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"still running after {seconds}s: blocked reading a FIFO?")
    return box["value"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"context": "a", "choices": ["b", "c"], "gold": ' + "9" * 5000 + "}", "5000 digits"),
        ('{"context": "a", "choices": ["b", "c"], "gold": -' + "9" * 5000 + "}", "out of range"),
        ('{"context": "a", "choices": ["b", "c"], "gold": 18446744073709551616}', "out of range"),
        (mc_line(gold=True), "integer index"),
        (mc_line(gold=1.0), "got number 1.0"),
        (mc_line(gold="0"), "got string"),
        (mc_line(gold=-1), "out of range"),
        (mc_line(gold=None), "got null"),
        ('{"context": "a", "choices": ["b"], "gold": NaN}', "NaN is not a JSON value"),
        ('{"context": "a", "choices": ["b"], "gold": -Infinity}', "-Infinity"),
        ('{"context": "a", "choices": ["b"], "gold": 1e999}', "got number Infinity"),
        ('{"context": "a\\ud800", "choices": ["b"], "gold": 0}', "'context' holds a lone sur"),
        ('{"context": "a", "choices": ["b", "\\udfff"], "gold": 0}', "choice 1 holds a lone"),
        ('{"prompt": "\\ud83d", "answer": "b"}', "'prompt' holds a lone surrogate \\\\ud83d"),
        ('{"prompt": "a", "answer": "x\\udc80"}', "'answer' holds"),
        (mc_line(choices=[]), "non-empty list"),
        (mc_line(choices="ab"), "got string"),
        (mc_line(choices=["a", 1]), "choice 1 must be a non-empty string, got integer 1"),
        (mc_line(context=None), "'context' must be a string, got null"),
        (mc_line(context=["a"]), "got array"),
        ('{"prompt": "", "answer": "b"}', "'prompt' must be a non-empty string"),
        ('{"prompt": "a", "answer": 2}', "'answer' must be a string, got integer 2"),
        ('{"context": "a", "choices": ["b"], "gold": 0, "gold": 1}', "duplicate key 'gold'"),
        ('{"context": "a", "choices": ["b"], "gold": 0, "x": ' + "[" * 5000 + "]" * 5000 + "}",
         "nested too deeply"),
        ('{"context": "a", "choices": ["b"], "gold": 0,}', "malformed JSON at column"),
        ('"just a string"', "expected a JSON object, got string"),
        ('{"q": 1}', "expected keys"),
    ],
)
def test_bad_item_is_a_task_error_naming_the_line(tmp_path, line, words):
    path = tmp_path / "bad.jsonl"
    first = '{"prompt": "a", "answer": "b"}' if '"prompt"' in line else mc_line()
    path.write_text(first + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(TaskError, match=words) as info:
        load_tasks([path])
    check_error(info.value, [tmp_path])
    assert info.value.line == 3


def test_huge_numbers_in_ignored_keys_are_fine(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(mc_line()[:-1] + ', "id": ' + "7" * 5000 + "}\n", encoding="utf-8")
    assert load_task(path).items == (McItem("2+2=", ("4", "5"), 0),)


def test_json_line_breaks_inside_strings_are_not_line_ends(tmp_path):
    # U+2028, U+0085 and form feed are legal unescaped in JSON strings; str.splitlines() split
    # the line there and called valid files malformed.
    context = "a\u2028b\x85c\u2029d"
    line = json.dumps({**MC, "context": context}, ensure_ascii=False)
    assert "\u2028" in line and "\x85" in line
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    item = load_task(path).items[0]
    assert isinstance(item, McItem) and item.context == context


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        ((mc_line() + "\n" + mc_line(context="café")).replace("\\u00e9", "é").encode("latin-1"),
         2, "byte 0xe9"),
        (mc_line(context="\ud800").replace("\\ud800", "\ud800").encode("utf-8", "surrogatepass"),
         1, "not UTF-8"),
        (mc_line().encode("utf-16"), 1, "UTF-16"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", 1, "not UTF-8"),
    ],
)
def test_undecodable_files_name_the_line(tmp_path, data, line, words):
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    with pytest.raises(TaskError, match=words) as info:
        load_tasks([path])
    assert info.value.line == line and str(info.value).startswith(f"{path}:{line}: ")


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + (mc_line() + "\r\n\r\n" + mc_line(gold=1)).encode())
    assert [it.gold for it in load_task(path).items] == [0, 1]
    text = tmp_path / "t2.txt"
    text.write_bytes(codecs.BOM_UTF8 + b"hello\r\n")
    assert load_task(text).items == ("hello\r\n",)


@pytest.mark.parametrize("content", [b"", b"\n\n", b" \r\n\t\n"])
def test_empty_task_files_are_errors(tmp_path, content):
    for name in ("e.jsonl", "e.txt"):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TaskError, match="no items|empty"):
            load_tasks([tmp_path / name])


def test_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = finishes(lambda: load_tasks([fifo]), unblock=fifo)
    assert isinstance(result, TaskError) and "not a regular file (a FIFO)" in str(result)
    # in a directory, and behind a symlink, and as calibration data
    link = tmp_path / "link.txt"
    link.symlink_to(fifo)
    for paths in ([tmp_path], [link]):
        result = finishes(lambda paths=paths: load_tasks(paths), unblock=fifo)
        assert isinstance(result, TaskError) and "FIFO" in str(result)
    result = finishes(lambda: calibration_texts(link, 4), unblock=fifo)
    assert isinstance(result, TaskError) and "FIFO" in str(result)


def test_devices_and_dangling_links_are_refused(tmp_path):
    if Path("/dev/null").exists():
        link = tmp_path / "null.jsonl"
        link.symlink_to("/dev/null")
        with pytest.raises(TaskError, match="character device"):
            load_tasks([link])
    dangling = tmp_path / "gone.jsonl"
    dangling.symlink_to(tmp_path / "missing.jsonl")
    with pytest.raises(TaskError, match="No such file"):
        load_tasks([dangling])


def test_symlink_to_a_regular_file_is_fine(tmp_path):
    real = tmp_path / "real.jsonl"
    real.write_text(mc_line(), encoding="utf-8")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "alias.jsonl"
    link.symlink_to(real)
    assert [t.name for t in load_tasks([link])] == ["alias"]


def test_empty_directories_have_no_tasks(tmp_path):
    for name in ("empty", "x.jsonl"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "README.md").write_text("not a task")
        (folder / ".hidden.jsonl").write_text("junk")
        with pytest.raises(TaskError, match="no tasks found") as info:
            load_tasks([folder])
        assert str(info.value).startswith(f"{folder}: ")


def test_directory_named_like_a_task_inside_a_task_directory(tmp_path):
    (tmp_path / "ok.jsonl").write_text(mc_line(), encoding="utf-8")
    (tmp_path / "sub.jsonl").mkdir()
    with pytest.raises(TaskError, match="sub.jsonl: not a regular file \\(a directory\\)"):
        load_tasks([tmp_path])
    with pytest.raises(TaskError, match="a directory"):
        load_task(tmp_path / "sub.jsonl")


def test_duplicate_task_names_across_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "quiz.jsonl").write_text(mc_line(), encoding="utf-8")
    (tmp_path / "quiz.txt").write_text("some text", encoding="utf-8")
    with pytest.raises(TaskError, match="task name 'quiz' also used by"):
        load_tasks([tmp_path / "a", tmp_path / "quiz.txt"])
    with pytest.raises(TaskError, match="also used by"):
        load_tasks([tmp_path / "a" / "quiz.jsonl", tmp_path / "a"])


def test_files_over_the_size_cap_are_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    monkeypatch.setattr(tasks_module, "MAX_TASK_BYTES", 1000)
    with pytest.raises(TaskError, match="limited to"):
        load_tasks([path])
    with pytest.raises(TaskError, match="limited to"):
        calibration_texts(path, 4)


def test_missing_paths_and_unknown_suffixes(tmp_path):
    with pytest.raises(TaskError, match="No such file"):
        load_tasks([tmp_path / "nope.jsonl"])
    (tmp_path / "t.csv").write_text("a,b")
    with pytest.raises(TaskError, match="unknown task file type"):
        load_tasks([tmp_path / "t.csv"])
    with pytest.raises(TaskError, match="cannot read"):
        load_tasks(["bad\x00name.jsonl"])


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(mc_line())
    path.chmod(0)
    with pytest.raises(TaskError, match="Permission denied"):
        load_tasks([path])


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("café au lait\nthé\n".encode("latin-1"), "calib.txt:1: not UTF-8 text: byte 0xe9"),
        (b"\n  \n\t\n", "no calibration text"),
        (b"", "no calibration text"),
        ("ok\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_bad_calibration_text(tmp_path, data, words):
    path = tmp_path / "calib.txt"
    path.write_bytes(data)
    with pytest.raises(TaskError, match=words):
        calibration_texts(path, 8)


def test_calibration_texts(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_bytes(codecs.BOM_UTF8 + b"  one \r\n\ntwo\nthree\n")
    assert calibration_texts(path, 2) == ["one", "two"]
    task = tmp_path / "calib.jsonl"
    task.write_text(mc_line() + "\n" + json.dumps({"context": "x", "choices": ["y"], "gold": 9}))
    with pytest.raises(TaskError, match="calib.jsonl:2: 'gold' 9 out of range"):
        calibration_texts(task, 8)
    folder = tmp_path / "dir.txt"
    folder.mkdir()
    with pytest.raises(TaskError, match="a directory"):
        calibration_texts(folder, 8)


def test_cli_eval_regressions_exit_1(tiny_model, tmp_path):
    cases = {
        "huge.jsonl": '{"context": "a", "choices": ["b"], "gold": ' + "9" * 5000 + "}",
        "sur.jsonl": '{"context": "a\\ud800", "choices": ["b"], "gold": 0}',
        "empty.jsonl": "\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert cli_eval(tiny_model, tmp_path / name) == 1, name
    (tmp_path / "nothing").mkdir()
    (tmp_path / "x.jsonl").mkdir()
    assert cli_eval(tiny_model, tmp_path / "nothing") == 1
    assert cli_eval(tiny_model, tmp_path / "x.jsonl") == 1
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert finishes(lambda: cli_eval(tiny_model, fifo), seconds=60, unblock=fifo) == 1
    (tmp_path / "ok.jsonl").write_text(mc_line(context="a\u2028b"), encoding="utf-8")
    assert cli_eval(tiny_model, tmp_path / "ok.jsonl") == 0


def test_cli_prune_with_latin1_calibration_exits_1(tiny_model, tmp_path):
    from recipe_compiler.cli import main

    calib = tmp_path / "calib.txt"
    calib.write_bytes("café au lait\n".encode("latin-1"))
    argv = ["prune", str(tiny_model), "--method", "block-influence", "--remove", "1",
            "--calib", str(calib), "-o", str(tmp_path / "out.tr")]
    assert main(argv) == 1
    assert not (tmp_path / "out.tr").exists()
    calib.write_text("café au lait\nthé\n", encoding="utf-8")
    assert main(argv) == 0
