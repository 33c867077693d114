"""The append-only log that holds the error graph, and its group-committing writer.

One file, `<graph dir>/log.jsonl`, one record a line, every line canonical JSON:

    {"format":"maml-graph/1","log":LOG_ID,"t":T}          line 1, the header (+ "replaces")
    {"c":CHAIN,"id":NODE_ID,"n":{...node...}}             a node (fixed offsets: see NODE_*)
    {"head":{...},"sig":"..."}                            a signed head (maml.graph.signing)

A commit writes the batch's node lines and one signed head in a single write(), then fsyncs:
the head is the commit mark. Several processes may append to one log: each commit holds an
exclusive flock on the file and reads the chain head from the file's tail under the lock.

After a crash the file may end in a torn line (no newline) or in node lines with no head after
them (a writer died mid-write). Both are *uncommitted*: readers report and ignore them, and the
next writer cuts them off under the lock before it appends — they were never signed, so keeping
them would let anyone with write access slip unsigned records under the next signature.

Every commit also notes its head in the user's witness (maml.graph.witness). Before a writer
repairs or extends a log it compares the log's last signed head with the witness: a log that
is shorter than witnessed or belongs to another graph is refused (GraphError naming the
witnessed head) instead of being cut and appended to, which would hide the loss. A log that is
gone or empty starts a new graph whose header names the witnessed head it replaces ("replaces":
{log, count, chain}), so the loss is signed into the new history and `maml graph verify`
reports it, and a re-cloned project or a deleted `.maml/` does not refuse every run. At each
commit the writer also checks that the path still names the file it opened (the log was not
deleted or replaced during the run), and that the directory can be written before the run
starts (`preflight`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from binascii import hexlify
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maml._files import fsync_dir, write_all
from maml.errors import GraphError
from maml.graph import canonical, signing, witness
from maml.graph.keys import SigningKey

FORMAT = "maml-graph/1"
LOG_NAME = "log.jsonl"
DEFAULT_DIR = ".maml/graph"

# A node line is b'{"c":"' CHAIN(64) b'","id":"' ID(64) b'","n":' NODE b'}\n'
NODE_PREFIX = b'{"c":"'
NODE_ID_AT = 78
NODE_BODY_AT = 148
HEAD_PREFIX = b'{"head":'
MIN_FREE_BYTES = 1 << 20      # preflight: less free space than this is "full"


def resolve_log_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The log file for a graph given as a directory, a `.jsonl` file, $MAML_GRAPH or the default."""
    raw = Path(path if path is not None else os.environ.get("MAML_GRAPH") or DEFAULT_DIR)
    raw = raw.expanduser().absolute()   # a later chdir must not move the graph
    if raw.suffix == ".jsonl" or raw.is_file():
        return raw
    return raw / LOG_NAME


def node_line(chain: str, node_id: str, body: bytes) -> bytes:
    return b'{"c":"%s","id":"%s","n":%s}\n' % (chain.encode(), node_id.encode(), body)


def chain_link(previous: bytes, node_digest: bytes) -> bytes:
    """The next chain digest: sha256 over the previous one and the node's, 32 raw bytes each."""
    return hashlib.sha256(previous + node_digest).digest()


def header_chain(header_line: bytes) -> bytes:
    return hashlib.sha256(header_line.rstrip(b"\n")).digest()


def warn(message: str) -> None:
    print(f"maml: warning: graph: {message}", file=sys.stderr)


@dataclass
class Tail:
    """Where the committed log ends: what the next record chains onto."""

    log_id: str
    chain: bytes
    count: int
    end: int            # byte offset just past the last committed line


def _read_header(fd: int) -> tuple[str, bytes]:
    first = os.pread(fd, 65536, 0).split(b"\n", 1)[0]
    try:
        header = json.loads(first)
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        return header["log"], header_chain(first)
    except (ValueError, KeyError) as exc:
        raise GraphError(f"line 1 is not a maml graph header ({exc})") from None


