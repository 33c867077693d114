"""Durable run records: what the service accepted, in what order, and how each run ended.

Under the state dir (`.maml/` by default):

    serve/runs/<run_id>/request.json   the accepted request (document text, params, inject,
                                       input, principal, seq); written with fsync before the
                                       caller gets its run id, so an accepted run is never lost
    serve/runs/<run_id>/final.json     how it ended: the `maml run --json` object and times
    serve/runs/<run_id>/events.jsonl   its events, appended as they happen (a view for the
                                       dashboard; the signed error graph is the record)
    serve/lock                         flock held by the one process that runs the queue

The run's own store (`runs/<run_id>/`: committed steps, checkpoints, logs) is created at
acceptance too, so the first execution and a resume after a crash are the same call:
`maml.run(..., resume=run_id)` skips every step already committed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maml.errors import UsageError
from maml.runtime.checkpoint import RunStore, atomic_write_json, read_json


@dataclass
class RunRequest:
    """One accepted run. `path` is where `document` came from: errors name it, and the
    document's relative files resolve against its directory."""

    run_id: str
    seq: int
    document: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    inject: list[str] = field(default_factory=list)
    input: Any = None
    require_signed: bool = False
    principal: str | None = None
    submitted_at: float = 0.0
    #: the client's key for this submission: a retried POST gets the same run
    idempotency_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Records:
    """The service's run records under `state_dir`; `lock()` before running any of them."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.root = self.state_dir / "serve"
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        (self.root / "documents").mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Become the one process that runs this state dir's queue, or raise UsageError."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(f"another `maml serve` or `maml mcp` runs the queue of "
                             f"{self.state_dir}; use it, or give this one --state-dir") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def store_document(self, text: str) -> str:
        """Keep a submitted text as a file (content-addressed), so errors name a real file."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        path = self.root / "documents" / f"{digest[:32]}.maml.md"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        return str(path)

    def accept(self, request: RunRequest) -> RunRequest:
        """Create the run's store and write the request durably; returns it with its run id."""
        digest = hashlib.sha256(request.document.encode("utf-8")).hexdigest()
        store = RunStore.create(self.state_dir, os.path.abspath(request.path), digest)
        request.run_id = store.run_id
        atomic_write_json(self.dir(store.run_id) / "request.json", request.to_json())
        return request

    def finish(self, run_id: str, final: dict[str, Any]) -> None:
        atomic_write_json(self.dir(run_id) / "final.json", final)

    def final(self, run_id: str) -> dict[str, Any] | None:
        return read_json(self.dir(run_id) / "final.json")

    def requests(self) -> Iterator[RunRequest]:
        """Every accepted request, in submission order."""
        found = []
        for run_dir in (self.root / "runs").iterdir():
            data = read_json(run_dir / "request.json")
            if isinstance(data, dict):
                found.append(RunRequest(**data))
        return iter(sorted(found, key=lambda r: r.seq))

    def append_event(self, run_id: str, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
        with open(self.dir(run_id) / "events.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        """The run's logged events; a torn last line (a crash mid-write) is left out."""
        try:
            lines = (self.dir(run_id) / "events.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def next_seq(records: Records) -> int:
    """Submission order that survives restarts: one past the highest seq on disk, with the
    clock as a floor so an emptied state dir still orders after its past."""
    highest = max((r.seq for r in records.requests()), default=0)
    return max(highest + 1, int(time.time() * 1000))
