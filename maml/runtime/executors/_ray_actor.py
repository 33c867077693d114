"""What runs inside Ray: one actor per device slot, and how Ray's own failures read.

`SlotActor` holds a maml `Worker` (maml.runtime.worker_main) for the life of the actor, so a
kind's cached state (a loaded model, a compiled circuit) stays warm from one attempt to the
next exactly as in a local worker process. `attempt(request)` is a Ray streaming generator
of message batches: first ("where", location) — node id, node IP, pid, the GPU Ray assigned
and its UUID — then every message the worker would write on its pipe locally ("started",
"hb", "log", "progress", "checkpoint"); it ends after "result" or "error". Attempts run on
one long-lived thread of the actor (heartbeats flow while it works; an injected fault is
raised there, inside the Ray worker). One thread for every attempt, as a local worker's main
thread: native libraries keep per-thread state (CUDA's current context, allocator heaps:
Aer's mimalloc crashed with SIGSEGV when each attempt had a thread of its own).

`ray_failure(exc)` turns an exception Ray raised on the driver into what the scheduler
needs: ("lost", message, facts) for a dead actor or node (-> `worker_lost`), or
("failed", error_class, message, facts) for Ray's memory monitor (`oom`), a lost object
(`transient`) and an unreachable cluster (`device_unavailable`).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

#: messages after which an attempt's stream ends
_FINAL = ("result", "error")
#: how Ray's memory monitor words the death of a worker it killed (ActorDiedError's text)
_MEMORY_MONITOR_WORDS = ("memory monitor", "running low on memory")
#: seconds a batch of messages may wait for more before it is yielded (well under any
#: heartbeat interval, so the watchdog never starves)
BATCH_WINDOW = 0.02


class _QueueConn:
    """The worker's pipe, as a queue the generator reads from."""

    def __init__(self, messages: queue.SimpleQueue) -> None:
        self.messages = messages

    def send(self, message: tuple[Any, ...]) -> None:
        self.messages.put(message)


class SlotActor:
    """A warm maml worker inside a Ray actor (decorated with ray.remote by the backend)."""

    def __init__(self, worker_id: str, cwd: str | None = None,
                 driver_node: str | None = None) -> None:
        from maml.runtime.worker_main import Worker

        if cwd and os.path.isdir(cwd):      # the driver's directory, where it exists here:
            os.chdir(cwd)                   # relative paths in steps mean what they do locally

        self._messages: queue.SimpleQueue = queue.SimpleQueue()
        self._worker = Worker(_QueueConn(self._messages), worker_id)
        self._where = location()
        self._outgoing: dict[str, Any] = {}      # sha256 -> output array for the object store
        if driver_node is not None and driver_node != self._where["node_id"]:
            self._worker.store_array = self._hold   # no file here: the driver writes it
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run_attempts, daemon=True,
                         name=f"maml-attempts-{worker_id}").start()

    def _run_attempts(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                self._worker.release()
            else:
                self._worker.run_attempt(request)

    def where(self) -> dict[str, Any]:
        return dict(self._where)

    def attempt(self, request: Any) -> Iterator[Any]:
        """Yields batches of messages: whatever the worker wrote since the last yield (one
        object in Ray's store per batch, not per heartbeat). Output arrays held for the
        object store come before the result: a batch ending ("arrays", [(sha256, bytes)...]),
        then each array as an item of its own (owned by the driver, so it outlives this
        actor), then the result."""
        self._outgoing = {}
        if request.arrays:                  # input artifacts from the object store
            shas = list(request.arrays)
            values = ray_get([request.arrays[sha] for sha in shas])
            request = dataclasses.replace(request, arrays=dict(zip(shas, values)))
        self._requests.put(as_seen_here(request, self._where))
        batch: list[tuple[Any, ...]] = [("where", self._where)]
        while True:
            batch += self._collect()
            if batch and batch[-1][0] in _FINAL:
                break
            yield batch
            batch = []
        arrays, self._outgoing = self._outgoing, {}
        if batch[-1][0] == "result" and arrays:
            result = batch.pop()
            yield [*batch, ("arrays", [(sha, a.nbytes) for sha, a in arrays.items()])]
            for array in arrays.values():     # (not `yield from`: Ray sends into it)
                yield array
            batch = [result]
        yield batch

    def _hold(self, array: Any) -> dict[str, Any]:
        """The worker's store for output arrays on a node without the driver's run dir."""
        from maml.runtime.artifacts import REF_KEY, hash_array

        ref = hash_array(array)
        self._outgoing[ref[REF_KEY]] = array
        return ref

    def _collect(self) -> list[tuple[Any, ...]]:
        """The next message, and whatever follows within BATCH_WINDOW: a short attempt's
        whole life (started, heartbeat, result) is one object in Ray's store."""
        batch = [self._messages.get()]
        deadline = time.monotonic() + BATCH_WINDOW
        while batch[-1][0] not in _FINAL and (left := deadline - time.monotonic()) > 0:
            try:
                batch.append(self._messages.get(timeout=left))
            except queue.Empty:
                break
        return [m for m in batch if m[0] != "released"]

    def release(self) -> bool:
        """Drop the kinds' cached state (the backend's clear_cache), on the attempts' thread
        before the next attempt."""
        self._requests.put(None)
        return True


def ray_get(refs: list[Any]) -> list[Any]:
    import ray

    return ray.get(refs)


def location() -> dict[str, Any]:
    """Where this actor runs: node id and IP, pid, the GPU Ray assigned (its UUID where
    NVML can read it), CUDA_VISIBLE_DEVICES as Ray set it, the resources it holds."""
    import ray

    context = ray.get_runtime_context()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu_ids = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(), "gpu_ids": gpu_ids, "cuda_visible_devices": visible,
            "gpu_uuid": _gpu_uuid() if gpu_ids else None,
            "resources": {k: float(v) for k, v in context.get_assigned_resources().items()}}


