"""The scheduler: runs a plan's steps on a backend, under their policies.

One thread, one loop. Readiness is event-driven: each step counts its unfinished needs;
when a step ends, only its dependents are looked at, and one whose count reaches zero is
begun (reused from the run store, skipped, cancelled, or queued on its device). Each turn:

    1. steps whose backoff (`not_before`) has passed join their device's ready queue;
    2. while a device has a free slot (`backend.capacity`), its queue's head is submitted;
    3. `backend.poll` waits for events until the next deadline (nothing in flight: the
       clock's idle sleep); Started/Alive feed the watchdog, Succeeded/Failed/Lost end the
       attempt;
    4. the watchdog ends attempts past `timeout` (-> `timeout`) or without a sign of life
       for `heartbeat_timeout` (-> `hang`) by cancelling them on the backend;
    5. the run store's commits of the turn are flushed (one group commit), and only then
       are those steps announced finished.

A failed attempt goes through the policies' `decide()`; the scheduler applies the decision
(new params or device, replace the worker, clear the kind's cache, a `not_before` for the
backoff) and is the only one to mutate the step's `AttemptState`. The scheduler never
touches a process: everything about workers goes through the backend
(maml.runtime.backend). Every time it reads comes from one injected clock.
"""

from __future__ import annotations

import heapq
import os
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from maml.runtime import world
from maml.runtime.artifacts import refs_in
from maml.runtime.backend import (Alive, BackendEvent, Checkpointed, Failed, Handle, Log, Lost,
                                  Progress, Started, Succeeded)
from maml.runtime.checkpoint import RunStore, cache_key, sha256_of
from maml.runtime.classify import synthetic_error
from maml.runtime.clock import Clock, SystemClock
from maml.runtime.devices.book import DeviceBook, NoDevice
from maml.runtime.events import Broadcaster, ErrorInfo
from maml.runtime.inject import FaultPlan
from maml.runtime.kinds.base import StepSpec, get_kind
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker, ErrorBudget, decide
from maml.runtime.result import RunResult, StepResult, run_status
from maml.runtime.steprun import StepRun
from maml.runtime.worker_main import AttemptRequest
from maml.vocabulary import DEVICE_ERRORS

#: an attempt whose worker has not said it began this long after it was sent is lost
STARTUP_LIMIT = 120.0
#: the longest the loop waits without looking at its deadlines (seconds)
MAX_WAIT = 0.5


