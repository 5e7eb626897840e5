"""Import, first step: the config's parts, each checked as it is read.

Consumes: the config's node tree, read through a `_Yaml`.
Produces: a `_Config` of `_Slice`s of `_Source`s (model paths, half-open layer ranges,
parameter nodes left unread), or None with the problems in the `_Yaml`'s diagnostics.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from yaml.nodes import Node, SequenceNode

from recipe_compiler.interop.mergekit.common import METHODS, REFUSED_KEYS, TOP_KEYS, _show
from recipe_compiler.interop.mergekit.yaml_nodes import _Yaml
from recipe_compiler.language.parser import MAX_SLOTS
from recipe_compiler.language.recipe import (
    DTYPES,
)


def _unwritable(text: str) -> str | None:
    """The first character a recipe string cannot hold (encoded as UTF-8, on one line)."""
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)


def _one_line(text: str) -> str:
    """`text` for a recipe comment: control characters and surrogates as escapes."""
    return "".join(c if unicodedata.category(c) not in ("Cc", "Cs") else ascii(c)[1:-1]
                   for c in text)


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
    name: str | None
    whole: bool = False  # `models:`: one slice over every layer of every model


def _read_config(y: _Yaml, root: Node) -> _Config | None:
    top = y.mapping(root, "the config")
    if top is None:
        return None
    _check_top_keys(y, top)
    method = _method(y, top)
    slices: list[_Slice | None] = []
    if "slices" in top and "models" in top:
        y.err("the config gives both 'slices:' and 'models:'; mergekit takes one",
              top["models"][0])
    elif "models" in top:
        slices = [_read_models(y, top["models"][1])]
    if "slices" in top:
        node = top["slices"][1]
        slices = [_read_slice(y, n) for n in y.sequence(node, "'slices'")]
        if isinstance(node, SequenceNode) and not slices:
            y.err("'slices' lists no slice", node)
    elif "models" not in top:
        y.err("the config has neither 'slices:' nor 'models:'", root)
    params = y.mapping(top["parameters"][1], "'parameters'") if "parameters" in top else None
    base = (_model_ref(y, top["base_model"][1]), top["base_model"][1]) \
        if "base_model" in top else None
    dtype = _dtype(y, top)
    name = _name(y, top)
    if method is None or not slices or any(s is None for s in slices) or (base and not base[0]):
        return None
    return _Config(method, tuple(slices), params, base, dtype, name,  # type: ignore[arg-type]
                   whole="models" in top)


def _read_models(y: _Yaml, node: Node) -> _Slice | None:
    """`models:` as one slice whose sources span every layer (ranges left at [0, 0]:
    the recipe says `slot 0..`, whatever the models' depth)."""
    sources = []
    for entry in y.sequence(node, "'models'"):
        keys = y.mapping(entry, "a model entry")
        if keys is None:
            return None
        for key, (knode, _) in keys.items():
            if key not in ("model", "parameters"):
                y.err(f"unknown model entry key {_show(key)}", knode)
        if "model" not in keys:
            y.err("a model entry needs 'model:'", entry)
            return None
        model = _model_ref(y, keys["model"][1])
        params = y.mapping(keys["parameters"][1], "'parameters'") \
            if "parameters" in keys else None
        if model is None:
            return None
        sources.append(_Source(model, 0, 0, params, entry, keys["model"][1]))
    if not sources:
        y.err("'models' lists no model", node)
        return None
    return _Slice(tuple(sources), None, None, node)


def _check_top_keys(y: _Yaml, top: dict[str, tuple[Node, Node]]) -> None:
    for key, (knode, _) in top.items():
        if key in REFUSED_KEYS:
            y.err(REFUSED_KEYS[key], knode)
        elif key not in TOP_KEYS:
            y.err(f"unknown mergekit key {_show(key)}", knode)


def _method(y: _Yaml, top: dict) -> str | None:
    if "merge_method" not in top:
        y.err("the config has no 'merge_method'", None)
        return None
    node = top["merge_method"][1]
    method = y.value(node)
    if method not in METHODS:
        y.err(f"merge_method {_show(method)} cannot be expressed in tailor (it has: "
              f"{', '.join(METHODS)})", node)
        return None
    return str(method)


def _dtype(y: _Yaml, top: dict) -> str | None:
    names = {}
    for key in ("dtype", "out_dtype"):
        if key in top:
            value = y.value(top[key][1])
            value = value.removeprefix("torch.") if isinstance(value, str) else value
            if value not in DTYPES:
                y.err(f"{key} {_show(value)} cannot be expressed in tailor (it has: "
                      f"{', '.join(DTYPES)})", top[key][1])
                continue
            names[key] = value
    compute, out = names.get("dtype"), names.get("out_dtype")
    if out and compute and out != compute and compute != "float32":
        # mergekit rounds every tensor through `dtype` first; tailor computes in float32
        y.err(f"dtype {compute} with out_dtype {out}: mergekit rounds through {compute} "
              "first, tailor computes in float32 and writes out_dtype", top["dtype"][1])
    return out or compute


def _name(y: _Yaml, top: dict) -> str | None:
    """The config's `name:` (mergekit-multi names its stages; mergekit-yaml ignores it), else
    the config file's stem."""
    if "name" not in top:
        stem = os.path.splitext(os.path.basename(y.path))[0]
        return _one_line(stem) if stem and not y.path.startswith("<") else None
    node = top["name"][1]
    value = y.value(node)
    if not isinstance(value, str) or not value:
        y.err(f"name must be a non-empty string, got {_show(value)}", node)
        return None
    if (bad := _unwritable(value)) is not None:
        y.err(f"name holds the character {ascii(bad)}, which a recipe cannot hold", node)
        return None
    return value


def _model_ref(y: _Yaml, node: Node) -> str | None:
    value = y.value(node)
    if not isinstance(value, str) or not value:
        y.err("a model must be a path or Hugging Face id (a string)", node)
        return None
    if (bad := _unwritable(value)) is not None:
        y.err(f"a model path holds the character {ascii(bad)}, which a recipe cannot hold",
              node)
        return None
    if "+" in value:
        y.err(f"LoRA models ({_show(value)}) are not supported: merge the adapter into the "
              "model first", node)
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
            y.err(f"unknown slice key {_show(key)}", knode)
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
            y.err(f"unknown source key {_show(key)}", knode)
    if "model" not in keys or "layer_range" not in keys:
        y.err("a source needs 'model:' and 'layer_range:'", node)
        return None
    model = _model_ref(y, keys["model"][1])
    bounds = _layer_range(y, keys["layer_range"][1])
    params = y.mapping(keys["parameters"][1], "'parameters'") if "parameters" in keys else None
    if model is None or bounds is None:
        return None
    return _Source(model, *bounds, params, node, keys["layer_range"][1])


def _layer_range(y: _Yaml, node: Node) -> tuple[int, int] | None:
    """[start, stop], checked before anything counts through it."""
    bounds = y.value(node)
    ok = (isinstance(bounds, list) and len(bounds) == 2
          and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bounds)
          and bounds[0] <= bounds[1])
    if not ok:
        y.err(f"layer_range must be [start, stop] with 0 <= start <= stop, got {_show(bounds)}",
              node)
        return None
    if bounds[1] > MAX_SLOTS:
        y.err(f"layer_range {_show(bounds)} reaches layer {bounds[1] - 1}; tailor's limit is "
              f"{MAX_SLOTS} layers, numbered from 0", node)
        return None
    return bounds[0], bounds[1]
