"""What a worker leaves behind: no processes after a run, memory returned between attempts,
GPU pinning through the environment a spawned worker really sees, CPU-time liveness."""

from __future__ import annotations

import json
import multiprocessing
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from maml.runtime.events import DeviceRef
from maml.runtime.hygiene import MemoryReading
from maml.runtime.workers import WorkerProcess
from worker_helpers import outcome, request

EXECUTE = {"permissions": {"execute": True}}
MiB = 2**20

#: a double-forked daemon: leaves its session and process group, writes its pid, sleeps
DAEMON = textwrap.dedent("""
    import os, sys, time
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pids(directory: Path, names: list[str], timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while not all((directory / n).exists() and (directory / n).read_text() for n in names):
        assert time.monotonic() < deadline, f"pid files missing in {list(directory.iterdir())}"
        time.sleep(0.05)
    return [int((directory / n).read_text()) for n in names]


def _gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


# -- process trees -------------------------------------------------------------------------


def test_a_python_step_leaves_no_popen_grandchild_and_no_daemon(runner, tmp_path):
    (tmp_path / "daemon.py").write_text(DAEMON)
    body = f"""
        import os, subprocess, sys
        def run(inputs, params, ctx):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            open({str(tmp_path / 'popen')!r}, "w").write(str(child.pid))
            subprocess.run([sys.executable, {str(tmp_path / 'daemon.py')!r},
                            {str(tmp_path / 'daemon')!r}], check=True)
            while not os.path.exists({str(tmp_path / 'daemon')!r}) \
                    or not os.path.getsize({str(tmp_path / 'daemon')!r}):
                pass
            return "done"
    """
    doc = runner.write_doc({"pipeline": [{"id": "p", "block": "p"}]}, {"p": body})
    result = runner.run(doc)
    assert result.status == "succeeded" and result.steps["p"].attempts == 1
    pids = _pids(tmp_path, ["popen", "daemon"])
    assert _gone(pids) == []
    log = (Path(result.run_dir) / "logs" / "p.1.log").read_text()
    assert "killed 2 process(es)" in log and str(pids[0]) in log


def test_a_shell_background_job_does_not_hold_the_step_and_is_killed(runner, tmp_path, events):
    pidfile = tmp_path / "job"
    doc = runner.write_doc({**EXECUTE, "pipeline": [{"id": "sh", "kind": "shell", "block": "sh"}]},
                           {"sh": f"#!bash\nsleep 300 &\necho $! > {pidfile}\necho started"})
    result = runner.run(doc, observers=[events])
    assert result.steps["sh"].output["stdout"] == "started\n"
    # the step ended when bash did, not when the job would have: maml found the job still
    # running when the step ended, and killed it (the log names it)
    pid, = _pids(tmp_path, ["job"])
    assert _gone([pid]) == []
    log = (Path(result.run_dir) / "logs" / "sh.1.log").read_text()
    assert "started" in log and f"{pid} (sleep 300)" in log


def test_a_timed_out_shell_step_takes_its_grandchild_and_daemon_with_it(runner, tmp_path):
    (tmp_path / "daemon.py").write_text(DAEMON)
    script = (f"#!bash\n{sys.executable} {tmp_path / 'daemon.py'} {tmp_path / 'daemon'}\n"
              f"{sys.executable} -c 'import time; time.sleep(120)' &\n"
              f"echo $! > {tmp_path / 'child'}\nwait\n")
    doc = runner.write_doc({**EXECUTE, "policy": {"retries": 0, "timeout": "2s"},
                            "pipeline": [{"id": "sh", "kind": "shell", "block": "sh"}]},
                           {"sh": script})
    result = runner.run(doc)
    assert result.status == "failed"
    pids = _pids(tmp_path, ["daemon", "child"])
    assert _gone(pids) == []


# -- memory ---------------------------------------------------------------------------------


def test_module_level_memory_of_failed_attempts_is_returned_before_the_retry(runner, events):
    body = """
        import os, psutil
        blob = b"x" * (400 * 2**20)          # touched: really resident
        def run(inputs, params, ctx):
            return [psutil.Process().memory_info().rss, os.getpid()]
    """
    doc = runner.write_doc({"policy": {"retries": 3, "on": {"oom": ["retry"]}},
                            "pipeline": [{"id": "m", "block": "m"}]}, {"m": body})
    result = runner.run(doc, inject=["m:oom@1,2,3"], observers=[events], workers=1)
    rss, pid = result.steps["m"].output
    assert result.steps["m"].attempts == 4
    assert rss < 2 * 400 * MiB, f"attempt 4 started with {rss / MiB:.0f} MiB resident"
    failures = events.of("on_attempt_failed")
    assert [f["error"].context["pid"] for f in failures] == [pid] * 3   # same worker
    assert all("restart_worker" not in f["error"].context for f in failures)


@pytest.fixture
def worker():
    process = WorkerProcess(multiprocessing.get_context("spawn"), "t1")
    yield process
    process.stop()


def test_memory_kept_outside_the_namespace_gets_the_worker_replaced(worker, tmp_path):
    leak = """
        import builtins
        builtins.__dict__.setdefault("_leak", []).append(b"x" * (300 * 2**20))
        raise RuntimeError("failed after leaking")
    """
    worker.send(("attempt", request(leak, tmp_path, memory_slack=100 * MiB)))
    kind, error, _ = outcome(worker)
    assert kind == "error" and "above the worker's baseline" in error.context["restart_worker"]
    worker.process.join(timeout=20)
    assert worker.process.exitcode == 0       # it left by itself, after saying why


def test_memory_reading_names_the_excess():
    base = MemoryReading(rss=100 * MiB)
    assert MemoryReading(rss=150 * MiB).excess_over(base, 64 * MiB) is None
    assert "GPU" not in (MemoryReading(rss=300 * MiB).excess_over(base, 64 * MiB) or "GPU")
    assert "CUDA memory" in MemoryReading(rss=100 * MiB, cuda_reserved=900 * MiB).excess_over(
        MemoryReading(rss=100 * MiB, cuda_reserved=0), 64 * MiB)


# -- pinning ----------------------------------------------------------------------------------


PIN_BODY = """
    import os, subprocess
    seen = subprocess.run(["sh", "-c", 'printf %s "$CUDA_VISIBLE_DEVICES"'],
                          capture_output=True, text=True).stdout
    result = [os.environ["CUDA_VISIBLE_DEVICES"], seen, ctx.device,
              ctx.host_device.id, ctx.host_device.uuid]
"""


def test_a_gpu_worker_sees_only_its_gpu_by_uuid(worker, tmp_path):
    gpu = DeviceRef("cuda:1", kind="cuda", index=1, uuid="GPU-b")
    worker.send(("attempt", request(PIN_BODY, tmp_path, device=gpu)))
    kind, text, _ = outcome(worker)
    assert (kind, json.loads(text)) == ("result", ["GPU-b", "GPU-b", "cuda:0", "cuda:1", "GPU-b"])


def test_a_cpu_worker_sees_no_gpu(worker, tmp_path):
    worker.send(("attempt", request(PIN_BODY, tmp_path)))
    kind, text, _ = outcome(worker)
    assert (kind, json.loads(text)) == ("result", ["", "", "cpu", "cpu", None])


def test_placed_on_a_fake_gpu_the_step_runs_pinned_to_its_uuid(runner):
    from maml.runtime.devices.discovery import discover
    from maml.runtime.devices.nvml_fake import FakeGPU, FakeNVML

    inventory = discover(provider=FakeNVML([FakeGPU(uuid="GPU-a"), FakeGPU(uuid="GPU-b")]))
    doc = runner.write_doc({"pipeline": [{"id": "g", "block": "g", "device": "cuda:1"}]},
                           {"g": PIN_BODY})
    result = runner.run(doc, inventory=inventory)
    assert result.steps["g"].output == ["GPU-b", "GPU-b", "cuda:0", "cuda:1", "GPU-b"]


# -- liveness and messages --------------------------------------------------------------------

# One C call (catastrophic regex backtracking) that holds the GIL for about `seconds` whatever
# the machine's speed (a fixed length held it 0.45 s on CI and 2 s on the dev box): each extra
# "a" doubles the time, calibrated on a short one in the worker itself (the fastest of three
# runs, so that a preempted calibration does not shorten the hold).
HOLD_GIL = """
import re, time
def backtrack(n):
    started = time.perf_counter()
    re.match(r"(a+)+$", "a" * n + "b")
    return time.perf_counter() - started
def hold_gil(seconds):
    n, took = 18, min(backtrack(18) for _ in range(3))   # the least disturbed of three
    while took * 2 ** (n - 18) < seconds:
        n += 1
    return backtrack(n)
"""


def test_cpu_time_advances_while_the_gil_is_held_and_heartbeats_stop(worker, tmp_path):
    body = HOLD_GIL + "time.sleep(0.3)\nresult = hold_gil(2.0) > 0\n"
    worker.send(("attempt", request(body, tmp_path, heartbeat_interval=0.05)))
    timeline: list[tuple[str, float | None]] = []     # (message or "cpu", cpu seconds)
    while not timeline or timeline[-1][0] != "result":
        if worker.conn.poll(0.05):
            timeline.append((worker.conn.recv()[0], worker.cpu_seconds()))
        else:
            timeline.append(("cpu", worker.cpu_seconds()))
        assert len(timeline) < 2000, "the attempt never ended"
    # the longest run of samples with no message from the worker: the GIL was held
    silent, longest = [], []
    for what, cpu in timeline:
        silent = silent + [cpu] if what == "cpu" else []
        longest = max(longest, silent, key=len)
    assert len(longest) >= 10                    # >= 0.5 s without a heartbeat...
    assert longest[-1] - longest[0] >= 0.3       # ...while the worker's CPU clock ran
    assert timeline[-1][0] == "result"


def test_an_attempt_costs_two_messages_when_it_is_quick(worker, tmp_path):
    worker.send(("attempt", request("result = 1", tmp_path, heartbeat_interval=5.0)))
    assert outcome(worker)[2][-2:] == ["started", "result"]
    worker.send(("attempt", request("result = 2", tmp_path, attempt=2,
                                     heartbeat_interval=5.0)))
    assert outcome(worker)[2] == ["started", "result"]


def test_a_step_holding_the_gil_past_its_heartbeat_timeout_is_alive_not_hung(runner, events):
    body = HOLD_GIL + "result = hold_gil(5.0)\n"
    doc = runner.write_doc({"policy": {"retries": 0, "heartbeat_timeout": "2s"},
                            "pipeline": [{"id": "re", "block": "re"}]}, {"re": body})
    result = runner.run(doc, observers=[events])
    assert events.of("on_attempt_failed") == []
    assert result.status == "succeeded" and result.steps["re"].output > 2.0


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_maml_killed_mid_run_leaves_no_grandchild(tmp_path, sig):
    import signal
    import subprocess

    pidfile = tmp_path / "slow"
    (tmp_path / "doc.maml.md").write_text(
        "---\nmaml_version: '1.0'\npermissions: {execute: true}\n---\n# d\n\n"
        "## Code_Blocks\n\n```python {id=slow}\nimport subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\ntime.sleep(120)\n```\n")
    run = subprocess.Popen([sys.executable, "-m", "maml", "run", "doc.maml.md", "--no-graph",
                            "--quiet"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        pid, = _pids(tmp_path, ["slow"], timeout=60)
        run.send_signal(getattr(signal, sig))
        assert run.wait(timeout=60) != 0
    finally:
        run.kill()
    assert _gone([pid]) == []


def test_clear_cache_returns_what_the_kind_cached(worker, tmp_path):
    keep = "ctx.cache['big'] = b'x' * (300 * 2**20)\nresult = 1"
    worker.send(("attempt", request(keep, tmp_path)))
    assert outcome(worker)[:2] == ("result", "1")
    rss = "import psutil\nresult = psutil.Process().memory_info().rss"
    worker.send(("attempt", request(rss, tmp_path, attempt=2)))
    held = int(outcome(worker)[1])
    worker.send(("release",))
    worker.send(("attempt", request(rss, tmp_path, attempt=3)))
    kind, after, seen = outcome(worker)
    assert "released" in seen and held - int(after) > 250 * MiB
