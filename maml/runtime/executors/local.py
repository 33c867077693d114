"""The local backend: attempts run on spawned worker processes of this machine.

`WorkerPool` keeps device slots ("cpu" has `--workers N` slots, each GPU one), each filled
lazily by a `WorkerProcess` (maml.runtime.workers) and reused for every attempt on that
slot, plus one warm spare (Python up, maml imported) that takes a lost or replaced worker's
place at once. `LocalBackend` implements maml.runtime.backend on top of it: it turns the
messages on each worker's pipe and its process sentinel into backend events, and reads each
busy worker's CPU time itself so that a worker whose heartbeat thread is starved (a C
extension holding the GIL) is still seen as alive.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from maml.runtime.backend import (Alive, BackendEvent, Handle, Lost, Started,
                                  event_from_worker)
from maml.runtime.workers import WorkerProcess

#: how often a busy worker's CPU time is read (seconds)
CPU_SAMPLE_INTERVAL = 0.25
#: CPU seconds per wall second above which a worker counts as working
CPU_BUSY_FRACTION = 0.2
#: workers of failed attempts remembered for clear_cache / replace_worker
_REMEMBERED = 256


class WorkerPool:
    """Slots per device, each filled lazily by a worker; one warm spare kept started."""

    def __init__(self, slots: Mapping[str, int], *, spare: bool = True, prestart: int = 0) -> None:
        self.slots = dict(slots)
        self._mp = multiprocessing.get_context("spawn")
        self._ids = (f"w{n}" for n in itertools.count(1))
        self.workers: list[WorkerProcess] = []
        self.idle: list[WorkerProcess] = []     # started, serving no slot yet (prestarted)
        self.keep_spare = spare
        self._spare_owed = False    # the spare filled a slot; its successor starts later
        self.started = 0
        self.idle = [self._spawn() for _ in range(prestart)]
        self.spare: WorkerProcess | None = self._spawn() if spare else None

    def _spawn(self) -> WorkerProcess:
        self.started += 1
        return WorkerProcess(self._mp, next(self._ids))

    def capacity(self, device: str) -> int:
        return self.slots.get(device, 1 if device.startswith("cuda") else 0)

    def acquire(self, device: str) -> WorkerProcess | None:
        """An idle worker for `device`, a new one if a slot is free, or None."""
        serving = [w for w in self.workers if w.device == device]
        for worker in serving:
            if not worker.busy and worker.alive():
                worker.busy = True
                return worker
        for worker in [w for w in serving if not w.alive()]:
            self.discard(worker)
            serving.remove(worker)
        if len(serving) >= self.capacity(device):
            return None
        worker = self._fresh_worker()
        worker.device, worker.busy = device, True
        self.workers.append(worker)
        return worker

    def prestart(self, count: int) -> None:
        """Have `count` started workers waiting (prestarted ones and the spare), so that the
        first `count` attempts of a run start at once instead of one after another."""
        self.start_spare()
        waiting = len(self.idle) + (self.spare is not None)
        self.idle += [self._spawn() for _ in range(count - waiting)]

    def start_spare(self) -> None:
        """Start the spare owed since the last one went to fill a slot. Called when a worker
        says it is ready, ends an attempt or is discarded: not while the first workers still
        start, where a second interpreter starting beside them only slows them down (a cold
        one-step run started two workers to use one)."""
        if self._spare_owed and self.spare is None:
            self._spare_owed = False
            self.spare = self._spawn()

    def _fresh_worker(self) -> WorkerProcess:
        """A prestarted worker, else the spare (a new spare starts behind it), else a new one."""
        while self.idle:
            worker = self.idle.pop(0)
            if worker.alive():
                return worker
            worker.kill()
        worker = self.spare if self.spare is not None and self.spare.alive() else None
        if worker is None:
            if self.spare is not None:
                self.spare.kill()
            worker = self._spawn()
        self.spare, self._spare_owed = None, self.keep_spare
        return worker

    def release(self, worker: WorkerProcess) -> None:
        worker.busy = False
        self.start_spare()

    def discard(self, worker: WorkerProcess) -> None:
        """Kill a worker and free its slot; the next acquire takes the spare."""
        worker.kill()
        if worker in self.workers:
            self.workers.remove(worker)
        self.start_spare()

    def all_processes(self) -> list[WorkerProcess]:
        return self.workers + self.idle + ([self.spare] if self.spare is not None else [])

    def shutdown(self) -> None:
        """Stop every worker. An idle one is SIGKILLed and reaped at once: between attempts
        it holds nothing (what an attempt started died when the attempt ended), and waiting
        for an interpreter to tear itself down cost each run's end ~50-90 ms per worker. A
        worker still busy (closed mid-attempt) has its whole process tree killed."""
        everyone = self.all_processes()
        for worker in everyone:
            if worker.busy:
                worker.kill()
            elif worker.process.is_alive():
                worker.process.kill()
        for worker in everyone:
            worker.process.join(timeout=5)
            worker.conn.close()
        self.workers.clear()
        self.idle.clear()
        self.spare = None


@dataclass
class _Running:
    handle: Handle
    worker: WorkerProcess
    cpu: float | None = None          # the worker's CPU seconds at the last sample
    sampled: float = 0.0              # time.monotonic() of that sample


class LocalBackend:
    """maml.runtime.backend.ExecutorBackend over a WorkerPool of this machine."""

    def __init__(self, slots: Mapping[str, int], *, spare: bool = True, prestart: int = 0) -> None:
        self.pool = WorkerPool(slots, spare=spare, prestart=prestart)
        self._ids = itertools.count(1)
        self._running: dict[WorkerProcess, _Running] = {}
        self._finished: OrderedDict[int, WorkerProcess] = OrderedDict()
        self._pending: list[BackendEvent] = []

    # -- the contract ---------------------------------------------------------------------

    def capacity(self, device: str) -> int:
        return self.pool.capacity(device)

    def add_slots(self, slots: Mapping[str, int]) -> None:
        """Slots for devices found after the backend started (GPUs; a Session's next run)."""
        self.pool.slots.update(slots)

    def prestart(self, count: int) -> None:
        """Start workers now for the first `count` attempts (WorkerPool.prestart)."""
        self.pool.prestart(count)

    def submit(self, request: Any) -> Handle:
        device = request.device.id
        worker = self.pool.acquire(device)
        if worker is None:
            raise RuntimeError(f"no free worker slot on {device}: the scheduler asked for "
                               f"more than capacity({device!r}) = {self.capacity(device)}")
        handle = Handle(next(self._ids), request.step.id, request.attempt, worker.id)
        self._running[worker] = _Running(handle, worker)
        if not worker.send(("attempt", request)):
            self._lose(worker, "the worker's pipe was closed before the attempt was sent")
        return handle

    def poll(self, timeout: float) -> list[BackendEvent]:
        events, self._pending = self._pending, []
        if events:
            timeout = 0.0
        waitables = [x for w in self._running for x in (w.conn, w.sentinel)]
        if not waitables:
            time.sleep(max(0.0, timeout))
            return events
        ready = set(wait(waitables, max(0.0, timeout)))
        for worker in list(self._running):
            if worker.conn in ready or worker.sentinel in ready:
                events += self._drain(worker)
            if worker in self._running and worker.sentinel in ready:
                events += self._lose(worker, "")
        events += self._sample_cpu()
        events, self._pending = events + self._pending, []
        return events

    def cancel(self, handle: Handle, reason: str) -> None:
        worker = self._worker_of(handle)
        if worker is not None:
            self._running.pop(worker, None)
            self.pool.discard(worker)

    def clear_cache(self, handle: Handle) -> None:
        worker = self._finished.pop(handle.id, None)
        if worker is not None and worker.alive():
            worker.send(("release",))

    def replace_worker(self, handle: Handle) -> None:
        worker = self._finished.pop(handle.id, None) or self._worker_of(handle)
        if worker is not None:
            self._running.pop(worker, None)
            self.pool.discard(worker)

    def close(self) -> None:
        self._running.clear()
        self._finished.clear()
        self.pool.shutdown()

    # -- inside ---------------------------------------------------------------------------

    def _worker_of(self, handle: Handle) -> WorkerProcess | None:
        return next((w for w, r in self._running.items() if r.handle.id == handle.id), None)

    def _drain(self, worker: WorkerProcess) -> list[BackendEvent]:
        events: list[BackendEvent] = []
        while worker in self._running:
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            event = self._event(worker, message)
            if event is not None:
                events.append(event)
        return events

    def _event(self, worker: WorkerProcess, message: tuple[Any, ...]) -> BackendEvent | None:
        kind, handle = message[0], self._running[worker].handle
        if kind == "ready":
            worker.ready = True
            self.pool.start_spare()
            return None
        if kind == "started":
            return Started(handle, pid=worker.pid)
        if kind in ("result", "error"):
            self._end(worker, failed=kind == "error")
            if kind == "error" and "restart_worker" in (message[1].context or {}):
                self.pool.discard(worker)     # it exits: it could not give memory back
        return event_from_worker(handle, message)

    def _end(self, worker: WorkerProcess, *, failed: bool) -> None:
        running = self._running.pop(worker)
        self.pool.release(worker)
        if failed:
            self._finished[running.handle.id] = worker
            while len(self._finished) > _REMEMBERED:
                self._finished.popitem(last=False)

    def _lose(self, worker: WorkerProcess, message: str) -> list[BackendEvent]:
        running = self._running.pop(worker)
        facts = worker.exit_description()
        how = (f"signal {facts['signal']}" if "signal" in facts
               else f"exit code {facts.get('exitcode')}")
        self.pool.discard(worker)
        text = message or f"worker {worker.id} (pid {worker.pid}) died during the attempt: {how}"
        lost = Lost(running.handle, text, facts)
        if message:                      # found at submit: reported by the next poll
            self._pending.append(lost)
            return []
        return [lost]

    def _sample_cpu(self) -> list[BackendEvent]:
        """Alive for each busy worker whose CPU time advanced since the last sample."""
        now = time.monotonic()
        events: list[BackendEvent] = []
        for worker, running in self._running.items():
            if now - running.sampled < CPU_SAMPLE_INTERVAL:
                continue
            cpu = worker.cpu_seconds()
            if (cpu is not None and running.cpu is not None
                    and cpu - running.cpu >= CPU_BUSY_FRACTION * (now - running.sampled)):
                events.append(Alive(running.handle))
            running.cpu, running.sampled = cpu, now
        return events

