"""Where the front matter is, and the ways documents in the wild get their outline wrong.

`split` works on lines, before Markdown parsing, and hands the Markdown parser a body in
which the front matter is blanked out, so that line numbers stay those of the file. Where
fences are is markdown-it's answer (body.fence_ranges), never a scanner of our own:
`scan_body_lines` runs on the body with the fences markdown-it found. Recognised mistakes,
each with its own diagnostic:

- the whole document pasted inside a ```markdown fence (it is unwrapped and parsed);
- front-matter keys with no `---` fences, possibly run together on one line;
- `---` opened and never closed (or a horizontal rule where front matter would be);
- a second front-matter block later on (two documents concatenated), which is blanked
  so that its closing `---` does not turn `key: value` into a setext heading;
- chat-transcript text pasted around the document ("User:", "Copy code", ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from maml.document.codes import diagnostic
from maml.document.model import Diagnostic, SourceSpan

_WRAPPER = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*(markdown|md|maml|maml\.md|yaml|yml|)\s*$",
                      re.IGNORECASE)
_KEY_LINE = re.compile(r"^[A-Za-z_][\w-]*\s*:(\s|$)")
_KEYS_ON_LINE = re.compile(r"(?:^|\s)([A-Za-z_][\w-]*):(?=\s)")
_YAMLISH = re.compile(r"^(\s+\S|-\s|#|[A-Za-z_\"'][^:]*:(\s|$))")
_CHAT = re.compile(
    r"^\s*(\*\*)?(user|human|assistant|chatgpt|claude|grok|gemini|copilot|you|ai)(\*\*)?"
    r"( said)?\s*(\*\*)?:(\*\*)?(\s|$)|^\s*copy code\s*$|^\s*(copy|edit|share|regenerate)\s*$|"
    r"let me know if you('d| would)? (like|want|need)|would you like me to|"
    r"i hope this helps|is there anything else", re.IGNORECASE)
_SECOND_FRONT_MATTER_MAX_LINES = 200


@dataclass(slots=True)
class Layout:
    """The document split into its front matter and the body that markdown-it will read."""

    body: list[str]
    yaml_text: str | None = None
    #: "yaml" (`---`) or "toml" (`+++`, Hugo): how yaml_text is to be read
    front_matter_format: str = "yaml"
    yaml_first_line: int = 0
    front_matter_span: SourceSpan | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)


def split(text: str, scan_body: bool = True) -> Layout:
    """Find the front matter (the body's own mistakes are found by `scan_body_lines`, with
    the fences markdown-it found). `scan_body` is kept for callers; the body is not read
    here."""
    lines = text.split("\n")
    layout = Layout(body=lines)
    _unwrap_fenced_document(layout)
    first = _first_nonblank(layout.body, 0)
    if first is not None and layout.body[first].rstrip() in ("---", "+++"):
        _take_front_matter(layout, first)
    else:
        _report_missing_front_matter(layout, first)
    return layout


def scan_body_lines(lines: list[str], start: int, fences: list[tuple[int, int]]) \
        -> tuple[bool, list[Diagnostic]]:
    """A second front matter (blanked in `lines`, so its closing `---` does not make a
    setext heading) and chat-transcript text, outside the fences markdown-it found
    (0-based [begin, end) line ranges). Returns (whether lines were blanked, diagnostics)."""
    inside = bytearray(len(lines))
    for begin, end in fences:
        inside[begin:end] = b"\x01" * (min(end, len(lines)) - begin)
    outside = [(i, lines[i]) for i in range(start, len(lines)) if not inside[i]]
    diagnostics: list[Diagnostic] = []
    blanked = _blank_later_front_matter(lines, outside, diagnostics)
    _report_chat_text(outside, diagnostics)
    return blanked, diagnostics


def _first_nonblank(lines: list[str], start: int) -> int | None:
    return next((i for i in range(start, len(lines)) if lines[i].strip()), None)


def _unwrap_fenced_document(layout: Layout) -> None:
    lines = layout.body
    first = _first_nonblank(lines, 0)
    wrapper = _WRAPPER.match(lines[first]) if first is not None else None
    if wrapper is None:
        return
    inner = _first_nonblank(lines, first + 1)
    if inner is None or lines[inner].rstrip() != "---":
        return
    from maml.document.body import fence_ranges   # markdown-it: only for a wrapped document

    ranges = fence_ranges(lines)
    end = next((e for b, e in ranges if b == first), len(lines))
    marker, tag = wrapper.group(1), wrapper.group(2)
    last = max(i for i in range(len(lines)) if lines[i].strip())
    lines = list(lines)
    lines[first] = ""
    closes_at = end - 1 if end - 1 > first and _is_closing(lines[end - 1], marker) else None
    if last > first and _is_closing(lines[last], marker):
        lines[last] = ""
    layout.body = lines
    early = ""
    if closes_at is not None and closes_at != last:
        early = (f"; the inner fence at line {closes_at + 1} closes it early, so everything "
                 "after that line would be read as outside it")
    layout.diagnostics.append(diagnostic(
        "MAML-P120", f"the whole document is wrapped in a {marker}{tag} "
        f"fence (line {first + 1}){early}; delete the wrapping fence lines (maml read the "
        "document inside it)", SourceSpan(first + 1)))


def _is_closing(line: str, marker: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and set(stripped) == {marker[0]} and len(stripped) >= len(marker)


def _take_front_matter(layout: Layout, first: int) -> None:
    lines = layout.body
    fence = lines[first].rstrip()
    ends = ("+++",) if fence == "+++" else ("---", "...")
    close = next((i for i in range(first + 1, len(lines)) if lines[i].rstrip() in ends), None)
    if close is None:
        layout.diagnostics.append(diagnostic(
            "MAML-P112", f"front matter opened with '{fence}' at line {first + 1} is never "
            f"closed; add a '{fence}' line after the last key (or, if the '---' is meant as a "
            "horizontal rule, put text before it)", SourceSpan(first + 1)))
        return
    layout.front_matter_format = "toml" if fence == "+++" else "yaml"
    layout.yaml_text = "\n".join(lines[first + 1:close])
    layout.yaml_first_line = first + 2
    layout.front_matter_span = SourceSpan(first + 1, 1, close + 1)
    layout.body = [""] * (close + 1) + lines[close + 1:]


def _report_missing_front_matter(layout: Layout, first: int | None) -> None:
    if first is None:
        return
    line = layout.body[first]
    if _KEY_LINE.match(line):
        keys = _KEYS_ON_LINE.findall(" " + line)
        together = (f"; the keys {', '.join(keys)} run together on one line: put each on its "
                    "own line" if len(keys) > 1 else "")
        layout.diagnostics.append(diagnostic(
            "MAML-P111", f"line {first + 1} holds front-matter keys but there is no '---' line "
            f"before and after them{together}; maml read no front matter",
            SourceSpan(first + 1)))
        return
    rule = next((i for i, text in enumerate(layout.body) if text.rstrip() == "---"), None)
    where = (f" (the '---' at line {rule + 1} is a horizontal rule, not front matter: front "
             "matter must start on the first line)" if rule is not None else "")
    layout.diagnostics.append(diagnostic(
        "MAML-P110", f"the document has no front matter{where}, so it is not a MAML document; "
        "start it with three lines: '---', 'maml_version: \"1.0\"', '---'",
        SourceSpan(first + 1)))


def _blank_later_front_matter(lines: list[str], outside: list[tuple[int, str]],
                              diagnostics: list[Diagnostic]) -> bool:
    candidates = [i for i, line in outside if line.rstrip() == "---"]
    taken_until, blanked = -1, False
    for i in candidates:
        if i <= taken_until or (i > 0 and lines[i - 1].strip()):
            continue  # text right above '---' makes a setext heading, not front matter
        close = _front_matter_close(lines, i)
        if close is None:
            continue
        diagnostics.append(diagnostic(
            "MAML-P118", f"a second front-matter block (lines {i + 1}-{close + 1}) after the "
            "document's own: two documents were pasted together? maml ignores it; delete it "
            "or split the file", SourceSpan(i + 1, 1, close + 1)))
        for j in range(i, close + 1):
            lines[j] = ""
        taken_until, blanked = close, True
    return blanked


def _front_matter_close(lines: list[str], open_at: int) -> int | None:
    """The closing '---' of a front-matter-like block opening at `open_at`, else None."""
    first = _first_nonblank(lines, open_at + 1)
    if first is None or not _KEY_LINE.match(lines[first]):
        return None
    for j in range(first, min(len(lines), open_at + _SECOND_FRONT_MATTER_MAX_LINES)):
        text = lines[j]
        if text.rstrip() == "---":
            return j
        if text.strip() and not _YAMLISH.match(text):
            return None
    return None


def _report_chat_text(outside: list[tuple[int, str]], diagnostics: list[Diagnostic]) -> None:
    for i, line in outside:
        if line.strip() and _CHAT.search(line):
            diagnostics.append(diagnostic(
                "MAML-P119", f"line {i + 1} looks like text pasted from a chat transcript "
                f"({line.strip()[:40]!r}); delete it, it is not part of the document",
                SourceSpan(i + 1)))
            return
