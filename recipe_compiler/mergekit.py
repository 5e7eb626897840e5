"""Convert between mergekit YAML configs and tailor recipes, exactly or not at all.

Consumes: mergekit config text (`import_config`), or a `Recipe` and optionally its models'
`ModelInfo` (`export_recipe`).
Produces: a `Recipe` that builds the same tensors as `mergekit-yaml` would, or mergekit YAML
that builds the same tensors as `tailorc build` would. Anything one side cannot say exactly
is a `RecipeError` pointing at the YAML key (line and column from PyYAML's node marks) or at
the recipe token, never an approximation.

Three facts of mergekit (0.1.x, `mergekit/plan.py`, `config.py`, `merge_methods/`) shape the
mapping:
- `layer_range: [a, b]` is half-open; a slice of n layers makes n output layers, output
  layer k of the slice reading layer `a_j + k` of each source j.
- the embeddings are merged over the FIRST slice's sources and the final norm and lm_head
  over the LAST slice's, with the config's one merge method; tailor copies all three from
  its base model, so both end slices must reduce to one model's tensors unchanged.
- parameters resolve per tensor through source -> slice -> top-level `parameters`, and
  `filter` entries match substrings of tensor names; mergekit's scalar `scale` multiplies
  every tensor of a layer, while tailor's multiplies only the output projections.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .check import Models, model_path
from .recipe import DTYPES, ClosedOp, Drop, Merge, ModelDecl, Op, Recipe, SlotDecl, Take
from .source import Diagnostic, RecipeError, Source, Span, error

METHODS = ("passthrough", "linear", "task_arithmetic", "ties", "slerp")
PARAMETERS = {
    "passthrough": ("scale",),
    "linear": ("weight", "normalize"),
    "task_arithmetic": ("weight", "normalize", "density", "int8_mask", "rescale", "lambda"),
    "ties": ("weight", "normalize", "density", "int8_mask", "rescale", "lambda"),
    "slerp": ("t",),
}
# mergekit's defaults (merge_methods/registry.py, linear.py); tailor's are in plan.merge_expr
MK_NORMALIZE = {"linear": True, "task_arithmetic": False, "ties": True}
TAILOR_NORMALIZE = {"linear": True, "task_arithmetic": False, "ties": True}
# The only per-tensor `scale` tailor can say: the Llama-family output projections.
SCALE_FILTERS = ("o_proj", "down_proj")
LAYER_TENSOR = "model.layers.0.mlp.up_proj.weight"  # stands for the unfiltered layer tensors
PROJ_TENSOR = "model.layers.0.self_attn.o_proj.weight"
END_TENSORS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
REFUSED_KEYS = {
    "tokenizer_source": "tokenizer surgery is not supported: tailor copies the base model's "
                        "tokenizer files unchanged",
    "tokenizer": "tokenizer surgery is not supported: tailor copies the base model's "
                 "tokenizer files unchanged",
    "chat_template": "chat_template is not supported: tailor copies the base model's "
                     "tokenizer files unchanged",
    "modules": "multi-module configs ('modules:') are not supported",
}
KEYWORDS = {"drop", "take", "merge", "choose", "model", "slot", "search", "true", "false"}


# --- YAML nodes with positions -----------------------------------------------------------


class _Yaml:
    """Reads PyYAML nodes, collecting diagnostics that point at them."""

    def __init__(self, path: str):
        self.path = path
        self.diags: list[Diagnostic] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def span(self, node: Node) -> Span:
        s, e = node.start_mark, node.end_mark
        if e.line > s.line:  # a block value: point at its first line only
            return Span(self.path, s.line + 1, s.column + 1, s.line + 1, s.column + 2)
        return Span(self.path, s.line + 1, s.column + 1, e.line + 1, max(e.column, s.column) + 1)

    def err(self, message: str, node: Node | None, hint: str | None = None) -> None:
        span = self.span(node) if node is not None else Span.whole_file(self.path)
        self.diags.append(error(message, span, hint))

    def value(self, node: Node) -> object:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.err(f"{what} must be a mapping of keys to values", node)
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            name = self.value(key)
            if not isinstance(name, str):
                self.err(f"{what}: keys must be names, got {name!r}", key)
            elif name in out:
                self.err(f"'{name}' is given twice", key)
            else:
                out[name] = (key, value)
        return out

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.err(f"{what} must be a list", node)
            return []
        return list(node.value)


# --- import: the config's parts ----------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    model: str  # the path as written
    start: int
    stop: int
    params: dict[str, tuple[Node, Node]] | None
    node: Node
    range_node: Node


@dataclass(frozen=True)
class _Slice:
    sources: tuple[_Source, ...]
    params: dict[str, tuple[Node, Node]] | None
    base: str | None  # the slice's own base_model, if given
    node: Node


@dataclass(frozen=True)
class _Config:
    method: str
    slices: tuple[_Slice, ...]
    params: dict[str, tuple[Node, Node]] | None
    base: tuple[str, Node] | None
    dtype: str | None


def import_config(text: str, path: str = "<config>") -> Recipe:
    """A mergekit config as a recipe that builds the same tensors; RecipeError otherwise."""
    y = _Yaml(path)
    source = Source(path, text)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([error(f"not valid YAML: {problem}",
                                 Span(path, line, col, line, col + 1))], source) from None
    config = _read_config(y, root) if root is not None else None
    if root is None:
        y.err("the config is empty", None)
    if config is not None and not y.diags:
        _check_parameters(y, config)
    recipe = _to_recipe(y, config) if config is not None and not y.diags else None
    if y.diags or recipe is None:
        # a top-level parameter is read once per slice: report each problem once
        raise RecipeError(list(dict.fromkeys(y.diags)), source)
    return recipe


def _read_config(y: _Yaml, root: Node) -> _Config | None:
    top = y.mapping(root, "the config")
    if top is None:
        return None
    for key, (knode, _) in top.items():
        if key in REFUSED_KEYS:
            y.err(REFUSED_KEYS[key], knode)
        elif key == "models":
            y.err("whole-model merges ('models:') are not supported: mergekit also merges the "
                  "embeddings, final norm and lm_head, which tailor copies from one base model",
                  knode, hint="list the layers under 'slices:', beginning and ending with a "
                  "slice of the base model alone")
        elif key not in ("slices", "merge_method", "base_model", "dtype", "out_dtype",
                         "parameters"):
            y.err(f"unknown mergekit key '{key}'", knode)
    method = _method(y, top)
    slices = [_read_slice(y, n) for n in y.sequence(top["slices"][1], "'slices'")] \
        if "slices" in top else []
    if "slices" not in top and "models" not in top:
        y.err("the config has no 'slices:'", root)
    params = y.mapping(top["parameters"][1], "'parameters'") if "parameters" in top else None
    base = (_model_ref(y, top["base_model"][1]), top["base_model"][1]) \
        if "base_model" in top else None
    dtype = _dtype(y, top)
    if method is None or any(s is None for s in slices) or (base and base[0] is None):
        return None
    return _Config(method, tuple(slices), params, base, dtype)  # type: ignore[arg-type]


def _method(y: _Yaml, top: dict) -> str | None:
    if "merge_method" not in top:
        y.err("the config has no 'merge_method'", None)
        return None
    node = top["merge_method"][1]
    method = y.value(node)
    if method not in METHODS:
        y.err(f"merge_method '{method}' cannot be expressed in tailor (it has: "
              f"{', '.join(METHODS)})", node)
        return None
    return str(method)


def _dtype(y: _Yaml, top: dict) -> str | None:
    names = {}
    for key in ("dtype", "out_dtype"):
        if key in top:
            value = str(y.value(top[key][1])).removeprefix("torch.")
            if value not in DTYPES:
                y.err(f"{key} '{value}' cannot be expressed in tailor (it has: "
                      f"{', '.join(DTYPES)})", top[key][1])
            names[key] = value
    compute, out = names.get("dtype"), names.get("out_dtype")
    if out and compute and out != compute and compute != "float32":
        # mergekit rounds every tensor through `dtype` first; tailor computes in float32
        y.err(f"dtype {compute} with out_dtype {out}: mergekit rounds through {compute} "
              "first, tailor computes in float32 and writes out_dtype", top["dtype"][1])
    return out or compute


def _model_ref(y: _Yaml, node: Node) -> str | None:
    value = y.value(node)
    if not isinstance(value, str) or not value:
        y.err("a model must be a path or Hugging Face id (a string)", node)
        return None
    if "+" in value:
        y.err(f"LoRA models ('{value}') are not supported: merge the adapter into the model "
              "first", node)
        return None
    return value


def _read_slice(y: _Yaml, node: Node) -> _Slice | None:
    keys = y.mapping(node, "a slice")
    if keys is None:
        return None
    for key, (knode, _) in keys.items():
        if key == "residual_weight":
            y.err("residual_weight is not supported", knode)
        elif key not in ("sources", "parameters", "base_model"):
            y.err(f"unknown slice key '{key}'", knode)
    if "sources" not in keys:
        y.err("a slice needs 'sources:'", node)
        return None
    sources = [_read_source(y, n) for n in y.sequence(keys["sources"][1], "'sources'")]
    if not sources:
        y.err("a slice needs at least one source", keys["sources"][1])
    params = y.mapping(keys["parameters"][1], "'parameters'") if "parameters" in keys else None
    base = _model_ref(y, keys["base_model"][1]) if "base_model" in keys else None
    if not sources or any(s is None for s in sources):
        return None
    return _Slice(tuple(sources), params, base, node)  # type: ignore[arg-type]


def _read_source(y: _Yaml, node: Node) -> _Source | None:
    keys = y.mapping(node, "a source")
    if keys is None:
        return None
    for key, (knode, _) in keys.items():
        if key not in ("model", "layer_range", "parameters"):
            y.err(f"unknown source key '{key}'", knode)
    if "model" not in keys or "layer_range" not in keys:
        y.err("a source needs 'model:' and 'layer_range:'", node)
        return None
    model = _model_ref(y, keys["model"][1])
    range_node = keys["layer_range"][1]
    bounds = y.value(range_node)
    ok = (isinstance(bounds, list) and len(bounds) == 2
          and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bounds)
          and bounds[0] <= bounds[1])
    if not ok:
        y.err(f"layer_range must be [start, stop] with 0 <= start <= stop, got {bounds!r}",
              range_node)
    params = y.mapping(keys["parameters"][1], "'parameters'") if "parameters" in keys else None
    if model is None or not ok:
        return None
    return _Source(model, bounds[0], bounds[1], params, node, range_node)


# --- import: parameters ------------------------------------------------------------------


def _check_parameters(y: _Yaml, config: _Config) -> None:
    """Every parameter is one tailor can say: known, a scalar of the right type, and not
    a gradient or a per-tensor filter (except the output-projection `scale`)."""
    scopes = [config.params] + [s.params for s in config.slices] + \
        [src.params for s in config.slices for src in s.sources]
    known = PARAMETERS[config.method]
    for scope in scopes:
        for name, (knode, vnode) in (scope or {}).items():
            if name not in known:
                y.err(f"parameter '{name}' cannot be expressed in tailor for merge_method "
                      f"{config.method} (it has: {', '.join(known)})", knode)
            elif _is_filter_list(vnode):
                _check_filters(y, name, vnode)
            else:
                _check_scalar(y, name, vnode)


def _is_filter_list(node: Node) -> bool:
    return isinstance(node, MappingNode) or (
        isinstance(node, SequenceNode) and any(isinstance(n, MappingNode) for n in node.value))


def _check_scalar(y: _Yaml, name: str, node: Node) -> None:
    if isinstance(node, SequenceNode):
        y.err(f"parameter '{name}' is a gradient (a list of values across layers); tailor "
              "takes one value per merge", node,
              hint="split the slice so that each part has one value")
        return
    value = y.value(node)
    want_bool = name in ("normalize", "int8_mask", "rescale")
    if want_bool != isinstance(value, bool) or not isinstance(value, (bool, int, float)):
        y.err(f"parameter '{name}' must be {'true or false' if want_bool else 'a number'}, "
              f"got {value!r}", node)
    elif name == "rescale" and value:
        y.err("rescale: true (rescaling after trimming) has no tailor equivalent", node)
    elif name == "lambda" and value != 1:
        y.err(f"lambda {value} has no tailor equivalent (fold it into the weights)", node)
    elif name == "t" and not 0 <= value <= 1:
        y.err(f"t must be in [0, 1], got {value}", node)
    elif name == "density" and not 0 < value <= 1:
        y.err(f"density must be in (0, 1], got {value}", node)


def _check_filters(y: _Yaml, name: str, node: Node) -> None:
    """Only `scale: [{filter: o_proj, value: s}, {filter: down_proj, value: s}, {value: 1}]`
    (what `export` writes for `take(m, scale=s)`) means the same in both tools."""
    entries = [y.value(n) for n in (node.value if isinstance(node, SequenceNode) else [node])]
    filters = [e.get("filter") for e in entries if isinstance(e, dict)]
    values = {e.get("value") for e in entries[:-1] if isinstance(e, dict)}
    last = entries[-1] if entries and isinstance(entries[-1], dict) else {}
    ok = (name == "scale" and len(entries) == 3 and sorted(filters[:2]) == sorted(SCALE_FILTERS)
          and len(values) == 1 and all(isinstance(v, (int, float)) for v in values)
          and last.get("filter") in (None, "*") and last.get("value") == 1)
    if not ok:
        y.err(f"parameter '{name}' uses per-tensor filters, which tailor cannot express",
              node, hint="tailor's only per-tensor parameter is take(m, scale=s), written for "
              "mergekit as scale: [{filter: o_proj, value: s}, {filter: down_proj, value: s}, "
              "{value: 1.0}]")


def _setting(y: _Yaml, node: Node, tensor: str) -> object:
    """mergekit's evaluate_setting for one tensor name (gradients were refused before)."""
    if not _is_filter_list(node):
        return y.value(node)
    for entry in (node.value if isinstance(node, SequenceNode) else [node]):
        cond = y.value(entry)
        filt = cond.get("filter")
        if filt is None or filt == "*" or filt in tensor:
            return cond.get("value")
    return None


