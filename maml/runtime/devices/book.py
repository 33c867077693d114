"""The DeviceBook: this machine's devices as the scheduler asks about them.

It turns a step's device preferences ("cuda", "cuda:1", "cpu") into concrete device ids of
this machine, says how many attempts each device may run at once, and asks placement which
device an attempt starts on (health, free memory, open circuit breakers).
"""

from __future__ import annotations

from typing import Any

from maml.runtime.devices.placement import choose_device
from maml.runtime.events import DeviceRef
from maml.runtime.plan import PlannedStep
from maml.runtime.policies import CircuitBreaker


class DeviceBook:
    """This machine's devices as the executor needs them."""

    def __init__(self, inventory: Any = None, monitor: Any = None) -> None:
        self.inventory = inventory
        self.monitor = monitor

    def gpu_ids(self) -> list[str]:
        if self.inventory is None:
            return []
        return [d.id for d in self.inventory.devices if d.kind == "cuda"]

    def classes(self) -> set[str]:
        return {"cpu"} | ({"cuda"} if self.gpu_ids() else set())

    def slots(self, cpu_workers: int) -> dict[str, int]:
        return {"cpu": max(1, cpu_workers), **{gpu: 1 for gpu in self.gpu_ids()}}

    def ref(self, device_id: str) -> DeviceRef:
        info = self.inventory.get(device_id) if self.inventory is not None else None
        if info is not None:
            return info.ref
        kind = device_id.split(":")[0]
        index = int(device_id.split(":")[1]) if ":" in device_id else None
        return DeviceRef(id=device_id, kind=kind, index=index)

    def candidates(self, step: PlannedStep, breaker: CircuitBreaker) -> list[str]:
        """The step's preferences as device ids here, open breakers left out; never empty."""
        gpus = self.gpu_ids()
        ids: list[str] = []
        for preference in step.devices:
            if preference == "cuda":
                ids += gpus
            elif preference == "cpu" or preference in gpus:
                ids.append(preference)
        ids = [d for d in dict.fromkeys(ids) if d == "cpu" or not breaker.state(d) == "open"]
        return ids or ["cpu"]

    def place(self, step: PlannedStep, breaker: CircuitBreaker) -> str:
        """The device a step starts on: placement's choice where it exists, else the first."""
        candidates = self.candidates(step, breaker)
        chosen = self._choose(step, breaker) if self.inventory is not None else None
        return chosen if chosen in candidates else candidates[0]

    def _choose(self, step: PlannedStep, breaker: CircuitBreaker) -> str | None:
        monitor = self.monitor
        chosen = choose_device(list(step.devices), self.inventory,
                               health=monitor.states() if monitor is not None else None,
                               latest=monitor.latest if monitor is not None else None,
                               open_breakers=breaker.is_open)
        return chosen.id if chosen is not None else None
