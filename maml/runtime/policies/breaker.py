"""Run-wide guards: a circuit breaker per device and the run's error budget.

CircuitBreaker — a device that keeps failing stops getting work (DESIGN §4):

    closed --(`failures` failures in a row)--> open --(`cooldown` s)--> half-open
    half-open: the first `is_open()` call gets False (one trial attempt may go there);
               later calls get True until the trial reports back
    trial: record_success -> closed; record_failure -> open again, cooldown restarts

A success anywhere in the closed state resets the count: only consecutive failures open it.
A trial that never reports back (the executor asked but placed the work elsewhere) expires
after another `cooldown`, so a device can never stay shut for good by accident.
The clock is injected; tests pass a fake one and never sleep.

ErrorBudget — `max_errors` failed attempts are tolerated across the whole run; `spend()`
records one and returns False from the (max_errors + 1)-th on: the executor then stops
recovering and fails the run.

Both are shared by the executor's threads, so they hold a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _DeviceRecord:
    failures: int = 0
    opened_at: float | None = None      # None: closed
    trial_since: float | None = None    # when the half-open trial was handed out


class CircuitBreaker:
    def __init__(self, failures: int = 3, cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError(f"breaker failures must be at least 1, not {failures!r}")
        self.failures = failures
        self.cooldown = float(cooldown)
        self._clock = clock
        self._devices: dict[str, _DeviceRecord] = {}
        self._lock = threading.Lock()

    def state(self, device: str) -> str:
        """"closed", "open" or "half_open"; reads only, hands out no trial."""
        with self._lock:
            return self._state(self._devices.get(device, _DeviceRecord()), self._clock())

    def half_open_at(self, device: str) -> float | None:
        """The clock time an open breaker lets a trial through; None when not open."""
        with self._lock:
            record = self._devices.get(device)
            if record is None or record.opened_at is None:
                return None
            at = record.opened_at + self.cooldown
            return at if at > self._clock() else None

    def is_open(self, device: str) -> bool:
        """True when no work may go to `device` now. In half-open, hands out the one trial."""
        with self._lock:
            record = self._devices.get(device)
            if record is None:
                return False
            now = self._clock()
            state = self._state(record, now)
            if state != "half_open":
                return state == "open"
            if record.trial_since is not None and now - record.trial_since < self.cooldown:
                return True     # the trial is out; wait for it
            record.trial_since = now
            return False

    def record_failure(self, device: str) -> None:
        with self._lock:
            record = self._devices.setdefault(device, _DeviceRecord())
            now = self._clock()
            if record.opened_at is not None:          # a failed trial: open again
                record.opened_at, record.trial_since = now, None
                return
            record.failures += 1
            if record.failures >= self.failures:
                record.opened_at = now

    def record_success(self, device: str) -> None:
        with self._lock:
            self._devices[device] = _DeviceRecord()

    def _state(self, record: _DeviceRecord, now: float) -> str:
        if record.opened_at is None:
            return "closed"
        return "half_open" if now - record.opened_at >= self.cooldown else "open"


class ErrorBudget:
    def __init__(self, max_errors: int) -> None:
        if max_errors < 0:
            raise ValueError(f"max_errors must not be negative, not {max_errors!r}")
        self.max_errors = max_errors
        self.spent = 0
        self._lock = threading.Lock()

    def spend(self) -> bool:
        """Record one failed attempt; False once more than `max_errors` have been spent."""
        with self._lock:
            self.spent += 1
            return self.spent <= self.max_errors

    @property
    def remaining(self) -> int:
        return max(0, self.max_errors - self.spent)

    @property
    def exhausted(self) -> bool:
        return self.spent > self.max_errors
