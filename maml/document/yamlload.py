"""Safe, bounded YAML loading that remembers where every key and list item is.

Three things the plain `yaml.safe_load` does not give:

1. Bounds. A "billion laughs" alias bomb composes into a small node graph but expands into
   an enormous tree for anything that walks it (the schema validator, JSON output); and
   libyaml's composer recurses in C, so 30 000 nested `[` crash the interpreter. Before any
   node is built, one iterative pass over the *event* stream measures nesting depth and the
   expanded size in characters (an alias counts as the whole subtree it names, so one
   900 kB scalar aliased 2,000 times is refused) and refuses past MAX_DEPTH /
   MAX_EXPANDED_CHARS, and finds aliases that refer to themselves.
2. Positions. The composed node tree gives the line/column of every key and list item,
   recorded by path: ("pipeline", 0, "kind") -> SourceSpan.
3. YAML 1.1 traps in keys: `on:` (our policy key) is the boolean True to PyYAML; a key that
   resolves to a boolean keeps its written text instead.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from maml.document.codes import diagnostic
from maml.document.model import Diagnostic, SourceSpan

#: the text itself: room for 100,000 plain steps (a document is at most 8 MiB anyway)
MAX_FRONT_MATTER_CHARS = 8 * 1024 * 1024
MAX_DEPTH = 64
#: what the YAML expands to, aliases repeated: measured in characters, not nodes
MAX_EXPANDED_CHARS = 16 * 1024 * 1024

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _SpanLoader(_Loader):  # type: ignore[misc, valid-type]
    """SafeLoader whose mapping keys that YAML 1.1 reads as booleans stay strings, and whose
    tag resolution is memoised (the composer asks for every scalar: `id`, `kind`... repeat
    in every step)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._resolved: dict[tuple[str, Any], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = self._resolved[key] = super().resolve(kind, value, implicit)
        return tag

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _BOOL_TAG:
                key_node.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)


