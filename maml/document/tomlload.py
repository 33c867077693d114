"""TOML front matter (Hugo's `+++ ... +++`), read with the standard library's tomllib.

The result has the same shape as `yamlload.load`'s, so everything downstream (dialects,
schemas, steps, the runtime) cannot tell the two forms apart. tomllib gives no positions,
so the line of each key is found by reading the lines: `key = ...` under the current
`[table]` / `[[array.of.tables]]` header (dotted keys included). A value inside an inline
table or an array points at its key's line — "the line of the key at least".
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from maml.document.codes import diagnostic
from maml.document.model import SourceSpan
from maml.document.yamlload import MAX_FRONT_MATTER_CHARS, LoadedYaml

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                  r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def load(text: str, first_line: int) -> LoadedYaml:
    """Load TOML that starts at document line `first_line` (1-based)."""
    result = LoadedYaml()
    if len(text) > MAX_FRONT_MATTER_CHARS:
        result.diagnostics.append(diagnostic(
            "MAML-P115", f"the front matter is {len(text) // 1024} KiB; maml reads at most "
            f"{MAX_FRONT_MATTER_CHARS // 1024} KiB: move data into files", SourceSpan(first_line)))
        return result
    try:
        result.data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        at = _AT.search(str(exc))
        span = SourceSpan(first_line + int(at.group(1)) - 1, int(at.group(2))) if at \
            else SourceSpan(first_line)
        message = _AT.sub("", str(exc)).strip()
        result.diagnostics.append(diagnostic(
            "MAML-P113", f"the TOML front matter (between +++ lines) cannot be read: {message}; "
            "strings need quotes (key = \"value\")", span))
        return result
    result.key_spans = _spans(text, first_line)
    result.ok = True
    return result


def _spans(text: str, first_line: int) -> dict[tuple[Any, ...], SourceSpan]:
    spans: dict[tuple[Any, ...], SourceSpan] = {}
    table: tuple[Any, ...] = ()
    counts: dict[tuple[Any, ...], int] = {}
    for number, line in enumerate(text.split("\n"), start=first_line):
        header = _HEADER.match(line)
        if header:
            path = _parts(header.group(2))
            if header.group(1) == "[[":
                index = counts.get(path, -1) + 1
                counts[path] = index
                spans.setdefault(path, SourceSpan(number, 1))
                path = path + (index,)
            table = path
            spans.setdefault(table, SourceSpan(number, 1))
            continue
        key = _KEY.match(line)
        if key:
            path = table + _parts(key.group(1))
            spans.setdefault(path, SourceSpan(number, line.index(key.group(1)[0]) + 1))
    return spans


def _parts(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", dotted)
    return tuple(next(p for p in part if p) if any(part) else "" for part in parts)
