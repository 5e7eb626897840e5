"""The search space a recipe describes: its open slots, its size target, its settings.

Consumes: a checked `Recipe` (open slots allowed), its models' headers, and flag overrides.
Produces: `SearchSpace` — which slots are genes and what each may become, how many layers
every individual keeps, and the `Settings` of the run — or diagnostics pointing at the
`search { ... }` line at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from recipe_compiler import methods
from recipe_compiler.language.recipe import (
    Choose,
    ClosedOp,
    Drop,
    Name,
    Open,
    Percent,
    Recipe,
    Setting,
    concrete_ops,
    model_path,
)
from recipe_compiler.language.source import Diagnostic, did_you_mean, error
from recipe_compiler.models.index import Models


@dataclass(frozen=True)
class Settings:
    """Everything `search { ... }` can set; each also has a `tailorc evolve` flag."""

    keep: int | None = None  # layers kept
    remove: float | None = None  # fraction (25% -> 0.25) or, if >= 1, a layer count
    max_params: float | None = None  # params <= X
    population: int = 16
    generations: int = 8
    seed: int = 0
    tasks: tuple[str, ...] = ()  # task files or directories, relative to the recipe
    task_weights: tuple[float, ...] = ()
    limit: int = 100  # examples per task at full fidelity
    min_limit: int | None = None  # first rung of successive halving (None: one rung)
    eta: int = 2  # keep the best 1/eta at each rung
    methods: tuple[str, ...] = (methods.SEARCH_DEFAULT,)
    weight_range: tuple[float, float] = (0.0, 1.0)
    scale_range: tuple[float, float] | None = None  # None: `scale` is not searched
    objectives: tuple[str, ...] = ("score",)
    warm_start: float = 0.5  # share of generation 0 seeded from pruning heuristics
    warm_merge: bool = True  # also seed with the heuristics applied to all candidates merged
    # before generation 0, prune the best dense start one layer at a time by this fitness
    # (search/greedy.py); its end point seeds generation 0 first
    greedy_start: bool = False
    # then try each kept slot from every other dense start, and keep the source changes
    # that raise the fitness (search/greedy.py)
    greedy_sweep: bool = False
    elite: int = 2
    crossover: float = 0.6
    mutation: float = 0.8  # chance a child mutates (then ~2 of its genes change)
    batch_size: int = 32
    dtype: str | None = None  # compute dtype; None: float32 on cpu, bfloat16 on cuda
    fitness: str = "mean"  # "mean" of task scores, or "retention" vs each task's best model
    # a multiple-choice item's score: "acc" (1 if the right choice is the likeliest, as eval
    # reports) or "prob" (the probability on the right choice, normalised over the choices)
    metric: str = "acc"
    min_task_retention: float | None = None  # floor, as a share of the dense base's score
    ppl_weight: float = 0.0  # weight of the text-perplexity term (needs a .txt task)
    # text perplexity up to this many times the dense base's costs nothing; ppl_weight
    # weighs the log of the excess (1: every increase counts)
    ppl_tolerance: float = 1.0
    final_limit: int | None = None  # re-score the finalists on this many items per task
    # judge the finalists on the items past `limit` alone, which the search never read
    holdout: bool = False
    finalists: int = 8  # how many of the best are re-scored
    local_search: int = 0  # evaluations spent improving the winner one change at a time
    tune_weights: int = 0  # evaluations of CMA-ES over the winner's merge weights
    max_memory: int | None = None  # bytes for layers and activations; None: from the device


def rungs(settings: Settings) -> tuple[int, ...]:
    """Examples per task at each fidelity: min_limit, eta x that, ..., limit."""
    if settings.min_limit is None or settings.min_limit >= settings.limit:
        return (settings.limit,)
    out, n = [], settings.min_limit
    while n < settings.limit:
        out.append(n)
        n *= settings.eta
    return tuple(out) + (settings.limit,)


KEYS = {f for f in Settings.__dataclass_fields__ if f not in ("keep", "remove", "max_params")}
KEYS |= {"keep", "remove", "params"}


@dataclass(frozen=True)
class SlotSpace:
    """One gene: an open slot and the operations it may take."""

    index: int
    options: tuple[ClosedOp, ...] | None  # choose(...): these; `?`: anything (None)

    @property
    def can_drop(self) -> bool:
        return self.options is None or any(isinstance(o, Drop) for o in self.options)

    @property
    def can_keep(self) -> bool:
        return self.options is None or any(not isinstance(o, Drop) for o in self.options)


@dataclass(frozen=True)
class SearchSpace:
    recipe: Recipe
    base: str
    candidates: tuple[str, ...]  # models an open slot may take or merge (the base excluded)
    slots: tuple[SlotSpace, ...]
    fixed_kept: int  # layers kept by slots the recipe fixes
    target_kept: int  # every individual keeps exactly this many layers...
    min_kept: int  # ...or, searching score and size together, between these two
    layer_params: int
    other_params: int
    settings: Settings = field(default_factory=Settings)

    @property
    def slot_count(self) -> int:
        return self.recipe.slot_count

    def params(self, kept: int) -> int:
        return self.other_params + kept * self.layer_params


# Whole-number settings, as (lowest, highest) whether from the recipe or a flag; the upper
# bounds keep a typo (population 10**9) from exhausting memory before anything is scored.
INT_BOUNDS = {
    "keep": (1, 100_000), "population": (2, 100_000), "generations": (1, 1_000_000),
    "seed": (0, 2**32 - 1), "limit": (1, 10**9), "min_limit": (1, 10**9), "eta": (2, 1000),
    "elite": (0, 100_000), "batch_size": (1, 100_000), "final_limit": (1, 10**9),
    "finalists": (1, 100_000), "local_search": (0, 10**7),
    "tune_weights": (0, 10**7),
}
# Number settings, as their lowest value.
FLOAT_LOWS = {"warm_start": 0, "crossover": 0, "mutation": 0, "ppl_weight": 0,
              "ppl_tolerance": 1}
FITNESS = ("mean", "retention")
METRICS = ("acc", "prob")
OBJECTIVES = (("score",), ("score", "size"))
DTYPES = ("float32", "bfloat16", "float16")


def _number(s: Setting, diags: list[Diagnostic], *, integer: bool = False,
            low: float | None = None, high: float | None = None) -> float | int | None:
    v = s.value
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer and not isinstance(v, int):
        ok = False
    if ok and ((low is not None and v < low) or (high is not None and v > high)):
        ok = False
    if not ok:
        kind = "a whole number" if integer else "a number"
        bound = f" >= {low:g}" if low is not None else ""
        bound += f" and <= {high:g}" if high is not None else ""
        diags.append(error(f"search setting '{s.key}' must be {kind}{bound}", s.value_span))
        return None
    return v


def _check_overrides(overrides: dict) -> list[Diagnostic]:
    """Flags get the recipe's bounds; the message names the flag."""
    diags = []
    for key, v in overrides.items():
        if key in INT_BOUNDS and v is not None:
            low, high = INT_BOUNDS[key]
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                diags.append(error(f"--{key.replace('_', '-')} {v}: must be a whole number "
                                   f"from {low} to {high}"))
    return diags


