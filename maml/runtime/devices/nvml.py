"""Read-only access to NVIDIA GPUs through NVML, and a scripted fake with the same interface.

maml only ever READS from a GPU. Nothing here (or anywhere in maml) resets a GPU, changes its
clocks, power limits, persistence mode, compute mode, ECC mode or MIG mode: those are the
operator's decisions, and a pipeline runner that changes them on a shared machine breaks other
people's work. A test scans this file for NVML setters and fails if one appears.

The provider interface (what discovery and the health monitor call) — `index` is the NVML
(physical) index; `mig` selects a MIG instance of that GPU:

    source                        "nvml" | "fake"
    driver_version()              -> str | None
    device_count()                -> int
    name(index) / uuid(index)     -> str | None
    compute_capability(index)     -> "9.0" | None
    memory(index, mig=None)       -> Memory(total, used, free) in bytes | None
    utilization(index)            -> GPU engine busy percent | None
    temperature(index)            -> °C | None
    power_w(index) / power_limit_w(index) -> watts | None
    throttle_reasons(index)       -> ["sw_power_cap", "hw_thermal_slowdown", ...] | None
    ecc_uncorrectable(index)      -> volatile uncorrected ECC errors since driver load | None
    remapped_rows(index)          -> RemappedRows(corrected, uncorrected, pending, failure) | None
    retired_pages_pending(index)  -> bool | None
    mig_enabled(index)            -> bool | None
    mig_devices(index)            -> [MigDevice(mig_index, uuid, name, total_memory)]
    xid_events()                  -> [(index, xid)] seen since the last call; never blocks
    close()

Every reading is wrapped: a call the GPU or driver does not support (NotSupported,
NoPermission, FunctionNotFound) yields None, never an exception. A GPU that is gone
(GpuIsLost, Unknown...) raises `GPUReadError`, which the monitor turns into a critical sample.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

#: clock-event (throttle) reason bits, as NVML numbers them, and the names maml records
THROTTLE_REASON_BITS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

#: NVML return codes that mean "this reading is not available here", not "the GPU is sick"
_NOT_AVAILABLE_CODES = {3, 4, 13}   # NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND
_TIMEOUT_CODE = 10
_GPU_LOST_CODE = 15


class Memory(NamedTuple):
    total: int
    used: int
    free: int


class RemappedRows(NamedTuple):
    corrected: int
    uncorrected: int
    pending: bool
    failure: bool


class MigDevice(NamedTuple):
    mig_index: int
    uuid: str | None
    name: str | None
    total_memory: int | None


class NVMLUnavailable(Exception):
    """NVML cannot be used on this machine; `str()` says why in plain words."""


class GPUReadError(Exception):
    """A reading failed for a reason other than "not supported": the GPU may be gone."""

    def __init__(self, message: str, *, gpu_lost: bool = False) -> None:
        super().__init__(message)
        self.gpu_lost = gpu_lost


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASON_BITS.items() if mask & bit]


def open_nvml() -> NVMLProvider:
    """Start NVML, or raise NVMLUnavailable with a reason a user can act on."""
    try:
        import pynvml
    except ImportError as exc:
        raise NVMLUnavailable("nvidia-ml-py is not installed (pip install 'maml-engine[gpu]')") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise NVMLUnavailable(_init_failure(pynvml, exc)) from exc
    except OSError as exc:  # a broken libnvidia-ml.so can fail to load outside pynvml's checks
        raise NVMLUnavailable(f"NVML could not be loaded ({exc})") from exc
    return NVMLProvider(pynvml)


def open_provider() -> Any:
    """The provider this process should use: FakeNVML from the JSON file named by
    $MAML_FAKE_NVML (chaos tests on machines without a GPU), else real NVML.
    Raises NVMLUnavailable when neither can be had."""
    fake = os.environ.get("MAML_FAKE_NVML")
    if fake:
        from maml.runtime.devices.nvml_fake import FakeNVML

        return FakeNVML.from_file(fake)
    return open_nvml()


def _init_failure(pynvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return "NVML not found (libnvidia-ml.so.1 missing)"
    if code == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVML found but the NVIDIA driver is not loaded"
    if code == pynvml.NVML_ERROR_NO_PERMISSION:
        return "NVML refused access (no permission to the GPU device files)"
    return f"NVML could not start ({exc})"


class NVMLProvider:
    """The real provider: thin, read-only wrappers over pynvml."""

    source = "nvml"

    def __init__(self, pynvml: Any) -> None:
        self._nv = pynvml
        self._handles: dict[int, Any] = {}
        self._events: Any = None          # the XID event set, made on the first xid_events()
        self._events_ready = False
        self._lock = threading.Lock()
        self._closed = False

    # -- plumbing ------------------------------------------------------------------------
    def _read(self, call: Callable[[], Any]) -> Any:
        """Run one NVML read; None when the reading is not available here."""
        try:
            return call()
        except self._nv.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _NOT_AVAILABLE_CODES:
                return None
            raise GPUReadError(f"{type(exc).__name__}: {exc}",
                               gpu_lost=code == _GPU_LOST_CODE) from exc

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            handle = self._read(lambda: self._nv.nvmlDeviceGetHandleByIndex(index))
            if handle is None:
                raise GPUReadError(f"no NVML handle for GPU {index}")
            self._handles[index] = handle
        return handle

    @staticmethod
    def _text(value: Any) -> str | None:
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    # -- identity --------------------------------------------------------------------------
    def driver_version(self) -> str | None:
        return self._text(self._read(self._nv.nvmlSystemGetDriverVersion))

    def device_count(self) -> int:
        return int(self._read(self._nv.nvmlDeviceGetCount) or 0)

    def name(self, index: int) -> str | None:
        return self._text(self._read(lambda: self._nv.nvmlDeviceGetName(self._handle(index))))

    def uuid(self, index: int) -> str | None:
        return self._text(self._read(lambda: self._nv.nvmlDeviceGetUUID(self._handle(index))))

    def compute_capability(self, index: int) -> str | None:
        cc = self._read(lambda: self._nv.nvmlDeviceGetCudaComputeCapability(self._handle(index)))
        return None if cc is None else f"{cc[0]}.{cc[1]}"

    # -- readings --------------------------------------------------------------------------
    def memory(self, index: int, mig: int | None = None) -> Memory | None:
        handle = self._handle(index) if mig is None else self._mig_handle(index, mig)
        info = self._read(lambda: self._nv.nvmlDeviceGetMemoryInfo(handle))
        return None if info is None else Memory(int(info.total), int(info.used), int(info.free))

    def utilization(self, index: int) -> int | None:
        rates = self._read(lambda: self._nv.nvmlDeviceGetUtilizationRates(self._handle(index)))
        return None if rates is None else int(rates.gpu)

    def temperature(self, index: int) -> int | None:
        nv = self._nv
        return self._read(lambda: nv.nvmlDeviceGetTemperature(self._handle(index),
                                                              nv.NVML_TEMPERATURE_GPU))

    def power_w(self, index: int) -> float | None:
        milliwatts = self._read(lambda: self._nv.nvmlDeviceGetPowerUsage(self._handle(index)))
        return None if milliwatts is None else milliwatts / 1000.0

    def power_limit_w(self, index: int) -> float | None:
        milliwatts = self._read(
            lambda: self._nv.nvmlDeviceGetEnforcedPowerLimit(self._handle(index)))
        return None if milliwatts is None else milliwatts / 1000.0

    def throttle_reasons(self, index: int) -> list[str] | None:
        # "clock event reasons" is the newer name of the same bit mask (driver 535+)
        getter = getattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        mask = self._read(lambda: getter(self._handle(index))) if getter else None
        if mask is None:
            mask = self._read(
                lambda: self._nv.nvmlDeviceGetCurrentClocksThrottleReasons(self._handle(index)))
        return None if mask is None else throttle_names(int(mask))

    def ecc_uncorrectable(self, index: int) -> int | None:
        nv = self._nv
        return self._read(lambda: nv.nvmlDeviceGetTotalEccErrors(
            self._handle(index), nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))

    def remapped_rows(self, index: int) -> RemappedRows | None:
        rows = self._read(lambda: self._nv.nvmlDeviceGetRemappedRows(self._handle(index)))
        if rows is None:
            return None
        corrected, uncorrected, pending, failure = rows
        return RemappedRows(int(corrected), int(uncorrected), bool(pending), bool(failure))

    def retired_pages_pending(self, index: int) -> bool | None:
        pending = self._read(
            lambda: self._nv.nvmlDeviceGetRetiredPagesPendingStatus(self._handle(index)))
        return None if pending is None else bool(pending)

    # -- MIG -------------------------------------------------------------------------------
    def mig_enabled(self, index: int) -> bool | None:
        modes = self._read(lambda: self._nv.nvmlDeviceGetMigMode(self._handle(index)))
        return None if modes is None else modes[0] == self._nv.NVML_DEVICE_MIG_ENABLE

    def _mig_handle(self, index: int, mig: int) -> Any:
        handle = self._read(
            lambda: self._nv.nvmlDeviceGetMigDeviceHandleByIndex(self._handle(index), mig))
        if handle is None:
            raise GPUReadError(f"no MIG instance {mig} on GPU {index}")
        return handle

    def mig_devices(self, index: int) -> list[MigDevice]:
        if not self.mig_enabled(index):
            return []
        count = self._read(lambda: self._nv.nvmlDeviceGetMaxMigDeviceCount(self._handle(index)))
        found = []
        for mig in range(int(count or 0)):
            try:
                handle = self._mig_handle(index, mig)
            except GPUReadError:
                continue            # slots without an instance report NotFound
            info = self._read(lambda: self._nv.nvmlDeviceGetMemoryInfo(handle))
            found.append(MigDevice(
                mig, self._text(self._read(lambda: self._nv.nvmlDeviceGetUUID(handle))),
                self._text(self._read(lambda: self._nv.nvmlDeviceGetName(handle))),
                None if info is None else int(info.total)))
        return found

    # -- XID events ------------------------------------------------------------------------
    def xid_events(self) -> list[tuple[int, int]]:
        """Critical XID events since the last call. Registration happens once, lazily;
        where the driver refuses it (containers often do) this always returns []."""
        with self._lock:
            if not self._events_ready:
                self._events_ready = True
                self._events = self._register_xid_events()
            if self._events is None:
                return []
            return self._drain_events()

    def _register_xid_events(self) -> Any:
        nv = self._nv
        try:
            event_set = nv.nvmlEventSetCreate()
        except nv.NVMLError:
            return None
        registered = 0
        for index in range(self.device_count()):
            try:
                nv.nvmlDeviceRegisterEvents(self._handle(index), nv.nvmlEventTypeXidCriticalError,
                                            event_set)
                registered += 1
            except (nv.NVMLError, GPUReadError):
                continue
        if registered == 0:
            nv.nvmlEventSetFree(event_set)
            return None
        return event_set

    def _drain_events(self) -> list[tuple[int, int]]:
        nv, seen = self._nv, []
        for _ in range(64):                     # bounded: a storm must not stall the sampler
            try:
                data = nv.nvmlEventSetWait(self._events, 0)
            except nv.NVMLError:
                break                           # Timeout: nothing (more) pending
            try:
                index = int(nv.nvmlDeviceGetIndex(data.device))
            except nv.NVMLError:
                index = -1
            seen.append((index, int(data.eventData)))
        return seen

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._events is not None:
                    self._nv.nvmlEventSetFree(self._events)
                self._nv.nvmlShutdown()
            except self._nv.NVMLError:
                pass

    def __enter__(self) -> NVMLProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def __getattr__(name: str) -> Any:
    # FakeNVML lives in its own module (it needs the types above); importable from here too
    if name in ("FakeNVML", "FakeGPU"):
        from maml.runtime.devices import nvml_fake

        return getattr(nvml_fake, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
