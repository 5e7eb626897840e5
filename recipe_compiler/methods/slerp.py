"""slerp: spherical interpolation of two models at `t` (lerp when nearly parallel)."""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method, Param


def formula(xs: list, base: object, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import slerp

    return slerp(xs[0], xs[1], p["t"])  # type: ignore[arg-type]


METHOD = Method(
    name="slerp",
    summary="spherical interpolation from the first model (t=0) to the second (t=1)",
    params=(Param("t", "float", default=0.5, low=0.0, high=1.0, required=True, mergekit="t"),),
    formula=formula,
    min_models=2,
    max_models=2,
    shown=("t",),
    mergekit="slerp",
    mergekit_form="pair",
)
