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
from recipe_compiler.interop.mergekit.common import SCALE_FILTERS, _form, _needs_base
from recipe_compiler.language.recipe import (
    Choose,
    ClosedOp,
    Drop,
    Merge,
    Op,
    Open,
    Recipe,
    SlotDecl,
    Take,
    model_path,
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
        elif _form(method) == "pair":
            self.err(f"mergekit's {method} needs two models in every slice, so it would also slerp "
                     f"the embeddings, final norm and lm_head that tailor copies from the base "
                     "model", merges[0], "method")
        return method

    def check(self, op: Take | Merge, method: str) -> None:
        if isinstance(op, Take):
            if op.scale is not None and method != "passthrough":
                self.err(f"mergekit's scale exists only for passthrough; this recipe merges "
                         f"with {method}", op, "scale")
            elif op.scale is not None:
                self.check_scale(op)
            return
        if op.method != method or _form(method) == "pair":
            return  # reported once by method()
        if op.scale is not None:
            self.err("mergekit has no scale for merged layers", op, "scale")
        if _needs_base(method) and self.base in op.models:
            self.err(f"this {op.method} merge lists the base model '{self.base}', whose task "
                     "vector mergekit skips", op, "op")

    def check_scale(self, op: Take) -> None:
        arch = self.models[op.model].arch if self.models and op.model in self.models else None
        if arch is not None and not all(any(f in p for f in SCALE_FILTERS)
                                        for p in arch.scale_tensors):
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
        params = {}
        for p in found.params:  # what differs from mergekit's defaults, in declaration order
            value = op.param(p.name)
            value = p.default if value is None else value
            if p.kind != "weights" and p.mergekit is not None and value != p.mergekit_default:
                params[p.mergekit] = value
        sources = [self.source(m, layer, n, {"weight": w}) for m, w in zip(op.models, weights)]
        if found.mergekit_form == "task_vector":
            sources.append(self.source(self.base, layer, n))
        return {"sources": sources, **_params(params)}

    def take_slice(self, op: Take, layer: int, n: int, method: str) -> dict:
        params: dict = {}
        if op.scale is not None:
            params["scale"] = [{"filter": f, "value": op.scale} for f in SCALE_FILTERS] + \
                [{"value": 1.0}]
        if _form(method) == "weighted":
            params["weight"] = 1.0  # 1 * x / 1 is x, bit for bit
        out: dict = {"sources": [self.source(op.model, layer, n, params or None)]}
        if _needs_base(method) and op.model != self.base:
            # With no task vector (the slice's base model its only source) mergekit returns
            # the base tensor itself, bit for bit. Not base + 1 * (x - base): that rounds.
            out["base_model"] = self.path(op.model)
        return out


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
    method = ex.method(ops)  # type: ignore[arg-type]
    for op in ops:
        ex.check(op, method)  # type: ignore[arg-type]
    if ex.diags:
        raise RecipeError(ex.diags)
    kept = [(i, d.op) for d in decls for i in range(d.start, d.stop)]
    slices = [ex.slice_of(op, layer, n, method) for op, layer, n in _runs(kept)]  # type: ignore
    return _dump(recipe, ex, method, _with_base_ends(ex, slices, method))


def _plain(op: Take | Merge) -> Take | Merge:
    """A linear merge of one model at weight 1 (no scale) is that model's layer, bit for bit
    (1 * x, / 1): written as a take it fits a config of any merge method."""
    if (isinstance(op, Merge) and _form(op.method) == "weighted" and len(op.models) == 1
            and op.weights in (None, (1.0,)) and op.scale is None):
        return Take(op.models[0], layer=op.layer, spans=op.spans)
    return op


def _runs(kept: list[tuple[int, ClosedOp]]) -> list[tuple[ClosedOp, int, int]]:
    """(op, first source layer, count): equal ops reading consecutive layers, one slice."""
    runs: list[tuple[ClosedOp, int, int]] = []
    for i, op in kept:
        layer = op.layer if op.layer is not None else i
        if runs:
            prev, first, n = runs[-1]
            if _same_but_layer(prev, op) and first + n == layer:
                runs[-1] = (prev, first, n + 1)
                continue
        runs.append((op, layer, 1))
    return runs


def _same_but_layer(a: ClosedOp, b: ClosedOp) -> bool:
    return type(a) is type(b) and replace(a, layer=None) == replace(b, layer=None)


def _with_base_ends(ex: _Exporter, slices: list[dict], method: str) -> list[dict]:
    """mergekit merges the embeddings over the first slice's sources and the final norm and
    lm_head over the last's: make both a slice of the base model alone (zero-length when
    the recipe's own end slices are not) so the three are the base model's, unchanged."""
    def base_alone(s: dict) -> bool:
        src = s["sources"]
        return len(src) == 1 and src[0]["model"] == ex.path(ex.base) and \
            "scale" not in src[0].get("parameters", {})

    params = {"weight": 1.0} if _form(method) == "weighted" else None
    out = list(slices)
    if not base_alone(out[0]):
        out.insert(0, {"sources": [ex.source(ex.base, 0, 0, params)]})
    if not base_alone(out[-1]):
        out.append({"sources": [ex.source(ex.base, 0, 0, params)]})
    return out


def _dump(recipe: Recipe, ex: _Exporter, method: str, slices: list[dict]) -> str:
    config: dict = {"name": recipe.name} if recipe.name is not None else {}
    config.update(merge_method=method, base_model=ex.path(ex.base), slices=slices)
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
