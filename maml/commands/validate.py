"""`maml validate FILE... [--json] [--strict]`: diagnostics with file:line:col.

Text mode prints one `file:line:col: severity code message` line per diagnostic on stdout
and a one-line summary on stderr; `--json` prints one object (DESIGN §9):
`{"documents": [{"path", "valid", "diagnostics": [{"code", "severity", "message", "line",
"column"}]}]}` (plus "step" on a diagnostic about a step). Exit 0 when no document has an
error (warnings are fine unless --strict), 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from maml.errors import UsageError


def _expand(files: tuple[str, ...]) -> list[str]:
    """The files to validate; a directory stands for the *.maml.md files under it."""
    paths: list[str] = []
    for name in files:
        path = Path(name)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*.maml.md"))
            if not found:
                raise UsageError(f"{name}: a directory with no *.maml.md files in it")
            paths.extend(found)
        elif path.is_file():
            paths.append(name)
        elif not path.exists():
            raise UsageError(f"{name}: no such file")
        else:
            raise UsageError(f"{name}: not a regular file")
    return paths


def _read(path: str):
    from maml.document.parser import parse_file

    try:
        return parse_file(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def _summary(results: list[tuple[str, bool, list]], strict: bool) -> str:
    counts = {"error": 0, "warning": 0, "info": 0}
    for _, _, diagnostics in results:
        for d in diagnostics:
            counts[d.severity] += 1
    bad = sum(1 for _, valid, _ in results if not valid)
    plural = "s" if len(results) != 1 else ""
    verdict = f"{bad} invalid" if bad else "all valid"
    return (f"maml validate: {len(results)} document{plural}, {verdict}: {counts['error']} "
            f"errors, {counts['warning']} warnings, {counts['info']} info"
            + (" (--strict: warnings count as errors)" if strict else ""))


@click.command("validate")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--strict", is_flag=True, help="Count warnings as errors.")
def command(files: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Check documents: parse, schemas, pipeline graph, vocabulary, permissions."""
    from maml.document.validate import validate

    failing = {"error", "warning"} if strict else {"error"}
    results = []
    for path in _expand(files):
        diagnostics = validate(_read(path))
        valid = not any(d.severity in failing for d in diagnostics)
        results.append((path, valid, diagnostics))
    if as_json:
        payload = {"documents": [{"path": path, "valid": valid,
                                  "diagnostics": [d.to_dict() for d in diagnostics]}
                                 for path, valid, diagnostics in results]}
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        for _, _, diagnostics in results:
            for d in diagnostics:
                click.echo(d.format())
        click.echo(_summary(results, strict), err=True)
    if not all(valid for _, valid, _ in results):
        raise SystemExit(1)

