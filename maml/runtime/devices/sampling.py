"""One health snapshot of every device of this machine: what `maml devices` prints.

GPUs are sampled through the health monitor (NVML or FakeNVML via $MAML_FAKE_NVML); the CPU
line is computed here from /proc/stat (utilisation between two snapshots) and host memory.
"""

from __future__ import annotations

import time
from typing import Any

from maml.runtime.devices.discovery import discover, host_memory
from maml.runtime.devices.health import HealthMonitor, load_thresholds
from maml.runtime.devices.nvml import NVMLUnavailable, open_provider


class Sampler:
    """Discovery once, then a fresh health sample per `snapshot()` from one open provider.

    `snapshot()` -> {"source", "note", "driver", "devices": [DeviceInfo fields + "state",
    "health"]}: a GPU's "health" is its HealthMonitor sample (None without NVML), the CPU's
    is its utilisation since the previous snapshot (percent) and host memory (bytes).
    `close()` closes the NVML provider."""

    def __init__(self) -> None:
        try:
            self.provider = open_provider()
        except NVMLUnavailable:
            self.provider = None
        self.inventory = discover(provider=self.provider) if self.provider else discover()
        self.monitor = (HealthMonitor(self.provider, devices=self.inventory.gpus(),
                                      thresholds=load_thresholds())
                        if self.provider and self.inventory.gpus() else None)
        self._cpu_before = _cpu_times()

    def snapshot(self) -> dict[str, Any]:
        samples = {s["device"]: s for s in self.monitor.sample_once()} if self.monitor else {}
        rows = []
        for device in self.inventory.devices:
            row = device.to_dict()
            if device.kind == "cpu":
                row.update(state=None, health=self._cpu_health())
            else:
                sample = samples.get(device.id)
                row.update(state=sample["state"] if sample else None, health=sample)
            rows.append(row)
        return {"source": self.inventory.source, "note": self.inventory.note,
                "driver": self.inventory.driver, "devices": rows}

    def _cpu_health(self) -> dict[str, Any]:
        now = _cpu_times()
        busy, total = (a - b for a, b in zip(now, self._cpu_before, strict=True))
        self._cpu_before = now
        mem_total, mem_free = host_memory()
        used = mem_total - mem_free if mem_total is not None and mem_free is not None else None
        return {"device": "cpu", "time": time.time(),
                "utilization_cpu": round(100 * busy / total, 1) if total > 0 else None,
                "memory_used": used, "memory_total": mem_total, "memory_free": mem_free}

    def close(self) -> None:
        if self.provider is not None:
            self.provider.close()


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies from /proc/stat; (0, 0) where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return sum(fields) - idle, sum(fields)
