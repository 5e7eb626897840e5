"""The elementwise merge arithmetic in numpy, for builds that do not import torch.

Consumes: float32 numpy arrays (slices of each model's tensor, the base model's too) and
plain numbers. Produces: the result written into a float32 array the caller gives (with one
scratch array of the same size), no other allocation.

Each function is its torch twin in _ops.py / the method modules, operation for operation
and in the same order: IEEE float32 arithmetic gives the same bits for the same sequence
of operations, so a build gets the same bytes whichever engine runs it
(tests/test_speed_paths.py compares them on every dtype). Scalars are rounded to float32
first, as torch does when it multiplies a float32 tensor by a Python number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weighted_sum(xs: Sequence[np.ndarray], weights: Sequence[float], out: np.ndarray,
                 tmp: np.ndarray, minus: np.ndarray | None = None) -> np.ndarray:
    """out = w0*(x0 - minus) + w1*(x1 - minus) + ..., left to right (no subtraction when
    `minus` is None): `_ops.weighted_sum` over `x` or `x - base`."""
    for k, (w, x) in enumerate(zip(weights, xs, strict=True)):
        term = out if k == 0 else tmp
        if minus is None:
            np.multiply(x, np.float32(w), out=term)
        else:
            np.subtract(x, minus, out=term)
            np.multiply(term, np.float32(w), out=term)
        if k:
            np.add(out, term, out=out)
    if not xs:
        raise ValueError("a merge needs at least one tensor")
    return out


def divide(out: np.ndarray, total: float) -> np.ndarray:
    return np.divide(out, np.float32(total), out=out)
