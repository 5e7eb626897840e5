"""Lower a checked recipe to a streaming tensor plan.

Consumes: a closed `Recipe` that `check` accepted, and its models' `ModelInfo`.
Produces: a `Plan`: every output tensor with its final shard and byte range (so shard
headers are known before any weight is read), and the tasks that fill them, ordered by
where their inputs lie on disk (model, file, offset) so every input file is read front to
back. Tensors copied unchanged become `Copy` tasks that the executor moves as bytes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Union

from recipe_compiler import methods
from recipe_compiler.compiler.parts import fix_ranges, part_tensor, untied_head
from recipe_compiler.language.recipe import Drop, Merge, Recipe, Take, op_models, resolve
from recipe_compiler.models.index import (
    DTYPE_SIZES,
    FLOAT_DTYPES,
    RECIPE_DTYPES,
    ModelInfo,
    Models,
    TensorInfo,
)


class BuildError(Exception):
    """A failure while executing a plan (I/O error, disk full, input changed); names the file."""


DEFAULT_SHARD_SIZE = 5 * 1000**3  # like transformers' "5GB"
COPIED_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "spiece.model", "chat_template.jinja", "chat_template.json",
)


@dataclass(frozen=True, slots=True)
class Read:
    """One input tensor: a byte range of a safetensors file."""

    model: str
    tensor: str
    file: str
    begin: int
    end: int
    dtype: str
    shape: tuple[int, ...]

    @staticmethod
    def of(model: str, t: TensorInfo) -> Read:
        return Read(model, t.name, t.file, t.begin, t.end, t.dtype, t.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    begin: int  # byte offsets in the shard's data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True, slots=True)
class Copy:
    """Bytes unchanged: same dtype, no arithmetic."""

    src: Read


@dataclass(frozen=True, slots=True)
class Convert:
    """One input, cast to the output dtype and/or multiplied by `scale`."""

    src: Read
    scale: float | None = None


@dataclass(frozen=True, slots=True)
class Combine:
    """A merge of several inputs, computed in float32 (see merge.py)."""

    method: str
    inputs: tuple[Read, ...]
    weights: tuple[float, ...]
    base: Read | None  # the base model's tensor at the same source layer (methods.needs_base)
    params: tuple[tuple[str, object], ...]  # the method's other parameters, defaults filled in
    scale: float | None = None
    key: str = ""  # names the source tensor for seeded methods (their masks), else ""


Expr = Union[Copy, Convert, Combine]


@dataclass(frozen=True, slots=True)
class Task:
    out: Output
    expr: Expr
    keep: tuple[Read, ...] = ()  # inputs the next task reads too: keep them in memory

    @property
    def reads(self) -> tuple[Read, ...]:
        e = self.expr
        if isinstance(e, Combine):
            return e.inputs + ((e.base,) if e.base is not None else ())
        return (e.src,)


@dataclass(frozen=True, slots=True)
class Shard:
    file_name: str
    header: bytes  # the complete safetensors header, length prefix and padding included
    data_size: int

    @property
    def size(self) -> int:
        return len(self.header) + self.data_size


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """What one slot became, for `check`'s table, the plan listing and the model card."""

    slot: int
    out_layer: int | None  # None: dropped
    op: str  # "take", "merge:linear", "drop"
    sources: tuple[tuple[str, int], ...]  # (model, source layer)
    params: int

    def cells(self) -> tuple[str, str, str, str]:
        """(slot, output layer, operation, sources) as printed in listings and model cards."""
        out = "-" if self.out_layer is None else str(self.out_layer)
        return (str(self.slot), out, self.op,
                ", ".join(f"{m}:{i}" for m, i in self.sources) or "-")


@dataclass(frozen=True)
class Plan:
    base: str
    dtype: str | None
    shards: tuple[Shard, ...]
    tasks: tuple[Task, ...]
    slots: tuple[SlotPlan, ...]
    config_json: str
    index_json: str | None
    copy_files: tuple[tuple[str, str], ...]  # (source path, name in the output dir)
    params_before: int
    params_after: int
    peak_bytes: int
    parts: tuple[tuple[str, str, str], ...] = ()  # written embed/norm/head: (part, op, models)

    def fresh_reads(self) -> list[Read]:
        """Every read from disk, in order: a task's inputs, less those the previous task kept."""
        reads, kept = [], set()
        for t in self.tasks:
            reads += [r for r in dict.fromkeys(t.reads) if r not in kept]
            kept = set(t.keep)
        return reads

    @property
    def read_bytes(self) -> int:
        return sum(r.nbytes for r in self.fresh_reads())

    @property
    def write_bytes(self) -> int:
        return sum(s.size for s in self.shards)


