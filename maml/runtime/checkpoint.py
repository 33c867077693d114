"""Run state on disk: committed step outputs, step checkpoints, resume (DESIGN §4).

Layout under the state dir (`.maml/` in the current directory by default):

    runs/<run_id>/manifest.json       the run: document path and digest, when it started
    runs/<run_id>/steps/<step>.json   a finished step: cache key, output, sha256 of the output
    runs/<run_id>/state/<step>.json   the latest ctx.checkpoint(state) of a running step

Every file is written atomically (temp file in the same directory, fsync, os.replace, fsync
of the directory), so a run killed with SIGKILL at any moment leaves each file either whole
or absent, never torn: the run dir is always readable, and a step whose file exists is
committed. A file that fails its own hash check is treated as absent (the step runs again).

A step's cache key is sha256 over (kind, block body, resolved params, input digests): a
resumed run reuses a committed output only when all four are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from maml._files import write_atomic

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces; hashes are taken over it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def sha256_of(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def cache_key(kind: str, body: str | None, params: dict[str, Any],
              input_digests: dict[str, str | None]) -> str:
    return sha256_of({"kind": kind, "body": body or "", "params": params,
                      "inputs": input_digests})


def new_run_id() -> str:
    """Sortable by start time, unique: 20250101T120000.123456-3f9a1c."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now % 1 * 1e6):06d}-{secrets.token_hex(3)}"


def atomic_write_json(path: Path, value: Any) -> None:
    """Write `value` as JSON to `path` so that a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, canonical_json(value).encode("utf-8"))   # mkstemp: no planted temp


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def safe_name(step_id: str) -> str:
    return _SAFE_NAME.sub("_", step_id)


class RunStore:
    """The files of one run. Created by `RunStore.create` or `RunStore.open` (resume)."""

    def __init__(self, state_dir: str | os.PathLike[str], run_id: str) -> None:
        self.state_dir = Path(state_dir)
        self.run_id = run_id
        self.run_dir = self.state_dir / "runs" / run_id

    @classmethod
    def create(cls, state_dir: str | os.PathLike[str], document: str | None,
               document_digest: str) -> RunStore:
        store = cls(state_dir, new_run_id())
        while store.run_dir.exists():  # same second and same random suffix: pick again
            store = cls(state_dir, new_run_id())
        store.write_manifest(document, document_digest)
        return store

    def write_manifest(self, document: str | None, document_digest: str) -> None:
        (self.run_dir / "steps").mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "manifest.json", {
            "run_id": self.run_id, "document": document, "document_digest": document_digest,
            "created_at": time.time()})

    def manifest(self) -> dict[str, Any] | None:
        return read_json(self.run_dir / "manifest.json")

    # -- committed step outputs --------------------------------------------------------

    def step_path(self, step_id: str) -> Path:
        return self.run_dir / "steps" / f"{safe_name(step_id)}.json"

    def commit_step(self, step_id: str, key: str, output: Any, attempts: int,
                    params: dict[str, Any], device: str) -> str:
        """Store a finished step's output durably; returns its sha256 digest."""
        digest = sha256_of(output)
        atomic_write_json(self.step_path(step_id), {
            "step": step_id, "key": key, "output": output, "digest": digest,
            "attempts": attempts, "params": params, "device": device})
        return digest

    def committed(self, step_id: str) -> dict[str, Any] | None:
        """A committed step record whose output still matches its digest, else None."""
        record = read_json(self.step_path(step_id))
        if not isinstance(record, dict) or "digest" not in record:
            return None
        try:
            if sha256_of(record.get("output")) != record["digest"]:
                return None
        except ValueError:
            return None
        return record

    # -- ctx.checkpoint / ctx.restore -------------------------------------------------

    def state_path(self, step_id: str) -> Path:
        return self.run_dir / "state" / f"{safe_name(step_id)}.json"


def save_step_state(path: str, state: Any) -> tuple[str, int]:
    """ctx.checkpoint(state), run inside the worker: atomic write, returns (digest, size)."""
    digest = sha256_of(state)
    atomic_write_json(Path(path), {"digest": digest, "state": state})
    return digest, len(canonical_json(state))


def load_step_state(path: str) -> Any | None:
    """ctx.restore(): the last checkpointed state, or None if there is none (or it is bad)."""
    record = read_json(Path(path))
    if not isinstance(record, dict) or "state" not in record:
        return None
    try:
        return record["state"] if sha256_of(record["state"]) == record.get("digest") else None
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