def _committed_tail(fd: int, size: int, log_id: str, chain0: bytes) -> Tail:
    """Scan back from the end to the last head (or the header): everything after it is uncommitted."""
    chunk, pos, data = 1 << 16, size, b""
    while True:
        start = max(0, pos - chunk)
        data = os.pread(fd, pos - start, start) + data
        pos = start
        lines_end = data.rfind(b"\n")
        cursor = lines_end
        while cursor > 0:
            begin = data.rfind(b"\n", 0, cursor) + 1
            if begin == 0 and pos > 0:
                break                       # this line starts before what we read: read more
            line = data[begin:cursor + 1]
            if line.startswith(HEAD_PREFIX):
                payload = json.loads(signing.split_head_line(line)[0])
                return Tail(log_id, bytes.fromhex(payload["chain"]), payload["count"],
                            pos + cursor + 1)
            if begin == 0 and pos == 0:     # reached the header: nothing committed yet
                return Tail(log_id, chain0, 0, cursor + 1)
            cursor = begin - 1
        chunk *= 4


class LogWriter:
    """Buffers nodes and commits them: one write, one fsync, one signature per commit."""

    def __init__(self, path: str | os.PathLike[str] | None, key: SigningKey) -> None:
        self.path = resolve_log_path(path)
        self.key = key
        self._pending: list[tuple[bytes, bytes, bytes]] = []   # digest, hex id, body
        self._pending_lock = threading.Lock()          # add() and commit() may run on two threads
        self._commit_lock = threading.Lock()           # one commit at a time: the tail is shared
        self._fd: int | None = None
        self._tail: Tail | None = None                  # valid while the file size matches
        self.committed = 0

    def add(self, node: dict[str, Any], *, finite: bool = False) -> str:
        """Buffer one node; returns its id (the sha256 of its canonical form). `finite`: the
        caller vouches that every float in it is finite, which allows the fast encoder."""
        body = canonical.dumps_finite(node) if finite else canonical.dumps(node)
        node_digest = hashlib.sha256(body).digest()
        node_id = hexlify(node_digest)
        with self._pending_lock:
            self._pending.append((node_digest, node_id, body))
        return node_id.decode()

    @property
    def tail(self) -> Tail | None:
        """The last head this writer committed or read (None before the first commit)."""
        return self._tail

    @property
    def pending(self) -> int:
        return len(self._pending)

    def commit(self) -> int:
        """Write and sign what is buffered; returns the number of nodes committed.
        GraphError (naming the log) if it cannot be written, was deleted or replaced; the
        nodes stay buffered then. Safe to call from any thread: commits run one at a time."""
        with self._commit_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                self._write_batch(batch)
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = batch
                raise
            self.committed += len(batch)
            return len(batch)

    def _write_batch(self, batch: list[tuple[bytes, bytes, bytes]]) -> None:
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._check_same_file(fd)
                tail = self._current_tail(fd)
                data, tail = self._encode_batch(tail, batch)
                write_all(fd, data)
                os.fsync(fd)
                tail.end += len(data)
                self._tail = tail
                witness.record(self.path, witness.Witnessed(tail.log_id, tail.count,
                                                            tail.chain.hex(), time.time()))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise GraphError(f"cannot write the error graph: {exc.strerror or exc}",
                             path=str(self.path)) from exc

    def _encode_batch(self, tail: Tail, batch: list[tuple[bytes, bytes, bytes]]
                      ) -> tuple[bytes, Tail]:
        chain, lines, sha256 = tail.chain, [], hashlib.sha256
        for node_digest, node_id, body in batch:
            chain = sha256(chain + node_digest).digest()     # chain_link(), inlined: hot loop
            lines.append(b'{"c":"%s","id":"%s","n":%s}\n' % (hexlify(chain), node_id, body))
        count = tail.count + len(batch)
        payload = {"chain": chain.hex(), "count": count, "key": self.key.id,
                   "log": tail.log_id, "t": time.time()}
        lines.append(signing.head_line(payload, self.key))
        return b"".join(lines), Tail(tail.log_id, chain, count, tail.end)

    def _current_tail(self, fd: int) -> Tail:
        """The committed tail, re-read under the lock unless nobody wrote since our last commit."""
        size = os.fstat(fd).st_size
        if self._tail is not None and self._tail.end == size:
            return self._tail
        if size == 0:
            return self._write_header(fd, witness.read(self.path))
        tail = self._witnessed_tail(fd, size)
        if tail.end < size:
            self._cut(fd, tail.end, size)
        return tail

    def _witnessed_tail(self, fd: int, size: int) -> Tail:
        """The committed tail, refused if it is behind the witness or of another graph."""
        log_id, chain0 = _read_header(fd)
        tail = _committed_tail(fd, size, log_id, chain0)
        seen = witness.read(self.path)
        if seen is not None and seen.log != log_id:
            raise self._rolled_back(seen, f"the log holds another graph ({log_id})")
        if seen is not None and tail.count < seen.count:
            raise self._rolled_back(seen, f"the log's last signed head covers only "
                                          f"{tail.count} records")
        return tail

    def _rolled_back(self, seen: witness.Witnessed, found: str) -> GraphError:
        return GraphError(f"refusing to write: this graph was rolled back or replaced "
                          f"(witnessed {seen.describe()}; {found}). Inspect it with "
                          f"`maml graph verify`; if you removed records on purpose, "
                          f"`maml graph forget` drops the witness", path=str(self.path))

    def _check_same_file(self, fd: int) -> None:
        """The path must still name the file we hold open: not deleted, not replaced."""
        opened = os.fstat(fd)
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            raise GraphError("the error graph's log was deleted during the run; the records "
                             "of this run after that point are lost (nothing was written to "
                             "the deleted file)", path=str(self.path)) from None
        if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
            raise GraphError("the error graph's log was replaced by another file during the "
                             "run; refusing to write to either", path=str(self.path))

    def _cut(self, fd: int, end: int, size: int) -> None:
        leftover = os.pread(fd, size - end, end)
        records = leftover.count(b"\n") + (not leftover.endswith(b"\n"))
        warn(f"{self.path}: cut {records} uncommitted record(s) ({size - end} bytes) left "
             "after the last signed head by a writer that stopped mid-commit")
        os.ftruncate(fd, end)

    def _write_header(self, fd: int, seen: witness.Witnessed | None) -> Tail:
        """Begin a new graph. If this path was witnessed holding another graph whose log is now
        gone or empty (a re-clone, `rm -rf .maml`, or someone hiding history), the new header
        names the head it replaces: the loss stays on record under the first signature, and
        `maml graph verify` reports it, instead of every later run being refused."""
        fields: dict[str, object] = {"format": FORMAT, "log": uuid.uuid4().hex, "t": time.time()}
        if seen is not None and seen.count > 0:
            fields["replaces"] = {"log": seen.log, "count": seen.count, "chain": seen.chain}
            warn(f"{self.path}: the log witnessed here ({seen.describe()}) is gone or empty; "
                 "starting a new graph whose header records the one it replaces "
                 "(`maml graph verify` shows it)")
        header = canonical.dumps(fields)
        write_all(fd, header + b"\n")
        os.fsync(fd)
        return Tail(json.loads(header)["log"], header_chain(header), 0, len(header) + 1)

    def _open(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                               0o644)
            if created:  # make the new directory entry durable too
                fsync_dir(self.path.parent)
        return self._fd

    def preflight(self) -> None:
        """Before a run: the log can be opened for writing, agrees with the witness, and its
        file system has room. GraphError naming the path otherwise."""
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                size = os.fstat(fd).st_size
                if size:
                    self._tail = self._witnessed_tail(fd, size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            free = os.statvfs(fd)
        except OSError as exc:
            raise GraphError(f"the error graph cannot be written: {exc.strerror or exc}",
                             path=str(self.path)) from exc
        if free.f_bavail * free.f_frsize < MIN_FREE_BYTES:
            raise GraphError(f"the error graph's file system is full "
                             f"({free.f_bavail * free.f_frsize} bytes free)", path=str(self.path))

    def close(self) -> None:
        """Commit what is left and close the file."""
        try:
            self.commit()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class BackgroundCommits:
    """Commits a LogWriter on a thread of its own, so that whoever reports events never waits
    for an fsync: `request()` returns at once, and the next commit takes everything buffered
    by then (a group commit: requests made while a commit is in flight share the next one).
    Order is kept (one buffer, one committer). A failed commit is raised by the next
    `request()` or `flush()`, in the reporting thread; the nodes stay buffered."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self._wanted = threading.Event()
        self._closing = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None     # started by the first request

    def request(self) -> None:
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="maml-graph-commits",
                                            daemon=True)
            self._thread.start()
        self._wanted.set()

    def flush(self) -> int:
        """Commit everything buffered now, in this thread (after any commit in flight)."""
        self._raise_failure()
        return self.writer.commit()

    def close(self) -> None:
        """Stop the thread (what it has not committed stays buffered for the writer)."""
        self._closing = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                self.writer.commit()
            except BaseException as exc:  # noqa: BLE001 - raised in the reporting thread
                self._failure = exc
                return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