# --- lowering --------------------------------------------------------------------------


def lower(recipe: Recipe, models: Models, *, shard_size: int = DEFAULT_SHARD_SIZE) -> Plan:
    recipe = fix_ranges(recipe, models)
    base = models[recipe.base_name or ""]
    out_dtype = RECIPE_DTYPES[recipe.dtype] if recipe.dtype else None
    # output tensor name -> (how to make it, its dtype)
    exprs = _part_exprs(recipe, models, base, out_dtype)
    slots = _slot_plans(recipe, models)
    ops = recipe.positioned_ops()
    for sp in slots:
        if sp.out_layer is None:
            continue
        op, t = ops[sp.slot]
        src_layer = sp.sources[0][1]
        for suffix, ref in base.layer(0).items():
            name = base.arch.layer_tensor(sp.out_layer, suffix)
            dtype = output_dtype(ref, out_dtype)
            if isinstance(op, Merge):
                op = resolve(ops[sp.slot][0], t, base.arch.group_of(suffix))
            exprs[name] = (layer_expr(op, suffix, src_layer, models, base, dtype), dtype)
    outputs = _layout(exprs, shard_size)
    tasks = _order(outputs, {n: e for n, (e, _) in exprs.items()}, recipe)
    shards = _shards(outputs)
    return Plan(
        base=base.name,
        dtype=recipe.dtype,
        shards=shards,
        tasks=tasks,
        slots=slots,
        config_json=_config(base, slots, recipe.dtype, untied_head(recipe, base)),
        index_json=_index_json(shards, outputs),
        copy_files=tuple((str(base.path / n), n) for n in COPIED_FILES
                         if (base.path / n).is_file()),
        params_before=base.param_count(),
        params_after=sum(math.prod(o.shape) for o in outputs),
        peak_bytes=_peak(tasks),
        parts=tuple((d.part, _kind(d.op), ", ".join(op_models(d.op)))  # type: ignore[arg-type]
                    for d in recipe.parts),
    )


def _kind(op: Take | Merge) -> str:
    return "take" if isinstance(op, Take) else f"merge:{op.method}"


def _part_exprs(recipe: Recipe, models: Models, base: ModelInfo,
                out_dtype: str | None) -> dict[str, tuple[Expr, str]]:
    """The tensors outside the layers: the base model's, or as `embed`/`norm`/`head` say."""
    exprs: dict[str, tuple[Expr, str]] = {}
    names = list(base.non_layer())
    if untied_head(recipe, base) and base.arch.head_tensor not in names:
        names.append(base.arch.head_tensor)
    for name in names:
        ref = part_tensor(base, name)
        assert ref is not None  # a non-layer tensor, or the tied head's embedding
        dtype = output_dtype(ref, out_dtype)
        part = base.arch.part_of(name)
        op = recipe.part(part) if part is not None else None
        if op is None:
            exprs[name] = (_single(base.name, ref, dtype, None), dtype)
        elif isinstance(op, Take):
            src = part_tensor(models[op.model], name)
            exprs[name] = (_single(op.model, src, dtype, None), dtype)  # type: ignore[arg-type]
        else:
            assert isinstance(op, Merge)
            op = resolve(op, 0.0, None)
            inputs = tuple(Read.of(m, part_tensor(models[m], name))  # type: ignore[arg-type]
                           for m in op.models)
            base_read = Read.of(base.name, ref) if needs_base(op) else None
            exprs[name] = (merge_expr(op, inputs, base_read, None, name), dtype)
    return exprs


def output_dtype(ref: TensorInfo, out_dtype: str | None) -> str:
    """Floating tensors take the recipe's dtype; others (and all, by default) keep the base's."""
    return out_dtype if (out_dtype and ref.dtype in FLOAT_DTYPES) else ref.dtype


