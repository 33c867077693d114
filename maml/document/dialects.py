"""The front-matter dialects found in public MAML files, normalised into `Document.meta`.

    canonical    maml_version, id, type, origin, requires, permissions, created_at, ...
    cuda-guide   schema_version, context, permissions: {execute: bool, write: bool},
                 encryption: 2048-AES
    glastonbury  schema: glastonbury.maml.v1, context, security, timestamp, tags, agents
    maml_v1      schema: maml_v1 (or a bare `version:`), author, description, context,
                 input_schema / output_schema as field->type maps
    unknown      anything else (still normalised: the keys maml knows are used)

Nothing here is fatal: what maml cannot use is kept in meta["extra"] and reported as info;
YAML typing traps (a float version, an unquoted timestamp) are accepted with a note.
See maml/document/model.py for the keys of `meta`.
"""

from __future__ import annotations

import re
from typing import Any

from maml.document.codes import diagnostic
from maml.document.model import Diagnostic, Document
from maml.document.yamlload import json_view

#: keys with a place in meta (all dialects); everything else goes to meta["extra"]
META_KEYS = ("maml_version", "id", "type", "origin", "encryption", "verification",
             "quantum_security_flag", "requires", "permissions", "created_at",
             "policy", "pipeline", "faults", "executor", "health")
#: keys a dialect defines that are read into a meta key
_ALIASES = {"schema_version": "maml_version", "version": "maml_version",
            "timestamp": "created_at"}
_DIALECT_KEYS = {"schema", "schema_version", "version", "timestamp"}
_NO_CIPHER = re.compile(r"2048[-_ ]?aes|aes[-_ ]?2048", re.IGNORECASE)


def detect(front_matter: dict[str, Any]) -> str:
    schema = str(front_matter.get("schema", "")).lower()
    if "maml_version" in front_matter:
        return "canonical"
    if "schema_version" in front_matter:
        return "cuda-guide"
    if schema.startswith("glastonbury"):
        return "glastonbury"
    if schema.startswith("maml") or ("version" in front_matter and not schema):
        return "maml_v1"
    return "unknown"


def normalise(doc: Document) -> None:
    """Set doc.dialect and doc.meta from doc.front_matter; add notes to doc.diagnostics."""
    fm = doc.front_matter
    doc.dialect = detect(fm)
    meta: dict[str, Any] = {key: None for key in META_KEYS}
    meta["extra"] = {}
    notes: list[Diagnostic] = []
    for key, value in fm.items():
        key = str(key)
        target = key if key in META_KEYS else _ALIASES.get(key)
        if target and (meta[target] is None or key == target):
            meta[target] = _normalise_value(doc, key, target, value, notes)
        elif key in _DIALECT_KEYS:
            meta["extra"][key] = json_view(value)  # the dialect's own marker: no note
        else:
            meta["extra"][key] = json_view(value)
            notes.append(_unknown_key(doc, key))
    if doc.dialect not in ("canonical", "unknown"):
        notes.append(diagnostic("MAML-D401", f"read as the {doc.dialect} MAML dialect",
                                doc.front_matter_span))
    doc.meta = meta
    doc.diagnostics.extend(notes)


#: every top-level key maml reads (any dialect) or that an engine part reads from `extra`
KNOWN_KEYS = (*META_KEYS, *_DIALECT_KEYS, "health", "executor", "signature")


def _unknown_key(doc: Document, key: str) -> Diagnostic:
    """A typo of a known key changes what the document means (`pipline:` leaves the steps
    implicit): a warning with the fix. Any other unknown key is kept, with a note."""
    close = [k for k in KNOWN_KEYS if edit_distance(key.lower(), k) <= min(2, len(k) // 3)]
    if close:
        best = min(close, key=lambda k: edit_distance(key.lower(), k))
        return diagnostic("MAML-D407", f"front-matter key {key!r} is not one maml knows: did "
                          f"you mean {best!r}? (as written it is ignored)", doc.span_of(key))
    return diagnostic("MAML-D403", f"front-matter key {key!r} is kept in meta['extra'] but "
                      "maml does not use it", doc.span_of(key))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions), two rows at a time."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char != other)))
        previous = current
    return previous[-1]


def _normalise_value(doc: Document, key: str, target: str, value: Any,
                     notes: list[Diagnostic]) -> Any:
    if target == "maml_version":
        return _version(doc, key, value, notes)
    if target == "created_at":
        return _timestamp(doc, key, value, notes)
    if target == "requires":
        return _requires(doc, key, value, notes)
    if target == "permissions":
        return _permissions(doc, key, value, notes)
    if target == "encryption" and isinstance(value, str):
        what = ("'2048-AES' is not a cipher; " if _NO_CIPHER.search(value) else "")
        notes.append(diagnostic("MAML-D405", f"encryption {value!r} is recorded as a label: "
                                f"{what}maml neither encrypts nor decrypts anything because of it",
                                doc.span_of(key)))
    return json_view(value)


def _version(doc: Document, key: str, value: Any, notes: list[Diagnostic]) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        written = _written_scalar(doc, key) or str(value)
        notes.append(diagnostic(
            "MAML-D402", f"{key}: {written} is a YAML number, read as the string {written!r}; "
            f"quote it ({key}: \"{written}\") so 1.10 does not become 1.1", doc.span_of(key)))
        return written
    return str(json_view(value))


def _written_scalar(doc: Document, key: str) -> str | None:
    """The value as written on the key's line (YAML turns 1.10 into 1.1)."""
    span = doc.key_spans.get((key,))
    if span is None:
        return None
    line = doc.source.split("\n", span.line)[span.line - 1] if span.line else ""
    match = re.match(rf"\s*{re.escape(key)}\s*:\s*([^\s#]+)", line)
    return match.group(1) if match else None


def _timestamp(doc: Document, key: str, value: Any, notes: list[Diagnostic]) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        text = json_view(value)
        notes.append(diagnostic("MAML-D404", f"{key}: YAML read an unquoted timestamp; it is "
                                f"kept as the ISO-8601 string {text!r}", doc.span_of(key)))
        return text
    return str(value)


def _requires(doc: Document, key: str, value: Any, notes: list[Diagnostic]) -> dict[str, Any]:
    value = json_view(value)
    if isinstance(value, dict):
        out = {k: v for k, v in value.items()}
        out["libs"] = _string_list(value.get("libs"))
        out["apis"] = _string_list(value.get("apis"))
        return out
    if isinstance(value, (list, str)):
        return {"libs": _string_list(value), "apis": []}
    notes.append(diagnostic("MAML-D406", f"requires: {value!r} is neither a list nor "
                            "{libs: [...], apis: [...]}; ignored", doc.span_of(key)))
    return {"libs": [], "apis": []}


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


def _permissions(doc: Document, key: str, value: Any,
                 notes: list[Diagnostic]) -> dict[str, Any]:
    out: dict[str, Any] = {"read": None, "write": None, "execute": None}
    value = json_view(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        # `permissions: [read, execute]`: the rights named are granted to everyone
        for right in value:
            if right in out:
                out[right] = True
        return out
    if not isinstance(value, dict):
        return out       # unreadable permissions are MAML-V320 errors and refuse the run
    for right, principals in value.items():
        if isinstance(principals, bool) or principals is None:
            out[right] = principals
        elif isinstance(principals, (str, int, float)):
            out[right] = [str(principals)]
        elif isinstance(principals, list):
            out[right] = [str(p) for p in principals]
    return out
