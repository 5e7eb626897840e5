"""Command-line values under a fuzzer: every case is exit 0 or 1, quickly, writing nothing on 1.

Each case is one command of `tailorc` with one or two of its values drawn from hostile and
careless choices (zero, negative, huge, inf, NaN, '%', junk text, a directory where a file
is wanted, a file where a directory is, a FIFO, a path under a file, an input as output),
the rest small and valid, run in-process against the quick zoo. A case passes if `main`
returns 0 or 1 (or argparse exits 1), within 20 s, and — when it fails — leaves the
workspace exactly as it was.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe_compiler.cli import main
from tests.deadline import deadline

NUMBERS = ("0", "1", "-1", "2", "3", "1000000000000", "99999999999999999999999", "inf", "-inf",
           "nan", "1e309", "0.5", "1e-9", "25%", "inf%", "nan%", "-5%", "150%", "0%", "abc",
           "", " ", "5GB", "0B", "1e15GB", "-5MB", "0x10", "１", "\u00e9")
PATHS = ("model", "tasks", "taskfile", "text", "recipe", "missing", "dir", "file", "fifo",
         "under_file", "devnull", "zoo_root")

# command -> (template argv, names of the slots a fuzzed value may replace)
COMMANDS = {
    "eval": ["eval", "{model}", "--tasks", "{taskfile}", "--limit", "{limit}", "--batch-size",
             "{batch}", "--threads", "1"],
    "prune": ["prune", "{model}", "--method", "block-influence", "--remove", "{remove}",
              "--calib", "{text}", "--samples", "{samples}", "-o", "{out_file}"],
    "build": ["build", "{recipe}", "-o", "{out_dir}", "--shard-size", "{shard}"],
    "plan": ["plan", "{recipe}", "--shard-size", "{shard}"],
    "check": ["check", "{recipe}"],
    "fmt": ["fmt", "{recipe}"],
    "evolve": ["evolve", "{search}", "-o", "{out_dir}", "--population", "{population}",
               "--generations", "{generations}", "--limit", "{limit}", "--min-limit",
               "{min_limit}", "--seed", "{seed}"],
    "import": ["import", "{config}", "-o", "{out_file}"],
    "export": ["export", "{recipe}", "--to", "mergekit", "-o", "{out_file}"],
    "zoo": ["zoo", "{out_dir}", "--random", "--seed", "{seed}"],
}
VALID = {"limit": "3", "batch": "4", "remove": "2", "samples": "4", "shard": "5GB",
         "population": "2", "generations": "1", "min_limit": "2", "seed": "0"}
PATH_SLOTS = ("model", "taskfile", "text", "recipe", "search", "config", "out_file", "out_dir")


@pytest.fixture(scope="module")
def workspace(quick_zoo, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clifuzz")
    (root / "zoo").symlink_to(quick_zoo)
    (root / "dir").mkdir()
    (root / "file").write_text("x")
    os.mkfifo(root / "fifo")
    (root / "r.tr").write_text('model base = "zoo/base"\nslot 0..10 = take(base)\n'
                               'slot 10..12 = drop\n')
    (root / "s.tr").write_text('model base = "zoo/base"\nmodel math = "zoo/math"\n'
                               'slot 0..12 = ?\nsearch {\n  remove = 25%\n  tasks = '
                               '"zoo/tasks/val/math.jsonl"\n}\n')
    (root / "m.yml").write_text("slices:\n  - sources:\n      - model: zoo/base\n"
                                "        layer_range: [0, 12]\nmerge_method: passthrough\n"
                                "dtype: float32\n")
    return root


def path_value(root: Path, kind: str) -> str:
    return str({
        "model": root / "zoo/base", "tasks": root / "zoo/tasks", "taskfile":
        root / "zoo/tasks/math.jsonl", "text": root / "zoo/tasks/text.txt", "recipe":
        root / "r.tr", "missing": root / "nope", "dir": root / "dir", "file": root / "file",
        "fifo": root / "fifo", "under_file": root / "file/x", "devnull": "/dev/null",
        "zoo_root": root / "zoo",
    }[kind])


def valid_path(root: Path, slot: str, out: Path) -> str:
    return str({"model": root / "zoo/base", "taskfile": root / "zoo/tasks/math.jsonl",
                "text": root / "zoo/tasks/text.txt", "recipe": root / "r.tr",
                "search": root / "s.tr", "config": root / "m.yml", "out_file": out / "o.txt",
                "out_dir": out / "o"}[slot])


def snapshot(root: Path) -> dict[str, int]:
    """Every path under the workspace (not into the zoo) with its size: what a case wrote."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "zoo"]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            seen[str(p)] = p.lstat().st_size if not p.is_dir() else -1
    return seen


@st.composite
def cases(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    template = COMMANDS[command]
    slots = [t[1:-1] for t in template if t.startswith("{")]
    fuzzed = draw(st.lists(st.sampled_from(slots), min_size=1, max_size=2, unique=True))
    values = {}
    for slot in fuzzed:
        if slot in PATH_SLOTS:
            values[slot] = ("path", draw(st.sampled_from(PATHS)))
        else:
            values[slot] = ("text", draw(st.sampled_from(NUMBERS) | st.text(max_size=8)))
    return command, values


def run_case(workspace: Path, tmp: Path, command: str, values: dict) -> None:
    out = tmp / "out"
    out.mkdir()
    argv = []
    for token in COMMANDS[command]:
        if not token.startswith("{"):
            argv.append(token)
            continue
        slot = token[1:-1]
        kind, value = values.get(slot, ("valid", None))
        if kind == "path":
            argv.append(path_value(workspace, value))
        elif kind == "text":
            argv.append(value)
        else:
            argv.append(valid_path(workspace, slot, out) if slot in PATH_SLOTS else VALID[slot])
    before = snapshot(workspace)

    with deadline(20):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    assert code in (0, 1), (argv, code)
    if code == 1:
        assert not any(out.iterdir()), (argv, list(out.iterdir()))
        assert snapshot(workspace) == before, argv
    shutil.rmtree(out)


SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@settings(max_examples=120, **SETTINGS)
@given(case=cases())
def test_command_line_values(workspace, tmp_path_factory, case, capsys):
    run_case(workspace, tmp_path_factory.mktemp("case"), *case)
    capsys.readouterr()


@pytest.mark.slow
@settings(max_examples=2500, **SETTINGS)
@given(case=cases())
def test_command_line_values_long(workspace, tmp_path_factory, case, capsys):
    run_case(workspace, tmp_path_factory.mktemp("case"), *case)
    capsys.readouterr()
