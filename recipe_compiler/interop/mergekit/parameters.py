"""Import, second step: mergekit's parameters, checked and resolved.

Consumes: a `_Config` and its `_Yaml`.
Produces: diagnostics for every parameter tailor cannot say (`_check_parameters`), and a
parameter's value as a recipe says it, resolved source -> slice -> top level (`_param`): a
number or bool, a `Gradient` (a list of numbers) or a `ByGroup` (a filter list over tensor
groups), or for a filter key (`scale`'s output projections) the value mergekit gives it.
"""

from __future__ import annotations

import math

from yaml.nodes import MappingNode, Node, SequenceNode

from recipe_compiler import methods
from recipe_compiler.interop.mergekit.common import (
    BOOL_PARAMETERS,
    GROUPS,
    PARAMETERS,
    SCALE_FILTER_SETS,
    _show,
)
from recipe_compiler.interop.mergekit.config import _Config, _Slice
from recipe_compiler.interop.mergekit.yaml_nodes import _Yaml
from recipe_compiler.language.recipe import ByGroup, Gradient


def _check_parameters(y: _Yaml, config: _Config) -> None:
    """Every parameter is one tailor can say: known, finite numbers of the right type in
    range, a gradient only of a number, and filters only over tensor groups (or the
    output-projection `scale`)."""
    scopes = [config.params] + [s.params for s in config.slices] + \
        [src.params for s in config.slices for src in s.sources]
    known = PARAMETERS[config.method]
    for scope in scopes:
        for name, (knode, vnode) in (scope or {}).items():
            if name not in known:
                y.err(f"parameter {_show(name)} cannot be expressed in tailor for merge_method "
                      f"{config.method} (it has: {', '.join(known)})", knode)
            elif _is_filter_list(vnode):
                _check_filters(y, name, vnode, config.method)
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
        _check_gradient(y, name, node, method)
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


def _check_gradient(y: _Yaml, name: str, node: SequenceNode, method: str) -> None:
    """A list of numbers: mergekit interpolates it over the slice's layers."""
    if name in BOOL_PARAMETERS or name == "scale":
        y.err(f"parameter '{name}' is a gradient (a list of values across layers); tailor "
              "takes one value for it", node, hint="split the slice so that each part has "
              "one value")
        return
    if not node.value:
        y.err(f"parameter '{name}' is an empty list", node)
    for item in node.value:
        value = y.value(item)
        if not _finite(value):
            y.err(f"a gradient of '{name}' holds numbers, got {_show(value)}", item)
            return
        _check_range(y, name, float(value), item, method)  # type: ignore[arg-type]


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


def _check_filters(y: _Yaml, name: str, node: Node, method: str = "passthrough") -> None:
    """Filters over tensor groups (`by_group`), or for `scale` only the output projections
    (`scale: [{filter: o_proj, value: s}, {filter: down_proj, value: s}, {value: 1}]`, what
    `export` writes for `take(m, scale=s)`)."""
    if name in BOOL_PARAMETERS:
        y.err(f"parameter '{name}' uses per-tensor filters; tailor takes one value for it",
              node)
        return
    entries = _filter_entries(y, node, gradients=name != "scale")
    if entries is None:
        return  # reported
    if name == "scale":
        if _is_projection_scale(entries):
            if entries[0][1] < 0:  # type: ignore[operator]
                y.err(f"scale must be >= 0, got {entries[0][1]}", node)
            return
        y.err("parameter 'scale' uses per-tensor filters other than the output projections, "
              "which tailor cannot express", node, hint="tailor's only per-tensor scale is "
              "take(m, scale=s), written for mergekit as scale: [{filter: o_proj, value: s}, "
              "{filter: down_proj, value: s}, {value: 1.0}]")
        return
    for filt, value in entries:
        if filt not in (None, "*") and filt not in GROUPS:
            y.err(f"filter {_show(filt)} is not a tensor group tailor knows (it has: "
                  f"{', '.join(GROUPS)})", node, hint="the groups are named per "
                  "architecture in recipe_compiler/models/arch/*.json (tensor_groups)")
            return
        for v in value if isinstance(value, list) else [value]:
            _check_range(y, name, v, node, method)  # type: ignore[arg-type]


