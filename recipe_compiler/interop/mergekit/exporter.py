"""Recipe -> mergekit YAML: `export_recipe`.

Consumes: a `Recipe` and optionally its models' `Models` (to check `scale` against the
architecture).
Produces: mergekit config text that builds the same tensors as `tailorc build` would, or
a `RecipeError` pointing at the recipe tokens mergekit cannot say.
"""

from __future__ import annotations

import os
from dataclasses import replace

import yaml

from recipe_compiler import methods
from recipe_compiler.compiler.parts import fix_ranges
from recipe_compiler.interop.mergekit.common import LLAMA_SCALE_FILTERS, _form, _needs_base
from recipe_compiler.language.recipe import (
    PARTS,
    ByGroup,
    Choose,
    ClosedOp,
    Drop,
    Gradient,
    Merge,
    Op,
    Open,
    Recipe,
    SlotDecl,
    Take,
    model_path,
    op_has_gradient,
)
from recipe_compiler.language.source import Diagnostic, RecipeError, Span, error
from recipe_compiler.models.hub import hub_reference
from recipe_compiler.models.index import Models

# --- export ----------------------------------------------------------------------------


class _Exporter:
    """Recipe -> mergekit config dict. Problems are found per slot declaration (once each,
    however many slots it spans); slices are written only when there are none."""

    def __init__(self, recipe: Recipe, models: Models | None):
        self.recipe = recipe
        self.models = models
        self.base = recipe.base_name or ""
        self.diags: list[Diagnostic] = []

    def err(self, message: str, op: Op, key: str = "op", hint: str | None = None) -> None:
        self.diags.append(error(message, op.span_of(key) or Span.whole_file(self.recipe.path),
                                hint))

    def method(self, ops: list[Take | Merge]) -> str:
        merges = [op for op in ops if isinstance(op, Merge)]
        method = merges[0].method if merges else "passthrough"
        for op in merges:
            if op.method != method:
                self.err(f"mergekit has one merge_method per config; this recipe merges with "
                         f"both {method} and {op.method}", op, "method")
        if merges and methods.get(method).mergekit is None:
            self.err(f"merge method {method} has no mergekit equivalent", merges[0], "method")
        return method

    def check(self, op: Take | Merge, method: str) -> None:
        if isinstance(op, Take):
            if op.scale is not None and method != "passthrough":
                self.err(f"mergekit's scale exists only for passthrough; this recipe merges "
                         f"with {method}", op, "scale")
            elif op.scale is not None:
                self.check_scale(op)
            return
        if op.method != method:
            return  # reported once by method()
        if op.scale is not None:
            self.err("mergekit has no scale for merged layers", op, "scale")
        if _needs_base(method) and self.base in op.models:
            self.err(f"this {op.method} merge lists the base model '{self.base}', whose task "
                     "vector mergekit skips", op, "op")

    def check_scale(self, op: Take) -> None:
        arch = self.models[op.model].arch if self.models and op.model in self.models else None
        if arch is not None and not arch.scale_filters():
            self.err(f"scale on a {arch.name} layer cannot be written as a mergekit filter "
                     f"(its output projections are {', '.join(arch.scale_tensors)})",
                     op, "scale")

    def path(self, name: str) -> str:
        """As written, or (given the loaded models) as found from the working directory,
        which is where mergekit resolves relative paths."""
        decl = self.recipe.model(name)
        if decl is None or self.models is None or hub_reference(self.recipe, decl.path):
            return decl.path if decl else name  # a Hub id stays a Hub id
        return os.path.normpath(model_path(self.recipe, decl.path))

    def scale_filters(self) -> tuple[str, ...]:
        base = self.models.get(self.base) if self.models else None
        return base.arch.scale_filters() if base is not None else LLAMA_SCALE_FILTERS

    def source(self, name: str, layer: int, n: int, params: dict | None = None) -> dict:
        out: dict = {"model": self.path(name), "layer_range": [layer, layer + n]}
        if params:
            out["parameters"] = params
        return out

    def slice_of(self, op: Take | Merge, layer: int, n: int, method: str) -> dict:
        if isinstance(op, Take):
            return self.take_slice(op, layer, n, method)
        weights = op.weights or tuple(1.0 for _ in op.models)
        found = methods.get(op.method)
        params, own = {}, [{"weight": _mk(w)} for w in weights]
        for p in found.params:  # what differs from mergekit's defaults, in declaration order
            value = op.param(p.name)
            value = p.default if value is None else value
            if p.kind == "weights" or p.mergekit is None or value == p.mergekit_default:
                continue
            if isinstance(value, tuple):  # one per model
                for mine, v in zip(own, value):
                    mine[p.mergekit] = _mk(v)
            else:
                params[p.mergekit] = _mk(value)
        sources = [self.source(m, layer, n, mine) for m, mine in zip(op.models, own)]
        if found.mergekit_form == "task_vector":
            sources.append(self.source(self.base, layer, n))
        if found.mergekit_form == "pair":  # mergekit's t=0 side is the slice's base model
            for src in sources:
                src.pop("parameters", None)
            return {"sources": sources, "base_model": self.path(op.models[0]), **_params(params)}
        return {"sources": sources, **_params(params)}

    def take_slice(self, op: Take, layer: int, n: int, method: str) -> dict:
        params: dict = {}
        if op.scale is not None:
            params["scale"] = [{"filter": f, "value": op.scale} for f in self.scale_filters()] + \
                [{"value": 1.0}]
        if _form(method) == "weighted":
            params["weight"] = 1.0  # 1 * x / 1 is x, bit for bit
        out: dict = {"sources": [self.source(op.model, layer, n, params or None)]}
        if _needs_base(method) and op.model != self.base:
            # With no task vector (the slice's base model its only source) mergekit returns
            # the base tensor itself, bit for bit. Not base + 1 * (x - base): that rounds.
            out["base_model"] = self.path(op.model)
        return out


