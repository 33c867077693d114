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

The Scheduler is three modules, one part of a run each:

    scheduler.py   the run's life: the loop above, the backend's events, the watchdog,
                   submitting and detaching attempts, announcing durable commits, the result
    readiness.py   when a step may start and where it queues (Readiness)
    recovery.py    what an attempt's end means: commit, decide, retry, stop (Recovery)
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from maml.runtime import world
from maml.runtime.backend import (Alive, BackendEvent, Checkpointed, Failed, Log, Lost,
                                  Progress, Started, Succeeded)
from maml.runtime.checkpoint import RunStore
from maml.runtime.clock import Clock, SystemClock
from maml.runtime.devices.book import DeviceBook
from maml.runtime.events import Broadcaster
from maml.runtime.inject import FaultPlan
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker, ErrorBudget
from maml.runtime.readiness import Readiness
from maml.runtime.recovery import Recovery
from maml.runtime.result import RunResult, StepResult, counts, run_status
from maml.runtime.steprun import StepRun
from maml.runtime.worker_main import AttemptRequest

#: an attempt whose worker has not said it began this long after it was sent is lost
STARTUP_LIMIT = 120.0
#: the longest the loop waits without looking at its deadlines (seconds)
MAX_WAIT = 0.5


class Scheduler(Readiness, Recovery):
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
        self.to_announce: dict[str, StepRun] = {}                 # succeeded, not durable yet
        self.errors = self.recoveries = 0
        self.stopping: str | None = None      # why the run starts no more work
        self.interrupted = False
        self.problems: list[str] = []
        self._seq = 0
        self.hashes = world.FileHashes(store.state_dir / "filehashes.json")
        # where a step's paths may fall, for kinds to check again where they open them
        self.path_roots = (store.run_dir_str, *plan.allowed_paths)

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
        self.store.write_ending(result.status, result.duration, counts(result.steps))
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
        for step_id in self.store.flush() if wait else self.store.take_durable():
            step = self.to_announce.pop(step_id, None)
            if step is not None:
                self._announce(step, "succeeded")

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

    def _submit(self, step: StepRun) -> None:
        planned, state = step.planned, step.state
        device = self.devices.ref(state.device)
        step.spec = self._spec(step)          # what this attempt runs (its params now)
        request = AttemptRequest(
            step=step.spec,
            attempt=state.attempt, device=device,
            fault=self.faults.for_attempt(planned.id, state.attempt),
            timeout=planned.policy.timeout, heartbeat_interval=_beat_interval(planned.policy),
            state_path=self.store.state_path(planned.id), run_dir=self.store.run_dir_str,
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


def _beat_interval(policy: Any) -> float:
    if not policy.heartbeat_timeout:
        return 1.0
    return min(max(policy.heartbeat_timeout / 4.0, 0.02), 1.0)
