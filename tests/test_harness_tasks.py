"""lm-eval-harness task YAMLs as tailor tasks: loaded by lm-eval itself, scored as lm-eval
scores them, usable as a search's fitness tasks."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from recipe_compiler.evaluate import McItem, TaskError, evaluate, load_task, load_tasks

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm-eval not installed")

HERE = Path(__file__).parent / "data" / "harness_tasks"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))


def test_a_folder_of_yamls_gives_each_task_its_kind_and_split():
    tasks = {t.name: t for t in load_tasks([HERE])}  # _sums_common.yaml: a template, skipped
    assert {n: (t.kind, len(t.items)) for n, t in tasks.items()} == {
        "sums_mc": ("mc", 8), "sums_gen": ("gen", 8), "prose": ("ppl", 1)}
    first = tasks["sums_mc"].items[0]
    # lm-eval's prompt, its default target delimiter before each choice, the gold index
    assert first == McItem("Question: what is 6 plus 8?\nAnswer:", (" 12", " 14", " 15"), 1)
    assert tasks["sums_gen"].items[0].prompt == "6 plus 8 ="
    assert tasks["sums_gen"].items[0].answer == " 14"
    lines = tasks["prose"].items[0].splitlines()
    assert lines[1] == "Every morning the baker opens the shop at six."
    val = {t.name: len(t.items) for t in load_tasks([HERE], split="validation")}
    assert val == {"sums_mc": 6, "sums_gen": 6, "prose": 1}  # prose has no validation split


def test_multiple_choice_accuracy_is_lm_evals(quick_zoo, tmp_path):
    """The same model scored by `tailorc eval`'s scorer and by lm-eval itself."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = quick_zoo / "base"
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    tok = AutoTokenizer.from_pretrained(base)
    ours = evaluate(model, tok, [load_task(HERE / "sums_mc.yaml")])["sums_mc"]
    here = tmp_path / "tasks"
    shutil.copytree(HERE, here)
    import os

    cwd = os.getcwd()
    os.chdir(here)  # lm-eval reads data_files from the working directory
    try:
        out = lm_eval.simple_evaluate(
            model="hf", model_args=f"pretrained={base},dtype=float32", tasks=["sums_mc"],
            task_manager=TaskManager(include_path=str(here), include_defaults=False),
            device="cpu", batch_size=4)
    finally:
        os.chdir(cwd)
    assert out["results"]["sums_mc"]["acc,none"] == ours.metrics["acc"]


def test_the_search_tunes_on_the_validation_documents(quick_zoo, tmp_path):
    from recipe_compiler.search import make_evaluator, prepare

    models = "\n".join(f'model {m} = "{quick_zoo / m}"' for m in ("base", "math", "code"))
    path = tmp_path / "s.tr"
    path.write_text(f'{models}\nslot 0..12 = ?\nsearch {{\n  remove = 25%\n'
                    f'  tasks = "{HERE / "sums_mc.yaml"}"\n  limit = 6\n}}\n')
    ev = make_evaluator(prepare(path, {}))
    assert [(t.name, len(t.items)) for t in ev.tasks] == [("sums_mc", 6)]


@pytest.mark.parametrize("text, message", [
    ("task: [unclosed", "not valid YAML"),
    ("dataset_path: json\n", "no 'task:' name at the top level"),
    ("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nowhere.jsonl\n"
     "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: c\ndoc_to_target: 0\n",
     "lm-eval could not load task 't'"),
    ("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
     f"    test: {HERE / 'data' / 'sums_test.jsonl'}\ntest_split: test\n"
     "output_type: loglikelihood\ndoc_to_text: q\ndoc_to_target: answer\n",
     "output_type 'loglikelihood' is not supported"),
    ("task: t\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
     f"    test: {HERE / 'data' / 'sums_test.jsonl'}\ntest_split: test\n"
     "output_type: multiple_choice\ndoc_to_text: q\ndoc_to_choice: choices\n"
     "doc_to_target: q\n", "doc_to_target gave"),
])
def test_a_yaml_tailor_cannot_score_is_an_error_naming_it(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TaskError, match=message) as info:
        load_task(path)
    assert str(info.value).startswith(str(path))
