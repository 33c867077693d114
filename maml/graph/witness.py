"""The witness: the latest signed head each writer wrote to a log, kept outside the log.

A signed log proves every record it *holds* is authentic; it cannot prove records were not
cut off its end, since a shorter log is still a valid log. So each writer (every `maml run`
of this user) notes, after each commit, the head it just signed in the user's state dir:

    <state dir>/witness/<sha256(real log path)[:32]>.json
        {"path": ..., "log": GRAPH_ID, "count": N, "chain": HEAD_HASH, "t": ...}

and `maml graph verify` (and the next writer, before it repairs a torn tail) compares the log
with it: a log whose graph id differs, that holds fewer signed records than witnessed, or
whose head at the witnessed count has another hash is reported as a rollback, naming the
witnessed head. The state dir is $MAML_STATE_DIR, else `state/` in $MAML_CONFIG_DIR when that
is set, else platformdirs' user_state_dir("maml").

What this cannot do: someone who can write both the log and this user's witness can roll
both back together, and a log this user never wrote has no witness (publish the head hash
that `verify` prints and check it with `--expect-head`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any



@dataclass(frozen=True)
class Witnessed:
    """A head some writer signed: graph id, record count, chain hash (hex)."""

    log: str
    count: int
    chain: str
    t: float = 0.0

    def describe(self) -> str:
        return f"head {self.chain[:16]}… at {self.count} records of graph {self.log}"


def state_dir() -> Path:
    explicit = os.environ.get("MAML_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("MAML_CONFIG_DIR"):
        return Path(os.environ["MAML_CONFIG_DIR"]).expanduser() / "state"
    import platformdirs

    return Path(platformdirs.user_state_dir("maml"))


def witness_path(log_path: str | os.PathLike[str]) -> Path:
    real = os.path.realpath(log_path)
    return state_dir() / "witness" / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.json"


def _parse(data: bytes) -> Witnessed | None:
    try:
        value: Any = json.loads(data)
        return Witnessed(str(value["log"]), int(value["count"]), str(value["chain"]),
                         float(value.get("t", 0.0)))
    except (ValueError, KeyError, TypeError):
        return None


def read(log_path: str | os.PathLike[str]) -> Witnessed | None:
    """The witnessed head of the log at `log_path`, or None (never written, or unreadable)."""
    try:
        return _parse(witness_path(log_path).read_bytes())
    except OSError:
        return None


def record(log_path: str | os.PathLike[str], head: Witnessed) -> None:
    """Note `head` as the latest witnessed one, unless a longer head of the same graph is
    already there. Called under the log's lock, so writers of one log take turns.

    One pwrite in place, no fsync and no rename: this runs at every commit, and a rename
    after the log's fsync costs a journal flush (~2 ms). A power cut may lose the last update
    (an older witness: weaker, never wrong) or, rarely, tear it (unreadable: reported as no
    witness)."""
    path = witness_path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        current = _parse(os.pread(fd, 1 << 16, 0))
        if current is not None and current.log == head.log and current.count >= head.count:
            return
        body = json.dumps({"path": os.path.realpath(log_path), "log": head.log,
                           "count": head.count, "chain": head.chain,
                           "t": head.t or time.time()}).encode("utf-8")
        os.pwrite(fd, body, 0)
        os.ftruncate(fd, len(body))
    finally:
        os.close(fd)


def forget(log_path: str | os.PathLike[str]) -> None:
    """Drop the witness (the user deleted the graph on purpose: `maml graph reset`)."""
    witness_path(log_path).unlink(missing_ok=True)
