"""The small part of JSON Schema (draft 2020-12) that the config descriptions in arch/ use.

Consumes: a parsed JSON value (a model's config.json) and a schema from `_common.json` or an
architecture file, whose `$ref`s may point into either.
Produces: the first `Violation` (where, the value found, what was expected), or None.

Why not the `jsonschema` package: importing it takes longer (~0.15 s) than parsing and
checking a recipe, and the arch files need only the keywords below. The tests validate every
schema against the 2020-12 metaschema and check that `jsonschema` agrees with this module.

Two departures from the standard, both matching how transformers reads a config: "integer"
is a number written without a fraction or exponent (12.0 and true are not integers), and
"number" is finite (Python's json reads NaN, Infinity and 1e999, which are not numbers).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MISSING = object()  # the value of a required key that is absent
Docs = dict[str, dict]  # document name (e.g. "_common.json") -> schema document
Where = tuple[str | int, ...]  # ("rope_parameters", "rope_theta"), ("layer_types", 3)

TYPE_NAMES = {"integer": "a whole number", "number": "a number", "string": "a string",
              "boolean": "true or false", "null": "null", "array": "a list",
              "object": "an object"}


@dataclass(frozen=True, slots=True)
class Violation:
    path: Where
    found: Any  # the offending value, or MISSING
    expected: str  # "a whole number from 1 to 10000"
    wrong_type: bool  # the value is of the wrong kind, not just out of range

    @property
    def where(self) -> str:
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text or "the top level"

    def __str__(self) -> str:
        if self.found is MISSING:
            return f"{self.where} is missing; expected {self.expected}"
        kind = f" ({kind_of(self.found)})" if self.wrong_type and self.found is not None else ""
        return f"{self.where} is {show(self.found)}{kind}; expected {self.expected}"


def show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number" if math.isfinite(value) else "not a finite number"
    return {int: "a whole number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict,
                              "null": type(None)}[name])


def first_violation(value: Any, schema: dict | bool, docs: Docs, doc: str,
                    path: Where = ()) -> Violation | None:
    """The first place where `value` breaks `schema` (a schema inside document `doc`)."""
    if schema is True:
        return None
    if schema is False:
        return Violation(path, value, "no such key", False)
    if "$ref" in schema:
        target, target_doc = resolve(schema["$ref"], docs, doc)
        if v := first_violation(value, target, docs, target_doc, path):
            return v
    for check, keywords in _CHECKS:
        if any(k in schema for k in keywords) and (v := check(value, schema, docs, doc, path)):
            return v
    return None


def resolve(ref: str, docs: Docs, doc: str) -> tuple[dict, str]:
    """`_common.json#/$defs/width` or `#/$defs/width` -> (that schema, its document)."""
    name, _, pointer = ref.partition("#")
    name = name or doc
    node: Any = docs[name]
    for part in filter(None, pointer.split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, name


def expected(schema: dict, fallback: str) -> str:
    return schema.get("description", fallback)


def _described(schema: dict, docs: Docs, doc: str) -> str:
    """The description of a schema or of what it refers to: what a missing key should be."""
    while "description" not in schema and "$ref" in schema:
        schema, doc = resolve(schema["$ref"], docs, doc)
    return expected(schema, "a value")


def _type(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(is_type(value, n) for n in names):
        return None
    return Violation(path, value, expected(schema, " or ".join(TYPE_NAMES[n] for n in names)),
                     True)


def _enum(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    options = schema["enum"] if "enum" in schema else [schema["const"]]
    if any(_same(value, o) for o in options):
        return None
    text = show(options[0]) if len(options) == 1 else "one of " + ", ".join(map(show, options))
    return Violation(path, value, expected(schema, text), False)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _not(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if first_violation(value, schema["not"], docs, doc, path) is None:
        return Violation(path, value, expected(schema, "a different value"), True)
    return None


_BOUNDS = {"minimum": (lambda v, m: v >= m, "at least {}"),
           "maximum": (lambda v, m: v <= m, "at most {}"),
           "exclusiveMinimum": (lambda v, m: v > m, "more than {}"),
           "exclusiveMaximum": (lambda v, m: v < m, "less than {}")}


def _bounds(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if not is_type(value, "number"):
        return None
    for keyword, (ok, text) in _BOUNDS.items():
        if keyword in schema and not ok(value, schema[keyword]):
            return Violation(path, value, expected(schema, text.format(schema[keyword])), False)
    return None


def _pattern(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if isinstance(value, str) and not re.search(schema["pattern"], value):
        return Violation(path, value, expected(schema, f"text matching {schema['pattern']}"),
                         False)
    return None


def _array(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if not isinstance(value, list):
        return None
    low, high = schema.get("minItems", 0), schema.get("maxItems", math.inf)
    if not low <= len(value) <= high:
        size = f"{low} to {high}" if high != math.inf else f"at least {low}"
        return Violation(path, value, expected(schema, f"a list of {size} items"), False)
    if "items" in schema:
        for i, item in enumerate(value):
            if v := first_violation(item, schema["items"], docs, doc, path + (i,)):
                return v
    return None


def _object(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if not isinstance(value, dict):
        return None
    properties = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            return Violation(path + (key,), MISSING,
                             _described(properties.get(key, schema), docs, doc), False)
    for key, sub in properties.items():
        if key in value and (v := first_violation(value[key], sub, docs, doc, path + (key,))):
            return v
    names, extra = schema.get("propertyNames"), schema.get("additionalProperties", True)
    for key in value:
        if names is not None and first_violation(key, names, docs, doc) is not None:
            return Violation(path, value, expected(schema, expected(names, "other keys")),
                             False)
        if key not in properties and (v := first_violation(value[key], extra, docs, doc,
                                                           path + (key,))):
            return v
    return None


def _all_of(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    for sub in schema["allOf"]:
        if v := first_violation(value, sub, docs, doc, path):
            return v
    return None


def _if(value: Any, schema: dict, docs: Docs, doc: str, path: Where) -> Violation | None:
    if first_violation(value, schema["if"], docs, doc, path) is None and "then" in schema:
        return first_violation(value, schema["then"], docs, doc, path)
    return None


# each check, and the keywords that make it run, in the order they are tried
_CHECKS = (
    (_type, ("type",)),
    (_enum, ("enum", "const")),
    (_not, ("not",)),
    (_bounds, tuple(_BOUNDS)),
    (_pattern, ("pattern",)),
    (_array, ("items", "minItems", "maxItems")),
    (_object, ("properties", "required", "propertyNames", "additionalProperties")),
    (_all_of, ("allOf",)),
    (_if, ("if",)),
)
SUPPORTED = frozenset(k for _, keys in _CHECKS for k in keys) | {
    "$ref", "$defs", "$id", "$schema", "$comment", "description", "title", "then"}
