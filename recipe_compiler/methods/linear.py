"""linear: sum(w_i x_i) / sum(w_i) (without the division when normalize=false)."""

from __future__ import annotations

from collections.abc import Mapping

from recipe_compiler.methods import Method
from recipe_compiler.methods._common import divides, normalize, weights


def formula(xs: list, base: object, p: Mapping[str, object]):
    from recipe_compiler.methods._ops import weighted_sum

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    out = weighted_sum(xs, w)
    total = sum(w)
    return out.div_(total) if divides(p, total) else out


def numpy_formula(xs: list, base: object, p: Mapping[str, object], out, tmp):
    """`formula` in numpy, op for op (execute/nptasks.py): writes into `out`."""
    from recipe_compiler.methods import _np_ops

    w: tuple[float, ...] = p["weights"]  # type: ignore[assignment]
    _np_ops.weighted_sum(xs, w, out, tmp)
    total = sum(w)
    return _np_ops.divide(out, total) if divides(p, total) else out


# Each output entry depends only on the inputs' entries at the same position: the executor
# may run the formula on slices of the tensors (execute/fused.py), with the same result.
formula.elementwise = True  # type: ignore[attr-defined]

METHOD = Method(
    name="linear",
    summary="sum(w_i x_i) / sum(w_i)   (no division with normalize=false)",
    params=(weights(required=False), normalize(True)),
    formula=formula,
    numpy_formula=numpy_formula,
    tunable=("weights",),
    mergekit="linear",
    mergekit_form="weighted",
)
