"""The recipe IR: frozen, hashable dataclasses that every later stage consumes.

Consumes: nothing (the parser builds these; the search builds them too).
Produces: `Recipe`, made of `ModelDecl`s, `SlotDecl`s and per-slot operations
(`Drop`, `Take`, `Merge`, and the open forms `Open` / `Choose` that the search fills).

Source positions are kept with `compare=False`, so two recipes are equal when they
mean the same thing, wherever their text came from. Comments ride along the same way
so that `tailorc fmt` keeps them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

from recipe_compiler import methods
from recipe_compiler.language.source import Span

MERGE_METHODS = methods.names()
MERGE_FIELDS = ("weights", "normalize", "density", "t")  # the parameters with a field of their own
DTYPES = ("float32", "float16", "bfloat16")


def _spans() -> tuple[tuple[str, Span], ...]:
    return ()


@dataclass(frozen=True, slots=True)
class Name:
    """A bare identifier used as a value (`method=linear`), as opposed to a string."""

    id: str


@dataclass(frozen=True, slots=True)
class Percent:
    value: float  # 25% -> 25.0


@dataclass(frozen=True, slots=True)
class Gradient:
    """`gradient(0, 0.5, 1)`: a parameter that varies over a slot declaration's range, read
    as mergekit reads a list: slot k of n takes the value at t = k / (n - 1) (t = 1 when
    n = 1), interpolated linearly between the evenly spaced points."""

    points: tuple[float, ...]

    def at(self, t: float) -> float:
        scaled = t * (len(self.points) - 1)  # mergekit's evaluate_setting, step for step
        i0 = int(scaled)
        i1 = min(len(self.points) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * self.points[i0] + frac * self.points[i1]


@dataclass(frozen=True, slots=True)
class ByGroup:
    """`by_group(self_attn=0.3, mlp=0.7, other=0.5)`: a value per tensor group (groups are
    named per architecture in models/arch/*.json); `other` (None: the method's default)
    for every tensor outside the groups named, embeddings, norm and head included."""

    groups: tuple[tuple[str, object], ...]
    other: object = None

    def pick(self, group: str | None) -> object:
        return dict(self.groups).get(group, self.other) if group is not None else self.other


Value = Union[str, int, float, bool, Name, Percent, tuple, Gradient, ByGroup]
PARTS = ("embed", "norm", "head")  # the tensors outside the layers, as a recipe names them

# Comments kept for `fmt`, keyed by the statement they sit on: "header", "footer",
# "name", "model:base", "slot:3", "search", "search:population", ...
# Each entry: (anchor, comment lines above the statement, comment at the end of its line).
Comments = tuple[tuple[str, tuple[str, ...], str | None], ...]


class _Spanned:
    """Mixin: `spans` maps an argument name ('op', 'model', 'layer', 'models.1', ...)
    to where it was written, for pointing carets at the right token."""

    __slots__ = ()

    def span_of(self, key: str = "op") -> Span | None:
        found = dict(self.spans)  # type: ignore[attr-defined]
        return found.get(key) or found.get("op")


@dataclass(frozen=True, slots=True)
class Drop(_Spanned):
    spans: tuple[tuple[str, Span], ...] = field(default_factory=_spans, compare=False)


@dataclass(frozen=True, slots=True)
class Take(_Spanned):
    """Copy layer `layer` (default: the slot's own index) of `model`; `scale` multiplies
    the layer's residual contribution (attention and MLP output projections)."""

    model: str
    layer: int | None = None
    scale: float | None = None
    spans: tuple[tuple[str, Span], ...] = field(default_factory=_spans, compare=False)


@dataclass(frozen=True, slots=True)
class Merge(_Spanned):
    """Merge layer `layer` (default: the slot's index) of several models with `method`.

    The methods and their parameters are in recipe_compiler/methods/ (docs/methods.md).
    The parameters most methods share have fields (None: the method's default); any other
    parameter a method declares rides in `params` as (name, value) pairs, in the order the
    method declares them, so that equal merges compare equal.
    """

    models: tuple[str, ...]
    method: str = methods.DEFAULT
    weights: tuple[float, ...] | None = None
    normalize: bool | None = None
    density: float | None = None
    t: float | None = None
    layer: int | None = None
    scale: float | None = None
    params: tuple[tuple[str, Value], ...] = ()
    spans: tuple[tuple[str, Span], ...] = field(default_factory=_spans, compare=False)

    def param(self, name: str) -> Value | None:
        """A method parameter as written (None: not written, the method's default)."""
        if name in MERGE_FIELDS:
            return getattr(self, name)
        return dict(self.params).get(name)

    def given(self) -> dict[str, Value | None]:
        """Every parameter of the method, as written or None."""
        return {p.name: self.param(p.name) for p in methods.get(self.method).params}


@dataclass(frozen=True, slots=True)
class Open(_Spanned):
    """`?`: any operation; the search decides."""

    spans: tuple[tuple[str, Span], ...] = field(default_factory=_spans, compare=False)


@dataclass(frozen=True, slots=True)
class Choose(_Spanned):
    """`choose(a, b, ...)`: one of the listed operations; the search decides."""

    options: tuple[Op, ...]
    spans: tuple[tuple[str, Span], ...] = field(default_factory=_spans, compare=False)


Op = Union[Drop, Take, Merge, Open, Choose]
ClosedOp = Union[Drop, Take, Merge]


@dataclass(frozen=True, slots=True)
class ModelDecl:
    name: str
    path: str
    span: Span | None = field(default=None, compare=False)
    path_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SlotDecl:
    """`slot start..stop = op` (half-open), or `slot start = op` (stop = start + 1), or
    `slot start.. = op` (stop = None: to the base model's last layer, fixed by
    `check.fix_ranges` once the models are known)."""

    start: int
    stop: int | None
    op: Op
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PartDecl:
    """`embed = op`, `norm = op`, `head = op`: a take or merge of the tensors outside the
    layers (default: `take(base_model)`)."""

    part: str
    op: Op
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Setting:
    """`key = value` (or `key <= value` / `key >= value`, for search constraints)."""

    key: str
    value: Value
    op: str = "="
    span: Span | None = field(default=None, compare=False)
    value_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Recipe:
    models: tuple[ModelDecl, ...]
    slots: tuple[SlotDecl, ...]
    name: str | None = None
    base_model: str | None = None
    dtype: str | None = None
    search: tuple[Setting, ...] | None = None
    parts: tuple[PartDecl, ...] = ()
    path: str = field(default="<recipe>", compare=False)
    settings_spans: tuple[tuple[str, Span], ...] = field(default=(), compare=False)
    comments: Comments = field(default=(), compare=False)

    @property
    def base_name(self) -> str | None:
        """The model that gives embeddings, norms, head, config and tokenizer."""
        if self.base_model is not None:
            return self.base_model
        return self.models[0].name if self.models else None

    def model(self, name: str) -> ModelDecl | None:
        return next((m for m in self.models if m.name == name), None)

    def comments_for(self, anchor: str) -> tuple[tuple[str, ...], str | None]:
        for key, above, trailing in self.comments:
            if key == anchor:
                return above, trailing
        return (), None

    def setting_span(self, key: str) -> Span | None:
        return dict(self.settings_spans).get(key)

    def part(self, name: str) -> Op | None:
        """The operation written for `embed`, `norm` or `head`; None: take the base model's."""
        return next((d.op for d in self.parts if d.part == name), None)

    @property
    def slot_count(self) -> int:
        return max((d.stop if d.stop is not None else d.start + 1 for d in self.slots),
                   default=0)

    def ops(self) -> tuple[Op, ...]:
        """One op per slot index. Only meaningful once `check` found no gaps or overlaps."""
        return tuple(op for op, _ in self.positioned_ops())

    def positioned_ops(self) -> tuple[tuple[Op, float], ...]:
        """(op, t) per slot index: t is the slot's place in its declaration's range, 0 at
        the first slot and 1 at the last, where a gradient takes its value."""
        by_index: dict[int, tuple[Op, float]] = {}
        for decl in self.slots:
            stop = decl.stop if decl.stop is not None else decl.start + 1
            n = stop - decl.start
            for i in range(decl.start, stop):
                by_index.setdefault(i, (decl.op, (i - decl.start) / (n - 1) if n > 1 else 1.0))
        return tuple(by_index[i] for i in range(self.slot_count) if i in by_index)

    def open_slots(self) -> tuple[SlotDecl, ...]:
        return tuple(d for d in self.slots if isinstance(d.op, (Open, Choose)))


# --- queries on the IR -------------------------------------------------------------------


def concrete_ops(op: Op) -> Iterator[ClosedOp]:
    """The operations a slot may end up with: itself, or each option of a choose."""
    if isinstance(op, Choose):
        yield from (o for o in op.options if isinstance(o, (Drop, Take, Merge)))
    elif not isinstance(op, Open):
        yield op


def varies(value: object) -> bool:
    """Whether a parameter value changes with the slot or the tensor (a gradient or a
    by_group), inside lists too."""
    if isinstance(value, (Gradient, ByGroup)):
        return True
    return isinstance(value, tuple) and any(varies(v) for v in value)


def has_gradient(value: object) -> bool:
    if isinstance(value, Gradient):
        return True
    if isinstance(value, ByGroup):
        return any(has_gradient(v) for _, v in value.groups) or has_gradient(value.other)
    return isinstance(value, tuple) and any(has_gradient(v) for v in value)


def op_has_gradient(op: Op) -> bool:
    return isinstance(op, Merge) and any(has_gradient(v) for v in _merge_values(op))


def _merge_values(op: Merge) -> tuple:
    return tuple(getattr(op, k) for k in MERGE_FIELDS) + tuple(v for _, v in op.params)


def value_at(value: object, t: float, group: str | None) -> object:
    """A parameter's plain value for one tensor: its group's entry of a by_group, a
    gradient's value at t, element by element in lists."""
    if isinstance(value, ByGroup):
        return value_at(value.pick(group), t, group)
    if isinstance(value, Gradient):
        return value.at(t)
    if isinstance(value, tuple):
        return tuple(value_at(v, t, group) for v in value)
    return value


def resolve(op: Merge, t: float, group: str | None) -> Merge:
    """`op` with every gradient and by_group replaced by its value for one tensor: a slot
    at place `t` of its range, in tensor group `group` (None: outside every group)."""
    if not any(varies(v) for v in _merge_values(op)):
        return op
    fields = {k: value_at(getattr(op, k), t, group) for k in MERGE_FIELDS}
    params = tuple((k, value_at(v, t, group)) for k, v in op.params)
    return replace(op, **fields, params=tuple((k, v) for k, v in params if v is not None))


def op_models(op: ClosedOp) -> tuple[str, ...]:
    if isinstance(op, Take):
        return (op.model,)
    return op.models if isinstance(op, Merge) else ()


def model_path(recipe: Recipe, path: str) -> Path:
    """Model paths are relative to the recipe file, like includes in a build file."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(recipe.path).parent / p
