"""Score a causal LM on tasks: accuracy, exact match and perplexity as plain floats.

Consumes a model (anything called as ``model(input_ids, attention_mask, position_ids).logits``),
its HF tokenizer and `Task` values. Produces one frozen `TaskScore` per task, plus helpers that
turn scores into a fitness number (`mean_score`) or a JSON-ready dict (`scores_to_json`).
Nothing here prints; rendering is the CLI's job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recipe_compiler.evaluate.generate import greedy_generate
from recipe_compiler.evaluate.loglik import loglikelihoods, rolling_token_logprobs
from recipe_compiler.evaluate.modelio import model_max_length
from recipe_compiler.evaluate.tasks import GenItem, McItem, Task, TaskKind

# Head-room over the longest answer, so an answer tokenised differently after the prompt, or
# followed by the newline that stops decoding, still fits.
GEN_EXTRA_TOKENS = 4

PRIMARY_METRIC: dict[str, str] = {"mc": "acc", "gen": "exact_match", "ppl": "ppl"}


@dataclass(frozen=True)
class TaskScore:
    """Result of one task; `primary` is acc (mc), exact_match (gen) or ppl (ppl)."""

    task: str
    kind: TaskKind
    n: int  # items scored; tokens scored for a ppl task
    metrics: dict[str, float]
    primary: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "primary": _json_float(self.primary),
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
        }


def evaluate(
    model: Any,
    tokenizer: Any,
    tasks: Task | Iterable[Task],
    *,
    limit: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_new_tokens: int | None = None,
    max_length: int | None = None,
) -> dict[str, TaskScore]:
    """Score `model` on each task, keyed by task name, in the order given.

    `limit` keeps the first N items of each task; for a perplexity task it keeps the first N
    windows of the text. `max_length` overrides the context length read from the model config.
    The model is put in eval mode for the call and restored afterwards.
    """
    task_list = [tasks] if isinstance(tasks, Task) else list(tasks)
    names = [t.name for t in task_list]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate task names: {dupes}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    opts = _Options(
        batch_size=batch_size,
        device=device,
        max_new_tokens=max_new_tokens,
        max_length=max_length or model_max_length(model, tokenizer),
        limit=limit,
    )
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()  # dropout would make scores random
    try:
        with torch.inference_mode():
            return {t.name: _score_task(model, tokenizer, t, opts) for t in task_list}
    finally:
        if was_training:
            model.train()


def mean_score(scores: Mapping[str, TaskScore]) -> float:
    """Mean primary metric over mc and gen tasks (perplexity is on another scale, so excluded)."""
    values = [s.primary for s in scores.values() if s.kind in ("mc", "gen")]
    if not values:
        raise ValueError("no multiple-choice or generation task to average")
    return sum(values) / len(values)


def scores_to_json(scores_by_model: Mapping[str, Mapping[str, TaskScore]]) -> dict[str, Any]:
    """Plain, JSON-serialisable ``{model: {"mean_score": x | None, "tasks": {task: {...}}}}``."""
    out: dict[str, Any] = {}
    for model_name, scores in scores_by_model.items():
        has_mean = any(s.kind in ("mc", "gen") for s in scores.values())
        out[model_name] = {
            "mean_score": _json_float(mean_score(scores)) if has_mean else None,
            "tasks": {name: s.to_json() for name, s in scores.items()},
        }
    return out


@dataclass(frozen=True)
class _Options:
    batch_size: int
    device: str | torch.device
    max_new_tokens: int | None
    max_length: int
    limit: int | None


def _score_task(model: Any, tokenizer: Any, task: Task, opts: _Options) -> TaskScore:
    if task.kind == "ppl":
        return _score_ppl(model, tokenizer, task, opts)
    items = task.items[: opts.limit]
    if task.kind == "mc":
        metrics = _score_mc(model, tokenizer, items, opts)  # type: ignore[arg-type]
    else:
        metrics = _score_gen(model, tokenizer, items, opts)  # type: ignore[arg-type]
    primary = metrics[PRIMARY_METRIC[task.kind]]
    return TaskScore(task=task.name, kind=task.kind, n=len(items), metrics=metrics, primary=primary)


def _score_mc(
    model: Any, tokenizer: Any, items: Sequence[McItem], opts: _Options
) -> dict[str, float]:
    pairs = [(item.context, choice) for item in items for choice in item.choices]
    lls = loglikelihoods(
        model,
        tokenizer,
        pairs,
        batch_size=opts.batch_size,
        device=opts.device,
        max_length=opts.max_length,
    )
    hits = {"acc": 0, "acc_norm": 0, "acc_bytes": 0}
    offset = 0
    for item in items:
        item_lls = lls[offset : offset + len(item.choices)]
        offset += len(item.choices)
        # Normalised as lm-eval does: by the choice's length in characters, or in UTF-8 bytes.
        chars = [ll / len(c) for ll, c in zip(item_lls, item.choices, strict=True)]
        nbytes = [ll / len(c.encode("utf-8")) for ll, c in zip(item_lls, item.choices, strict=True)]
        hits["acc"] += argmax(item_lls) == item.gold
        hits["acc_norm"] += argmax(chars) == item.gold
        hits["acc_bytes"] += argmax(nbytes) == item.gold
    return {name: count / len(items) for name, count in hits.items()}


def _score_gen(
    model: Any, tokenizer: Any, items: Sequence[GenItem], opts: _Options
) -> dict[str, float]:
    max_new = opts.max_new_tokens or default_max_new_tokens(tokenizer, [i.answer for i in items])
    preds = greedy_generate(
        model,
        tokenizer,
        [item.prompt for item in items],
        max_new_tokens=max_new,
        batch_size=opts.batch_size,
        device=opts.device,
        max_length=opts.max_length,
    )
    matches = sum(p.strip() == item.answer.strip() for p, item in zip(preds, items, strict=True))
    return {"exact_match": matches / len(items)}


def default_max_new_tokens(tokenizer: Any, answers: Sequence[str]) -> int:
    """Token count of the longest answer plus a little head-room."""
    longest = max(len(tokenizer.encode(a.strip(), add_special_tokens=False)) for a in answers)
    return longest + GEN_EXTRA_TOKENS


def _score_ppl(model: Any, tokenizer: Any, task: Task, opts: _Options) -> TaskScore:
    text = task.items[0]
    assert isinstance(text, str)
    logprobs = rolling_token_logprobs(
        model,
        tokenizer,
        text,
        window=opts.max_length,
        batch_size=opts.batch_size,
        device=opts.device,
        max_windows=opts.limit,
    )
    if not logprobs:
        from recipe_compiler.evaluate.tasks import TaskError

        raise TaskError(task.path, None, "the tokenizer makes no tokens of this text")
    nll = -math.fsum(logprobs) / len(logprobs)
    ppl = math.exp(nll)
    return TaskScore(
        task=task.name, kind="ppl", n=len(logprobs), metrics={"ppl": ppl, "nll": nll}, primary=ppl
    )


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties, as ``numpy.argmax``."""
    return max(range(len(values)), key=values.__getitem__)


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None
