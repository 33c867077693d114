"""Text or bytes in, one `Document` out; never an exception for what the content is.

The stages, in order (each may add diagnostics, none may raise on content):

    source.decode        bytes -> str: UTF-8 with replacement, BOM, CRLF, NUL bytes
    layout.split         where the front matter is; wrapped, unfenced, doubled front matter
    yamlload.load        bounded safe YAML with the position of every key and list item
    tomlload.load        or TOML between `+++` lines (Hugo), with the line of every key
    dialects.normalise   which dialect, and the normalised `meta`
    body.read_body       sections, fenced blocks, History, Input/Output schemas

Only I/O (a file that cannot be opened) raises, from `parse_file`.
"""

from __future__ import annotations

import os

from maml.document import body, dialects, layout, source, tomlload, yamlload
from maml.document.codes import diagnostic
from maml.document.model import Document, SourceSpan


def parse(text: str | bytes, path: str | None = None) -> Document:
    """Parse a document; problems with its content are in `.diagnostics`."""
    text_str, decode_notes = source.decode(text)
    doc = Document(path=path, source=text_str)
    doc.diagnostics.extend(decode_notes)
    if not text_str.strip():
        doc.diagnostics.append(diagnostic("MAML-P104", "the document is empty; a MAML document "
                                          "starts with '---' front matter", SourceSpan(1)))
        dialects.normalise(doc)
        return doc
    oversize = source.too_large(text_str)
    parts = layout.split(text_str, scan_body=oversize is None)
    doc.diagnostics.extend(parts.diagnostics)
    doc.front_matter_span = parts.front_matter_span
    if parts.yaml_text is not None:
        _read_front_matter(doc, parts.yaml_text, parts.yaml_first_line,
                           toml=parts.front_matter_format == "toml")
    dialects.normalise(doc)
    if oversize:
        doc.diagnostics.append(oversize)
    else:
        body.read_body(doc, parts.body)
    return doc


def parse_file(path: str | os.PathLike[str]) -> Document:
    """Read a file's bytes and parse them (OSError for a file that cannot be read)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return parse(data, path=os.fspath(path))


def _read_front_matter(doc: Document, yaml_text: str, first_line: int, toml: bool) -> None:
    loaded = tomlload.load(yaml_text, first_line) if toml else yamlload.load(yaml_text, first_line)
    doc.diagnostics.extend(loaded.diagnostics)
    doc.key_spans = loaded.key_spans
    doc.yaml_literals = loaded.literals
    if not loaded.ok:
        return
    if loaded.data is None:
        return  # `---` `---`: empty front matter
    if not isinstance(loaded.data, dict):
        kind = type(loaded.data).__name__
        doc.diagnostics.append(diagnostic(
            "MAML-P114", f"the front matter is a YAML {kind}, not a mapping of keys; write "
            "'key: value' lines between the '---' lines (if the first '---' is meant as a "
            "horizontal rule, start the document with a heading instead)",
            doc.front_matter_span))
        doc.key_spans = {}
        return
    doc.front_matter = loaded.data
