"""dare_ties: DARE's random drop and rescale, then TIES's sum-based sign election.

Seeded like dare_linear (see there): byte-identical rebuilds, and mergekit's results only
in distribution.
"""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._dare import FIXED, PARAMS, pruned_deltas


def formula(xs: list, base, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import sign_elected

    return sign_elected(base, pruned_deltas(xs, base, p), p["weights"],  # type: ignore[arg-type]
                        bool(p["normalize"]))


METHOD = Method(
    name="dare_ties",
    summary="b + sign-elected sum of w_i dare(x_i - b, density)   (/ agreeing weights)",
    params=PARAMS,
    formula=formula,
    needs_base=True,
    tunable=("weights",),
    shown=("density", "seed"),
    seeded=True,
    mergekit="dare_ties",
    mergekit_fixed=FIXED,
)
