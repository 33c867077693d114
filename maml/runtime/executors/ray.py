"""The Ray backend: attempts run on a Ray cluster, one warm actor per device slot.

Why actors and not tasks: a kind caches what is expensive to build (a loaded model, a
transpiled circuit) in its worker, and the local backend keeps a worker per device slot for
that reason. A Ray task would start cold on every attempt; an actor per slot keeps the
cache warm across attempts and steps, and maps the interface one to one: `clear_cache` is
a call on the actor, `replace_worker`, `cancel`, timeouts and hangs are `ray.kill` (Ray
has no task timeout, and `ray.cancel(force=True)` does not apply to actor methods). Every
actor is created with `max_restarts=0` and `max_task_retries=0`: Ray never retries, maml's
policy decides every retry, so the record is the same as on the local backend.

Slots. `cluster_inventory()` reads the alive nodes: one "cpu" device (the cluster's CPUs,
one slot each unless `slots` says fewer) and one "cuda:K" device per GPU in the cluster,
numbered round-robin over the nodes (cuda:0 on the first GPU node, cuda:1 on the next), each
with its home node (`DeviceInfo.node`), so that `next_device` picks a GPU on another node
first, whatever the load order (maml.runtime.policies.actions.NextDevice). The actor of
cuda:K asks Ray for one GPU (`num_gpus=1`, or `{gpu_resource: 1}` for a custom resource,
`accelerator_type` where given) with a soft affinity to its home node: it lands there while
that node lives, elsewhere once it is gone. Ray sets CUDA_VISIBLE_DEVICES for it; inside, the step sees its
GPU as "cuda:0", and the Started event names the node id, node IP and the GPU's UUID.

Events come from each attempt's streaming generator (see _ray_actor.SlotActor); `poll`
waits on all of them with `ray.wait`. Ray's own failures become Lost (dead actor or node:
`worker_lost`) or Failed (`oom` from Ray's memory monitor, `transient` for a lost object,
`device_unavailable` when the cluster cannot be reached or no node can host the slot
within `placement_timeout` seconds).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.errors import DeviceUnavailable, require
from maml.runtime.backend import (BackendEvent, Failed, Handle, Lost, Started,
                                  event_from_worker)
from maml.runtime.classify import synthetic_error
from maml.runtime.devices.discovery import DeviceInfo, Inventory
from maml.runtime.executors._ray_actor import SlotActor, ray_failure
from maml.runtime.executors._ray_artifacts import ArtifactTransport

#: failed attempts whose actor is remembered for clear_cache / replace_worker
_REMEMBERED = 256


@dataclass
class _Running:
    handle: Handle
    slot: tuple[str, int]
    actor: Any
    stream: Any
    request: Any
    submitted: float
    where: dict[str, Any] | None = None
    expect: list[tuple[str, int]] = field(default_factory=list)   # arrays the stream brings
    writes: list[Any] = field(default_factory=list)              # their files (futures)
    result: tuple[Any, ...] | None = None         # held until `writes` are done


@dataclass
class RayBackend:
    """maml.runtime.backend.ExecutorBackend on a Ray cluster.

    `address`: the cluster ("auto", "ray://host:10001", "host:6379"); None starts a local
    Ray unless this process is already connected. `slots`: attempts at once per device
    (default: the cluster's CPUs, `workers_per_gpu` per GPU). `gpu_resource`: the Ray
    resource a GPU slot asks for ("GPU", or a custom one). `init`: extra ray.init kwargs.
    `artifacts`: how arrays reach actors on other nodes than the driver's: "auto" through
    Ray's object store (maml.runtime.executors._ray_artifacts), "files" through the run dir
    (every node must then share the driver's filesystem). `spare`: keep one CPU actor
    started ahead, which takes the place of a lost one at once (it asks Ray for no CPU, so
    it can start while every CPU is taken; once adopted, its slot is counted by maml's
    slots, not by Ray's CPU resource)."""

    address: str | None = None
    slots: Mapping[str, int] | None = None
    gpu_resource: str = "GPU"
    accelerator_type: str | None = None
    workers_per_gpu: int = 1
    placement_timeout: float = 60.0
    init: Mapping[str, Any] = field(default_factory=dict)
    artifacts: str = "auto"
    spare: bool = True

    def __post_init__(self) -> None:
        self._ray = require("ray", "ray")
        self._owns_ray = not self._ray.is_initialized()
        if self._owns_ray:
            self._connect()
        self._actor_class = self._ray.remote(max_restarts=0, max_task_retries=0)(SlotActor)
        self.inventory = cluster_inventory(self._ray, self.gpu_resource)
        self._homes = {d.id: d.node for d in self.inventory.gpus()}
        gpus = [d.id for d in self.inventory.gpus()]
        default = {"cpu": self.inventory.devices[0].cores or 1,
                   **{g: self.workers_per_gpu for g in gpus}}
        self.slots = {**default, **dict(self.slots or {})}
        self._ids = itertools.count(1)
        self._actors: dict[tuple[str, int], Any] = {}
        self._running: dict[int, _Running] = {}
        self._finished: OrderedDict[int, Any] = OrderedDict()
        self._pending: list[BackendEvent] = []
        self._nodes: dict[tuple[str, int], str] = {}     # slot -> its actor's node id
        self._spare: Any = None                         # a CPU actor started ahead
        self._spare_ready: Any = None                   # its where() call: done when up
        self._spares = itertools.count(1)
        driver = self._ray.get_runtime_context().get_node_id()
        self._artifacts = ArtifactTransport(self._ray, driver if self.artifacts == "auto"
                                            else None)

    def _connect(self) -> None:
        try:
            self._ray.init(address=self.address, include_dashboard=False,
                           log_to_driver=False, **dict(self.init))
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise DeviceUnavailable(f"cannot reach {where}: {exc}") from exc

    # -- the contract ---------------------------------------------------------------------

    def capacity(self, device: str) -> int:
        return int(self.slots.get(device, 0))

    def set_slots(self, slots: Mapping[str, int]) -> None:
        self.slots = dict(slots)

    def submit(self, request: Any) -> Handle:
        device = request.device.id
        slot = self._free_slot(device)
        actor = self._actors.get(slot) or self._start_actor(slot)
        handle = Handle(next(self._ids), request.step.id, request.attempt,
                        f"ray-{slot[0]}-{slot[1]}")
        arrays = self._artifacts.inputs_for(request, self._nodes.get(slot))
        if arrays:
            request = dataclasses.replace(request, arrays=arrays)
        stream = actor.attempt.remote(request)
        self._running[handle.id] = _Running(handle, slot, actor, stream, request,
                                            time.monotonic())
        return handle

    def poll(self, timeout: float) -> list[BackendEvent]:
        events, self._pending = self._pending, []
        if not self._running:
            time.sleep(max(0.0, timeout) if not events else 0.0)
            return events
        streams = [r.stream for r in self._running.values() if r.result is None]
        if any(r.result is not None for r in self._running.values()):
            timeout = min(timeout, 0.005)              # files being written: look again soon
        try:
            if streams:
                self._ray.wait(streams, num_returns=1, fetch_local=False,
                               timeout=0.0 if events else max(0.0, timeout))
            else:
                time.sleep(max(0.0, timeout))
        except Exception as exc:  # noqa: BLE001 - the cluster itself failed: every attempt
            return events + [self._ray_failed(r, exc) for r in list(self._running.values())]
        for running in list(self._running.values()):
            events += self._drain(running) if running.result is None else self._landed(running)
        return events + self._overdue_placements()

    def cancel(self, handle: Handle, reason: str) -> None:
        running = self._running.pop(handle.id, None)
        if running is not None:
            self._kill(running.slot, running.actor)

    def clear_cache(self, handle: Handle) -> None:
        actor = self._finished.pop(handle.id, None)
        if actor is not None and actor in self._actors.values():
            actor.release.remote()         # runs before the actor's next attempt

    def replace_worker(self, handle: Handle) -> None:
        running = self._running.pop(handle.id, None)
        actor = running.actor if running else self._finished.pop(handle.id, None)
        for slot, live in list(self._actors.items()):
            if live is actor:
                self._kill(slot, actor)

    def wait_for_spare(self, timeout: float = 60.0) -> bool:
        """Block until the spare CPU actor is up (benchmarks: a spare that had time to
        start); False if there is none or it did not come up within `timeout` seconds."""
        if self._spare_ready is None or self._spare is None:
            return False
        return bool(self._ray.wait([self._spare_ready], timeout=timeout)[0])

    def close(self) -> None:
        for slot, actor in list(self._actors.items()):
            self._kill(slot, actor)
        if self._spare is not None:
            self._kill(("cpu", -1), self._spare)
            self._spare = None
        self._running.clear()
        self._finished.clear()
        self._artifacts.close()
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()

    # -- slots and actors -----------------------------------------------------------------

    def _free_slot(self, device: str) -> tuple[str, int]:
        busy = {r.slot for r in self._running.values()}
        free = [(device, n) for n in range(self.capacity(device)) if (device, n) not in busy]
        if not free:
            raise RuntimeError(f"no free Ray slot on {device}: the scheduler asked for more "
                               f"than capacity({device!r}) = {self.capacity(device)}")
        return next((s for s in free if s in self._actors), free[0])   # a warm actor first

    def _start_actor(self, slot: tuple[str, int]) -> Any:
        """The slot's actor: the warm spare for a CPU slot, else a new one. A CPU slot's
        first actor also starts the spare, and adopting it starts the next one."""
        device, number = slot
        actor = self._take_spare() if device == "cpu" else None
        if actor is None:
            actor = self._new_actor(device, f"ray-{device}-{number}")
        self._actors[slot] = actor
        if device == "cpu" and self.spare and self._spare is None:
            self._spare = self._new_actor("cpu", f"ray-cpu-spare-{next(self._spares)}",
                                          num_cpus=0)
            self._spare_ready = self._spare.where.remote()
        return actor

    def _take_spare(self) -> Any:
        """The spare, unless it is known dead (its node gone): a dead one would cost the
        attempt given to it."""
        spare, self._spare = self._spare, None
        if spare is not None and self._ray.wait([self._spare_ready], timeout=0)[0]:
            try:
                self._ray.get(self._spare_ready)
            except Exception:  # noqa: BLE001 - dead: a new actor instead
                return None
        return spare

    def _new_actor(self, device: str, worker_id: str, num_cpus: int = 1) -> Any:
        options: dict[str, Any] = {"num_cpus": num_cpus, "scheduling_strategy": "SPREAD"}
        if device.startswith("cuda"):
            options = {"num_cpus": 0, **self._gpu_request()}
            home = self._homes.get(device)
            if home is not None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(home, soft=True)
        return self._actor_class.options(**options).remote(
            worker_id, os.getcwd(), self._artifacts.driver_node)

    def _gpu_request(self) -> dict[str, Any]:
        request: dict[str, Any] = ({"num_gpus": 1} if self.gpu_resource == "GPU"
                                   else {"resources": {self.gpu_resource: 1}})
        if self.accelerator_type:
            request["accelerator_type"] = self.accelerator_type
        return request

    def _kill(self, slot: tuple[str, int], actor: Any) -> None:
        if self._actors.get(slot) is actor:
            del self._actors[slot]
            self._nodes.pop(slot, None)
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or the cluster is gone: same result
            pass

    # -- events ---------------------------------------------------------------------------

    def _drain(self, running: _Running) -> list[BackendEvent]:
        events: list[BackendEvent] = []
        while running.handle.id in self._running and running.result is None:
            try:
                if not running.stream.next_ready():
                    if running.stream.is_finished():
                        events.append(self._lost(running, "the Ray attempt ended without "
                                                 "a result", {}))
                    break
                if running.expect:             # an output array: its ref, never fetched here
                    sha, size = running.expect.pop(0)
                    running.writes.append(self._artifacts.receive(
                        running.request.run_dir, sha, size, next(running.stream)))
                    continue
                batch = self._ray.get(next(running.stream))
            except StopIteration:
                events.append(self._lost(running, "the Ray attempt ended without a result", {}))
                break
            except Exception as exc:  # noqa: BLE001 - Ray's failures, classified
                events.append(self._ray_failed(running, exc))
                break
            events += [e for e in (self._event(running, m) for m in batch) if e is not None]
        return events

    def _event(self, running: _Running, message: tuple[Any, ...]) -> BackendEvent | None:
        kind, handle = message[0], running.handle
        if kind == "where":
            running.where = dict(message[1])
            self._nodes[running.slot] = running.where.get("node_id")
            return None
        if kind == "arrays":
            running.expect = [(sha, int(size)) for sha, size in message[1]]
            return None
        if kind == "result" and running.writes:
            running.result = message           # Succeeded once the files are written
            return None
        if kind == "started":
            where = running.where or {}
            device = dataclasses.replace(running.request.device,
                                         uuid=where.get("gpu_uuid") or running.request.device.uuid)
            return Started(handle, pid=where.get("pid"), device=device, node=self._node(running))
        if kind in ("result", "error"):
            self._end(running, failed=kind == "error")
            if kind == "error" and "restart_worker" in (message[1].context or {}):
                self._kill(running.slot, running.actor)   # it could not give memory back
        event = event_from_worker(handle, message)
        if isinstance(event, Failed):      # the record names the node the error happened on
            error = event.error
            event = dataclasses.replace(event, error=dataclasses.replace(
                error, context={**error.context, **self._node(running)}))
        return event

    def _node(self, running: _Running) -> dict[str, Any]:
        where = running.where or {}
        return {k: where[k] for k in ("node_id", "node_ip", "gpu_uuid", "cuda_visible_devices")
                if where.get(k) is not None}

    def _end(self, running: _Running, *, failed: bool) -> None:
        self._running.pop(running.handle.id, None)
        if failed:
            self._finished[running.handle.id] = running.actor
            while len(self._finished) > _REMEMBERED:
                self._finished.popitem(last=False)

    def _landed(self, running: _Running) -> list[BackendEvent]:
        """A held result whose artifact files are all written: Succeeded (or, where one
        could not be fetched from the object store, a `transient` failure)."""
        if not all(w.done() for w in running.writes):
            return []
        problems = [w.exception() for w in running.writes if w.exception() is not None]
        if problems:
            self._running.pop(running.handle.id, None)
            error = synthetic_error(
                "transient", f"an output array of the attempt could not be written on the "
                f"driver: {problems[0]}", worker_id=running.handle.worker_id,
                device=running.request.device, **self._node(running))
            return [Failed(running.handle, error, time.monotonic() - running.submitted)]
        self._end(running, failed=False)
        return [e for e in [event_from_worker(running.handle, running.result)] if e]

    def _lost(self, running: _Running, message: str, facts: dict[str, Any]) -> BackendEvent:
        self._running.pop(running.handle.id, None)
        self._kill(running.slot, running.actor)
        return Lost(running.handle, message, {**facts, **self._node(running)})

    def _ray_failed(self, running: _Running, exc: BaseException) -> BackendEvent:
        outcome, error_class, message, facts = ray_failure(exc)
        if outcome == "lost":
            return self._lost(running, message, facts)
        self._running.pop(running.handle.id, None)
        self._kill(running.slot, running.actor)
        error = synthetic_error(error_class, message, worker_id=running.handle.worker_id,
                                device=running.request.device, **facts, **self._node(running))
        return Failed(running.handle, error, time.monotonic() - running.submitted)

    def _overdue_placements(self) -> list[BackendEvent]:
        now, events = time.monotonic(), []
        for running in list(self._running.values()):
            if running.where is None and now - running.submitted > self.placement_timeout:
                free = self._ray.available_resources()
                message = (f"no Ray node could host a {running.slot[0]} slot within "
                           f"{self.placement_timeout:g} s (free now: {_resources(free)})")
                self._running.pop(running.handle.id, None)
                self._kill(running.slot, running.actor)
                error = synthetic_error("device_unavailable", message,
                                        worker_id=running.handle.worker_id,
                                        device=running.request.device)
                events.append(Failed(running.handle, error, now - running.submitted))
        return events


def cluster_inventory(ray: Any, gpu_resource: str = "GPU") -> Inventory:
    """The cluster's devices as maml names them; each GPU slot's `node` is its home node id."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [(n["NodeID"], n.get("NodeManagerAddress", "?"),
                 int(n.get("Resources", {}).get(gpu_resource, 0))) for n in nodes]
    order = [(node, ip) for k in range(max((c for _, _, c in per_node), default=0))
             for node, ip, count in per_node if k < count]
    cpus = int(sum(n.get("Resources", {}).get("CPU", 0) for n in nodes))
    cpu = DeviceInfo("cpu", "cpu", None, f"Ray cluster CPUs ({len(nodes)} nodes)",
                     cores=max(1, cpus))
    gpus = [DeviceInfo(f"cuda:{k}", "cuda", k, f"{gpu_resource} on {ip}", node=node)
            for k, (node, ip) in enumerate(order)]
    note = (f"Ray cluster: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus} CPUs, "
            f"{len(gpus)} {gpu_resource}")
    return Inventory([cpu, *gpus], "ray", note)


def _resources(free: Mapping[str, float]) -> str:
    shown = {k: v for k, v in free.items() if not k.startswith(("node:", "memory",
                                                                  "object_store"))}
    return ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items())) or "nothing"
