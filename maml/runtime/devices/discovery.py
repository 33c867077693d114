"""Device discovery: which CPUs and GPUs a run may use, named the way the user counts them.

`discover()` asks, in order:
  1. NVML (nvidia-ml-py), where libnvidia-ml loads: GPUs, their MIG instances, memory, UUIDs;
  2. torch, where NVML is missing but torch is installed and the machine has GPU device files:
     run in a short child process, so the caller never imports torch and never gets a CUDA
     context (`mem_get_info` makes one: ~0.5 GiB of GPU memory held for the process's life);
  3. nothing: the CPU only.
Whatever happens, the answer is an `Inventory` whose `.note` says in plain words what was found
and why, never a traceback. The CPU is always the first device, id "cpu".

GPU ids are "cuda:N" with N the position among the devices CUDA_VISIBLE_DEVICES leaves visible
(what `torch.device("cuda:N")` means in this process); `physical_index` is the NVML index.
CUDA_VISIBLE_DEVICES is read the way CUDA reads it: comma-separated indexes, GPU-/MIG- UUIDs or
unique UUID prefixes; "" hides every GPU; the list ends at the first invalid entry ("-1").
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from maml.runtime.events import DeviceRef

_TORCH_PROBE_TIMEOUT = 120.0   # seconds; a cold torch import on a busy box is slow


@dataclass
class DeviceInfo:
    id: str                                # "cpu" | "cuda:N"
    kind: str                              # "cpu" | "cuda"
    index: int | None                      # N of cuda:N; None for the CPU
    name: str
    uuid: str | None = None                # GPU-... or MIG-...
    total_memory: int | None = None        # bytes
    free_memory: int | None = None         # bytes, at discovery time
    compute_capability: str | None = None  # "9.0"
    mig: bool = False                      # a MIG instance rather than a whole GPU
    physical_index: int | None = None      # NVML index (of the parent GPU for a MIG instance)
    mig_index: int | None = None           # the instance's index on its parent
    cores: int | None = None               # CPU: cores this process may run on
    node: str | None = None                # the cluster node it is on (Ray's node id, home
                                           # node of a GPU slot); None: this machine

    @property
    def ref(self) -> DeviceRef:
        return DeviceRef(id=self.id, kind=self.kind, index=self.index, name=self.name,
                         uuid=self.uuid, total_memory=self.total_memory)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Inventory:
    devices: list[DeviceInfo]
    source: str                            # "nvml" | "torch" | "cpu-only" (| "fake" in tests)
    note: str
    driver: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, device_id: str) -> DeviceInfo | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def ids(self) -> list[str]:
        return [d.id for d in self.devices]

    def gpus(self) -> list[DeviceInfo]:
        return [d for d in self.devices if d.kind == "cuda"]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "note": self.note, "driver": self.driver,
                "devices": [d.to_dict() for d in self.devices]}


def discover(*, provider: Any = None) -> Inventory:
    """What this process can run on. `provider`: an open NVML provider or a FakeNVML
    (left open); without one, NVML is opened and closed here."""
    cpu = cpu_device()
    if provider is not None:
        return _from_provider(provider, cpu)
    from maml.runtime.devices.nvml import NVMLUnavailable, open_provider

    try:
        nvml = open_provider()
    except NVMLUnavailable as exc:
        return _without_nvml(str(exc), cpu)
    try:
        return _from_provider(nvml, cpu)
    finally:
        nvml.close()


# -- CUDA_VISIBLE_DEVICES --------------------------------------------------------------------

def parse_visible_devices(value: str | None) -> list[int | str] | None:
    """None: the variable is unset (all visible). Otherwise the entries CUDA would use:
    ints (physical indexes) and UUID strings, up to the first invalid one."""
    if value is None:
        return None
    entries: list[int | str] = []
    for token in (t.strip() for t in value.split(",")):
        if re.fullmatch(r"\d+", token):
            entry: int | str = int(token)
        elif re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z\-/]+", token):
            entry = token
        else:
            break                       # "", "-1", junk: CUDA stops reading here
        if entry in entries:
            break                       # CUDA treats a repeated device as invalid too
        entries.append(entry)
    return entries


def _apply_visibility(units: list[DeviceInfo], visible: list[int | str] | None) -> list[DeviceInfo]:
    if visible is None:
        return units
    chosen: list[DeviceInfo] = []
    for entry in visible:
        if isinstance(entry, int):
            matches = [u for u in units if u.physical_index == entry]
        else:
            matches = [u for u in units if u.uuid and u.uuid.startswith(entry)]
            if entry.startswith("GPU-"):   # a GPU UUID selects the whole GPU, not an instance
                matches = [u for u in matches if not u.mig] or matches
            if len({u.physical_index for u in matches}) > 1:
                break                        # a prefix must name one GPU, as in CUDA
        if not matches or any(m in chosen for m in matches):
            break
        chosen.extend(matches)
    return chosen


def _number(devices: list[DeviceInfo]) -> list[DeviceInfo]:
    for position, device in enumerate(devices):
        device.index, device.id = position, f"cuda:{position}"
    return devices


# -- NVML ------------------------------------------------------------------------------------

def _from_provider(provider: Any, cpu: DeviceInfo) -> Inventory:
    from maml.runtime.devices.nvml import GPUReadError

    units: list[DeviceInfo] = []
    unreadable: list[int] = []
    for physical in range(provider.device_count()):
        try:
            units.extend(_units_of(provider, physical))
        except GPUReadError:
            unreadable.append(physical)    # a lost GPU is reported, never fatal
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = _number(_apply_visibility(units, parse_visible_devices(raw)))
    driver = provider.driver_version()
    label = "NVML" if provider.source == "nvml" else type(provider).__name__
    note = f"{label} (driver {driver}): {_count(gpus, 'GPU')}" + _visibility_note(raw, units, gpus)
    if unreadable:
        note += f"; GPU {', '.join(map(str, unreadable))} did not answer NVML"
    if not gpus:
        note += "; CPU only"
    return Inventory([cpu, *gpus], provider.source, note, driver=driver)


def _units_of(provider: Any, physical: int) -> list[DeviceInfo]:
    """One entry per whole GPU, or one per MIG instance where MIG is on."""
    name = provider.name(physical) or f"GPU {physical}"
    capability = provider.compute_capability(physical)
    instances = provider.mig_devices(physical)
    if instances:
        units = []
        for inst in instances:
            memory = provider.memory(physical, inst.mig_index)
            units.append(DeviceInfo(
                "", "cuda", None, inst.name or f"{name} MIG {inst.mig_index}", inst.uuid,
                inst.total_memory, memory.free if memory else None, capability, mig=True,
                physical_index=physical, mig_index=inst.mig_index))
        return units
    memory = provider.memory(physical)
    return [DeviceInfo("", "cuda", None, name, provider.uuid(physical),
                       memory.total if memory else None, memory.free if memory else None,
                       capability, physical_index=physical)]


def _visibility_note(raw: str | None, units: list[DeviceInfo], gpus: list[DeviceInfo]) -> str:
    if raw is None:
        return ""
    hidden = len(units) - len(gpus)
    return f" (CUDA_VISIBLE_DEVICES={raw!r} hides {hidden} of {len(units)})" if hidden else ""


def _count(items: list[Any], word: str) -> str:
    return f"{len(items)} {word}" + ("" if len(items) == 1 else "s")


# -- torch, where NVML is missing -------------------------------------------------------------

def _without_nvml(reason: str, cpu: DeviceInfo) -> Inventory:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return Inventory([cpu], "cpu-only", f"{reason}; torch not installed; CPU only")
    if sys.platform.startswith("linux") and not gpu_device_files():
        return Inventory([cpu], "cpu-only", f"{reason}; no GPU device files (/dev/nvidia*, "
                         "/dev/kfd), so torch was not asked; CPU only")
    gpus, problem = torch_devices()
    if problem:
        return Inventory([cpu], "cpu-only", f"{reason}; {problem}; CPU only")
    if not gpus:
        return Inventory([cpu], "cpu-only", f"{reason}; torch sees no CUDA device; CPU only")
    return Inventory([cpu, *gpus], "torch", f"{reason}; {_count(gpus, 'GPU')} from torch "
                     "(no health readings without NVML)")


def gpu_device_files() -> list[str]:
    """NVIDIA (/dev/nvidia0...), ROCm (/dev/kfd) and WSL (/dev/dxg) device nodes."""
    return sorted(glob.glob("/dev/nvidia[0-9]*") + glob.glob("/dev/kfd") + glob.glob("/dev/dxg"))


def torch_devices() -> tuple[list[DeviceInfo], str | None]:
    """GPUs as torch sees them, asked in a child process; (devices, problem or None)."""
    code = "from maml.runtime.devices.discovery import _torch_probe; _torch_probe()"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=_TORCH_PROBE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return [], f"torch did not answer within {_TORCH_PROBE_TIMEOUT:.0f} s"
    except OSError as exc:
        return [], f"torch could not be asked ({exc})"
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"torch could not be asked ({last})"
    if report.get("error"):
        return [], f"torch failed: {report['error']}"
    visible = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    gpus = [DeviceInfo("", "cuda", None, entry["name"], entry.get("uuid"), entry["total_memory"],
                       entry.get("free_memory"), entry.get("compute_capability"),
                       physical_index=_physical(entry["index"], visible))
            for entry in report["devices"]]
    return _number(gpus), None


def _physical(position: int, visible: list[int | str] | None) -> int | None:
    """The NVML index behind torch's cuda:`position`, where CUDA_VISIBLE_DEVICES says it."""
    if visible is None:
        return position
    entry = visible[position] if position < len(visible) else None
    return entry if isinstance(entry, int) else None