def _mk(value: object) -> object:
    """A recipe value as mergekit writes it: a gradient as a list, a by_group as filters."""
    if isinstance(value, Gradient):
        return list(value.points)
    if isinstance(value, ByGroup):
        out = [{"filter": g, "value": _mk(v)} for g, v in value.groups]
        return out + ([{"value": _mk(value.other)}] if value.other is not None else [])
    return value


def _params(params: dict) -> dict:
    return {"parameters": params} if params else {}


def export_recipe(recipe: Recipe, models: Models | None = None) -> str:
    """A mergekit config that builds the same tensors as the recipe; RecipeError otherwise.

    `models` (from check.load_models) lets `scale` be checked against the architecture;
    without it the Llama-family projection names are assumed."""
    ex = _Exporter(recipe, models)
    decls: list[SlotDecl] = []
    for decl in recipe.slots:
        if isinstance(decl.op, (Open, Choose)):
            ex.err("an open slot cannot be exported; fill it first (tailorc evolve)", decl.op)
        elif not isinstance(decl.op, Drop):
            decls.append(replace(decl, op=_plain(decl.op)))
    if not decls:
        ex.diags.append(error("the recipe keeps no layer", Span.whole_file(recipe.path)))
        raise RecipeError(ex.diags)
    ops = [d.op for d in decls]
    method = ex.method(ops + [p.op for p in recipe.parts])  # type: ignore[arg-type]
    for op in ops:
        ex.check(op, method)  # type: ignore[arg-type]
    if ex.diags:
        raise RecipeError(ex.diags)
    for part in recipe.parts:
        ex.check(part.op, method)  # type: ignore[arg-type]
    if ex.diags:
        raise RecipeError(ex.diags)
    whole = _whole_model(ex, decls, method)
    if whole is not None:
        return _dump(recipe, ex, method, whole, key="models")
    if any(d.stop is None for d in decls):
        if models is None or recipe.base_name not in models:
            ex.err("'slot a..' runs to the base model's last layer: export needs the models "
                   "to know where that is", next(d.op for d in decls if d.stop is None))
            raise RecipeError(ex.diags)
        decls = list(fix_ranges(replace(recipe, slots=tuple(decls)), models).slots)
    runs = _runs([(i, d.op) for d in decls for i in range(d.start, d.stop)],  # type: ignore
                 {i for d in decls if op_has_gradient(d.op) for i in (d.start,)})
    slices = [ex.slice_of(op, layer, n, method) for op, layer, n in runs]  # type: ignore
    return _dump(recipe, ex, method, _with_ends(ex, runs, slices, method))


def _plain(op: Take | Merge) -> Take | Merge:
    """A linear merge of one model at weight 1 (no scale) is that model's layer, bit for bit
    (1 * x, / 1): written as a take it fits a config of any merge method."""
    if (isinstance(op, Merge) and _form(op.method) == "weighted" and len(op.models) == 1
            and op.weights in (None, (1.0,)) and op.scale is None):
        return Take(op.models[0], layer=op.layer, spans=op.spans)
    return op


