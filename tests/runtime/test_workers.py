"""Worker processes on their own: the pipe protocol, the poisoned context, the warm spare."""

from __future__ import annotations

import time

import pytest

from maml.runtime.executors.local import WorkerPool
from worker_helpers import outcome, request


@pytest.fixture
def pool():
    pool = WorkerPool({"cpu": 1})
    yield pool
    pool.shutdown()


def test_a_worker_runs_attempts_and_is_reused(pool, tmp_path):
    worker = pool.acquire("cpu")
    worker.send(("attempt", request("import os\nresult = os.getpid()", tmp_path)))
    kind, first, seen = outcome(worker)
    assert kind == "result" and seen[0] == "ready" and "started" in seen
    worker.send(("attempt", request("import os\nresult = os.getpid()", tmp_path)))
    assert outcome(worker)[1] == first     # the same process ran both
    assert pool.acquire("cpu") is None      # its one slot is busy


def test_cuda_error_poisons_the_worker_until_it_is_replaced(pool, tmp_path):
    worker = pool.acquire("cpu")
    worker.send(("attempt", request("result = 1", tmp_path, fault="cuda_error")))
    kind, error, _ = outcome(worker)
    assert kind == "error" and error.error_class == "cuda_error" and error.injected
    worker.send(("attempt", request("result = 1", tmp_path, attempt=2)))
    kind, error, _ = outcome(worker)
    assert kind == "error" and error.error_class == "cuda_error"   # sticky, like real CUDA
    pool.discard(worker)
    fresh = pool.acquire("cpu")
    fresh.send(("attempt", request("result = 1", tmp_path, attempt=3)))
    assert outcome(fresh)[:2] == ("result", "1")


def test_the_warm_spare_replaces_a_lost_worker_without_a_cold_start(pool, tmp_path):
    worker = pool.acquire("cpu")
    worker.send(("attempt", request("result = 1", tmp_path)))
    outcome(worker)
    pool.release(worker)                    # the attempt ended: the next spare starts now
    spare = pool.spare
    deadline = time.monotonic() + 60
    while not spare.conn.poll(0.1):         # the spare is up: maml imported, "ready" sent
        assert time.monotonic() < deadline
    pool.discard(worker)
    replacement = pool.acquire("cpu")
    assert replacement is spare             # the worker that was already up: no cold start
    replacement.send(("attempt", request("result = 2", tmp_path)))
    assert outcome(replacement)[:2] == ("result", "2")
    pool.release(replacement)
    assert pool.spare is not None and pool.spare is not replacement


def test_the_next_spare_waits_until_the_first_worker_is_up(pool, tmp_path):
    worker = pool.acquire("cpu")            # the spare started with the pool fills the slot
    assert pool.started == 1 and pool.spare is None   # no second interpreter beside it yet
    worker.send(("attempt", request("result = 1", tmp_path)))
    outcome(worker)
    pool.release(worker)
    assert pool.started == 2 and pool.spare is not None and pool.spare is not worker


def test_heartbeats_flow_while_an_attempt_runs(pool, tmp_path):
    worker = pool.acquire("cpu")
    worker.send(("attempt", request("import time\ntime.sleep(0.5)\nresult = 0", tmp_path)))
    _, _, seen = outcome(worker)
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


def test_prestart_has_the_first_wave_of_workers_started_before_it_is_asked_for(tmp_path):
    pool = WorkerPool({"cpu": 3})
    try:
        pool.prestart(3)                         # the spare counts as one of the three
        waiting = set(pool.all_processes())
        assert len(waiting) == 3 and pool.started == 3
        taken = [pool.acquire("cpu") for _ in range(3)]
        assert set(taken) <= waiting            # none of the first three attempts waits for a spawn
        pool.prestart(1)                         # the spare started behind them is enough
        assert pool.idle == [] and pool.spare is not None
    finally:
        pool.shutdown()


def test_the_first_wave_counts_the_roots_that_the_free_slots_can_run():
    from maml.runtime.launch import first_wave
    from maml.runtime.plan import Plan, PlannedStep

    def plan(devices, needs=()):
        steps = {f"s{i}": PlannedStep(id=f"s{i}", kind="python", devices=devices,
                                      needs=needs if i else ()) for i in range(4)}
        return Plan(path=None, steps=steps)

    slots = {"cpu": 2, "cuda:0": 1, "cuda:1": 1}
    assert first_wave(plan(("cuda",)), slots) == 2          # two GPUs, one slot each
    assert first_wave(plan(("cuda:1",)), slots) == 1
    assert first_wave(plan(("cuda", "cpu")), slots) == 4
    assert first_wave(plan(("cpu",)), slots) == 2
    assert first_wave(plan(("cpu",), needs=("s0",)), slots) == 1   # a chain: one root
