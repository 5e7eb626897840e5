"""The readable side of a plan: `tailorc plan`'s listing and the size words every command
prints.

Consumes: a `Plan` (plan.py). Produces: text — human byte and parameter counts, "24.8%
removed" / "2.6% added", one line per tensor task, and the whole listing.
"""

from __future__ import annotations

from pathlib import Path

from recipe_compiler import methods
from recipe_compiler.compiler.plan import Convert, Copy, Expr, Plan


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def size_change(before: int, after: int) -> str:
    """'24.8% removed', or '2.6% added' for a recipe that duplicates layers."""
    change = 1 - after / before if before else 0.0
    return f"{change:.1%} removed" if change >= 0 else f"{-change:.1%} added"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def describe(expr: Expr) -> str:
    if isinstance(expr, Copy):
        return f"copy    {expr.src.model}:{expr.src.tensor}"
    if isinstance(expr, Convert):
        scale = f" x{expr.scale:g}" if expr.scale is not None else ""
        return f"convert {expr.src.model}:{expr.src.tensor} {expr.src.dtype}{scale}"
    method = methods.get(expr.method)
    parts = ", ".join(f"{r.model} {w:g}" for r, w in zip(expr.inputs, expr.weights))
    if method.param("weights") is None:
        parts = ", ".join(r.model for r in expr.inputs)
    extra = f" base={expr.base.model}" if expr.base is not None else ""
    values = dict(expr.params)
    extra += "".join(f" {name}={_g(values[name])}" for name in method.shown)
    scale = f" x{expr.scale:g}" if expr.scale is not None else ""
    src_layer = expr.inputs[0].tensor
    return f"{expr.method}({parts}{extra}){scale} of {src_layer}"


def _g(value: object) -> str:
    """A parameter as the listing shows it: 0.5, or [0.5, 0.3] for one per model."""
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}"


def format_plan(plan: Plan, *, verbose: bool = False) -> str:
    kept = sum(1 for s in plan.slots if s.out_layer is not None)
    copies = sum(1 for t in plan.tasks if isinstance(t.expr, Copy))
    lines = [
        f"base model   {plan.base}    dtype {plan.dtype or '(as base)'}",
        f"layers       {kept} kept of {len(plan.slots)} slots",
        f"parameters   {human_count(plan.params_before)} -> {human_count(plan.params_after)} "
        f"({size_change(plan.params_before, plan.params_after)})",
        f"tensors      {len(plan.tasks)} written: {copies} copied as bytes, "
        f"{len(plan.tasks) - copies} computed",
        f"read         {human_bytes(plan.read_bytes)}",
        f"written      {human_bytes(plan.write_bytes)} in {len(plan.shards)} shard(s)",
        f"peak memory  {human_bytes(plan.peak_bytes)} of tensors held at once (predicted)",
        "",
        "slot  layer  operation             sources (model:layer)",
    ]
    for s in plan.slots:
        slot, out, op, src = s.cells()
        lines.append(f"{slot:<5} {out:<6} {op:<21} {src}")
    for part, op, src in plan.parts:
        lines.append(f"{part:<12} {op:<21} {src}")
    lines += ["", "reads, in order"]
    lines += [f"  {model:<10} {Path(file).name:<40} {n:>5} tensors  {human_bytes(size)}"
              for (model, file), (n, size) in _reads_by_file(plan).items()]
    lines += ["", "output shards"]
    for k, shard in enumerate(plan.shards):
        n = sum(1 for t in plan.tasks if t.out.shard == k)
        lines.append(f"  {shard.file_name:<40} {n:>5} tensors  {human_bytes(shard.size)}")
    if verbose:
        lines += ["", "tasks, in order"]
        lines += [f"  {t.out.name:<48} {t.out.dtype:<5} <- {describe(t.expr)}"
                  for t in plan.tasks]
    return "\n".join(lines) + "\n"


def _reads_by_file(plan: Plan) -> dict[tuple[str, str], tuple[int, int]]:
    """Files in the order the plan first reads them, with tensor counts and bytes."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for r in plan.fresh_reads():
        n, size = out.get((r.model, r.file), (0, 0))
        out[(r.model, r.file)] = (n + 1, size + r.nbytes)
    return out
