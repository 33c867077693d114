"""`maml run --append-history`: one line per run in the document's `## History` section.

    - 2026-11-30T12:00:00Z: [EXECUTED] run <id> <status> graph-head <hash> by <key id>

Opt-in, because it rewrites the document: the new bytes replace the file atomically
(maml/_files.py), keeping its mode. A signed document no longer matches its signature after
that; with `--resign` it is signed again with the user's key (who then becomes its signer),
otherwise maml says that the signature no longer matches.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
from pathlib import Path
from typing import Any

from maml._files import write_atomic

_HEADING = re.compile(rb"^##\s+History\s*#*\s*$")
_ANY_H1_H2 = re.compile(rb"^#{1,2}\s")
_FENCE = re.compile(rb"^\s{0,3}(`{3,}|~{3,})")


def entry(run_id: str, status: str, head: str | None, key_id: str,
          when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.timezone.utc)
    stamp = when.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"- {stamp}: [EXECUTED] run {run_id} {status} graph-head {head or '-'} by {key_id}"


def with_entry(data: bytes, line: str) -> bytes:
    """The document's bytes with `line` appended to its History section (made if absent)."""
    newline = b"\r\n" if b"\r\n" in data else b"\n"
    lines = data.splitlines(keepends=True)
    start = _history_heading(lines)
    text = line.encode("utf-8") + newline
    if start is None:
        tail = b"" if not data or data.endswith(newline) else newline
        return data + tail + newline + b"## History" + newline + newline + text
    end = next((i for i in range(start + 1, len(lines)) if _ANY_H1_H2.match(lines[i])),
               len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1                                   # after the last entry, before blank lines
    if lines[end - 1:end] and not lines[end - 1].endswith((b"\n", b"\r")):
        lines[end - 1] += newline
    return b"".join(lines[:end] + [text] + lines[end:])


def _history_heading(lines: list[bytes]) -> int | None:
    fence: bytes | None = None
    for number, raw in enumerate(lines):
        opened = _FENCE.match(raw)
        if fence is not None:
            if opened and opened.group(1)[:1] == fence[:1] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        if opened:
            fence = opened.group(1)
        elif _HEADING.match(raw.rstrip(b"\r\n")):
            return number
    return None


def append(document: str | os.PathLike[str], line: str, *, key: Any, resign: bool) -> str:
    """Append `line` to the document's History; re-sign if asked. Returns what was done, for
    the user (also said on stderr when a signature stops matching)."""
    from maml.graph import docsig, keys

    path = Path(document)
    data = path.read_bytes()
    was_signed = docsig.signature_path(path).exists()
    write_atomic(path, with_entry(data, line), os.stat(path).st_mode & 0o7777)
    if not was_signed:
        return f"appended to {path}'s History"
    if resign:
        docsig.sign(path, key)
        return f"appended to {path}'s History and re-signed it with {key.id}"
    verdict = docsig.verify(path, keys.trusted_public_keys())
    note = (f"{path} no longer matches its signature {docsig.signature_path(path).name} "
            f"({verdict.status}); re-sign it with `maml sign {path}` or run with --resign")
    print(f"maml: warning: {note}", file=sys.stderr)
    return note
