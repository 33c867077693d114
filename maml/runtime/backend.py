"""The executor interface: the one seam between the scheduler and whatever runs attempts.

The scheduler (DAG readiness, policy decisions, error budget, circuit breakers, events to
observers, the run store) decides *what* runs *where* and *what happens after a failure*.
A backend only runs attempts and reports what happened to them. Two backends exist: the
local worker pool (`maml.runtime.executors.local`) and Ray (`maml.runtime.executors.ray`).

    scheduler                                  backend
    ---------                                  -------
    backend.capacity(device) -> int            how many attempts may run there at once
    backend.submit(request) -> handle          start an attempt (never blocks on its work)
    backend.poll(timeout) -> [BackendEvent]    what happened since the last poll; waits up
                                               to `timeout` seconds when nothing has
    backend.cancel(handle, reason)             kill the attempt and its whole process tree;
                                               a Lost/Failed event is NOT sent for it
    backend.clear_cache(handle)                drop the kind's cached state in the worker
                                               that ran `handle` (models, CUDA cache)
    backend.replace_worker(handle)             the worker that ran `handle` is never used
                                               again (poisoned CUDA context)
    backend.close()                            cancel everything, stop every worker; a
                                               backend never outlives its run unless the
                                               caller owns it (a `maml.Session`)

Contract:

- `submit` returns at once. Exactly one terminal event (`Succeeded`, `Failed` or `Lost`)
  follows for every handle that is not cancelled first.
- Between `Started` and the terminal event a backend sends `Alive` whenever it has evidence
  the attempt is making progress: a heartbeat from the worker, or (read by the backend
  itself, without the worker's cooperation) its CPU time or GPU activity advancing. The
  scheduler's watchdog declares `hang` only when no `Alive` came for `heartbeat_timeout`.
- A backend never retries, never reclassifies and never changes params: every decision is
  the scheduler's, from the document's policy, so the record is the same on every backend.
- Times in events are `time.monotonic()` of the scheduler's process where a backend can
  give them; the scheduler measures with its own injected clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from maml.runtime.events import DeviceRef, ErrorInfo


@dataclass(frozen=True, slots=True)
class Handle:
    """One submitted attempt. `worker_id` names where it runs (a local worker, a Ray actor)."""

    id: int
    step_id: str
    attempt: int
    worker_id: str = ""


@dataclass(frozen=True, slots=True)
class Started:
    handle: Handle
    pid: int | None = None
    #: where it really runs: the host-level device (UUID, node id/IP on Ray)
    device: DeviceRef | None = None
    node: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Alive:
    """Evidence of progress: a heartbeat, or CPU/GPU time advancing."""

    handle: Handle


@dataclass(frozen=True, slots=True)
class Progress:
    handle: Handle
    done: int
    total: int | None
    unit: str


@dataclass(frozen=True, slots=True)
class Log:
    handle: Handle
    message: str


@dataclass(frozen=True, slots=True)
class Checkpointed:
    handle: Handle
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Succeeded:
    """The attempt returned. `output` is JSON-like data in which arrays are already
    `$artifact` references (the worker wrote them); `artifacts` lists those references."""

    handle: Handle
    output: Any
    seconds: float
    artifacts: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt raised; `error` was classified where it happened (in the worker)."""

    handle: Handle
    error: ErrorInfo
    seconds: float


@dataclass(frozen=True, slots=True)
class Lost:
    """The process (or node) running the attempt died; `facts` says how (exit code,
    signal, node id). The scheduler classifies it (`worker_lost`, `oom` for a host OOM
    kill...)."""

    handle: Handle
    message: str
    facts: dict[str, Any] = field(default_factory=dict)


BackendEvent = Started | Alive | Progress | Log | Checkpointed | Succeeded | Failed | Lost


def event_from_worker(handle: Handle, message: tuple[Any, ...]) -> BackendEvent | None:
    """The event for one message of the worker protocol (maml.runtime.worker_main) that means
    the same on every backend: heartbeat, progress, log, checkpoint, result, error. None for
    the messages a backend reads itself ("ready", "started", "where", ...)."""
    kind = message[0]
    if kind == "hb":
        return Alive(handle)
    if kind == "progress":
        return Progress(handle, message[1], message[2], message[3])
    if kind == "log":
        return Log(handle, message[1])
    if kind == "checkpoint":
        return Checkpointed(handle, message[1], message[2])
    if kind == "result":
        artifacts = tuple(message[3]) if len(message) > 3 else ()
        return Succeeded(handle, json.loads(message[1]), float(message[2]), artifacts)
    if kind == "error":
        return Failed(handle, message[1], float(message[2]))
    return None


@runtime_checkable
class ExecutorBackend(Protocol):
    """What runs attempts. See the module docstring for the contract."""

    def capacity(self, device: str) -> int: ...

    def submit(self, request: Any) -> Handle: ...

    def poll(self, timeout: float) -> list[BackendEvent]: ...

    def cancel(self, handle: Handle, reason: str) -> None: ...

    def clear_cache(self, handle: Handle) -> None: ...

    def replace_worker(self, handle: Handle) -> None: ...

    def close(self) -> None: ...
