"""Parameters and pruning shared by dare_linear and dare_ties (torch-free at import).

Consumes: nothing. Produces: the DARE `Param`s and `pruned_deltas`, which drops and
rescales each model's task vector with a mask seeded from (seed, tensor key, model index).
"""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Param
from recipe_compiler.methods._common import DENSITY, normalize, weights

PARAMS = (
    weights(required=True),
    normalize(False),
    DENSITY,
    Param("rescale", "bool", default=True, mergekit="rescale", mergekit_default=True),
    Param("seed", "int", default=0, low=0.0),
)
FIXED: tuple[tuple[str, object], ...] = (("int8_mask", None), ("lambda", 1.0))


def pruned_deltas(xs: list, base, p: Mapping[str, object]) -> list:
    """x_k - base with DARE's random drop (and L1 rescale) applied, one per model."""
    from recipe_compiler.methods._ops import drop_and_rescale, seed_for

    density, rescale = p["density"], bool(p["rescale"])  # one density, or one per model
    each = density if isinstance(density, tuple) else (density,) * len(xs)
    return [drop_and_rescale(x - base, float(each[k]), rescale,  # type: ignore[arg-type]
                             seed_for(int(p["seed"]), str(p["key"]), k))  # type: ignore[arg-type]
            for k, x in enumerate(xs)]
