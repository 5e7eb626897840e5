"""Scoring models on tasks: multiple choice, exact match, perplexity.

Consumes task files (`load_task`, `load_tasks`), a causal LM and its HF tokenizer; produces a
`TaskScore` per task (`evaluate`), a fitness number (`mean_score`) and JSON (`scores_to_json`).
The optional lm-eval-harness backend lives in `recipe_compiler.evaluate.harness`.
"""

from recipe_compiler.evaluate.generate import greedy_generate
from recipe_compiler.evaluate.loglik import encode_pair, loglikelihoods, rolling_token_logprobs
from recipe_compiler.evaluate.scoring import TaskScore, evaluate, mean_score, scores_to_json
from recipe_compiler.evaluate.tasks import GenItem, McItem, Task, TaskError, load_task, load_tasks

__all__ = [
    "GenItem",
    "McItem",
    "Task",
    "TaskError",
    "TaskScore",
    "encode_pair",
    "evaluate",
    "greedy_generate",
    "load_task",
    "load_tasks",
    "loglikelihoods",
    "mean_score",
    "rolling_token_logprobs",
    "scores_to_json",
]
