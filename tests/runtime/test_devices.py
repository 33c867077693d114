"""Discovery: CUDA_VISIBLE_DEVICES parsing, NVML (through FakeNVML), MIG, the CPU-only path.

This machine has no GPU and no libnvidia-ml, so the real-NVML path is exercised only as
"not found"; FakeNVML stands in for the library behind the same provider interface.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.runtime.devices import nvml
from maml.runtime.devices.discovery import (
    DeviceInfo, cpu_device, discover, host_memory, parse_visible_devices, torch_devices,
)
from maml.runtime.events import DeviceRef
from maml.runtime.devices.nvml import FakeGPU, FakeNVML, GPUReadError, NVMLUnavailable

GiB = 2**30


def fake(n: int = 2, **kw) -> FakeNVML:
    return FakeNVML([FakeGPU(**kw) for _ in range(n)])


@pytest.fixture(autouse=True)
def no_visibility(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("MAML_FAKE_NVML", raising=False)


# -- CUDA_VISIBLE_DEVICES ----------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("", []),
    ("-1", []),
    ("0", [0]),
    ("1,0", [1, 0]),
    (" 2 , 3 ", [2, 3]),
    ("0,-1,1", [0]),                 # CUDA stops at the first invalid entry
    ("0,0,1", [0]),                  # a repeated device is invalid too
    ("0,junk,1", [0]),
    ("GPU-8a3c2f1e-aaaa", ["GPU-8a3c2f1e-aaaa"]),
    ("MIG-1234-abcd,1", ["MIG-1234-abcd", 1]),
])
def test_parse_visible_devices(value, expected):
    assert parse_visible_devices(value) == expected


@given(st.lists(st.integers(min_value=0, max_value=15), max_size=6))
def test_parse_visible_devices_keeps_a_prefix_of_distinct_indexes(indexes):
    parsed = parse_visible_devices(",".join(map(str, indexes)))
    assert parsed == indexes[:len(parsed)]
    assert len(set(parsed)) == len(parsed)
    if len(set(indexes)) == len(indexes):
        assert parsed == indexes


def test_visible_devices_renumber_and_keep_the_physical_index(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    inventory = discover(provider=fake(3))
    assert inventory.ids() == ["cpu", "cuda:0", "cuda:1"]
    assert [d.physical_index for d in inventory.gpus()] == [2, 0]
    assert "hides 1 of 3" in inventory.note


def test_visible_devices_by_uuid_prefix(monkeypatch):
    provider = FakeNVML([FakeGPU(uuid="GPU-aaaa-1111"), FakeGPU(uuid="GPU-abcd-2222"),
                         FakeGPU(uuid="GPU-abce-3333")])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abcd,0")
    inventory = discover(provider=provider)
    assert [(d.id, d.physical_index) for d in inventory.gpus()] == [("cuda:0", 1), ("cuda:1", 0)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")     # names two GPUs: invalid
    assert discover(provider=provider).gpus() == []


@pytest.mark.parametrize("value", ["", "-1"])
def test_empty_or_negative_visibility_hides_every_gpu(monkeypatch, value):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    inventory = discover(provider=fake(2))
    assert inventory.ids() == ["cpu"]
    assert inventory.note.endswith("CPU only")


# -- NVML-backed discovery ---------------------------------------------------------------------

def test_gpus_come_after_the_cpu_with_memory_and_identity():
    provider = FakeNVML([FakeGPU(script=[{"memory_used": 30 * GiB}]),
                         FakeGPU(name="NVIDIA A100-SXM4-40GB", memory_total=40 * GiB,
                                 compute_capability="8.0")])
    inventory = discover(provider=provider)
    cpu, first, second = inventory.devices
    assert cpu.id == "cpu" and cpu.kind == "cpu" and cpu.cores >= 1
    assert (first.free_memory, first.total_memory) == (50 * GiB, 80 * GiB)
    assert second.name == "NVIDIA A100-SXM4-40GB" and second.compute_capability == "8.0"
    assert first.uuid != second.uuid and first.uuid.startswith("GPU-")
    assert inventory.get("cuda:1") is second and inventory.get("cuda:7") is None
    assert inventory.source == "fake" and "2 GPUs" in inventory.note


def test_ref_is_the_events_device_ref():
    device = discover(provider=fake(1)).get("cuda:0")
    assert device.ref == DeviceRef(id="cuda:0", kind="cuda", index=0, name=device.name,
                                   uuid=device.uuid, total_memory=80 * GiB)


def test_mig_instances_are_devices_of_their_own(monkeypatch):
    migs = [{"uuid": f"MIG-0000-{n}", "name": "NVIDIA A100 MIG 3g.20gb",
             "memory_total": 20 * GiB, "memory_used": n * GiB} for n in range(2)]
    provider = FakeNVML([FakeGPU(), FakeGPU(name="NVIDIA A100", mig=migs)])
    inventory = discover(provider=provider)
    assert [(d.id, d.mig, d.physical_index, d.mig_index) for d in inventory.gpus()] == [
        ("cuda:0", False, 0, None), ("cuda:1", True, 1, 0), ("cuda:2", True, 1, 1)]
    assert inventory.get("cuda:2").free_memory == 19 * GiB
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0000-1")
    assert [d.uuid for d in discover(provider=provider).gpus()] == ["MIG-0000-1"]


def test_a_gpu_that_does_not_answer_is_reported_not_fatal():
    provider = FakeNVML([FakeGPU(), FakeGPU(script=[{"lost": True}])])
    inventory = discover(provider=provider)
    assert inventory.ids() == ["cpu", "cuda:0"]
    assert "GPU 1 did not answer" in inventory.note


def test_fake_from_a_json_file_through_the_environment(monkeypatch, tmp_path):
    spec = tmp_path / "gpus.json"
    spec.write_text('{"gpus": [{"name": "Fake H100", "memory_total": 1000}]}')
    monkeypatch.setenv("MAML_FAKE_NVML", str(spec))
    inventory = discover()
    assert [(d.name, d.total_memory) for d in inventory.gpus()] == [("Fake H100", 1000)]
    spec.write_text("not json")
    with pytest.raises(NVMLUnavailable, match="MAML_FAKE_NVML"):
        nvml.open_provider()


# -- without NVML ------------------------------------------------------------------------------

def test_real_nvml_is_missing_here_and_says_so():
    with pytest.raises(NVMLUnavailable, match="NVML not found"):
        nvml.open_nvml()


def test_cpu_only_discovery_on_this_machine():
    inventory = discover()
    assert inventory.source == "cpu-only"
    assert inventory.ids() == ["cpu"]
    assert inventory.note.startswith("NVML not found") and inventory.note.endswith("CPU only")


def test_torch_probe_in_a_child_sees_no_cuda_device_here():
    # in a fresh interpreter: other tests of this session may already have imported torch
    code = ("import sys; from maml.runtime.devices.discovery import torch_devices; "
            "gpus, problem = torch_devices(); "
            "print(repr((gpus, problem)), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["([],", "None)", "False"]   # no GPU here; the probe ran in a child process


def test_cpu_entry_matches_the_process_view():
    cpu = cpu_device()
    assert cpu.cores == len(__import__("os").sched_getaffinity(0))
    total, free = host_memory()
    assert cpu.total_memory == total and 0 < free <= total
    assert cpu.name and cpu.name != "CPU" or sys.platform != "linux"


def test_nvml_provider_turns_not_supported_into_none_and_lost_into_an_error():
    """The real provider's wrapper, driven by pynvml's own error classes."""
    import pynvml

    provider = nvml.NVMLProvider(pynvml)

    def raise_code(code):
        def call():
            raise pynvml.NVMLError(code)
        return call

    assert provider._read(raise_code(pynvml.NVML_ERROR_NOT_SUPPORTED)) is None
    assert provider._read(raise_code(pynvml.NVML_ERROR_NO_PERMISSION)) is None
    with pytest.raises(GPUReadError) as lost:
        provider._read(raise_code(pynvml.NVML_ERROR_GPU_IS_LOST))
    assert lost.value.gpu_lost
    with pytest.raises(GPUReadError) as other:
        provider._read(raise_code(pynvml.NVML_ERROR_UNKNOWN))
    assert not other.value.gpu_lost


def test_throttle_names_decode_the_bit_mask():
    assert nvml.throttle_names(0) == []
    assert nvml.throttle_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]


FORBIDDEN = ("nvmlDeviceSet", "nvmlDeviceReset", "nvmlDeviceClear", "nvmlDeviceModify",
             "nvmlDeviceCreate", "nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy",
             "nvmlUnitSet", "nvmlSystemSet", "nvmlDeviceSetPersistenceMode",
             "nvmlDeviceDiscoverGpus", "nvmlDeviceRemoveGpu", "nvmlDevicePowerSmoothing",
             "nvmlDeviceWorkloadPowerProfileSet", "nvmlDeviceWorkloadPowerProfileClear",
             "nvmlDeviceFreeze", "nvmlVgpuInstanceSet", "nvmlSetVgpu")


def _device_modules() -> list[str]:
    import pkgutil

    import maml.runtime.devices as package
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__))


def test_the_device_package_holds_the_device_wing():
    assert {"discovery", "nvml", "nvml_fake", "health", "health_config", "placement",
            "book", "sampling"} <= set(_device_modules())


@pytest.mark.parametrize("module", _device_modules())
def test_no_module_ever_changes_a_gpu(module):
    """maml reads GPUs, never resets them or changes clocks, power, modes (DESIGN §6)."""
    import importlib
    import inspect

    source = inspect.getsource(importlib.import_module(f"maml.runtime.devices.{module}"))
    found = [name for name in FORBIDDEN if name in source]
    assert not found, f"maml/runtime/devices/{module}.py calls NVML setters: {found}"
    assert "nvidia-smi" not in source.replace("like nvidia-smi", "")


def test_import_maml_runtime_devices_does_not_import_heavy_libraries():
    code = ("import sys, maml.runtime.devices.discovery, maml.runtime.devices.health, "
            "maml.runtime.devices.placement, maml.runtime.devices.book; "
            "print(sorted(m for m in ('torch', 'pynvml', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_device_info_round_trips_through_a_dict():
    device = DeviceInfo("cuda:0", "cuda", 0, "X", uuid="GPU-1", total_memory=1)
    assert DeviceInfo(**device.to_dict()) == device
