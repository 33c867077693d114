"""The executor's book-keeping: one `StepRun` per step (the machine's `DeviceBook` lives in
`maml.runtime.devices.book`).

A StepRun holds the step's `AttemptState` (which only the executor mutates), where the step
is in its life (pending -> ready -> running [-> waiting (backoff) -> ready ...] ->
succeeded | failed | skipped | cancelled | cached), and
the watchdog's clock readings for the attempt in flight. The DeviceBook turns a step's
device preferences into concrete device ids of this machine, and asks placement (when the
devices area provides it) which one to start on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maml.runtime.events import StepInfo
from maml.runtime.plan import PlannedStep
from maml.runtime.policies import AttemptState

UNFINISHED = frozenset({"pending", "ready", "waiting", "running"})


@dataclass
class StepRun:
    planned: PlannedStep
    status: str = "pending"
    state: AttemptState = field(init=False)
    info: StepInfo = field(init=False)
    key: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    digest: str | None = None
    reason: str | None = None
    error: Any = None                 # the ErrorInfo of its last failed attempt
    attempts: int = 0                 # attempts sent (or, cached, the committed run's count)
    waiting_on: int = 0               # needs not finished yet
    not_before: float = 0.0           # clock time the next attempt may start
    handle: Any = None                # the backend Handle of the attempt in flight
    spec: Any = None                  # the StepSpec its latest attempt was sent with
    pid: int | None = None            # the process running it, once Started says so
    sent_at: float = 0.0
    started_at: float | None = None   # when the backend said the attempt began
    last_alive: float = 0.0

    def __post_init__(self) -> None:
        self.state = AttemptState(step_id=self.planned.id, params=dict(self.planned.params))
        self.info = self.planned.info()

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    def attach(self, handle: Any, now: float) -> None:
        self.handle, self.status, self.pid = handle, "running", None
        self.attempts += 1
        self.sent_at = self.last_alive = now
        self.started_at = None

    def detach(self) -> None:
        self.handle = None

    def alive(self, now: float, *, started: bool = False) -> None:
        self.last_alive = now
        if started:
            self.started_at = now

    def deadlines(self, startup_limit: float) -> list[float]:
        """Clock times at which the watchdog must look at this attempt."""
        policy = self.planned.policy
        if self.started_at is None:
            return [self.sent_at + startup_limit]
        times = []
        if policy.timeout:
            times.append(self.started_at + policy.timeout)
        if policy.heartbeat_timeout:
            times.append(self.last_alive + policy.heartbeat_timeout)
        return times

    def overdue(self, now: float, startup_limit: float) -> tuple[str, str] | None:
        """(error class, message) when the attempt in flight must be killed, else None."""
        policy = self.planned.policy
        if self.started_at is None:
            if now - self.sent_at >= startup_limit:
                return "worker_lost", f"the worker did not start the attempt in {startup_limit:g} s"
            return None
        if policy.timeout and now - self.started_at >= policy.timeout:
            return "timeout", (f"attempt {self.state.attempt} ran past its timeout of "
                               f"{policy.timeout:g} s; the watchdog killed the worker")
        if policy.heartbeat_timeout and now - self.last_alive >= policy.heartbeat_timeout:
            return "hang", (f"no sign of life for {now - self.last_alive:.2f} s (no heartbeat, "
                            f"no CPU time; heartbeat_timeout {policy.heartbeat_timeout:g} s); "
                            "the watchdog killed the worker")
        return None

