"""Fitness of candidate recipes, in memory: no checkpoint is written per candidate.

Consumes: the space's models (headers; tensors are read lazily), task files, and closed
candidate recipes.
Produces: per-task scores of a candidate at a given number of examples per task.

Layers come from `search.store.LayerStore` (the build's lowering and merge code, one byte
budget for everything kept) and run inside the base's own Hugging Face model
(`search.stack.Stack`), so any architecture `build` supports can be searched, with
transformers' own masks and positions. What makes a population cheap:
- layers: a layer is read or merged once and kept, by its exact definition, while the budget
  allows;
- activations: the hidden states after a candidate's first k layers depend only on those k
  layer definitions, so they are kept by that prefix (per pass) in the same budget, and
  candidates sharing a prefix skip its layers;
- a generation: `scores_many` runs its new candidates together, batch by batch, as a tree
  of their layer prefixes (`Stack.hidden_many`), the prefixes that go on through the same
  layer at the same slot stacked into one call;
- scores: a candidate seen before is not evaluated again;
- the output head runs only at the positions that are scored, not over the whole batch;
- contexts: a multiple-choice item is one row, its context once and each choice after it as
  a branch that sees the context and itself only (a 4-D attention mask, and each choice's
  positions continuing from the context's end), so four choices cost one context, not four;
- last tokens: a continuation's last token is not run, as lm-eval does not run it: its
  output predicts nothing scored and nothing in its branch reads it;
- forward passes: with contexts shared, the items a rung adds, of every task, are packed
  side by side into rows of one width and run as passes of about `batch_size` rows
  (`_fuse`), not one pass per task and batch: each layer of a candidate is one call per
  pass, so fewer, fuller passes mean fewer calls, whose fixed cost dominates small layers.
Turning the caches off gives the same scores (tests check it): the layer, activation and
score caches run the same operations on the same tensors; shared contexts change the shapes
of the sums, so log-likelihoods agree to float rounding (an exact tie between two choices
could in principle break the other way).

Multiple choice is scored by log-likelihood exactly as `recipe_compiler.evaluate` does
(same tokenisation). Generation items are scored as `tailorc eval` scores them, greedy exact
match, but mostly without decoding: one teacher-forced pass gives the argmax after each
answer prefix, and `evaluate.tokenization.greedy_verdict` reads greedy's verdict off them
(exact for any tokenizer, BPE included, when the item's tokenisation is aligned). Only the
items it cannot decide — a prompt whose tokens change when the answer follows, or an
argmax that leaves the answer's path into text that could still spell it — are decoded
greedily with the candidate's model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import torch

from recipe_compiler.evaluate import McItem, Task
from recipe_compiler.evaluate.loglik import encode_pairs, encode_texts
from recipe_compiler.evaluate.scoring import argmax
from recipe_compiler.evaluate.tokenization import analyse_answer, greedy_verdict
from recipe_compiler.language.recipe import ClosedOp, Drop, Recipe, Take
from recipe_compiler.models.index import Models
from recipe_compiler.search.objective import FAILED_FITNESS, Objective
from recipe_compiler.search.stack import Stack
from recipe_compiler.search.store import LayerStore, default_budget

__all__ = ["FAILED_FITNESS", "CacheStats", "Evaluator"]

TEXT_WINDOW = 1024  # a text task is scored in windows of at most this many tokens

log = logging.getLogger("recipe_compiler")


def _describe(recipe: Recipe) -> str:
    from recipe_compiler.language.printer import format_op

    return "; ".join(f"{i}: {format_op(op)}" for i, op in enumerate(recipe.ops()))


@dataclass
class CacheStats:
    act_hits: int = 0  # layer applications skipped thanks to a cached prefix
    act_misses: int = 0  # layer applications run
    score_hits: int = 0
    evaluations: int = 0
    decoded: int = 0  # generation items scored by greedy decoding (teacher forcing could not)

    @property
    def hit_rate(self) -> float:
        total = self.act_hits + self.act_misses
        return self.act_hits / total if total else 0.0


@dataclass(frozen=True)
class _Inputs:
    """What one forward pass runs: the rows of one or more batches (see `_Batch`)."""

    ids: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 for real tokens, or (B, 1, T, T) additive when branched
    position_ids: torch.Tensor | None  # (B, T) when some row holds branches, else None
    batches: tuple[int, ...]  # the batches whose items these rows hold
    rung: int  # the first rung that scores them


@dataclass(frozen=True)
class _Batch:
    """Items of one task, scored from the rows of one `_Inputs`. With the contexts shared,
    the items of every task that one rung adds go through a forward pass together, packed
    into rows of one width: fewer, fuller layer calls than one pass per task."""

    task: int  # index into the task list
    items: tuple[int, ...]  # which items of the task it scores
    inputs: int  # index into `Evaluator.inputs`
    rows: torch.Tensor  # (N,) input row of each scored position
    positions: torch.Tensor  # (N,) position whose output predicts...
    tokens: torch.Tensor  # (N,) ...this token
    targets: list[list[tuple[int, int]]]  # per item: per option: its [lo, hi) of the N
    golds: list[int]
    forced: list  # per item: its `ForcedAnswer` (generation items), else None
    rung: int  # the first rung that scores it


class Evaluator:
    """Scores closed recipes over a fixed set of tasks, sharing work between candidates."""

    def __init__(self, recipe: Recipe, models: Models, tasks: list[Task], tokenizer, *,
                 weights: tuple[float, ...] = (), device: str = "cpu",
                 dtype: str = "float32", batch_size: int = 32, rungs: tuple[int, ...] = (100,),
                 max_memory: int | None = None, caches: bool = True,
                 objective: Objective | None = None, texts: bool = False,
                 share_contexts: bool | None = None, metric: str = "acc"):
        self.recipe, self.models, self.device = recipe, models, torch.device(device)
        # One row per multiple-choice item (see the module docstring); off with the caches
        # unless asked, so that "caches off" is the plain row-per-choice evaluation.
        self.share_contexts = caches if share_contexts is None else share_contexts
        self.base_name = recipe.base_name or ""
        self.arch = models[self.base_name].arch
        self.dtype = dtype
        budget = max_memory or default_budget(self.device)
        self.store = LayerStore(models, self.base_name, device=self.device,
                                dtype=getattr(torch, dtype), budget=budget,
                                recipe_dtype=recipe.dtype)
        self.stack = Stack(models, self.base_name, self.store)
        self.tasks = [t for t in tasks if t.kind in ("mc", "gen")]
        self.text_tasks = [t for t in tasks if t.kind == "ppl"]  # the warm starts' calibration
        self.texts = self.text_tasks if texts else []  # scored
        self.task_weights = weights or tuple(1.0 for _ in self.tasks)
        self.objective = objective or Objective(tuple(t.name for t in self.tasks),
                                                self.task_weights)
        self.rungs = rungs
        self.caches = caches
        self.metric = metric  # "acc" or "prob", for multiple-choice items (Settings.metric)
        self.stats = CacheStats()
        self._scores: dict[tuple, dict[str, float]] = {}
        self.failures: list[tuple[Recipe, str]] = []  # candidates that could not be scored
        self.tokenizer = tokenizer
        self.batches = self._make_batches(tokenizer, batch_size)

    # --- inputs ------------------------------------------------------------------------

    def _make_batches(self, tokenizer, batch_size: int) -> list[_Batch]:
        """Batches cover items [0, r0), [r0, r1), ... separately, so a higher rung reuses
        every batch (and cached activation) of the lower ones. Without shared contexts, a
        batch is `batch_size` items of one task, one forward pass each; with them, a rung's
        items of every task are packed together (`_fuse`)."""
        self.inputs: list[_Inputs] = []
        batches: list[_Batch] = []
        stop_ids = _stop_ids(tokenizer)
        by_rung: dict[int, list[tuple[int, Task, range]]] = {}
        for k, task in enumerate(self.tasks + self.texts):
            if task.kind == "ppl":  # windows of one document: see _text_windows
                windows, edges = self._text_windows(task, tokenizer)
                task = dataclasses.replace(task, items=windows)
            else:
                edges = [0] + [min(r, len(task.items)) for r in self.rungs]
            for rung, (lo, hi) in enumerate(zip(edges, edges[1:])):
                by_rung.setdefault(rung, []).append((k, task, range(lo, hi)))
        for rung, pieces in sorted(by_rung.items()):
            items = [(k, i, self._item(task, i, tokenizer, stop_ids))
                     for k, task, span in pieces for i in span]
            groups = (_fuse(items, batch_size) if self.share_contexts
                      else _per_task(items, batch_size))
            for group in groups:
                batches += self._layout(group, len(batches), rung)
        return batches

    def _text_windows(self, task: Task, tokenizer) -> tuple[tuple, list[int]]:
        """A text task as `tailorc eval` (lm-eval's rolling log-likelihood) scores it: one
        document, every token predicted from the tokens before it (the first from the
        BOS/EOS prefix) within windows of the model's context length (at most `TEXT_WINDOW`
        tokens). A line's first word and the line break before it count, as in the
        perplexity the search is judged by: scored apart, line by line, a pruned model's
        perplexity came out lower than eval's and ranked candidates differently (on the
        real family, 112 against 195 for one winner).

        The lines are the rungs' items: rung r adds the tokens of its lines, each window
        seeing the text before it, so the first k rungs together score the first
        `rungs[k-1]` lines as one document — eval's value, when they fit in one window.
        Returns the windows, each (context ids, ids it predicts), and each rung's first
        window (plus the end)."""
        from recipe_compiler.evaluate.modelio import model_max_length, prefix_token_id

        text = task.items[0]
        lines = text.splitlines(keepends=True)
        starts, at = [], 0  # the character where each non-blank line starts
        for line in lines:
            if line.strip():
                starts.append(at)
            at += len(line)
        cuts = [starts[r] if r < len(starts) else len(text) for r in self.rungs]
        text = text[:cuts[-1]]
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, ValueError, TypeError, KeyError):  # a slow tokenizer:
            enc, offsets = tokenizer(text, add_special_tokens=False), None  # no offsets
        tokens = tuple(enc["input_ids"])
        seq = (prefix_token_id(tokenizer), *tokens)
        window = min(TEXT_WINDOW, model_max_length(self.stack.model, tokenizer))  # eval's
        bounds = [0] + ([len(tokens)] * len(cuts) if offsets is None else  # all at rung 0
                        [next((t for t, (lo, _) in enumerate(offsets) if lo >= cut),
                              len(tokens)) for cut in cuts])
        windows, edges = [], [0]
        for lo, hi in zip(bounds, bounds[1:]):  # one rung's tokens, in windows
            for start in range(lo, hi, window - 1):
                end = min(hi, start + window - 1)
                windows.append((seq[max(0, end + 1 - window):start + 1], tokens[start:end]))
            edges.append(len(windows))
        return tuple(windows), edges

    def _item(self, task: Task, i: int, tokenizer, stop_ids) -> _Item:
        """Item `i` of `task` as the rows will hold it."""
        item = task.items[i]
        gold, forced = 0, None
        if task.kind == "ppl":  # a window: (its context, the tokens it predicts)
            pairs = [item]
        elif isinstance(item, McItem):
            pairs = encode_pairs(tokenizer, [(item.context, c) for c in item.choices])
            gold = item.gold
        else:
            pairs = encode_pairs(tokenizer, [(item.prompt, item.answer)])
            forced = analyse_answer(tokenizer, item.prompt, item.answer)
        if task.kind == "gen":
            pairs = [(ctx, cont + (stop_ids[0],)) for ctx, cont in pairs]
        shared = len({ctx for ctx, _ in pairs}) == 1 and pairs[0][0]
        if self.share_contexts and shared:
            units = (_Unit.branched(pairs),)
        else:
            units = tuple(_Unit.branched([pair]) for pair in pairs)
        return _Item(units, gold, forced)

    def _layout(self, group: list[tuple[int, int, _Item]], first: int,
                rung: int) -> list[_Batch]:
        """One `_Inputs` holding the units of `group` ((task, item index, item), each
        task's items in order), and one `_Batch` per task in it, numbered from `first`."""
        group = sorted(group, key=lambda x: (x[0], x[1]))  # each task's items together
        units = [u for _, _, item in group for u in item.units]
        lengths = [len(u.tokens) for u in units]
        if self.share_contexts:
            width, rows_of = _pack_tightest(lengths)
        else:
            width, rows_of = max(lengths), [[u] for u in range(len(units))]
        ids = torch.zeros(len(rows_of), width, dtype=torch.long)
        mask = torch.zeros(len(rows_of), width, dtype=torch.long)
        group_t = torch.full((len(rows_of), width), -1, dtype=torch.long)  # -1: padding
        branch = torch.zeros(len(rows_of), width, dtype=torch.long)
        place = torch.zeros(len(rows_of), width, dtype=torch.long)
        where: dict[int, tuple[int, int]] = {}  # unit -> (row, column of its first token)
        for r, members in enumerate(rows_of):
            col = 0
            for g, u in enumerate(members):
                unit, n = units[u], len(units[u].tokens)
                ids[r, col:col + n] = torch.tensor(unit.tokens)
                mask[r, col:col + n] = 1
                group_t[r, col:col + n] = g
                branch[r, col:col + n] = torch.tensor(unit.branches)
                place[r, col:col + n] = torch.tensor(unit.places)
                where[u] = (r, col)
                col += n
        dev = self.device
        position_ids = None
        if self.share_contexts and (branch.any() or group_t.max() > 0):
            mask = _packed_mask(group_t, branch, getattr(torch, self.dtype))
            position_ids = place.to(dev)
        tasks = list(dict.fromkeys(k for k, _, _ in group))
        index = len(self.inputs)
        self.inputs.append(_Inputs(ids.to(dev), mask.to(dev), position_ids,
                                   tuple(range(first, first + len(tasks))), rung))
        batches, u = [], 0
        for k in tasks:
            rows: list[int] = []
            positions: list[int] = []
            tokens: list[int] = []
            targets: list[list[tuple[int, int]]] = []
            mine = [(i, item) for kk, i, item in group if kk == k]
            for _, item in mine:
                item_targets: list[tuple[int, int]] = []
                for unit in item.units:
                    r, col = where[u]
                    u += 1
                    for option in unit.options:
                        lo = len(rows)
                        for pos, tok in option:
                            rows.append(r)
                            positions.append(col + pos)
                            tokens.append(tok)
                        item_targets.append((lo, len(rows)))
                targets.append(item_targets)
            rows_t, pos_t, tokens_t = map(torch.tensor, (rows, positions, tokens))
            batches.append(_Batch(k, tuple(i for i, _ in mine), index, rows_t.to(dev),
                                  pos_t.to(dev), tokens_t.to(dev), targets,
                                  [item.gold for _, item in mine],
                                  [item.forced for _, item in mine], rung))
        return batches

    # --- forward -----------------------------------------------------------------------

    def layer_plan(self, recipe: Recipe) -> list[tuple[tuple, ClosedOp, int]]:
        """(cache key, op, source layer) of every kept slot, in order."""
        plan = []
        for i, op in enumerate(recipe.ops()):
            if isinstance(op, Drop):
                continue
            src = op.layer if op.layer is not None else i
            plan.append((self.store.key(op, src), op, src))
        return plan

    def _prefix_keys(self, plan, inputs: int):
        """`cache_key(k)` for the activation cache: the inputs and the first k layers' keys,
        as nested (prefix, key) pairs, equal exactly when the layers are; None with the
        caches off."""
        if not self.caches:
            return None
        prefixes = []
        prefix: tuple = ()
        for key, _, _ in plan:
            prefix = (prefix, key)
            prefixes.append(prefix)
        return lambda k: (inputs, prefixes[k - 1])

    @torch.no_grad()
    def hidden_states(self, recipe: Recipe, inputs: int) -> torch.Tensor:
        """Hidden states of `self.inputs[inputs]` after the recipe's layers and final norm."""
        run = self.inputs[inputs]
        plan = self.layer_plan(recipe)
        run_before = self.stack.layers_run
        h = self.stack.hidden(plan, run.ids, run.mask,
                              cache_key=self._prefix_keys(plan, inputs),
                              keep=self.caches, position_ids=run.position_ids)
        ran = self.stack.layers_run - run_before
        self.stats.act_misses += ran
        self.stats.act_hits += len(plan) - ran
        return h

    @torch.no_grad()
    def inputs_logprobs(self, recipe: Recipe, inputs: int) -> list[torch.Tensor]:
        """(N, V) log-probabilities at the scored positions of each batch that
        `self.inputs[inputs]` holds, in order."""
        h = self.hidden_states(recipe, inputs)
        return [self._logprobs(h, b) for b in self.inputs[inputs].batches]

    def _logprobs(self, hidden: torch.Tensor, batch_index: int) -> torch.Tensor:
        batch = self.batches[batch_index]
        h = hidden[batch.rows, batch.positions]  # (N, C)
        return torch.log_softmax(self.stack.head(h).float(), dim=-1)

    def dense_model(self, name: str | None = None):
        """A context giving the Hugging Face model running one source model's own layers
        (the base's by default), for the pruning heuristics (their hooks and forward
        passes)."""
        name = name or self.base_name
        plan = [(self.store.key(op, i), op, i)
                for i in range(self.models[name].num_layers) for op in [Take(name)]]
        return self.stack.as_model(plan)

    def merged_model(self, models: tuple[str, ...], weight: float, method: str):
        """`dense_model` for the merge of `models` at `weight` each in every layer."""
        from recipe_compiler.language.recipe import Merge

        op = Merge(tuple(models), method=method, weights=(weight,) * len(models))
        n = self.models[self.base_name].num_layers
        return self.stack.as_model([(self.store.key(op, i), op, i) for i in range(n)])

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
            result = {t.name: math.nan for t in self.tasks + self.texts}
            if self.caches:
                self._scores[key] = result
            return result

    def scores_many(self, recipes: list[Recipe], rung: int) -> list[dict[str, float]]:
        """`scores` of each recipe. With the caches on, the candidates not scored before run
        together, batch by batch, as a tree of their shared layer prefixes
        (`Stack.hidden_many`): the same scores in fewer, larger layer calls. Should the
        tree fail (a layer that cannot be made), each is scored alone, so that only the
        culprit gets the worst fitness."""
        todo = [] if not self.caches else list(dict.fromkeys(
            r for r in recipes if (r, rung) not in self._scores))
        done: dict[Recipe, dict[str, float]] = {}
        if len(todo) > 1:
            try:
                done = self._score_tree(todo, rung)
            except Exception:  # noqa: BLE001 - retried one by one below, which reports it
                log.debug("tailorc: the tree evaluation failed; scoring one by one",
                          exc_info=True)
        return [done.pop(r) if r in done else self.scores(r, rung) for r in recipes]

    @torch.no_grad()
    def _score_tree(self, recipes: list[Recipe], rung: int) -> dict[Recipe, dict[str, float]]:
        """The scores of those `recipes` whose log-probabilities were all finite."""
        plans = [self.layer_plan(r) for r in recipes]
        slots = [[i for i, op in enumerate(r.ops()) if not isinstance(op, Drop)]
                 for r in recipes]  # each plan's layers' slots, as `layer_plan` lists them
        tallies = [_Tally(self, r, rung) for r in recipes]
        for g, run in enumerate(self.inputs):
            if run.rung > rung:
                continue
            live = [i for i, t in enumerate(tallies) if t.error is None]
            run_before = self.stack.layers_run
            hidden = self.stack.hidden_many(
                [plans[i] for i in live], run.ids, run.mask, slots=[slots[i] for i in live],
                cache_keys=[self._prefix_keys(plans[i], g) for i in live],
                keep=True, position_ids=run.position_ids)
            ran = self.stack.layers_run - run_before
            self.stats.act_misses += ran
            self.stats.act_hits += sum(len(plans[i]) for i in live) - ran
            for i, h in zip(live, hidden):
                for b in run.batches:
                    tallies[i].add(b, self._logprobs(h, b))
        done = {}
        for recipe, tally in zip(recipes, tallies):
            if tally.error is not None:  # non-finite: `scores` reports it, as alone
                continue
            self.stats.evaluations += 1
            done[recipe] = self._scores[(recipe, rung)] = tally.result()
        return done

    def _scores_of(self, recipe: Recipe, rung: int) -> dict[str, float]:
        self.stats.evaluations += 1
        tally = _Tally(self, recipe, rung)
        for g, run in enumerate(self.inputs):
            if run.rung <= rung:
                for b, logprobs in zip(run.batches, self.inputs_logprobs(recipe, g)):
                    tally.add(b, logprobs)
                    if tally.error is not None:
                        raise tally.error
        result = tally.result()
        if self.caches:
            self._scores[(recipe, rung)] = result
        return result

    @torch.no_grad()
    def _decode_matches(self, recipe: Recipe, task: Task, items: list[int], limit: int) -> int:
        """Greedy exact matches among `items`, decoded as `tailorc eval` decodes (its token
        budget for the task's first `limit` items), with the candidate's own model."""
        from recipe_compiler.evaluate.generate import greedy_generate
        from recipe_compiler.evaluate.scoring import default_max_new_tokens

        self.stats.decoded += len(items)
        budget = default_max_new_tokens(self.tokenizer,
                                        [it.answer for it in task.items[:limit]])
        with self.stack.as_model(self.layer_plan(recipe)) as model:
            texts = greedy_generate(model, self.tokenizer, [task.items[i].prompt for i in items],
                                    max_new_tokens=budget, device=self.device)
        return sum(t.strip() == task.items[i].answer.strip() for t, i in zip(texts, items))

    def fitness(self, scores: dict[str, float]) -> float:
        return self.objective(scores)


class _Tally:
    """One candidate's scores being summed, batch by batch, from its log-probabilities."""

    def __init__(self, ev: Evaluator, recipe: Recipe, rung: int):
        self.ev, self.recipe = ev, recipe
        self.limit = ev.rungs[rung]
        self.every = ev.tasks + ev.texts
        self.right = [0.0] * len(self.every)  # correct items; for a text, summed loglik
        self.count = [0] * len(self.every)  # items; for a text, tokens
        self.undecided: dict[int, list[int]] = {}  # generation items only decoding scores
        self.error: Exception | None = None

    def add(self, b: int, logprobs: torch.Tensor) -> None:
        ev, batch = self.ev, self.ev.batches[b]
        if not bool(torch.isfinite(logprobs).all()):
            self.error = FloatingPointError(f"non-finite log-probabilities on task "
                                            f"'{self.every[batch.task].name}'")
            return
        picked = logprobs.gather(-1, batch.tokens[:, None])[:, 0].tolist()  # (N,)
        if self.every[batch.task].kind == "ppl":
            self.right[batch.task] += sum(picked)
            self.count[batch.task] += len(picked)
            return
        best = logprobs.argmax(-1).tolist()  # (N,) the argmax token at each position
        for i, item_targets, gold, fa in zip(batch.items, batch.targets, batch.golds,
                                             batch.forced):
            self.count[batch.task] += 1
            if fa is None:  # multiple choice: the most likely continuation, as eval
                lls = [sum(picked[lo:hi]) for lo, hi in item_targets]
                self.right[batch.task] += (argmax(lls) == gold if ev.metric == "acc"
                                           else _choice_probability(lls, gold))
                continue
            lo, hi = item_targets[0]
            verdict = greedy_verdict(ev.tokenizer, fa, best[lo:hi],
                                     answer=self.every[batch.task].items[i].answer,
                                     max_new_tokens=len(fa.answer) + 1)
            if verdict is None:
                self.undecided.setdefault(batch.task, []).append(i)
            else:
                self.right[batch.task] += verdict

    def result(self) -> dict[str, float]:
        ev, right, count = self.ev, self.right, self.count
        for k, items in self.undecided.items():  # greedy decoding tells
            right[k] += ev._decode_matches(self.recipe, self.every[k], items, self.limit)
        result = {t.name: right[k] / max(count[k], 1) for k, t in enumerate(ev.tasks)}
        for k, t in enumerate(ev.texts, start=len(ev.tasks)):  # perplexity
            result[t.name] = math.exp(-right[k] / max(count[k], 1))
        return result


def _choice_probability(lls: list[float], gold: int) -> float:
    """The right choice's share of the probability the model puts on all the choices (a
    softmax over their summed log-likelihoods): 0.25 for a model guessing among 4, 1 for a
    sure one. It moves with every item's confidence, where accuracy moves by whole items, so
    it ranks candidates near chance on a few hundred items with less noise."""
    top = max(lls)
    weights = [math.exp(x - top) for x in lls]
    return weights[gold] / sum(weights)


@dataclass(frozen=True)
class _Unit:
    """What one row holds for an item: a context and one or more continuations after it
    (branches 1, 2, ...; a single continuation is simply the rest of the sequence)."""

    tokens: tuple[int, ...]
    branches: tuple[int, ...]  # per token: 0 the context, c the c-th continuation
    places: tuple[int, ...]  # per token: its position id
    options: tuple[tuple[tuple[int, int], ...], ...]  # per continuation: (position, token)
    # pairs, the position being the unit's column whose output predicts the token

    @staticmethod
    def branched(pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> _Unit:
        ctx = pairs[0][0]
        tokens, branches, places = list(ctx), [0] * len(ctx), list(range(len(ctx)))
        single = len(pairs) == 1
        options = []
        for c, (_, cont) in enumerate(pairs, start=1):
            start = len(tokens)
            # the first token is predicted by the context's last, the next ones by the
            # continuation's previous token
            options.append(tuple((len(ctx) - 1 if j == 0 else start + j - 1, tok)
                                 for j, tok in enumerate(cont)))
            # A continuation's last token predicts nothing scored, and nothing after it in
            # its branch reads it: it is not run (as lm-eval feeds context + continuation
            # less its last token).
            fed = cont[:-1]
            tokens += fed
            branches += [0 if single else c] * len(fed)
            places += range(len(ctx), len(ctx) + len(fed))
        return _Unit(tuple(tokens), tuple(branches), tuple(places), tuple(options))


@dataclass(frozen=True)
class _Item:
    """An item as rows hold it: its units (one when its choices share the context), the
    right choice, and for a generation item its `ForcedAnswer`."""

    units: tuple[_Unit, ...]
    gold: int
    forced: object

    @property
    def length(self) -> int:
        return max(len(u.tokens) for u in self.units)


def _per_task(items: list[tuple[int, int, _Item]], size: int) -> list[list]:
    """`items` ((task, index, item), by task) in groups of `size` items of one task."""
    groups: list[list] = []
    for k in dict.fromkeys(k for k, _, _ in items):
        mine = [x for x in items if x[0] == k]
        groups += [mine[lo:lo + size] for lo in range(0, len(mine), size)]
    return groups


def _fuse(items: list[tuple[int, int, _Item]], rows: int) -> list[list]:
    """`items` of every task in groups of about `rows` packed rows each. A group holds
    items of similar lengths (down to a quarter of its longest, for items over 256 tokens:
    a short unit in a wide row still pays attention over the row's width, which only
    matters in long rows), each task's in order, and the groups of a length class are
    about equal in tokens (no group of a few leftover items, which would cost as many layer
    calls as a full one)."""
    left = sorted(items, key=lambda x: -x[2].length)
    groups: list[list] = []
    while left:
        longest = left[0][2].length
        near = [x for x in left if longest <= 256 or 4 * x[2].length >= longest]
        left = left[len(near):]
        near.sort(key=lambda x: (x[0], x[1]))
        sizes = [sum(len(u.tokens) for u in x[2].units) for x in near]
        parts = -(-sum(sizes) // (rows * longest))  # groups needed, rounded up
        share = sum(sizes) / parts
        split: list[list] = [[] for _ in range(parts)]
        before = 0
        for x, n in zip(near, sizes):  # by where the item's middle falls
            split[min(parts - 1, int((before + n / 2) / share))].append(x)
            before += n
        groups += [g for g in split if g]
    return groups


def _pack(lengths: list[int], width: int) -> list[list[int]]:
    """Units (by length) packed side by side into rows of `width`, first fit, longest first:
    each row's unit indices, in their order along the row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for u in sorted(range(len(lengths)), key=lambda u: -lengths[u]):
        fit = next((r for r, f in enumerate(free) if f >= lengths[u]), None)
        if fit is None:
            rows.append([])
            free.append(width)
            fit = len(rows) - 1
        rows[fit].append(u)
        free[fit] -= lengths[u]
    return rows


def _pack_tightest(lengths: list[int]) -> tuple[int, list[list[int]]]:
    """`_pack` into the row width, from the longest unit to twice it, that leaves the fewest
    cells (rows x width; the narrowest of equals): units that do not pair up in rows of the
    longest one's width often do in wider rows, and a layer's cost is its cells."""
    longest = max(lengths)
    packed = ((width, _pack(lengths, width)) for width in range(longest, 2 * longest + 1))
    return min(packed, key=lambda p: len(p[1]) * p[0])  # the first of equals: narrowest


def _packed_mask(group: torch.Tensor, branch: torch.Tensor, dtype) -> torch.Tensor:
    """(B, 1, T, T) additive mask: a token sees the earlier tokens of its own unit's context
    and of its own branch, never another unit, another branch, or padding. A padding query
    sees itself (no row of the softmax is empty); its output is never read."""
    t = group.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    q_group, k_group = group[:, :, None], group[:, None, :]
    q_branch, k_branch = branch[:, :, None], branch[:, None, :]
    allowed = causal & (q_group == k_group) & (k_group >= 0)
    allowed &= (k_branch == 0) | (k_branch == q_branch)
    allowed |= torch.eye(t, dtype=torch.bool)
    out = torch.zeros(allowed.shape, dtype=dtype)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out[:, None]


def _stop_ids(tokenizer) -> tuple[int, ...]:
    newline = encode_texts(tokenizer, ["\n"])[0]
    specials = set(tokenizer.all_special_ids)
    newline = tuple(t for t in newline if t not in specials)
    eos = tokenizer.eos_token_id
    out = tuple(newline[:1]) + ((eos,) if eos is not None else ())
    if not out:
        raise ValueError("the tokenizer has neither a newline token nor an EOS token")
    return out
