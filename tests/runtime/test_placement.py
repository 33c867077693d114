"""Placement over FakeNVML inventories: free memory, health, breakers, avoid, memory hints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.errors import UsageError
from maml.runtime.devices.discovery import discover
from maml.runtime.devices.health import HealthMonitor
from maml.runtime.devices.nvml import FakeGPU, FakeNVML
from maml.runtime.devices.placement import choose_device, worker_env
from maml.runtime.policies import CircuitBreaker

GiB = 2**30


@pytest.fixture(autouse=True)
def no_visibility(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def inventory(*used_gib: int):
    provider = FakeNVML([FakeGPU(script=[{"memory_used": u * GiB}]) for u in used_gib])
    return discover(provider=provider), provider


def chosen(*args, **kw):
    device = choose_device(*args, **kw)
    return device.id if device else None


def test_a_class_picks_the_device_with_the_most_free_memory():
    inv, _ = inventory(60, 10, 30)
    assert chosen(["cuda", "cpu"], inv) == "cuda:1"


def test_a_named_device_is_taken_only_if_it_passes():
    inv, _ = inventory(60, 10)
    assert chosen(["cuda:0", "cpu"], inv) == "cuda:0"
    assert chosen(["cuda:0", "cpu"], inv, health={"cuda:0": "critical"}) == "cpu"
    assert chosen(["cuda:5"], inv) is None
    assert chosen(["gpu:1"], inv) == "cuda:1"          # the document's spelling


def test_critical_devices_open_breakers_and_avoided_devices_are_skipped():
    inv, _ = inventory(10, 20, 30, 40)
    assert chosen(["cuda"], inv, health={"cuda:0": "critical"}) == "cuda:1"
    assert chosen(["cuda"], inv, open_breakers={"cuda:0", "cuda:1"}) == "cuda:2"
    assert chosen(["cuda"], inv, avoid={"cuda:0", "cuda:1", "cuda:2"}) == "cuda:3"
    assert chosen(["cuda", "cpu"], inv, avoid=inv.ids()[1:]) == "cpu"
    assert chosen(["cuda"], inv, avoid=inv.ids()) is None


def test_warning_devices_come_after_every_healthy_one():
    inv, _ = inventory(0, 50)
    assert chosen(["cuda"], inv, health={"cuda:0": "warning"}) == "cuda:1"
    assert chosen(["cuda"], inv, health={"cuda:0": "warning", "cuda:1": "critical"}) == "cuda:0"


def test_memory_hint_is_respected_and_falls_through():
    inv, _ = inventory(79, 78)                          # 1 GiB and 2 GiB free
    assert chosen(["cuda", "cpu"], inv, memory=GiB + 1) == "cuda:1"
    assert chosen(["cuda:0", "cuda", "cpu"], inv, memory=GiB + 1) == "cuda:1"
    assert chosen(["cuda", "cpu"], inv, memory=3 * GiB) == "cpu"
    cpu_total = inv.get("cpu").total_memory
    assert chosen(["cuda", "cpu"], inv, memory=cpu_total + 1) is None


def test_fresh_samples_beat_discovery_for_free_memory():
    inv, provider = inventory(10, 20)
    monitor = HealthMonitor(provider, devices=inv.gpus())
    provider.set(0, memory_used=79 * GiB)
    monitor.sample_once()
    assert chosen(["cuda"], inv) == "cuda:0"                       # discovery's view
    assert chosen(["cuda"], inv, latest=monitor.latest) == "cuda:1"


def test_a_device_that_goes_critical_mid_run_gets_no_more_work():
    clock = [0.0]
    provider = FakeNVML([FakeGPU(script=[{"temperature": 60}, {"at": 10, "temperature": 88}]),
                         FakeGPU(script=[{"memory_used": 40 * GiB}])], clock=lambda: clock[0])
    inv = discover(provider=provider)
    monitor = HealthMonitor(provider, devices=inv.gpus(), clock=lambda: clock[0])
    placed = []
    for now in range(0, 20, 2):
        clock[0] = float(now)
        monitor.sample_once()
        placed.append(chosen(["cuda", "cpu"], inv, health=monitor.states(), latest=monitor.latest))
    assert placed[:5] == ["cuda:0"] * 5           # the emptier GPU, while it is healthy
    assert placed[5:] == ["cuda:1"] * 5           # overheated at t=10: the other GPU from then on


def test_half_open_breaker_hands_its_trial_only_to_the_chosen_device():
    inv, _ = inventory(10, 20)
    clock = [0.0]
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=lambda: clock[0])
    breaker.record_failure("cuda:0")
    assert chosen(["cuda"], inv, open_breakers=breaker.is_open) == "cuda:1"
    clock[0] = 6.0                                 # half-open: one trial may go to cuda:0
    assert chosen(["cuda"], inv, open_breakers=breaker.is_open) == "cuda:0"
    assert chosen(["cuda"], inv, open_breakers=breaker.is_open) == "cuda:1"   # trial is out


def test_unknown_preference_is_a_usage_error():
    inv, _ = inventory(0)
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        choose_device(["tpu"], inv)


@given(st.lists(st.integers(0, 80), min_size=1, max_size=6),
       st.lists(st.sampled_from(["healthy", "warning", "critical"]), min_size=6, max_size=6),
       st.integers(0, 80))
def test_choice_is_never_critical_and_always_fits(used, states, need_gib):
    inv, _ = inventory(*used)
    health = {f"cuda:{i}": states[i] for i in range(len(used))}
    device = choose_device(["cuda"], inv, health=health, memory=need_gib * GiB)
    fitting = [d for d in inv.gpus() if health[d.id] != "critical"
               and d.free_memory >= need_gib * GiB]
    if device is None:
        assert fitting == []
    else:
        assert health[device.id] != "critical" and device.free_memory >= need_gib * GiB
        same_state = [d for d in fitting if health[d.id] == health[device.id]]
        assert device.free_memory == max(d.free_memory for d in same_state)
        if health[device.id] == "warning":
            assert all(health[d.id] != "healthy" for d in fitting)


def test_worker_env_pins_one_gpu_by_uuid_and_hides_gpus_from_cpu_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    inv, _ = inventory(0, 0)
    gpu = inv.get("cuda:0")
    assert gpu.physical_index == 1
    assert worker_env(gpu) == {"CUDA_VISIBLE_DEVICES": gpu.uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                               "MAML_DEVICE": "cuda:0"}
    assert worker_env(inv.get("cpu"))["CUDA_VISIBLE_DEVICES"] == ""
    gpu.uuid = None
    assert worker_env(gpu)["CUDA_VISIBLE_DEVICES"] == "1"
