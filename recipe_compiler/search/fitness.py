"""Fitness of candidate recipes, in memory: no checkpoint is written per candidate.

Consumes: the search space's models (loaded once), task files, and closed candidate recipes.
Produces: per-task scores of a candidate at a given number of examples per task.

Three caches make a population cheap:
- layers: `take` refers to the loaded model's own layer module (no copy); a merged or scaled
  layer is computed once and kept by its exact definition (LRU);
- activations: the hidden states after the first k layers of a candidate depend only on those
  k layer definitions, so they are cached by that prefix (per batch, LRU within a byte
  budget) and candidates sharing a prefix skip its layers;
- scores: a candidate seen before is not evaluated again.
Turning the caches off gives identical numbers (tests check it): every path runs the same
operations on the same tensors.

Multiple choice is scored by log-likelihood exactly as `recipe_compiler.evaluate` does
(same tokenisation); generation items are scored by teacher forcing — a greedy decode
reproduces the answer iff every answer token, and then a stop token, is the argmax — which
equals greedy exact match when answers have one tokenisation (true of the zoo's tokenizer).
Works on Llama-style layer stacks (Llama, Mistral, Qwen2, Qwen3).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from recipe_compiler.compiler.plan import merge_expr, needs_base, tensor_key
from recipe_compiler.evaluate import McItem, Task
from recipe_compiler.evaluate.loglik import encode_pairs, encode_texts
from recipe_compiler.execute.merge import combine
from recipe_compiler.language.recipe import ClosedOp, Drop, Merge, Recipe, Take
from recipe_compiler.models.index import Models

FAST_ARCHES = ("llama", "mistral", "qwen2", "qwen3")
# Below every real fitness (a weighted mean of accuracies, in [0, 1]); finite, so that
# history.jsonl stays plain JSON and the plot keeps its scale.
FAILED_FITNESS = -1.0

log = logging.getLogger("recipe_compiler")


def _describe(recipe: Recipe) -> str:
    from recipe_compiler.language.printer import format_op

    return "; ".join(f"{i}: {format_op(op)}" for i, op in enumerate(recipe.ops()))


@dataclass
class CacheStats:
    layer_hits: int = 0
    layer_misses: int = 0
    act_hits: int = 0  # layer applications skipped thanks to a cached prefix
    act_misses: int = 0  # layer applications run
    score_hits: int = 0
    evaluations: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.act_hits + self.act_misses
        return self.act_hits / total if total else 0.0


@dataclass(frozen=True)
class _Batch:
    task: int  # index into the task list
    items: range  # which items of the task it scores
    ids: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 for real tokens
    targets: list[list[tuple[int, int]]]  # per row: per option: (start, end) in ids of the target
    golds: list[int]


class _LRU(OrderedDict):
    def __init__(self, budget: int, size=lambda v: 1):
        super().__init__()
        self.budget, self.size, self.used = budget, size, 0

    def get_(self, key):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key, value) -> None:
        if key in self:
            return
        self[key] = value
        self.used += self.size(value)
        while self.used > self.budget and len(self) > 1:
            _, old = self.popitem(last=False)
            self.used -= self.size(old)


class Evaluator:
    """Scores closed recipes over a fixed set of tasks, sharing work between candidates."""

    def __init__(self, recipe: Recipe, models: Models, tasks: list[Task], tokenizer, *,
                 weights: tuple[float, ...] = (), device: str = "cpu", batch_size: int = 32,
                 rungs: tuple[int, ...] = (100,), act_budget: int = 2 << 30,
                 layer_cache: int = 256, caches: bool = True):
        from transformers import AutoModelForCausalLM

        self.recipe, self.models, self.device = recipe, models, torch.device(device)
        self.base_name = recipe.base_name or ""
        arch = models[self.base_name].arch
        if arch.name not in FAST_ARCHES:
            raise ValueError(f"the in-memory search supports {', '.join(FAST_ARCHES)}; "
                             f"'{self.base_name}' is {arch.name}")
        self.arch = arch
        self.hf = {name: AutoModelForCausalLM.from_pretrained(
            info.path, dtype=torch.float32).to(self.device).eval()
            for name, info in models.items()}
        self.tasks = [t for t in tasks if t.kind in ("mc", "gen")]
        self.task_weights = weights or tuple(1.0 for _ in self.tasks)
        self.rungs = rungs
        self.caches = caches
        self.stats = CacheStats()
        self._layers = _LRU(layer_cache)
        self._acts = _LRU(act_budget, size=lambda t: t.numel() * t.element_size())
        self._scores: dict[tuple, dict[str, float]] = {}
        self.failures: list[tuple[Recipe, str]] = []  # candidates that could not be scored
        self.tokenizer = tokenizer
        self.batches = self._make_batches(tokenizer, batch_size)

    # --- inputs ------------------------------------------------------------------------

    def _make_batches(self, tokenizer, batch_size: int) -> list[_Batch]:
        """Batches cover items [0, r0), [r0, r1), ... separately, so a higher rung reuses
        every batch (and cached activation) of the lower ones."""
        batches = []
        stop_ids = _stop_ids(tokenizer)
        for k, task in enumerate(self.tasks):
            edges = [0] + [min(r, len(task.items)) for r in self.rungs]
            for lo, hi in zip(edges, edges[1:]):
                for start in range(lo, hi, batch_size):
                    rows = range(start, min(hi, start + batch_size))
                    batches.append(self._batch(k, task, rows, tokenizer, stop_ids))
        return batches

    def _batch(self, k: int, task: Task, rows: range, tokenizer, stop_ids) -> _Batch:
        seqs, targets, golds = [], [], []
        for i in rows:
            item = task.items[i]
            if isinstance(item, McItem):
                pairs = encode_pairs(tokenizer, [(item.context, c) for c in item.choices])
                golds.append(item.gold)
            else:
                pairs = encode_pairs(tokenizer, [(item.prompt, item.answer)])
                golds.append(0)
            row_targets = []
            for ctx, cont in pairs:
                if not isinstance(item, McItem):
                    cont = cont + (stop_ids[0],)
                full = list(ctx + cont)
                row_targets.append((len(seqs), len(ctx), len(full)))
                seqs.append(full)
            targets.append(row_targets)
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        return _Batch(k, rows, ids.to(self.device), mask.to(self.device), targets, golds)

    # --- layers ------------------------------------------------------------------------

    def _stack(self, name: str):
        return self.hf[name].model.layers

    def layer_key(self, op: ClosedOp, src: int) -> tuple:
        if isinstance(op, Take) and op.scale in (None, 1.0):
            return ("take", op.model, src)
        return ("made", op, src)

    def layer(self, op: ClosedOp, src: int) -> torch.nn.Module:
        key = self.layer_key(op, src)
        if key[0] == "take":
            return self._stack(op.model)[src]
        cached = self._layers.get_(key) if self.caches else None
        if cached is not None:
            self.stats.layer_hits += 1
            return cached
        self.stats.layer_misses += 1
        module = self._make_layer(op, src)
        if self.caches:
            self._layers.put(key, module)
        return module

    @torch.no_grad()
    def _make_layer(self, op: Take | Merge, src: int) -> torch.nn.Module:
        module = copy.deepcopy(self._stack(self.base_name)[src])
        params = dict(module.named_parameters())
        for suffix, param in params.items():
            scale = op.scale if op.scale is not None and self.arch.is_scaled(suffix) else None
            if isinstance(op, Take):
                value = dict(self._stack(op.model)[src].named_parameters())[suffix].float()
                value = value * scale if scale is not None else value
            else:
                xs = [dict(self._stack(m)[src].named_parameters())[suffix].float()
                      for m in op.models]
                base = (dict(self._stack(self.base_name)[src].named_parameters())[suffix]
                        .float() if needs_base(op) else None)
                value = combine(merge_expr(op, (), None, scale, tensor_key(src, suffix)), xs,
                                base)
            param.copy_(value)
        return module

    # --- forward -----------------------------------------------------------------------

    def layer_plan(self, recipe: Recipe) -> list[tuple[tuple, ClosedOp, int]]:
        plan = []
        for i, op in enumerate(recipe.ops()):
            if isinstance(op, Drop):
                continue
            src = op.layer if op.layer is not None else i
            plan.append((self.layer_key(op, src), op, src))
        return plan

    @torch.no_grad()
    def hidden_states(self, recipe: Recipe, batch_index: int) -> torch.Tensor:
        """Hidden states of batch `batch_index` after the recipe's last layer."""
        batch = self.batches[batch_index]
        plan = self.layer_plan(recipe)
        prefix_keys = []  # nested (prefix, key) pairs: equal exactly when the layers are
        h = None
        prefix: tuple = ()
        for key, _, _ in plan:
            prefix = (prefix, key)
            prefix_keys.append(prefix)
        start = 0
        if self.caches:
            for k in range(len(plan), 0, -1):
                h = self._acts.get_((batch_index, prefix_keys[k - 1]))
                if h is not None:
                    start = k
                    break
        self.stats.act_hits += start
        if h is None:
            h = self.hf[self.base_name].model.embed_tokens(batch.ids)
        aux = self._aux(batch, h)
        for k in range(start, len(plan)):
            _, op, src = plan[k]
            out = self.layer(op, src)(h, attention_mask=aux[0], position_ids=aux[1],
                                      position_embeddings=aux[2])
            h = out[0] if isinstance(out, tuple) else out
            self.stats.act_misses += 1
            if self.caches:
                self._acts.put((batch_index, prefix_keys[k]), h)
        return h

    def _aux(self, batch: _Batch, h: torch.Tensor):
        mask = batch.mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        n = mask.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        allowed = causal[None, None] & mask[:, None, None, :].bool()
        additive = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device)
        additive.masked_fill_(~allowed, torch.finfo(h.dtype).min)
        rotary = self.hf[self.base_name].model.rotary_emb
        return additive, positions, rotary(h, positions)

    @torch.no_grad()
    def batch_logprobs(self, recipe: Recipe, batch_index: int) -> torch.Tensor:
        base = self.hf[self.base_name]
        h = self.hidden_states(recipe, batch_index)
        return torch.log_softmax(base.lm_head(base.model.norm(h)).float(), dim=-1)

    # --- scores ------------------------------------------------------------------------

    def scores(self, recipe: Recipe, rung: int) -> dict[str, float]:
        """Per-task accuracy over the first `self.rungs[rung]` items of each task.

        A candidate that cannot be scored (an exception, or non-finite log-probabilities)
        gets NaN for every task, which `fitness` turns into the worst fitness, and the reason
        is logged and kept in `self.failures`: one bad candidate must not end a night's
        search. The NaN result is cached like any other, so runs stay reproducible."""
        key = (recipe, rung)
        if self.caches and key in self._scores:
            self.stats.score_hits += 1
            return self._scores[key]
        try:
            return self._scores_of(recipe, rung)
        except Exception as exc:  # noqa: BLE001 - any failure of one candidate, see above
            reason = f"{type(exc).__name__}: {exc}"
            self.failures.append((recipe, reason))
            log.warning("tailorc: warning: candidate could not be scored, given the worst "
                        "fitness: %s (%s)", reason, _describe(recipe))
            result = {t.name: math.nan for t in self.tasks}
            if self.caches:
                self._scores[key] = result
            return result

    def _scores_of(self, recipe: Recipe, rung: int) -> dict[str, float]:
        key = (recipe, rung)
        self.stats.evaluations += 1
        limit = self.rungs[rung]
        right = [0] * len(self.tasks)
        count = [0] * len(self.tasks)
        for b, batch in enumerate(self.batches):
            if batch.items.start >= limit:
                continue
            logprobs = self.batch_logprobs(recipe, b)
            if not bool(torch.isfinite(logprobs).all()):
                raise FloatingPointError(f"non-finite log-probabilities on task "
                                         f"'{self.tasks[batch.task].name}'")
            for row_targets, gold in zip(batch.targets, batch.golds):
                right[batch.task] += _correct(logprobs, batch.ids, row_targets, gold)
                count[batch.task] += 1
        result = {t.name: right[k] / max(count[k], 1) for k, t in enumerate(self.tasks)}
        if self.caches:
            self._scores[key] = result
        return result

    def fitness(self, scores: dict[str, float]) -> float:
        if any(math.isnan(v) for v in scores.values()):
            return FAILED_FITNESS
        total = sum(self.task_weights)
        return sum(w * scores[t.name] for w, t in zip(self.task_weights, self.tasks)) / total