def _is_projection_scale(entries: list[tuple[str | None, object]]) -> bool:
    *scaled, (last, one) = entries
    values = {v for _, v in scaled}
    filters = [f for f, _ in scaled]
    return (any(sorted(filters) == sorted(names) for names in SCALE_FILTER_SETS)
            and len(values) == 1
            and not isinstance(scaled[0][1], list) and last in (None, "*") and one == 1)


def _filter_entries(y: _Yaml, node: Node, gradients: bool = True
                    ) -> list[tuple[str | None, object]] | None:
    """(filter, value) per entry, each checked: a mapping of `filter` (a string, or absent)
    and `value` (a finite number); None when one is not (reported)."""
    out: list[tuple[str | None, object]] = []
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
        numbers = value if isinstance(value, list) and value and gradients else [value]
        if not all(_finite(v) for v in numbers):
            what = "a list of finite numbers" if numbers is value else "a finite number"
            y.err(f"a filter entry's 'value' must be {what}, got {_show(value)}",
                  keys["value"][1] if "value" in keys else entry)
            return None
        out.append((filt, [float(v) for v in numbers] if isinstance(value, list)
                    else float(value)))  # type: ignore[arg-type]
    return out


SCALED = "<the tensors scale multiplies>"  # a filter key: any architecture's scale filter


def _recipe_value(y: _Yaml, node: Node) -> object:
    """A checked setting as a recipe value: a scalar, a `Gradient` for a list of numbers
    (a one-element list is its number), a `ByGroup` for a filter list."""
    if _is_filter_list(node):
        groups: dict[str, object] = {}
        for entry in (node.value if isinstance(node, SequenceNode) else [node]):
            cond = y.value(entry)
            filt, value = cond.get("filter"), _plain(cond.get("value"))
            if filt is None or filt == "*":
                return ByGroup(tuple(groups.items()), value) if groups else value
            groups.setdefault(filt, value)  # the first entry that matches wins
        return ByGroup(tuple(groups.items()), None)
    return _plain(y.value(node))


def _plain(value: object) -> object:
    if isinstance(value, list):
        points = tuple(float(v) for v in value)
        return points[0] if len(points) == 1 else Gradient(points)
    return value


def _chain(values: list[object]) -> object:
    """Scopes' values, the nearest first, as one: a filter list that matches no entry
    leaves the tensor to the next scope, as mergekit's ConfigReader does."""
    groups: dict[str, object] = {}
    for value in values:
        if not isinstance(value, ByGroup):
            return ByGroup(tuple(groups.items()), value) if groups else value
        for g, v in value.groups:
            groups.setdefault(g, v)
        if value.other is not None:
            return ByGroup(tuple(groups.items()), value.other)
    return ByGroup(tuple(groups.items()), None) if groups else None


def _param(y: _Yaml, config: _Config, sl: _Slice, name: str, model: str | None,
           filter_key: str | None = None) -> tuple[object, Node | None]:
    """A parameter's recipe value and where it was written (source, then slice, then top
    level). With `filter_key` (a `scale` filter), the plain value for the tensors that
    filter picks ("" for the others), as mergekit's evaluate_setting gives it."""
    scopes = [src.params for src in sl.sources if model is not None and src.model == model]
    found = [(scope[name][1]) for scope in scopes + [sl.params, config.params]
             if scope and name in scope]
    if filter_key is not None:
        for node in found:
            value = _filter_value(y, node, filter_key)
            if value is not None:
                return value, node
        return None, None
    value = _chain([_recipe_value(y, n) for n in found])
    return value, (found[0] if found else None)


def _filter_value(y: _Yaml, node: Node, key: str) -> object:
    if not _is_filter_list(node):
        return y.value(node)
    for entry in (node.value if isinstance(node, SequenceNode) else [node]):
        cond = y.value(entry)
        filt = cond.get("filter") if isinstance(cond, dict) else None
        scaled = key == SCALED and any(filt in names for names in SCALE_FILTER_SETS)
        if filt is None or filt == "*" or filt == key or scaled:
            return cond.get("value")
    return None