def _torch_probe() -> None:
    """Runs in the child: prints one JSON line describing torch's CUDA devices."""
    try:
        import torch

        devices = []
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for index in range(count):
            props = torch.cuda.get_device_properties(index)
            free, total = torch.cuda.mem_get_info(index)
            uuid = getattr(props, "uuid", None)
            devices.append({"index": index, "name": props.name, "total_memory": int(total),
                            "free_memory": int(free), "uuid": f"GPU-{uuid}" if uuid else None,
                            "compute_capability": f"{props.major}.{props.minor}"})
        print(json.dumps({"devices": devices}))
    except Exception as exc:  # reported by the parent as a plain sentence
        print(json.dumps({"devices": [], "error": f"{type(exc).__name__}: {exc}"}))


# -- the CPU ---------------------------------------------------------------------------------

def cpu_device() -> DeviceInfo:
    total, free = host_memory()
    return DeviceInfo("cpu", "cpu", None, cpu_name(), total_memory=total, free_memory=free,
                      cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count())


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def host_memory() -> tuple[int | None, int | None]:
    """(total, available) bytes, capped by a cgroup v2 memory limit where one is set."""
    total, free = _meminfo()
    limit, used = _cgroup_memory()
    if limit is not None and (total is None or limit < total):
        total = limit
        free = max(0, limit - used) if free is None else min(free, max(0, limit - used))
    return total, free


def _meminfo() -> tuple[int | None, int | None]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    values[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    if "MemTotal" in values:
        return values["MemTotal"], values.get("MemAvailable", values.get("MemFree"))
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return None, None


def _cgroup_memory() -> tuple[int | None, int]:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            raw = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
            used = int(handle.read().strip())
    except (OSError, ValueError):
        return None, 0
    return (None, used) if raw == "max" else (int(raw), used)
