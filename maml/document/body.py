"""The Markdown body: H2 sections, fenced blocks, History entries, Input/Output schemas.

markdown-it-py reads the block structure (headings, fences, lists) and gives every token
its source map; inline parsing is switched off because nothing here needs emphasis or
links, and it is 40% of markdown-it's time. Line numbers are the file's: the layout step
blanked the front matter instead of cutting it off.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from maml.document.attrs import parse_attrs, split_info
from maml.document.codes import diagnostic
from maml.document.layout import scan_body_lines
from maml.document.model import Block, Document, HistoryEntry, Section, SourceSpan

#: normalised spelling (lower case, letters only) -> Section.name
SECTION_NAMES: dict[str, str] = {
    "intent": "Intent", "context": "Context", "content": "Content",
    "codeblocks": "Code_Blocks", "code": "Code_Blocks", "inputschema": "Input_Schema",
    "outputschema": "Output_Schema", "history": "History",
}
_HISTORY = re.compile(
    r"^\s*[-*+]\s+(?:\*\*|`)?(?P<ts>\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)?)(?:\*\*|`)?\s*:?\s*\[(?P<event>[^\]]+)\]\s*:?\s*(?P<text>.*)$")


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark").disable("inline")


def section_name(title: str) -> str:
    """`🧠 Intent` -> Intent, `Code Blocks` / `code-blocks` -> Code_Blocks; else the title."""
    letters = re.sub(r"[^a-z]", "", title.lower())
    return SECTION_NAMES.get(letters, title.strip())


def fence_ranges(lines: list[str]) -> list[tuple[int, int]]:
    """The [begin, end) line ranges (0-based) of every fenced block, as markdown-it reads
    them: the one truth about where a fence starts and ends."""
    return [tuple(t.map) for t in _markdown().parse("\n".join(lines))  # type: ignore[misc]
            if t.type == "fence" and t.map]


def read_body(doc: Document, body_lines: list[str]) -> None:
    """Fill doc.title, sections, blocks, history and the Input/Output schemas; report a
    second front matter or chat text outside the fences."""
    tokens = _markdown().parse("\n".join(body_lines))
    start = (doc.front_matter_span.end_line or 0) if doc.front_matter_span else 0
    fences = [tuple(t.map) for t in tokens if t.type == "fence" and t.map]
    blanked, notes = scan_body_lines(body_lines, start, fences)  # type: ignore[arg-type]
    doc.diagnostics.extend(notes)
    if blanked:   # rare: a second front matter was blanked, so read the body again
        tokens = _markdown().parse("\n".join(body_lines))
    section: Section | None = None
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map:
            title = tokens[index + 1].content.strip() if index + 1 < len(tokens) else ""
            if token.tag == "h1" and doc.title is None:
                doc.title = title
            if token.tag == "h2":
                section = Section(title, section_name(title), 2, SourceSpan(token.map[0] + 1))
                doc.sections.append(section)
        elif token.type == "fence" and token.map:
            block = _block(doc, token, body_lines, section)
            doc.blocks.append(block)
            if section is not None:
                section.blocks.append(block)
    _close_sections(doc, body_lines)
    _check_block_ids(doc)
    for section in doc.sections:
        if section.name == "History":
            _read_history(doc, section, body_lines)
        elif section.name in ("Input_Schema", "Output_Schema"):
            _read_schema(doc, section, body_lines)


def _block(doc: Document, token: Token, lines: list[str], section: Section | None) -> Block:
    start, end = token.map  # type: ignore[misc]
    lang, attr_text = split_info(token.info)
    attrs, problems = parse_attrs(attr_text) if attr_text else ({}, [])
    closed = _closed(token, lines)
    block = Block(lang=lang, body=token.content, span=SourceSpan(start + 1, 1, end),
                  info=token.info.strip(), attrs=attrs,
                  section=section.name if section else None, closed=closed)
    for problem in problems:
        doc.diagnostics.append(diagnostic(
            "MAML-P122", f"the attributes of the {lang or 'untagged'} fence cannot all be read: "
            f"{problem}; write them as {{id=name needs=[a, b]}}", block.span))
    if not closed:
        doc.diagnostics.append(diagnostic(
            "MAML-P121", f"the {lang or 'untagged'} fence opened at line {start + 1} is never "
            f"closed, so the rest of the document is read as its code; add a line "
            f"'{token.markup}' where the block ends", block.span))
    return block


def _closed(token: Token, lines: list[str]) -> bool:
    """Whether markdown-it ended the fence before the end of the document: at its closing
    fence (then the map spans the content and both fence lines), or at the end of the list
    item or quote holding it (CommonMark). Only a fence that swallows the rest of the
    document is reported as never closed."""
    start, end = token.map  # type: ignore[misc]
    if end - start == token.content.count("\n") + 2:
        return True
    return any(line.strip() for line in lines[end:])


def _close_sections(doc: Document, lines: list[str]) -> None:
    """Give each section its end line and its text (the lines under its heading)."""
    for section, following in zip(doc.sections, doc.sections[1:] + [None]):
        end = following.span.line - 1 if following else len(lines)
        section.span = SourceSpan(section.span.line, 1, end)
        section.text = "\n".join(lines[section.span.line:end]).strip("\n")


def _check_block_ids(doc: Document) -> None:
    seen: dict[str, Block] = {}
    for block in doc.blocks:
        if block.id is None:
            continue
        if block.id in seen:
            doc.diagnostics.append(diagnostic(
                "MAML-P123", f"block id {block.id!r} is used again (first at line "
                f"{seen[block.id].span.line}); `block: {block.id}` would name the first only: "
                "rename one", block.span))
        else:
            seen[block.id] = block


def _read_history(doc: Document, section: Section, lines: list[str]) -> None:
    end = section.span.end_line or len(lines)
    for number in range(section.span.line + 1, end + 1):
        line = lines[number - 1]
        if not re.match(r"^\s*[-*+]\s", line):
            continue
        match = _HISTORY.match(line)
        if match and match.group("ts"):
            doc.history.append(HistoryEntry(match.group("ts"), match.group("event").strip(),
                                             match.group("text").strip(), SourceSpan(number)))
        else:
            doc.diagnostics.append(diagnostic(
                "MAML-P124", "this History entry is not '- <ISO time>: [EVENT] text' (e.g. "
                "'- 2025-01-01T12:00:00Z: [CREATE] first version'); it was not recorded",
                SourceSpan(number)))


def _read_schema(doc: Document, section: Section, lines: list[str]) -> None:
    fence = next((b for b in section.blocks if b.lang.lower() in ("json", "jsonschema", "")),
                 None)
    if fence is not None:
        text, first_line = fence.body, fence.body_line
    else:
        end = section.span.end_line or len(lines)
        raw = "\n".join(lines[section.span.line:end])
        text = raw.strip()
        if not text.startswith("{"):
            return
        first_line = section.span.line + 1 + raw[:raw.index("{")].count("\n")
    value = _json_or_diagnostic(doc, section, text, first_line)
    if not isinstance(value, dict):
        return
    span = SourceSpan(fence.span.line if fence else section.span.line)
    if section.name == "Input_Schema":
        doc.input_schema, doc.input_schema_span = value, span
    else:
        doc.output_schema, doc.output_schema_span = value, span


def _json_or_diagnostic(doc: Document, section: Section, text: str, first_line: int) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        doc.diagnostics.append(diagnostic(
            "MAML-P125", f"{section.name} is not valid JSON: {getattr(exc, 'msg', exc)}; "
            "write it as a JSON Schema object (double quotes, no trailing commas)",
            SourceSpan(first_line + line - 1, column)))
        return None
    if not isinstance(value, dict):
        doc.diagnostics.append(diagnostic(
            "MAML-P125", f"{section.name} is JSON but not an object; a JSON Schema is an object "
            "like {\"type\": \"object\"}", SourceSpan(first_line)))
        return None
    return value