class Scheduler:
    def __init__(self, plan: Plan, *, store: RunStore, broadcaster: Broadcaster,
                 devices: DeviceBook, backend: Any, faults: FaultPlan | None = None,
                 max_errors: int = 20, breaker: tuple[int, float] = (3, 60.0),
                 clock: Clock | None = None, monitor: Any = None, input_data: Any = None,
                 resume: bool = False, rng: random.Random | None = None,
                 check_output: Callable[[Any], str | None] | None = None,
                 stop: threading.Event | None = None) -> None:
        self.plan, self.store, self.events, self.backend = plan, store, broadcaster, backend
        self.run_id = store.run_id
        self.devices, self.faults = devices, faults or FaultPlan()
        self.clock = clock or SystemClock()
        self.monitor, self.input_data, self.resume = monitor, input_data, resume
        self.rng = rng or random.Random()
        self.check_output = check_output     # the run's result against Output_Schema
        self.stop = stop                     # set (signal handler, another thread): stop
        self.budget = ErrorBudget(max_errors)
        self.breaker = CircuitBreaker(breaker[0], breaker[1], clock=self.clock.now)
        if devices.on_decision is None:
            devices.on_decision = self._device_decision
        self.steps = {sid: StepRun(planned) for sid, planned in plan.steps.items()}
        self.dependents: dict[str, list[str]] = defaultdict(list)
        for sid, step in self.steps.items():
            step.waiting_on = len(step.planned.needs)
            for need in step.planned.needs:
                self.dependents[need].append(sid)
        self.unfinished = len(self.steps)
        self.unblocked: deque[str] = deque(s for s, r in self.steps.items() if not r.waiting_on)
        self.queues: dict[str, deque[str]] = defaultdict(deque)   # device -> ready steps
        self.delayed: list[tuple[float, int, str]] = []           # (not_before, seq, step)
        self.running: dict[int, StepRun] = {}                     # handle id -> step
        self.busy: dict[str, int] = defaultdict(int)              # device -> attempts in flight
        self.to_announce: list[tuple[StepRun, str]] = []          # committed this turn
        self.errors = self.recoveries = 0
        self.stopping: str | None = None      # why the run starts no more work
        self.interrupted = False
        self.problems: list[str] = []
        self._seq = 0
        self.hashes = world.FileHashes(store.state_dir / "filehashes.json")

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = self.clock.now()
        self.events.emit("on_run_started", run_id=self.run_id, document=self.plan.path,
                         steps=[s.info for s in self.steps.values()], started_at=time.time(),
                         resumed=self.resume)
        if self.monitor is not None:
            self.monitor.start()
        self.store.start_writer()
        try:
            self._settle()
            while self.unfinished:
                self._turn()
        finally:
            for step in list(self.running.values()):
                self.backend.cancel(step.handle, "the run ended")
            try:
                self._flush(wait=True)
            finally:
                self.store.close()
                self.hashes.save()
            if self.monitor is not None:
                self.monitor.stop()
        result = self._result(self.clock.now() - started)
        if self.check_output is not None and result.status in ("succeeded", "partial"):
            problem = self.check_output(result.output)
            if problem is not None:           # decided before anyone hears "succeeded"
                result.status = "failed"
                result.problems.append(problem)
        self.events.emit("on_run_finished", run_id=self.run_id, status=result.status,
                         errors=self.errors, recoveries=self.recoveries,
                         duration=result.duration)
        return result

    def interrupt(self, reason: str = "the run was interrupted") -> None:
        """Stop the run now (what SIGTERM/SIGINT ask): the attempts in flight are cancelled,
        nothing else starts, the run ends `interrupted`. Only sets flags, so a signal
        handler or another thread may call it; the loop acts at its next turn (<= 0.5 s)."""
        self.interrupted = True
        self.stopping = reason

    def _turn(self) -> None:
        if self.stop is not None and self.stop.is_set() and not self.interrupted:
            self.interrupt()
        if self.interrupted:
            self._cancel_everything()
            return
        self._release_delayed()
        self._dispatch()
        self._wait()
        self._watchdog()
        self._settle()
        self._flush()

    def _release_delayed(self) -> None:
        now = self.clock.now()
        while self.delayed and self.delayed[0][0] <= now:
            step = self.steps[heapq.heappop(self.delayed)[2]]
            if step.status == "waiting":
                self._enqueue(step)

    def _dispatch(self) -> None:
        for device, queue in self.queues.items():
            free = self.backend.capacity(device) - self.busy[device]
            while free > 0 and queue:
                self._submit(self.steps[queue.popleft()])
                free -= 1

    def _wait(self) -> None:
        now = self.clock.now()
        times = [self.delayed[0][0]] if self.delayed else []
        for step in self.running.values():
            times += step.deadlines(STARTUP_LIMIT)
        timeout = min(max(min(times, default=now + MAX_WAIT) - now, 0.0), MAX_WAIT)
        if not self.running:
            if self.delayed and not self.unblocked:
                self.clock.sleep(self.delayed[0][0] - now)
            elif not self.unblocked and self.unfinished:
                stuck = sorted(d for d, q in self.queues.items() if q)
                raise RuntimeError(f"steps are queued on {stuck} but nothing runs or waits: "
                                   "the backend gives those devices no slot")
            return
        for event in self.backend.poll(timeout):
            self._handle(event)

    def _handle(self, event: BackendEvent) -> None:
        step = self.running.get(event.handle.id)
        if step is None:
            return                              # a straggler of a cancelled attempt
        now = self.clock.now()
        if isinstance(event, (Started, Alive, Progress)):
            step.alive(now, started=isinstance(event, Started))
            if isinstance(event, Started):
                step.pid = event.pid
                if event.node or event.device is not None:    # Ray: node, IP, GPU UUID
                    self.events.emit("on_attempt_placed", run_id=self.run_id, step=step.info,
                                     attempt=step.state.attempt, device=event.device,
                                     node=dict(event.node))
        if isinstance(event, Progress):
            if isinstance(event.total, int) and event.total > 0:
                step.state.items = event.total        # what halve_batch needs to know
            self.events.emit("on_step_progress", run_id=self.run_id, step=step.info,
                             done=event.done, total=event.total, unit=event.unit)
        elif isinstance(event, Log):
            self.events.emit("on_step_log", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, message=event.message)
        elif isinstance(event, Checkpointed):
            self.events.emit("on_checkpoint", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, digest=event.digest, size=event.size)
        elif isinstance(event, Succeeded):
            self._detach(step)
            self._succeeded(step, event.output, list(event.artifacts))
        elif isinstance(event, Failed):
            handle = self._detach(step)
            self._failed(step, event.error, handle)
        elif isinstance(event, Lost):
            handle = self._detach(step)
            error = self._synthetic(step, "worker_lost", event.message, dict(event.facts),
                                    handle)
            self._failed(step, error, None)

    def _watchdog(self) -> None:
        now = self.clock.now()
        for step in list(self.running.values()):
            verdict = step.overdue(now, STARTUP_LIMIT)
            if verdict is None:
                continue
            error_class, message = verdict
            handle = self._detach(step)
            self.backend.cancel(handle, message)
            context = {"pid": step.pid} if step.pid is not None else {}
            self._failed(step, self._synthetic(step, error_class, message, context, handle),
                         None)

    def _flush(self, *, wait: bool = False) -> None:
        """Announce the steps whose commits are on disk. The store's background writer does
        one group commit (one fsync) per round, off this loop: a dependent may already run
        while its input's commit is in flight; the record never claims it before it lands."""
        durable = set(self.store.flush() if wait else self.store.take_durable())
        pending, self.to_announce = self.to_announce, []
        for step, status in pending:
            if step.planned.id in durable or status != "succeeded":
                self._announce(step, status)
            else:
                self.to_announce.append((step, status))

    def _device_decision(self, **decision: Any) -> None:
        """A placement that passed over an allowed device, or found none: the graph keeps it."""
        step = self.steps[decision.pop("step_id")]
        self.events.emit("on_device_decision", run_id=self.run_id, step=step.info, **decision)

    def progress_age(self, device_id: str) -> float | None:
        """Seconds since the step running on `device_id` last showed a sign of life, or
        None when nothing runs there (the health monitor's GPU `hang` rule reads this)."""
        now = self.clock.now()
        ages = [now - s.last_alive for s in self.running.values()
                if s.state.device == device_id]
        return min(ages) if ages else None

    # -- readiness -----------------------------------------------------------------------

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
                return f"skipped because {need!r} was {upstream.status}"
            if upstream.status == "failed" and upstream.planned.policy.on_exhausted != "continue":
                return f"skipped because its input {need!r} failed"
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
                        input_data=self.input_data)

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
        step.status, step.not_before = "waiting", verdict.retry_at
        self._seq += 1
        heapq.heappush(self.delayed, (step.not_before, self._seq, step.planned.id))
        return True

    def _load(self) -> dict[str, int]:
        """Attempts running or queued per device (placement spreads over GPUs by it)."""
        return {d: self.busy[d] + len(self.queues[d]) for d in set(self.busy) | set(self.queues)}

    def _submit(self, step: StepRun) -> None:
        planned, state = step.planned, step.state
        device = self.devices.ref(state.device)
        request = AttemptRequest(
            step=self._spec(step),
            attempt=state.attempt, device=device,
            fault=self.faults.for_attempt(planned.id, state.attempt),
            timeout=planned.policy.timeout, heartbeat_interval=_beat_interval(planned.policy),
            state_path=str(self.store.state_path(planned.id)), run_dir=str(self.store.run_dir),
            input_data=self.input_data)
        handle = self.backend.submit(request)
        step.attach(handle, self.clock.now())
        self.running[handle.id] = step
        self.busy[state.device] += 1
        self.events.emit("on_attempt_started", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, device=device, worker_id=handle.worker_id,
                         params=dict(state.params))

    def _detach(self, step: StepRun) -> Any:
        handle = step.handle
        self.running.pop(handle.id, None)
        self.busy[step.state.device] -= 1
        step.detach()
        return handle

    def _synthetic(self, step: StepRun, error_class: str, message: str,
                   context: dict[str, Any], handle: Handle | None) -> ErrorInfo:
        """An error the scheduler saw itself (lost worker, timeout, hang); `handle` is the
        attempt's, taken before it was detached."""
        fault = self.faults.for_attempt(step.planned.id, step.state.attempt)
        return synthetic_error(error_class, message, injected=fault == error_class,
                               worker_id=handle.worker_id if handle else None,
                               device=self.devices.ref(step.state.device),
                               elapsed=round(self.clock.now() - step.sent_at, 6), **context)

    # -- outcomes ------------------------------------------------------------------------

    def _succeeded(self, step: StepRun, output: Any, refs: list[dict[str, Any]]) -> None:
        state = step.state
        step.output = output
        written = world.written_digests(get_kind(step.planned.kind), self._spec(step), output,
                                        str(self.store.run_dir), self.hashes)
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
                          rng=self.rng)
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
        step.status, step.not_before = "waiting", self.clock.now() + decision.delay
        self._seq += 1
        heapq.heappush(self.delayed, (step.not_before, self._seq, step.planned.id))

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
        for sid in self.dependents.get(step.planned.id, ()):
            dependent = self.steps[sid]
            dependent.waiting_on -= 1
            if dependent.waiting_on == 0:
                self.unblocked.append(sid)
        if status in ("failed", "skipped") and reason:
            line = step.planned.block_line or step.planned.line
            where = f"{self.plan.path or '<document>'}" + (f":{line}" if line else "")
            self.problems.append(f"{where}: step {step.planned.id!r}: {status}: {reason}")
        if announce_after_flush:
            self.to_announce.append((step, status))
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

    def _result(self, duration: float) -> RunResult:
        steps = {sid: StepResult(status=s.status, attempts=s.attempts,
                                 device=s.state.device if s.attempts else None,
                                 params=dict(s.state.params), output=s.output, reason=s.reason,
                                 error=s.error)
                 for sid, s in self.steps.items()}
        status = run_status(steps, stopped=bool(self.stopping), interrupted=self.interrupted)
        sinks = [sid for sid in self.plan.sinks() if steps[sid].status in ("succeeded", "cached")]
        output = (steps[sinks[0]].output if len(sinks) == 1
                  else {sid: steps[sid].output for sid in sinks})
        return RunResult(run_id=self.run_id, status=status, steps=steps, errors=self.errors,
                         recoveries=self.recoveries, duration=duration, output=output,
                         problems=list(self.problems), run_dir=str(self.store.run_dir),
                         interrupted_by=self.stopping if self.interrupted else None)


def _last_error(error: ErrorInfo) -> str:
    """`KeyError: 'records' at doc.maml.md:13 (block load) [user_error]`."""
    from maml.runtime.classify import headline

    return f"{headline(error)} [{error.error_class}]"


def _beat_interval(policy: Any) -> float:
    if not policy.heartbeat_timeout:
        return 1.0
    return min(max(policy.heartbeat_timeout / 4.0, 0.02), 1.0)