def _runs(kept: list[tuple[int, ClosedOp]], starts: set[int]) -> list[tuple[ClosedOp, int, int]]:
    """(op, first source layer, count): equal ops reading consecutive layers, one slice; a
    declaration with a gradient is a slice of its own (`starts`: where those begin)."""
    runs: list[tuple[ClosedOp, int, int]] = []
    for i, op in kept:
        layer = op.layer if op.layer is not None else i
        if runs and i not in starts:
            prev, first, n = runs[-1]
            if _same_but_layer(prev, op) and first + n == layer:
                runs[-1] = (prev, first, n + 1)
                continue
        runs.append((op, layer, 1))
    return runs


def _same_but_layer(a: ClosedOp, b: ClosedOp) -> bool:
    return type(a) is type(b) and replace(a, layer=None) == replace(b, layer=None)


def _with_ends(ex: _Exporter, runs: list, slices: list[dict], method: str) -> list[dict]:
    """mergekit merges the embeddings over the first slice's sources and the final norm and
    lm_head over the last's, with the slice's parameters at t = 0: where the end slices do
    not make the recipe's `embed` and `norm`/`head`, add a zero-length slice that does."""
    recipe, base = ex.recipe, Take(ex.base)
    embed = recipe.part("embed") or base
    norm, head = recipe.part("norm") or base, recipe.part("head") or base
    if norm != head:
        where = next(p.op for p in recipe.parts if p.part in ("norm", "head"))
        ex.err("mergekit makes the final norm and lm_head from one slice; this recipe "
               "gives them different operations", where)
        raise RecipeError(ex.diags)
    out = list(slices)
    if _end(runs[0][0]) != embed:
        out.insert(0, ex.slice_of(_plain(embed), 0, 0, method))  # type: ignore[arg-type]
    if _end(runs[-1][0]) != norm or len(out[0]["sources"]) < len(out[-1]["sources"]):
        out.append(ex.slice_of(_plain(norm), 0, 0, method))  # type: ignore[arg-type]
    if len(out[0]["sources"]) < len(out[-1]["sources"]):
        ex.err("mergekit merges the final norm and lm_head over as many sources as the first "
               "slice has; this recipe's first slice has fewer", recipe.part("norm") or
               recipe.slots[0].op)
        raise RecipeError(ex.diags)
    return out


def _end(op: ClosedOp) -> ClosedOp:
    """What an end slice of `op` makes of the tensors outside the layers."""
    from recipe_compiler.language.recipe import resolve

    if isinstance(op, Merge):
        return _plain(resolve(replace(op, layer=None), 0.0, None))
    return replace(op, layer=None, scale=None)


def _whole_model(ex: _Exporter, decls: list[SlotDecl], method: str) -> list[dict] | None:
    """mergekit's `models:` form, for a recipe that is one merge of every layer (`slot 0..`,
    or 0..n for a base model of n layers) with `embed`, `norm` and `head` that same merge
    at t = 0; None for any other recipe."""
    recipe, op = ex.recipe, decls[0].op
    if len(decls) != 1 or decls[0].start != 0 or not isinstance(op, Merge) or op.layer:
        return None
    if decls[0].stop is not None:
        base = ex.models.get(ex.base) if ex.models else None
        if base is None or decls[0].stop != base.num_layers:
            return None
    end = _end(op)
    if any((recipe.part(p) or Take(ex.base)) != end for p in PARTS):
        return None
    if _form(method) == "pair" and op.models[0] != ex.base:
        return None  # mergekit's slerp goes from the config's base_model
    sl = ex.slice_of(op, 0, 0, method)
    entries = [{k: v for k, v in src.items() if k != "layer_range"} for src in sl["sources"]]
    return [{"parameters": sl["parameters"]}] + entries if "parameters" in sl else entries


def _dump(recipe: Recipe, ex: _Exporter, method: str, slices: list[dict],
          key: str = "slices") -> str:
    config: dict = {"name": recipe.name} if recipe.name is not None else {}
    top = slices[0].get("parameters") if key == "models" and "model" not in slices[0] else None
    entries = slices[1:] if top is not None else slices
    config.update(merge_method=method, base_model=ex.path(ex.base), **{key: entries})
    if top is not None:
        config["parameters"] = top
    if recipe.dtype is not None:
        if method == "passthrough" or recipe.dtype == "float32":
            config["dtype"] = recipe.dtype
        else:  # tailor merges in float32 and writes the recipe's dtype
            config["dtype"], config["out_dtype"] = "float32", recipe.dtype
    head = ("# written by tailorc export\n"
            "# mergekit resolves relative model paths from its working directory\n")
    if method in methods.REGISTRY and methods.get(method).seeded:
        head += (f"# {method} drops entries at random: mergekit's result equals tailor's in "
                 "distribution, not bit for bit\n")
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
