"""task_arithmetic: b + sum(w_i (x_i - b)), b the base model's layer at the same index."""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._common import TASK_VECTOR_FIXED, divides, normalize, weights


def formula(xs: list, base, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import weighted_sum

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    delta = weighted_sum((x - base for x in xs), w)
    total = sum(w)
    if divides(p, total):
        delta.div_(total)
    return base + delta


def numpy_formula(xs: list, base, p: Mapping[str, object], out, tmp):
    """`formula` in numpy, op for op (execute/nptasks.py): writes into `out`."""
    import numpy as np

    from recipe_compiler.methods import _np_ops

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    _np_ops.weighted_sum(xs, w, out, tmp, minus=base)
    total = sum(w)
    if divides(p, total):
        _np_ops.divide(out, total)
    return np.add(base, out, out=out)


# Each output entry depends only on the inputs' entries at the same position: the executor
# may run the formula on slices of the tensors (execute/fused.py), with the same result.
formula.elementwise = True  # type: ignore[attr-defined]

METHOD = Method(
    name="task_arithmetic",
    summary="b + sum(w_i (x_i - b)), b = the base model's layer   (/ sum(w_i) with normalize)",
    params=(weights(required=True), normalize(False)),
    formula=formula,
    numpy_formula=numpy_formula,
    needs_base=True,
    tunable=("weights",),
    mergekit="task_arithmetic",
    mergekit_fixed=TASK_VECTOR_FIXED,
)
