"""The executor on a (fake) two-GPU machine: placement, next_device, the health hook.

The GPUs come from FakeNVML through the real discovery; the python step does not touch
CUDA, so the device is what the executor chose and passed to the step as ctx.device.
"""

from __future__ import annotations

from maml.runtime.devices.discovery import discover
from maml.runtime.devices.nvml_fake import FakeGPU, FakeNVML

DEVICE_BODY = "def run(inputs, params, ctx):\n    return ctx.host_device.id"


class FakeMonitor:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self):
        self.calls.append("start")
        return self

    def stop(self) -> None:
        self.calls.append("stop")

    def latest(self, device_id: str):
        return {"device": device_id, "temperature": 71}

    def states(self):
        return {"cuda:0": "healthy", "cuda:1": "healthy"}


def _two_gpus():
    return discover(provider=FakeNVML([FakeGPU(uuid="GPU-a"), FakeGPU(uuid="GPU-b")]))


def test_oom_on_a_gpu_clears_the_cache_then_moves_to_the_other_gpu(runner, events):
    doc = runner.write_doc({"pipeline": [{"id": "s", "block": "s", "device": ["cuda", "cpu"]}]},
                           {"s": DEVICE_BODY})
    monitor = FakeMonitor()
    result = runner.run(doc, inject=["s:oom@1,2"], inventory=_two_gpus(), monitor=monitor,
                        observers=[events])
    assert [p["device"].id for p in events.of("on_attempt_started")] == [
        "cuda:0", "cuda:0", "cuda:1"]
    assert [p["action"] for p in events.of("on_recovery_applied")] == ["clear_cache",
                                                                       "next_device"]
    assert result.steps["s"].output == "cuda:1" and result.steps["s"].device == "cuda:1"
    error = events.of("on_attempt_failed")[0]["error"]
    assert error.device.uuid == "GPU-a"
    assert error.health == {"device": "cuda:0", "temperature": 71}   # the monitor's sample
    assert monitor.calls == ["start", "stop"]


def test_gpu_steps_run_on_one_slot_per_gpu_beside_the_cpu_slots(runner):
    doc = runner.write_doc({"pipeline": [
        {"id": "g0", "block": "s", "device": "cuda:0"},
        {"id": "g1", "block": "s", "device": "cuda:1"},
        {"id": "c", "block": "s"}]}, {"s": DEVICE_BODY})
    result = runner.run(doc, inventory=_two_gpus(), workers=1)
    assert {k: s.output for k, s in result.steps.items()} == {
        "g0": "cuda:0", "g1": "cuda:1", "c": "cpu"}


def _one_gpu():
    return discover(provider=FakeNVML([FakeGPU(uuid="GPU-a")]))


def _pinned(runner, chain):
    return runner.write_doc({
        "policy": {"breaker": {"failures": 1, "cooldown": "0.3s"}, "backoff": {"initial": 0},
                   "on": {"cuda_error": ["retry"], **chain}},
        "pipeline": [{"id": "s", "block": "s", "device": "cuda:0"}]}, {"s": DEVICE_BODY})


def test_a_step_pinned_to_a_gpu_whose_breaker_opened_fails_naming_the_device(runner, events):
    result = runner.run(_pinned(runner, {}), inject=["s:cuda_error@1"], inventory=_one_gpu(),
                        observers=[events])
    step = result.steps["s"]
    assert step.status == "failed" and step.attempts == 1       # never moved to the CPU
    assert step.error.error_class == "device_unavailable"
    assert "cuda:0: breaker open after 1 failure in a row" in step.error.message
    decisions = events.of("on_device_decision")
    assert [d["decision"] for d in decisions] == ["unavailable"]
    assert set(decisions[0]["reasons"]) == {"cuda:0"}


def test_a_policy_that_retries_device_unavailable_waits_for_the_breaker_cooldown(runner,
                                                                                 events):
    result = runner.run(_pinned(runner, {"device_unavailable": ["retry"]}),
                        inject=["s:cuda_error@1"],
                        inventory=_one_gpu(), observers=[events])
    step = result.steps["s"]
    assert step.status == "succeeded" and step.attempts == 2 and step.output == "cuda:0"
    assert [d["decision"] for d in events.of("on_device_decision")] == ["unavailable", "wait"]
    assert [p["device"].id for p in events.of("on_attempt_started")] == ["cuda:0", "cuda:0"]


SLEEPY = "import time\ndef run(inputs, params, ctx):\n    time.sleep(0.5)\n    return ctx.host_device.id"


def test_concurrent_ready_steps_spread_over_both_gpus(runner, events):
    doc = runner.write_doc({"pipeline": [{"id": f"s{k}", "block": "s", "device": ["cuda", "cpu"]}
                                         for k in range(4)]}, {"s": SLEEPY})
    result = runner.run(doc, inventory=_two_gpus(), observers=[events])
    assert sorted(s.output for s in result.steps.values()) == ["cuda:0", "cuda:0", "cuda:1",
                                                               "cuda:1"]
    hooks = [h for h, _ in events.events if h in ("on_attempt_started", "on_attempt_succeeded")]
    assert hooks[:2] == ["on_attempt_started"] * 2        # one per GPU at once, not in turn


def test_workers_per_gpu_lets_one_gpu_run_two_steps_at_once(runner, events):
    doc = runner.write_doc({"executor": {"workers_per_gpu": 2},
                            "pipeline": [{"id": f"s{k}", "block": "s", "device": "cuda"}
                                         for k in range(2)]}, {"s": SLEEPY})
    result = runner.run(doc, inventory=_one_gpu(), observers=[events])
    assert {s.output for s in result.steps.values()} == {"cuda:0"}
    hooks = [h for h, _ in events.events if h in ("on_attempt_started", "on_attempt_succeeded")]
    assert hooks == ["on_attempt_started"] * 2 + ["on_attempt_succeeded"] * 2


def test_ooms_being_recovered_by_a_smaller_batch_do_not_open_the_gpus_breaker(runner, events):
    """Seen on an H200: three real OOMs while halve_batch shrank the work opened cuda:0's
    breaker and failed a step pinned there. An OOM is the workload's size, not the device."""
    doc = runner.write_doc({
        "policy": {"breaker": {"failures": 1, "cooldown": "1h"}, "backoff": {"initial": 0},
                   "on": {"oom": ["halve_batch"]}},
        "pipeline": [{"id": "s", "block": "s", "device": "cuda:0",
                      "params": {"batch_size": 64}}]}, {"s": DEVICE_BODY})
    result = runner.run(doc, inject=["s:oom@1,2,3"], inventory=_one_gpu(), observers=[events])
    step = result.steps["s"]
    assert step.status == "succeeded" and step.attempts == 4 and step.output == "cuda:0"
    assert step.params["batch_size"] == 8
    assert events.of("on_device_decision") == []
