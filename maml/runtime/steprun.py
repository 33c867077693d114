"""The executor's book-keeping: one `StepRun` per step, and the `DeviceBook` of the machine.

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

from maml.runtime.events import DeviceRef, StepInfo
from maml.runtime.plan import PlannedStep
from maml.runtime.policies import AttemptState, CircuitBreaker

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


class DeviceBook:
    """This machine's devices as the executor needs them."""

    def __init__(self, inventory: Any = None, monitor: Any = None) -> None:
        self.inventory = inventory
        self.monitor = monitor

    def gpu_ids(self) -> list[str]:
        if self.inventory is None:
            return []
        return [d.id for d in self.inventory.devices if d.kind == "cuda"]

    def classes(self) -> set[str]:
        return {"cpu"} | ({"cuda"} if self.gpu_ids() else set())

    def slots(self, cpu_workers: int) -> dict[str, int]:
        return {"cpu": max(1, cpu_workers), **{gpu: 1 for gpu in self.gpu_ids()}}

    def ref(self, device_id: str) -> DeviceRef:
        info = self.inventory.get(device_id) if self.inventory is not None else None
        if info is not None:
            return info.ref
        kind = device_id.split(":")[0]
        index = int(device_id.split(":")[1]) if ":" in device_id else None
        return DeviceRef(id=device_id, kind=kind, index=index)

    def candidates(self, step: PlannedStep, breaker: CircuitBreaker) -> list[str]:
        """The step's preferences as device ids here, open breakers left out; never empty."""
        gpus = self.gpu_ids()
        ids: list[str] = []
        for preference in step.devices:
            if preference == "cuda":
                ids += gpus
            elif preference == "cpu" or preference in gpus:
                ids.append(preference)
        ids = [d for d in dict.fromkeys(ids) if d == "cpu" or not breaker.state(d) == "open"]
        return ids or ["cpu"]

    def place(self, step: PlannedStep, breaker: CircuitBreaker) -> str:
        """The device a step starts on: placement's choice where it exists, else the first."""
        candidates = self.candidates(step, breaker)
        chosen = self._choose(step, breaker) if self.inventory is not None else None
        return chosen if chosen in candidates else candidates[0]

    def _choose(self, step: PlannedStep, breaker: CircuitBreaker) -> str | None:
        try:
            from maml.runtime.placement import choose_device
        except ImportError:
            return None
        monitor = self.monitor
        chosen = choose_device(list(step.devices), self.inventory,
                               health=monitor.states() if monitor is not None else None,
                               latest=monitor.latest if monitor is not None else None,
                               open_breakers=breaker.is_open)
        return chosen.id if chosen is not None else None
