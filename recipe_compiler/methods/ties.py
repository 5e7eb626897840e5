"""ties: task arithmetic with magnitude trimming to `density` and sum-based sign election."""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._common import DENSITY, TASK_VECTOR_FIXED, normalize, weights


def formula(xs: list, base, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import ties

    density = p["density"]  # one for all models, or one per model
    each = density if isinstance(density, tuple) else (density,) * len(xs)
    return ties(xs, base, each, p["weights"], bool(p["normalize"]))  # type: ignore[arg-type]


METHOD = Method(
    name="ties",
    summary="b + sign-elected sum of w_i * trim(x_i - b, density)   (/ agreeing weights)",
    params=(weights(required=True), normalize(True), DENSITY),
    formula=formula,
    needs_base=True,
    tunable=("weights",),
    shown=("density",),
    mergekit="ties",
    mergekit_fixed=TASK_VECTOR_FIXED[1:],
)
