"""The caller's trust settings for a run: signatures required? which extra roots may paths use?

Read from, in order (later ones can only tighten what earlier ones allow):

    <config dir>/config.toml     the user's: require_signed = true, allow_paths = ["/data"]
    maml.toml                    the project's, in the document's directory or the nearest
                                 parent: only `require_signed = true` is honoured (a project
                                 may demand signatures; it may not widen where paths go,
                                 since whoever can write the project can write the document)
    the command line             maml run --require-signed / --allow-path DIR

The command line reaches the run through `overrides()`, a context variable the `maml run`
command sets for the duration of the run, so the runtime's signature stays what the Python
API documents: an embedding program sets the same thing with `with overrides(...):`.
"""

from __future__ import annotations

import contextlib
import contextvars
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from maml.errors import UsageError
from maml.graph.keys import config_dir

PROJECT_FILE = "maml.toml"
USER_FILE = "config.toml"


@dataclass(frozen=True)
class TrustSettings:
    require_signed: bool = False
    allow_paths: tuple[str, ...] = ()
    append_history: bool = False
    resign: bool = False
    sources: tuple[str, ...] = field(default=(), compare=False)   # files that set something


_OVERRIDES: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "maml_trust_overrides", default={})


@contextlib.contextmanager
def overrides(**values: Any) -> Iterator[None]:
    """Settings from the caller (the command line) for the runs started inside the block."""
    token = _OVERRIDES.set({k: v for k, v in values.items() if v not in (None, False, ())})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read maml settings: {exc}") from None


def project_file(doc_dir: str | Path) -> Path | None:
    """The nearest maml.toml at or above the document's directory."""
    here = Path(doc_dir).resolve()
    for directory in (here, *here.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory / PROJECT_FILE
    return None


def load(doc_dir: str | Path | None = None) -> TrustSettings:
    """The effective settings for a document in `doc_dir` (see module doc)."""
    user_path = config_dir() / USER_FILE
    user = _read_toml(user_path)
    required = _bool(user, "require_signed", user_path)
    settings = TrustSettings(require_signed=required, allow_paths=_paths(user, user_path),
                             sources=(str(user_path),) if required else ())
    project = project_file(doc_dir) if doc_dir is not None else None
    if project is not None and _bool(_read_toml(project), "require_signed", project):
        settings = replace(settings, require_signed=True,
                           sources=settings.sources + (str(project),))
    extra = _OVERRIDES.get()
    if extra.get("require_signed"):
        settings = replace(settings, require_signed=True,
                           sources=settings.sources + ("--require-signed",))
    return replace(settings,
                   allow_paths=settings.allow_paths + tuple(map(str, extra.get("allow_paths", ()))),
                   append_history=bool(extra.get("append_history")),
                   resign=bool(extra.get("resign")))


def _bool(table: dict[str, Any], key: str, path: Path) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{path}: {key} must be true or false, not {value!r}")
    return value


def _paths(table: dict[str, Any], path: Path) -> tuple[str, ...]:
    value = table.get("allow_paths", [])
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise UsageError(f"{path}: allow_paths must be a list of directories")
    return tuple(value)
