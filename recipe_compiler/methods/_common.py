"""Parameter declarations several methods share (torch-free).

Consumes: nothing. Produces: `Param`s for weights, normalize and density, and the mergekit
parameters that task-vector methods accept without a tailor counterpart.
"""

from __future__ import annotations

from recipe_compiler.methods import Param


def weights(required: bool) -> Param:
    return Param("weights", "weights", required=required, mergekit="weight", per_model=True)


def normalize(default: bool) -> Param:
    """Tailor's default is mergekit's, per method (mergekit's merge_methods/registry.py)."""
    return Param("normalize", "bool", default=default, mergekit="normalize",
                 mergekit_default=default)


def divides(p, total: float) -> bool:
    """Whether a normalized sum is divided by its weights' `total`: asked for, and the total
    neither 0 (no division) nor 1 (x / 1 is x, for every finite and infinite x: a pass over
    every entry saved, in the torch and numpy formulas alike, which must agree)."""
    return bool(p["normalize"]) and total != 0 and total != 1


DENSITY = Param("density", "float", default=1.0, low=0.0, high=1.0, open_low=True,
                mergekit="density", mergekit_default=1.0, per_model=True)

# int8_mask changes only the mask's dtype; lambda must be 1 (fold it into the weights).
TASK_VECTOR_FIXED: tuple[tuple[str, object], ...] = (
    ("density", None), ("int8_mask", None), ("rescale", False), ("lambda", 1.0))
