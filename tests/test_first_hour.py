"""A new user's first hour, through the CLI: each problem found on a real model stays fixed.

One test per item of the first-hour issue (eval --json, pickle refusal before loading,
unique rows, compute dtype, every check error at once, progress in a log, model card ids,
plan sources, "added", config fields that change a layer's maths), plus the overwrite
rules. Every command must end in exit 0 or 1, never 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recipe_compiler.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    return code, captured.out, captured.err


@pytest.fixture()
def zoo(quick_zoo, tmp_path) -> Path:
    """The quick zoo, reachable as tmp/qz, with a recipe dir beside it."""
    (tmp_path / "qz").symlink_to(quick_zoo)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TWO = """model base = "qz/base"
model math = "qz/math"
slot 0..2 = take(base)
slot 2 = merge(base, math, weights=[0.5, 0.5], method=task_arithmetic)
slot 3 = drop
slot 4..6 = take(math)
"""


def test_eval_json_is_a_document_with_the_dtype(zoo, capsys):
    code, out, _ = run(capsys, "eval", zoo / "qz/base", "--tasks", zoo / "qz/tasks/math.jsonl",
                       "--limit", "4", "--json", "--threads", "1")
    doc = json.loads(out)
    assert code == 0 and doc["dtype"] == "float32" and doc["device"] == "cpu"
    assert doc["models"]["base"]["tasks"]["math"]["n"] == 4


def test_every_model_reader_refuses_pickles_before_loading(family_root, tmp_path, capsys,
                                                            monkeypatch):
    import transformers

    def boom(*a, **k):
        raise AssertionError("transformers was asked to load a pickle directory")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    calib = write(tmp_path / "c.txt", "some text\n")
    for argv in (("eval", family_root / "pickled", "--tasks", calib),
                 ("prune", family_root / "pickled", "--method", "block-influence",
                  "--calib", calib, "-o", tmp_path / "p.tr"),
                 ("check", family_root / "pickled")):
        code, _, err = run(capsys, *argv)
        assert code == 1
        assert "pickle checkpoints are refused" in err or "not UTF-8" in err or "recipe" in err
    assert not (tmp_path / "p.tr").exists()


def test_every_model_given_gets_a_row(zoo, capsys):
    (zoo / "out").mkdir()
    recipe = write(zoo / "hand.tr", TWO)
    assert run(capsys, "build", recipe, "-o", zoo / "out/hand")[0] == 0
    recipe_in_dir = zoo / "recipes"
    recipe_in_dir.mkdir()
    write(recipe_in_dir / "hand.tr", TWO.replace('"qz/', '"../qz/'))
    code, out, _ = run(capsys, "eval", zoo / "out/hand", recipe_in_dir / "hand.tr",
                       zoo / "out/hand", "--tasks", zoo / "qz/tasks/math.jsonl",
                       "--limit", "3", "--json", "--threads", "1")
    names = list(json.loads(out)["models"])
    assert code == 0 and len(names) == 3 and len(set(names)) == 3, names


def test_eval_computes_in_the_dtype_asked_and_says_so(zoo, capsys):
    args = ("eval", zoo / "qz/base", "--tasks", zoo / "qz/tasks/math.jsonl", "--limit", "4",
            "--threads", "1")
    code, out, _ = run(capsys, *args, "--dtype", "bfloat16")
    assert code == 0 and "computed in bfloat16 on cpu" in out
    code, out, _ = run(capsys, *args)
    assert "computed in float32 on cpu" in out


SIX_PROBLEMS = """model base = "fam/base"
model math = "fam/math"
slot 0..8 = take(base)
slot 8 = take(mth)
slot 9 = merge(base, math, weights=[0.5], method=linear)
slot 10 = merge(base, math, method=foo)
slot 12..14 = take(base, layer=40)
slot 14 = drop
slot 14 = drop
"""


def test_check_reports_every_problem_at_once(family_root, tmp_path, capsys):
    (tmp_path / "fam").symlink_to(family_root / "fam")
    code, _, err = run(capsys, "check", write(tmp_path / "six.tr", SIX_PROBLEMS))
    assert code == 1
    for expected in ("unknown model 'mth'", "'weights' lists 1 number(s) for 2 model(s)",
                     "unknown method foo", "slot 11 not defined",
                     "layer 40 of model 'base' does not exist", "slot 14 already defined",
                     "layer 9 of model 'base' does not exist"):
        assert expected in err, expected


def test_evolve_prints_a_line_per_generation_when_not_a_terminal(zoo, capsys):
    recipe = write(zoo / "s.tr", """model base = "qz/base"
