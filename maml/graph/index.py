"""The compact in-memory form of a verified log: columns, not a million dicts.

Per node: its id, type, run, time, line and byte offset (strings interned, numbers in arrays).
Per error and per recovery: one small tuple with the fields queries filter and group by.
Per outcome: the status it gives the run, step, attempt or recovery it ends. Everything else
(messages, params, health samples) stays in the file and is read back by offset, with its hash
checked again, when a query returns it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from array import array
from pathlib import Path
from typing import Any, NamedTuple

from maml.errors import VerifyError
from maml.graph import store

try:  # orjson parses a node ~3x faster; the standard library is the fallback
    import orjson as _orjson

    def loads(data: bytes) -> Any:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:   # e.g. integers beyond 64 bits: json takes them
            return json.loads(data)
except ImportError:  # pragma: no cover - depends on the environment
    _scan = json.JSONDecoder().scan_once

    def loads(data: bytes) -> Any:
        try:
            return _scan(data.decode("utf-8"), 0)[0]
        except StopIteration:
            raise ValueError("not JSON") from None


_MISSING = object()


class ErrorRow(NamedTuple):
    node: int
    run: str
    step: str
    kind: str
    error_class: str
    exception_type: str
    device: str
    device_class: str
    worker: str
    injected: bool
    t: float


class RecoveryRow(NamedTuple):
    node: int
    error: int          # node index of the error it handled, -1 if unknown
    action: str
    error_class: str
    device_class: str
    run: str
    step: str
    t: float


class LogIndex:
    def __init__(self, path: Path, *, recheck: bool = True) -> None:
        self.path = path
        self.recheck = recheck       # check a body's hash again when it is read back
        self.ids: list[str] = []
        self.types: list[str] = []
        self.runs: list[str | None] = []
        self.times = array("d")
        self.offsets = array("q")
        self.lines = array("q")
        self.position: dict[str, int] = {}
        self.errors: list[ErrorRow] = []
        self.recoveries: list[RecoveryRow] = []
        self.status: dict[int, str] = {}            # run/step/attempt node -> how it ended
        self.recovery_result: dict[int, str] = {}   # recovery node -> status of its next attempt
        self.run_nodes: dict[str, int] = {}
        self._strings: dict[Any, Any] = {}
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []   # dict, key, old value
        self._handlers = {"run": self._add_run, "error": self._add_error,
                          "recovery": self._add_recovery, "outcome": self._add_outcome}

    def mark(self) -> tuple[int, int, int]:
        """Everything indexed so far is committed; `rollback` returns to here."""
        self._undo.clear()
        return len(self.ids), len(self.errors), len(self.recoveries)

    def rollback(self, mark: tuple[int, int, int]) -> None:
        """Forget what was indexed since `mark` (records that no signed head covers)."""
        nodes, errors, recoveries = mark
        for node_id in self.ids[nodes:]:
            del self.position[node_id]
        for column in (self.ids, self.types, self.runs, self.times, self.offsets, self.lines):
            del column[nodes:]
        del self.errors[errors:]
        del self.recoveries[recoveries:]
        for table, key, old in reversed(self._undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self._undo.clear()

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append((table, key, table.get(key, _MISSING)))
        table[key] = value

    def __len__(self) -> int:
        return len(self.ids)

    def _intern(self, value: Any) -> Any:
        return self._strings.setdefault(value, value) if isinstance(value, str) else value

    def add(self, node_id: str, node: dict[str, Any], offset: int, line: int) -> None:
        """Index one verified node. A content-identical node seen again (the same device in
        several runs) is the same node: it is indexed once."""
        if node_id in self.position:
            return
        index = len(self.ids)
        self.position[node_id] = index
        self.ids.append(node_id)
        node_type = self._intern(node.get("type", "?"))
        self.types.append(node_type)
        self.runs.append(self._intern(node.get("run")))
        t = node.get("t")
        self.times.append(float(t) if isinstance(t, (int, float)) else math.nan)
        self.offsets.append(offset)
        self.lines.append(line)
        handler = self._handlers.get(node_type)
        if handler is not None:
            handler(index, node)

    def _links(self, node: dict[str, Any], label: str) -> list[int]:
        return [self.position[target] for name, target in node.get("links", ())
                if name == label and target in self.position]

    def _add_run(self, index: int, node: dict[str, Any]) -> None:
        if node.get("run") not in self.run_nodes:
            self._set(self.run_nodes, node.get("run"), index)

    def _add_error(self, index: int, node: dict[str, Any]) -> None:
        s = self._intern
        device = node.get("device") or {}
        self.errors.append(ErrorRow(
            index, s(node.get("run")), s(node.get("step")), s(node.get("kind")),
            s(node.get("error_class", "unknown")), s(node.get("exception_type")),
            s(device.get("id") if isinstance(device, dict) else device),
            s(node.get("device_class")), s(node.get("worker")), bool(node.get("injected")),
            self.times[index]))

    def _add_recovery(self, index: int, node: dict[str, Any]) -> None:
        s = self._intern
        handled = self._links(node, "handled_by")
        self.recoveries.append(RecoveryRow(
            index, handled[0] if handled else -1, s(node.get("action")),
            s(node.get("error_class", "unknown")), s(node.get("device_class")),
            s(node.get("run")), s(node.get("step")), self.times[index]))

    def _add_outcome(self, index: int, node: dict[str, Any]) -> None:
        status = self._intern(node.get("status"))
        for ended in self._links(node, "ended"):
            self._set(self.status, ended, status)
        for recovery in self._links(node, "resulted_in"):
            self._set(self.recovery_result, recovery, status)

    def seal(self) -> None:
        self._strings = {}   # interning is only needed while loading
        self._undo = []

    def body(self, index: int) -> dict[str, Any]:
        """The full node at `index`, read back from the file and checked against its id."""
        with open(self.path, "rb") as handle:
            return self.bodies([index], handle)[0]

    def bodies(self, indices: list[int], handle: Any = None) -> list[dict[str, Any]]:
        own = handle is None
        handle = handle or open(self.path, "rb")
        try:
            return [self._read_body(handle.fileno(), i) for i in indices]
        finally:
            if own:
                handle.close()

    def _read_body(self, fd: int, index: int) -> dict[str, Any]:
        offset, node_id = self.offsets[index], self.ids[index]
        raw = b""
        chunk = 4096
        while not raw.endswith(b"\n"):
            raw = os.pread(fd, chunk, offset)
            raw = raw[:raw.find(b"\n") + 1] if b"\n" in raw else raw
            if len(raw) < chunk and not raw.endswith(b"\n"):
                break
            chunk *= 4
        body = raw[store.NODE_BODY_AT:-2]
        if self.recheck and hashlib.sha256(body).hexdigest() != node_id:
            raise VerifyError(f"{self.path}:{self.lines[index]}: node {node_id} changed on disk "
                              "after it was verified")
        node = loads(body)
        node["id"] = node_id
        return node
