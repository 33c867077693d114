"""EventHub: the runtime observer behind the live API, the dashboard and SSE.

Each runtime event becomes one plain JSON event `{"seq", "type", "run_id", "t", ...}`;
the hub appends it to the run's event log, folds it into the run's `RunView` (what
`GET /api/v1/runs/{id}` shows while the run is on) and hands it to every subscriber.
Event types: run_queued, run_started, step_started, attempt_started, attempt_failed
(error class, exception, device), recovery_applied (action, changes), attempt_succeeded,
step_finished (status), step_skipped, step_log, step_progress, run_finished, run_cancelled.

`run_finished` is published by the runner once the run's final record is written (the
runtime's own end-of-run event precedes the Output_Schema check), so a client that sees it
can read the final result. Runtime events come from runner threads; subscribers live on the server's asyncio loop, so
delivery goes through `loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from maml.runtime.events import Observer

#: events shown live but not kept in the run's log (they can be many)
TRANSIENT = frozenset({"step_progress"})


@dataclass
class RunView:
    """A run as far as its events tell: the dashboard's and the API's live state."""

    run_id: str
    status: str = "queued"
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    dag: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    recoveries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    seq: int = 0                       # the last event folded in

    def step(self, step_id: str) -> dict[str, Any]:
        return self.steps.setdefault(step_id, {"status": "pending", "attempts": 0,
                                               "device": None, "params": {}, "output": None,
                                               "error": None, "history": []})

    def fold(self, event: dict[str, Any]) -> None:
        """Apply one event (in order) to the view."""
        self.seq = max(self.seq, event.get("seq", 0))
        handler = getattr(self, f"_on_{event['type']}", None)
        if handler is not None:
            handler(event)

    def _on_run_queued(self, e: dict[str, Any]) -> None:
        self.status, self.dag = "queued", e["steps"]
        for info in e["steps"]:
            self.step(info["id"])

    def _on_run_requeued(self, e: dict[str, Any]) -> None:
        self.status = "queued"

    def _on_run_started(self, e: dict[str, Any]) -> None:
        self.status, self.started_at = "running", e["t"]
        self.dag = e["steps"]
        for info in e["steps"]:
            self.step(info["id"])

    def _on_step_started(self, e: dict[str, Any]) -> None:
        self.step(e["step"])["status"] = "waiting"

    def _on_attempt_started(self, e: dict[str, Any]) -> None:
        step = self.step(e["step"])
        step.update(status="running", attempts=e["attempt"], device=e["device"],
                    params=e["params"])
        step["history"].append({"attempt": e["attempt"], "device": e["device"],
                                "status": "running"})

    def _on_attempt_failed(self, e: dict[str, Any]) -> None:
        self.errors += 1
        step = self.step(e["step"])
        step["status"] = "failed"
        step["error"] = {"class": e["error_class"], "type": e["exception_type"],
                         "message": e["message"], "device": e["device"],
                         "injected": e["injected"]}
        self._attempt(step, e["attempt"]).update(status="failed", error=step["error"])

    def _on_recovery_applied(self, e: dict[str, Any]) -> None:
        self.recoveries += 1
        step = self.step(e["step"])
        step["status"] = "recovered"
        self._attempt(step, e["attempt"])["recovery"] = {"action": e["action"],
                                                          "changes": e["changes"]}

    def _on_attempt_succeeded(self, e: dict[str, Any]) -> None:
        step = self.step(e["step"])
        self._attempt(step, e["attempt"])["status"] = "succeeded"

    def _on_step_finished(self, e: dict[str, Any]) -> None:
        step = self.step(e["step"])
        step["status"] = e["status"]
        if e["status"] in ("succeeded", "cached"):
            step["error"] = None

    def _on_step_skipped(self, e: dict[str, Any]) -> None:
        self.step(e["step"]).update(status="skipped", reason=e.get("reason"))

    def _on_run_finished(self, e: dict[str, Any]) -> None:
        self.status, self.finished_at = e["status"], e["t"]

    def _on_run_cancelled(self, e: dict[str, Any]) -> None:
        self.status, self.finished_at = "cancelled", e["t"]
        for step in self.steps.values():
            if step["status"] in ("pending", "waiting", "running", "recovered"):
                step["status"] = "cancelled"

    @staticmethod
    def _attempt(step: dict[str, Any], attempt: int) -> dict[str, Any]:
        for entry in reversed(step["history"]):
            if entry["attempt"] == attempt:
                return entry
        entry = {"attempt": attempt, "status": "running"}
        step["history"].append(entry)
        return entry


def _error_fields(error: Any) -> dict[str, Any]:
    return {"error_class": error.error_class, "exception_type": error.exception_type,
            "message": error.message[:2000], "injected": error.injected,
            "device": error.device.id if error.device is not None else None}


class EventHub(Observer):
    """Observer of every run the service executes; see the module docstring."""

    def __init__(self, persist: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self._persist = persist
        self._lock = threading.Lock()
        self._seq = 0
        self.views: dict[str, RunView] = {}
        self._subscribers: list[tuple[str | None, asyncio.AbstractEventLoop, asyncio.Queue]] = []

    # -- publishing -----------------------------------------------------------------------

    def publish(self, run_id: str, type_: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            view = self.views.setdefault(run_id, RunView(run_id))
            self._seq = max(self._seq, view.seq) + 1
            event = {"seq": self._seq, "type": type_, "run_id": run_id, "t": time.time(),
                     **fields}
            view.fold(event)
            if self._persist is not None and type_ not in TRANSIENT:
                self._persist(run_id, event)
            subscribers = list(self._subscribers)
        for wanted, loop, queue in subscribers:
            if wanted in (None, run_id):
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
                except RuntimeError:      # that loop has closed: the subscriber is gone
                    self.unsubscribe(queue)
        return event

    def restore(self, run_id: str, events: list[dict[str, Any]]) -> RunView:
        """Rebuild a run's view from its logged events (after a restart)."""
        view = RunView(run_id)
        for event in events:
            view.fold(event)
        with self._lock:
            self.views[run_id] = view
            self._seq = max(self._seq, view.seq)
        return view

    # -- subscribing (on the asyncio loop) ------------------------------------------------

    def subscribe(self, run_id: str | None) -> asyncio.Queue:
        """A queue that receives every later event of `run_id` (None: of every run)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._subscribers.append((run_id, asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s[2] is not queue]

    # -- the runtime's hooks --------------------------------------------------------------

    def on_run_started(self, *, run_id: str, steps: list[Any], resumed: bool = False,
                       **_: Any) -> None:
        dag = [{"id": s.id, "kind": s.kind, "needs": list(s.needs), "devices": list(s.devices),
                "line": s.line} for s in steps]
        self.publish(run_id, "run_started", steps=dag, resumed=resumed)

    def on_step_started(self, *, run_id: str, step: Any, **_: Any) -> None:
        self.publish(run_id, "step_started", step=step.id)

    def on_attempt_started(self, *, run_id: str, step: Any, attempt: int, device: Any,
                           worker_id: str, params: dict[str, Any], **_: Any) -> None:
        self.publish(run_id, "attempt_started", step=step.id, attempt=attempt,
                     device=device.id, worker=worker_id, params=params)

    def on_attempt_failed(self, *, run_id: str, step: Any, attempt: int, error: Any,
                          duration: float, **_: Any) -> None:
        self.publish(run_id, "attempt_failed", step=step.id, attempt=attempt,
                     duration=duration, **_error_fields(error))

    def on_recovery_applied(self, *, run_id: str, step: Any, attempt: int, error: Any,
                            action: str, changes: dict[str, Any], next_attempt: int,
                            delay: float, **_: Any) -> None:
        self.publish(run_id, "recovery_applied", step=step.id, attempt=attempt,
                     error_class=error.error_class, action=action, changes=changes,
                     next_attempt=next_attempt, delay=delay)

    def on_attempt_succeeded(self, *, run_id: str, step: Any, attempt: int, device: Any,
                             duration: float, **_: Any) -> None:
        self.publish(run_id, "attempt_succeeded", step=step.id, attempt=attempt,
                     device=device.id, duration=duration)

    def on_step_finished(self, *, run_id: str, step: Any, status: str, attempts: int,
                         **_: Any) -> None:
        self.publish(run_id, "step_finished", step=step.id, status=status, attempts=attempts)

    def on_step_skipped(self, *, run_id: str, step: Any, reason: str, **_: Any) -> None:
        self.publish(run_id, "step_skipped", step=step.id, reason=reason)

    def on_step_log(self, *, run_id: str, step: Any, attempt: int, message: str,
                    **_: Any) -> None:
        self.publish(run_id, "step_log", step=step.id, attempt=attempt, message=message)

    def on_step_progress(self, *, run_id: str, step: Any, done: int, total: int | None,
                         unit: str, **_: Any) -> None:
        self.publish(run_id, "step_progress", step=step.id, done=done, total=total, unit=unit)