def _param(y: _Yaml, config: _Config, sl: _Slice, name: str, model: str | None,
           tensor: str = LAYER_TENSOR) -> tuple[object, Node | None]:
    """A parameter's value and where it was written: source, then slice, then top level."""
    scopes = [src.params for src in sl.sources if model is not None and src.model == model]
    for scope in scopes + [sl.params, config.params]:
        if scope and name in scope:
            value = _setting(y, scope[name][1], tensor)
            if value is not None:
                return value, scope[name][1]
    return None, None


# --- import: slices to slot operations ---------------------------------------------------


def _to_recipe(y: _Yaml, config: _Config) -> Recipe | None:
    base = _end_model(y, config)
    names = _short_names([base or ""] + [src.model for s in config.slices for src in s.sources])
    ops: list[ClosedOp] = []
    for sl in config.slices:
        ops += _slice_ops(y, config, sl, names, base or "", start=len(ops))
    if not ops:
        y.err("the slices hold no layers", config.slices[0].node if config.slices else None)
    if y.diags or base is None:
        return None
    return Recipe(
        models=tuple(ModelDecl(name, path) for path, name in names.items()),
        slots=_compact(ops),
        base_model=names[base],
        dtype=config.dtype,
        path=os.path.splitext(y.path)[0] + ".tr",
        comments=(("header", (f"# imported from {y.path} (mergekit merge_method: "
                              f"{config.method})",), None),),
    )


