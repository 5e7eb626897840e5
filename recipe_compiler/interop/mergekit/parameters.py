"""Import, second step: mergekit's parameters, checked and resolved.

Consumes: a `_Config` and its `_Yaml`.
Produces: diagnostics for every parameter tailor cannot say (`_check_parameters`), and a
parameter's value for one tensor name, resolved source -> slice -> top level (`_param`).
"""

from __future__ import annotations

import math

from yaml.nodes import MappingNode, Node, SequenceNode

from recipe_compiler import methods
from recipe_compiler.interop.mergekit.common import (
    BOOL_PARAMETERS,
    LAYER_TENSOR,
    PARAMETERS,
    SCALE_FILTERS,
    _show,
)
from recipe_compiler.interop.mergekit.config import _Config, _Slice
from recipe_compiler.interop.mergekit.yaml_nodes import _Yaml


def _check_parameters(y: _Yaml, config: _Config) -> None:
    """Every parameter is one tailor can say: known, a finite scalar of the right type in
    range, and not a gradient or a per-tensor filter (except the output-projection `scale`)."""
    scopes = [config.params] + [s.params for s in config.slices] + \
        [src.params for s in config.slices for src in s.sources]
    known = PARAMETERS[config.method]
    for scope in scopes:
        for name, (knode, vnode) in (scope or {}).items():
            if name not in known:
                y.err(f"parameter {_show(name)} cannot be expressed in tailor for merge_method "
                      f"{config.method} (it has: {', '.join(known)})", knode)
            elif _is_filter_list(vnode):
                _check_filters(y, name, vnode)
            else:
                _check_scalar(y, name, vnode, config.method)


def _is_filter_list(node: Node) -> bool:
    return isinstance(node, MappingNode) or (
        isinstance(node, SequenceNode) and any(isinstance(n, MappingNode) for n in node.value))


def _finite(value: object) -> bool:
    """A real number a recipe can print: not a bool, NaN, infinite or past float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past 1.8e308
        return False


def _check_scalar(y: _Yaml, name: str, node: Node, method: str = "passthrough") -> None:
    if isinstance(node, SequenceNode):
        y.err(f"parameter '{name}' is a gradient (a list of values across layers); tailor "
              "takes one value per merge", node,
              hint="split the slice so that each part has one value")
        return
    value = y.value(node)
    if name in BOOL_PARAMETERS:
        if not isinstance(value, bool):
            y.err(f"parameter '{name}' must be true or false, got {_show(value)}", node)
        elif name == "rescale" and value and _fixed(method, name) is False:
            y.err("rescale: true (rescaling after trimming) has no tailor equivalent", node)
    elif not _finite(value):
        y.err(f"parameter '{name}' must be a finite number, got {_show(value)}", node)
    else:
        _check_range(y, name, float(value), node, method)  # type: ignore[arg-type]


def _fixed(method: str, name: str) -> object:
    """The one value tailor accepts for a mergekit parameter it has no counterpart for."""
    found = methods.by_mergekit(method)
    return dict(found.mergekit_fixed).get(name) if found else None


def _check_range(y: _Yaml, name: str, value: float, node: Node, method: str) -> None:
    found = methods.by_mergekit(method)
    param = found.mergekit_param(name) if found else None
    if name == "lambda" and value != 1:
        y.err(f"lambda {value} has no tailor equivalent (fold it into the weights)", node)
    elif param is not None and param.kind == "float" and not param.in_range(value):
        y.err(f"{name} must be {param.bound()}, got {value}", node)
    elif name == "scale" and value < 0:
        y.err(f"scale must be >= 0, got {value}", node)


def _check_filters(y: _Yaml, name: str, node: Node) -> None:
    """Only `scale: [{filter: o_proj, value: s}, {filter: down_proj, value: s}, {value: 1}]`
    (what `export` writes for `take(m, scale=s)`) means the same in both tools."""
    if name == "scale":
        entries = _filter_entries(y, node)
        if entries is None:
            return  # reported
        if _is_projection_scale(entries):
            if entries[0][1] < 0:
                y.err(f"scale must be >= 0, got {entries[0][1]}", node)
            return
    y.err(f"parameter {_show(name)} uses per-tensor filters, which tailor cannot express",
          node, hint="tailor's only per-tensor parameter is take(m, scale=s), written for "
          "mergekit as scale: [{filter: o_proj, value: s}, {filter: down_proj, value: s}, "
          "{value: 1.0}]")


def _is_projection_scale(entries: list[tuple[str | None, float]]) -> bool:
    if len(entries) != 3:
        return False
    (f1, s1), (f2, s2), (last, one) = entries
    return {f1, f2} == set(SCALE_FILTERS) and s1 == s2 and last in (None, "*") and one == 1


def _filter_entries(y: _Yaml, node: Node) -> list[tuple[str | None, float]] | None:
    """(filter, value) per entry, each checked: a mapping of `filter` (a string, or absent)
    and `value` (a finite number); None when one is not (reported)."""
    out: list[tuple[str | None, float]] = []
    for entry in node.value if isinstance(node, SequenceNode) else [node]:
        keys = y.mapping(entry, "a filter entry")
        if keys is None:
            return None
        for key, (knode, _) in keys.items():
            if key not in ("filter", "value"):
                y.err(f"unknown filter entry key {_show(key)} (it has: filter, value)", knode)
                return None
        filt = y.value(keys["filter"][1]) if "filter" in keys else None
        if filt is not None and not isinstance(filt, str):
            y.err(f"'filter' must be part of a tensor name (a string), got {_show(filt)}",
                  keys["filter"][1])
            return None
        value = y.value(keys["value"][1]) if "value" in keys else None
        if not _finite(value):
            y.err(f"a filter entry's 'value' must be a finite number, got {_show(value)}",
                  keys["value"][1] if "value" in keys else entry)
            return None
        out.append((filt, float(value)))  # type: ignore[arg-type]
    return out


def _setting(y: _Yaml, node: Node, tensor: str) -> object:
    """mergekit's evaluate_setting for one tensor name (gradients and all filter lists but
    the checked `scale` one were refused before)."""
    if not _is_filter_list(node):
        return y.value(node)
    for entry in (node.value if isinstance(node, SequenceNode) else [node]):
        cond = y.value(entry)
        if not isinstance(cond, dict):
            continue
        filt = cond.get("filter")
        if filt is None or filt == "*" or (isinstance(filt, str) and filt in tensor):
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
