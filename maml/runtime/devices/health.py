"""GPU health: thresholds, the classification of one sample, and the monitor that samples.

Each GPU is "healthy", "warning" or "critical". Placement skips critical devices; warnings are
recorded and ranked after healthy devices. The rules (thresholds from the seeds, configurable):

    temperature  >= 83 °C warning, >= 85 °C critical, >= 90 °C critical ("temperature_shutdown")
    memory used  >= 90 % warning, >= 95 % critical
    hang         utilisation >= 99 % for 30 s while the step on the device made no heartbeat
                 progress for 30 s (progress_age) -> critical
    ECC          volatile uncorrectable errors, a pending row remap, a failed remap or pending
                 retired pages -> critical
    throttling   hardware or thermal slowdown bits -> warning (sw_power_cap is a GPU running at
                 its power limit, normal under load: recorded, not a warning)
    XID          hardware XIDs (48, 62, 64, 74, 79, 92, 95, 119, 120, 140) -> critical for the
                 rest of the monitor's life; application XIDs (13, 31, 43, 45) recorded only
    a GPU that stops answering NVML (GpuIsLost) -> critical

A sample is a plain dict (what `ErrorInfo.health` and `on_device_sample` carry):
    device, uuid, time (unix seconds), memory_used, memory_total, memory_free (bytes),
    utilization_gpu (%), temperature (°C), power_w, power_limit_w, throttle_reasons (names),
    ecc_uncorrectable, remapped_rows_pending (bool), remap_failure, retired_pages_pending,
    xid (list of ints), state, reasons (["code: detail", ...]), and "error" when reading failed.
Missing readings are None. The monitor only reads (see maml.runtime.devices.nvml).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from maml.runtime.devices.discovery import DeviceInfo, discover
from maml.runtime.devices.health_config import Thresholds, load_thresholds, thresholds_from_mapping
from maml.runtime.devices.nvml import GPUReadError

__all__ = ["STATES", "HealthMonitor", "Thresholds", "classify_sample", "load_thresholds",
           "start_monitor", "thresholds_from_mapping"]

log = logging.getLogger(__name__)

STATES = ("healthy", "warning", "critical")
_RANK = {state: rank for rank, state in enumerate(STATES)}
WARNING_THROTTLES = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                               "hw_power_brake_slowdown"})
HARDWARE_XIDS = frozenset({48, 62, 64, 74, 79, 92, 95, 119, 120, 140})
APPLICATION_XIDS = frozenset({13, 31, 43, 45})


def classify_sample(sample: Mapping[str, Any], thresholds: Thresholds = Thresholds(), *,
                    busy_for: float | None = None,
                    progress_age: float | None = None) -> tuple[str, list[str]]:
    """(state, reasons) for one sample. `busy_for`: seconds utilisation has stayed at or above
    the hang level; `progress_age`: seconds since the step on the device last made progress
    (None: no step of ours runs there, so high utilisation is someone else's business)."""
    found: list[tuple[str, str]] = []     # (state, reason)
    found += _temperature(sample.get("temperature"), thresholds)
    found += _memory(sample, thresholds)
    found += _errors(sample)
    found += _throttles(sample.get("throttle_reasons") or [])
    found += _xids(sample.get("xid") or [])
    hang_after = thresholds.hang_seconds
    if (busy_for is not None and busy_for >= hang_after and progress_age is not None
            and progress_age >= hang_after):
        found.append(("critical", f"hang: utilisation >= {thresholds.hang_utilization:g}% for "
                                  f"{busy_for:.0f} s with no step progress for {progress_age:.0f} s"))
    state = max((s for s, _ in found), key=_RANK.__getitem__, default="healthy")
    return state, [reason for _, reason in found]


def _temperature(value: float | None, t: Thresholds) -> list[tuple[str, str]]:
    if value is None:
        return []
    for state, code, limit in (("critical", "temperature_shutdown", t.temperature_shutdown),
                               ("critical", "temperature_critical", t.temperature_critical),
                               ("warning", "temperature_warning", t.temperature_warning)):
        if value >= limit:
            return [(state, f"{code}: {value:g} °C >= {limit:g} °C")]
    return []


def _memory(sample: Mapping[str, Any], t: Thresholds) -> list[tuple[str, str]]:
    used, total = sample.get("memory_used"), sample.get("memory_total")
    if used is None or not total:
        return []
    share = used / total
    for state, limit in (("critical", t.memory_critical), ("warning", t.memory_warning)):
        if share >= limit:
            return [(state, f"memory_{state}: {share:.1%} used >= {limit:.0%}")]
    return []


def _errors(sample: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    if sample.get("ecc_uncorrectable"):
        found.append(("critical", f"ecc_uncorrectable: {sample['ecc_uncorrectable']} "
                                  "uncorrectable ECC errors since the driver loaded"))
    if sample.get("remapped_rows_pending"):
        found.append(("critical", "remapped_rows_pending: a memory row remap waits for a GPU reset"))
    if sample.get("remap_failure"):
        found.append(("critical", "remap_failure: a memory row could not be remapped"))
    if sample.get("retired_pages_pending"):
        found.append(("critical", "retired_pages_pending: memory pages wait to be retired"))
    return found


def _throttles(names: Sequence[str]) -> list[tuple[str, str]]:
    slowdowns = [name for name in names if name in WARNING_THROTTLES]
    return [("warning", f"throttle: {', '.join(slowdowns)}")] if slowdowns else []


def _xids(xids: Sequence[int]) -> list[tuple[str, str]]:
    found = []
    for xid in xids:
        if xid in HARDWARE_XIDS:
            found.append(("critical", f"xid: XID {xid} (a hardware fault; the GPU needs attention)"))
        elif xid not in APPLICATION_XIDS:
            found.append(("warning", f"xid: XID {xid}"))
    return found


class HealthMonitor:
    """Samples every GPU each `interval` seconds on a daemon thread and emits what it sees.

    `emit(hook, **payload)` is the runtime's Broadcaster.emit; `progress_age(device_id)`
    says how long the step on that device has made no progress (None: no step there).
    Nothing a provider or an observer does can stop the monitor or the run.
    """

    def __init__(self, provider: Any, *, devices: Sequence[DeviceInfo] | None = None,
                 interval: float = 2.0, thresholds: Thresholds = Thresholds(),
                 emit: Callable[..., None] | None = None,
                 progress_age: Callable[[str], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.devices = list(devices if devices is not None else discover(provider=provider).gpus())
        self.interval = float(interval)
        self.thresholds = thresholds
        self._emit = emit or (lambda hook, **payload: None)
        self._progress_age = progress_age or (lambda device_id: None)
        self._clock, self._wall = clock, wall_clock
        self._latest: dict[str, dict[str, Any]] = {}
        self._states: dict[str, str] = {d.id: "healthy" for d in self.devices}
        self._busy_since: dict[str, float] = {}
        self._hardware_xids: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading results ---------------------------------------------------------------------
    def latest(self, device_id: str) -> dict[str, Any] | None:
        with self._lock:
            sample = self._latest.get(device_id)
            return dict(sample) if sample is not None else None

    def state(self, device_id: str) -> str:
        with self._lock:
            return self._states.get(device_id, "healthy")

    def states(self) -> dict[str, str]:
        with self._lock:
            return dict(self._states)

    # -- the sampler thread ---------------------------------------------------------------------
    def start(self) -> HealthMonitor:
        if self._thread is None and self.devices:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="maml-health", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:    # an observer that raised; the monitor must outlive it
                log.warning("health monitor: sampling round failed", exc_info=True)
            self._stop.wait(self.interval)

    # -- one round ---------------------------------------------------------------------------
    def sample_once(self) -> list[dict[str, Any]]:
        """Read every device once, classify, record, emit; returns the samples."""
        xids = self._read_xids()
        samples = [self._sample_device(device, xids.get(device.physical_index, []))
                   for device in self.devices]
        for device, sample in zip(self.devices, samples, strict=True):
            self._publish(device, sample)
        return samples

    def _read_xids(self) -> dict[int | None, list[int]]:
        by_gpu: dict[int | None, list[int]] = {}
        try:
            for index, xid in self.provider.xid_events():
                by_gpu.setdefault(index, []).append(xid)
        except Exception:
            log.debug("health monitor: XID events unreadable", exc_info=True)
        return by_gpu

    def _sample_device(self, device: DeviceInfo, xids: list[int]) -> dict[str, Any]:
        base = {"device": device.id, "uuid": device.uuid, "time": self._wall()}
        try:
            sample = {**base, **self._readings(device), "xid": xids}
        except Exception as exc:    # GPUReadError, or a provider bug: never the run's problem
            lost = isinstance(exc, GPUReadError) and exc.gpu_lost
            code = "gpu_lost" if lost else "sample_error"
            state = "critical" if lost else self.state(device.id)
            return {**base, "error": f"{type(exc).__name__}: {exc}", "xid": xids,
                    "state": state, "reasons": [f"{code}: {exc}"]}
        state, reasons = self._classify(device, sample)
        sample.update(state=state, reasons=reasons)
        return sample

    def _readings(self, device: DeviceInfo) -> dict[str, Any]:
        p, gpu = self.provider, device.physical_index
        memory = p.memory(gpu, device.mig_index)
        rows = p.remapped_rows(gpu)
        return {
            "memory_used": memory.used if memory else None,
            "memory_total": memory.total if memory else None,
            "memory_free": memory.free if memory else None,
            # a MIG instance has no utilisation of its own; the parent's would mislead
            "utilization_gpu": None if device.mig else p.utilization(gpu),
            "temperature": p.temperature(gpu),
            "power_w": p.power_w(gpu),
            "power_limit_w": p.power_limit_w(gpu),
            "throttle_reasons": p.throttle_reasons(gpu),
            "ecc_uncorrectable": p.ecc_uncorrectable(gpu),
            "remapped_rows_pending": rows.pending if rows else None,
            "remap_failure": rows.failure if rows else None,
            "retired_pages_pending": p.retired_pages_pending(gpu),
        }

    def _classify(self, device: DeviceInfo, sample: dict[str, Any]) -> tuple[str, list[str]]:
        now = self._clock()
        utilization = sample.get("utilization_gpu")
        if utilization is not None and utilization >= self.thresholds.hang_utilization:
            busy_for = now - self._busy_since.setdefault(device.id, now)
        else:
            self._busy_since.pop(device.id, None)
            busy_for = None
        age = self._progress_age(device.id) if busy_for is not None else None
        # a hardware XID is an event seen once, but the GPU stays suspect: keep it critical
        remembered = self._hardware_xids.setdefault(device.id, [])
        remembered += [x for x in sample["xid"] if x in HARDWARE_XIDS and x not in remembered]
        xids = sample["xid"] + [x for x in remembered if x not in sample["xid"]]
        return classify_sample({**sample, "xid": xids}, self.thresholds, busy_for=busy_for,
                               progress_age=age)

    def _publish(self, device: DeviceInfo, sample: dict[str, Any]) -> None:
        with self._lock:
            old = self._states.get(device.id, "healthy")
            self._states[device.id] = sample["state"]
            self._latest[device.id] = sample
        self._emit("on_device_sample", sample=dict(sample))
        if sample["state"] != old:
            self._emit("on_device_state_changed", device=device.ref, old=old,
                       new=sample["state"], sample=dict(sample), reasons=list(sample["reasons"]))


def start_monitor(inventory: Any, *, emit: Callable[..., None] | None = None,
                  progress_age: Callable[[str], float | None] | None = None,
                  thresholds: Thresholds | None = None, interval: float = 2.0,
                  provider: Any = None) -> HealthMonitor | None:
    """A started monitor for the inventory's GPUs, or None where nothing can be watched
    (no GPU, or GPUs known only through torch). Opens NVML itself unless given a provider;
    `monitor.stop()` then `monitor.provider.close()` when the run ends."""
    gpus = inventory.gpus()
    if not gpus:
        return None
    if provider is None:
        from maml.runtime.devices.nvml import NVMLUnavailable, open_provider

        try:
            provider = open_provider()
        except NVMLUnavailable:
            return None
    return HealthMonitor(provider, devices=gpus, interval=interval,
                         thresholds=thresholds or load_thresholds(), emit=emit,
                         progress_age=progress_age).start()
