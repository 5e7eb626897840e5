"""Architecture definitions as data: one small JSON file per model family.

Consumes: the JSON files beside this module and a model's config.json.
Produces: `Architecture`, which says where a model keeps its layers, which config key
counts them, which per-layer config lists must be re-indexed when layers move, which
tensors `scale=` multiplies, how tied embeddings are spelled, and what its config.json must
hold, so that transformers can build the model and load these tensors into it:
- `config`: a JSON Schema for the keys it needs (`_common.json` describes the keys every
  architecture shares, with their types and ranges; schema.py applies both);
- `defaults`: what transformers computes for an absent or null key, and `if_absent`: its
  config class's default for an absent key where null means something else;
- `rules`: relations between keys (`multiple`, `even`, `index`, `equal`);
- `tensor_groups`: named groups of layer tensors for `by_group(...)` and mergekit's `filter:`
  (a group's name, as a substring, picks exactly its tensors: tests/test_arch_groups.py);
  `parts`: which tensors outside the layers `embed =`, `norm =` and `head =` make;
- `shapes`, `layer_shapes`: each tensor's shape as expressions over config keys, e.g.
  "num_key_value_heads * head_dim"; a tensor that is present must have that shape.

Adding an architecture is adding a file; nothing else changes.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache, lru_cache
from pathlib import Path

from recipe_compiler.models.arch.schema import Docs, first_violation, show

HERE = Path(__file__).parent
COMMON = "_common.json"
GENERATION = "_generation.json"
Shapes = tuple[tuple[str, tuple[str, ...]], ...]  # (tensor name, one expression per dim)


@dataclass(frozen=True, slots=True)
class Architecture:
    name: str  # the file stem, e.g. "llama"
    architectures: tuple[str, ...]  # config.json "architectures" values it covers
    layer_prefix: str  # e.g. "model.layers.{i}."
    num_layers_key: str  # e.g. "num_hidden_layers"
    per_layer_config: tuple[str, ...]  # config lists with one entry per layer
    scale_tensors: tuple[str, ...]  # layer-relative names (glob patterns) that `scale` multiplies
    tensor_groups: tuple[tuple[str, tuple[str, ...]], ...]  # name, layer-relative globs
    parts: tuple[tuple[str, tuple[str, ...]], ...]  # embed/norm/head, full-name globs
    tie_config_key: str
    tie_default: bool
    head_tensor: str
    embedding_tensor: str
    model_type: str  # the config.json "model_type" transformers needs to pick this class
    config_schema: dict = field(compare=False, repr=False)
    defaults: tuple[tuple[str, str], ...] = field(compare=False, repr=False)  # key, expression
    if_absent: tuple[tuple[str, str], ...] = field(compare=False, repr=False)
    rules: tuple[tuple[str, tuple[str, ...]], ...] = field(compare=False, repr=False)
    shapes: Shapes = field(compare=False, repr=False)  # non-layer tensors
    layer_shapes: Shapes = field(compare=False, repr=False)  # layer-relative names

    @property
    def layer_pattern(self) -> re.Pattern[str]:
        # no leading zeros: "layers.01." must not alias "layers.1."
        head, tail = self.layer_prefix.split("{i}")
        return re.compile(re.escape(head) + r"(0|[1-9]\d{0,8})" + re.escape(tail) + r"(.+)")

    def layer_tensor(self, index: int, suffix: str) -> str:
        return self.layer_prefix.format(i=index) + suffix

    def split(self, tensor: str) -> tuple[int, str] | None:
        """`model.layers.3.mlp.up_proj.weight` -> (3, "mlp.up_proj.weight")."""
        m = self.layer_pattern.fullmatch(tensor)
        return (int(m.group(1)), m.group(2)) if m else None

    def is_scaled(self, suffix: str) -> bool:
        return any(fnmatchcase(suffix, pat) for pat in self.scale_tensors)

    def group_of(self, suffix: str) -> str | None:
        """The tensor group of a layer-relative name (the first that matches), or None."""
        return next((g for g, pats in self.tensor_groups
                     if any(fnmatchcase(suffix, p) for p in pats)), None)

    def filter_groups(self) -> tuple[str, ...]:
        """The groups whose name, as mergekit's `filter:` (a substring of full tensor
        names), picks exactly the group's tensors and none outside the layers: "attention"
        does not in GPT-NeoX, where post_attention_layernorm holds it too."""
        names = [self.layer_tensor(0, n) for n, _ in self.layer_shapes]
        outside = [n for n, _ in self.shapes]
        return tuple(g for g, _ in self.tensor_groups
                     if not any(g in n for n in outside)
                     and all((g in n) == (self.group_of(self.split(n)[1]) == g)  # type: ignore
                             for n in names))

    def part_of(self, name: str) -> str | None:
        """'embed', 'norm' or 'head' for a tensor outside the layers, or None."""
        return next((part for part, pats in self.parts
                     if any(fnmatchcase(name, p) for p in pats)), None)

    def scale_filters(self) -> tuple[str, ...]:
        """The mergekit filters that pick exactly the tensors `scale` multiplies (each
        scaled tensor's module name, e.g. o_proj and down_proj), or () when no set of
        module names does."""
        filters = tuple(dict.fromkeys(p.split(".")[-2] for p in self.scale_tensors
                                      if p.count(".") >= 1))
        names = [n for n, _ in self.layer_shapes]
        picked = [n for n in names if any(f in n for f in filters)]
        return filters if picked and all(self.is_scaled(n) for n in picked) else ()

    def uniform_layers(self, config: dict) -> bool:
        """Whether every layer has the same per-layer configuration (e.g. no sliding-window
        attention on some layers only), so that what a model's forward prepares for one
        layer (masks, rotary inputs) serves any of them."""
        for key in self.per_layer_config:
            values = config.get(key)
            if isinstance(values, list) and len({repr(v) for v in values}) > 1:
                return False
        return True

    def ties_embeddings(self, config: dict) -> bool:
        return bool(config.get(self.tie_config_key, self.tie_default))

    def config_problem(self, config: dict) -> str | None:
        """What is wrong with a config.json (already past `common_problem`), or None."""
        if problem := _problem(config, f"{self.name}.json"):
            return problem
        layers = config[self.num_layers_key]
        for key in self.per_layer_config:
            values = config.get(key)
            if values is not None and len(values) != layers:
                entries = "1 entry" if len(values) == 1 else f"{len(values)} entries"
                return (f"{key} has {entries}; expected one per layer "
                        f"({self.num_layers_key} is {layers})")
        values = self.dimensions(config)
        for kind, keys in self.rules:
            if problem := _RULES[kind](config, values, *keys):
                return problem
        return None

    def dimensions(self, config: dict) -> dict[str, int]:
        """The whole-number config values, with transformers' defaults for absent or null keys."""
        values = {k: v for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)}
        for key, expr in self.if_absent:
            if key not in config and (value := evaluate(expr, values)) is not None:
                values[key] = value
        for key, expr in self.defaults:
            if key not in values and (value := evaluate(expr, values)) is not None:
                values[key] = value
        return values