def _correct(logprobs: torch.Tensor, ids: torch.Tensor, row_targets, gold: int) -> int:
    if len(row_targets) > 1:  # multiple choice: the gold continuation has the highest loglik
        lls = [_target_logprob(logprobs, ids, t) for t in row_targets]
        best = max(range(len(lls)), key=lambda i: (lls[i], -i))
        return int(best == gold)
    seq, start, end = row_targets[0]  # generation: every target token is the argmax
    predicted = logprobs[seq, start - 1 : end - 1].argmax(-1)
    return int(torch.equal(predicted, ids[seq, start:end]))


def _target_logprob(logprobs: torch.Tensor, ids: torch.Tensor, target) -> float:
    seq, start, end = target
    rows = logprobs[seq, start - 1 : end - 1]
    return float(rows.gather(-1, ids[seq, start:end, None]).sum())


def _stop_ids(tokenizer) -> tuple[int, ...]:
    newline = encode_texts(tokenizer, ["\n"])[0]
    specials = set(tokenizer.all_special_ids)
    newline = tuple(t for t in newline if t not in specials)
    eos = tokenizer.eos_token_id
    out = tuple(newline[:1]) + ((eos,) if eos is not None else ())
    if not out:
        raise ValueError("the tokenizer has neither a newline token nor an EOS token")
    return out
