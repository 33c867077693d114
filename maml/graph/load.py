"""Reading the log back: every hash, chain link and signature checked, into compact columns.

One pass over the file. A node line's id is checked against the sha256 of its bytes, its chain
hash against the previous one, its links against the ids seen before it; a head's chain, count,
log id and Ed25519 signature against what precedes it. Nodes are held in a staging list until a
head covers them: what no valid head covers (a torn last line, a crashed writer's batch) is
reported and dropped, never loaded. The result keeps only what queries need (ids, types, runs,
offsets, and one tuple per error and recovery); full node bodies are re-read by offset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from hashlib import sha256
from typing import TYPE_CHECKING, Any

from maml.graph import signing, store, witness
from maml.graph.keys import config_dir
from maml.graph.index import LogIndex, loads

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass
class Problem:
    line: int
    node: str | None
    reason: str

    def __str__(self) -> str:
        where = ", ".join(([f"line {self.line}"] if self.line else [])
                          + ([f"node {self.node}"] if self.node else []))
        return f"{where}: {self.reason}" if where else self.reason


@dataclass
class VerifyReport:
    """What a verification found. `ok` is False as soon as one record fails."""

    path: str
    nodes: int = 0                  # node records covered by a good head
    heads: int = 0                  # signatures checked
    keys: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    uncommitted: int = 0            # records after the last signed head: dropped
    torn: bool = False              # the file ended inside a record: dropped
    signatures_checked: bool = True
    log: str | None = None          # the graph id from the header
    head: str | None = None         # chain hash of the last good signed head (hex)
    witnessed: str | None = None    # the witnessed head this log was compared with
    witness_chain: str | None = None   # chain of the head at the witnessed count, if any
    replaces: str | None = None     # the witnessed head of a gone log this graph replaced

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def bad_node(self) -> str | None:
        return self.first.node if self.first else None

    @property
    def line(self) -> int | None:
        return self.first.line if self.first else None

    @property
    def reason(self) -> str | None:
        return self.first.reason if self.first else None

    def warnings(self) -> list[str]:
        """What was dropped after the last signed head. With a witness that head is known to
        be the latest written, so the tail is a crash's; without one, a cut inside signed
        history looks the same, and the note says so."""
        cause = ("a crash mid-commit" if self.witnessed else
                 "a crash mid-commit, or a cut: no witness of this log to tell which")
        notes = []
        if self.replaces:
            notes.append(f"{self.path}: this graph replaced {self.replaces}, whose log was gone "
                         "or empty when this one began; those records are not here")
        if self.torn:
            notes.append(f"{self.path}: the last line is torn ({cause}); ignored")
        if self.uncommitted:
            notes.append(f"{self.path}: {self.uncommitted} record(s) after the last signed head "
                         f"were never committed ({cause}); ignored")
        return notes

    def summary(self) -> str:
        if self.ok:
            return (f"ok: {self.nodes} nodes, {self.heads} signatures checked "
                    f"(keys {', '.join(self.keys) or 'none'}); head {self.head or '-'} "
                    f"at {self.nodes} records"
                    + (f"; matches the witnessed {self.witnessed}" if self.witnessed else
                       "; no witness of this log here"))
        return f"{self.path}: {self.first}"

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "path": self.path, "nodes": self.nodes, "heads": self.heads,
                "keys": self.keys, "bad_node": self.bad_node, "line": self.line,
                "reason": self.reason, "problems": [vars(p) for p in self.problems],
                "uncommitted": self.uncommitted, "torn": self.torn, "log": self.log,
                "head": self.head, "count": self.nodes, "witnessed": self.witnessed,
                "replaces": self.replaces}


class _Reader:
    """The single pass; `read()` returns the index and the report."""

    def __init__(self, path: Path, trusted: dict[str, Ed25519PublicKey] | None,
                 stop_at_first: bool, witness_count: int | None = None) -> None:
        self.path, self.trusted, self.stop = path, trusted, stop_at_first
        self.witness_count = witness_count
        self.report = VerifyReport(str(path), signatures_checked=trusted is not None)
        self.index = LogIndex(path, recheck=trusted is not None)
        self.committed = self.index.mark()   # what the last good head covers
        self.pending = 0                     # node records since the last head
        self.last_id: str | None = None
        self.count = 0
        self.chain = b""
        self.log_id = ""

    def problem(self, line: int, node: str | None, reason: str) -> None:
        self.report.problems.append(Problem(line, node, reason))
        if self.stop:
            raise _Stop

    def read(self) -> tuple[LogIndex, VerifyReport]:
        try:
            with open(self.path, "rb") as handle:
                self._read_lines(handle)
        except _Stop:
            pass
        self.report.uncommitted = self.pending
        self.index.rollback(self.committed)  # what no head covers is never loaded
        self.index.seal()
        return self.index, self.report

    def _read_lines(self, handle: Any) -> None:
        offset, line_no = 0, 0
        node_line, head_line = self._node, self._head
        for raw in handle:
            line_no += 1
            if raw[-1:] != b"\n":
                self.report.torn = True
                return
            if raw[:6] == store.NODE_PREFIX:
                node_line(raw, offset, line_no)
            elif line_no == 1:
                self._header(raw)
            elif raw[:8] == store.HEAD_PREFIX:
                head_line(raw, line_no)
            else:
                self.problem(line_no, None, "not a node, head or header record")
            offset += len(raw)

    def _header(self, raw: bytes) -> None:
        try:
            header = json.loads(raw)
            if header["format"] != store.FORMAT:    # not assert: it vanishes under -O
                raise ValueError(header["format"])
        except (ValueError, KeyError, TypeError):
            self.problem(1, None, "not a maml graph header (format maml-graph/1)")
            raise _Stop from None
        self.log_id, self.chain = header["log"], store.header_chain(raw)
        self.report.log = self.log_id
        replaced = header.get("replaces")
        if isinstance(replaced, dict):
            self.report.replaces = witness.Witnessed(str(replaced.get("log")),
                                                     replaced.get("count", 0),
                                                     str(replaced.get("chain"))).describe()
        if self.witness_count == 0:
            self.report.witness_chain = self.chain.hex()

    def _node(self, raw: bytes, offset: int, line: int) -> None:
        stored_id = raw[78:142].decode("ascii", "replace")
        if raw[70:78] != b'","id":"' or raw[142:148] != b'","n":' or raw[-2:] != b"}\n":
            self.problem(line, stored_id, "malformed node record")
            return
        body = raw[148:-2]
        digest = sha256(body).digest()
        if digest.hex() != stored_id:
            self.problem(line, stored_id, "content hash mismatch: the node was changed")
            digest = bytes.fromhex(stored_id)      # the chain runs over the stored ids
        self.chain = sha256(self.chain + digest).digest()
        if self.chain.hex() != raw[6:70].decode("ascii", "replace"):
            self.problem(line, stored_id, "chain link broken: a record before it was removed, "
                                          "inserted or reordered")
            self.chain = bytes.fromhex(raw[6:70].decode())   # resync, report each break once
        try:
            node = loads(body)
        except ValueError:
            self.problem(line, stored_id, "node is not valid JSON")
            return
        position = self.index.position
        for label, target in node.get("links", ()):
            if target not in position:
                self.problem(line, stored_id, f"link {label!r} to {target}: no such earlier node")
        self.count += 1
        self.pending += 1
        self.last_id = stored_id
        self.index.add(stored_id, node, offset, line)

    def _head(self, raw: bytes, line: int) -> None:
        covers = self.last_id
        try:
            body, signature = signing.split_head_line(raw)
            head = json.loads(body)
        except ValueError as exc:
            self.problem(line, covers, f"malformed signed head: {exc}")
            return
        if head.get("log") != self.log_id:
            self.problem(line, covers, "signed head belongs to another log")
        elif head.get("count") != self.count:
            self.problem(line, covers, f"signed head covers {head.get('count')} nodes but "
                                       f"{self.count} precede it: records were removed or added")
        elif head.get("chain") != self.chain.hex():
            self.problem(line, covers, "signed head does not match the chain: a record before "
                                       "it was changed")
        good = len(self.report.problems)
        self._check_signature(head, body, signature, line, covers)
        if len(self.report.problems) == good:
            self.report.head = str(head.get("chain"))
            if head.get("count") == self.witness_count:
                self.report.witness_chain = self.report.head
        self.report.heads += 1
        self.report.nodes += self.pending
        self.pending = 0
        self.committed = self.index.mark()

    def _check_signature(self, head: dict[str, Any], body: bytes, signature: bytes,
                         line: int, covers: str | None) -> None:
        if self.trusted is None:
            return
        key_id = head.get("key")
        public = self.trusted.get(key_id)  # type: ignore[arg-type]
        if not self.trusted:
            self.problem(line, covers, f"no trusted public key in {config_dir()}: pass --key "
                                       "PUB (or public_key=) or create yours: maml keys init")
        elif public is None:
            self.problem(line, covers, f"signed by key {key_id}, which is not trusted "
                                       "(pass --key PUB, or add it to the trusted keys)")
        elif not signing.verify_signature(public, body, signature):
            self.problem(line, covers, f"signature by key {key_id} does not verify")
        elif key_id not in self.report.keys:
            self.report.keys.append(key_id)


class _Stop(Exception):
    pass


def read_log(path: Path, trusted: dict[str, Ed25519PublicKey] | None, *,
             stop_at_first: bool = False,
             witness_count: int | None = None) -> tuple[LogIndex, VerifyReport]:
    """Read and check the log; `trusted=None` skips signature checks (hashes still checked).
    `witness_count`: note the chain of the head that covers that many records."""
    if not path.exists():
        index = LogIndex(path)
        index.seal()
        return index, VerifyReport(str(path))
    return _Reader(path, trusted, stop_at_first, witness_count).read()