def _multiple(config: dict, values: Mapping[str, int], key: str, of: str) -> str | None:
    a, b = values.get(key), values.get(of)
    if a is None or b is None or a % b == 0:
        return None
    return f"{_named(config, key)} is {a}; expected a multiple of {_named(config, of)} ({b})"


def _even(config: dict, values: Mapping[str, int], key: str) -> str | None:
    if values.get(key, 0) % 2 == 0:
        return None
    return (f"{_named(config, key)} is {values[key]}; expected an even number (rotary position "
            "embeddings turn pairs of dimensions)")


def _index(config: dict, values: Mapping[str, int], key: str, size: str) -> str | None:
    a, n = values.get(key), values.get(size)
    if a is None or n is None or -n <= a < n:
        return None
    return f"{_named(config, key)} is {a}; expected null or a token id below {size} ({n})"


def _equal(config: dict, values: Mapping[str, int], key: str, same_as: str) -> str | None:
    if key not in config or same_as not in config or config[key] == config[same_as]:
        return None
    return (f"{key} is {show(config[key])}; expected {show(config[same_as])}, the same as "
            f"{same_as} (transformers reads both as one setting)")


def _named(config: dict, key: str) -> str:
    """`head_dim`, or `head_dim (by default)` when config.json leaves it to transformers."""
    return key if config.get(key) is not None else f"{key} (by default)"


_RULES = {"multiple": _multiple, "even": _even, "index": _index, "equal": _equal}


# --- shape expressions: config keys, whole numbers, +, -, *, //, parentheses -------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv}


@cache
def _parse(expr: str) -> ast.expr:
    return ast.parse(expr, mode="eval").body


def evaluate(expr: str, values: Mapping[str, int]) -> int | None:
    """`(num_attention_heads + 2 * num_key_value_heads) * head_dim` -> 64; None if a key is
    unset."""
    return _eval(_parse(expr), values)


def _eval(node: ast.expr, values: Mapping[str, int]) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        return values.get(node.id)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a, b = _eval(node.left, values), _eval(node.right, values)
        if a is None or b is None or (isinstance(node.op, ast.FloorDiv) and b == 0):
            return None
        return _OPS[type(node.op)](a, b)
    raise ValueError(f"unsupported shape expression {ast.unparse(node)!r}")