model math = "qz/math"
slot 0..12 = ?
search {
  remove = 25%
  population = 4
  generations = 2
  seed = 0
  tasks = "qz/tasks/val/math.jsonl"
  limit = 6
}
""")
    code, _, err = run(capsys, "evolve", recipe, "-o", zoo / "run")
    assert code == 0
    lines = [ln.split() for ln in err.splitlines() if ln.strip()[:1].isdigit()]
    assert [ln[0] for ln in lines] == ["0", "1", "2"]
    assert lines[0][-1] == "?"  # no estimate before a generation after the first is timed
    assert (zoo / "run/state.json").exists()


def test_evolve_resume_refuses_a_state_it_cannot_read(zoo, capsys):
    recipe = write(zoo / "s.tr", """model base = "qz/base"
slot 0..12 = ?
search {
  remove = 25%
  population = 2
  generations = 1
  tasks = "qz/tasks/val/math.jsonl"
  limit = 2
}
""")
    (zoo / "run").mkdir()
    import pickle

    (zoo / "run/state.json").write_bytes(pickle.dumps({"version": 2}))
    code, _, err = run(capsys, "evolve", recipe, "-o", zoo / "run", "--resume")
    assert code == 1 and "cannot read the saved state" in err


def test_model_card_lists_hub_ids_and_local_paths_relative_to_the_output(zoo, capsys):
    snapshot = zoo / "hub/models--HuggingFaceTB--SmolLM2-135M/snapshots/0123abc"
    shutil.copytree(zoo / "qz/math", snapshot)
    recipe = write(zoo / "r.tr", TWO.replace('"qz/math"', f'"{snapshot}"'))
    assert run(capsys, "build", recipe, "-o", zoo / "out/card")[0] == 0
    card = (zoo / "out/card/README.md").read_text()
    front = card.split("---")[1]
    assert "- HuggingFaceTB/SmolLM2-135M" in front and "qz" not in front
    assert "| base | - | `../../qz/base` |" in card


def test_plan_lists_the_base_among_a_task_arithmetic_merges_sources(zoo, capsys):
    recipe = write(zoo / "r.tr", """model base = "qz/base"
model math = "qz/math"
model code = "qz/code"
slot 0 = merge(math, code, weights=[0.5, 0.5], method=task_arithmetic)
slot 1..12 = take(base)
""")
    code, out, _ = run(capsys, "plan", recipe)
    row = next(ln for ln in out.splitlines() if "merge:task_arithmetic" in ln)
    assert code == 0 and "math:0, code:0, base:0" in row


def test_a_recipe_that_adds_layers_says_added(zoo, capsys):
    recipe = write(zoo / "r.tr", """model base = "qz/base"
slot 0..12 = take(base)
slot 12 = take(base, layer=11)
""")
    _, out, _ = run(capsys, "check", recipe)
    assert "added)" in out and "-" not in out.split("(")[-1]
    _, out, _ = run(capsys, "plan", recipe)
    assert "% added)" in out


def test_config_fields_that_change_a_layers_maths(zoo, capsys):
    for name in ("base", "math"):
        shutil.copytree(zoo / f"qz/{name}", zoo / name)
    config = json.loads((zoo / "math/config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    config["max_position_embeddings"] = 7
    (zoo / "math/config.json").write_text(json.dumps(config))
    used = write(zoo / "used.tr", """model base = "base"
