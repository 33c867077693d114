"""The Python API: load, parse, validate, run. See DESIGN.md §1."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maml.document.model import Diagnostic, Document
    from maml.runtime.result import RunResult


def parse(text: str | bytes, path: str | None = None) -> Document:
    """Parse a document from text. Never raises on content: problems are in `.diagnostics`."""
    from maml.document.parser import parse as _parse

    return _parse(text, path=path)


def load(path: str | os.PathLike[str]) -> Document:
    """Read and parse a document file (I/O errors raise; content problems never do)."""
    from maml.document.parser import parse_file

    return parse_file(os.fspath(path))


def validate(doc: Document | str | os.PathLike[str]) -> list[Diagnostic]:
    """Every diagnostic for a document: parse problems, schema errors, semantic checks."""
    from maml.document.validate import validate as _validate

    if not hasattr(doc, "blocks"):
        doc = load(doc)  # type: ignore[arg-type]
    return _validate(doc)  # type: ignore[arg-type]


def run(doc: Document | str | os.PathLike[str], *, graph: str | os.PathLike[str] | bool | None = None,
        observers: Any = (), **options: Any) -> RunResult:
    """Run a document's pipeline; options as `maml.runtime.run_document` documents them.

    `graph`: where the error graph goes (None: the default, .maml/graph or $MAML_GRAPH;
    a path; False: record nothing). `observers`: extra runtime observers (progress, ...).
    """
    from maml.runtime.api import run_document

    if not hasattr(doc, "blocks"):
        doc = load(doc)  # type: ignore[arg-type]
    observers = list(observers)
    recorder = None
    if graph is not False:
        from maml.graph import Recorder

        recorder = Recorder(None if graph in (None, True) else graph)  # type: ignore[arg-type]
        observers.append(recorder)
    try:
        result = run_document(doc, observers=observers, **options)  # type: ignore[arg-type]
    finally:
        if recorder is not None:
            recorder.close()  # commits what is left; a run that never ended is marked interrupted
    if recorder is not None:
        result.graph = str(recorder.path)
    return result
