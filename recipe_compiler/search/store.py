"""The search's tensors, within one byte budget: source layers, merged layers, activations.

Consumes: the space's models (safetensors headers only: `models.index.ModelInfo`), the base's
name, the recipe's output dtype, a compute device and dtype, and a byte budget.
Produces: a layer's parameters as `{suffix: tensor}` on the compute device in the compute
dtype, for any closed op at any source layer; any other tensor of a model by name; and a
place to keep activations under the same budget.

A layer is made exactly as `tailorc build` makes it and then loaded as `tailorc eval` loads
the built checkpoint: the build's lowering (`compiler.plan` gives each tensor's expression:
a copy, a cast or a merge, with the build's defaults and seeds) is evaluated on tensors read
lazily through `safetensors.safe_open` (memory-mapped; a file is opened for one layer's
reads and closed again, so mapped pages do not pile up), merges run through the build's own
`execute.merge.combine` in float32, the result is rounded to the dtype the build would write,
and only then cast to the compute dtype. So a candidate's fitness is the fitness of its built
checkpoint evaluated in the same dtype.

Everything kept — source layers, merged layers, activations — sits in one least-recently-used
cache measured in bytes (`--max-memory`, `search { max_memory = ... }`). When the budget is
full the oldest entry goes; a layer evicted is read (or merged) again when next needed.
Peak memory is the non-layer tensors, the budget and one candidate's working layer, whatever
the number of models.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch

from recipe_compiler.compiler.plan import Convert, Copy, Read, layer_expr, output_dtype
from recipe_compiler.execute import torch_dtypes
from recipe_compiler.execute.merge import float_result
from recipe_compiler.language.recipe import ClosedOp, Merge, Take
from recipe_compiler.models.index import Models

RECIPE_TO_SAFETENSORS = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def default_budget(device: torch.device) -> int:
    """A quarter of the machine's memory on the CPU; 80% of the free memory on a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return total // 4


def nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


class ByteLRU(OrderedDict):
    """Least-recently-used entries within `budget` bytes (the newest always stays)."""

    def __init__(self, budget: int):
        super().__init__()
        self.budget, self.used, self.peak = budget, 0, 0

    def get_(self, key: Hashable):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key: Hashable, value: object) -> None:
        if key in self:
            return
        self[key] = value
        self.used += nbytes(value)
        while self.used > self.budget and len(self) > 1:
            _, old = self.popitem(last=False)
            self.used -= nbytes(old)
        self.peak = max(self.peak, self.used)


@dataclass
class StoreStats:
    layers_read: int = 0  # source layers read from disk
    layers_merged: int = 0  # merged (or scaled) layers computed
    layer_hits: int = 0  # layers found in the budget


class LayerStore:
    """Layers and other tensors of the space's models, on `device` in `dtype`, within `budget`."""

    def __init__(self, models: Models, base: str, *, device: torch.device,
                 dtype: torch.dtype, budget: int, recipe_dtype: str | None = None):
        self.models, self.base = models, models[base]
        self.device, self.dtype = device, dtype
        self.recipe_dtype = RECIPE_TO_SAFETENSORS.get(recipe_dtype or "", None)
        self.cache = ByteLRU(budget)
        self.stats = StoreStats()

    # --- layers --------------------------------------------------------------------------

    def key(self, op: ClosedOp, src: int) -> tuple:
        """Equal exactly when two ops give the same layer."""
        if isinstance(op, Take) and op.scale in (None, 1.0):
            return ("take", op.model, src)
        return ("made", op, src)

    def layer(self, op: Take | Merge, src: int, *, keep: bool = True) -> dict[str, torch.Tensor]:
        """The parameters of `op` at source layer `src`, by layer-relative name."""
        key = self.key(op, src)
        found = self.cache.get_(key)
        if found is not None:
            self.stats.layer_hits += 1
            return found
        made = self._make(op, src)
        if keep or key[0] == "take":  # source layers always count as memory, not results
            self.cache.put(key, made)
        return made

    @torch.no_grad()
    def _make(self, op: Take | Merge, src: int) -> dict[str, torch.Tensor]:
        base = self.base
        exprs = {}
        for suffix, ref in base.layer(src).items():
            dtype = output_dtype(ref, self.recipe_dtype)
            exprs[suffix] = (layer_expr(op, suffix, src, self.models, base, dtype), dtype)
        reads = [r for expr, _ in exprs.values() for r in _reads(expr)]
        values = self._read(reads)
        if isinstance(op, Take) and op.scale in (None, 1.0):
            self.stats.layers_read += 1
        else:
            self.stats.layers_merged += 1
        return {suffix: self._evaluate(expr, dtype, values).to(self.dtype)
                for suffix, (expr, dtype) in exprs.items()}

    def _evaluate(self, expr, dtype: str, values: dict[Read, torch.Tensor]) -> torch.Tensor:
        """One output tensor as the build writes it (in `dtype`), on the compute device."""
        if isinstance(expr, Copy):
            return values[expr.src]
        return float_result(expr, lambda r: values[r].float()).to(torch_dtypes()[dtype])

    def _read(self, reads: list[Read]) -> dict[Read, torch.Tensor]:
        """Tensors as stored, on the compute device; each file opened once, then closed."""
        from safetensors import safe_open

        by_file: dict[str, list[Read]] = {}
        for r in dict.fromkeys(reads):
            by_file.setdefault(r.file, []).append(r)
        out = {}
        for file, rs in by_file.items():
            with safe_open(file, framework="pt", device="cpu") as f:
                for r in rs:
                    out[r] = f.get_tensor(r.tensor).to(self.device)
        return out

    # --- other tensors -------------------------------------------------------------------

    def tensors(self, model: str, names: list[str]) -> dict[str, torch.Tensor]:
        """Non-layer tensors (embeddings, norm, head) by name, in the compute dtype. They
        are the caller's to keep: they stay out of the budget."""
        info = self.models[model]
        reads = [Read.of(model, info.tensors[n]) for n in names]
        values = self._read(reads)
        return {r.tensor: values[r].to(self.dtype) for r in reads}

    # --- activations ---------------------------------------------------------------------

    def activation(self, key: Hashable) -> torch.Tensor | None:
        return self.cache.get_(("act", key))

    def keep_activation(self, key: Hashable, value: torch.Tensor) -> None:
        self.cache.put(("act", key), value)


def _reads(expr) -> tuple[Read, ...]:
    if isinstance(expr, (Copy, Convert)):
        return (expr.src,)
    return expr.inputs + ((expr.base,) if expr.base is not None else ())
