"""A search session: prepare a recipe's space, score candidates, run, write the run.

Consumes: a recipe path and flag overrides (`prepare`), then the run's options (`evolve`).
Produces: `Prepared` (recipe, models, search space), evaluators in this process, worker
processes or Ray actors (`make_evaluator`, `LocalMap`), the warm-start heuristics, and the
run directory. Problems the user can fix are `RecipeError` (the recipe) or `EvolveError`
(tasks, a state file that cannot be resumed), one line each.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recipe_compiler.compiler.frontdoor import load
from recipe_compiler.compiler.parts import search_refusals
from recipe_compiler.language.recipe import Recipe
from recipe_compiler.language.source import Diagnostic, RecipeError, first_line
from recipe_compiler.models.index import Models
from recipe_compiler.search.genome import WarmStart, merge_seeds, merge_start_weights, merged
from recipe_compiler.search.space import SearchSpace, build_space, read_settings, rungs, task_files


class EvolveError(Exception):
    """A problem with the run itself (tasks, state file); one line, exit 1."""


@dataclass
class Prepared:
    recipe: Recipe
    models: Models
    space: SearchSpace


def prepare(recipe_path: Path, overrides: dict) -> Prepared:
    loaded = load(recipe_path)
    recipe, models = loaded.recipe, loaded.models
    settings, diags = read_settings(recipe, overrides)
    diags += search_refusals(recipe)
    if not loaded.errors and not _errors(diags):
        space, more = build_space(recipe, models, settings)
        diags += more
    loaded.raise_errors(diags)
    if not settings.tasks:
        raise RecipeError([_no_tasks(recipe)], loaded.source)
    return Prepared(recipe, models, space)


def _errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.severity == "error"]


def _no_tasks(recipe: Recipe) -> Diagnostic:
    from recipe_compiler.language.source import error

    span = next((s.span for s in recipe.search or ()), None)
    return error("no tasks to score candidates on; add e.g. tasks = \"../zoo/tasks/val\" "
                 "to the search block (or pass --tasks)", span)


def make_evaluator(p: Prepared, *, device: str = "cpu", caches: bool = True,
                   share_contexts: bool | None = None):
    """The space's `Evaluator`, in the settings' compute dtype and memory budget
    (`share_contexts`: see `Evaluator`; by default on with the caches)."""
    from transformers import AutoTokenizer

    from recipe_compiler.evaluate import TaskError, load_task
    from recipe_compiler.evaluate.checkpoint import default_dtype
    from recipe_compiler.search.fitness import Evaluator
    from recipe_compiler.search.objective import Objective
    from recipe_compiler.search.refine import all_rungs

    s = p.space.settings
    try:
        # lm-eval YAMLs: their validation documents, not the split a report is made on
        tasks = [load_task(f, "validation") for f in task_files(p.recipe, s)]
    except (TaskError, OSError) as exc:
        raise EvolveError(str(exc)) from None
    if not tasks:
        raise EvolveError(f"no task files found in {', '.join(s.tasks)}")
    n_accuracy = sum(t.kind in ("mc", "gen") for t in tasks)
    if s.task_weights and len(s.task_weights) != n_accuracy:
        raise EvolveError(f"task_weights has {len(s.task_weights)} values for {n_accuracy} "
                          f"scored tasks ({', '.join(t.name for t in tasks if t.kind != 'ppl')})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(p.models[p.space.base].path)
        texts = s.ppl_weight > 0
        if texts and not any(t.kind == "ppl" for t in tasks):
            raise EvolveError("ppl_weight needs a text task (a .txt file) among the tasks")
        accuracy = [t for t in tasks if t.kind in ("mc", "gen")]
        objective = Objective(tuple(t.name for t in accuracy),
                              s.task_weights or tuple(1.0 for _ in accuracy),
                              tuple(t.name for t in tasks if t.kind == "ppl") if texts else (),
                              s.fitness, s.min_task_retention, s.ppl_weight,
                              s.ppl_tolerance)
        return Evaluator(p.recipe, p.models, tasks, tokenizer, weights=s.task_weights,
                         device=device, dtype=s.dtype or default_dtype(device),
                         batch_size=s.batch_size, rungs=all_rungs(s), max_memory=s.max_memory,
                         caches=caches, objective=objective, texts=texts,
                         share_contexts=share_contexts, metric=s.metric)
    except (OSError, ValueError) as exc:  # no tokenizer, an architecture the search can't run
        raise EvolveError(first_line(exc)) from None


# --- worker processes (`--workers N`) --------------------------------------------------

_WORKER = None


def _init_worker(recipe_path: str, overrides: dict, device: str, threads: int,
                 caches: bool) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(threads)
    _WORKER = make_evaluator(prepare(Path(recipe_path), overrides), device=device,
                             caches=caches)


def _score_remote(job: tuple[Recipe, int]) -> dict[str, float]:
    recipe, rung = job
    return _WORKER.scores(recipe, rung)


class LocalMap:
    """Scores candidates in this process (the default) or in N worker processes, each of
    which loads the models once and keeps its caches for the whole run."""

    def __init__(self, evaluator, workers: int = 0, init_args: tuple = ()):
        self.evaluator, self.pool = evaluator, None
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")
            self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=init_args)

    def __call__(self, recipes: list[Recipe], rung: int) -> list[dict[str, float]]:
        if self.pool is not None:
            return self.pool.map(_score_remote, [(r, rung) for r in recipes], chunksize=1)
        return self.evaluator.scores_many(recipes, rung)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def warm_starts(evaluator, space: SearchSpace, samples: int = 32,
                text_lines: int = 10, text_samples: int = 64) -> list[WarmStart]:
    """Cheap pruning heuristics (`tailorc prune`'s), whose drops seed generation 0, best
    first:

    - the one-shot perplexity pruner on each source model, applied to that model (the
      strongest single-model baseline on the real family);
    - the perplexity pruner, then block influence (ShortGPT), then angular distance, each
      run on the task-arithmetic merge of every candidate at 0.5 and at 1.0 each (within
      `weight_range`) and applied to that merge: a family whose fine-tunes sum well merges
      best at 1.0, one whose fine-tunes clash at 0.5, and a merge's own drops fit it better
      than the base's (on the real family, block influence on the merge is the strongest
      simple baseline of all: merge-then-prune);
    - block influence and angular distance on the base, and drop-last, applied to every
      model.

    As `tailorc prune --calibration text.txt` is, the heuristics run on a merge are
    calibrated on the search's text task (a .txt file among its tasks): the perplexity
    pruner on its first `text_lines` lines, the one-pass ones on its first `text_samples`;
    without one, on the task texts. The base's one-pass heuristics read `samples` task texts
    per task. SLEB is left out: removing k layers, it repeats the one-shot pruner's scan
    of every layer's removal k times (8 for 25% of 30 layers). A start that repeats an
    earlier one (same drops, same sources) is left out."""
    from recipe_compiler.prune import choose_drops, encode, item_text
    from recipe_compiler.prune import text_lines as lines_of

    n = space.slot_count - space.target_kept
    if n <= 0 or space.slot_count != evaluator.models[space.base].num_layers:
        return []
    texts = [item_text(it) for task in evaluator.tasks for it in task.items[:samples]]
    lines = [ln for t in evaluator.text_tasks for ln in lines_of(t.items[0])]
    calibration = {"ppl": lines[:text_lines] or texts, "text": lines[:text_samples] or texts,
                   "tasks": texts}
    arch = evaluator.arch
    starts: dict[tuple, WarmStart] = {}
    sources = [space.base, *(m for m in space.candidates
                              if evaluator.models[m].num_layers == space.slot_count)]
    encoded = {}  # each calibration batch once: every model here has the base's config

    def drops(method: str, model, texts: str) -> frozenset[int]:
        if texts not in encoded:
            encoded[texts] = encode(evaluator.tokenizer, calibration[texts],
                                    _max_length(model.config), evaluator.device)
        return frozenset(choose_drops(method, model, arch, encoded[texts], n)[0])

    def add(start: WarmStart) -> None:
        starts.setdefault((start.drops, start.sources), start)

    for name in sources:
        with evaluator.dense_model(name) as model:
            add(WarmStart(f"ppl on {name}", drops("ppl", model, "ppl"), (name,)))
    if merge_seeds(space):
        method = space.settings.methods[0]
        on_merges: dict[str, list[WarmStart]] = {"ppl": [], "block-influence": [],
                                                 "angular": []}
        for weight in merge_start_weights(space):
            with evaluator.merged_model(space.candidates, weight, method) as model:
                for pruner, found in on_merges.items():
                    found.append(WarmStart(
                        f"{pruner} on the merge at {weight:g} each",
                        drops(pruner, model, "ppl" if pruner == "ppl" else "text"),
                        (merged(weight),)))
        for found in on_merges.values():
            for start in found:
                add(start)
    with evaluator.dense_model() as model:
        add(WarmStart("block-influence", drops("block-influence", model, "tasks")))
        add(WarmStart("angular", drops("angular", model, "tasks")))
        add(WarmStart("drop-last", frozenset(range(space.slot_count - n, space.slot_count))))
    return list(starts.values())


def _max_length(config) -> int:
    return (getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
            or 2048)


def evolve(p: Prepared, run_dir: Path, *, command: str, workers: int = 0,
           device: str = "cpu", threads: int | None = None, caches: bool = True,
           resume: bool = False, recipe_path: Path | None = None, overrides: dict | None = None,
           on_generation: Callable | None = None, ray_address: str | None = None,
           greedy_from: Path | None = None, on_status: Callable[[str], None] | None = None):
    """Run the search; write the run directory; return (best, pareto front, history).
    `on_generation` gets each generation's record, `on_status` a line on the work between
    them (the greedy start, the finish)."""
    from recipe_compiler.search.refine import finish
    from recipe_compiler.search.report import write_outputs
    from recipe_compiler.search.run import Search, StateError

    run_dir.mkdir(parents=True, exist_ok=True)
    evaluator = make_evaluator(p, device=device, caches=caches)
    heuristics = warm_starts(evaluator, p.space)
    init = (str(recipe_path), overrides or {}, device, threads or 1, caches)
    score_map = _score_map(evaluator, workers, init, ray_address)
    search = Search(p.space, score_map, evaluator.fitness, warm=heuristics,
                    state_path=str(run_dir / "state.json"), on_generation=on_generation,
                    extra_stats=lambda: _cache_stats(evaluator, score_map),
                    task_sizes={t.name: len(t.items) for t in evaluator.tasks},
                    greedy_from=str(greedy_from) if greedy_from else None,
                    on_status=on_status)
    try:
        use_references(evaluator, p.space, score_map, search.status)
        pop, hof = search.run(resume=resume)
        best, final_scores = finish(search, pop, hof, score_map)
    except StateError as exc:  # only the saved state's problems are the user's to fix
        raise EvolveError(str(exc)) from None
    finally:
        score_map.close()
    return write_outputs(p, search, pop, hof, run_dir, command=command, heuristics=heuristics,
                         best=best, best_scores=final_scores)


def use_references(evaluator, space: SearchSpace, score_map,
                   status: Callable[[str], None] | None = None) -> int:
    """Give the evaluator's objective the dense models' scores when it measures against
    them (retention, a floor, perplexity); the evaluations spent."""
    from recipe_compiler.search.refine import references

    if not evaluator.objective.needs_references:
        return 0
    if status is not None:
        status(f"references: scoring the {1 + len(space.candidates)} dense models")
    top = len(rungs(space.settings)) - 1
    dense = references(space, score_map, top)
    evaluator.objective = evaluator.objective.with_references(dense, space.base)
    return len(dense)


def _score_map(evaluator, workers: int, init: tuple, ray_address: str | None):
    """In-process or local processes (LocalMap), or a Ray cluster (`--ray auto|ADDRESS`:
    `workers` actors, 0 = one per CPU/GPU of the cluster)."""
    if not ray_address:
        return LocalMap(evaluator, workers, init)
    from recipe_compiler.search.ray_map import RayMap

    try:
        return RayMap(evaluator, init, address=ray_address, workers=workers or None)
    except BaseException:
        import sys

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # connected, then failed to start the actors: disconnect
        raise


def _cache_stats(evaluator, score_map) -> dict:
    st = evaluator.stats
    if not isinstance(score_map, LocalMap) or score_map.pool is not None:  # caches are remote
        return {}
    store = evaluator.store
    return {"cache_hit_rate": round(st.hit_rate, 4), "failed": len(evaluator.failures),
            "layers_run": st.act_misses, "layers_skipped": st.act_hits,
            "merged_layers_built": store.stats.layers_merged,
            "layers_read": store.stats.layers_read, "kept_mb": round(store.cache.peak / 2**20)}