def _single(model: str, t: TensorInfo, dtype: str, scale: float | None) -> Expr:
    read = Read.of(model, t)
    if dtype == t.dtype and scale in (None, 1.0):
        return Copy(read)
    return Convert(read, scale)


def layer_expr(op: Take | Merge, suffix: str, layer: int, models: Models, base: ModelInfo,
               dtype: str) -> Expr:
    """How one layer tensor of `op` at source `layer` is made: by `build`, and by the
    search's layer store (search/store.py), so both make the same tensors."""
    scale = op.scale if op.scale is not None and base.arch.is_scaled(suffix) else None
    if isinstance(op, Take):
        return _single(op.model, models[op.model].layer(layer)[suffix], dtype, scale)
    inputs = tuple(Read.of(m, models[m].layer(layer)[suffix]) for m in op.models)
    base_read = Read.of(base.name, base.layer(layer)[suffix]) if needs_base(op) else None
    return merge_expr(op, inputs, base_read, scale, tensor_key(layer, suffix))


def needs_base(op: Merge) -> bool:
    """Whether the method works on differences from the base model's layer."""
    return methods.get(op.method).needs_base


def tensor_key(layer: int, suffix: str) -> str:
    """What seeds a seeded method's masks: the source layer and the tensor within it, so
    a merge gives the same tensor in `build` and in the search's in-memory layers."""
    return f"{layer}:{suffix}"


def merge_expr(op: Merge, inputs: tuple[Read, ...], base: Read | None,
               scale: float | None, key: str = "") -> Combine:
    """A merge op with its defaults filled in (also used by the search's in-memory merges)."""
    method = methods.get(op.method)
    values = method.defaults(op.given(), len(op.models))
    weights = values.pop("weights", None) or tuple(1.0 for _ in op.models)
    return Combine(
        method=op.method,
        inputs=inputs,
        weights=weights,  # type: ignore[arg-type]
        base=base,
        params=tuple(values.items()),
        scale=scale,
        key=key if method.seeded else "",
    )


def _slot_plans(recipe: Recipe, models: Models) -> tuple[SlotPlan, ...]:
    base = models[recipe.base_name or ""]
    layer_params = base.layer_param_count(0) if base.num_layers else 0
    plans, out = [], 0
    for i, op in enumerate(recipe.ops()):
        if isinstance(op, Drop):
            plans.append(SlotPlan(i, None, "drop", (), 0))
            continue
        src = op.layer if op.layer is not None else i
        names = (op.model,) if isinstance(op, Take) else op.models
        if isinstance(op, Merge) and needs_base(op) and base.name not in names:
            names = names + (base.name,)  # the base's layer is read too: list it
        kind = "take" if isinstance(op, Take) else f"merge:{op.method}"
        plans.append(SlotPlan(i, out, kind, tuple((n, src) for n in names), layer_params))
        out += 1
    return tuple(plans)