def _end_model(y: _Yaml, config: _Config) -> str | None:
    """The one model whose embeddings, final norm and lm_head mergekit's output keeps
    unchanged; tailor's base model. None (with a diagnostic) when mergekit merges them."""
    first, last = config.slices[0], config.slices[-1]
    found = []
    for sl, what in ((first, "embeddings over the first"), (last, "final norm and lm_head "
                                                                  "over the last")):
        models = list(dict.fromkeys(src.model for src in sl.sources))
        if len(models) != 1:
            hint = ("mergekit's slerp needs two models in every slice, so it always merges them"
                    if config.method == "slerp" else "begin and end the config with a slice "
                    "of the base model alone; a zero-length one (layer_range: [0, 0]) adds no "
                    "layer")
            y.err(f"mergekit merges the {what} slice's models ({', '.join(models)}); tailor "
                  "copies them from one base model", sl.node, hint=hint)
            return None
        found.append((models[0], sl))
    (model, sl), (last_model, last_sl) = found
    if model != last_model:
        y.err(f"mergekit takes the embeddings from the first slice's model '{model}' but the "
              f"final norm and lm_head from the last slice's model '{last_model}'; tailor "
              "takes all three from one base model", last_sl.node)
        return None
    if config.base is not None and config.base[0] != model:
        y.err(f"base_model '{config.base[0]}' is not the model the embeddings, final norm and "
              f"lm_head come from ('{model}'); tailor takes all of them from its base model",
              config.base[1])
        return None
    for s, tensor in ((sl, END_TENSORS[0]), (last_sl, END_TENSORS[1]), (last_sl, END_TENSORS[2])):
        _check_identity(y, config, s, model, tensor)
    return model


