"""Health classification, thresholds and the monitor, driven by FakeNVML and a fake clock."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.errors import UsageError
from maml.runtime.events import Broadcaster, DeviceRef
from maml.runtime.devices.health import (
    STATES, HealthMonitor, Thresholds, classify_sample, load_thresholds, start_monitor,
    thresholds_from_mapping,
)
from maml.runtime.devices.nvml import FakeGPU, FakeNVML

GiB = 2**30
RANK = {s: i for i, s in enumerate(STATES)}
SAMPLE_KEYS = {"device", "uuid", "time", "memory_used", "memory_total", "memory_free",
               "utilization_gpu", "temperature", "power_w", "power_limit_w", "throttle_reasons",
               "ecc_uncorrectable", "remapped_rows_pending", "remap_failure",
               "retired_pages_pending", "xid", "state", "reasons"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, hook: str, **payload) -> None:
        self.seen.append((hook, payload))

    def changes(self) -> list[tuple[str, str, str]]:
        return [(p["device"].id, p["old"], p["new"]) for h, p in self.seen
                if h == "on_device_state_changed"]


def monitor_for(gpus, *, progress_age=None, thresholds=Thresholds()):
    clock, events = Clock(), Events()
    provider = FakeNVML(gpus, clock=clock)
    monitor = HealthMonitor(provider, emit=events, clock=clock, progress_age=progress_age,
                            thresholds=thresholds)
    return monitor, provider, clock, events


# -- classification at the boundaries ----------------------------------------------------------

@pytest.mark.parametrize("temperature, state, code", [
    (82.9, "healthy", None), (83, "warning", "temperature_warning"),
    (84.9, "warning", "temperature_warning"), (85, "critical", "temperature_critical"),
    (89, "critical", "temperature_critical"), (90, "critical", "temperature_shutdown"),
])
def test_temperature_boundaries(temperature, state, code):
    got, reasons = classify_sample({"temperature": temperature})
    assert got == state
    assert [r.split(":")[0] for r in reasons] == ([code] if code else [])


@pytest.mark.parametrize("used_share, state", [
    (0.899, "healthy"), (0.90, "warning"), (0.949, "warning"), (0.95, "critical"), (1.0, "critical"),
])
def test_memory_boundaries(used_share, state):
    total = 80 * GiB
    assert classify_sample({"memory_used": int(total * used_share), "memory_total": total})[0] == state


@pytest.mark.parametrize("field, value", [
    ("ecc_uncorrectable", 1), ("remapped_rows_pending", True), ("remap_failure", True),
    ("retired_pages_pending", True), ("xid", [79]),
])
def test_memory_errors_and_hardware_xids_are_critical(field, value):
    state, reasons = classify_sample({field: value})
    assert state == "critical" and len(reasons) == 1


def test_throttling_warns_only_for_slowdowns_not_for_the_power_cap():
    assert classify_sample({"throttle_reasons": ["sw_power_cap", "gpu_idle"]}) == ("healthy", [])
    state, reasons = classify_sample({"throttle_reasons": ["sw_power_cap", "hw_thermal_slowdown"]})
    assert state == "warning" and reasons == ["throttle: hw_thermal_slowdown"]


def test_application_xids_are_recorded_but_do_not_change_the_state():
    assert classify_sample({"xid": [13, 43]}) == ("healthy", [])
    assert classify_sample({"xid": [999]})[0] == "warning"


@pytest.mark.parametrize("busy_for, progress_age, hung", [
    (30, 30, True), (29.9, 60, False), (60, 29.9, False), (60, None, False), (None, 60, False),
])
def test_hang_needs_sustained_utilisation_and_no_progress(busy_for, progress_age, hung):
    state, reasons = classify_sample({}, busy_for=busy_for, progress_age=progress_age)
    assert (state == "critical") is hung
    assert any(r.startswith("hang:") for r in reasons) is hung


readings = st.fixed_dictionaries({
    "temperature": st.one_of(st.none(), st.floats(0, 120)),
    "memory_used": st.integers(0, 80 * GiB),
    "memory_total": st.just(80 * GiB),
    "ecc_uncorrectable": st.integers(0, 2),
    "throttle_reasons": st.lists(st.sampled_from(["sw_power_cap", "hw_slowdown", "gpu_idle"])),
})


@given(readings, st.floats(0, 30))
def test_hotter_is_never_healthier(sample, extra_degrees):
    hotter = {**sample, "temperature": (sample["temperature"] or 0) + extra_degrees}
    cooler = {**sample, "temperature": sample["temperature"] or 0}
    assert RANK[classify_sample(hotter)[0]] >= RANK[classify_sample(cooler)[0]]


@given(readings, st.integers(0, 80 * GiB))
def test_fuller_is_never_healthier(sample, extra_bytes):
    fuller = {**sample, "memory_used": min(80 * GiB, sample["memory_used"] + extra_bytes)}
    assert RANK[classify_sample(fuller)[0]] >= RANK[classify_sample(sample)[0]]


@given(readings)
def test_lower_thresholds_never_make_a_sample_healthier(sample):
    strict = Thresholds(temperature_warning=60, temperature_critical=70, temperature_shutdown=80,
                        memory_warning=0.5, memory_critical=0.6)
    assert RANK[classify_sample(sample, strict)[0]] >= RANK[classify_sample(sample)[0]]


# -- the monitor -------------------------------------------------------------------------------

def test_a_device_goes_critical_mid_run_and_the_change_is_emitted_once():
    monitor, _, clock, events = monitor_for([
        FakeGPU(script=[{"temperature": 60}, {"at": 10, "temperature": 84},
                        {"at": 20, "temperature": 91}]),
        FakeGPU(script=[{"temperature": 50}]),
    ])
    for now in (1000, 1005, 1011, 1015, 1021, 1025):
        clock.now = now
        monitor.sample_once()
    assert events.changes() == [("cuda:0", "healthy", "warning"), ("cuda:0", "warning", "critical")]
    assert monitor.states() == {"cuda:0": "critical", "cuda:1": "healthy"}
    assert monitor.latest("cuda:0")["reasons"] == ["temperature_shutdown: 91 °C >= 90 °C"]
    assert sum(1 for h, _ in events.seen if h == "on_device_sample") == 12
    change = next(p for h, p in events.seen if p.get("new") == "critical")
    assert isinstance(change["device"], DeviceRef) and change["sample"]["temperature"] == 91


def test_samples_carry_the_documented_keys_and_fresh_memory():
    monitor, provider, clock, _ = monitor_for([FakeGPU(script=[{"memory_used": 10 * GiB}])])
    monitor.sample_once()
    sample = monitor.latest("cuda:0")
    assert set(sample) == SAMPLE_KEYS
    assert (sample["memory_used"], sample["memory_free"]) == (10 * GiB, 70 * GiB)
    provider.set(0, memory_used=77 * GiB)
    monitor.sample_once()
    assert monitor.latest("cuda:0")["memory_free"] == 3 * GiB
    assert monitor.state("cuda:0") == "critical"
    assert monitor.latest("cuda:9") is None


def test_hang_rule_with_injected_clock_and_progress_age():
    stalled_since = {"cuda:0": 1000.0}
    monitor, _, clock, events = monitor_for(
        [FakeGPU(script=[{"utilization": 100}])],
        progress_age=lambda device: clock.now - stalled_since[device] if device in stalled_since
        else None)
    clock.now = 1000.0
    monitor.sample_once()
    clock.now = 1029.0
    monitor.sample_once()
    assert monitor.state("cuda:0") == "healthy"
    clock.now = 1031.0
    monitor.sample_once()
    assert monitor.state("cuda:0") == "critical"
    assert monitor.latest("cuda:0")["reasons"][0].startswith("hang:")
    stalled_since["cuda:0"] = 1031.0             # a heartbeat: the step moves again
    clock.now = 1032.0
    monitor.sample_once()
    assert monitor.state("cuda:0") == "healthy"


def test_busy_gpu_without_a_step_of_ours_is_not_a_hang():
    monitor, _, clock, _ = monitor_for([FakeGPU(script=[{"utilization": 100}])],
                                       progress_age=lambda device: None)
    for now in (1000, 1100):
        clock.now = now
        monitor.sample_once()
    assert monitor.state("cuda:0") == "healthy"


def test_utilisation_dip_restarts_the_hang_window():
    monitor, provider, clock, _ = monitor_for([FakeGPU(script=[{"utilization": 100}])],
                                              progress_age=lambda device: 999.0)
    monitor.sample_once()
    clock.now += 20
    provider.set(0, utilization=50)
    monitor.sample_once()
    clock.now += 1
    provider.set(0, utilization=100)
    monitor.sample_once()
    clock.now += 20
    monitor.sample_once()
    assert monitor.state("cuda:0") == "healthy"       # 20 s busy since the dip, not 41


def test_hardware_xid_keeps_the_device_critical():
    monitor, provider, clock, _ = monitor_for([FakeGPU(script=[{}, {"at": 1, "xid": [79]}])])
    monitor.sample_once()
    clock.now += 2
    assert monitor.sample_once()[0]["xid"] == [79]
    clock.now += 2
    later = monitor.sample_once()[0]
    assert later["xid"] == [] and later["state"] == "critical"
    assert any("XID 79" in r for r in later["reasons"])


def test_provider_errors_become_samples_and_a_lost_gpu_is_critical():
    class Broken(FakeNVML):
        def temperature(self, index):
            raise RuntimeError("driver hiccup")

    clock, events = Clock(), Events()
    monitor = HealthMonitor(Broken([FakeGPU()], clock=clock), emit=events, clock=clock)
    sample = monitor.sample_once()[0]
    assert sample["error"] == "RuntimeError: driver hiccup" and sample["state"] == "healthy"
    lost_monitor, provider, _, _ = monitor_for([FakeGPU()])
    provider.set(0, lost=True)
    lost = lost_monitor.sample_once()[0]
    assert lost["state"] == "critical" and lost["reasons"][0].startswith("gpu_lost:")


def test_unsupported_readings_are_none_not_errors():
    monitor, _, _, _ = monitor_for([FakeGPU(script=[{"unsupported": ["power_w", "temperature"]}])])
    sample = monitor.sample_once()[0]
    assert sample["power_w"] is None and sample["temperature"] is None and "error" not in sample


def test_sampler_thread_survives_a_failing_observer_and_stops():
    class Failing:
        critical = True              # the graph's observer re-raises through the Broadcaster

        def __init__(self):
            self.calls = 0

        def on_device_sample(self, **_):
            self.calls += 1
            raise RuntimeError("observer broke")

    failing = Failing()
    monitor = HealthMonitor(FakeNVML([FakeGPU()]), interval=0.01,
                            emit=Broadcaster([failing]).emit)
    monitor.start()
    deadline = time.monotonic() + 10
    while failing.calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    monitor.stop()
    assert failing.calls >= 3
    assert not any(t.name == "maml-health" for t in threading.enumerate())


def test_start_monitor_needs_gpus():
    from maml.runtime.devices.discovery import discover

    assert start_monitor(discover()) is None           # CPU only here
    provider = FakeNVML([FakeGPU()])
    monitor = start_monitor(discover(provider=provider), provider=provider, interval=0.01)
    try:
        deadline = time.monotonic() + 10
        while monitor.latest("cuda:0") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert monitor.latest("cuda:0")["state"] == "healthy"
    finally:
        monitor.stop()


# -- thresholds from config --------------------------------------------------------------------

def test_load_thresholds_from_config_file_and_front_matter(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path))
    assert load_thresholds() == Thresholds()
    (tmp_path / "config.toml").write_text(
        '[health]\ntemperature_warning = 75\nmemory_warning = "80%"\nhang_seconds = "1m"\n')
    loaded = load_thresholds(overrides={"temperature": {"critical": 80}, "memory_critical": 0.9})
    assert (loaded.temperature_warning, loaded.temperature_critical) == (75, 80)
    assert (loaded.memory_warning, loaded.memory_critical, loaded.hang_seconds) == (0.8, 0.9, 60)


@pytest.mark.parametrize("mapping, message", [
    ({"temprature_warning": 80}, "unknown health setting 'temprature_warning'"),
    ({"temperature_warning": 95}, "temperatures must rise"),
    ({"memory_warning": "97%"}, "memory shares"),
    ({"hang_seconds": "soon"}, "malformed duration"),
    ({"temperature_warning": True}, "expected a number"),
])
def test_bad_settings_are_usage_errors_naming_their_source(mapping, message):
    with pytest.raises(UsageError, match=message) as caught:
        thresholds_from_mapping(mapping, source="config.toml")
    assert caught.value.path == "config.toml"


def test_unreadable_config_names_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[health\n")
    with pytest.raises(UsageError) as caught:
        load_thresholds(path)
    assert caught.value.path == str(path)
