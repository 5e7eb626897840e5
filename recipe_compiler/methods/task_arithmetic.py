"""task_arithmetic: b + sum(w_i (x_i - b)), b the base model's layer at the same index."""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._common import TASK_VECTOR_FIXED, normalize, weights


def formula(xs: list, base, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import weighted_sum

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    delta = weighted_sum((x - base for x in xs), w)
    total = sum(w)
    if p["normalize"] and total != 0:
        delta.div_(total)
    return base + delta


# Each output entry depends only on the inputs' entries at the same position: the executor
# may run the formula on slices of the tensors (execute/fused.py), with the same result.
formula.elementwise = True  # type: ignore[attr-defined]

METHOD = Method(
    name="task_arithmetic",
    summary="b + sum(w_i (x_i - b)), b = the base model's layer   (/ sum(w_i) with normalize)",
    params=(weights(required=True), normalize(False)),
    formula=formula,
    needs_base=True,
    tunable=("weights",),
    mergekit="task_arithmetic",
    mergekit_fixed=TASK_VECTOR_FIXED,
)
