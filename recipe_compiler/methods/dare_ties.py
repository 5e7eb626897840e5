"""dare_ties: DARE's random drop and rescale, then TIES's sum-based sign election.

Seeded like dare_linear (see there): byte-identical rebuilds, and mergekit's results only
in distribution.
"""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._dare import FIXED, PARAMS, pruned_deltas


def formula(xs: list, base, p: Mapping[str, object]):
    import torch

    from recipe_compiler.methods._ops import consensus

    deltas = torch.stack(pruned_deltas(xs, base, p))  # (K, *shape)
    return base + consensus(deltas, p["weights"], bool(p["normalize"]))  # type: ignore[arg-type]


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
