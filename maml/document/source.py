"""Bytes to text, without ever failing: BOM, CRLF, non-UTF-8 bytes, NUL bytes, size.

The parser works on `str` with `\\n` line ends only. Whatever was changed on the way is
reported as a diagnostic that names the line (and, for bad bytes, the byte offset).
"""

from __future__ import annotations

from maml.document.codes import diagnostic
from maml.document.model import Diagnostic, SourceSpan

#: documents above this size are not parsed as Markdown: markdown-it-py reads about
#: 1 MB/s here, and nothing that runs as a pipeline is this large (data belongs in files)
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024

BOM = "\ufeff"


def decode(data: str | bytes) -> tuple[str, list[Diagnostic]]:
    """The document's text with LF line ends and no BOM, and what had to be fixed."""
    diagnostics: list[Diagnostic] = []
    if isinstance(data, (bytes, bytearray, memoryview)):
        text = _decode_bytes(bytes(data), diagnostics)
    else:
        text = str(data)
    if text.startswith(BOM):
        text = text[1:]
        diagnostics.append(diagnostic("MAML-P102", "a UTF-8 byte-order mark (BOM) was removed; "
                                      "save the file as UTF-8 without BOM", SourceSpan(1)))
    if "\r" in text:
        line = text.count("\n", 0, text.index("\r")) + 1
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        diagnostics.append(diagnostic("MAML-P103", "CRLF (Windows) or CR line ends were read as "
                                      "LF; no action needed", SourceSpan(line)))
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        diagnostics.append(diagnostic("MAML-P105", "the file contains NUL bytes and looks binary, "
                                      "not like a Markdown document; check the file name",
                                      SourceSpan(line)))
        text = text.replace("\x00", "\ufffd")
    return text, diagnostics


def _decode_bytes(data: bytes, diagnostics: list[Diagnostic]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    bad = data[offset:offset + 4].hex(" ")
    diagnostics.append(diagnostic(
        "MAML-P101", f"the file is not valid UTF-8: byte offset {offset} (bytes {bad}) cannot be "
        "decoded, and every such byte was replaced by U+FFFD; re-save the file as UTF-8 "
        "(e.g. `iconv -f latin1 -t utf-8`)", SourceSpan(line, column)))
    return data.decode("utf-8", errors="replace")


def too_large(text: str) -> Diagnostic | None:
    """An error when the document is too large to parse its body, else None."""
    size = len(text)
    if size <= MAX_DOCUMENT_BYTES:
        return None
    return diagnostic(
        "MAML-P106", f"the document is {size / 1e6:.1f} MB; maml parses the Markdown body of "
        f"documents up to {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB only, so its body was not "
        "read (front matter was); move data into separate files and reference them",
        SourceSpan(1))
