"""Worker processes on their own: the pipe protocol, the poisoned context, the warm spare."""

from __future__ import annotations

import time

import pytest

from maml.runtime.events import DeviceRef
from maml.runtime.kinds.base import StepSpec
from maml.runtime.worker_main import AttemptRequest
from maml.runtime.workers import WorkerPool


def _request(body: str, attempt: int = 1, fault: str | None = None) -> AttemptRequest:
    step = StepSpec(id="s", kind="python", params={}, block_body=body, block_line=1)
    return AttemptRequest(step=step, attempt=attempt, device=DeviceRef("cpu"), fault=fault,
                          heartbeat_interval=0.05)


def _outcome(worker, timeout: float = 60.0):
    """Messages until the attempt's result or error: (kind, payload, every message type)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.conn.poll(0.1):
            message = worker.conn.recv()
            seen.append(message[0])
            if message[0] in ("result", "error"):
                return message[0], message[1], seen
    raise AssertionError(f"no outcome within {timeout} s; saw {seen}")


@pytest.fixture
def pool():
    pool = WorkerPool({"cpu": 1})
    yield pool
    pool.shutdown()


def test_a_worker_runs_attempts_and_is_reused(pool):
    worker = pool.acquire("cpu")
    worker.send(("attempt", _request("import os\nresult = os.getpid()")))
    kind, first, seen = _outcome(worker)
    assert kind == "result" and seen[0] == "ready" and "started" in seen
    worker.send(("attempt", _request("import os\nresult = os.getpid()")))
    assert _outcome(worker)[1] == first     # the same process ran both
    assert pool.acquire("cpu") is None      # its one slot is busy


def test_cuda_error_poisons_the_worker_until_it_is_replaced(pool):
    worker = pool.acquire("cpu")
    worker.send(("attempt", _request("result = 1", fault="cuda_error")))
    kind, error, _ = _outcome(worker)
    assert kind == "error" and error.error_class == "cuda_error" and error.injected
    worker.send(("attempt", _request("result = 1", attempt=2)))
    kind, error, _ = _outcome(worker)
    assert kind == "error" and error.error_class == "cuda_error"   # sticky, like real CUDA
    pool.discard(worker)
    fresh = pool.acquire("cpu")
    fresh.send(("attempt", _request("result = 1", attempt=3)))
    assert _outcome(fresh)[:2] == ("result", "1")


def test_the_warm_spare_replaces_a_lost_worker_without_a_cold_start(pool):
    worker = pool.acquire("cpu")
    worker.send(("attempt", _request("result = 1")))
    _outcome(worker)
    spare = pool.spare
    deadline = time.monotonic() + 60
    while not spare.conn.poll(0.1):         # the spare is up: maml imported, "ready" sent
        assert time.monotonic() < deadline
    pool.discard(worker)
    started = time.monotonic()
    replacement = pool.acquire("cpu")
    assert replacement is spare
    replacement.send(("attempt", _request("result = 2")))
    assert _outcome(replacement)[:2] == ("result", "2")
    assert time.monotonic() - started < 1.0
    assert pool.spare is not None and pool.spare is not replacement


def test_heartbeats_flow_while_an_attempt_runs(pool):
    worker = pool.acquire("cpu")
    worker.send(("attempt", _request("import time\ntime.sleep(0.5)\nresult = 0")))
    _, _, seen = _outcome(worker)
    assert seen.count("hb") >= 3


def test_a_script_without_a_main_guard_is_not_rerun_in_the_workers(tmp_path):
    import subprocess
    import sys

    (tmp_path / "d.maml.md").write_text(
        "---\nmaml_version: '1.0'\npermissions: [execute]\n---\n# d\n\n## Code_Blocks\n\n```python\nresult = 7\n```\n")
    script = tmp_path / "script.py"
    script.write_text("import maml\nprint('ran script')\n"
                      "print(maml.run('d.maml.md', graph=False, workers=1).output)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ran script", "7"]
