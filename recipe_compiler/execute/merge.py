"""Run one merge: the registered method's formula, then the layer's scale.

Consumes: a `Combine` and the input tensors of one output tensor (float32, on the compute
device), with the base model's tensor when the method needs it.
Produces: the merged float32 tensor.

The formulas live with their methods in recipe_compiler/methods/ (they follow mergekit's
definitions, so configs carried over from it give the same numbers; DARE's only in
distribution, see docs/methods.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from recipe_compiler import methods
from recipe_compiler.compiler.plan import Combine, Convert, Read

if TYPE_CHECKING:
    import torch


def combine(expr: Combine, xs: list[torch.Tensor], base: torch.Tensor | None) -> torch.Tensor:
    method = methods.get(expr.method)  # check.py and the parser only let known methods through
    if method.needs_base and base is None:
        raise ValueError(f"{expr.method} needs the base model's tensor")
    params = {"weights": expr.weights, "key": expr.key, **dict(expr.params)}
    out = method.formula(xs, base, params)
    return out * expr.scale if expr.scale is not None else out


def float_result(expr: Convert | Combine, value: Callable[[Read], torch.Tensor]) -> torch.Tensor:
    """The float32 result of a cast or a merge, its inputs (then the base's) given by `value`
    as float32: what both the build's executor and the search's layer store compute."""
    if isinstance(expr, Convert):
        y = value(expr.src)
        return y * expr.scale if expr.scale is not None else y
    xs = [value(r) for r in expr.inputs]
    return combine(expr, xs, value(expr.base) if expr.base is not None else None)
