"""Placement: which device an attempt runs on, and the environment that pins its worker there.

`choose_device(["cuda", "cpu"], inventory, ...)` walks the step's preferences in order. A class
("cuda") means any GPU: of those that are not critical, not behind an open circuit breaker, not
avoided (the device the last attempt failed on, for `next_device`) and with room for the step's
`memory:` hint, it picks the best by, in order: healthy before warning; a free worker slot
(`load` below `slots`: attempts already running or queued there) before a full device; the most
free memory; the fewest attempts there; the lowest index. So concurrent ready steps spread over
idle GPUs (a busy GPU with more free memory does not attract a second step while another GPU
idles), and among idle GPUs the roomiest wins. A named device ("cuda:1") must itself pass the
same checks. When nothing in a preference fits, the next preference is tried; None when
nothing fits at all.

Free memory is the freshest known: the health monitor's latest sample where one is given
(`latest=monitor.latest`), else what discovery saw. For the CPU the hint is checked against
total memory: host memory in use comes and goes (page cache, other processes), and the CPU is
the last resort that should only be refused when the step cannot fit at all.

`open_breakers` may be a collection of device ids or a callable such as
`CircuitBreaker.is_open`; a callable is asked only about the device about to be chosen, so a
half-open breaker hands its one trial to an attempt that really goes there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from maml.errors import UsageError
from maml.runtime.devices.discovery import DeviceInfo, Inventory
from maml.runtime.events import DeviceRef
from maml.vocabulary import normalise_device

_STATE_RANK = {"healthy": 0, "warning": 1}


def choose_device(preferences: Sequence[str], inventory: Inventory, *,
                  health: Mapping[str, str] | None = None,
                  open_breakers: Collection[str] | Callable[[str], bool] = (),
                  avoid: Collection[str] = (), memory: int | None = None,
                  latest: Callable[[str], Mapping[str, Any] | None] | None = None,
                  load: Mapping[str, int] | None = None, slots: int = 1,
                  ) -> DeviceInfo | None:
    health = health or {}
    is_open = open_breakers if callable(open_breakers) else open_breakers.__contains__
    for preference in preferences:
        usable = _candidates(_normalise(preference), inventory, health, avoid, memory, latest)
        for device in rank(usable, health=health, latest=latest, load=load, slots=slots):
            if not is_open(device.id):
                return device
    return None


def rank(devices: Sequence[DeviceInfo], *, health: Mapping[str, str] | None = None,
         latest: Callable[[str], Mapping[str, Any] | None] | None = None,
         load: Mapping[str, int] | None = None, slots: int = 1) -> list[DeviceInfo]:
    """`devices` best first: healthy, a free slot, most free memory, fewest attempts, index."""
    health, load = health or {}, load or {}

    def key(d: DeviceInfo) -> tuple[Any, ...]:
        busy = load.get(d.id, 0)
        return (_STATE_RANK.get(health.get(d.id, "healthy"), 1), busy >= max(1, slots),
                -(_free(d, latest) or 0), busy, d.index or 0)
    return sorted(devices, key=key)


def _normalise(preference: str) -> str:
    try:
        return normalise_device(preference)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _candidates(preference: str, inventory: Inventory, health: Mapping[str, str],
                avoid: Collection[str], memory: int | None,
                latest: Callable[[str], Mapping[str, Any] | None] | None) -> list[DeviceInfo]:
    """Devices matching one preference that may take the work, in inventory order."""
    if ":" in preference or preference == "cpu":
        matching = [d for d in inventory.devices if d.id == preference]
    else:
        matching = [d for d in inventory.devices if d.kind == preference]
    return [d for d in matching
            if health.get(d.id, "healthy") != "critical" and d.id not in avoid
            and _fits(d, memory, latest)]


def _free(device: DeviceInfo, latest: Callable[[str], Mapping[str, Any] | None] | None) -> int | None:
    sample = latest(device.id) if latest else None
    if sample and sample.get("memory_free") is not None:
        return int(sample["memory_free"])
    return device.free_memory if device.free_memory is not None else device.total_memory


def _fits(device: DeviceInfo, memory: int | None,
          latest: Callable[[str], Mapping[str, Any] | None] | None) -> bool:
    if not memory:
        return True
    room = device.total_memory if device.kind == "cpu" else _free(device, latest)
    return room is None or room >= memory     # unknown room: let the attempt find out


def worker_env(device: DeviceInfo | DeviceRef, inherited: str | None) -> dict[str, str]:
    """Environment for a worker process pinned to `device` (CUDA_VISIBLE_DEVICES,
    CUDA_DEVICE_ORDER, MAML_DEVICE).

    A GPU worker sees exactly one GPU, named by UUID where known (a UUID survives any
    reordering; a MIG instance can only be named by its UUID), so inside the worker the
    device is torch's "cuda:0" whatever the user calls it; MAML_DEVICE carries the user's
    name ("cuda:1") for messages and the record. Without a UUID, "cuda:N" is the N-th entry of
    `inherited` (the CUDA_VISIBLE_DEVICES the run was started with: what N meant to the
    user), else the N-th GPU. A CPU worker sees no GPU at all, so a step on the CPU can never
    touch (or poison) a GPU by accident.
    """
    if device.kind != "cuda":
        return {"CUDA_VISIBLE_DEVICES": "", "MAML_DEVICE": device.id}
    pin = device.uuid
    if not pin:
        entries = [e.strip() for e in (inherited or "").split(",") if e.strip()]
        index = device.index or 0
        pin = entries[index] if inherited is not None and index < len(entries) else str(index)
    return {"CUDA_VISIBLE_DEVICES": pin, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "MAML_DEVICE": device.id}
