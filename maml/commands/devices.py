"""`maml devices [--json] [--watch [SECONDS]]`: the CPUs and GPUs a run may use, with health.

One-shot, it prints a table like gpustat's (id, name, memory used/total, utilisation,
temperature, power, health state and why) and one line saying where the list came from
("NVML not found (...); CPU only"). `--json` prints one object instead:
`{"source", "note", "driver", "devices": [{...DeviceInfo fields, "state", "health"}]}`, where
"health" is the device's sample (see maml.runtime.health) or, for the CPU, its utilisation
and memory. `--watch` refreshes every SECONDS (default 2) until Ctrl-C; with --json it
prints one object per line per refresh. Reads only; exit 0 whenever the list could be made.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

_STATE_STYLE = {"healthy": "green", "warning": "yellow", "critical": "bold red"}


class _Sampler:
    """Discovery once, then a fresh health sample per refresh from one open provider."""

    def __init__(self) -> None:
        from maml.runtime.devices import discover
        from maml.runtime.health import HealthMonitor, load_thresholds
        from maml.runtime.nvml import NVMLUnavailable, open_provider

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
        from maml.runtime.devices import host_memory

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


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


def _number(value: Any, unit: str, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def render(snapshot: dict[str, Any]) -> Any:
    """A rich renderable: the table, the reasons behind any state that is not healthy, and
    the note saying where the list came from."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for title in ("id", "name", "memory GiB", "util", "temp", "power W", "state", "why"):
        table.add_column(title, justify="right" if title in ("util", "temp") else "left")
    details = []
    for row in snapshot["devices"]:
        h = row.get("health") or {}
        reasons = h.get("reasons") or ([f"error: {h['error']}"] if h.get("error") else [])
        state = row.get("state") or "-"
        table.add_row(row["id"], row["name"] + (f" ({row['cores']} cores)" if row.get("cores") else ""),
                      f"{_gib(h.get('memory_used'))} / {_gib(row.get('total_memory'))}",
                      _number(h.get("utilization_gpu", h.get("utilization_cpu")), "%"),
                      _number(h.get("temperature"), "°C"), _power(h),
                      Text(state, style=_STATE_STYLE.get(state, "")),
                      ", ".join(reason.split(":", 1)[0] for reason in reasons))
        details += [Text(f"{row['id']}: {reason}", style=_STATE_STYLE.get(state, ""))
                    for reason in reasons]
    return Group(table, *details, Text(snapshot["note"], style="dim"))


def _power(sample: dict[str, Any]) -> str:
    if sample.get("power_w") is None:
        return "-"
    return f"{sample['power_w']:.0f} / {_number(sample.get('power_limit_w'), '')}"


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--watch", type=click.FloatRange(min=0.1), is_flag=False, flag_value=2.0,
              default=None, metavar="[SECONDS]",
              help="Refresh every SECONDS (default 2) until Ctrl-C.")
def command(as_json: bool, watch: float | None) -> None:
    """List CPUs and GPUs with their health."""
    from rich.console import Console

    sampler = _Sampler()
    try:
        if watch is None:
            time.sleep(0.1)    # a short window, so the CPU line shows real utilisation
            snapshot = sampler.snapshot()
            if as_json:
                click.echo(json.dumps(snapshot))
            else:
                Console().print(render(snapshot))
            return
        _watch(sampler, watch, as_json)
    finally:
        sampler.close()


def _watch(sampler: _Sampler, seconds: float, as_json: bool) -> None:
    from rich.console import Console
    from rich.live import Live

    try:
        if as_json:
            while True:
                time.sleep(seconds)
                click.echo(json.dumps(sampler.snapshot()))
        with Live(render(sampler.snapshot()), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(seconds)
                live.update(render(sampler.snapshot()), refresh=True)
    except KeyboardInterrupt:
        return
