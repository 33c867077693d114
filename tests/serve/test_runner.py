"""The run queue and the live view, without a server: FIFO order, concurrency, cancel."""

from __future__ import annotations

import threading

from maml.serve.hub import EventHub
from maml.serve.records import RunRequest
from maml.serve.lanes import Lanes
from maml.serve.runner import CancelToken, Runner


def request(n: int) -> RunRequest:
    return RunRequest(run_id=f"r{n}", seq=n, document="", path="x.maml.md")


def test_runs_start_in_submission_order_with_bounded_concurrency():
    started: list[str] = []
    release = threading.Event()
    both_running = threading.Barrier(3)
    lock = threading.Lock()

    def execute(req: RunRequest, token: CancelToken) -> None:
        with lock:
            started.append(req.run_id)
            running = len(started)
        if running <= 2:
            both_running.wait(5)
            release.wait(5)

    runner = Runner(execute, concurrency=2)
    for n in range(5):
        runner.put(request(n))
    runner.start()
    both_running.wait(5)                 # two run, three wait
    assert started == ["r0", "r1"] and runner.queued() == ["r2", "r3", "r4"]
    assert runner.cancel("r3") == "queued" and runner.queued() == ["r2", "r4"]
    release.set()
    runner.stop(timeout=5)
    assert started[:2] == ["r0", "r1"] and "r3" not in started


def test_runs_that_may_use_a_gpu_go_to_lane_0_and_the_others_to_any_lane():
    lanes: dict[str, int] = {}
    release = {n: threading.Event() for n in ("g1", "g2", "c1", "c2")}
    running = threading.Condition()

    def execute(req: RunRequest, token: CancelToken) -> None:
        with running:
            lanes[req.run_id] = token.lane
            running.notify_all()
        release[req.run_id].wait(30)

    def named(n: str) -> RunRequest:
        return RunRequest(run_id=n, seq=0, document="", path="x.maml.md")

    runner = Runner(execute, concurrency=2, needs_gpu=lambda req: req.run_id.startswith("g"))
    for run_id in ("g1", "g2", "c1", "c2"):
        runner.put(named(run_id))
    runner.start()
    with running:                       # g1 on the GPU lane; c1 passes g2 on the other
        assert running.wait_for(lambda: set(lanes) == {"g1", "c1"}, 30), lanes
    assert lanes == {"g1": 0, "c1": 1} and runner.queued() == ["g2", "c2"]
    release["c1"].set()
    with running:                       # the CPU lane takes c2, never g2
        assert running.wait_for(lambda: "c2" in lanes, 30), lanes
    assert lanes["c2"] == 1 and runner.queued() == ["g2"]
    release["g1"].set()
    with running:
        assert running.wait_for(lambda: "g2" in lanes, 30), lanes
    assert lanes["g2"] == 0
    for event in release.values():
        event.set()
    runner.stop(timeout=5)


def test_a_cancel_sets_the_stop_event_the_runtime_watches_and_the_first_reason_stands():
    token = CancelToken("r1")
    assert not token.stop.is_set() and token.reason is None
    token.cancel("shutdown")
    token.cancel("cancelled")
    assert token.stop.is_set() and token.reason == "shutdown"


def test_the_live_view_folds_failure_recovery_and_success():
    hub = EventHub()
    hub.publish("r1", "run_queued", steps=[{"id": "a", "kind": "python", "needs": []}])
    hub.publish("r1", "attempt_started", step="a", attempt=1, device="cuda:0", params={"b": 8})
    hub.publish("r1", "attempt_failed", step="a", attempt=1, error_class="oom",
                exception_type="torch.OutOfMemoryError", message="CUDA out of memory",
                device="cuda:0", injected=False, duration=0.1)
    view = hub.views["r1"]
    assert view.steps["a"]["status"] == "failed" and view.errors == 1
    hub.publish("r1", "recovery_applied", step="a", attempt=1, error_class="oom",
                action="halve_batch", changes={"b": [8, 4]}, next_attempt=2, delay=0.0)
    assert view.steps["a"]["status"] == "recovered"
    hub.publish("r1", "attempt_started", step="a", attempt=2, device="cuda:0", params={"b": 4})
    hub.publish("r1", "attempt_succeeded", step="a", attempt=2, device="cuda:0", duration=0.1)
    hub.publish("r1", "step_finished", step="a", status="succeeded", attempts=2)
    step = view.steps["a"]
    assert step["status"] == "succeeded" and step["error"] is None and step["params"] == {"b": 4}
    assert [(h["attempt"], h["status"]) for h in step["history"]] == [(1, "failed"),
                                                                     (2, "succeeded")]
    assert step["history"][0]["recovery"] == {"action": "halve_batch", "changes": {"b": [8, 4]}}
    logged = []
    replayed = EventHub(persist=lambda run_id, event: logged.append(event))
    replayed.publish("r1", "run_queued", steps=[{"id": "a", "kind": "python", "needs": []}])
    replayed.publish("r1", "step_progress", step="a", done=1, total=2, unit="it")
    assert [e["type"] for e in logged] == ["run_queued"]        # progress is live only
    assert EventHub().restore("r1", logged).steps == replayed.views["r1"].steps


def test_each_runner_thread_keeps_its_own_backend_until_dropped():
    made = []

    class Backend:
        closed = False

        def close(self) -> None:
            self.closed = True

    lanes = Lanes(lambda gpu: made.append(Backend()) or made[-1])
    first = lanes.current()
    assert lanes.current() is first                  # warm across runs of one thread
    other = []
    thread = threading.Thread(target=lambda: other.append(lanes.current()))
    thread.start()
    thread.join()
    assert other[0] is not first                     # another thread, another backend
    lanes.drop()
    assert first.closed and lanes.current() is not first
    lanes.close()
    assert all(backend.closed for backend in made) and len(made) == 3
