"""Safe, bounded YAML loading that remembers where every key and list item is.

Three things the plain `yaml.safe_load` does not give:

1. Bounds. A "billion laughs" alias bomb composes into a small node graph but expands into
   an enormous tree for anything that walks it (the schema validator, JSON output); and
   libyaml's composer recurses in C, so 30 000 nested `[` crash the interpreter. Before any
   node is built, one iterative pass over the *event* stream measures nesting depth and the
   expanded node count (an alias counts as the whole subtree it names) and refuses past
   MAX_DEPTH / MAX_NODES, and finds aliases that refer to themselves.
2. Positions. The composed node tree gives the line/column of every key and list item,
   recorded by path: ("pipeline", 0, "kind") -> SourceSpan.
3. YAML 1.1 traps in keys: `on:` (our policy key) is the boolean True to PyYAML; a key that
   resolves to a boolean keeps its written text instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from maml.document.codes import diagnostic
from maml.document.model import Diagnostic, SourceSpan

MAX_FRONT_MATTER_CHARS = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _SpanLoader(_Loader):  # type: ignore[misc, valid-type]
    """SafeLoader whose mapping keys that YAML 1.1 reads as booleans stay strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _BOOL_TAG:
                key_node.tag = "tag:yaml.org,2002:str"
        return super().construct_mapping(node, deep=deep)


@dataclass(slots=True)
class LoadedYaml:
    data: Any = None
    key_spans: dict[tuple[Any, ...], SourceSpan] = field(default_factory=dict)
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
        problem = _measure(text, first_line)
        if problem:
            result.diagnostics.append(problem)
            return result
        loader = _SpanLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _walk(node, (), first_line, result)
            result.data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        result.diagnostics.append(_yaml_error(exc, first_line))
        return result
    except RecursionError:
        result.diagnostics.append(_too_deep(SourceSpan(first_line)))
        return result
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # the constructor's own failures (e.g. a date like 2025-13-45) carry no mark
        result.diagnostics.append(diagnostic(
            "MAML-P113", f"the front matter cannot be read as YAML: {exc}; quote the value",
            SourceSpan(first_line)))
        return result
    result.ok = True
    return result


def _yaml_error(exc: yaml.MarkedYAMLError, first_line: int) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    span = SourceSpan(first_line + mark.line, mark.column + 1) if mark else SourceSpan(first_line)
    what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
    if "nesting depth" in what or "depth" in str(exc.problem or ""):
        # PyYAML >= 6.0.2 (and libyaml) refuse deep nesting themselves, sometimes before
        # our event count sees it (the scanner looks ahead): the same finding either way
        return _too_deep(span)
    hint = "quote values that contain ': ' or start with a special character"
    if "cannot start any token" in what:
        hint = "a value starting with %, @, ` or a tab must be quoted (e.g. os: \"%{os}\")"
    return diagnostic("MAML-P113", f"the front matter is not valid YAML: {what}; {hint}", span)


def _measure(text: str, first_line: int) -> Diagnostic | None:
    """Depth, expanded size and self-reference of the YAML, from its events alone."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[None, 0]]   # [anchor, expanded size so far]
    open_anchors: set[str] = set()
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 0])
            if event.anchor:
                open_anchors.add(event.anchor)
            if len(stack) > MAX_DEPTH:
                return _too_deep(_mark(event, first_line))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = stack.pop()
            size += 1
            if anchor:
                sizes[anchor] = size
                open_anchors.discard(anchor)
            stack[-1][1] += size
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                return diagnostic("MAML-P116", f"the alias *{event.anchor} refers to the "
                                  "collection that contains it; YAML aliases must not recurse",
                                  _mark(event, first_line))
            stack[-1][1] += sizes.get(event.anchor, 1)
        if stack[-1][1] > MAX_NODES or (len(stack) > 1 and sum(f[1] for f in stack) > MAX_NODES):
            return diagnostic("MAML-P115", f"the front matter expands to more than {MAX_NODES} "
                              "values (YAML aliases repeat whole subtrees: an alias bomb?); "
                              "write the values out or move them into a file",
                              _mark(event, first_line))
    return None


def _too_deep(span: SourceSpan) -> Diagnostic:
    return diagnostic("MAML-P115", f"the front matter nests deeper than {MAX_DEPTH} levels; "
                      "flatten it", span)


def _mark(event: Any, first_line: int) -> SourceSpan:
    mark = event.start_mark
    return SourceSpan(first_line + mark.line, mark.column + 1) if mark else SourceSpan(first_line)


def _walk(node: yaml.Node, path: tuple[Any, ...], first_line: int, out: LoadedYaml) -> None:
    """Record the span of every key and list item below `node`; report duplicate keys."""
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = _key_of(key_node)
            if key == "<<":
                continue
            span = SourceSpan(first_line + key_node.start_mark.line, key_node.start_mark.column + 1)
            if key in seen:
                out.diagnostics.append(diagnostic(
                    "MAML-P117", f"key {'.'.join(map(str, path + (key,)))!r} appears twice in "
                    "the front matter; YAML keeps only the last: delete one", span))
            seen.add(key)
            out.key_spans[path + (key,)] = span
            _walk(value_node, path + (key,), first_line, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            mark = item.start_mark
            out.key_spans[path + (index,)] = SourceSpan(first_line + mark.line, mark.column + 1)
            _walk(item, path + (index,), first_line, out)


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
