"""The merge-method registry: every fact about a merge method, in one module per method.

Consumes: nothing at import time (and never torch: `tailorc check` stays torch-free; each
method's formula imports torch when it is called).
Produces: `REGISTRY` (name -> `Method`), `get`, `names`, `searchable` and `by_mergekit`,
read by the parser (arguments and their ranges), the checker and planner (which models a
merge reads), the printer (argument order), the executor (the formula), mergekit interop
(names, parameter mapping, defaults) and the search (which methods and parameters it tunes).

Adding a method: write `methods/<name>.py` defining `METHOD = Method(...)`, add the module
name to `_MODULES`, and test it in tests/test_methods.py. See docs/methods.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    Formula = Callable[[list[torch.Tensor], torch.Tensor | None, Mapping[str, object]],
                       torch.Tensor]
else:
    Formula = Callable

KINDS = ("weights", "float", "bool", "int")
FORMS = ("weighted", "task_vector", "pair")


@dataclass(frozen=True, slots=True)
class Param:
    """One argument of `merge(..., method=M)`.

    `default` is tailor's value when the recipe leaves it out (for `weights`: None, meaning
    1 per model). `mergekit` is mergekit's name for it (None: tailor only, never exported);
    `mergekit_default` the value mergekit uses when a config leaves it out; `per_model`
    says mergekit reads it per source (tailor takes one value, so the sources must agree)."""

    name: str
    kind: str
    default: float | bool | int | None = None
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    required: bool = False
    mergekit: str | None = None
    mergekit_default: float | bool | int | None = None
    per_model: bool = False

    def bound(self) -> str | None:
        """The allowed range in words ('in (0, 1]', '>= 0'), None when any value goes."""
        if self.low is None:
            return None
        if self.high is None:
            return f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        return f"in ({self.low:g}, {self.high:g}]" if self.open_low else \
            f"in [{self.low:g}, {self.high:g}]"

    def in_range(self, value: float) -> bool:
        too_low = self.low is not None and (value <= self.low if self.open_low
                                            else value < self.low)
        return not too_low and (self.high is None or value <= self.high)


@dataclass(frozen=True, slots=True)
class Method:
    """A merge method: its arguments, the models it reads, its formula and its mergekit twin.

    `formula(xs, base, params)` takes float32 tensors (one per model, and the base model's
    tensor when `needs_base`) and every parameter with defaults filled in (`weights` always
    a tuple; `key`, a stable name of the tensor, for seeded methods) and returns float32.
    `mergekit_form` is how a mergekit slice says it: `weighted` (every source weighted),
    `task_vector` (the base model among the sources, the others weighted) or `pair` (the
    base model and one other). `mergekit_fixed`: mergekit parameters tailor accepts only at
    the given value (None: any value, they do not change the numbers)."""

    name: str
    summary: str
    params: tuple[Param, ...]
    formula: Formula
    min_models: int = 1
    max_models: int | None = None
    needs_base: bool = False
    tunable: tuple[str, ...] = ()
    shown: tuple[str, ...] = ()
    seeded: bool = False
    mergekit: str | None = None
    mergekit_form: str = "task_vector"
    mergekit_fixed: tuple[tuple[str, object], ...] = ()
    # The formula in numpy on float32 slices, `(xs, base, params, out, tmp) -> out`, for an
    # elementwise method: builds whose merges all have one skip importing torch
    # (execute/nptasks.py). The same float32 operations in the same order as `formula`.
    numpy_formula: Callable | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def mergekit_param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.mergekit == name), None)

    def mergekit_params(self) -> tuple[str, ...]:
        """The parameter names a mergekit config of this method may use, tailor's first."""
        own = tuple(p.mergekit for p in self.params if p.mergekit is not None)
        return own + tuple(n for n, _ in self.mergekit_fixed if n not in own)

    def defaults(self, given: Mapping[str, object], count: int) -> dict[str, object]:
        """Every parameter's value: as given where given (not None), else the default."""
        out: dict[str, object] = {}
        for p in self.params:
            value = given.get(p.name)
            if value is None:
                value = tuple(1.0 for _ in range(count)) if p.kind == "weights" else p.default
            out[p.name] = value
        return out


DEFAULT = "linear"  # merge(...) without method=
SEARCH_DEFAULT = "task_arithmetic"  # the search's method when the recipe names none

_MODULES = ("linear", "task_arithmetic", "ties", "slerp", "dare_linear", "dare_ties")


def _load() -> dict[str, Method]:
    found = {}
    for module in _MODULES:
        method = importlib.import_module(f"{__name__}.{module}").METHOD
        found[method.name] = method
    return found


REGISTRY: dict[str, Method] = _load()


def names() -> tuple[str, ...]:
    """Every method's name, in registry order (the order messages list them in)."""
    return tuple(REGISTRY)


def get(name: str) -> Method:
    """The method called `name`; KeyError for an unknown name (the parser reports those)."""
    return REGISTRY[name]


def searchable() -> tuple[str, ...]:
    """The methods whose weights the search may tune."""
    return tuple(n for n, m in REGISTRY.items() if "weights" in m.tunable)


def by_mergekit(name: object) -> Method | None:
    return next((m for m in REGISTRY.values() if m.mergekit is not None and m.mergekit == name),
                None)
