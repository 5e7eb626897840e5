"""Import, last step: slices as slot declarations, as a person writes them.

Consumes: (operation, first source layer, layer count) per slice, from `importer`.
Produces: the recipe's `SlotDecl`s: a slice at its own layers as one range (drops between),
a repeat or an offset as one slot per layer with `layer=`; a gradient spans its slice's
declaration, or is read per layer where the slice cannot be one declaration.
"""

from __future__ import annotations

from dataclasses import replace

from recipe_compiler.language.parser import MAX_SLOTS
from recipe_compiler.language.recipe import (
    MERGE_FIELDS,
    ByGroup,
    ClosedOp,
    Drop,
    Gradient,
    Merge,
    SlotDecl,
    op_has_gradient,
)


def _place(runs: list[tuple[ClosedOp, int, int]]) -> tuple[SlotDecl, ...]:
    """Slot declarations for the slices, as a person writes them: a source layer at or past
    the next free slot goes to the slot of its own index (no `layer=`), the slots skipped
    becoming a drop range; an earlier one (a repeat) takes the next slot and names its
    layer. Equal neighbours share one range. A gradient spans its slice's declaration, or
    where the slice cannot be one declaration, takes its value per layer."""
    decls: list[SlotDecl] = []
    slot = 0
    for op, first, n in runs:
        if op_has_gradient(op) and first >= slot:
            if first > slot:
                decls.append(SlotDecl(slot, first, Drop()))
            decls.append(SlotDecl(first, first + n, op))
            slot = first + n
            continue
        for k in range(n):
            layer, at = first + k, _at(op, k / (n - 1) if n > 1 else 1.0)
            if layer < slot:
                _extend(decls, slot, replace(at, layer=layer))
                slot += 1
                continue
            if layer > slot:
                decls.append(SlotDecl(slot, layer, Drop()))
            _extend(decls, layer, at)
            slot = layer + 1
    if slot > MAX_SLOTS:  # repeats past a late layer: number the output layers instead
        decls = []
        layers = [(_at(op, k / (n - 1) if n > 1 else 1.0), first + k)
                  for op, first, n in runs for k in range(n)]
        for i, (op, layer) in enumerate(layers):
            _extend(decls, i, replace(op, layer=None if layer == i else layer))
    return tuple(decls)


def _at(op: ClosedOp, t: float) -> ClosedOp:
    """`op` with its gradients' values at t (by_group values stay per group)."""
    if not isinstance(op, Merge) or not op_has_gradient(op):
        return op
    fields = {k: _grad_at(getattr(op, k), t) for k in MERGE_FIELDS}
    return replace(op, **fields, params=tuple((k, _grad_at(v, t)) for k, v in op.params))


def _grad_at(value: object, t: float) -> object:
    if isinstance(value, Gradient):
        return value.at(t)
    if isinstance(value, ByGroup):
        return ByGroup(tuple((g, _grad_at(v, t)) for g, v in value.groups),
                       _grad_at(value.other, t))
    if isinstance(value, tuple):
        return tuple(_grad_at(v, t) for v in value)
    return value


def _extend(decls: list[SlotDecl], slot: int, op: ClosedOp) -> None:
    last = decls[-1] if decls else None
    if last is not None and last.stop == slot and last.op == op and op.layer is None:
        decls[-1] = SlotDecl(last.start, slot + 1, op)
    else:
        decls.append(SlotDecl(slot, slot + 1, op))
