"""Step checkpoints, cache keys and run ids (the run store itself is maml.runtime.store).

Every file here is written atomically (temp file in the same directory, fsync, os.replace,
fsync of the directory), so a run killed with SIGKILL at any moment leaves each file either
whole or absent, never torn. A file that fails its own hash check is treated as absent.

A step's cache key is sha256 over (kind, block body, resolved params, input digests): a
resumed run reuses a committed output only when all four are unchanged. All hashing goes
through maml's one canonical-JSON encoder, `maml.canonical`.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from maml import canonical
from maml._files import write_atomic
from maml.runtime.store import RunStore, safe_name

__all__ = ["RunStore", "atomic_write_json", "cache_key", "latest_run", "load_step_state",
           "new_run_id", "read_json", "safe_name", "save_step_state", "sha256_of"]


def sha256_of(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (free-form: NaN becomes "nan", see
    maml.canonical.normalise), so hashing a param or an --input never fails."""
    return canonical.sha256_of(canonical.normalise(value))


def cache_key(kind: str, body: str | None, params: dict[str, Any],
              input_digests: dict[str, str | None],
              files: dict[str, str] | None = None) -> str:
    """sha256 over what a step's result depends on: kind, code, params, its inputs' output
    digests and the content of the files it reads (maml.runtime.world)."""
    parts = {"kind": kind, "body": body or "", "params": params, "inputs": input_digests}
    if files:
        parts["files"] = files
    return sha256_of(parts)


def new_run_id() -> str:
    """Sortable by start time, unique: 20250101T120000.123456-3f9a1c."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now % 1 * 1e6):06d}-{secrets.token_hex(3)}"


def atomic_write_json(path: Path, value: Any, *, durable: bool = True) -> None:
    """Write `value` as canonical JSON to `path` so that a crash leaves the old file or the
    new one (durable=False: no fsync, see write_atomic). Raises
    maml.canonical.CanonicalError (a ValueError) for NaN or unknown types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, canonical.dumps(value), durable=durable)   # mkstemp: no planted temp


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_step_state(path: str, state: Any) -> tuple[str, int]:
    """ctx.checkpoint(state), run inside the worker: atomic write, returns (digest, size)."""
    data = canonical.dumps(state)
    digest = canonical.digest(data)
    atomic_write_json(Path(path), {"digest": digest, "state": state})
    return digest, len(data)


def load_step_state(path: str) -> Any | None:
    """ctx.restore(): the last checkpointed state, or None if there is none (or it is bad)."""
    record = read_json(Path(path))
    if not isinstance(record, dict) or "state" not in record:
        return None
    try:
        return record["state"] if canonical.sha256_of(record["state"]) == record.get("digest") \
            else None
    except ValueError:
        return None


def latest_run(state_dir: str | os.PathLike[str], document: str | None) -> str | None:
    """The newest run id of `document` (an absolute path) under the state dir, or None."""
    runs = Path(state_dir) / "runs"
    if not runs.is_dir():
        return None
    for run_dir in sorted(runs.iterdir(), key=lambda p: p.name, reverse=True):
        manifest = read_json(run_dir / "manifest.json")
        if isinstance(manifest, dict) and manifest.get("document") == document:
            return run_dir.name
    return None
