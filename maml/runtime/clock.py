"""The one clock the scheduler reads: deadlines, backoff (`not_before`) and durations.

Production uses `SystemClock` (monotonic seconds; an idle wait really sleeps). Tests inject
`FakeClock`, whose idle wait advances its time instead of sleeping: the scheduler takes the
same non-blocking path either way (a step in backoff gets a `not_before`; the loop goes on
serving other steps and waits only when there is nothing else to do).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (never goes back)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` with nothing in flight (the scheduler's only idle wait)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock whose idle waits take no time: `sleep` (and `advance`) move it on at once.

    By default it moves only then. With `real_time=True` it also runs with the monotonic
    clock, so timeouts and heartbeats of real workers still expire, while backoff waits
    (the scheduler sleeps only when nothing is in flight) are skipped, not waited."""

    def __init__(self, start: float = 1000.0, *, real_time: bool = False) -> None:
        self.t = start
        self.idle: list[float] = []      # every idle wait, in seconds
        self._origin = time.monotonic() if real_time else None

    def now(self) -> float:
        if self._origin is None:
            return self.t
        return self.t + time.monotonic() - self._origin

    def sleep(self, seconds: float) -> None:
        self.idle.append(seconds)
        self.t += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds
