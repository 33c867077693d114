"""Paths a document names, confined to where the document may read and write.

A path in a step's params (a video `source` or `sink.path`, an llm `model` directory, a QASM
`include`) is resolved relative to the document's directory and must stay inside it, the run
directory, or a root the *caller* allowed (`maml run --allow-path DIR`, or `allow_paths` in
the user's config). Symlinks are resolved first, so a link inside the directory pointing out
of it is refused too. A document cannot widen this (a project's `maml.toml` may only
tighten: see maml.graph.settings).

    resolve("clip.mp4", param="source", doc_dir=d)          # d/clip.mp4, or PathRefused

Each path is checked twice. The run gate calls `check_plan()` before the first step starts,
so a refusal comes before any side effect, as exit 3 naming the step, the param and the path.
Kinds check again where they open a path, in the worker (`StepSpec.path()`, which calls
`resolve()` with the roots the scheduler hands each attempt), so a symlink re-pointed outside
after the gate (by an earlier step, or anyone else) is refused there too: PathRefused, error
class `permission`, never retried. What is opened is the resolved path (no symlink left in it
at the check); a swap in the instant between the check and the open is not caught.

A value is a path when it is absolute, starts with `~` or `.`, contains a path separator, or
names an existing entry in the document's directory; a bare word (`synthetic`, `camera:0`,
an installed model package's name) is a name, not a path.

Run ids are checked here too (`check_run_id`): an id is a file name maml made, never `..` or
a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from maml.errors import PermissionRefused

RUN_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}-[0-9a-f]{6}$")


class PathRefused(PermissionRefused):
    """A document's path falls outside the directories it may use: exit 3 before the run,
    error class `permission` (never retried) if a kind meets it inside a step."""

    code = "MAML-E508"


def looks_like_path(value: str, doc_dir: str | os.PathLike[str]) -> bool:
    """Whether a param value names a file rather than a source/model/package name."""
    if not value:
        return False
    if value.startswith(("~", ".", "/")) or "/" in value or os.sep in value:
        return True
    return os.path.lexists(os.path.join(doc_dir, value))


def roots(doc_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
          allowed: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The real directories a document's paths may fall in."""
    found = [Path(doc_dir).resolve()]
    if run_dir is not None:
        found.append(Path(run_dir).resolve())
    found.extend(Path(a).expanduser().resolve() for a in allowed)
    return found


def resolve(value: str | os.PathLike[str], *, param: str, doc_dir: str | os.PathLike[str],
            run_dir: str | os.PathLike[str] | None = None,
            allowed: Iterable[str | os.PathLike[str]] = (), step: str | None = None) -> Path:
    """`value` made absolute against `doc_dir`, symlinks resolved; PathRefused unless it lies
    inside the document's directory, the run directory or an allowed root."""
    raw = Path(os.fspath(value)).expanduser()
    target = (raw if raw.is_absolute() else Path(doc_dir) / raw).resolve()
    inside = roots(doc_dir, run_dir, allowed)
    if any(target == root or target.is_relative_to(root) for root in inside):
        return target
    raise PathRefused(
        f"{param}: {os.fspath(value)!r} resolves to {target}, outside the document's directory"
        f"{' and the run directory' if run_dir is not None else ''}; allow it with "
        f"`maml run --allow-path {target.parent}` (or allow_paths in your maml config)",
        step=step)


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def check_step(kind_cls: type, step_id: str, params: Mapping[str, Any], *,
               doc_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
               allowed: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Check the params a kind declares as paths (`Kind.path_params`, dotted names such as
    "sink.path"); the resolved paths, or PathRefused for the first one outside."""
    allowed = list(allowed)
    found = []
    for name in getattr(kind_cls, "path_params", ()):
        value = _lookup(params, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, (str, os.PathLike)) and looks_like_path(os.fspath(item), doc_dir):
                found.append(resolve(item, param=name, doc_dir=doc_dir, run_dir=run_dir,
                                     allowed=allowed, step=step_id))
    return found


def check_plan(steps: Iterable[Any], kind_of: Any, *, doc_dir: str | os.PathLike[str],
               allowed: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Every planned step's declared path params, before the run starts (PathRefused)."""
    allowed = list(allowed)
    for step in steps:
        check_step(kind_of(step.kind), step.id, step.params, doc_dir=doc_dir, allowed=allowed)


def check_run_id(run_id: str) -> str:
    """`run_id` if it has the form maml gives run ids; ValueError naming it otherwise."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"{run_id!r} is not a maml run id (like 20260101T120000.123456-3f9a1c)")
    return run_id