model math = "math"
slot 0..11 = take(base)
slot 11 = take(math)
""")
    code, _, err = run(capsys, "check", used)
    assert code == 1
    assert "error: model 'math' has rms_norm_eps = 0.001 but base model 'base' has" in err
    assert "warning: model 'math' has max_position_embeddings = 7" in err
    unused = write(zoo / "unused.tr", used.read_text().replace("take(math)", "take(base)"))
    code, _, err = run(capsys, "check", unused)
    assert code == 0 and "warning: model 'math' has rms_norm_eps" in err


def test_nothing_is_overwritten_without_force_and_inputs_never(zoo, capsys, tmp_path):
    calib = zoo / "qz/tasks/text.txt"
    before = calib.read_bytes()
    base_args = ("prune", zoo / "qz/base", "--method", "block-influence", "--calib", calib)
    code, _, err = run(capsys, *base_args, "-o", calib, "--force")
    assert code == 1 and "is an input" in err and calib.read_bytes() == before
    code, _, err = run(capsys, *base_args, "-o", zoo / "qz/base/config.json", "--force")
    assert code == 1 and "inside an input" in err
    existing = write(zoo / "mine.tr", "# mine\n")
    code, _, err = run(capsys, *base_args, "-o", existing)
    assert code == 1 and "already exists" in err and existing.read_text() == "# mine\n"
    # build --force never deletes a directory holding the recipe or files tailor did not write
    (zoo / "work").mkdir()
    recipe = write(zoo / "work/r.tr", TWO.replace('"qz/', '"../qz/'))
    code, _, err = run(capsys, "build", recipe, "-o", zoo / "work", "--force")
    assert code == 1 and recipe.exists()
    (zoo / "notes").mkdir()
    write(zoo / "notes/todo.txt", "keep me")
    code, _, err = run(capsys, "build", write(zoo / "r.tr", TWO), "-o", zoo / "notes", "--force")
    assert code == 1 and "did not write" in err and (zoo / "notes/todo.txt").exists()
    assert run(capsys, "build", zoo / "r.tr", "-o", zoo / "built")[0] == 0
    assert run(capsys, "build", zoo / "r.tr", "-o", zoo / "built", "--force")[0] == 0


@pytest.mark.parametrize("argv", [
    ("eval", "M", "--tasks", "T", "--limit", "0"),
    ("eval", "M", "--tasks", "T", "--batch-size", "0"),
    ("eval", "M", "--tasks", "T", "--threads", "-1"),
    ("evolve", "R", "--population", "1"),
    ("evolve", "R", "--generations", "-1"),
    ("evolve", "R", "--min-limit", "0"),
    ("build", "R", "-o", "O", "--shard-size", "inf"),
    ("prune", "M", "--method", "sleb", "--calib", "C", "-o", "O", "--samples", "0"),
])
def test_bad_flag_values_are_usage_errors_not_bugs(argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 1


def test_export_says_each_problem_once_and_rewrites_take_exactly(family_root, tmp_path, capsys):
    (tmp_path / "fam").symlink_to(family_root / "fam")
    bad = write(tmp_path / "bad.tr", """model base = "fam/base"
model math = "fam/math"
slot 0..4 = merge(base, math, weights=[0.5, 0.5], method=task_arithmetic, scale=0.5)
slot 4..8 = merge(base, math, weights=[0.5, 0.5], method=linear, scale=0.5)
""")
    code, _, err = run(capsys, "export", bad, "--to", "mergekit")
    headers = [line for line in err.splitlines() if ": error: " in line]
    assert code == 1 and len(headers) == len(set(headers)) <= 3  # not once per slot (8)
    good = write(tmp_path / "good.tr", """model base = "fam/base"
model math = "fam/math"
model code = "fam/code"
slot 0..4 = merge(math, code, weights=[0.5, 0.5], method=task_arithmetic)
slot 4..8 = take(math)
""")
    code, out, _ = run(capsys, "export", good, "--to", "mergekit")
    # take(math) becomes a slice whose own base_model is math alone: math's tensors exactly
    assert code == 0 and any(line.strip().startswith("base_model:") and
                             line.rstrip().endswith("fam/math") for line in out.splitlines())


def test_import_writes_the_compact_form_with_the_configs_name(tmp_path, capsys):
    config = write(tmp_path / "pruned.yml", """name: tiny-pruned
slices:
  - sources: [{model: fam/base, layer_range: [0, 5]}]
  - sources: [{model: fam/base, layer_range: [7, 8]}]
merge_method: passthrough
""")
    code, out, _ = run(capsys, "import", config)
    assert code == 0 and 'name = "tiny-pruned"' in out
    assert "slot 0..5 = take(base)" in out and "slot 5..7 = drop" in out and "layer=" not in out
