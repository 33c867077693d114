"""Runtime events and the observer interface.

The runtime tells observers what happens; it never imports them. The progress display,
the error graph recorder (maml.graph.record) and the device health monitor's listeners are
all observers. Every hook is keyword-only and takes `**_`, so new event fields never break
an observer written against an older set.

Order of events in one run:

    on_run_started
      on_step_started                              (once per step)
        on_device_decision                         (0..n: a device passed over, or none left)
        on_attempt_started                         (attempt 1, 2, ...)
        on_attempt_placed                          (where a backend really ran it, if it says)
        on_attempt_failed -> on_recovery_applied   (0..n times)
        on_attempt_succeeded
        on_checkpoint                              (0..n, from ctx.checkpoint inside an attempt)
      on_step_finished | on_step_skipped           (on_step_finished also for "cached" and "cancelled")
      on_device_sample / on_device_state_changed   (any time, from the health monitor)
    on_run_finished

Payloads are plain, JSON-serialisable dataclasses: an observer can store them as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any



@dataclass(frozen=True, slots=True)
class DeviceRef:
    """The device an attempt ran on. `id` is "cpu" or "cuda:N" (N as the user counts it)."""

    id: str
    kind: str = "cpu"                 # "cpu" | "cuda"
    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    total_memory: int | None = None   # bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StepInfo:
    id: str
    kind: str
    needs: tuple[str, ...] = ()
    block: str | None = None
    devices: tuple[str, ...] = ("cpu",)   # preference order as declared
    line: int | None = None               # where the step is declared in the document


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failed attempt, as classified in the worker (or by the watchdog)."""

    error_class: str                      # one of maml.runtime.classify.ERROR_CLASSES
    exception_type: str                   # qualified: "torch.OutOfMemoryError"
    message: str
    traceback: str = ""
    traceback_digest: str = ""            # sha256 of the normalised traceback
    injected: bool = False
    worker_id: str | None = None
    device: DeviceRef | None = None
    #: the device's last health sample at the time of failure, if a monitor runs
    health: dict[str, Any] | None = None
    #: extra facts: exit signal, memory at failure, elapsed time...
    context: dict[str, Any] = field(default_factory=dict)


class Observer:
    """Base observer: every hook does nothing. Subclass and override what you need."""

    def on_run_started(self, *, run_id: str, document: str | None, steps: list[StepInfo],
                       started_at: float, **_: Any) -> None: ...

    def on_step_started(self, *, run_id: str, step: StepInfo, **_: Any) -> None: ...

    def on_attempt_started(self, *, run_id: str, step: StepInfo, attempt: int,
                           device: DeviceRef, worker_id: str, params: dict[str, Any],
                           **_: Any) -> None: ...

    def on_attempt_placed(self, *, run_id: str, step: StepInfo, attempt: int,
                          device: DeviceRef | None, node: dict[str, Any], **_: Any) -> None:
        """Where the attempt really runs, as its backend reports it: the host-level device
        (GPU UUID) and, on Ray, `node` = {node_id, node_ip, gpu_uuid, ...}."""

    def on_device_decision(self, *, run_id: str, step: StepInfo, decision: str,
                           device: str | None, reasons: dict[str, str],
                           retry_at: float | None = None, **_: Any) -> None:
        """Placement passed over allowed devices ("placed", `device` chosen) or found none
        ("unavailable"); `reasons`: device id -> why (maml.runtime.devices.book)."""

    def on_attempt_failed(self, *, run_id: str, step: StepInfo, attempt: int,
                          error: ErrorInfo, duration: float, **_: Any) -> None: ...

    def on_recovery_applied(self, *, run_id: str, step: StepInfo, attempt: int,
                            error: ErrorInfo, action: str, changes: dict[str, Any],
                            next_attempt: int, delay: float, **_: Any) -> None: ...

    def on_attempt_succeeded(self, *, run_id: str, step: StepInfo, attempt: int,
                             device: DeviceRef, duration: float, **_: Any) -> None: ...

    def on_checkpoint(self, *, run_id: str, step: StepInfo, attempt: int, digest: str,
                      size: int, **_: Any) -> None: ...

    def on_step_finished(self, *, run_id: str, step: StepInfo, status: str, attempts: int,
                         output_digest: str | None, **_: Any) -> None: ...

    def on_step_skipped(self, *, run_id: str, step: StepInfo, reason: str, **_: Any) -> None: ...

    def on_device_sample(self, *, sample: dict[str, Any], **_: Any) -> None: ...

    def on_device_state_changed(self, *, device: DeviceRef, old: str, new: str,
                                sample: dict[str, Any], reasons: list[str],
                                **_: Any) -> None: ...

    def on_run_finished(self, *, run_id: str, status: str, errors: int, recoveries: int,
                        duration: float, **_: Any) -> None: ...


class Broadcaster:
    """Sends each event to every observer. An observer that raises is logged, not fatal:
    a broken progress bar must not fail a run. Observers that must not lose events
    (the graph) set `critical = True`; their exceptions propagate."""

    def __init__(self, observers: list[Any] | None = None) -> None:
        self.observers: list[Any] = list(observers or [])

    def emit(self, hook: str, **payload: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, hook, None)
            if method is None:
                continue
            try:
                method(**payload)
            except Exception:
                if getattr(observer, "critical", False):
                    raise
                import logging      # only here: a worker imports this module at start-up

                logging.getLogger(__name__).warning("observer %r failed on %s", observer,
                                                    hook, exc_info=True)
