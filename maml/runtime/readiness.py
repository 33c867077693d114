"""Readiness: when a step may start, and where it queues (the Scheduler's first part).

Each step counts its unfinished needs (`StepRun.waiting_on`); when a step ends, only its
dependents are looked at (`_unblock_dependents`), and one whose count reaches zero joins
`unblocked`. `_settle` takes each of those once: skipped when an ended need keeps it from
running, reused from the run store on `--resume` when its cache key and outputs are
unchanged, else placed on a device its list allows and queued there (`queues[device]`).
A step whose next attempt must wait (backoff, a breaker's cooldown) sits in `delayed`, a
heap by clock time, until the loop releases it.

A mixin of maml.runtime.scheduler.Scheduler, which owns the state named below; nothing
here talks to the backend.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from typing import TYPE_CHECKING, Any

from maml.runtime import world
from maml.runtime.artifacts import refs_in
from maml.runtime.checkpoint import RunStore, cache_key, sha256_of
from maml.runtime.classify import synthetic_error
from maml.runtime.devices.book import DeviceBook, NoDevice
from maml.runtime.events import Broadcaster, ErrorInfo
from maml.runtime.kinds.base import StepSpec, get_kind
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker
from maml.runtime.steprun import StepRun


class Readiness:
    plan: Plan
    store: RunStore
    events: Broadcaster
    devices: DeviceBook
    breaker: CircuitBreaker
    hashes: world.FileHashes
    run_id: str
    input_data: Any
    resume: bool
    stopping: str | None
    errors: int
    steps: dict[str, StepRun]
    dependents: dict[str, list[str]]
    unblocked: deque[str]                     # steps whose needs have all ended
    queues: dict[str, deque[str]]             # device -> ready steps
    delayed: list[tuple[float, int, str]]     # (not_before, seq, step)
    busy: dict[str, int]                      # device -> attempts in flight
    _seq: int

    if TYPE_CHECKING:   # provided by Recovery
        def _end(self, step: StepRun, status: str, reason: str | None,
                 error: ErrorInfo | None = None, *, announce_after_flush: bool = False) -> None: ...
        def _cancel(self, step: StepRun) -> None: ...
        def _exhausted(self, step: StepRun, error: ErrorInfo, skip: bool, reason: str) -> None: ...
        def _emit_artifacts(self, step: StepRun, produced: list[dict[str, Any]],
                            consumed: list[dict[str, Any]]) -> None: ...

    def _settle(self) -> None:
        """Look at every step whose needs have all ended since the last call."""
        while self.unblocked:
            step = self.steps[self.unblocked.popleft()]
            if step.status != "pending":
                continue
            reason = self._blocked_by(step)
            if reason is not None:
                self._end(step, "skipped", reason)
            elif self.stopping:
                self._cancel(step)
            else:
                self._begin(step)

    def _blocked_by(self, step: StepRun) -> str | None:
        """Why an ended need keeps this step from running, or None."""
        for need in step.planned.needs:
            upstream = self.steps[need]
            if upstream.status in ("skipped", "cancelled"):
                return f"its input {need!r} was {upstream.status}"
            if upstream.status == "failed" and upstream.planned.policy.on_exhausted != "continue":
                return f"its input {need!r} failed"
        return None

    def _begin(self, step: StepRun) -> None:
        """First time ready: compute the cache key, reuse a committed output, else queue."""
        planned = step.planned
        step.inputs = {n: self.steps[n].output if self.steps[n].status in ("succeeded", "cached")
                       else None for n in planned.needs}
        digests = {n: self.steps[n].digest for n in planned.needs}
        if self.input_data is not None:      # every step may read the run's --input
            digests["$input"] = sha256_of(self.input_data)
        reads = world.read_digests(get_kind(planned.kind), self._spec(step), planned.files,
                                   self.hashes)
        step.key = cache_key(planned.kind, planned.block_body, planned.params, digests, reads)
        self.events.emit("on_step_started", run_id=self.run_id, step=step.info)
        record = self.store.committed(planned.id) if self.resume else None
        if record is not None and record.get("key") == step.key and self._outputs_intact(
                planned.id, record):
            step.output, step.digest = record["output"], record["digest"]
            step.attempts = step.state.attempt = int(record.get("attempts", 0))
            step.state.params = dict(record.get("params") or planned.params)
            step.state.device = record.get("device") or "cpu"
            self._emit_artifacts(step, list(refs_in(step.output)), [])
            self._end(step, "cached", None)
            return
        if planned.id in self.store.stale:
            self.events.emit("on_step_log", run_id=self.run_id, step=step.info, attempt=0,
                             message=f"not reused: {self.store.stale[planned.id]}")
        self._enqueue(step, first=True)

    def _spec(self, step: StepRun) -> StepSpec:
        planned = step.planned
        return StepSpec(id=planned.id, kind=planned.kind, params=dict(step.state.params),
                        inputs=step.inputs, block_lang=planned.block_lang,
                        block_body=planned.block_body, block_line=planned.block_line,
                        doc_path=self.plan.path, doc_dir=self.plan.doc_dir,
                        input_data=self.input_data, path_roots=self.path_roots)

    def _outputs_intact(self, step_id: str, record: dict[str, Any]) -> bool:
        """The files a committed step wrote (Kind.writes) are still there, unaltered."""
        for path, sha in (record.get("written") or {}).items():
            full = path if os.path.isabs(path) else os.path.join(self.store.run_dir, path)
            if self.hashes.digest(full) != sha:
                self.store.stale[step_id] = f"{path}, which step {step_id!r} wrote, is " \
                    "missing or altered"
                return False
        return True

    def _enqueue(self, step: StepRun, *, first: bool = False) -> None:
        """Queue the step's next attempt on a device its list allows (placement for the
        first attempt; a recovery's choice re-checked against breakers and health after)."""
        planned, load = step.planned, self._load()
        try:
            step.state.device = (self.devices.place(planned, self.breaker, load) if first else
                                 self.devices.admit(planned, step.state.device, self.breaker,
                                                    load))
        except NoDevice as exc:
            if self._wait_for_cooldown(step, exc.verdict):
                return
            error = synthetic_error("device_unavailable", exc.verdict.message(),
                                    devices=exc.verdict.reasons)
            if not first:
                self.errors += 1
            step.error = error
            return self._exhausted(step, error, False, "no allowed device can take it")
        step.status = "ready"
        self.queues[step.state.device].append(planned.id)

    def _wait_for_cooldown(self, step: StepRun, verdict: Any) -> bool:
        """A step whose `device_unavailable` chain says `retry` waits for the earliest open
        breaker of its devices to let a trial through, rather than failing now (11.3)."""
        if verdict.retry_at is None or "retry" not in step.planned.policy.chain(
                "device_unavailable"):
            return False
        self.events.emit("on_device_decision", run_id=self.run_id, step=step.info,
                         decision="wait", device=None, reasons=verdict.reasons,
                         retry_at=verdict.retry_at)
        self._delay(step, verdict.retry_at)
        return True

    def _load(self) -> dict[str, int]:
        """Attempts running or queued per device (placement spreads over GPUs by it)."""
        return {d: self.busy[d] + len(self.queues[d]) for d in set(self.busy) | set(self.queues)}

    def _delay(self, step: StepRun, not_before: float) -> None:
        """The step waits (a backoff, a breaker's cooldown) until `not_before`."""
        step.status, step.not_before = "waiting", not_before
        self._seq += 1
        heapq.heappush(self.delayed, (not_before, self._seq, step.planned.id))

    def _unblock_dependents(self, step: StepRun) -> None:
        """`step` ended: each dependent has one need fewer; one with none left is settled."""
        for sid in self.dependents.get(step.planned.id, ()):
            dependent = self.steps[sid]
            dependent.waiting_on -= 1
            if dependent.waiting_on == 0:
                self.unblocked.append(sid)
