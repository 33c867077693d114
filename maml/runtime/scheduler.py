"""The local executor: runs a plan's steps on worker processes, under their policies.

One thread, one event loop. Each turn it starts every ready step it has a free slot for,
waits on the running workers' pipes and process sentinels, handles what arrived (heartbeat,
result, error, a dead worker), and lets the watchdog kill attempts past their `timeout`
(-> `timeout`) or silent past their `heartbeat_timeout` (-> `hang`). A failed attempt goes
through the policies' `decide()`; the executor applies the decision (new params or device,
replace the worker, clear the kind's cache, back off) and is the only one to mutate the
step's `AttemptState`.

Backoff delays do not block the loop: a step waits out its delay while others run. When a
`sleep` is injected (tests), delays go through it instead, so tests assert the waits
without waiting. Each finished step is committed to the run store before it counts as done.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from typing import Any

from maml.runtime import world
from maml.runtime.artifacts import refs_in
from maml.runtime.checkpoint import RunStore, cache_key, sha256_of
from maml.runtime.classify import synthetic_error
from maml.runtime.events import Broadcaster, ErrorInfo
from maml.runtime.inject import FaultPlan
from maml.runtime.kinds.base import StepSpec, get_kind
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker, ErrorBudget, decide
from maml.runtime.result import RunResult, StepResult
from maml.runtime.devices.book import DeviceBook
from maml.runtime.steprun import StepRun
from maml.runtime.worker_main import AttemptRequest
from maml.runtime.workers import WorkerPool, WorkerProcess

#: a worker that has not begun an attempt this long after it was sent is lost
STARTUP_LIMIT = 120.0
#: errors that count against a device's circuit breaker (a user's bug is not the GPU's fault)
DEVICE_ERRORS = frozenset({"oom", "cuda_error", "device_unavailable", "hang"})


class Executor:
    def __init__(self, plan: Plan, *, store: RunStore, broadcaster: Broadcaster,
                 devices: DeviceBook, faults: FaultPlan | None = None, workers: int = 2,
                 max_errors: int = 20, breaker: tuple[int, float] = (3, 60.0),
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None, monitor: Any = None,
                 input_data: Any = None, resume: bool = False,
                 rng: random.Random | None = None) -> None:
        self.plan, self.store, self.events = plan, store, broadcaster
        self.run_id = store.run_id
        self.devices, self.faults = devices, faults or FaultPlan()
        self.clock = clock or time.monotonic
        self.sleep, self.monitor = sleep, monitor
        self.input_data, self.resume = input_data, resume
        self.rng = rng or random.Random()
        self.budget = ErrorBudget(max_errors)
        self.breaker = CircuitBreaker(breaker[0], breaker[1], clock=self.clock)
        self.pool = WorkerPool(devices.slots(workers))
        self.steps = {sid: StepRun(planned) for sid, planned in plan.steps.items()}
        self.errors = self.recoveries = 0
        self.stopping: str | None = None       # why the run stops starting work
        self.problems: list[str] = []
        self.undurable: dict[str, StepRun] = {}   # succeeded, its commit not on disk yet
        self.hashes = world.FileHashes(store.state_dir / "filehashes.json")

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = self.clock()
        self.events.emit("on_run_started", run_id=self.run_id, document=self.plan.path,
                         steps=[s.info for s in self.steps.values()], started_at=time.time(),
                         resumed=self.resume)
        if self.monitor is not None:
            self.monitor.start()
        self.store.start_writer()
        try:
            while any(s.unfinished for s in self.steps.values()):
                self._start_ready_steps()
                self._wait_and_handle()
                self._watchdog()
                self._announce(self.store.take_durable())
        finally:
            self.pool.shutdown()
            if self.monitor is not None:
                self.monitor.stop()
            durable = self.store.flush()
            self.store.close()
            self.hashes.save()
        self._announce(durable)
        result = self._result(self.clock() - started)
        self.events.emit("on_run_finished", run_id=self.run_id, status=result.status,
                         errors=self.errors, recoveries=self.recoveries,
                         duration=result.duration)
        return result

    def _announce(self, step_ids: list[str]) -> None:
        """A step counts as committed in the record only once its commit is on disk."""
        for sid in step_ids:
            step = self.undurable.pop(sid, None)
            if step is not None:
                self.events.emit("on_step_finished", run_id=self.run_id, step=step.info,
                                 status=step.status, attempts=step.state.attempt,
                                 output_digest=step.digest)

    def progress_age(self, device_id: str) -> float | None:
        """Seconds since the step running on `device_id` last sent a heartbeat, or None
        when nothing runs there (the health monitor's GPU `hang` rule reads this)."""
        now = time.monotonic()
        ages = [now - s.last_beat for s in self.steps.values()
                if s.status == "running" and s.state.device == device_id]
        return min(ages) if ages else None

    def _start_ready_steps(self) -> None:
        for step in self.steps.values():
            if step.status not in ("pending", "waiting"):
                continue
            if self.stopping:
                self._end(step, "failed" if step.status == "waiting" else "skipped",
                          f"not run: {self.stopping}")
                continue
            blocked = self._blocked_by(step)
            if blocked == "wait":
                continue
            if blocked:
                self._end(step, "skipped", blocked)
                continue
            if step.status == "pending" and self._begin(step):
                continue
            if step.status == "waiting" and time.monotonic() < step.not_before:
                continue
            worker = self.pool.acquire(step.state.device)
            if worker is not None:
                self._send_attempt(step, worker)

    def _blocked_by(self, step: StepRun) -> str | None:
        """"wait" while a need is unfinished; a reason when a need's failure skips this step."""
        for need in step.planned.needs:
            upstream = self.steps[need]
            if upstream.unfinished:
                return "wait"
            if upstream.status == "skipped":
                return f"skipped because {need!r} was skipped"
            if upstream.status == "failed" and upstream.planned.policy.on_exhausted != "continue":
                return f"skipped because {need!r} failed"
        return None

    def _begin(self, step: StepRun) -> bool:
        """First time ready: compute the cache key, reuse a committed output. True if done."""
        inputs = {n: self.steps[n].output for n in step.planned.needs
                  if self.steps[n].status in ("succeeded", "cached")}
        digests = {n: self.steps[n].digest for n in step.planned.needs}
        if self.input_data is not None:      # every step may read the run's --input
            digests["$input"] = sha256_of(self.input_data)
        planned = step.planned
        step.inputs = inputs
        reads = world.read_digests(get_kind(planned.kind), self._spec(step), planned.files,
                                   self.hashes)
        step.key = cache_key(planned.kind, planned.block_body, planned.params, digests, reads)
        self.events.emit("on_step_started", run_id=self.run_id, step=step.info)
        record = self.store.committed(planned.id) if self.resume else None
        if record is not None and record.get("key") == step.key and self._outputs_intact(
                planned.id, record):
            step.output, step.digest = record["output"], record["digest"]
            step.state.attempt = int(record.get("attempts", 0))
            step.state.params = dict(record.get("params") or planned.params)
            step.state.device = record.get("device") or "cpu"
            step.ran = True
            self._emit_artifacts(step, list(refs_in(step.output)), [])
            self._end(step, "cached", None)
            return True
        if planned.id in self.store.stale:
            self.events.emit("on_step_log", run_id=self.run_id, step=step.info, attempt=0,
                             message=f"not reused: {self.store.stale[planned.id]}")
        step.state.device = self.devices.place(planned, self.breaker)
        step.status = "waiting"
        return False

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
                    f"missing or altered"
                return False
        return True

    def _send_attempt(self, step: StepRun, worker: WorkerProcess) -> None:
        planned, state = step.planned, step.state
        device = self.devices.ref(state.device)
        request = AttemptRequest(
            step=self._spec(step),
            attempt=state.attempt, device=device,
            fault=self.faults.for_attempt(planned.id, state.attempt),
            timeout=planned.policy.timeout, heartbeat_interval=_beat_interval(planned.policy),
            state_path=str(self.store.state_path(planned.id)), run_dir=str(self.store.run_dir),
            input_data=self.input_data)
        step.attach(worker, time.monotonic(), self.clock())
        self.events.emit("on_attempt_started", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, device=device, worker_id=worker.id,
                         params=dict(state.params))
        if not worker.send(("attempt", request)):
            self._worker_died(step)

    def _wait_and_handle(self) -> None:
        running = [s for s in self.steps.values() if s.worker is not None]
        waitables: list[Any] = [w for s in running for w in (s.worker.conn, s.worker.sentinel)]
        timeout = self._next_wakeup(running)
        if not waitables:
            time.sleep(timeout)
            return
        ready = set(wait(waitables, timeout))
        for step in running:
            worker = step.worker
            if worker is None:
                continue
            if worker.conn in ready or worker.sentinel in ready:
                self._drain(step, worker)
            if step.worker is worker and worker.sentinel in ready:
                self._worker_died(step)

    def _next_wakeup(self, running: list[StepRun]) -> float:
        now = time.monotonic()
        times = [s.not_before for s in self.steps.values() if s.status == "waiting"
                 and s.worker is None]
        for step in running:
            times += step.deadlines(STARTUP_LIMIT)
        soonest = min(times, default=now + 0.5) - now
        return min(max(soonest, 0.002), 0.5)

    def _drain(self, step: StepRun, worker: WorkerProcess) -> None:
        while step.worker is worker:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            self._handle(step, worker, message)

    def _handle(self, step: StepRun, worker: WorkerProcess, message: tuple[Any, ...]) -> None:
        kind = message[0]
        now = time.monotonic()
        if kind in ("hb", "started", "progress"):
            step.beat(now, started=kind == "started")
        if kind == "ready":
            worker.ready = True
        elif kind == "progress":
            self.events.emit("on_step_progress", run_id=self.run_id, step=step.info,
                             done=message[1], total=message[2], unit=message[3])
        elif kind == "log":
            self.events.emit("on_step_log", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, message=message[1])
        elif kind == "checkpoint":
            self.events.emit("on_checkpoint", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, digest=message[1], size=message[2])
        elif kind == "result":
            self._succeeded(step, worker, json.loads(message[1]),
                            message[3] if len(message) > 3 else [])
        elif kind == "error":
            self.pool.release(worker)
            step.detach()
            self._failed(step, message[1], worker)

    def _watchdog(self) -> None:
        now = time.monotonic()
        for step in self.steps.values():
            worker = step.worker
            if worker is None:
                continue
            verdict = step.overdue(now, STARTUP_LIMIT)
            if verdict is None:
                continue
            error_class, message = verdict
            context = worker.exit_description() if not worker.alive() else {"pid": worker.pid}
            self.pool.discard(worker)
            step.detach()
            self._failed(step, self._synthetic(step, worker, error_class, message, context),
                         None)

    def _worker_died(self, step: StepRun) -> None:
        worker = step.worker
        assert worker is not None
        facts = worker.exit_description()
        how = f"signal {facts['signal']}" if "signal" in facts else f"exit code {facts['exitcode']}"
        self.pool.discard(worker)
        step.detach()
        error = self._synthetic(step, worker, "worker_lost", f"worker {worker.id} (pid "
                                f"{worker.pid}) died during the attempt: {how}", facts)
        self._failed(step, error, None)

    def _synthetic(self, step: StepRun, worker: WorkerProcess, error_class: str, message: str,
                   context: dict[str, Any]) -> ErrorInfo:
        fault = self.faults.for_attempt(step.planned.id, step.state.attempt)
        return synthetic_error(error_class, message, injected=fault == error_class,
                               worker_id=worker.id, device=self.devices.ref(step.state.device),
                               elapsed=round(self.clock() - step.attempt_clock, 6), **context)

    # -- outcomes ------------------------------------------------------------------------

    def _succeeded(self, step: StepRun, worker: WorkerProcess, output: Any,
                   refs: list[dict[str, Any]]) -> None:
        self.pool.release(worker)
        duration = self.clock() - step.attempt_clock
        step.detach()
        state = step.state
        step.output = output
        written = world.written_digests(get_kind(step.planned.kind), self._spec(step), output,
                                        str(self.store.run_dir), self.hashes)
        step.digest = self.store.commit_step(step.planned.id, step.key or "", output,
                                             state.attempt, state.params, state.device, refs,
                                             written=written)
        self.breaker.record_success(state.device)
        self.events.emit("on_attempt_succeeded", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, device=self.devices.ref(state.device),
                         duration=duration)
        self._emit_artifacts(step, refs, [r for v in step.inputs.values() for r in refs_in(v)])
        self.undurable[step.planned.id] = step
        self._end(step, "succeeded", None)

    def _emit_artifacts(self, step: StepRun, produced: list[dict[str, Any]],
                        consumed: list[dict[str, Any]]) -> None:
        """Provenance for the record: the arrays this step wrote and read (none: no event)."""
        if produced or consumed:
            self.events.emit("on_artifacts", run_id=self.run_id, step=step.info,
                             attempt=step.state.attempt, produced=produced, consumed=consumed)

    def _failed(self, step: StepRun, error: ErrorInfo, worker: WorkerProcess | None) -> None:
        state, policy = step.state, step.planned.policy
        if self.monitor is not None and error.health is None:
            error = replace(error, health=self.monitor.latest(state.device))
        self.errors += 1
        self.events.emit("on_attempt_failed", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, error=error,
                         duration=self.clock() - step.attempt_clock)
        if error.error_class in DEVICE_ERRORS and state.device != "cpu":
            self.breaker.record_failure(state.device)
        if self.stopping:
            return self._end(step, "failed", f"{error.error_class}: {error.message}", error)
        if not self.budget.spend():
            self.stopping = f"the run's error budget (max_errors {self.budget.max_errors}) is spent"
            return self._end(step, "failed", self.stopping, error)
        decision = decide(policy, state, error,
                          devices=self.devices.candidates(step.planned, self.breaker),
                          rng=self.rng)
        if decision.skip or decision.give_up:
            state.advance(error, decision)
            return self._exhausted(step, error, decision.skip, decision.reason)
        self.recoveries += 1
        self.events.emit("on_recovery_applied", run_id=self.run_id, step=step.info,
                         attempt=state.attempt, error=error, action=decision.action,
                         changes=decision.changes, next_attempt=state.attempt + 1,
                         delay=decision.delay)
        if decision.restart_worker and worker is not None:
            self.pool.discard(worker)
        elif decision.clear_cache and worker is not None:
            worker.send(("release",))
        state.advance(error, decision)
        step.status, step.not_before = "waiting", time.monotonic()
        if self.sleep is not None:
            self.sleep(decision.delay)
        else:
            step.not_before += decision.delay

    def _exhausted(self, step: StepRun, error: ErrorInfo, skip: bool, reason: str) -> None:
        last_line = (error.message.strip().splitlines() or [""])[-1]
        what = f"{error.error_class}: {last_line}"
        if skip:
            return self._end(step, "skipped", f"skipped by its policy ({reason})", error)
        on_exhausted = step.planned.policy.on_exhausted
        self._end(step, "failed", f"{reason}; last error {what}", error)
        if on_exhausted == "fail":
            self.stopping = f"step {step.planned.id!r} failed"

    def _end(self, step: StepRun, status: str, reason: str | None,
             error: ErrorInfo | None = None) -> None:
        step.status, step.reason = status, reason
        if status == "succeeded":
            return          # announced by _announce once its commit is on disk
        if status == "skipped":
            self.events.emit("on_step_skipped", run_id=self.run_id, step=step.info,
                             reason=reason or "")
        else:
            self.events.emit("on_step_finished", run_id=self.run_id, step=step.info,
                             status=status, attempts=step.state.attempt,
                             output_digest=step.digest)
        if status in ("failed", "skipped") and reason:
            line = step.planned.block_line or step.planned.line
            where = f"{self.plan.path or '<document>'}" + (f":{line}" if line else "")
            self.problems.append(f"{where}: step {step.planned.id!r}: {status}: {reason}")

    def _result(self, duration: float) -> RunResult:
        steps = {sid: StepResult(status=s.status, attempts=s.state.attempt if s.ran else 0,
                                 device=s.state.device if s.ran else None,
                                 params=dict(s.state.params), output=s.output, reason=s.reason)
                 for sid, s in self.steps.items()}
        statuses = {s.status for s in steps.values()}
        if self.stopping or "failed" in statuses and not statuses & {"succeeded", "cached"}:
            status = "failed"
        elif statuses <= {"succeeded", "cached"}:
            status = "succeeded"
        else:
            status = "partial"
        sinks = [sid for sid in self.plan.sinks() if steps[sid].status in ("succeeded", "cached")]
        output = (steps[sinks[0]].output if len(sinks) == 1
                  else {sid: steps[sid].output for sid in sinks})
        return RunResult(run_id=self.run_id, status=status, steps=steps, errors=self.errors,
                         recoveries=self.recoveries, duration=duration, output=output,
                         problems=list(self.problems), run_dir=str(self.store.run_dir))


def _beat_interval(policy: Any) -> float:
    if not policy.heartbeat_timeout:
        return 1.0
    return min(max(policy.heartbeat_timeout / 4.0, 0.02), 1.0)
