"""FakeNVML: the provider interface of maml.runtime.devices.nvml, backed by scripted GPU states.

Tests (and users' chaos tests) use it to run discovery, the health monitor and placement on a
machine without a GPU, through the same code paths the real NVML provider feeds. Each GPU has a
script: a list of partial states, each applying from `at` seconds after the fake was made
(on its injected clock). Later entries update earlier ones, so

    FakeGPU(script=[{"temperature": 60}, {"at": 10, "temperature": 88}])

is a GPU at 60 °C that overheats 10 s in. `set(index, **fields)` changes a GPU now.
Special fields: `lost: True` makes every reading raise GPUReadError(gpu_lost=True);
`unsupported: ["power_w", ...]` makes those readings None; `xid: [79]` reports those XID
events once, when the entry becomes current.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from maml.runtime.devices.nvml import GPUReadError, Memory, MigDevice, RemappedRows

GiB = 2**30

DEFAULT_STATE: dict[str, Any] = {
    "memory_used": 0, "utilization": 0, "temperature": 40, "power_w": 80.0,
    "power_limit_w": 700.0, "throttle": [], "ecc_uncorrectable": 0, "remapped_pending": False,
    "remap_failure": False, "retired_pending": False, "lost": False, "unsupported": [],
}


@dataclass
class FakeGPU:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str | None = None
    memory_total: int = 80 * GiB
    compute_capability: str = "9.0"
    script: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    #: MIG instances: dicts with uuid, name, memory_total, memory_used
    mig: list[dict[str, Any]] = field(default_factory=list)


class FakeNVML:
    source = "fake"

    def __init__(self, gpus: Iterable[FakeGPU | dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpus = [gpu if isinstance(gpu, FakeGPU) else FakeGPU(**gpu) for gpu in gpus]
        for index, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or f"GPU-fa4e0000-0000-4000-8000-{index:012d}"
        self._clock = clock
        self._start = clock()
        self._delivered: set[tuple[int, int]] = set()   # (gpu, script entry) XIDs reported
        self.closed = False

    @classmethod
    def from_file(cls, path: str) -> FakeNVML:
        """A fake from JSON: a list of FakeGPU fields, or {"gpus": [...]}. A file that cannot
        be used raises NVMLUnavailable, so callers treat it like a missing NVML."""
        from maml.runtime.devices.nvml import NVMLUnavailable

        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            gpus = data["gpus"] if isinstance(data, dict) else data
            return cls(gpus)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NVMLUnavailable(f"MAML_FAKE_NVML={path} is not usable ({exc})") from exc

    # -- scripting -------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock() - self._start

    def set(self, index: int, **fields: Any) -> None:
        """Change GPU `index` from now on (appends a script entry at the current time)."""
        self.gpus[index].script.append({"at": self.now(), **fields})

    def state(self, index: int) -> dict[str, Any]:
        current = dict(DEFAULT_STATE)
        for entry in self._current_entries(index):
            current.update({k: v for k, v in entry.items() if k not in ("at", "xid")})
        return current

    def _current_entries(self, index: int) -> list[dict[str, Any]]:
        now = self.now()
        return [entry for entry in self.gpus[index].script if entry.get("at", 0.0) <= now]

    def _reading(self, index: int, key: str) -> Any:
        current = self.state(index)
        if current["lost"]:
            raise GPUReadError(f"NVMLError_GpuIsLost: GPU {index} is lost", gpu_lost=True)
        return None if key in current["unsupported"] else current.get(key)

    # -- the provider interface ------------------------------------------------------------
    def driver_version(self) -> str | None:
        return "fake"

    def device_count(self) -> int:
        return len(self.gpus)

    def name(self, index: int) -> str | None:
        return self.gpus[index].name

    def uuid(self, index: int) -> str | None:
        return self.gpus[index].uuid

    def compute_capability(self, index: int) -> str | None:
        return self.gpus[index].compute_capability

    def memory(self, index: int, mig: int | None = None) -> Memory | None:
        if self._reading(index, "memory_used") is None:
            return None
        if mig is not None:
            instance = self.gpus[index].mig[mig]
            total, used = instance["memory_total"], instance.get("memory_used", 0)
        else:
            total, used = self.gpus[index].memory_total, self.state(index)["memory_used"]
        return Memory(total, used, max(0, total - used))

    def utilization(self, index: int) -> int | None:
        return self._reading(index, "utilization")

    def temperature(self, index: int) -> int | None:
        return self._reading(index, "temperature")

    def power_w(self, index: int) -> float | None:
        return self._reading(index, "power_w")

    def power_limit_w(self, index: int) -> float | None:
        return self._reading(index, "power_limit_w")

    def throttle_reasons(self, index: int) -> list[str] | None:
        reasons = self._reading(index, "throttle")
        return None if reasons is None else list(reasons)

    def ecc_uncorrectable(self, index: int) -> int | None:
        return self._reading(index, "ecc_uncorrectable")

    def remapped_rows(self, index: int) -> RemappedRows | None:
        pending = self._reading(index, "remapped_pending")
        if pending is None:
            return None
        return RemappedRows(0, 0, bool(pending), bool(self.state(index)["remap_failure"]))

    def retired_pages_pending(self, index: int) -> bool | None:
        return self._reading(index, "retired_pending")

    def mig_enabled(self, index: int) -> bool | None:
        return bool(self.gpus[index].mig)

    def mig_devices(self, index: int) -> list[MigDevice]:
        return [MigDevice(n, m.get("uuid"), m.get("name"), m.get("memory_total"))
                for n, m in enumerate(self.gpus[index].mig)]

    def xid_events(self) -> list[tuple[int, int]]:
        events = []
        for index in range(len(self.gpus)):
            for position, entry in enumerate(self.gpus[index].script):
                if entry.get("at", 0.0) <= self.now() and (index, position) not in self._delivered:
                    self._delivered.add((index, position))
                    events.extend((index, int(xid)) for xid in entry.get("xid", ()))
        return events

    def close(self) -> None:
        self.closed = True
