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
    KEYWORDS,
    _needs_base,
    _show,
)
from recipe_compiler.interop.mergekit.config import (
    _Config,
    _one_line,
    _read_config,
    _Slice,
    _Source,
)
from recipe_compiler.interop.mergekit.parameters import SCALED, _check_parameters, _param
from recipe_compiler.interop.mergekit.placing import _place
from recipe_compiler.interop.mergekit.yaml_nodes import MAX_ERRORS, _compose, _Yaml
from recipe_compiler.language.parser import MAX_SLOTS
from recipe_compiler.language.recipe import (
    MERGE_FIELDS,
    ByGroup,
    ClosedOp,
    Merge,
    ModelDecl,
    PartDecl,
    Recipe,
    SlotDecl,
    Take,
    resolve,
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
    if not _count_layers(y, config):
        return None
    first = config.slices[0].sources[0].model
    base = config.base[0] if config.base is not None else first
    if config.whole and _needs_base(config.method) and \
            base not in {s.model for s in config.slices[0].sources}:
        # mergekit adds the base model to a whole-model merge's sources
        node = config.base[1] if config.base else config.slices[0].node
        extra = _Source(base, 0, 0, None, node, node)
        config = replace(config, slices=(replace(config.slices[0], sources=config.slices[
            0].sources + (extra,)),))
    # the models of slices that make layers, and of the end slices (embed, norm, head)
    last = len(config.slices) - 1
    used = [i in (0, last) or any(x.stop > x.start for x in s.sources)
            for i, s in enumerate(config.slices)]
    names = _short_names([base] + [src.model for s, u in zip(config.slices, used) if u
                                   for src in s.sources])
    runs = [_slice_op(y, config, sl, names, base) if u else None
            for sl, u in zip(config.slices, used)]
    if y.diags:
        return None
    layers = [r for r in runs if r is not None and r[2] > 0]
    if not layers and not config.whole:
        y.err("the slices hold no layers", config.slices[0].node)
        return None
    slots = (SlotDecl(0, None, runs[0][0]),) if config.whole else _place(layers)  # type: ignore
    parts = _ends(y, config, runs, names[base])
    if y.diags:
        return None
    return Recipe(
        models=tuple(ModelDecl(name, path) for path, name in names.items()),
        slots=slots,
        name=config.name,
        base_model=names[base],
        dtype=config.dtype,
        parts=parts,
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


def _ends(y: _Yaml, config: _Config, runs: list, base: str) -> tuple[PartDecl, ...]:
    """mergekit merges the embeddings over the first slice's sources and the final norm and
    lm_head over the last slice's, with the slice's parameters at t = 0, outside every
    tensor group: `embed =`, `norm =`, `head =` (left out when the base model's)."""
    first, last = config.slices[0], config.slices[-1]
    if len(first.sources) < len(last.sources):
        # mergekit pairs the last slice's models with the first slice's count of tensors
        y.err(f"mergekit merges the final norm and lm_head over only the first "
              f"{len(first.sources)} of this slice's {len(last.sources)} sources", last.node)
        return ()
    parts = []
    for part, (op, _, _) in (("embed", runs[0]), ("norm", runs[-1]), ("head", runs[-1])):
        end = resolve(op, 0.0, None) if isinstance(op, Merge) else replace(op, scale=None)
        if end != Take(base):
            parts.append(PartDecl(part, end))
    return tuple(parts)


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


def _slice_op(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
              base: str) -> tuple[ClosedOp, int, int] | None:
    """(operation, first source layer, layer count) of a slice; its operation also makes
    the embeddings (first slice) or the final norm and head (last slice)."""
    lengths = {src.stop - src.start for src in sl.sources}
    if len(lengths) > 1:
        y.err("the sources of a slice must have layer ranges of equal length, got "
              + _listing([f"[{s.start}, {s.stop}]" for s in sl.sources]),
              sl.sources[1].range_node)
        return None
    n, first = lengths.pop(), sl.sources[0].start
    seen: set[str] = set()
    for src in sl.sources:
        if src.model in seen:
            y.err(f"model {_show(src.model)} is a source of this slice twice", src.node)
            return None
        seen.add(src.model)
    form = "take" if config.method == "passthrough" else \
        methods.by_mergekit(config.method).mergekit_form  # type: ignore[union-attr]
    make = {"take": _passthrough, "weighted": _linear, "pair": _pair,
            "task_vector": _task_vector}[form]
    op = make(y, config, sl, names, base)
    return None if op is None else (op, first, n)


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
    proj, _ = _param(y, config, sl, "scale", src.model, SCALED)
    other, node = _param(y, config, sl, "scale", src.model, "")
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
        if isinstance(w, ByGroup) and w.other is None:
            y.err(f"the weight of {_show(src.model)} has no value for the tensors outside "
                  f"its filters ({', '.join(g for g, _ in w.groups)}); mergekit requires one",
                  src.node, hint="add a last entry without a filter: {value: ...}")
            return None
        weights.append(_float(w, "float"))
    return tuple(weights)


def _linear(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
            base: str) -> Take | Merge | None:
    weights = _weights(y, config, sl, sl.sources)
    if weights is None or not _same_start(y, sl):
        return None
    if weights == (1.0,):  # 1 * x (/ 1) is x, bit for bit
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
        found = [_param(y, config, sl, p.mergekit, s.model if p.per_model else None)[0]
                 for s in (sources if p.per_model else sources[:1])]
        found = [_float(p.mergekit_default if v is None else v, p.kind) for v in found]
        if isinstance(found[0], ByGroup) and found[0].other is None:
            found[0] = replace(found[0], other=_float(p.mergekit_default, p.kind))
        if len(set(found)) > 1 and p.kind == "float" and p.per_model:
            values[p.name] = tuple(found)  # one per model
        elif len(set(found)) > 1:
            y.err(f"the models of this slice have different {p.mergekit} values; tailor's "
                  f"{method.name} takes one {p.name} per merge", sl.node)
            return None
        else:
            values[p.name] = found[0]
    return values


def _float(value: object, kind: str) -> object:
    """Numbers as floats, inside gradients and by_group too (ints read back as floats)."""
    if kind != "float" or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, ByGroup):
        return ByGroup(tuple((g, _float(v, kind)) for g, v in value.groups),
                       None if value.other is None else _float(value.other, kind))
    return value


def _merge_of(method: Method, models: tuple[str, ...], values: dict[str, object]) -> Merge:
    """A Merge that writes only what differs from tailor's defaults."""
    written: dict[str, object] = {}
    for p in method.params:
        value = values.get(p.name, p.default)
        if p.kind == "weights":
            keep = p.required or any(w != 1.0 for w in value)  # type: ignore[union-attr]
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
