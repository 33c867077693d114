"""Attributes in a fence's info string: ```python {id=post step=post needs=[bell, enc]}.

Info strings understood (the language, then the attributes):

    python {id=x needs=[a]}    the common form (also `python{id=x}`, `python id=x`)
    {python}  {python id=x}    Quarto / R Markdown: the language is the first word inside
    {r, echo=FALSE}            ... which a comma may follow
    {.python #x}               Pandoc: the first class is the language
    sh {"id": "build"}         Runme: JSON attributes

Accepted inside the braces (the braces themselves are optional):

    key=value          a bare value runs to the next space
    key="a b" key='a'  quoted values may hold spaces; \\" escapes a quote
    key=[a, b, "c d"]  a list; items separated by commas and/or spaces
    #name              shorthand for id=name (Pandoc style)
    .name              a class, collected under "classes"
    flag               a bare word is the boolean True

Never raises: what cannot be read is returned as a problem string for a diagnostic.
"""

from __future__ import annotations

import re
from typing import Any

_KEY = re.compile(r"[A-Za-z_][\w.-]*")


_LANG_FIRST = re.compile(r"^\s*\.?([A-Za-z][\w+-]*)(?=[\s,}]|$)\s*,?")


def split_info(info: str) -> tuple[str, str]:
    """(language, attribute text) from a fence info string: `python {id=x}` -> (python, id=x)."""
    info = info.strip()
    if info.startswith("{"):
        inner = _strip_braces(info)
        first = _LANG_FIRST.match(inner)
        if first and not inner[first.end():].startswith("="):
            return first.group(1), inner[first.end():].strip()
        return "", inner
    lang, _, rest = info.partition(" ")
    if "{" in lang:  # ```python{id=x}
        lang, _, tail = lang.partition("{")
        rest = "{" + tail + (" " + rest if rest else "")
    return lang.strip(), _strip_braces(rest.strip())


def _strip_braces(text: str) -> str:
    if text.startswith("{"):
        text = text[1:]
        end = text.rfind("}")
        text = text[:end] if end >= 0 else text
    return text.strip()


def parse_attrs(text: str) -> tuple[dict[str, Any], list[str]]:
    """The attributes in `text` and a list of problems (empty when all was read)."""
    if text.lstrip().startswith('"'):
        return _json_attrs(text)
    attrs: dict[str, Any] = {}
    problems: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos] in " \t,":
            pos += 1
            continue
        if text[pos] in "#.":
            match = _KEY.match(text, pos + 1)
            if not match:
                problems.append(f"{text[pos]!r} at column {pos + 1} is not followed by a name")
                pos += 1
                continue
            if text[pos] == "#":
                attrs["id"] = match.group()
            else:
                attrs.setdefault("classes", []).append(match.group())
            pos = match.end()
            continue
        match = _KEY.match(text, pos)
        if not match:
            bad = text[pos:].split(None, 1)[0]
            problems.append(f"{bad!r} is not key=value")
            pos += len(bad)
            continue
        key, pos = match.group(), match.end()
        if pos < end and text[pos] == "=":
            value, pos, problem = _value(text, pos + 1)
            if problem:
                problems.append(f"{key}: {problem}")
            attrs[key] = value
        else:
            attrs[key] = True
    return attrs, problems


def _value(text: str, pos: int) -> tuple[Any, int, str | None]:
    """Read one value at `pos`: a quoted string, a [list] or a bare word."""
    if pos >= len(text) or text[pos] in " \t,}":
        return "", pos, "no value after '='"
    if text[pos] in "\"'":
        return _quoted(text, pos)
    if text[pos] == "[":
        close = text.find("]", pos)
        if close < 0:
            return _list_items(text[pos + 1:]), len(text), "the list has no closing ']'"
        return _list_items(text[pos + 1:close]), close + 1, None
    end = pos
    while end < len(text) and not text[end].isspace() and text[end] not in ",}":
        end += 1
    return text[pos:end], end, None


def _quoted(text: str, pos: int) -> tuple[str, int, str | None]:
    quote, chars, i = text[pos], [], pos + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            return "".join(chars), i + 1, None
        chars.append(char)
        i += 1
    return "".join(chars), i, f"the quoted value has no closing {quote}"


def _list_items(inner: str) -> list[str]:
    items = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^\s,"\']+)', inner)
    return [next(part for part in item if part) if any(item) else "" for item in items]


def _json_attrs(text: str) -> tuple[dict[str, Any], list[str]]:
    """Runme's `{"id": "build", "name": "build"}` (the braces already stripped)."""
    import json

    try:
        value = json.loads("{" + text + "}")
    except ValueError as exc:
        return {}, [f"the JSON attributes cannot be read: {exc}"]
    return {str(k): v for k, v in value.items()}, []
