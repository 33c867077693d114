"""The run store: one run's committed step outputs, durable, off the scheduler's critical path.

Layout under the state dir (`.maml/` in the current directory by default):

    runs/<run_id>/manifest.json         the run: document path and digest, when it started
    runs/<run_id>/steps.log             committed steps, one canonical-JSON line each
    runs/<run_id>/artifacts/<sha>.npy   arrays of step outputs (maml.runtime.artifacts)
    runs/<run_id>/state/<step>.json     the latest ctx.checkpoint(state) of a running step
    runs/<run_id>/lock                  flock'ed by the process running the run; holds its pid

A commit is a line `{"record": {...}, "sha256": <of the record>}` appended to steps.log.
With the background writer started (`start_writer`), `commit_step` only queues the line;
the writer takes everything queued since its last round, fsyncs the artifacts those records
reference, appends the lines in one write and fsyncs the log once: one fsync per scheduler
turn however many steps finished in it, and never a reference to an artifact that is not on
disk. The scheduler may start a dependent step at once (it has the output in memory) but
announces a step committed only once `take_durable()` has returned it. A crash loses at most
the lines not yet fsynced: those steps run again on `--resume`. A torn last line (or any
line failing its hash) is ignored, so the log is always readable. Without the writer,
`commit_step` writes and fsyncs inline (tools and tests).

A step's cache key (`maml.runtime.checkpoint.cache_key`) is compared on `--resume`; a
committed record is reused only if every artifact it references is still there with its
hash (re-read in full: a file may change while no run watches it).
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from maml import canonical
from maml._files import fsync_dir, write_all
from maml.errors import MamlError, UsageError
from maml.runtime import artifacts

RUN_ID = re.compile(r"\d{8}T\d{6}\.\d{6}-[0-9a-f]{6}")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
LOG_NAME = "steps.log"


class StoreError(MamlError):
    """The run store could not be written (disk full, read-only): names the path."""


def safe_name(step_id: str) -> str:
    return _SAFE_NAME.sub("_", step_id)


class RunStore:
    """The files of one run: `RunStore.create` (a new run) or `RunStore.open` (resume)."""

    def __init__(self, state_dir: str | os.PathLike[str], run_id: str) -> None:
        self.state_dir = Path(state_dir)
        self.run_id = run_id
        self.run_dir = self.state_dir / "runs" / run_id
        self.run_dir_str = str(self.run_dir)           # what crosses to workers, per attempt
        self.log_path = self.run_dir / LOG_NAME
        self._records: dict[str, dict[str, Any]] | None = None
        self._verified: dict[str, str | None] = {}     # sha -> problem (None: intact)
        self.stale: dict[str, str] = {}                # step -> why its record is not reused
        self._writer: _Writer | None = None
        self._lock_fd: int | None = None

    # -- the run ------------------------------------------------------------------------

    @classmethod
    def create(cls, state_dir: str | os.PathLike[str], document: str | None,
               document_digest: str, *, durable: bool = True) -> RunStore:
        """A new run. durable=False: the manifest is not fsynced (`maml serve` makes its own
        record of the run durable and writes the manifest again if a crash lost it)."""
        from maml.runtime.checkpoint import new_run_id

        store = cls(state_dir, new_run_id())
        while store.run_dir.exists():  # same microsecond and same random suffix: pick again
            store = cls(state_dir, new_run_id())
        store.write_manifest(document, document_digest, durable=durable)
        return store

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], run_id: str,
             document: str | None) -> RunStore:
        """The run `run_id` to resume; UsageError (exit 2) if it is not a maml run id, does
        not exist, or is a run of another document."""
        if not RUN_ID.fullmatch(run_id):
            raise UsageError(f"--resume {run_id!r}: not a run id (like "
                             "20250101T120000.123456-3f9a1c; `maml runs list` shows them)")
        store = cls(state_dir, run_id)
        manifest = store.manifest()
        if manifest is None:
            raise UsageError(f"--resume {run_id}: no such run under {store.state_dir}/runs")
        if manifest.get("document") != document:
            raise UsageError(f"--resume {run_id}: that run is of {manifest.get('document')}, "
                             f"not {document}; resume it with that document or start a new run")
        return store

    def write_manifest(self, document: str | None, document_digest: str, *,
                       durable: bool = True) -> None:
        from maml.runtime.checkpoint import atomic_write_json

        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "manifest.json", {
            "run_id": self.run_id, "document": document, "document_digest": document_digest,
            "created_at": time.time()}, durable=durable)

    def write_ending(self, status: str, duration: float, steps: dict[str, int]) -> None:
        """How the run (or its latest resume) ended: status (DESIGN §9's run statuses),
        duration in seconds, {step status: count}. Not fsynced: a power cut may lose it, and
        the run then reads as unfinished, which a resume settles."""
        from maml.runtime.checkpoint import atomic_write_json

        try:
            atomic_write_json(self.run_dir / "ending.json", {
                "status": status, "finished_at": time.time(), "duration": round(duration, 3),
                "steps": steps}, durable=False)
        except OSError:     # a full disk or a removed run dir must not fail a finished run
            pass

    def ending(self) -> dict[str, Any] | None:
        return self._read_object("ending.json")

    def status(self, *, active: bool) -> str:
        """running (a live process holds the run's lock), else how it last ended, else
        unfinished (killed before it could say: `maml run DOC --resume RUN` goes on)."""
        if active:
            return "running"
        ending = self.ending()
        return str(ending.get("status")) if ending else "unfinished"

    def manifest(self) -> dict[str, Any] | None:
        return self._read_object("manifest.json")

    def _read_object(self, name: str) -> dict[str, Any] | None:
        """The JSON object in the run dir's file `name`; None if missing, unreadable or
        not an object."""
        from maml.runtime.checkpoint import read_json

        value = read_json(self.run_dir / name)
        return value if isinstance(value, dict) else None

    def lock(self) -> None:
        """Hold the run's lock for the life of this process (or `close`); UsageError naming
        the holder's pid if another process holds it."""
        fd = os.open(self.run_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise UsageError(f"run {self.run_id} is being resumed by pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def clean_temp(self) -> int:
        """Remove temp files a killed process left in the run dir; how many went."""
        count = 0
        for path in self.run_dir.rglob(".*tmp*"):
            if path.is_file():
                path.unlink(missing_ok=True)
                count += 1
        return count

    # -- commits ------------------------------------------------------------------------

    def commit_step(self, step_id: str, key: str, output: Any, attempts: int,
                    params: dict[str, Any], device: str,
                    refs: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (), *,
                    written: dict[str, str] | None = None) -> str:
        """Commit a finished step's output (with its `$artifact` references and the sha256
        of the files it `written`); returns the output's sha256. Queued when the writer
        runs (see `take_durable`), else durable on return. StoreError if it cannot write."""
        digest = canonical.sha256_of(output)
        record = {"step": step_id, "key": key, "output": output, "digest": digest,
                  "attempts": attempts, "params": canonical.normalise(params),
                  "device": device, "written": written or {}}
        line = canonical.dumps({"record": record, "sha256": canonical.sha256_of(record)})
        refs = list(refs) or list(artifacts.refs_in(output))
        if self._records is not None:
            self._records[step_id] = record
        if self._writer is not None:
            self._writer.submit(step_id, line + b"\n", refs)
        else:
            _append(self, [line + b"\n"], refs)
        return digest

    def committed(self, step_id: str, *, verify: bool = True) -> dict[str, Any] | None:
        """The step's latest committed record, or None if there is none or (with `verify`)
        an artifact it references is missing or altered (`stale[step_id]` says which)."""
        record = self._index().get(step_id)
        if record is None or not verify:
            return record
        for ref in artifacts.refs_in(record.get("output")):
            problem = self._check_artifact(ref, step_id)
            if problem:
                self.stale[step_id] = problem
                return None
        return record

    def _check_artifact(self, ref: dict[str, Any], producer: str) -> str | None:
        sha = ref[artifacts.REF_KEY]
        if sha not in self._verified:
            try:
                artifacts.check(ref, self.run_dir, full=True, producer=producer)
                self._verified[sha] = None
            except artifacts.ArtifactError as exc:
                self._verified[sha] = str(exc)
        return self._verified[sha]

    def _index(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            self._records = read_log(self.log_path)
        return self._records

    # -- the background writer ----------------------------------------------------------

    def start_writer(self) -> None:
        """Commit in the background from now on (see the module docstring)."""
        if self._writer is None:
            self._writer = _Writer(self)
            self._writer.start()

    def take_durable(self) -> list[str]:
        """Step ids whose commits reached the disk since the last call, in commit order.
        Raises StoreError if the writer failed."""
        return self._writer.take() if self._writer is not None else []

    def flush(self) -> list[str]:
        """Wait until every queued commit is durable; then as `take_durable`."""
        return self._writer.flush() if self._writer is not None else []

    def close(self) -> None:
        """Flush and stop the writer; release the lock."""
        if self._writer is not None:
            try:
                self._writer.flush()
            finally:
                self._writer.stop()
                self._writer = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- ctx.checkpoint / ctx.restore -----------------------------------------------------

    def state_path(self, step_id: str) -> str:
        """Where the step's ctx.checkpoint(state) goes (a str: it is sent with every attempt,
        and pathlib would cost more than the rest of the scheduler's work for a no-op step)."""
        return os.path.join(self.run_dir_str, "state", f"{safe_name(step_id)}.json")


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """step id -> its latest record whose hash checks; torn or altered lines are skipped."""
    import json

    records: dict[str, dict[str, Any]] = {}
    try:
        data = path.read_bytes()
    except OSError:
        return records
    for line in data.splitlines():
        try:
            entry = json.loads(line)
            record = entry["record"]
            if canonical.sha256_of(record) == entry["sha256"] \
                    and canonical.sha256_of(record["output"]) == record["digest"]:
                records[record["step"]] = record
        except (ValueError, TypeError, KeyError):
            continue
    return records


def _append(store: RunStore, lines: list[bytes], refs: list[dict[str, Any]]) -> None:
    """Make `refs` durable, then append `lines` to the log and fsync it once."""
    path = store.log_path
    try:
        if refs:
            artifacts.sync(store.run_dir, refs)
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            write_all(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        if new or refs:     # the log's (and artifacts/'s) directory entries
            fsync_dir(store.run_dir)
    except OSError as exc:
        raise StoreError(f"cannot commit to the run store {path}: {exc.strerror or exc}",
                         path=str(path)) from exc


class _Writer(threading.Thread):
    """Appends queued commits in order, one write and one fsync per round."""

    def __init__(self, store: RunStore) -> None:
        super().__init__(name=f"maml-store-{store.run_id}", daemon=True)
        self.store = store
        self.cond = threading.Condition()
        self.queue: list[tuple[str, bytes, list[dict[str, Any]]]] = []
        self.submitted = self.written = 0
        self.durable: list[str] = []
        self.error: BaseException | None = None
        self.stopping = False

    def submit(self, step_id: str, line: bytes, refs: list[dict[str, Any]]) -> None:
        with self.cond:
            self._raise()
            self.queue.append((step_id, line, refs))
            self.submitted += 1
            self.cond.notify_all()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if not self.queue:
                    return
                batch, self.queue = self.queue, []
            try:
                _append(self.store, [line for _, line, _ in batch],
                        [ref for _, _, refs in batch for ref in refs])
            except BaseException as exc:  # noqa: BLE001 - handed to the scheduler's thread
                with self.cond:
                    self.error = exc
                    self.cond.notify_all()
                return
            with self.cond:
                self.written += len(batch)
                self.durable += [step_id for step_id, _, _ in batch]
                self.cond.notify_all()

    def take(self) -> list[str]:
        with self.cond:
            self._raise()
            taken, self.durable = self.durable, []
            return taken

    def flush(self) -> list[str]:
        with self.cond:
            while self.written < self.submitted and self.error is None:
                self.cond.wait()
        return self.take()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