@dataclass(slots=True)
class LoadedYaml:
    data: Any = None
    key_spans: dict[tuple[Any, ...], SourceSpan] = field(default_factory=dict)
    #: values YAML 1.1 read differently from how they look: yes/no/on/off (booleans) and
    #: 1:30 (base 60), by path -> the text as written
    literals: dict[tuple[Any, ...], str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    ok: bool = False


def load(text: str, first_line: int) -> LoadedYaml:
    """Load front-matter YAML that starts at document line `first_line` (1-based)."""
    result = LoadedYaml()
    if len(text) > MAX_FRONT_MATTER_CHARS:
        result.diagnostics.append(diagnostic(
            "MAML-P115", f"the front matter is {len(text) // 1024} KiB; maml reads at most "
            f"{MAX_FRONT_MATTER_CHARS // 1024} KiB of YAML: move data into files",
            SourceSpan(first_line)))
        return result
    try:
        problem = _measure(text, first_line) if _may_expand_or_nest(text) else None
        if problem:
            result.diagnostics.append(problem)
            return result
        loader = _SpanLoader(text)
        collecting = gc.isenabled()
        gc.disable()   # the node tree is acyclic; collections while it grows cost ~half the load
        try:
            node = loader.get_single_node()
            if node is not None:
                walk = _Walk(loader, first_line, result)
                result.data = walk.node(node, ())
                if walk.unusual:   # merge keys, explicit tags: PyYAML's own constructor
                    result.data = loader.construct_document(node)
        finally:
            loader.dispose()
            if collecting:
                gc.enable()
    except yaml.MarkedYAMLError as exc:
        result.diagnostics.append(_yaml_error(exc, first_line, text))
        return result
    except RecursionError:
        result.diagnostics.append(_too_deep(SourceSpan(first_line)))
        return result
    except _TooDeep as exc:
        result.diagnostics.append(_too_deep(exc.span))
        result.key_spans = {}
        return result
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # the constructor's own failures (e.g. a date like 2025-13-45) carry no mark
        result.diagnostics.append(diagnostic(
            "MAML-P113", f"the front matter cannot be read as YAML: {exc}; quote the value",
            SourceSpan(first_line)))
        return result
    result.ok = True
    return result


def _yaml_error(exc: yaml.MarkedYAMLError, first_line: int, text: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    span = SourceSpan(first_line + mark.line, mark.column + 1) if mark else SourceSpan(first_line)
    what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if "nesting depth" in what or "depth" in str(exc.problem or ""):
        # PyYAML >= 6.0.2 (and libyaml) refuse deep nesting themselves, sometimes before
        # our event count sees it (the scanner looks ahead): the same finding either way
        return _too_deep(span)
    tab = _tab_indent(text, mark.line if mark else None)
    if tab is not None:
        return diagnostic("MAML-P113", f"line {first_line + tab} is indented with a tab; YAML "
                          "indents with spaces only: replace the tab with spaces",
                          SourceSpan(first_line + tab, 1))
    hint = "quote values that contain ': ' or start with a special character"
    if "cannot start any token" in what:
        hint = "a value starting with %, @, ` or a tab must be quoted (e.g. os: \"%{os}\")"
    return diagnostic("MAML-P113", f"the front matter is not valid YAML: {what}; {hint}", span)


def _may_expand_or_nest(text: str) -> bool:
    """Whether the event pass is needed: the text has an anchor (so aliases may expand it),
    or brackets that may nest deeper than MAX_DEPTH (an upper bound: quoted brackets count
    too). Indentation alone cannot nest that deep within MAX_FRONT_MATTER_CHARS... but it
    can pass MAX_DEPTH, which _walk bounds while it records the spans."""
    if "&" in text:
        return True
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for char in _BRACKET.findall(text):      # re.sub of everything else: 0.4 s a 400 kB text
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif depth:
            depth -= 1
    return False


_BRACKET = re.compile(r"[\[\]{}]")


def _tab_indent(text: str, error_line: int | None) -> int | None:
    """The first line (0-based) up to the error's whose indentation holds a tab."""
    for number, line in enumerate(text.split("\n")[:None if error_line is None
                                                      else error_line + 1]):
        if "\t" in line[:len(line) - len(line.lstrip())]:
            return number
    return None


def _measure(text: str, first_line: int) -> Diagnostic | None:
    """Depth, expanded size (in characters) and self-reference of the YAML, from its events
    alone. An alias counts as the characters of the whole subtree it repeats, so a small
    document that expands enormously is refused, while a large plain one (100,000 steps)
    is not: without aliases the expanded size is about the text's own."""
    sizes: dict[str, int] = {}
    stack: list[tuple[str | None, int]] = []   # (anchor, expanded size when it opened)
    open_anchors: set[str] = set()
    total = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append((event.anchor, total))
            if event.anchor:
                open_anchors.add(event.anchor)
            if len(stack) > MAX_DEPTH:
                return _too_deep(_mark(event, first_line))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, start = stack.pop()
            total += 2
            if anchor:
                sizes[anchor] = total - start
                open_anchors.discard(anchor)
        elif isinstance(event, yaml.ScalarEvent):
            total += len(event.value) + 1
            if event.anchor:
                sizes[event.anchor] = len(event.value) + 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                return diagnostic("MAML-P116", f"the alias *{event.anchor} refers to the "
                                  "collection that contains it; YAML aliases must not recurse",
                                  _mark(event, first_line))
            total += sizes.get(event.anchor, 1)
        if total > MAX_EXPANDED_CHARS:
            return diagnostic("MAML-P115", "the front matter expands to more than "
                              f"{MAX_EXPANDED_CHARS // (1024 * 1024)} MiB of values (YAML "
                              "aliases repeat whole subtrees: an alias bomb?); write the values "
                              "out or move them into a file", _mark(event, first_line))
    return None


def _too_deep(span: SourceSpan) -> Diagnostic:
    return diagnostic("MAML-P115", f"the front matter nests deeper than {MAX_DEPTH} levels; "
                      "flatten it", span)


def _mark(event: Any, first_line: int) -> SourceSpan:
    mark = event.start_mark
    return SourceSpan(first_line + mark.line, mark.column + 1) if mark else SourceSpan(first_line)


class _Walk:
    """One pass over the composed nodes: the span of every key and list item, duplicate
    keys, surprising scalars, and the data itself for the plain cases (str, int, float,
    bool, null, timestamp, maps, lists) — a second pass by PyYAML's constructor only for
    documents with merge keys or explicit tags (`unusual`)."""

    def __init__(self, loader: Any, first_line: int, out: LoadedYaml) -> None:
        self.loader, self.first_line, self.out = loader, first_line, out
        self.unusual = False

    def span(self, node: yaml.Node) -> SourceSpan:
        return SourceSpan(self.first_line + node.start_mark.line, node.start_mark.column + 1)

    def node(self, node: yaml.Node, path: tuple[Any, ...]) -> Any:
        if len(path) > MAX_DEPTH:
            raise _TooDeep(self.span(node))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.out.key_spans[path + (index,)] = self.span(item)
                items.append(self.node(item, path + (index,)))
            return items
        if not node.style and _surprising(node):
            self.out.literals[path] = node.value
        return self.scalar(node)

    def mapping(self, node: yaml.MappingNode, path: tuple[Any, ...]) -> dict[Any, Any]:
        data: dict[Any, Any] = {}
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            if key == "<<" or not isinstance(key_node, yaml.ScalarNode):
                self.unusual = True
                continue
            span = self.span(key_node)
            if key in seen:
                self.out.diagnostics.append(diagnostic(
                    "MAML-P117", f"key {'.'.join(map(str, path + (key,)))!r} appears twice in "
                    "the front matter; YAML keeps only the last: delete one", span))
            seen.add(key)
            self.out.key_spans[path + (key,)] = span
            value = self.node(value_node, path + (key,))
            data[key_node.value if key_node.tag == _BOOL_TAG else self.scalar(key_node)] = value
        if node.tag != _MAP_TAG:
            self.unusual = True
        return data

    def scalar(self, node: yaml.ScalarNode) -> Any:
        construct = _SCALARS.get(node.tag)
        if construct is None:
            self.unusual = True
            return node.value
        return construct(self.loader, node) if callable(construct) else node.value


_MAP_TAG = "tag:yaml.org,2002:map"
#: tag -> how to build the value (True: the text itself)
_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:str": True,
    "tag:yaml.org,2002:null": lambda loader, node: None,
    _BOOL_TAG: lambda loader, node: loader.construct_yaml_bool(node),
    _INT_TAG: lambda loader, node: loader.construct_yaml_int(node),
    _FLOAT_TAG: lambda loader, node: loader.construct_yaml_float(node),
    "tag:yaml.org,2002:timestamp": lambda loader, node: loader.construct_yaml_timestamp(node),
}


class _TooDeep(Exception):
    def __init__(self, span: SourceSpan) -> None:
        self.span = span


def _surprising(node: yaml.ScalarNode) -> bool:
    """A plain scalar YAML 1.1 reads as something it does not look like."""
    if node.tag == _BOOL_TAG:
        return node.value.lower() not in ("true", "false")
    return node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in node.value


def _key_of(node: yaml.Node) -> Any:
    """The key as json_view() will spell it: a string (YAML 1.1 booleans keep their text)."""
    if isinstance(node, yaml.ScalarNode):
        return node.value
    return str(node.value)


def json_view(value: Any) -> Any:
    """The loaded YAML as JSON types: dates become ISO strings, keys become strings."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: json_view(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_view(v) for v in value]
    if hasattr(value, "isoformat"):
        return _isoformat(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    return value


def _isoformat(value: Any) -> str:
    text = value.isoformat()
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text
