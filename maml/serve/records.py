"""Durable run records: what the service accepted, in what order, and how each run ended.

Under the state dir (`.maml/` by default):

    serve/accepted/<run_id>.json       the accepted request (document text, params, inject,
                                       input, principal, seq); written with fsync before the
                                       caller gets its run id, so an accepted run is never lost
    serve/runs/<run_id>/final.json     how it ended: the `maml run --json` object and times
    serve/runs/<run_id>/events.jsonl   its events, appended as they happen (a view for the
                                       dashboard; the signed error graph is the record)
    serve/lock                         flock held by the one process that runs the queue

The run's own store (`runs/<run_id>/`: committed steps, checkpoints, logs) is created at
acceptance too, so the first execution and a resume after a crash are the same call:
`maml.run(..., resume=run_id)` skips every step already committed.

Acceptance is what a submission waits for, so it costs two syncs and no more: the request
file and the `accepted/` directory that already exists (a file in a new directory would
need a third, of the directory above; each is a journal commit, ~2 ms here). The request
is created in place (O_EXCL|O_NOFOLLOW under its unique name, no rename): a crash mid-write
leaves a file that is not JSON, read as "never accepted", which is what the caller saw (it
got no run id). The run store's manifest and a posted document's file are written without
fsync; `recover()` writes them again from the request when a crash lost them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maml import canonical
from maml._files import fsync_dir, write_atomic, write_synced
from maml.errors import UsageError
from maml.runtime.checkpoint import RunStore, atomic_write_json, read_json

#: event files kept open (runs in flight append several events a second)
OPEN_EVENT_FILES = 64


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
        (self.root / "accepted").mkdir(parents=True, exist_ok=True)
        (self.root / "documents").mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = None
        self._event_files: dict[str, Any] = {}      # run id -> open events.jsonl, LRU order
        self._events_lock = threading.Lock()

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
        self.close_events()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def store_document(self, text: str) -> str:
        """Keep a submitted text as a file (content-addressed), so errors name a real file."""
        path = self._document_path(text)
        if not path.exists():
            write_atomic(path, text.encode("utf-8"), durable=False)   # recover() redoes it
        return str(path)

    def _document_path(self, text: str) -> Path:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self.root / "documents" / f"{digest[:32]}.maml.md"

    def accept(self, request: RunRequest) -> RunRequest:
        """`create` then `persist`: the request is durable when this returns."""
        self.create(request)
        self.persist(request)
        return request

    def create(self, request: RunRequest) -> RunRequest:
        """Give the request its run id and make the run's store and record directory, all
        unsynced (see the module docstring); returns it. UsageError if params or input are
        not JSON data. The run is not accepted until `persist` returns."""
        try:
            canonical.dumps({"params": request.params, "input": request.input})
        except ValueError as exc:        # NaN, Infinity: what the HTTP layer's parser allows
            raise UsageError(f"the request's params or input: {exc}") from None
        digest = hashlib.sha256(request.document.encode("utf-8")).hexdigest()
        store = RunStore.create(self.state_dir, os.path.abspath(request.path), digest,
                                durable=False)
        request.run_id = store.run_id
        self.dir(store.run_id).mkdir()
        return request

    def persist(self, request: RunRequest) -> None:
        """Write the request durably: from now on a restart resumes the run."""
        write_synced(self._request_path(request.run_id), canonical.dumps(request.to_json()))
        fsync_dir(self.root / "accepted")

    def withdraw(self, run_id: str) -> None:
        """Remove what `create` made for a request that was never persisted."""
        self.close_events(run_id)
        self._request_path(run_id).unlink(missing_ok=True)
        for directory in (self.dir(run_id), self.state_dir / "runs" / run_id):
            shutil.rmtree(directory, ignore_errors=True)

    def _request_path(self, run_id: str) -> Path:
        return self.root / "accepted" / f"{run_id}.json"

    def recover(self, request: RunRequest) -> None:
        """After a restart: write again what acceptance left unsynced and a crash lost (the
        run store's manifest, a posted document's file)."""
        self.dir(request.run_id).mkdir(exist_ok=True)
        if request.path == str(self._document_path(request.document)):
            self.store_document(request.document)
        store = RunStore(self.state_dir, request.run_id)
        if store.manifest() is None:
            digest = hashlib.sha256(request.document.encode("utf-8")).hexdigest()
            store.write_manifest(os.path.abspath(request.path), digest)

    def finish(self, run_id: str, final: dict[str, Any]) -> None:
        atomic_write_json(self.dir(run_id) / "final.json", final)
        fsync_dir(self.root / "runs")       # the run's directory itself was made unsynced

    def final(self, run_id: str) -> dict[str, Any] | None:
        return read_json(self.dir(run_id) / "final.json")

    def requests(self) -> Iterator[RunRequest]:
        """Every accepted request, in submission order."""
        found = []
        for path in (self.root / "accepted").glob("*.json"):
            data = read_json(path)
            if isinstance(data, dict):
                found.append(RunRequest(**data))
        return iter(sorted(found, key=lambda r: r.seq))

    def append_event(self, run_id: str, event: dict[str, Any]) -> None:
        """Append one event line (unsynced: the log is a view, the graph is the record).
        The files of the latest runs stay open."""
        line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
        with self._events_lock:
            handle = self._event_files.pop(run_id, None)
            if handle is None:
                handle = open(self.dir(run_id) / "events.jsonl", "a", encoding="utf-8")
                if len(self._event_files) >= OPEN_EVENT_FILES:
                    self._event_files.pop(next(iter(self._event_files))).close()
            self._event_files[run_id] = handle           # now the most recently used
            handle.write(line)
            handle.flush()

    def close_events(self, run_id: str | None = None) -> None:
        """Close a run's event file (all of them when run_id is None)."""
        with self._events_lock:
            for key in list(self._event_files) if run_id is None else [run_id]:
                handle = self._event_files.pop(key, None)
                if handle is not None:
                    handle.close()

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