def natural_key(name: str) -> tuple:
    """`model.layers.10.x` sorts after `model.layers.9.x`."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _layout(exprs: dict[str, tuple[Expr, str]], shard_size: int) -> tuple[Output, ...]:
    """Place every output tensor in a shard, like transformers' sharding: in name order,
    starting a new shard when the next tensor would overflow the current one."""
    outputs, shard, offset = [], 0, 0
    for name in sorted(exprs, key=natural_key):
        expr, dtype = exprs[name]
        shape = _first_input(expr).shape  # check.py made every source match the base's shape
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if offset > 0 and offset + nbytes > shard_size:
            shard, offset = shard + 1, 0
        outputs.append(Output(name, dtype, shape, shard, offset, offset + nbytes))
        offset += nbytes
    return tuple(outputs)


def _first_input(expr: Expr) -> Read:
    return expr.inputs[0] if isinstance(expr, Combine) else expr.src


def _shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def _shards(outputs: tuple[Output, ...]) -> tuple[Shard, ...]:
    count = max(o.shard for o in outputs) + 1
    names = _shard_names(count)
    shards = []
    for k in range(count):
        mine = [o for o in outputs if o.shard == k]
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        for o in mine:
            header[o.name] = {"dtype": o.dtype, "shape": list(o.shape),
                              "data_offsets": [o.begin, o.end]}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        data = mine[-1].end if mine else 0
        shards.append(Shard(names[k], len(raw).to_bytes(8, "little") + raw, data))
    return tuple(shards)


def _index_json(shards: tuple[Shard, ...], outputs: tuple[Output, ...]) -> str | None:
    if len(shards) == 1:
        return None
    index = {
        "metadata": {"total_size": sum(o.nbytes for o in outputs)},
        "weight_map": {o.name: shards[o.shard].file_name for o in outputs},
    }
    return json.dumps(index, indent=2) + "\n"


def _order(outputs: tuple[Output, ...], exprs: dict[str, Expr], recipe: Recipe
           ) -> tuple[Task, ...]:
    """Order tasks by where their first input lies, so each input file is read front to back,
    and mark the inputs that the next task needs again (kept instead of re-read)."""
    rank = {m.name: i for i, m in enumerate(recipe.models)}

    def where(o: Output) -> tuple:
        r = _first_input(exprs[o.name])
        return (rank.get(r.model, len(rank)), r.file, r.begin, natural_key(o.name))

    ordered = sorted(outputs, key=where)
    tasks = [Task(o, exprs[o.name]) for o in ordered]
    for i in range(len(tasks) - 1):
        if isinstance(tasks[i].expr, Copy) or isinstance(tasks[i + 1].expr, Copy):
            continue
        nxt = set(tasks[i + 1].reads)
        keep = tuple(r for r in tasks[i].reads if r in nxt)
        if keep:
            tasks[i] = Task(tasks[i].out, tasks[i].expr, keep)
    return tuple(tasks)


SLICED_DTYPES = ("F32", "F16", "BF16")  # float32 holds every value of these exactly
WHOLE_AT_ONCE = 2  # whole-tensor tasks the CPU computes at once (execute/__init__.py)


def sliced(task: Task) -> bool:
    """Whether the CPU computes the task slice by slice (execute/fused.py): a conversion,
    or a merge whose method's formula is elementwise, between float dtypes. Other
    computing tasks (TIES, DARE, slerp...) are computed whole, `WHOLE_AT_ONCE` at a time."""
    expr = task.expr
    if task.out.dtype not in SLICED_DTYPES + ("F64",) or any(
            r.dtype not in SLICED_DTYPES for r in task.reads):
        return False
    if isinstance(expr, Convert):
        return True
    if not isinstance(expr, Combine):
        return False
    return bool(getattr(methods.get(expr.method).formula, "elementwise", False))


def task_memory(task: Task) -> int:
    """Bytes a task holds at once: its inputs raw and as float32, plus its float32 result."""
    if isinstance(task.expr, Copy):
        return 0
    numel = math.prod(task.out.shape)
    inputs = sum(r.nbytes + 4 * math.prod(r.shape) for r in dict.fromkeys(task.reads))
    return inputs + 8 * numel + task.out.nbytes


def _peak(tasks: tuple[Task, ...]) -> int:
    """The most bytes held at once: a task, what the task before it kept for it, and, for
    a whole-tensor task, the whole-tensor task before it, which may still be computing
    (`WHOLE_AT_ONCE`). Copies hold nothing and do not separate two whole-tensor tasks."""
    assert WHOLE_AT_ONCE == 2, "the sum below pairs each whole-tensor task with one other"
    peak, kept, running = 0, 0, 0
    for t in tasks:
        if isinstance(t.expr, Copy):
            continue
        whole = not sliced(t)
        peak = max(peak, kept + task_memory(t) + (running if whole else 0))
        kept = sum(4 * math.prod(r.shape) for r in t.keep)
        running = task_memory(t) if whole else 0
    return peak


def _config(base: ModelInfo, slots: tuple[SlotPlan, ...], dtype: str | None,
            untied: bool = False) -> str:
    config = dict(base.config)
    if untied:
        config[base.arch.tie_config_key] = False
    kept = [sp.sources[0][1] for sp in slots if sp.out_layer is not None]
    config[base.arch.num_layers_key] = len(kept)
    for key in base.arch.per_layer_config:
        values = config.get(key)
        if isinstance(values, list) and len(values) == base.num_layers:
            config[key] = [values[i] for i in kept]
    if dtype:
        keys = [k for k in ("torch_dtype", "dtype") if k in config] or ["torch_dtype"]
        for k in keys:
            config[k] = dtype
    return json.dumps(config, indent=2) + "\n"
