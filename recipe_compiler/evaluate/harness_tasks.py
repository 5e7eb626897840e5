"""lm-eval-harness task YAMLs as tailor tasks, so that a search can score its candidates on
the same tasks a user runs with lm-eval (GPTailor scores candidates with lm-eval tasks).

Consumes: a task YAML of lm-eval-harness (`task:`, `dataset_path`, `doc_to_text`,
`doc_to_choice`, `doc_to_target`, ...), whose data is local: a `json`/`csv`/`parquet` dataset
with `data_files`, or a dataset already in the Hugging Face cache. Nothing is downloaded
(the Hub is switched off unless the caller set its variables).
Produces: a `Task` of `McItem`s, `GenItem`s or one perplexity text, built by lm-eval itself
from its config, so prompts are exactly lm-eval's:

- `multiple_choice`: the context is lm-eval's (`fewshot_context`: description, the config's
  `num_fewshot` examples, `doc_to_text`), each choice `target_delimiter + choice`, the gold
  `doc_to_target` (an index, or a choice's text); scored as lm-eval's `acc`.
- `generate_until`: the prompt as above, the answer `doc_to_target`; scored as greedy exact
  match after stripping whitespace (tailor's generation scoring; lm-eval's own filters and
  regexes are not applied).
- `loglikelihood_rolling`: the documents' `doc_to_target` texts, one per line, as a
  perplexity text.

Documents: lm-eval's evaluation split (its test split when the YAML names one, else
validation), or with `split="validation"` the validation split when there is one: what a
search should tune on. Relative `data_files` are read as lm-eval reads them, from the
working directory, and failing that from the YAML's folder.
lm-eval is imported lazily (`pip install '.[harness]'`); every problem is a `TaskError`
naming the YAML.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from recipe_compiler.evaluate.tasks import GenItem, McItem, Task, TaskError

YAML_SUFFIXES = (".yaml", ".yml")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
KINDS = ("multiple_choice", "generate_until", "loglikelihood_rolling")


def is_task_yaml(path: Path, text: str) -> bool:
    """Whether a YAML file defines one lm-eval task (a top-level `task:` naming it), rather
    than a group or a template other YAMLs `include`."""
    return _task_name(path, text, quiet=True) is not None


def load_harness_task(path: Path, text: str, split: str | None = None) -> Task:
    """The lm-eval task the YAML at `path` (with contents `text`) defines, as a tailor Task."""
    name = _task_name(path, text)
    task = _lm_eval_task(path, name)
    kind = task.config.output_type
    if kind not in KINDS:
        raise TaskError(path, None, f"output_type '{kind}' is not supported (tailor scores "
                        f"{', '.join(KINDS)})")
    docs = _docs(path, task, split)
    if not docs:
        raise TaskError(path, None, "the task has no documents")
    try:
        if kind == "loglikelihood_rolling":
            lines = [" ".join(str(task.doc_to_target(d)).split()) for d in docs]
            return Task(name=name, kind="ppl", items=("\n".join(lines),), path=path)
        shots = int(task.config.num_fewshot or 0)
        delimiter = task.config.target_delimiter
        items: list[McItem] | list[GenItem] = []
        for doc in docs:
            context = task.fewshot_context(doc, shots)
            if not isinstance(context, str):
                raise TaskError(path, None, "chat-formatted contexts are not supported")
            if kind == "multiple_choice":
                choices = [str(c) for c in task.doc_to_choice(doc)]
                gold = _gold(path, task.doc_to_target(doc), choices)
                items.append(McItem(context, tuple(delimiter + c for c in choices), gold))
            else:
                target = task.doc_to_target(doc)
                if isinstance(target, list):
                    target = target[0]
                if isinstance(target, int) and task.config.doc_to_choice is not None:
                    target = task.doc_to_choice(doc)[target]
                items.append(GenItem(context, str(target)))
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - a template or field the docs do not fit
        raise TaskError(path, None, f"lm-eval could not make the task's prompts: "
                        f"{type(exc).__name__}: {exc}") from None
    return Task(name=name, kind="mc" if kind == "multiple_choice" else "gen",
                items=tuple(items), path=path)


def _task_name(path: Path, text: str, quiet: bool = False) -> str | None:
    import yaml

    class Loader(yaml.SafeLoader):  # lm-eval's `!function` tags need not resolve here
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        doc = yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        if quiet:
            return None
        mark = getattr(exc, "problem_mark", None)
        raise TaskError(path, mark.line + 1 if mark else None,
                        f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    name = doc.get("task") if isinstance(doc, dict) else None
    if isinstance(name, str) and name:
        return name
    if quiet:
        return None
    raise TaskError(path, None, "not an lm-eval task YAML: no 'task:' name at the top level "
                    "(groups and templates cannot be scored themselves)")


def _lm_eval_task(path: Path, name: str) -> Any:
    for var in _OFFLINE_VARS:
        os.environ.setdefault(var, "1")  # read at import time by datasets / huggingface_hub
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError:
        raise TaskError(path, None, "lm-eval task YAMLs need the 'lm-eval' package: "
                        "pip install '.[harness]'") from None
    folder = path.resolve().parent
    quiet = io.StringIO()
    logs = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "datasets")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    bars = _progress_bars(False)
    tasks: dict = {}
    try:
        for where in (None, folder):  # as lm-eval reads data_files, then from the folder
            try:
                with _cwd(where), warnings.catch_warnings(), \
                        contextlib.redirect_stdout(quiet):
                    warnings.simplefilter("ignore")
                    manager = TaskManager(include_path=str(folder), include_defaults=False)
                    tasks = get_task_dict([name], manager)
                break
            except FileNotFoundError:
                if where is not None:
                    raise
    except Exception as exc:  # noqa: BLE001 - lm-eval's and datasets' errors, any type
        raise TaskError(path, None, f"lm-eval could not load task '{name}': "
                        f"{type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
        _progress_bars(bars)
    task = tasks.get(name)
    if task is None or not hasattr(task, "config"):
        raise TaskError(path, None, f"lm-eval did not load '{name}' as a single task")
    return task


def _docs(path: Path, task: Any, split: str | None) -> list:
    try:
        if split == "validation" and task.has_validation_docs():
            return list(task.validation_docs())
        return list(task.eval_docs)
    except Exception as exc:  # noqa: BLE001 - datasets' errors
        raise TaskError(path, None, f"cannot read the task's documents: {type(exc).__name__}: "
                        f"{_first_line(exc)}") from None


def _progress_bars(on: bool) -> bool:
    """Turn datasets' progress bars on or off (a task loads in a blink; its bars are noise
    in tailor's output); returns whether they were on."""
    try:
        from datasets.utils import logging as ds_logging
    except ImportError:
        return on
    was = ds_logging.is_progress_bar_enabled()
    (ds_logging.enable_progress_bar if on else ds_logging.disable_progress_bar)()
    return was


def _gold(path: Path, target: Any, choices: list[str]) -> int:
    if isinstance(target, list):  # several right answers: lm-eval's acc takes any; keep one
        target = target[0]
    if isinstance(target, str):
        if target in choices:
            return choices.index(target)
        if target.strip().isdigit():
            target = int(target)
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(choices):
        raise TaskError(path, None, f"doc_to_target gave {target!r}, which is not one of the "
                        f"{len(choices)} choices or an index into them")
    return target


@contextlib.contextmanager
def _cwd(folder: Path | None):
    """lm-eval and datasets read relative `data_files` from the working directory."""
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