SIZE_UNITS = {"TIB": 1 << 40, "GIB": 1 << 30, "MIB": 1 << 20, "KIB": 1 << 10,
              "TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}


def parse_size(value: object) -> int:
    """'512MB', '2GiB', or a number of bytes -> bytes (also `--shard-size`'s reading);
    ValueError with a reason."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        s = value.strip().upper().replace(" ", "")
        unit = next((u for u in SIZE_UNITS if s.endswith(u)), "")
        try:
            number = float(s[: len(s) - len(unit)]) * SIZE_UNITS.get(unit, 1)
        except ValueError:
            number = math.nan
    else:
        number = math.nan
    if not math.isfinite(number) or not 0 < number <= 1e15:
        raise ValueError(f"not a size: {value!r} (try 5GB or 500MB)")
    return max(1, int(number))


def _pair(s: Setting, diags: list[Diagnostic]) -> tuple[float, float] | None:
    v = s.value
    if (isinstance(v, tuple) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            and v[0] <= v[1]):
        return (float(v[0]), float(v[1]))
    diags.append(error(f"search setting '{s.key}' must be a range [low, high]", s.value_span))
    return None


def _strings(s: Setting) -> tuple[str, ...]:
    items = s.value if isinstance(s.value, tuple) else (s.value,)
    return tuple(x.id if isinstance(x, Name) else str(x) for x in items)


def read_settings(recipe: Recipe, overrides: dict | None = None
                  ) -> tuple[Settings, list[Diagnostic]]:
    """Settings from the recipe's search block, then flags (`overrides`) on top."""
    diags: list[Diagnostic] = []
    values: dict = {}
    for s in recipe.search or ():
        if s.key not in KEYS:
            diags.append(error(f"unknown search setting '{s.key}' "
                               f"({did_you_mean(s.key, sorted(KEYS))})", s.span))
            continue
        if (s.op != "=") != (s.key == "params"):
            want = "<=" if s.key == "params" else "="
            diags.append(error(f"search setting '{s.key}' takes '{want}'", s.span))
            continue
        _read_one(s, values, diags)
    diags += _check_overrides(overrides or {})
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if "objectives" in values and tuple(values["objectives"]) not in OBJECTIVES:
        flag = (overrides or {}).get("objectives") is not None
        diags.append(error(f"{'--objectives' if flag else 'objectives'} "
                           f"{','.join(values['objectives'])}: not known (use score, or "
                           "score,size for a Pareto front)",
                           None if flag else _span_of(recipe, "objectives")))
        values.pop("objectives")
    if sum(k in values for k in ("keep", "remove", "max_params")) > 1:
        diags.append(error("give one size target: keep, remove or params",
                           _span_of(recipe, "keep", "remove", "params")))
    if "ppl_tolerance" in values and not values.get("ppl_weight"):
        diags.append(error("ppl_tolerance needs ppl_weight: it says how much perplexity "
                           "the perplexity term forgives", _span_of(recipe, "ppl_tolerance")))
    if values.get("holdout") and (values.get("final_limit") or 0) <= values.get(
            "limit", Settings.limit):
        diags.append(error("holdout needs final_limit larger than limit: the finalists are "
                           "judged on the items in between", _span_of(recipe, "holdout")))
    if values.get("greedy_sweep") and not values.get("greedy_start"):
        diags.append(error("greedy_sweep needs greedy_start = true: it changes the sources "
                           "of the greedy's end point", _span_of(recipe, "greedy_sweep")))
    for m in values.get("methods", ()):
        if m not in methods.searchable():
            diags.append(error(f"search method '{m}' is not searchable (use "
                               f"{_either(methods.searchable())})", _span_of(recipe, "methods")))
    return Settings(**values), diags


def _read_one(s: Setting, values: dict, diags: list[Diagnostic]) -> None:
    key = s.key
    if key == "remove":
        if isinstance(s.value, Percent) and 0 < s.value.value < 100:
            values["remove"] = s.value.value / 100
        else:
            v = _number(s, diags, integer=True, low=1)
            if v is not None:
                values["remove"] = float(v)
    elif key == "params":
        v = _number(s, diags, low=1)
        if v is not None:
            values["max_params"] = float(v)
    elif key in INT_BOUNDS:
        low, high = INT_BOUNDS[key]
        v = _number(s, diags, integer=True, low=low, high=high)
        if v is not None:
            values[key] = v
    elif key == "min_task_retention":
        if isinstance(s.value, Percent) and 0 < s.value.value <= 100:
            values[key] = s.value.value / 100
        else:
            v = _number(s, diags, low=0, high=1)
            if v is not None:
                values[key] = float(v)
    elif key == "fitness":
        _choice(s, FITNESS, _either(FITNESS), values, diags)
    elif key == "metric":
        _choice(s, METRICS, _either(METRICS), values, diags)
    elif key in FLOAT_LOWS:
        v = _number(s, diags, low=FLOAT_LOWS[key])
        if v is not None:
            values[key] = float(v)
    elif key in ("warm_merge", "holdout", "greedy_start", "greedy_sweep"):
        if isinstance(s.value, bool):
            values[key] = s.value
        else:
            diags.append(error(f"search setting '{key}' must be true or false",
                               s.value_span))
    elif key in ("weight_range", "scale_range"):
        if s.value is False and key == "scale_range":
            values[key] = None
        elif (pair := _pair(s, diags)) is not None:
            values[key] = pair
    elif key == "dtype":
        _choice(s, DTYPES, f"one of {_either(DTYPES)}", values, diags)
    elif key == "max_memory":
        try:
            values[key] = parse_size(s.value if not isinstance(s.value, Name) else s.value.id)
        except ValueError as exc:
            diags.append(error(f"search setting 'max_memory': {exc}", s.value_span))
    elif key == "task_weights":
        values[key] = tuple(float(x) for x in s.value) if isinstance(s.value, tuple) else ()
    else:  # tasks, methods, objectives
        values[key] = _strings(s)


def _choice(s: Setting, allowed: tuple[str, ...], wanted: str, values: dict,
            diags: list[Diagnostic]) -> None:
    """A setting that names one of `allowed`, bare (`float32`) or quoted."""
    v = s.value.id if isinstance(s.value, Name) else s.value
    if v in allowed:
        values[s.key] = v
    else:
        diags.append(error(f"search setting '{s.key}' must be {wanted}", s.value_span))


def _span_of(recipe: Recipe, *keys: str):
    return next((s.span for s in recipe.search or () if s.key in keys), None)


def build_space(recipe: Recipe, models: Models, settings: Settings
                ) -> tuple[SearchSpace | None, list[Diagnostic]]:
    base = models[recipe.base_name or ""]
    layer_params = base.layer_param_count(0)
    other = base.param_count() - base.num_layers * layer_params
    ops = recipe.ops()
    slots = tuple(SlotSpace(i, None if isinstance(op, Open) else tuple(concrete_ops(op)))
                  for i, op in enumerate(ops) if isinstance(op, (Open, Choose)))
    fixed_kept = sum(1 for op in ops if not isinstance(op, (Open, Choose, Drop)))
    target, diags = _target(recipe, settings, len(ops), layer_params, other)
    if target is not None:
        low = fixed_kept + sum(1 for s in slots if not s.can_drop)
        high = fixed_kept + sum(1 for s in slots if s.can_keep)
        if not low <= target <= high:
            diags.append(error(f"the size target keeps {target} layers, but this recipe can "
                               f"keep only {low}..{high} (fixed slots keep {fixed_kept})",
                               _span_of(recipe, "keep", "remove", "params")))
    if not slots:
        diags.append(error("no open slots to search; mark some with '?' or choose(...)",
                           recipe.slots[0].span if recipe.slots else None))
    if diags:
        return None, diags
    candidates = tuple(m.name for m in recipe.models if m.name != base.name)
    low = fixed_kept + sum(1 for s in slots if not s.can_drop)
    min_kept = max(low, len(ops) // 2) if "size" in settings.objectives else target
    return SearchSpace(recipe, base.name, candidates, slots, fixed_kept, target,
                       min(min_kept, target), layer_params, other, settings), []


def _target(recipe: Recipe, s: Settings, n_slots: int, layer_params: int, other: int
            ) -> tuple[int | None, list[Diagnostic]]:
    if s.keep is not None:
        return s.keep, []
    if s.max_params is not None:
        return max(0, math.floor((s.max_params - other) / layer_params)), []
    if s.remove is not None:
        removed = round(s.remove * n_slots) if s.remove < 1 else int(s.remove)
        return n_slots - removed, []
    return None, [error("no size target; set one in the search block: keep = N, "
                        "remove = 25% or params <= N", _span_of(recipe, "search")
                        or (recipe.slots[0].span if recipe.slots else None))]


def task_files(recipe: Recipe, settings: Settings) -> list[Path]:
    """Task files named by the settings: files, or directories of *.jsonl, *.txt (text for
    perplexity, scored when `ppl_weight` is set) and lm-eval task YAMLs."""
    from recipe_compiler.evaluate.tasks import task_files as files_of

    files: list[Path] = []
    for entry in settings.tasks:
        path = model_path(recipe, entry)
        files += files_of(path) if path.is_dir() else [path]
    return files


def _either(names: tuple[str, ...]) -> str:
    """'a, b or c'."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
