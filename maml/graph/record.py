"""The Recorder: a runtime observer that turns run events into signed graph nodes.

    with Recorder(graph_path) as recorder:
        observers.append(recorder)
        ...run...

It is `critical`: if the record cannot be written the run fails rather than go unrecorded.
Nodes are buffered and committed (one write, one fsync, one signature) at step boundaries and
after each recovery (a failure is the part of a run most worth keeping if the run then dies)
by a thread of their own (store.BackgroundCommits: the scheduler never waits for the fsync,
and steps ending close together share one commit), then synchronously at run end and on
close, so that a finished `maml run` has its whole record on disk. A crash loses at most
the nodes of the last step boundaries not yet committed. A run that never reported its end gets
an `interrupted` outcome on close. Records are never rewritten: what is learned later (did the
recovery work? how did the step end?) is a new `outcome` node linked to what it concerns.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import threading
import time
from collections import defaultdict
from typing import Any

from maml.graph import canonical
from maml.graph import settings as trust_settings
from maml.graph.keys import SigningKey, load_or_create_key
from maml.graph.store import BackgroundCommits, LogWriter
from maml.runtime.events import DeviceRef, ErrorInfo, Observer, StepInfo

MESSAGE_LIMIT = 4000   # characters of an error message kept in the record


def _seconds(value: float) -> float | None:
    """A duration or time from the runtime, None if it is not a finite number."""
    value = float(value)
    return value if math.isfinite(value) else None


def document_identity(document: str | None) -> dict[str, str | None]:
    """The sha256 of the document's bytes and the trusted key that signed them (None if it
    is unsigned, altered or signed by a key not trusted): what the run record keeps."""
    if not document:
        return {"document_sha256": None, "signer": None}
    from maml.errors import GraphError
    from maml.graph import docsig, keys

    try:
        data = open(document, "rb").read()
    except OSError:
        return {"document_sha256": None, "signer": None}
    try:
        verdict = docsig.verify(document, keys.trusted_public_keys(), data)
    except GraphError:          # a trusted key file that cannot be read: no signer claimed
        return {"document_sha256": hashlib.sha256(data).hexdigest(), "signer": None}
    return {"document_sha256": verdict.sha256, "signer": verdict.key_id if verdict.ok else None}


def _device_class(device: DeviceRef | None) -> str:
    return device.kind if device is not None else "unknown"


class Recorder(Observer):
    critical = True

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 key: SigningKey | None = None, commit_every: int = 10_000,
                 clock: Any = time.time) -> None:
        self.writer = LogWriter(path, key or load_or_create_key())
        self.writer.preflight()     # a read-only, full or rolled-back graph: before any step
        self._commits = BackgroundCommits(self.writer)   # step boundaries: off the scheduler
        self.path = self.writer.path
        self.commit_every = commit_every
        self.clock = clock
        self._lock = threading.Lock()   # the scheduler may report from several threads
        self._runs: dict[str, str] = {}                  # run id -> run node
        self._open_runs: set[str] = set()
        self._devices: dict[DeviceRef, str] = {}
        # per run (dropped when the run ends, so a long-lived recorder does not grow):
        self._steps: dict[str, dict[str, str]] = defaultdict(dict)       # step -> node
        self._attempts: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
        self._errors: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
        self._recoveries: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
        self._attempt_devices: dict[str, dict[tuple[str, int], DeviceRef]] = defaultdict(dict)
        self._artifacts: dict[str, dict[str, str]] = defaultdict(dict)   # sha256 -> node
        self._documents: dict[str, str | None] = {}
        self._per_run = (self._steps, self._attempts, self._errors, self._recoveries,
                         self._attempt_devices, self._artifacts)

    # -- plumbing -------------------------------------------------------------------------

    def _add(self, node_type: str, links: list[list[str]], **fields: Any) -> str:
        node = {"type": node_type, "links": links, **fields}
        node_id = self.writer.add(node, finite=True)   # floats: _seconds() or normalise()
        if self.writer.pending >= self.commit_every:
            self._commits.request()
        return node_id

    def _now(self) -> float | None:
        return _seconds(self.clock())

    def commit(self) -> int:
        """Commit what is buffered now (durable when this returns)."""
        with self._lock:
            return self._commits.flush()

    def close(self) -> None:
        self._commits.close()
        with self._lock:
            for run_id in sorted(self._open_runs):
                self._add("outcome", [["ended", self._runs[run_id]]], run=run_id,
                          of="run", status="interrupted", t=self._now())
            self._open_runs.clear()
            self.writer.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _device(self, device: DeviceRef) -> str:
        if device not in self._devices:   # content-addressed: the same device is one node
            fields = canonical.normalise(device.to_dict())
            fields["device"] = fields.pop("id")   # "id" is the node's own id when read back
            self._devices[device] = self._add("device", [], **fields)
        return self._devices[device]

    def _step(self, run_id: str, step: StepInfo) -> str:
        steps = self._steps[run_id]
        if step.id not in steps:
            links = [["has_step", self._runs[run_id]]] if run_id in self._runs else []
            steps[step.id] = self._add(
                "step", links, run=run_id, step=step.id, kind=step.kind, needs=list(step.needs),
                block=step.block, devices=list(step.devices), line=step.line, t=self._now())
        return steps[step.id]

    # -- events ---------------------------------------------------------------------------

    def on_run_started(self, *, run_id: str, document: str | None, steps: list[StepInfo],
                       started_at: float, **_: Any) -> None:
        with self._lock:
            self._runs[run_id] = self._add(
                "run", [], run=run_id, document=document, **document_identity(document),
                steps=[s.id for s in steps],
                started_at=_seconds(started_at), host=socket.gethostname(), pid=os.getpid(),
                t=self._now())
            self._open_runs.add(run_id)
            self._documents[run_id] = document

    def on_step_started(self, *, run_id: str, step: StepInfo, **_: Any) -> None:
        with self._lock:
            self._step(run_id, step)

    def on_attempt_started(self, *, run_id: str, step: StepInfo, attempt: int,
                           device: DeviceRef, worker_id: str, params: dict[str, Any],
                           **_: Any) -> None:
        with self._lock:
            links = [["has_attempt", self._step(run_id, step)], ["ran_on", self._device(device)]]
            self._attempt_devices[run_id][(step.id, attempt)] = device
            recovery = self._recoveries[run_id].get((step.id, attempt))
            if recovery:
                links.append(["led_to", recovery])
            self._attempts[run_id][(step.id, attempt)] = self._add(
                "attempt", links, run=run_id, step=step.id, kind=step.kind, attempt=attempt,
                device=device.id, device_class=device.kind, worker=worker_id,
                params=canonical.normalise(params), t=self._now())

    def _attempt_ended(self, run_id: str, step: StepInfo, attempt: int, status: str,
                       duration: float) -> None:
        key, attempts, recoveries = (step.id, attempt), self._attempts[run_id], \
            self._recoveries[run_id]
        links = [["ended", attempts[key]]] if key in attempts else []
        if key in recoveries:
            links.append(["resulted_in", recoveries[key]])
        self._add("outcome", links, run=run_id, step=step.id, of="attempt", attempt=attempt,
                  status=status, duration=_seconds(duration), t=self._now())

    def on_attempt_failed(self, *, run_id: str, step: StepInfo, attempt: int,
                          error: ErrorInfo, duration: float, **_: Any) -> None:
        with self._lock:
            attempt_node = self._attempts[run_id].get((step.id, attempt))
            links = [["raised", attempt_node]] if attempt_node else []
            self._errors[run_id][(step.id, attempt)] = self._add("error", links, **self._error_fields(
                run_id, step, attempt, error, duration))
            self._attempt_ended(run_id, step, attempt, "failed", duration)

    def _error_fields(self, run_id: str, step: StepInfo, attempt: int, error: ErrorInfo,
                      duration: float) -> dict[str, Any]:
        context = canonical.normalise(error.context or {})
        device = error.device or self._attempt_devices[run_id].get((step.id, attempt))
        return dict(
            run=run_id, step=step.id, kind=step.kind, attempt=attempt,
            error_class=error.error_class, exception_type=error.exception_type,
            message=error.message[:MESSAGE_LIMIT], traceback_digest=error.traceback_digest,
            injected=bool(error.injected), worker=error.worker_id,
            device=canonical.normalise(device.to_dict()) if device else None,
            device_class=_device_class(device),
            memory=context.get("memory") or context.get("memory_at_failure"),
            health=canonical.normalise(error.health) if error.health else None,
            context=context, duration=_seconds(duration), t=self._now())

    def on_recovery_applied(self, *, run_id: str, step: StepInfo, attempt: int,
                            error: ErrorInfo, action: str, changes: dict[str, Any],
                            next_attempt: int, delay: float, **_: Any) -> None:
        with self._lock:
            failed = self._errors[run_id].get((step.id, attempt))
            self._recoveries[run_id][(step.id, next_attempt)] = self._add(
                "recovery", [["handled_by", failed]] if failed else [], run=run_id,
                step=step.id, kind=step.kind, attempt=attempt, error_class=error.error_class,
                device_class=_device_class(error.device or self._attempt_devices[run_id].get(
                    (step.id, attempt))), action=action,
                changes=canonical.normalise(changes), next_attempt=next_attempt,
                delay=_seconds(delay), t=self._now())
            self._commits.request()

    def on_attempt_succeeded(self, *, run_id: str, step: StepInfo, attempt: int,
                             device: DeviceRef, duration: float, **_: Any) -> None:
        with self._lock:
            self._attempt_ended(run_id, step, attempt, "succeeded", duration)

    def on_checkpoint(self, *, run_id: str, step: StepInfo, attempt: int, digest: str,
                      size: int, **_: Any) -> None:
        with self._lock:
            attempt_node = self._attempts[run_id].get((step.id, attempt))
            self._add("checkpoint", [["checkpointed", attempt_node]] if attempt_node else [],
                      run=run_id, step=step.id, attempt=attempt, digest=digest, size=size,
                      t=self._now())

    def on_artifacts(self, *, run_id: str, step: StepInfo, attempt: int,
                     produced: list[dict[str, Any]], consumed: list[dict[str, Any]],
                     **_: Any) -> None:
        """Provenance of arrays: an `artifact` node (sha256, dtype, shape, bytes) linked to
        the attempt that wrote it (the step, when reused from a resumed run), and an `input`
        node per artifact an attempt read, linked to both."""
        with self._lock:
            by = self._attempts[run_id].get((step.id, attempt)) or self._step(run_id, step)
            for ref in produced:
                self._artifact(run_id, ref, by, step.id, attempt)
            for ref in consumed:
                node = self._artifact(run_id, ref, None, None, None)
                self._add("input", [["consumed", node], ["input_of", by]], run=run_id,
                          step=step.id, attempt=attempt, sha256=ref.get("$artifact"),
                          t=self._now())

    def _artifact(self, run_id: str, ref: dict[str, Any], by: str | None, step: str | None,
                  attempt: int | None) -> str:
        sha, known = str(ref.get("$artifact")), self._artifacts[run_id]
        if sha not in known:
            known[sha] = self._add(
                "artifact", [["produced", by]] if by else [], run=run_id, step=step,
                attempt=attempt, sha256=sha, dtype=str(ref.get("dtype")),
                shape=canonical.normalise(ref.get("shape")), bytes=ref.get("bytes"),
                t=self._now())
        return known[sha]

    def on_step_finished(self, *, run_id: str, step: StepInfo, status: str, attempts: int,
                         output_digest: str | None, **_: Any) -> None:
        with self._lock:
            self._add("outcome", [["ended", self._step(run_id, step)]], run=run_id,
                      step=step.id, of="step", status=status, attempts=attempts,
                      output_digest=output_digest, t=self._now())
            self._commits.request()

    def on_step_skipped(self, *, run_id: str, step: StepInfo, reason: str, **_: Any) -> None:
        with self._lock:
            self._add("outcome", [["ended", self._step(run_id, step)]], run=run_id,
                      step=step.id, of="step", status="skipped", reason=reason, t=self._now())
            self._commits.request()

    def on_device_state_changed(self, *, device: DeviceRef, old: str, new: str,
                                sample: dict[str, Any], reasons: list[str], **_: Any) -> None:
        # only state changes are recorded: a sample every second would swamp the graph, and
        # the sample that matters for a failure travels inside its error node
        with self._lock:
            self._add("health", [["state_changed", self._device(device)]], device=device.id,
                      old=old, new=new, reasons=list(reasons),
                      sample=canonical.normalise(sample), t=self._now())

    def on_attempt_placed(self, *, run_id: str, step: StepInfo, attempt: int,
                          device: DeviceRef | None, node: dict[str, Any], **_: Any) -> None:
        with self._lock:
            attempt_node = self._attempts[run_id].get((step.id, attempt))
            self._add("placement", [["placed", attempt_node]] if attempt_node else [],
                      run=run_id, step=step.id, attempt=attempt,
                      device=canonical.normalise(device.to_dict()) if device else None,
                      node=canonical.normalise(node), t=self._now())

    def on_device_decision(self, *, run_id: str, step: StepInfo, decision: str,
                           device: str | None, reasons: dict[str, str],
                           retry_at: float | None = None, **_: Any) -> None:
        with self._lock:
            self._add("device_decision", [["decided", self._step(run_id, step)]], run=run_id,
                      step=step.id, decision=decision, device=device, reasons=dict(reasons),
                      t=self._now())

    def on_run_finished(self, *, run_id: str, status: str, errors: int, recoveries: int,
                        duration: float, **_: Any) -> None:
        with self._lock:
            links = [["ended", self._runs[run_id]]] if run_id in self._runs else []
            self._add("outcome", links, run=run_id, of="run", status=status, errors=errors,
                      recoveries=recoveries, duration=_seconds(duration), t=self._now())
            self._open_runs.discard(run_id)
            self._runs.pop(run_id, None)
            for table in self._per_run:
                table.pop(run_id, None)
            self._commits.flush()          # the run's end is durable before maml run returns
            self._append_history(run_id, status)

    def _append_history(self, run_id: str, status: str) -> None:
        """`maml run --append-history`: the run's line in the document, with the graph head
        that now covers the run (maml.graph.history)."""
        document = self._documents.pop(run_id, None)
        settings = trust_settings.load()
        if not (settings.append_history and document):
            return
        from maml.graph import history

        tail = self.writer.tail
        line = history.entry(run_id, status, tail.chain.hex() if tail else None, self.writer.key.id)
        history.append(document, line, key=self.writer.key, resign=settings.resign)
