"""References to artifacts: their shape in JSON, where their files live, the errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maml.errors import InvalidInput

ARTIFACT_DIR = "artifacts"
REF_KEY = "$artifact"
#: the JSON part of one output, in bytes; MAML_MAX_JSON_OUTPUT overrides
DEFAULT_MAX_JSON = 16 * 1024 * 1024
_SHA = re.compile(r"[0-9a-f]{64}")


class OutputError(TypeError):
    """The step's output cannot be stored (classified user_error: the step's own doing)."""


class ArtifactError(InvalidInput):
    """A referenced artifact is missing, truncated or altered (invalid_input: never retried;
    `--resume` re-runs its producer instead)."""

    def __init__(self, message: str, sha256: str = "", producer: str | None = None) -> None:
        super().__init__(message)
        self.sha256, self.producer = sha256, producer


def max_json_bytes() -> int:
    try:
        return int(os.environ.get("MAML_MAX_JSON_OUTPUT", DEFAULT_MAX_JSON))
    except ValueError:
        return DEFAULT_MAX_JSON


def is_ref(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get(REF_KEY), str)
            and _SHA.fullmatch(value[REF_KEY]) is not None)


def refs_in(value: Any) -> Iterator[dict[str, Any]]:
    """Every `$artifact` reference inside a JSON value, depth first."""
    if is_ref(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from refs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs_in(item)


def artifact_path(run_dir: str | os.PathLike[str], sha256: str) -> Path:
    """Where the artifact `sha256` lives; the reference's own `path` is never trusted (it
    could name any file), only its hash."""
    if not _SHA.fullmatch(sha256):
        raise ArtifactError(f"{sha256!r} is not an artifact id (64 hex digits)", sha256)
    return Path(run_dir) / ARTIFACT_DIR / f"{sha256}.npy"
