"""Recovery: what the end of an attempt means for its step and the run (the Scheduler's
second part).

A success is committed to the run store (announced once durable, see Scheduler._flush).
A failure is counted against the run's error budget and the device's circuit breaker, then
the policies decide (`maml.runtime.policies.decide`, pure): another attempt (new params or
device, the worker replaced or its cache cleared, a backoff), or the step is exhausted
(failed, or skipped by its policy; `on_exhausted: fail` stops the run). `_stop` starts
nothing more; `_end` is the one place a step ends, and unblocks its dependents.

A mixin of maml.runtime.scheduler.Scheduler, which owns the state; the only backend calls
here are the ones a decision asks for (`replace_worker`, `clear_cache`), through the
executor interface (maml.runtime.backend).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from maml.runtime import world
from maml.runtime.artifacts import refs_in
from maml.runtime.backend import Handle
from maml.runtime.checkpoint import RunStore
from maml.runtime.classify import synthetic_error
from maml.runtime.clock import Clock
from maml.runtime.devices.book import DeviceBook
from maml.runtime.events import Broadcaster, ErrorInfo
from maml.runtime.inject import FaultPlan
from maml.runtime.kinds.base import StepSpec, get_kind
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker, ErrorBudget, decide
from maml.runtime.steprun import StepRun
from maml.vocabulary import DEVICE_ERRORS


class Recovery:
    plan: Plan
    store: RunStore
    events: Broadcaster
    devices: DeviceBook
    backend: Any
    faults: FaultPlan
    clock: Clock
    monitor: Any
    rng: Any
    budget: ErrorBudget
    breaker: CircuitBreaker
    hashes: world.FileHashes
    run_id: str
    stopping: str | None
    errors: int
    recoveries: int
    unfinished: int
    problems: list[str]
    steps: dict[str, StepRun]
    queues: dict[str, deque[str]]
    delayed: list[tuple[float, int, str]]
    running: dict[int, StepRun]
    unblocked: deque[str]
    to_announce: dict[str, StepRun]

    if TYPE_CHECKING:   # provided by Readiness and Scheduler
        def _spec(self, step: StepRun) -> StepSpec: ...
        def _load(self) -> dict[str, int]: ...
        def _delay(self, step: StepRun, not_before: float) -> None: ...
        def _unblock_dependents(self, step: StepRun) -> None: ...
        def _detach(self, step: StepRun) -> Any: ...

    def _succeeded(self, step: StepRun, output: Any, refs: list[dict[str, Any]]) -> None:
        state = step.state
        step.output = output
        written = world.written_digests(get_kind(step.planned.kind), step.spec or self._spec(step),
                                        output, self.store.run_dir_str, self.hashes)
        step.digest = self.store.commit_step(step.planned.id, step.key or "", output,
                                             step.attempts, state.params, state.device, refs,
                                             written=written)
        self._emit_artifacts(step, refs, [r for v in step.inputs.values() for r in refs_in(v)])
        self.breaker.record_success(state.device)
        self.events.emit("on_attempt_succeeded", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, device=self.devices.ref(state.device),
                         duration=self.clock.now() - step.sent_at)
        self._end(step, "succeeded", None, announce_after_flush=True)

    def _emit_artifacts(self, step: StepRun, produced: list[dict[str, Any]],
                        consumed: list[dict[str, Any]]) -> None:
        """Provenance for the record: the arrays this step wrote and read (none: no event)."""
        if produced or consumed:
            self.events.emit("on_artifacts", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, produced=produced, consumed=consumed)

    def _failed(self, step: StepRun, error: ErrorInfo, handle: Any) -> None:
        state, policy = step.state, step.planned.policy
        if self.monitor is not None and error.health is None:
            error = replace(error, health=self.monitor.latest(state.device))
        self.errors += 1
        step.error = error
        self.events.emit("on_attempt_failed", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, error=error,
                         duration=self.clock.now() - step.sent_at)
        if error.error_class in DEVICE_ERRORS and state.device != "cpu":
            self.breaker.record_failure(state.device)
        if self.stopping:
            return self._end(step, "failed", _last_error(error), error)
        if not self.budget.spend():
            self._stop(f"the run's error budget (max_errors {self.budget.max_errors}) is spent")
            return self._end(step, "failed", f"{self.stopping}; {_last_error(error)}", error)
        decision = decide(policy, state, error,
                          devices=self.devices.candidates(step.planned, self.breaker,
                                                          self._load()),
                          rng=self.rng, nodes=self.devices.nodes)
        if not decision.another_attempt:
            state.advance(error, decision)
            return self._exhausted(step, error, decision.skip, decision.reason)
        self.recoveries += 1
        self.events.emit("on_recovery_applied", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, error=error, action=decision.action,
                         changes=decision.changes, next_attempt=state.attempt + 1,
                         delay=decision.delay)
        if handle is not None and decision.restart_worker:
            self.backend.replace_worker(handle)
        elif handle is not None and decision.clear_cache:
            self.backend.clear_cache(handle)
        state.advance(error, decision)
        self._delay(step, self.clock.now() + decision.delay)

    def _exhausted(self, step: StepRun, error: ErrorInfo, skip: bool, reason: str) -> None:
        if skip:
            return self._end(step, "skipped", f"skipped by its policy ({reason})", error)
        self._end(step, "failed", f"{reason}; last error {_last_error(error)}", error)
        if step.planned.policy.on_exhausted == "fail" and not self.stopping:
            self._stop(f"the run stopped after step {step.planned.id!r} failed")

    def _stop(self, reason: str) -> None:
        """Start nothing more: steps queued or waiting out a backoff are cancelled; attempts
        in flight finish (their outcome is recorded, a failure is not retried)."""
        self.stopping = reason
        for queue in self.queues.values():
            while queue:
                self._cancel(self.steps[queue.popleft()])
        while self.delayed:
            step = self.steps[heapq.heappop(self.delayed)[2]]
            if step.status == "waiting":
                self._cancel(step)

    def _cancel(self, step: StepRun) -> None:
        last = f" (its last error {_last_error(step.error)})" if step.error is not None else ""
        self._end(step, "cancelled", f"not run: {self.stopping}{last}", step.error)

    def _cancel_everything(self) -> None:
        """After a signal: cancel the attempts in flight and every step not ended."""
        for step in list(self.running.values()):
            handle = self._detach(step)
            self.backend.cancel(handle, self.stopping or "cancelled")
        for step in self.steps.values():
            if step.unfinished:
                self._cancel(step)
        self.unblocked.clear()

    def _end(self, step: StepRun, status: str, reason: str | None,
             error: ErrorInfo | None = None, *, announce_after_flush: bool = False) -> None:
        step.status, step.reason = status, reason
        self.unfinished -= 1
        self._unblock_dependents(step)
        if status in ("failed", "skipped") and reason:
            line = step.planned.block_line or step.planned.line
            where = f"{self.plan.path or '<document>'}" + (f":{line}" if line else "")
            self.problems.append(f"{where}: step {step.planned.id!r}: {status}: {reason}")
        if announce_after_flush:            # a success: once its commit is durable
            self.to_announce[step.planned.id] = step
        else:
            self._announce(step, status)

    def _announce(self, step: StepRun, status: str) -> None:
        if status == "skipped":
            self.events.emit("on_step_skipped", run_id=self.run_id, step=step.info,
                             reason=step.reason or "")
        else:
            self.events.emit("on_step_finished", run_id=self.run_id, step=step.info,
                             status=status, attempts=step.attempts,
                             output_digest=step.digest)

    def _synthetic(self, step: StepRun, error_class: str, message: str,
                   context: dict[str, Any], handle: Handle | None) -> ErrorInfo:
        """An error the scheduler saw itself (lost worker, timeout, hang); `handle` is the
        attempt's, taken before it was detached."""
        fault = self.faults.for_attempt(step.planned.id, step.state.attempt)
        return synthetic_error(error_class, message, injected=fault == error_class,
                               worker_id=handle.worker_id if handle else None,
                               device=self.devices.ref(step.state.device),
                               elapsed=round(self.clock.now() - step.sent_at, 6), **context)


def _last_error(error: ErrorInfo) -> str:
    """`KeyError: 'records' at doc.maml.md:13 (block load) [user_error]`."""
    from maml.runtime.classify import headline

    return f"{headline(error)} [{error.error_class}]"
