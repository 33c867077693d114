"""Runner: accepted runs, first in first out, at most `concurrency` at once.

Each run is handed to `execute(request, token)` on one of the runner's threads (its
lanes); that function is the service's one seam to the runtime, and
`maml.serve.lanes.Lanes` gives each lane its own `maml.Session` (warm workers). `cancel()` takes a queued run off the queue at
once; a running run is stopped through its `CancelToken` (the runtime cancels the attempts
in flight, their process trees killed).

Lane 0 is the GPU lane: the only one whose session has GPU workers, and the only one that
takes a run that may use a GPU (`needs_gpu(request)`). Every lane takes CPU-only runs, in
submission order. So a GPU holds one worker (one CUDA context, one copy of a loaded model)
that every GPU run reuses, and two runs never place work on one GPU at once; CPU-only runs
still run side by side. The cost: GPU runs run one after another (a run that uses one of
two GPUs leaves the other idle until it ends). One pool shared by concurrent runs would
lift that, but the executor interface has one consumer per backend (one scheduler polls
it and owns its capacity); sharing it needs a multiplexer with a wakeable poll.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from maml.runtime.events import Observer
from maml.serve.records import RunRequest

log = logging.getLogger(__name__)


class CancelToken:
    """How the service stops one run: `cancel(reason)` ("cancelled" by a caller,
    "shutdown" of the server, "withdrawn" when its request could not be written) sets
    `stop`, the event `maml.run` watches: the runtime cancels the attempts in flight (their
    process trees die) and ends the run `interrupted`. The first reason given stands."""

    def __init__(self, run_id: str, lane: int = 0) -> None:
        self.run_id = run_id
        self.lane = lane                  # which runner thread runs it (0: the GPU lane)
        self.reason: str | None = None
        self.stop = threading.Event()

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = self.reason or reason
        self.stop.set()


class Acceptance:
    """Whether a submitted run's request reached the disk. The service hands the run to a
    lane before its request is synced, so the run's preparation (checks, plan, store)
    overlaps the sync; `Gate` holds the run at its start until this settles."""

    def __init__(self) -> None:
        self._settled = threading.Event()
        self.accepted = False

    def settle(self, accepted: bool) -> None:
        self.accepted = accepted
        self._settled.set()

    def wait(self) -> bool:
        self._settled.wait()
        return self.accepted


class Gate(Observer):
    """The first observer of a run not yet accepted: `on_run_started` comes before the
    scheduler submits any attempt, so no document code runs before the run is durable; a
    run whose request could not be written is stopped there (`token` reason "withdrawn")
    and ends with no attempt."""

    def __init__(self, acceptance: Acceptance, token: CancelToken) -> None:
        self.acceptance = acceptance
        self.token = token

    def on_run_started(self, **_: Any) -> None:
        if not self.acceptance.wait():
            self.token.cancel("withdrawn")


class Runner:
    def __init__(self, execute: Callable[[RunRequest, CancelToken], None], *,
                 concurrency: int = 2,
                 needs_gpu: Callable[[RunRequest], bool] = lambda request: False) -> None:
        self._execute = execute
        self._needs_gpu = needs_gpu
        self.concurrency = max(1, concurrency)
        self._queue: deque[RunRequest] = deque()
        self._running: dict[str, CancelToken] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.concurrency):
            thread = threading.Thread(target=self._loop, args=(n,), name=f"maml-serve-run-{n}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def put(self, request: RunRequest) -> None:
        with self._cond:
            self._queue.append(request)
            self._cond.notify_all()        # the lane it needs may be any of them

    def queued(self) -> list[str]:
        with self._cond:
            return [r.run_id for r in self._queue]

    def cancel(self, run_id: str, reason: str = "cancelled") -> str | None:
        """"queued" (taken off the queue), "running" (its token is set with `reason`), or
        None (neither: it has ended)."""
        with self._cond:
            for request in self._queue:
                if request.run_id == run_id:
                    self._queue.remove(request)
                    return "queued"
            token = self._running.get(run_id)
        if token is None:
            return None
        token.cancel(reason)
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

    def _next(self, lane: int) -> RunRequest | None:
        """The first queued run this lane may take (lane 0 takes any)."""
        return next((r for r in self._queue if lane == 0 or not self._needs_gpu(r)), None)

    def _loop(self, lane: int) -> None:
        while True:
            with self._cond:
                while (request := self._next(lane)) is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._queue.remove(request)
                token = self._running[request.run_id] = CancelToken(request.run_id, lane)
            try:
                self._execute(request, token)
            except Exception:   # execute records its own failures; this is a bug of ours
                log.exception("run %s: the service failed to run it", request.run_id)
            finally:
                with self._cond:
                    self._running.pop(request.run_id, None)
