"""Print the IR back as canonical `.tr` text.

Consumes: a `Recipe` (from the parser or built by the search).
Produces: text such that `parse(format_recipe(r)) == compact_slots(r)`, which gives every
slot index the operation `r` gives it (`compact_slots(r).ops() == r.ops()`); for a recipe
with no adjacent declarations to join, that is `r` itself.

Canonical form: header settings first (name, models, base_model, dtype), then slots in the
order written with aligned `=`, adjacent declarations of one operation that reads the slot's
own layer joined into one range (`slot 3 = take(a)`, `slot 4 = take(a)` -> `slot 3..5 =
take(a)`; drops alike), then the search block; keyword arguments in a fixed order; numbers
in their shortest exact form; comments kept where they were.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from recipe_compiler.language.recipe import (
    ByGroup,
    Choose,
    Drop,
    Gradient,
    Merge,
    Name,
    Op,
    Open,
    Percent,
    Recipe,
    Setting,
    SlotDecl,
    Take,
    Value,
    op_has_gradient,
)


def format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Name):
        return value.id
    if isinstance(value, Percent):
        # PERCENT has no exponent: 1e-05% would not parse back, 0.00001% does.
        v = value.value
        return f"{int(v) if v == int(v) else format(Decimal(repr(v)), 'f')}%"
    if isinstance(value, str):
        escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                   .replace("\r", "\\r").replace("\t", "\\t"))
        return f'"{escaped}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Gradient):
        return "gradient(" + ", ".join(_short(x) for x in value.points) + ")"
    if isinstance(value, ByGroup):
        entries = list(value.groups) + ([("other", value.other)] if value.other is not None
                                        else [])
        return "by_group(" + ", ".join(f"{k}={format_value(v)}" for k, v in entries) + ")"
    return _num(value)


def _short(x: float) -> str:
    """A gradient point as briefly as it reads back: 0 and 1, not 0.0 and 1.0."""
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


def _num(x: int | float) -> str:
    if isinstance(x, int):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x)}.0"
    return repr(x)


def format_op(op: Op) -> str:
    if isinstance(op, Drop):
        return "drop"
    if isinstance(op, Open):
        return "?"
    if isinstance(op, Choose):
        return "choose(" + ", ".join(format_op(o) for o in op.options) + ")"
    if isinstance(op, Take):
        args = [op.model] + _kw(layer=op.layer, scale=op.scale)
        return f"take({', '.join(args)})"
    assert isinstance(op, Merge)
    kw = _kw(
        weights=op.weights,
        method=Name(op.method),
        t=op.t,
        density=op.density,
        normalize=op.normalize,
        **dict(op.params),
        layer=op.layer,
        scale=op.scale,
    )
    return f"merge({', '.join(list(op.models) + kw)})"


def _kw(**kwargs: Value | None) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in kwargs.items() if v is not None]


def compact_slots(recipe: Recipe) -> Recipe:
    """Join each slot declaration into the one before it when it continues that range with
    the same operation and the operation reads the slot's own layer (a drop, or a take or
    merge without `layer=`): every slot keeps its operation. Open slots (`?`, `choose`) stay
    as written, since the search reads their declarations, and so does any declaration that
    carries a comment, so that no comment comes to describe other slots."""
    commented = {key for key, above, trailing in recipe.comments if above or trailing}
    decls: list[SlotDecl] = []
    for decl in recipe.slots:
        last = decls[-1] if decls else None
        if last is not None and _joins(last, decl, commented):
            decls[-1] = replace(last, stop=decl.stop)
        else:
            decls.append(decl)
    return recipe if len(decls) == len(recipe.slots) else replace(recipe, slots=tuple(decls))


def _joins(a: SlotDecl, b: SlotDecl, commented: set[str]) -> bool:
    own_layer = isinstance(b.op, Drop) or (isinstance(b.op, (Take, Merge)) and b.op.layer is None)
    # a gradient runs over its declaration's range: joining two would stretch it
    return (own_layer and not op_has_gradient(b.op) and a.stop == b.start and a.op == b.op
            and f"slot:{a.start}" not in commented and f"slot:{b.start}" not in commented)


def format_recipe(recipe: Recipe) -> str:
    recipe = compact_slots(recipe)
    out = _Out(recipe)
    out.block("header")
    if recipe.name is not None:
        out.stmt("name", f"name = {format_value(recipe.name)}")
    for m in recipe.models:
        out.stmt(f"model:{m.name}", f"model {m.name} = {format_value(m.path)}")
    if recipe.base_model is not None:
        out.stmt("base_model", f"base_model = {recipe.base_model}")
    if recipe.dtype is not None:
        out.stmt("dtype", f"dtype = {recipe.dtype}")
    for part in recipe.parts:
        out.stmt(f"part:{part.part}", f"{part.part} = {format_op(part.op)}")
    if recipe.slots:
        out.blank()
        heads = [_slot_head(d.start, d.stop) for d in recipe.slots]
        width = max(len(h) for h in heads)
        for head, decl in zip(heads, recipe.slots):
            out.stmt(f"slot:{decl.start}", f"{head.ljust(width)} = {format_op(decl.op)}")
    if recipe.search is not None:
        out.blank()
        out.stmt("search", "search {")
        for s in recipe.search:
            out.stmt(f"search:{s.key}", "  " + _setting(s))
        out.lines.append("}")
    out.block("footer")
    return "\n".join(out.lines).strip("\n") + "\n"


def _slot_head(start: int, stop: int | None) -> str:
    if stop is None:
        return f"slot {start}.."
    return f"slot {start}" if stop == start + 1 else f"slot {start}..{stop}"


def _setting(s: Setting) -> str:
    return f"{s.key} {s.op} {format_value(s.value)}"


class _Out:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.lines: list[str] = []

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def block(self, anchor: str) -> None:
        above, _ = self.recipe.comments_for(anchor)
        if above:
            self.blank()
            self.lines.extend(above)
            self.lines.append("")

    def stmt(self, anchor: str, text: str) -> None:
        above, trailing = self.recipe.comments_for(anchor)
        indent = text[: len(text) - len(text.lstrip())]
        self.lines.extend(indent + c for c in above)
        self.lines.append(f"{text}  {trailing}" if trailing else text)
