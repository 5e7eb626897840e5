"""YAML text to PyYAML nodes with positions, read within limits, and the reader of those nodes.

Consumes: untrusted config text.
Produces: the config's node tree (`_compose`), positioned `Diagnostic`s for text that is
not YAML or passes a limit (size, nesting, nodes, nodes reached through aliases, aliases
inside their own anchor), and `_Yaml`, which reads nodes as mappings (merge keys
included), lists and values while collecting diagnostics that point at them.
"""

from __future__ import annotations

from typing import NoReturn

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.resolver import Resolver

from recipe_compiler.interop.mergekit.common import _show
from recipe_compiler.language.source import Diagnostic, RecipeError, Source, Span, error

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
