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
from dataclasses import dataclass, field
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


Value = Union[str, int, float, bool, Name, Percent, tuple]

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
    """`slot start..stop = op` (half-open), or `slot start = op` (stop = start + 1)."""

    start: int
    stop: int
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

    @property
    def slot_count(self) -> int:
        return max((d.stop for d in self.slots), default=0)

    def ops(self) -> tuple[Op, ...]:
        """One op per slot index. Only meaningful once `check` found no gaps or overlaps."""
        by_index: dict[int, Op] = {}
        for decl in self.slots:
            for i in range(decl.start, decl.stop):
                by_index.setdefault(i, decl.op)
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


def op_models(op: ClosedOp) -> tuple[str, ...]:
    if isinstance(op, Take):
        return (op.model,)
    return op.models if isinstance(op, Merge) else ()


def model_path(recipe: Recipe, path: str) -> Path:
    """Model paths are relative to the recipe file, like includes in a build file."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(recipe.path).parent / p
