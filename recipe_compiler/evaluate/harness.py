"""Optional backend: run lm-eval-harness on a saved HF model directory.

Consumes a local model directory (``config.json``, weights, tokenizer files), lm-eval task names
and optionally a folder of task YAMLs (``include_path``). Produces ``{task: {metric: value}}``
with lm-eval's filter suffix dropped (``"acc,none"`` -> ``"acc"``).

lm-eval is imported lazily (``pip install .[harness]``). Hub access is switched off unless the
caller set the variables already: everything, datasets included, must be local.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


class HarnessUnavailable(RuntimeError):
    """lm-eval-harness is not installed."""


def run_harness(
    model_dir: str | Path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    include_defaults: bool = True,
) -> dict[str, dict[str, float]]:
    """Evaluate the model in `model_dir` on lm-eval `tasks`; numeric metrics per task.

    `include_defaults=False` skips indexing lm-eval's thousands of built-in task YAMLs, which
    saves seconds when only tasks from `include_path` are wanted.
    """
    for var in _OFFLINE_VARS:
        os.environ.setdefault(var, "1")  # read at import time by datasets / huggingface_hub
    lm_eval = _import_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=None if include_path is None else str(include_path),
        include_defaults=include_defaults,
    )
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={Path(model_dir).resolve()}",
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        device=device,
        batch_size=batch_size,
        log_samples=False,
    )
    if output is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results")
    return {task: _numeric_metrics(metrics) for task, metrics in output["results"].items()}


def _import_lm_eval() -> Any:
    try:
        return importlib.import_module("lm_eval")
    except ImportError as exc:
        raise HarnessUnavailable(
            "the lm-eval-harness backend needs the 'lm-eval' package: pip install '.[harness]'"
        ) from exc


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``{"acc,none": 0.5, "alias": "x", "acc_stderr,none": "N/A"}`` -> ``{"acc": 0.5}``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name, _, filter_name = key.partition(",")
        out[name if filter_name in ("", "none") else key] = float(value)
    return out
