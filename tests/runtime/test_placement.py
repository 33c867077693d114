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
from maml.runtime.events import DeviceRef
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
    assert worker_env(gpu, "1") == {"CUDA_VISIBLE_DEVICES": gpu.uuid,
                                    "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "MAML_DEVICE": "cuda:0"}
    assert worker_env(inv.get("cpu"), "1") == {"CUDA_VISIBLE_DEVICES": "", "MAML_DEVICE": "cpu"}
    gpu.uuid = None
    assert worker_env(gpu, "1")["CUDA_VISIBLE_DEVICES"] == "1"


def test_worker_env_without_uuid_follows_the_runs_visible_list():
    gpu = DeviceRef("cuda:1", kind="cuda", index=1)
    assert worker_env(gpu, "2,3")["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker_env(gpu, " 2 , 3 ")["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker_env(gpu, None)["CUDA_VISIBLE_DEVICES"] == "1"
    assert worker_env(gpu, "0")["CUDA_VISIBLE_DEVICES"] == "1"   # past the list: the N-th GPU
    mig = DeviceRef("cuda:0", kind="cuda", index=0, uuid="MIG-4f0c")
    assert worker_env(mig, "0")["CUDA_VISIBLE_DEVICES"] == "MIG-4f0c"


# -- the DeviceBook: spreading over GPUs, declared devices as a contract (issue 11.1, 11.3) --

from maml.runtime.devices.book import DeviceBook, NoDevice  # noqa: E402
from maml.runtime.plan import PlannedStep  # noqa: E402
from maml.runtime.policies import default_policy, effective_policy  # noqa: E402


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def gpu_step(sid="s", devices=("cuda", "cpu"), on=None, memory=None):
    policy = (effective_policy(None, {"on": on}, "cuda") if on else default_policy("cuda"))
    return PlannedStep(id=sid, kind="python", devices=tuple(devices), policy=policy,
                       hardware_class="cuda", memory=memory)


def book_of(*used_gib, **kw):
    inv, provider = inventory(*used_gib)
    return DeviceBook(inv, **kw), provider


def place_all(book, steps, breaker):
    """Place steps one after another as the scheduler does, counting each placement."""
    load: dict[str, int] = {}
    chosen = []
    for step in steps:
        device = book.place(step, breaker, load)
        load[device] = load.get(device, 0) + 1
        chosen.append(device)
    return chosen


def test_concurrent_ready_steps_spread_over_every_gpu_before_doubling_up():
    book, _ = book_of(0, 0)
    steps = [gpu_step(f"s{i}") for i in range(4)]
    assert place_all(book, steps, CircuitBreaker()) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    book, _ = book_of(40, 0, 20, 70)               # idle GPUs first, the roomiest first
    assert place_all(book, steps, CircuitBreaker()) == ["cuda:1", "cuda:2", "cuda:0", "cuda:3"]


def test_workers_per_gpu_sets_the_slots_and_how_many_steps_share_a_gpu():
    book, _ = book_of(0, 10, workers_per_gpu=2)
    assert book.slots(3) == {"cpu": 3, "cuda:0": 2, "cuda:1": 2}
    steps = [gpu_step(f"s{i}") for i in range(4)]
    assert place_all(book, steps, CircuitBreaker()) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    with pytest.raises(ValueError):
        DeviceBook(None, workers_per_gpu=0)


def test_the_memory_hint_beats_a_free_slot_and_is_dropped_when_nothing_fits():
    book, _ = book_of(60, 20)                       # 20 GiB and 60 GiB free
    big = gpu_step("big", memory=50 * GiB)
    assert book.place(big, CircuitBreaker(), {"cuda:1": 1}) == "cuda:1"
    huge = gpu_step("huge", devices=("cuda",), memory=500 * GiB)
    assert book.place(huge, CircuitBreaker(), {}) in ("cuda:0", "cuda:1")


def test_a_step_pinned_to_one_gpu_never_moves_off_its_list():
    book, _ = book_of(0, 0)
    breaker = CircuitBreaker(failures=2, cooldown=60, clock=FakeClock())
    pinned = gpu_step("p", devices=("cuda:0",))
    assert book.allowed(pinned) == ["cuda:0"]
    breaker.record_failure("cuda:0")
    breaker.record_failure("cuda:0")
    assert book.candidates(pinned, breaker) == []
    with pytest.raises(NoDevice) as caught:
        book.place(pinned, breaker, {})
    verdict = caught.value.verdict
    assert verdict.reasons == {"cuda:0": "breaker open after 2 failures in a row (cooldown 60 s)"}
    assert verdict.retry_at == 60.0
    assert caught.value.error_class == "device_unavailable"
    assert "may run only on cuda:0" in str(caught.value)


def test_missing_devices_are_named_with_what_the_machine_has():
    book, _ = book_of(0)
    with pytest.raises(NoDevice) as caught:
        book.place(gpu_step("s", devices=("cuda:1",)), CircuitBreaker(), {})
    assert caught.value.verdict.reasons == {"cuda:1": "not found on this machine (it has cuda:0)"}
    assert caught.value.verdict.retry_at is None
    cpu_only = DeviceBook(discover(provider=FakeNVML([])))
    with pytest.raises(NoDevice) as caught:
        cpu_only.place(gpu_step("q", devices=("cuda",)), CircuitBreaker(), {})
    assert caught.value.verdict.reasons["cuda"].startswith("no GPU found on this machine")


class States:
    def __init__(self, states, reasons=()):
        self._states, self._reasons = states, list(reasons)

    def states(self):
        return dict(self._states)

    def latest(self, device):
        return {"memory_free": None, "reasons": self._reasons}


def test_critical_health_is_a_reason_and_is_reported_as_a_decision():
    inv, _ = inventory(0, 0)
    heard = []
    book = DeviceBook(inv, States({"cuda:0": "critical"}, ["temperature 95 C"]),
                      on_decision=lambda **kw: heard.append(kw))
    assert book.place(gpu_step("s", devices=("cuda:0", "cuda:1")), CircuitBreaker(), {}) == "cuda:1"
    assert heard == [{"step_id": "s", "decision": "placed", "device": "cuda:1",
                      "reasons": {"cuda:0": "critical health (temperature 95 C)"},
                      "retry_at": None}]
    with pytest.raises(NoDevice):
        book.place(gpu_step("t", devices=("cuda:0",)), CircuitBreaker(), {})
    assert heard[-1]["decision"] == "unavailable" and heard[-1]["device"] is None


def test_the_cpu_is_allowed_only_by_the_list_or_a_chain_the_document_wrote():
    book, _ = book_of(0)
    assert book.allowed(gpu_step("a", devices=("cuda",))) == ["cuda:0"]
    assert book.allowed(gpu_step("b", devices=("cuda", "cpu"))) == ["cuda:0", "cpu"]
    explicit = gpu_step("c", devices=("cuda:0",), on={"oom": ["halve_batch", "cpu"]})
    assert book.allowed(explicit) == ["cuda:0", "cpu"]


def test_admit_keeps_a_recovery_choice_until_its_breaker_opens():
    book, _ = book_of(0, 0)
    breaker = CircuitBreaker(failures=1, cooldown=60, clock=FakeClock())
    step = gpu_step("s", devices=("cuda",))
    assert book.admit(step, "cuda:1", breaker, {"cuda:1": 5}) == "cuda:1"
    breaker.record_failure("cuda:1")
    assert book.admit(step, "cuda:1", breaker, {}) == "cuda:0"
    breaker.record_failure("cuda:0")
    with pytest.raises(NoDevice):
        book.admit(step, "cuda:0", breaker, {})


def test_recovery_never_leaves_the_declared_devices():
    """decide() over book.candidates(): the default cuda chain on a cuda-only step."""
    import random

    from maml.runtime.events import DeviceRef, ErrorInfo
    from maml.runtime.policies import AttemptState, decide

    book, _ = book_of(0, 0)
    breaker = CircuitBreaker(failures=1, cooldown=60, clock=FakeClock())
    step = gpu_step("s", devices=("cuda",))
    state = AttemptState("s", params={"batch_size": 1}, device="cuda:0")
    for _ in range(4):
        error = ErrorInfo("oom", "X", "boom", device=DeviceRef(id=state.device, kind="cuda"))
        breaker.record_failure(state.device)
        decision = decide(step.policy, state, error, devices=book.candidates(step, breaker),
                          rng=random.Random(0))
        state.advance(error, decision)
        assert state.device in ("cuda:0", "cuda:1")


def test_the_plan_carries_the_memory_hint_in_bytes(runner):
    from maml.runtime.plan import build_plan

    doc = runner.write_doc({"pipeline": [{"id": "s", "block": "s", "memory": "4GiB"},
                                         {"id": "t", "block": "s", "needs": "s"}]},
                           {"s": "def run(inputs, params, ctx):\n    return 1"})
    plan = build_plan(doc)
    assert plan.steps["s"].memory == 4 * GiB and plan.steps["t"].memory is None


def test_device_decisions_and_placements_are_kept_in_the_signed_graph(tmp_path, monkeypatch):
    import maml.graph
    from maml.runtime.events import DeviceRef, StepInfo

    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    step = StepInfo(id="s", kind="python", devices=("cuda:0", "cuda:1"))
    gpu = DeviceRef(id="cuda:1", kind="cuda", index=1, uuid="GPU-b")
    with maml.graph.Recorder(tmp_path / "g") as recorder:
        recorder.on_run_started(run_id="r", document="d.maml.md", steps=[step], started_at=1.0)
        recorder.on_device_decision(run_id="r", step=step, decision="placed", device="cuda:1",
                                    reasons={"cuda:0": "critical health"}, retry_at=None)
        recorder.on_attempt_started(run_id="r", step=step, attempt=1, device=gpu,
                                    worker_id="ray-cuda:1-0", params={})
        recorder.on_attempt_placed(run_id="r", step=step, attempt=1, device=gpu,
                                   node={"node_id": "abc", "node_ip": "10.0.0.2"})
        recorder.on_run_finished(run_id="r", status="succeeded", errors=0, recoveries=0,
                                 duration=1.0)
    graph = maml.graph.open(tmp_path / "g")
    nodes = {data["type"]: (n, data) for n, data in graph.nx.nodes(data=True)}
    decision_id, decision = nodes["device_decision"]
    assert decision["reasons"] == {"cuda:0": "critical health"} and decision["device"] == "cuda:1"
    placement_id, placement = nodes["placement"]
    assert placement["node"] == {"node_id": "abc", "node_ip": "10.0.0.2"}
    assert placement["device"]["uuid"] == "GPU-b"
    assert graph.nx.has_edge(nodes["attempt"][0], placement_id)
    assert graph.nx.has_edge(nodes["step"][0], decision_id)