def _check_identity(y: _Yaml, config: _Config, sl: _Slice, model: str, tensor: str) -> None:
    """mergekit's merge of a single model leaves `tensor` unchanged (up to rounding)."""
    # passthrough: a scalar scale is refused for the layers already, and the one filter
    # form accepted leaves these tensors at 1
    if config.method == "linear":
        weight, node = _param(y, config, sl, "weight", model, tensor)
        normalize, _ = _param(y, config, sl, "normalize", None, tensor)
        if normalize is False and weight != 1:
            y.err(f"with normalize: false, weight {weight} also multiplies '{tensor}' in "
                  "mergekit; tailor copies it from the base model unchanged", node)


def _short_names(paths: list[str]) -> dict[str, str]:
    """Path -> recipe identifier: the last path component, sanitised and deduplicated."""
    names: dict[str, str] = {}
    for path in dict.fromkeys(p for p in paths if p):
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.rstrip("/").split("/")[-1]) or "model"
        stem = stem if re.match(r"[A-Za-z_]", stem) else f"m_{stem}"
        stem = f"{stem}_model" if stem in KEYWORDS else stem
        name, k = stem, 2
        while name in names.values():
            name, k = f"{stem}_{k}", k + 1
        names[path] = name
    return names


def _slice_ops(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str], base: str,
               start: int) -> list[ClosedOp]:
    """One operation per output layer of the slice; slot `start + k` reads layer a + k."""
    lengths = {src.stop - src.start for src in sl.sources}
    if len(lengths) > 1:
        y.err("the sources of a slice must have layer ranges of equal length, got "
              + ", ".join(f"[{s.start}, {s.stop}]" for s in sl.sources), sl.sources[1].range_node)
        return []
    seen: set[str] = set()
    for src in sl.sources:
        if src.model in seen:
            y.err(f"model '{src.model}' is a source of this slice twice", src.node)
        seen.add(src.model)
    make = {"passthrough": _passthrough, "linear": _linear, "slerp": _slerp}.get(
        config.method, _task_arithmetic)
    op = make(y, config, sl, names, base)
    if op is None:
        return []
    n, first = lengths.pop(), sl.sources[0].start
    return [_at_layer(op, first + k, start + k) for k in range(n)]


