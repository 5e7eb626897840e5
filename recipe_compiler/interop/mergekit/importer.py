"""mergekit YAML -> Recipe: `import_config`, and the slices turned into slot operations.

Consumes: mergekit config text and its path.
Produces: a `Recipe` that builds the same tensors as `mergekit-yaml` would, or a
`RecipeError` of positioned diagnostics (at most MAX_ERRORS of them).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from recipe_compiler import methods
from recipe_compiler.interop.mergekit.common import (
    END_TENSORS,
    KEYWORDS,
    LAYER_TENSOR,
    PROJ_TENSOR,
    _form,
    _show,
)
from recipe_compiler.interop.mergekit.config import _Config, _one_line, _read_config, _Slice
from recipe_compiler.interop.mergekit.parameters import _check_parameters, _param
from recipe_compiler.interop.mergekit.yaml_nodes import MAX_ERRORS, _compose, _Yaml
from recipe_compiler.language.parser import MAX_SLOTS
from recipe_compiler.language.recipe import (
    MERGE_FIELDS,
    ClosedOp,
    Drop,
    Merge,
    ModelDecl,
    Recipe,
    SlotDecl,
    Take,
)
from recipe_compiler.language.source import Diagnostic, RecipeError, Source, Span, error
from recipe_compiler.methods import Method


def import_config(text: str, path: str = "<config>") -> Recipe:
    """A mergekit config as a recipe that builds the same tensors; RecipeError otherwise,
    never another exception, and in bounded time whatever the text (see yaml_nodes' limits)."""
    source = Source(path, text)
    root = _compose(text, source)
    y = _Yaml(path)
    config = _read_config(y, root) if root is not None else None
    if root is None:
        y.err("the config is empty", None)
    if config is not None and not y.diags:
        _check_parameters(y, config)
    recipe = _to_recipe(y, config) if config is not None and not y.diags else None
    if y.diags or recipe is None:
        # a top-level parameter is read once per slice: report each problem once
        raise RecipeError(_at_most(list(dict.fromkeys(y.diags)), path), source)
    return recipe


def _at_most(diags: list[Diagnostic], path: str) -> list[Diagnostic]:
    if len(diags) <= MAX_ERRORS:
        return diags
    shown = sorted(diags, key=Diagnostic.sort_key)[:MAX_ERRORS]
    return shown + [error(f"{len(diags):,} errors; the first {MAX_ERRORS} are shown",
                          Span.whole_file(path))]


# --- import: slices to slot operations ---------------------------------------------------


def _to_recipe(y: _Yaml, config: _Config) -> Recipe | None:
    base = _end_model(y, config)
    if not _count_layers(y, config):
        return None
    # the models of slices that make layers: a zero-length one only reads the embeddings
    names = _short_names([base or ""] + [src.model for s in config.slices for src in s.sources
                                         if any(x.stop > x.start for x in s.sources)])
    layers: list[tuple[ClosedOp, int]] = []
    for sl in config.slices:
        layers += _slice_ops(y, config, sl, names, base or "")
    if not layers:
        y.err("the slices hold no layers", config.slices[0].node)
    if y.diags or base is None:
        return None
    return Recipe(
        models=tuple(ModelDecl(name, path) for path, name in names.items()),
        slots=_place(layers),
        name=config.name,
        base_model=names[base],
        dtype=config.dtype,
        path=os.path.splitext(y.path)[0] + ".tr",
        comments=(("header", (f"# imported from {_one_line(y.path)} (mergekit merge_method: "
                              f"{config.method})",), None),),
    )


def _count_layers(y: _Yaml, config: _Config) -> bool:
    """At most MAX_SLOTS output layers, checked before any list of them is made."""
    total = 0
    for sl in config.slices:
        total += sl.sources[0].stop - sl.sources[0].start
        if total > MAX_SLOTS:
            y.err(f"the slices up to this one make more than {MAX_SLOTS} layers, tailor's "
                  "limit", sl.node)
            return False
    return True


def _end_model(y: _Yaml, config: _Config) -> str | None:
    """The one model whose embeddings, final norm and lm_head mergekit's output keeps
    unchanged; tailor's base model. None (with a diagnostic) when mergekit merges them."""
    first, last = config.slices[0], config.slices[-1]
    found = []
    for sl, what in ((first, "embeddings over the first"), (last, "final norm and lm_head "
                                                                  "over the last")):
        models = list(dict.fromkeys(src.model for src in sl.sources))
        if len(models) != 1:
            hint = (f"mergekit's {config.method} needs two models in every slice, so it "
                    "always merges them" if _form(config.method) == "pair" else
                    "begin and end the config with a slice of the base model alone; a "
                    "zero-length one (layer_range: [0, 0]) adds no layer")
            y.err(f"mergekit merges the {what} slice's models ({_listing(models)}); tailor "
                  "copies them from one base model", sl.node, hint=hint)
            return None
        found.append((models[0], sl))
    (model, sl), (last_model, last_sl) = found
    if model != last_model:
        y.err(f"mergekit takes the embeddings from the first slice's model {_show(model)} but "
              f"the final norm and lm_head from the last slice's model {_show(last_model)}; "
              "tailor takes all three from one base model", last_sl.node)
        return None
    if config.base is not None and config.base[0] != model:
        y.err(f"base_model {_show(config.base[0])} is not the model the embeddings, final "
              f"norm and lm_head come from ({_show(model)}); tailor takes all of them from its "
              "base model", config.base[1])
        return None
    for s, tensor in ((sl, END_TENSORS[0]), (last_sl, END_TENSORS[1]), (last_sl, END_TENSORS[2])):
        _check_identity(y, config, s, model, tensor)
    return model


def _check_identity(y: _Yaml, config: _Config, sl: _Slice, model: str, tensor: str) -> None:
    """mergekit's merge of a single model leaves `tensor` unchanged (up to rounding)."""
    # passthrough: a scalar scale is refused for the layers already, and the one filter
    # form accepted leaves these tensors at 1
    if config.method != "passthrough" and \
            methods.by_mergekit(config.method).mergekit_form == "weighted":  # type: ignore
        weight, node = _param(y, config, sl, "weight", model, tensor)
        normalize, _ = _param(y, config, sl, "normalize", None, tensor)
        if normalize is False and weight != 1:
            y.err(f"with normalize: false, weight {weight} also multiplies '{tensor}' in "
                  "mergekit; tailor copies it from the base model unchanged", node)


def _short_names(paths: list[str]) -> dict[str, str]:
    """Path -> recipe identifier: the last path component, sanitised and deduplicated."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    suffix: dict[str, int] = {}  # the next number to try per stem: linear, not quadratic
    for path in dict.fromkeys(p for p in paths if p):
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.rstrip("/").split("/")[-1]) or "model"
        stem = stem if re.match(r"[A-Za-z_]", stem) else f"m_{stem}"
        stem = f"{stem}_model" if stem in KEYWORDS else stem
        name, k = stem, suffix.get(stem, 2)
        while name in taken:
            name, k = f"{stem}_{k}", k + 1
        suffix[stem] = k
        taken.add(name)
        names[path] = name
    return names


def _slice_ops(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
               base: str) -> list[tuple[ClosedOp, int]]:
    """(operation, source layer) per output layer of the slice: output layer k reads a + k."""
    lengths = {src.stop - src.start for src in sl.sources}
    if len(lengths) > 1:
        y.err("the sources of a slice must have layer ranges of equal length, got "
              + _listing([f"[{s.start}, {s.stop}]" for s in sl.sources]),
              sl.sources[1].range_node)
        return []
    n, first = lengths.pop(), sl.sources[0].start
    if n == 0:
        return []  # mergekit reads no parameter of it either
    seen: set[str] = set()
    for src in sl.sources:
        if src.model in seen:
            y.err(f"model {_show(src.model)} is a source of this slice twice", src.node)
            return []
        seen.add(src.model)
    form = "take" if config.method == "passthrough" else \
        methods.by_mergekit(config.method).mergekit_form  # type: ignore[union-attr]
    make = {"take": _passthrough, "weighted": _linear, "pair": _pair,
            "task_vector": _task_vector}[form]
    op = make(y, config, sl, names, base)
    if op is None:
        return []
    return [(op, first + k) for k in range(n)]


def _listing(items: list[str], most: int = 4) -> str:
    shown = ", ".join(items[:most])
    return shown + (f", ... ({len(items)} in all)" if len(items) > most else "")


def _same_start(y: _Yaml, sl: _Slice) -> bool:
    """tailor's merge reads one layer index from every model."""
    for src in sl.sources[1:]:
        if src.start != sl.sources[0].start:
            y.err(f"this slice merges layer {src.start} + k of {_show(src.model)} with layer "
                  f"{sl.sources[0].start} + k of {_show(sl.sources[0].model)}; tailor's merge "
                  "reads "
                  "the same layer index from every model", src.range_node)
            return False
    return True


def _passthrough(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
                 base: str) -> Take | None:
    if len(sl.sources) != 1:
        y.err(f"passthrough takes one source per slice, got {len(sl.sources)}", sl.node)
        return None
    src = sl.sources[0]
    proj, _ = _param(y, config, sl, "scale", src.model, PROJ_TENSOR)
    other, node = _param(y, config, sl, "scale", src.model, LAYER_TENSOR)
    if other not in (None, 1):
        y.err(f"scale {other} multiplies every tensor of the layer in mergekit, norms included; "
              "tailor's scale multiplies only the output projections", node,
              hint=f"to scale only the output projections write scale: [{{filter: o_proj, "
              f"value: {other}}}, {{filter: down_proj, value: {other}}}, {{value: 1.0}}]")
        return None
    scale = float(proj) if proj not in (None, 1) else None  # type: ignore[arg-type]
    return Take(names[src.model], scale=scale)


def _weights(y: _Yaml, config: _Config, sl: _Slice, sources) -> tuple[float, ...] | None:
    weights = []
    for src in sources:
        w, _ = _param(y, config, sl, "weight", src.model)
        if w is None:
            y.err(f"no weight for {_show(src.model)} (mergekit requires one)", src.node)
            return None
        weights.append(float(w))  # type: ignore[arg-type]
    return tuple(weights)


def _linear(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
            base: str) -> Take | Merge | None:
    weights = _weights(y, config, sl, sl.sources)
    if weights is None or not _same_start(y, sl):
        return None
    if len(weights) == 1 and weights[0] == 1:  # 1 * x (/ 1) is x, bit for bit
        return Take(names[sl.sources[0].model])
    method = methods.by_mergekit(config.method)
    assert method is not None  # _method() let only known methods through
    values = _scalars(y, config, sl, sl.sources, method)
    if values is None:
        return None
    return _merge_of(method, tuple(names[s.model] for s in sl.sources), {"weights": weights,
                                                                         **values})


def _slice_base(y: _Yaml, config: _Config, sl: _Slice) -> str | None:
    ref = sl.base or (config.base[0] if config.base else None)
    if ref is None or ref not in {s.model for s in sl.sources}:
        y.err(f"merge_method {config.method} needs base_model among the slice's sources "
              f"(base_model: {_show(ref) if ref else 'not given'})", sl.node)
        return None
    return ref


def _task_vector(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
                 base: str) -> Take | Merge | None:
    """A slice of a method that merges task vectors: the base model among the sources."""
    ref = _slice_base(y, config, sl)
    if ref is None or not _same_start(y, sl):
        return None
    others = [s for s in sl.sources if s.model != ref]
    if not others:  # no task vector: mergekit returns the slice's base tensor itself
        return Take(names[ref])
    if ref != base:
        y.err(f"this slice's base_model {_show(ref)} is not the recipe's base model "
              f"{_show(base)}; tailor's {config.method} subtracts the recipe's base model",
              sl.node)
        return None
    method = methods.by_mergekit(config.method)
    assert method is not None  # _method() let only known methods through
    weights = _weights(y, config, sl, others)
    values = _scalars(y, config, sl, others, method)
    if weights is None or values is None:
        return None
    return _merge_of(method, tuple(names[s.model] for s in others),
                     {"weights": weights, **values})


def _scalars(y: _Yaml, config: _Config, sl: _Slice, sources,
             method: Method) -> dict[str, object] | None:
    """The method's parameters other than the weights, with mergekit's defaults; None when
    the sources disagree on one that tailor takes once per merge."""
    values: dict[str, object] = {}
    for p in method.params:
        if p.kind == "weights" or p.mergekit is None:
            continue
        found = {_param(y, config, sl, p.mergekit, s.model if p.per_model else None)[0]
                 for s in (sources if p.per_model else sources[:1])}
        found = {p.mergekit_default if v is None else v for v in found}
        if len(found) > 1:
            y.err(f"the models of this slice have different {p.mergekit} values; tailor's "
                  f"{method.name} takes one {p.name} per merge", sl.node)
            return None
        value = found.pop()
        values[p.name] = float(value) if p.kind == "float" else value  # type: ignore[arg-type]
    return values


def _merge_of(method: Method, models: tuple[str, ...], values: dict[str, object]) -> Merge:
    """A Merge that writes only what differs from tailor's defaults."""
    written: dict[str, object] = {}
    for p in method.params:
        value = values.get(p.name, p.default)
        if p.kind == "weights":
            keep = p.required or any(w != 1 for w in value)  # type: ignore[union-attr]
        else:
            keep = p.required or value != p.default
        written[p.name] = value if keep else None
    fields = {k: written.pop(k, None) for k in MERGE_FIELDS}
    return Merge(models, method.name, **fields,  # type: ignore[arg-type]
                 params=tuple((k, v) for k, v in written.items() if v is not None))


def _pair(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
          base: str) -> Merge | None:
    """A slice of a method between the slice's base model and one other (slerp)."""
    ref = _slice_base(y, config, sl)
    if ref is None or not _same_start(y, sl):
        return None
    if len(sl.sources) != 2:
        y.err(f"{config.method} merges exactly two sources, got {len(sl.sources)}", sl.node)
        return None
    method = methods.by_mergekit(config.method)
    assert method is not None  # _method() let only known methods through
    other = next(s.model for s in sl.sources if s.model != ref)
    values = _scalars(y, config, sl, sl.sources, method)
    if values is None:
        return None
    for p in method.params:
        if p.required and values.get(p.name) is None:
            y.err(f"no {p.mergekit} for {config.method} (mergekit requires one)", sl.node)
            return None
    return _merge_of(method, (names[ref], names[other]), values)


def _place(layers: list[tuple[ClosedOp, int]]) -> tuple[SlotDecl, ...]:
    """Slot declarations for the output layers, as a person writes them: a source layer at
    or past the next free slot goes to the slot of its own index (no `layer=`), the slots
    skipped becoming a drop range; an earlier one (a repeat) takes the next slot and names
    its layer. Equal neighbours share one range."""
    decls: list[SlotDecl] = []
    slot = 0
    for op, layer in layers:
        if layer < slot:
            _extend(decls, slot, replace(op, layer=layer))
            slot += 1
            continue
        if layer > slot:
            decls.append(SlotDecl(slot, layer, Drop()))
        _extend(decls, layer, op)
        slot = layer + 1
    if slot > MAX_SLOTS:  # repeats past a late layer: number the output layers instead
        decls = []
        for i, (op, layer) in enumerate(layers):
            _extend(decls, i, replace(op, layer=None if layer == i else layer))
    return tuple(decls)


def _extend(decls: list[SlotDecl], slot: int, op: ClosedOp) -> None:
    last = decls[-1] if decls else None
    if last is not None and last.stop == slot and last.op == op and op.layer is None:
        decls[-1] = SlotDecl(last.start, slot + 1, op)
    else:
        decls.append(SlotDecl(slot, slot + 1, op))
