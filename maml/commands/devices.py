"""`maml devices [--json] [--watch [SECONDS]]`: the CPUs and GPUs a run may use, with health.

One-shot, it prints a table like gpustat's (id, name, memory used/total, utilisation,
temperature, power, health state and why) and one line saying where the list came from
("NVML not found (...); CPU only"). `--json` prints one object instead:
`{"source", "note", "driver", "devices": [{...DeviceInfo fields, "state", "health"}]}`, where
"health" is the device's sample (see maml.runtime.devices.sampling). `--watch` refreshes
every SECONDS (default 2) until Ctrl-C; with --json it
prints one object per line per refresh. Reads only; exit 0 whenever the list could be made.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from maml.runtime.devices.sampling import Sampler

_STATE_STYLE = {"healthy": "green", "warning": "yellow", "critical": "bold red"}


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

    from maml.runtime.devices.sampling import Sampler

    sampler = Sampler()
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


def _watch(sampler: Sampler, seconds: float, as_json: bool) -> None:
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
