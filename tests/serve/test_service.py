"""The service without a server: one device discovery, GPU runs on the GPU lane."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from maml.serve.service import Service
from serve_helpers import FAKE_GPUS, doc

WAIT_FOR_FILE = """
import os, time
def run(inputs, params, ctx):
    deadline = time.monotonic() + 60
    while params.get("wait") and not os.path.exists(params["wait"]):
        if time.monotonic() > deadline:
            raise TimeoutError(params["wait"])
        time.sleep(0.02)
    return {"pid": os.getpid(), "device": ctx.device}
"""


@pytest.fixture
def service(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_GRAPH", str(tmp_path / "graph"))
    made: list[Service] = []

    def start(**options: Any) -> Service:
        made.append(Service(state_dir=tmp_path / "state", workers=1, **options))
        made[-1].start()
        return made[-1]

    yield start
    for each in made:
        each.close()


def finished(service: Service, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := service.run(run_id))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, json.dumps(run)
        time.sleep(0.05)
    assert run["status"] == "succeeded", json.dumps(run)
    return run


def test_the_service_discovers_devices_once_for_all_its_runs(service, monkeypatch):
    import maml.runtime.devices

    real, calls = maml.runtime.devices.discover, []
    monkeypatch.setattr(maml.runtime.devices, "discover",
                        lambda **kw: calls.append(kw) or real(**kw))
    text = doc("- {id: a, block: a, device: [cuda, cpu]}", {"a": WAIT_FOR_FILE})
    running = service(concurrency=1)
    for run_id in [running.submit(document=text) for _ in range(2)]:
        finished(running, run_id)
    assert len(calls) == 1


def test_gpu_runs_share_the_gpu_lane_worker_while_cpu_runs_pass_them(service, tmp_path,
                                                                      monkeypatch):
    """Two lanes, one (fake) GPU: the second GPU run waits for the first and meets the same
    GPU worker (its loaded model), even when a CPU lane frees up first."""
    fake = tmp_path / "fake_nvml.json"
    fake.write_text(json.dumps({"gpus": FAKE_GPUS["gpus"][:1]}))
    monkeypatch.setenv("MAML_FAKE_NVML", str(fake))
    gpu = doc("- {id: a, block: a, device: [cuda]}", {"a": WAIT_FOR_FILE})
    cpu = doc("- {id: a, block: a, device: [cpu]}", {"a": WAIT_FOR_FILE})
    running = service(concurrency=2)
    go = {name: tmp_path / f"go-{name}" for name in ("first", "cpu")}
    first = running.submit(document=gpu, params={"wait": str(go["first"])})
    on_cpu = running.submit(document=cpu, params={"wait": str(go["cpu"])})
    second = running.submit(document=gpu)
    go["cpu"].touch()                   # the CPU lane frees up while the first GPU run holds
    assert finished(running, on_cpu)["steps"]["a"]["output"]["device"] == "cpu"
    go["first"].touch()
    outputs = [finished(running, r)["steps"]["a"]["output"] for r in (first, second)]
    assert outputs[0]["device"] == outputs[1]["device"] == "cuda:0"
    assert outputs[0]["pid"] == outputs[1]["pid"]        # one worker, one CUDA context


def test_a_run_prepares_while_its_request_syncs_and_starts_only_once_it_is_durable(
        service, monkeypatch):
    from maml.serve import runner

    running = service(concurrency=1)
    order: list[str] = []
    prepared = threading.Event()
    publish, persist = running.hub.publish, running.records.persist
    hold = runner.Gate.on_run_started

    def at_the_gate(self: Any, **event: Any) -> None:
        order.append("prepared")         # checks, plan and store done; no attempt yet
        prepared.set()
        hold(self, **event)

    def synced(request: Any) -> None:
        assert prepared.wait(60), "the run did not prepare during the sync"
        persist(request)
        order.append("durable")

    monkeypatch.setattr(runner.Gate, "on_run_started", at_the_gate)
    monkeypatch.setattr(running.records, "persist", synced)
    monkeypatch.setattr(running.hub, "publish", lambda run_id, type_, **fields: (
        order.append(type_), publish(run_id, type_, **fields))[1])
    finished(running, running.submit(document=doc("- {id: a, block: a}", {"a": WAIT_FOR_FILE})))
    assert order.index("prepared") < order.index("durable") < order.index("run_started") \
        < order.index("attempt_started")


def test_a_run_whose_request_cannot_be_written_is_refused_and_runs_nothing(service, tmp_path,
                                                                           monkeypatch):
    running = service(concurrency=1)
    marker = tmp_path / "ran"

    def disk_full(request: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(running.records, "persist", disk_full)
    text = doc("- {id: a, block: a}",
               {"a": f"def run(inputs, params, ctx):\n    open({str(marker)!r}, 'w').close()"})
    with pytest.raises(OSError, match="No space"):
        running.submit(document=text, idempotency_key="k1")
    monkeypatch.undo()
    monkeypatch.setenv("MAML_GRAPH", str(tmp_path / "graph"))
    later = running.submit(document=doc("- {id: a, block: a}", {"a": WAIT_FOR_FILE}),
                           idempotency_key="k1")      # the key was not kept for a refusal
    finished(running, later)                          # the lane is free: the first run ended
    assert not marker.exists()
    assert [r["run_id"] for r in running.runs()] == [later]
    assert sorted(p.name for p in (tmp_path / "state" / "runs").iterdir()) == [later]