def _gpu_uuid() -> str | None:
    """The UUID of the one GPU this process sees (Ray set CUDA_VISIBLE_DEVICES), via NVML."""
    from maml.runtime.devices.discovery import discover
    from maml.runtime.devices.nvml import NVMLUnavailable, open_provider

    try:
        provider = open_provider()
    except NVMLUnavailable:
        return None
    try:
        gpus = discover(provider=provider).gpus()
    finally:
        provider.close()
    return gpus[0].uuid if gpus else None


def as_seen_here(request: Any, where: dict[str, Any]) -> Any:
    """The request as this actor sees it: a GPU step's device becomes "cuda:0", the one GPU
    Ray left visible, with that GPU's UUID; the scheduler's slot id stays in the record."""
    device = request.device
    if device.kind != "cuda" or len(where.get("gpu_ids") or []) != 1:
        return request
    here = dataclasses.replace(device, id="cuda:0", index=0,
                               uuid=where.get("gpu_uuid") or device.uuid)
    return dataclasses.replace(request, device=here)


def ray_failure(exc: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    """(outcome, error_class, message, facts) for an exception Ray raised on the driver.
    outcome is "lost" (the scheduler makes it `worker_lost`) or "failed"."""
    from ray import exceptions as rex

    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    facts: dict[str, Any] = {"ray_error": type(exc).__name__}
    if isinstance(exc, rex.OutOfMemoryError) or any(
            words in str(exc) for words in _MEMORY_MONITOR_WORDS):    # an actor it killed
        return "failed", "oom", f"Ray's memory monitor killed the worker: {first}", facts
    if isinstance(exc, (rex.ObjectLostError, rex.ObjectFetchTimedOutError)):
        return "failed", "transient", f"Ray lost an object of the attempt: {first}", facts
    if isinstance(exc, rex.ActorUnavailableError):
        return "failed", "transient", f"the Ray actor is unreachable for now: {first}", facts
    if isinstance(exc, (rex.ActorDiedError, rex.RayActorError, rex.WorkerCrashedError,
                        rex.NodeDiedError)):
        if "node" in str(exc).lower() and "died" in str(exc).lower():
            facts["node_died"] = True
        return "lost", "worker_lost", f"the Ray worker died during the attempt: {first}", facts
    if isinstance(exc, (rex.RaySystemError, rex.GetTimeoutError, ConnectionError)):
        return "failed", "device_unavailable", f"the Ray cluster is unreachable: {first}", facts
    return "lost", "worker_lost", f"Ray failed the attempt: {type(exc).__name__}: {first}", facts
