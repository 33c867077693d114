"""Lanes: one warm `maml.Session` per runner thread, and which lane may run what.

Lane 0 is the GPU lane (see maml.serve.runner): its session has a worker per GPU; the
other lanes' sessions see no GPU at all, so a run placed there never puts a step on one.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any


def uses_gpu(dag: list[dict[str, Any]]) -> bool:
    """Whether a step of a planned run (intake.dag) may be placed on a GPU."""
    return any(device.startswith("cuda") for step in dag for device in step["devices"])


def lane_session(inventory: Any, workers: int | None, gpu: bool) -> Any:
    """A lane's maml.Session over `inventory` (discovered once by the service, so no run
    probes NVML again): warm CPU workers, and on the GPU lane one worker per GPU."""
    import maml
    from maml.runtime.devices.book import DeviceBook
    from maml.runtime.executors.local import LocalBackend
    from maml.runtime.launch import default_workers

    workers = workers or default_workers()
    if not gpu and inventory is not None:
        inventory = dataclasses.replace(inventory, devices=[
            d for d in inventory.devices if d.kind != "cuda"])
    slots = DeviceBook(inventory).slots(workers)
    return maml.Session(workers=workers, backend=LocalBackend(slots, prestart=1),
                        inventory=inventory)


class Lanes:
    """One warm session (executor backend) per runner thread, made on the thread's first run
    by `factory(gpu)` (gpu: the GPU lane's, with a worker per GPU) and kept for the next
    ones (its workers keep their loaded models); a session serves one run at a time, as
    maml.Session requires, since a thread runs one run at a time."""

    def __init__(self, factory: Callable[[bool], Any]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def current(self, gpu: bool = False) -> Any:
        backend = getattr(self._local, "backend", None)
        if backend is None:
            backend = self._local.backend = self._factory(gpu)
            with self._lock:
                self._all.append(backend)
        return backend

    def drop(self) -> None:
        """Close this thread's backend (after a run that broke); the next run makes one."""
        backend = getattr(self._local, "backend", None)
        if backend is not None:
            self._local.backend = None
            with self._lock:
                self._all.remove(backend)
            backend.close()

    def close(self) -> None:
        with self._lock:
            backends, self._all = self._all, []
        for backend in backends:
            backend.close()
