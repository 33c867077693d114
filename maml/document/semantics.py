"""Checks of the front matter beyond the steps (maml/document/steps.py reads those) and
beyond what a JSON Schema can say: faults that name no step, template placeholders.

Each check yields `(yaml_path, Diagnostic)`: the path says which front-matter node the
finding is about, so validate() can drop a vaguer schema error about the same node.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from maml.document.codes import diagnostic, did_you_mean
from maml.document.model import Document
from maml.document.steps import Finding
from maml.vocabulary import INJECTABLE_ERRORS

_PLACEHOLDER = re.compile(r"\[YOUR[_ A-Z0-9-]*\]|\{\{[^{}]*\}\}|%\{[^{}]*\}|<(?:YOUR|INSERT)"
                          r"[_ A-Z0-9-]*>|\bREPLACE[_-]?ME\b", re.IGNORECASE)


def check_faults(doc: Document, ids: set[str]) -> Iterator[Finding]:
    faults = doc.meta.get("faults")
    for index, fault in enumerate(faults if isinstance(faults, list) else []):
        if isinstance(fault, str):
            step, _, rest = fault.partition(":")
            error = rest.partition("@")[0]
        elif isinstance(fault, dict):
            step, error = str(fault.get("step", "")), str(fault.get("error", ""))
        else:
            continue
        step, error = step.strip(), error.strip()
        path = ("faults", index)
        if ids and step not in ids:
            yield (path, diagnostic("MAML-V314", f"fault {fault!r}: there is no step {step!r}"
                                    f"{did_you_mean(step, sorted(ids))}", doc.span_of(*path)))
        if error and error not in INJECTABLE_ERRORS:
            yield (path, diagnostic("MAML-V314", f"fault {fault!r}: {error!r} cannot be "
                                    f"injected{did_you_mean(error, INJECTABLE_ERRORS)}",
                                    doc.span_of(*path)))


def check_placeholders(doc: Document, value: Any = None,
                       path: tuple[Any, ...] = ()) -> Iterator[Finding]:
    """Template placeholders left in front-matter values: [YOUR_UUID], {{x}}, %{x}."""
    if not path:
        span = doc.front_matter_span
        text = "\n".join(doc.source.split("\n")[:span.end_line]) if span and span.end_line \
            else doc.source
        if not _PLACEHOLDER.search(text):   # one regex pass instead of a walk of every value
            return
        value = doc.front_matter
    if isinstance(value, dict):
        for key, item in value.items():
            yield from check_placeholders(doc, item, path + (str(key),))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from check_placeholders(doc, item, path + (index,))
    elif isinstance(value, str) and (match := _PLACEHOLDER.search(value)):
        yield (path, diagnostic(
            "MAML-V312", f"{'.'.join(map(str, path))}: {match.group()!r} is a template "
            f"placeholder that was never filled in; replace it with a real value",
            doc.span_of(*path)))


_DURATIONS = frozenset({"timeout", "heartbeat_timeout", "initial", "max", "cooldown",
                        "breaker_cooldown", "backoff"})


def check_base60(doc: Document) -> Iterator[Finding]:
    """`timeout: 1:30` is the YAML 1.1 base-60 number 90: say how it was read."""
    for path, written in doc.yaml_literals.items():
        if ":" not in written or not path:
            continue
        value = _value_at(doc.front_matter, path)
        where = ".".join(map(str, path))
        unit = (f"; as a duration that is {value} seconds: write '{value}s', or quote "
                f"it" if path[-1] in _DURATIONS else "; quote it if you meant the text")
        yield (path, diagnostic("MAML-D408", f"{where}: {written} was read by YAML 1.1 as the "
                                f"base-60 number {value}{unit}", doc.span_of(*path)))


def _value_at(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value
