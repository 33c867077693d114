"""Runner: accepted runs, first in first out, at most `concurrency` at once.

Each run is handed to `execute(request, token)` on one of the runner's threads; that
function is the service's one seam to the runtime. `cancel()` takes a queued run off the
queue at once; a running run is stopped through its `CancelToken`, a runtime observer that
raises at the run's next event (the runtime then stops its workers and unwinds).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from maml.serve.records import RunRequest

log = logging.getLogger(__name__)


class RunCancelled(Exception):
    """Raised inside a run by its CancelToken; `reason` is "cancelled" or "shutdown"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CancelToken:
    """A runtime observer that stops its run at the next event once `cancel()` was called.
    `critical` makes the runtime let the exception through instead of logging it."""

    critical = True

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason

    def __getattr__(self, hook: str) -> Callable[..., None]:
        if not hook.startswith("on_"):
            raise AttributeError(hook)
        return self._check

    def _check(self, **payload: Any) -> None:
        # only the run's own events: a device sample arrives on the health monitor's thread,
        # which must never be the one to unwind
        if self.reason is not None and payload.get("run_id") == self.run_id:
            raise RunCancelled(self.reason)


class Runner:
    def __init__(self, execute: Callable[[RunRequest, CancelToken], None], *,
                 concurrency: int = 2) -> None:
        self._execute = execute
        self.concurrency = max(1, concurrency)
        self._queue: deque[RunRequest] = deque()
        self._running: dict[str, CancelToken] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"maml-serve-run-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def put(self, request: RunRequest) -> None:
        with self._cond:
            self._queue.append(request)
            self._cond.notify()

    def queued(self) -> list[str]:
        with self._cond:
            return [r.run_id for r in self._queue]

    def cancel(self, run_id: str) -> str | None:
        """"queued" (taken off the queue), "running" (its token is set), or None."""
        with self._cond:
            for request in self._queue:
                if request.run_id == run_id:
                    self._queue.remove(request)
                    return "queued"
            token = self._running.get(run_id)
        if token is None:
            return None
        token.cancel()
        return "running"

    def stop(self, timeout: float = 10.0) -> None:
        """Take no more runs; stop the running ones (they resume on the next start)."""
        with self._cond:
            self._stopping = True
            tokens = list(self._running.values())
            self._cond.notify_all()
        for token in tokens:
            token.cancel("shutdown")
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                request = self._queue.popleft()
                token = self._running[request.run_id] = CancelToken(request.run_id)
            try:
                self._execute(request, token)
            except Exception:   # execute records its own failures; this is a bug of ours
                log.exception("run %s: the service failed to run it", request.run_id)
            finally:
                with self._cond:
                    self._running.pop(request.run_id, None)
