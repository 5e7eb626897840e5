"""dare_linear: task arithmetic on randomly dropped and rescaled task vectors (DARE).

Each entry of x_i - b is kept with probability `density`; with `rescale` the kept entries
are scaled so the task vector keeps its L1 norm. The mask is seeded from `seed`, the tensor
and the model's position, so a rebuild is byte-identical; mergekit draws its masks unseeded,
so the two agree in distribution, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._dare import FIXED, PARAMS, pruned_deltas


def formula(xs: list, base, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import weighted_sum

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    delta = weighted_sum(pruned_deltas(xs, base, p), w)
    total = sum(w)
    if p["normalize"] and abs(total) >= 1e-8:  # mergekit's divisor guard
        delta.div_(total)
    return base + delta


METHOD = Method(
    name="dare_linear",
    summary="b + sum(w_i dare(x_i - b, density))   (/ sum(w_i) with normalize)",
    params=PARAMS,
    formula=formula,
    needs_base=True,
    tunable=("weights",),
    shown=("density", "seed"),
    seeded=True,
    mergekit="dare_linear",
    mergekit_fixed=FIXED,
)
