"""What a submission must pass before the service accepts it: a readable source inside the
allowed roots, a document without error diagnostics, fault specs that parse, a signature
when one is required. Each refusal is the MamlError the HTTP layer turns into a 4xx."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from maml.errors import DocumentError, UsageError


def source(document: str | None, path: str | None, roots: list[Path],
           keep_text: Callable[[str], str]) -> tuple[str, str]:
    """(text, where it is): a posted text is kept as a file (errors then name a real file
    and line); a path must resolve, symlinks followed, inside one of `roots`."""
    if (document is None) == (path is None):
        raise UsageError("give exactly one of `document` (the text) and `path`")
    if document is not None:
        return document, keep_text(document)
    resolved = Path(path).resolve()   # type: ignore[arg-type]
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UsageError(f"{path}: outside the directories this server may read "
                         f"({', '.join(map(str, roots))}; see `maml serve --root`)")
    try:
        return resolved.read_text(encoding="utf-8"), str(resolved)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read: {exc}") from None


def checked(text: str, where: str, inject: list[str], require_signed: bool) -> Any:
    """The parsed document, or DocumentError (all error diagnostics), UsageError (a bad
    fault spec) or RefusedError (unsigned where a signature is required)."""
    import maml
    from maml.document.permissions import authorize_document
    from maml.graph import settings
    from maml.runtime.inject import build_fault_plan

    doc = maml.parse(text, path=where)
    errors = [d for d in maml.validate(doc) if d.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise DocumentError(f"{first.message} [{first.code}]{more}", diagnostics=errors,
                            path=where, line=first.line)
    try:
        build_fault_plan(inject, None)
    except ValueError as exc:
        raise UsageError(f"inject: {exc}") from None
    with settings.overrides(require_signed=require_signed):
        authorize_document(doc)
    return doc


def dag(doc: Any, params: dict[str, Any], device_classes: set[str]) -> list[dict[str, Any]]:
    """The steps and their edges, for the dashboard before the run starts."""
    from maml.runtime.plan import build_plan

    plan = build_plan(doc, overrides=params, device_classes=device_classes)
    return [{"id": s.id, "kind": s.kind, "needs": list(s.needs), "devices": list(s.devices),
             "line": s.line} for s in plan.steps.values()]


def replanned(text: str, path: str, params: dict[str, Any],
              device_classes: set[str]) -> list[dict[str, Any]] | None:
    """An accepted run's steps again (after a restart), or None if it no longer plans."""
    import maml
    from maml.errors import MamlError

    try:
        return dag(maml.parse(text, path=path), params, device_classes)
    except MamlError:
        return None


def validation(text: str, shown: str) -> dict[str, Any]:
    """`maml validate --json`'s object for one document's text, named `shown`."""
    import maml

    diagnostics = maml.validate(maml.parse(text, path=shown))
    valid = not any(d.severity == "error" for d in diagnostics)
    return {"documents": [{"path": shown, "valid": valid,
                           "diagnostics": [d.to_dict() for d in diagnostics]}]}
