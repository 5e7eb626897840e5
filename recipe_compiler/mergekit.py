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

A config is untrusted text: it is read within limits (size, nesting, nodes reached through
aliases, layer indices) checked before anything iterates over it, every number is checked
finite and in range before use, and every problem, a limit passed included, is a positioned
diagnostic (found by tests/test_fuzz_mergekit.py).
"""

from __future__ import annotations

import math
import os
import re
import reprlib
import unicodedata
from dataclasses import dataclass, replace
from typing import NoReturn

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from . import methods
from .check import Models, model_path
from .methods import Method
from .parser import MAX_SLOTS
from .recipe import (
    DTYPES,
    MERGE_FIELDS,
    Choose,
    ClosedOp,
    Drop,
    Merge,
    ModelDecl,
    Op,
    Open,
    Recipe,
    SlotDecl,
    Take,
)
from .source import Diagnostic, RecipeError, Source, Span, error

# The merge methods, their mergekit parameters and both tools' defaults: methods/<name>.py.
# passthrough is mergekit's take.
METHODS = ("passthrough",) + tuple(m.mergekit for m in methods.REGISTRY.values() if m.mergekit)
PARAMETERS = {"passthrough": ("scale",), **{m.mergekit: m.mergekit_params()
                                            for m in methods.REGISTRY.values() if m.mergekit}}
BOOL_PARAMETERS = ("normalize", "int8_mask", "rescale")
# The only per-tensor `scale` tailor can say: the Llama-family output projections.
SCALE_FILTERS = ("o_proj", "down_proj")
LAYER_TENSOR = "model.layers.0.mlp.up_proj.weight"  # stands for the unfiltered layer tensors
PROJ_TENSOR = "model.layers.0.self_attn.o_proj.weight"
END_TENSORS = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")
TOP_KEYS = ("name", "slices", "merge_method", "base_model", "dtype", "out_dtype", "parameters")
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

# Limits on untrusted input. Real configs are a few kB with at most a few thousand YAML
# nodes (an 80-layer merge written slice by slice: ~5,000), nest ~9 deep and use aliases, if
# at all, for a shared parameter block; an alias bomb reaches billions of nodes from 1 kB.
# Reading costs ~20 us per node, so the node limit bounds the time to about a second.
MAX_CHARS = 1_000_000
MAX_NODES = 50_000
MAX_DEPTH = 50
MAX_ALIASED_NODES = 10_000  # nodes reached through aliases, each time it is reached
MAX_ERRORS = 100  # rendering quotes a line per error; a hostile file can make 10^5 errors
MERGE_TAG = "tag:yaml.org,2002:merge"
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlong = 60, 60, 40


def _show(value: object) -> str:
    """A user's value inside a message: clipped, and escaped so that any terminal can
    print it (a lone surrogate or a newline stays a visible escape)."""
    return _SHOW.repr(value)


# --- YAML nodes with positions, read within limits ----------------------------------------


class _Refused(Exception):
    """A limit passed while composing, with the YAML mark to point at."""

    def __init__(self, message: str, mark: yaml.Mark):
        super().__init__(message)
        self.message, self.mark = message, mark


try:  # libyaml's event parser is ~5x faster than PyYAML's pure-Python one
    from yaml.cyaml import CParser

    _EVENTS: tuple[type, ...] = (CParser,)
    _LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    _EVENTS = (Parser, Scanner, Reader)
    _LIBYAML = False


class _Loader(Composer, *_EVENTS, Resolver):  # type: ignore[misc]
    """PyYAML's composer with limits: nodes, nesting depth, nodes reached through aliases
    (counted with repeats, so an alias bomb stops early), and no alias inside its own
    anchor."""

    def __init__(self, text: str):
        if _LIBYAML:
            CParser.__init__(self, text)
        else:  # pragma: no cover
            Reader.__init__(self, text)
            Scanner.__init__(self)
            Parser.__init__(self)
        Composer.__init__(self)
        Resolver.__init__(self)
        self.depth = 0
        self.nodes = 0
        self.aliased = 0
        self.sizes: dict[int, int] = {}  # id(finished node) -> its node count, aliases expanded

    def compose_node(self, parent: Node | None, index: object) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            return self._alias(event, parent, index)
        if self.depth >= MAX_DEPTH:
            raise _Refused(f"the config nests deeper than {MAX_DEPTH} levels", event.start_mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _Refused(f"the config has more than {MAX_NODES:,} YAML nodes; tailor reads "
                           "configs of up to that many", event.start_mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.sizes[id(node)] = 1 + sum(self.sizes[id(c)] for c in _children(node))
        return node

    def _alias(self, event: AliasEvent, parent: Node | None, index: object) -> Node:
        target = self.anchors.get(event.anchor)
        if target is not None and id(target) not in self.sizes:  # still being composed
            raise _Refused(f"alias *{event.anchor} is used inside its own anchor "
                           "(a recursive structure)", event.start_mark)
        node = super().compose_node(parent, index)  # an undefined alias: ComposerError
        self.aliased += self.sizes[id(node)]
        if self.aliased > MAX_ALIASED_NODES:
            raise _Refused(f"aliases expand to more than {MAX_ALIASED_NODES:,} YAML nodes "
                           f"(at *{event.anchor})", event.start_mark)
        return node


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _compose(text: str, source: Source) -> Node | None:
    """The config's node tree; a RecipeError, positioned, for text that is not YAML or
    passes a limit."""
    if len(text) > MAX_CHARS:
        _fail(source, f"the config is {len(text):,} characters long; tailor reads configs of "
              f"up to {MAX_CHARS:,}", 0)
    try:
        text.encode()
    except UnicodeEncodeError as exc:  # only through the API: files are decoded as UTF-8
        _fail(source, "the text holds a lone surrogate, which is not a character",
              *_at(text, exc.start))
    try:
        return _single_node(text)
    except _Refused as exc:
        _fail(source, exc.message, exc.mark.line + 1, exc.mark.column + 1)
    except yaml.reader.ReaderError as exc:
        # libyaml counts bytes of the UTF-8 text, PyYAML characters
        pos = len(text.encode()[: exc.position].decode(errors="ignore")) if _LIBYAML \
            else exc.position
        _fail(source, f"not valid YAML: {exc.reason}", *_at(text, pos))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        _fail(source, f"not valid YAML: {problem}", *((mark.line + 1, mark.column + 1)
                                                      if mark else (0,)))


def _single_node(text: str) -> Node | None:
    loader = _Loader(text)  # PyYAML's own reader checks the characters here
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _at(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


def _fail(source: Source, message: str, line: int, col: int = 1) -> NoReturn:
    span = Span(source.path, line, col, line, col + 1) if line else Span.whole_file(source.path)
    raise RecipeError([error(message, span)], source)


def _unwritable(text: str) -> str | None:
    """The first character a recipe string cannot hold (encoded as UTF-8, on one line)."""
    return next((c for c in text if unicodedata.category(c) in ("Cc", "Cs")), None)


def _one_line(text: str) -> str:
    """`text` for a recipe comment: control characters and surrogates as escapes."""
    return "".join(c if unicodedata.category(c) not in ("Cc", "Cs") else ascii(c)[1:-1]
                   for c in text)


class _Unreadable:
    """What `_Yaml.value` gives for a node it could not construct (already reported)."""

    def __repr__(self) -> str:
        return "<unreadable>"


_UNREADABLE = _Unreadable()


class _Yaml:
    """Reads PyYAML nodes, collecting diagnostics that point at them."""

    def __init__(self, path: str):
        self.path = path
        self.diags: list[Diagnostic] = []
        self._constructor = SafeConstructor()
        self._unreadable: set[int] = set()  # ids of nodes already reported as unreadable

    def span(self, node: Node) -> Span:
        s, e = node.start_mark, node.end_mark
        if e.line > s.line:  # a block value: point at its first line only
            return Span(self.path, s.line + 1, s.column + 1, s.line + 1, s.column + 2)
        return Span(self.path, s.line + 1, s.column + 1, e.line + 1, max(e.column, s.column) + 1)

    def err(self, message: str, node: Node | None, hint: str | None = None) -> None:
        if node is not None and id(node) in self._unreadable:
            return  # nothing more is worth saying about a value that could not be read
        span = self.span(node) if node is not None else Span.whole_file(self.path)
        self.diags.append(error(message, span, hint))

    def value(self, node: Node) -> object:
        """The node as Python data; `_UNREADABLE` (reported) for what PyYAML cannot build:
        unknown tags, merge keys out of place, ints past 4300 digits, bad timestamps..."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self._constructor = SafeConstructor()  # its caches may be half-filled
            problem = getattr(exc, "problem", None) or str(exc)
            self.err(f"cannot read this value: {_show(problem)[1:-1]}", node)
            self._unreadable.add(id(node))
            return _UNREADABLE

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]] | None:
        if not isinstance(node, MappingNode):
            self.err(f"{what} must be a mapping of keys to values", node)
            return None
        own: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == MERGE_TAG:
                for name, entry in self._merged(value, what).items():
                    merged.setdefault(name, entry)
                continue
            name = self.value(key)
            if not isinstance(name, str):
                self.err(f"{what}: keys must be names, got {_show(name)}", key)
            elif name in own:
                self.err(f"{_show(name)} is given twice", key)
            else:
                own[name] = (key, value)
        return {**merged, **own}

    def _merged(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        """YAML merge keys (`<<: *defaults`): each key from the first mapping listed that
        sets it; the mapping's own keys win (the alias limit bounds the chains)."""
        out: dict[str, tuple[Node, Node]] = {}
        for part in node.value if isinstance(node, SequenceNode) else [node]:
            if not isinstance(part, MappingNode):
                self.err("a merge key '<<' takes a mapping or a list of mappings", part)
                continue
            for name, entry in (self.mapping(part, what) or {}).items():
                out.setdefault(name, entry)
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
    name: str | None


def import_config(text: str, path: str = "<config>") -> Recipe:
    """A mergekit config as a recipe that builds the same tensors; RecipeError otherwise,
    never another exception, and in bounded time whatever the text (see the limits above)."""
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


def _read_config(y: _Yaml, root: Node) -> _Config | None:
    top = y.mapping(root, "the config")
    if top is None:
        return None
    _check_top_keys(y, top)
    method = _method(y, top)
    slices: list[_Slice | None] = []
    if "slices" in top:
        node = top["slices"][1]
        slices = [_read_slice(y, n) for n in y.sequence(node, "'slices'")]
        if isinstance(node, SequenceNode) and not slices:
            y.err("'slices' lists no slice", node)
    elif "models" not in top:
        y.err("the config has no 'slices:'", root)
    params = y.mapping(top["parameters"][1], "'parameters'") if "parameters" in top else None
    base = (_model_ref(y, top["base_model"][1]), top["base_model"][1]) \
        if "base_model" in top else None
    dtype = _dtype(y, top)
    name = _name(y, top)
    if method is None or not slices or any(s is None for s in slices) or (base and not base[0]):
        return None
    return _Config(method, tuple(slices), params, base, dtype, name)  # type: ignore[arg-type]


def _check_top_keys(y: _Yaml, top: dict[str, tuple[Node, Node]]) -> None:
    for key, (knode, _) in top.items():
        if key in REFUSED_KEYS:
            y.err(REFUSED_KEYS[key], knode)
        elif key == "models":
            y.err("whole-model merges ('models:') are not supported: mergekit also merges the "
                  "embeddings, final norm and lm_head, which tailor copies from one base model",
                  knode, hint="list the layers under 'slices:', beginning and ending with a "
                  "slice of the base model alone")
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
              f"{MAX_SLOTS} layers (0..{MAX_SLOTS - 1})", node)
        return None
    return bounds[0], bounds[1]


# --- import: parameters ------------------------------------------------------------------


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
        if decl is None or self.models is None:
            return decl.path if decl else name
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


def _form(method: str) -> str:
    """How mergekit's slices say the method: 'take' (passthrough), or the registry's form."""
    found = methods.by_mergekit(method)
    return found.mergekit_form if found else "take"


def _needs_base(method: str) -> bool:
    found = methods.by_mergekit(method)
    return found is not None and found.needs_base


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
