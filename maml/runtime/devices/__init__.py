"""The device wing: what a run may run on, how healthy it is, and where each attempt goes.

    discovery      CPUs and GPUs of this process (NVML, else torch in a child, else CPU only)
    nvml           the read-only NVML provider; nvml_fake: FakeNVML, the same interface scripted
    health         HealthMonitor: periodic samples, healthy/warning/critical with reasons
    health_config  the thresholds behind those states (defaults, user file, front matter)
    placement      choose_device: which device an attempt starts on; worker_env: pinning
    book           DeviceBook: the machine's devices as the scheduler asks about them
    sampling       one health snapshot of every device (what `maml devices` prints)

Nothing here imports torch, pynvml or psutil at import time; NVML is opened on demand.
`discover`, `DeviceInfo` and `Inventory` are re-exported here as the package's front door.
"""

from maml.runtime.devices.discovery import DeviceInfo, Inventory, discover

__all__ = ["DeviceInfo", "Inventory", "discover"]