def names_in(expr: str) -> tuple[str, ...]:
    names = sorted((n for n in ast.walk(_parse(expr)) if isinstance(n, ast.Name)),
                   key=lambda n: n.col_offset)
    return tuple(dict.fromkeys(n.id for n in names))


def expected_shape(dims: tuple[str, ...], values: Mapping[str, int]) -> tuple[int, ...] | None:
    shape = tuple(evaluate(d, values) for d in dims)
    return None if None in shape else shape  # type: ignore[return-value]


# --- loading ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def schema_documents() -> Docs:
    """Every schema document by name, for `$ref`s like `_common.json#/$defs/width`."""
    docs = {name: json.loads((HERE / name).read_text()) for name in (COMMON, GENERATION)}
    for arch in all_architectures():
        docs[f"{arch.name}.json"] = arch.config_schema
    return docs


def common_problem(config: dict) -> str | None:
    """What is wrong with the keys every architecture shares, or None."""
    return _problem(config, COMMON)


def generation_problem(generation_config: dict) -> str | None:
    """What is wrong with a generation_config.json that transformers would refuse, or None."""
    return _problem(generation_config, GENERATION)


def _problem(value: object, doc: str) -> str | None:
    docs = schema_documents()
    v = first_violation(value, docs[doc], docs, doc)
    return None if v is None else str(v)


def _expressions(table: dict) -> tuple[tuple[str, str], ...]:
    for expr in table.values():
        evaluate(expr, {})  # refuses an unsupported expression when the file is loaded
    return tuple(table.items())


def _shapes(table: dict) -> Shapes:
    for dims in table.values():
        _expressions(dict(enumerate(dims)))
    return tuple((name, tuple(dims)) for name, dims in table.items())


ARCHITECTURE_SCHEMA = "_architecture.json"  # what an architecture file itself must hold


def _load(path: Path) -> Architecture:
    """One architecture file, checked against `_architecture.json` first: a malformed file
    is an error naming the file and the key, not a KeyError somewhere later."""
    data = json.loads(path.read_text())
    schema = json.loads((HERE / ARCHITECTURE_SCHEMA).read_text())
    violation = first_violation(data, schema, {ARCHITECTURE_SCHEMA: schema}, ARCHITECTURE_SCHEMA)
    if violation is not None:
        raise ValueError(f"{path.name}: not a valid architecture file: {violation}")
    tied = data["tied_embeddings"]
    if data["num_layers_key"] not in data["config"]["required"]:
        raise ValueError(f"{path.name}: config must require {data['num_layers_key']}")
    return Architecture(
        name=path.stem,
        architectures=tuple(data["architectures"]),
        layer_prefix=data["layer_prefix"],
        num_layers_key=data["num_layers_key"],
        per_layer_config=tuple(data["per_layer_config"]),
        scale_tensors=tuple(data["scale_tensors"]),
        tensor_groups=tuple((k, tuple(v)) for k, v in data["tensor_groups"].items()),
        parts=tuple((k, tuple(data["parts"][k])) for k in ("embed", "norm", "head")),
        tie_config_key=tied["config_key"],
        tie_default=bool(tied["default"]),
        head_tensor=tied["head"],
        embedding_tensor=tied["embedding"],
        model_type=data["model_type"],
        config_schema=data["config"],
        defaults=_expressions(data["defaults"]),
        if_absent=_expressions(data.get("if_absent", {})),
        rules=tuple(_rule(r) for r in data["rules"]),
        shapes=_shapes(data["shapes"]),
        layer_shapes=_shapes(data["layer_shapes"]),
    )


def _rule(rule: dict) -> tuple[str, tuple[str, ...]]:
    ((kind, keys),) = rule.items()
    if kind not in _RULES:
        raise ValueError(f"unknown rule {kind!r} (known: {', '.join(_RULES)})")
    return kind, (keys,) if isinstance(keys, str) else tuple(keys)


@lru_cache(maxsize=1)
def all_architectures() -> tuple[Architecture, ...]:
    # files starting with "_" hold shared definitions, not architectures
    return tuple(_load(p) for p in sorted(HERE.glob("*.json")) if not p.name.startswith("_"))


def supported_names() -> tuple[str, ...]:
    return tuple(a for arch in all_architectures() for a in arch.architectures)


def find_architecture(config: dict) -> Architecture | None:
    names = config.get("architectures") or []
    for arch in all_architectures():
        if any(n in arch.architectures for n in names):
            return arch
    return None