def _at_layer(op: Take | Merge, layer: int, slot: int) -> ClosedOp:
    from dataclasses import replace

    return replace(op, layer=None if layer == slot else layer)


def _same_start(y: _Yaml, sl: _Slice) -> bool:
    """tailor's merge reads one layer index from every model."""
    for src in sl.sources[1:]:
        if src.start != sl.sources[0].start:
            y.err(f"this slice merges layer {src.start} + k of '{src.model}' with layer "
                  f"{sl.sources[0].start} + k of '{sl.sources[0].model}'; tailor's merge reads "
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
            y.err(f"no weight for '{src.model}' (mergekit requires one)", src.node)
            return None
        weights.append(float(w))  # type: ignore[arg-type]
    return tuple(weights)


def _linear(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
            base: str) -> Take | Merge | None:
    weights = _weights(y, config, sl, sl.sources)
    if weights is None or not _same_start(y, sl):
        return None
    normalize, _ = _param(y, config, sl, "normalize", None)
    normalize = MK_NORMALIZE["linear"] if normalize is None else normalize
    if len(weights) == 1 and weights[0] == 1:  # 1 * x (/ 1) is x, bit for bit
        return Take(names[sl.sources[0].model])
    equal = all(w == 1 for w in weights)  # tailor's default weights: 1 each
    return Merge(tuple(names[s.model] for s in sl.sources), "linear", None if equal else weights,
                 normalize=None if normalize == TAILOR_NORMALIZE["linear"] else bool(normalize))


def _slice_base(y: _Yaml, config: _Config, sl: _Slice) -> str | None:
    ref = sl.base or (config.base[0] if config.base else None)
    if ref is None or ref not in {s.model for s in sl.sources}:
        y.err(f"merge_method {config.method} needs base_model among the slice's sources "
              f"(base_model: {ref or 'not given'})", sl.node)
        return None
    return ref


def _task_arithmetic(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
                     base: str) -> Take | Merge | None:
    ref = _slice_base(y, config, sl)
    if ref is None or not _same_start(y, sl):
        return None
    if ref != base:
        y.err(f"this slice's base_model '{ref}' is not the recipe's base model '{base}'; "
              "tailor's task arithmetic subtracts the recipe's base model", sl.node)
        return None
    others = [s for s in sl.sources if s.model != ref]
    if not others:  # mergekit returns the base tensor itself
        return Take(names[ref])
    weights = _weights(y, config, sl, others)
    normalize, _ = _param(y, config, sl, "normalize", None)
    normalize = MK_NORMALIZE[config.method] if normalize is None else normalize
    density = _density(y, config, sl, others) if config.method == "ties" else None
    if weights is None or (config.method == "ties" and density is None):
        return None
    return Merge(tuple(names[s.model] for s in others), config.method, weights,
                 normalize=None if normalize == TAILOR_NORMALIZE[config.method] else normalize,
                 density=None if density == 1 else density)


def _density(y: _Yaml, config: _Config, sl: _Slice, others) -> float | None:
    values = {float(_param(y, config, sl, "density", s.model)[0] or 1.0) for s in others}
    if len(values) > 1:
        y.err("the models of this slice have different densities; tailor's ties takes one "
              "density per merge", sl.node)
        return None
    return values.pop()


def _slerp(y: _Yaml, config: _Config, sl: _Slice, names: dict[str, str],
           base: str) -> Merge | None:
    ref = _slice_base(y, config, sl)
    if ref is None or not _same_start(y, sl):
        return None
    if len(sl.sources) != 2:
        y.err(f"slerp merges exactly two sources, got {len(sl.sources)}", sl.node)
        return None
    other = next(s.model for s in sl.sources if s.model != ref)
    t, _ = _param(y, config, sl, "t", None)
    if t is None:
        y.err("no t for slerp (mergekit requires one)", sl.node)
        return None
    return Merge((names[ref], names[other]), "slerp", t=float(t))  # type: ignore[arg-type]


def _compact(ops: list[ClosedOp]) -> tuple[SlotDecl, ...]:
    """Consecutive equal operations that read the slot's own layer share one range."""
    decls: list[SlotDecl] = []
    for i, op in enumerate(ops):
        last = decls[-1] if decls else None
        if last is not None and last.op == op and op.layer is None:
            decls[-1] = SlotDecl(last.start, i + 1, op)
        else:
            decls.append(SlotDecl(i, i + 1, op))
    return tuple(decls)


# --- export ----------------------------------------------------------------------------


class _Exporter:
    """Recipe -> mergekit config dict; collects a diagnostic per slot it cannot write."""

    def __init__(self, recipe: Recipe, models: Models | None):
        self.recipe = recipe
        self.models = models
        self.base = recipe.base_name or ""
        self.diags: list[Diagnostic] = []

    def err(self, message: str, op: Op, key: str = "op", hint: str | None = None) -> None:
        self.diags.append(error(message, op.span_of(key) or Span.whole_file(self.recipe.path),
                                hint))

    def method(self, kept: list[tuple[int, ClosedOp]]) -> str:
        merges = [op for _, op in kept if isinstance(op, Merge)]
        method = merges[0].method if merges else "passthrough"
        for op in merges:
            if op.method != method:
                self.err(f"mergekit has one merge_method per config; this recipe merges with "
                         f"both {method} and {op.method}", op, "method")
        if method == "slerp":
            self.err("mergekit's slerp needs two models in every slice, so it would also slerp "
                     "the embeddings, final norm and lm_head that tailor copies from the base "
                     "model", merges[0], "method")
        return method

    def path(self, name: str) -> str:
        """As written, or (given the loaded models) as found from the working directory,
        which is where mergekit resolves relative paths."""
        decl = self.recipe.model(name)
        if decl is None or self.models is None:
            return decl.path if decl else name
        return os.path.normpath(model_path(self.recipe, decl.path))

    def source(self, name: str, layer: int, n: int, params: dict | None = None) -> dict:
        out: dict = {"model": self.path(name), "layer_range": [layer, layer + n]}
        if params:
            out["parameters"] = params
        return out

    def scale_filters(self, op: Take) -> list[dict]:
        arch = self.models[op.model].arch if self.models and op.model in self.models else None
        if arch is not None and not all(any(f in p for f in SCALE_FILTERS)
                                        for p in arch.scale_tensors):
            self.err(f"scale on a {arch.name} layer cannot be written as a mergekit filter "
                     f"(its output projections are {', '.join(arch.scale_tensors)})",
                     op, "scale")
        return [{"filter": f, "value": op.scale} for f in SCALE_FILTERS] + [{"value": 1.0}]

    def slice_of(self, op: ClosedOp, layer: int, n: int, method: str) -> dict | None:
        if isinstance(op, Take):
            return self.take_slice(op, layer, n, method)
        assert isinstance(op, Merge)
        if op.method != method or method == "slerp":
            return None  # reported once by method()
        if op.scale is not None:
            self.err("mergekit has no scale for merged layers", op, "scale")
        weights = op.weights or tuple(1.0 for _ in op.models)
        if method == "linear":
            params = {"normalize": False} if op.normalize is False else {}
            return {"sources": [self.source(m, layer, n, {"weight": w})
                                for m, w in zip(op.models, weights)], **_params(params)}
        if self.base in op.models:
            self.err(f"this {op.method} merge lists the base model '{self.base}', whose task "
                     "vector mergekit skips", op, "op")
        normalize = op.normalize if op.normalize is not None else TAILOR_NORMALIZE[op.method]
        params = {} if normalize == MK_NORMALIZE[op.method] else {"normalize": normalize}
        if op.method == "ties" and op.density not in (None, 1):
            params["density"] = op.density
        sources = [self.source(m, layer, n, {"weight": w}) for m, w in zip(op.models, weights)]
        return {"sources": sources + [self.source(self.base, layer, n)], **_params(params)}

    def take_slice(self, op: Take, layer: int, n: int, method: str) -> dict | None:
        params: dict = {}
        if op.scale is not None:
            if method != "passthrough":
                self.err(f"mergekit's scale exists only for passthrough; this recipe merges "
                         f"with {method}", op, "scale")
            params["scale"] = self.scale_filters(op)
        if method == "linear":
            params["weight"] = 1.0  # 1 * x / 1 is x, bit for bit
        elif method in ("task_arithmetic", "ties") and op.model != self.base:
            self.err(f"in a {method} config mergekit can copy only the base model's layers "
                     f"unchanged; take({op.model}) would be {method} of one model",
                     op, hint=f"write merge({op.model}, weights=[1.0], method={method}) to "
                     "accept the rounding of base + (x - base)")
        return {"sources": [self.source(op.model, layer, n, params or None)]}


def _params(params: dict) -> dict:
    return {"parameters": params} if params else {}


def export_recipe(recipe: Recipe, models: Models | None = None) -> str:
    """A mergekit config that builds the same tensors as the recipe; RecipeError otherwise.

    `models` (from check.load_models) lets `scale` be checked against the architecture;
    without it the Llama-family projection names are assumed."""
    ex = _Exporter(recipe, models)
    kept: list[tuple[int, ClosedOp]] = []
    for decl in recipe.slots:
        if not isinstance(decl.op, (Drop, Take, Merge)):
            ex.err("an open slot cannot be exported; fill it first (tailorc evolve)", decl.op)
        elif not isinstance(decl.op, Drop):
            kept += [(i, decl.op) for i in range(decl.start, decl.stop)]
    if not kept:
        ex.diags.append(error("the recipe keeps no layer", Span.whole_file(recipe.path)))
        raise RecipeError(ex.diags)
    method = ex.method(kept)
    slices = [s for s in (ex.slice_of(op, layer, n, method) for op, layer, n in _runs(kept))
              if s is not None]
    if ex.diags:
        raise RecipeError(ex.diags)
    return _dump(recipe, ex, method, _with_base_ends(ex, slices, method))


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
    from dataclasses import replace

    return type(a) is type(b) and replace(a, layer=None) == replace(b, layer=None)


def _with_base_ends(ex: _Exporter, slices: list[dict], method: str) -> list[dict]:
    """mergekit merges the embeddings over the first slice's sources and the final norm and
    lm_head over the last's: make both a slice of the base model alone (zero-length when
    the recipe's own end slices are not) so the three are the base model's, unchanged."""
    def base_alone(s: dict) -> bool:
        src = s["sources"]
        return len(src) == 1 and src[0]["model"] == ex.path(ex.base) and \
            "scale" not in src[0].get("parameters", {})

    params = {"weight": 1.0} if method == "linear" else None
    out = list(slices)
    if not base_alone(out[0]):
        out.insert(0, {"sources": [ex.source(ex.base, 0, 0, params)]})
    if not base_alone(out[-1]):
        out.append({"sources": [ex.source(ex.base, 0, 0, params)]})
    return out


def _dump(recipe: Recipe, ex: _Exporter, method: str, slices: list[dict]) -> str:
    config: dict = {"merge_method": method, "base_model": ex.path(ex.base), "slices": slices}
    if recipe.dtype is not None:
        if method == "passthrough" or recipe.dtype == "float32":
            config["dtype"] = recipe.dtype
        else:  # tailor merges in float32 and writes the recipe's dtype
            config["dtype"], config["out_dtype"] = "float32", recipe.dtype
    head = ("# written by tailorc export\n"
            "# mergekit resolves relative model paths from its working directory\n")
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
