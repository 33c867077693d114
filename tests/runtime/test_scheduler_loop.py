"""The scheduler's loop against a scripted in-memory backend and a fake clock.

No process is started: the backend plays out each attempt as its script says, so these
tests pin down readiness, slots, the watchdog, backoff, stopping and interrupts exactly.
The same scheduler runs on real workers in test_scheduler.py.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from maml.runtime.backend import Alive, Failed, Handle, Lost, Progress, Started, Succeeded
from maml.runtime.checkpoint import RunStore
from maml.runtime.classify import synthetic_error
from maml.runtime.clock import FakeClock
from maml.runtime.devices.book import DeviceBook
from maml.runtime.events import Broadcaster
from maml.runtime.plan import build_plan
from maml.runtime.scheduler import Scheduler


class ScriptedBackend:
    """Plays each attempt as `script[step][attempt - 1]` says: "ok", an error class, "lost",
    or "silent" (no sign of life: each poll moves the fake clock on by its timeout)."""

    def __init__(self, clock: FakeClock, script: dict[str, list[str]], slots: int = 2) -> None:
        self.clock, self.script, self.slots = clock, script, slots
        self.in_flight: dict[int, tuple[Handle, Any]] = {}
        self.submitted: list[tuple[str, int, dict[str, Any], float]] = []
        self.calls: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.on_poll: Any = None
        self.totals: dict[str, int] = {}      # step -> item count its kind reports
        self.started: set[int] = set()
        self._ids = 0

    def capacity(self, device: str) -> int:
        return self.slots

    def submit(self, request: Any) -> Handle:
        if len(self.in_flight) >= self.slots:
            raise AssertionError("submitted past capacity")
        self._ids += 1
        handle = Handle(self._ids, request.step.id, request.attempt, f"w{self._ids}")
        self.in_flight[handle.id] = (handle, request)
        self.submitted.append((request.step.id, request.attempt, dict(request.step.params),
                               self.clock.now()))
        return handle

    def poll(self, timeout: float) -> list[Any]:
        self.calls["poll"] += 1
        if self.on_poll is not None:
            self.on_poll(self)
        events: list[Any] = []
        for hid, (handle, request) in list(self.in_flight.items()):
            plays = self.script.get(handle.step_id, [])
            outcome = plays[handle.attempt - 1] if handle.attempt <= len(plays) else "ok"
            if outcome == "silent":
                if hid not in self.started:
                    self.started.add(hid)
                    events.append(Started(handle, pid=1000 + hid))
                continue
            del self.in_flight[hid]
            events += [Started(handle, pid=1000 + hid), Alive(handle)]
            if handle.step_id in self.totals:
                events.append(Progress(handle, 0, self.totals[handle.step_id], "items"))
            if outcome == "ok":
                events.append(Succeeded(handle, {"step": handle.step_id,
                                                 "params": request.step.params}, 0.0))
            elif outcome == "lost":
                events.append(Lost(handle, "worker died", {"signal": "SIGKILL", "exitcode": -9}))
            else:
                events.append(Failed(handle, synthetic_error(outcome, f"{outcome} here"), 0.0))
        if not events:
            self.clock.advance(timeout)
        return events

    def cancel(self, handle: Handle, reason: str) -> None:
        self.in_flight.pop(handle.id, None)
        self.cancelled.append(handle.step_id)

    def clear_cache(self, handle: Handle) -> None:
        self.calls["clear_cache"] += 1

    def replace_worker(self, handle: Handle) -> None:
        self.calls["replace_worker"] += 1

    def close(self) -> None:
        self.calls["close"] += 1


class Events:
    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.seen = clock, []

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)
        return lambda **p: self.seen.append((hook, p, self.clock.now()))

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [p for h, p, _ in self.seen if h == hook]


def _scheduler(runner, front: dict[str, Any], script: dict[str, list[str]], *, slots: int = 2,
               blocks: dict[str, str] | None = None):
    doc = runner.write_doc(front, blocks or {"s": "result = 1"})
    clock = FakeClock()
    backend = ScriptedBackend(clock, script, slots)
    events = Events(clock)
    store = RunStore.create(runner.tmp_path / ".maml", doc.path, "digest")
    scheduler = Scheduler(build_plan(doc), store=store, broadcaster=Broadcaster([events]),
                          devices=DeviceBook(), backend=backend, clock=clock)
    return scheduler, backend, events, clock


def _chain(n: int, **extra: Any) -> dict[str, Any]:
    return {"pipeline": [{"id": f"s{i}", "block": "s", **({"needs": [f"s{i - 1}"]} if i else {}),
                          **extra} for i in range(n)]}


def test_backoff_waits_without_blocking_the_loop(runner):
    front = {"policy": {"backoff": {"initial": "10s", "jitter": 0}},
             "pipeline": [{"id": "a", "block": "s"}, {"id": "b", "block": "s"}]}
    scheduler, backend, events, clock = _scheduler(runner, front, {"a": ["transient"]},
                                                   slots=1)
    result = scheduler.run()
    assert result.status == "succeeded"
    order = [(sid, attempt) for sid, attempt, _, _ in backend.submitted]
    assert order == [("a", 1), ("b", 1), ("a", 2)]          # b ran during a's backoff
    failed_at = next(t for h, _, t in events.seen if h == "on_attempt_failed")
    assert backend.submitted[2][3] == failed_at + 10.0       # a's retry: exactly at not_before
    assert clock.idle == [10.0] and result.duration == 10.0  # the only wait was the backoff


def test_a_silent_attempt_is_a_hang_and_its_retry_succeeds(runner):
    front = {"policy": {"heartbeat_timeout": "5s", "timeout": "1h", "backoff": {"initial": 0}},
             "pipeline": [{"id": "s", "block": "s"}]}
    scheduler, backend, events, _ = _scheduler(runner, front, {"s": ["silent"]})
    result = scheduler.run()
    error = events.of("on_attempt_failed")[0]["error"]
    assert error.error_class == "hang" and error.context["pid"] == 1001
    assert backend.cancelled == ["s"]                        # killed through the backend
    assert result.steps["s"].status == "succeeded" and result.steps["s"].attempts == 2


def test_a_lost_worker_is_worker_lost_with_the_backends_facts(runner):
    scheduler, _, events, _ = _scheduler(runner, {"pipeline": [{"id": "s", "block": "s"}]},
                                         {"s": ["lost"]})
    assert scheduler.run().status == "succeeded"
    error = events.of("on_attempt_failed")[0]["error"]
    assert error.error_class == "worker_lost" and error.context["signal"] == "SIGKILL"


def test_cuda_error_replaces_the_worker_and_oom_clear_cache_clears_it(runner):
    front = {"policy": {"on": {"oom": ["clear_cache"]}, "backoff": {"initial": 0}},
             "pipeline": [{"id": "s", "block": "s"}, {"id": "t", "block": "s"}]}
    scheduler, backend, _, _ = _scheduler(runner, front, {"s": ["cuda_error"], "t": ["oom"]})
    assert scheduler.run().status == "succeeded"
    assert (backend.calls["replace_worker"], backend.calls["clear_cache"]) == (1, 1)


@pytest.mark.parametrize("slots", [1, 3])
def test_a_fan_out_never_asks_for_more_than_its_slots(runner, slots):
    front = {"pipeline": [{"id": "root", "block": "s"}]
             + [{"id": f"f{i}", "block": "s", "needs": ["root"]} for i in range(40)]
             + [{"id": "join", "block": "s", "needs": [f"f{i}" for i in range(40)]}]}
    scheduler, backend, _, _ = _scheduler(runner, front, {}, slots=slots)
    result = scheduler.run()
    assert result.status == "succeeded"
    order = [sid for sid, *_ in backend.submitted]
    assert order[0] == "root" and order[-1] == "join" and len(order) == 42
    # each poll can finish at most `slots` attempts, so a wide fan-out needs ~40/slots polls
    assert backend.calls["poll"] <= 2 + -(-40 // slots)


def test_a_long_chain_runs_in_order_with_one_poll_per_step(runner):
    scheduler, backend, _, _ = _scheduler(runner, _chain(100), {})
    assert scheduler.run().status == "succeeded"
    assert [sid for sid, *_ in backend.submitted] == [f"s{i}" for i in range(100)]
    assert backend.calls["poll"] == 100


def test_a_failed_step_skips_its_dependents_and_cancels_what_was_queued(runner):
    front = {"policy": {"retries": 0},
             "pipeline": [{"id": "bad", "block": "s"}, {"id": "after", "block": "s",
                                                       "needs": ["bad"]},
                          {"id": "x", "block": "s"}, {"id": "y", "block": "s"}]}
    scheduler, backend, _, _ = _scheduler(runner, front, {"bad": ["user_error"]}, slots=1)
    result = scheduler.run()
    statuses = {sid: s.status for sid, s in result.steps.items()}
    assert statuses == {"bad": "failed", "after": "skipped", "x": "cancelled", "y": "cancelled"}
    assert result.status == "failed" and [s for s, *_ in backend.submitted] == ["bad"]
    assert result.steps["bad"].error.error_class == "user_error"
    assert "step 'bad' failed" in result.steps["x"].reason


def test_on_exhausted_continue_gives_none_for_the_failed_input(runner):
    front = {"pipeline": [{"id": "a", "block": "s", "policy": {"retries": 0,
                                                              "on_exhausted": "continue"}},
                          {"id": "b", "block": "s", "needs": ["a"]}]}
    scheduler, backend, _, _ = _scheduler(runner, front, {"a": ["user_error"]})
    result = scheduler.run()
    assert result.status == "partial" and result.steps["b"].status == "succeeded"
    assert scheduler.steps["b"].inputs == {"a": None}


def test_on_exhausted_skip_ends_partial_even_when_nothing_else_ran(runner):
    front = {"pipeline": [{"id": "a", "block": "s", "policy": {"retries": 0,
                                                              "on_exhausted": "skip"}}]}
    scheduler, _, _, _ = _scheduler(runner, front, {"a": ["user_error"]})
    assert scheduler.run().status == "partial"


def test_an_interrupt_cancels_the_attempts_in_flight_and_the_rest(runner):
    front = {"pipeline": [{"id": "long", "block": "s"}, {"id": "next", "block": "s",
                                                        "needs": ["long"]}]}
    scheduler, backend, events, _ = _scheduler(runner, front, {"long": ["silent"]})
    stop = threading.Event()
    scheduler.stop = stop
    backend.on_poll = lambda b: stop.set()          # as the CLI's SIGTERM handler does
    result = scheduler.run()
    assert result.status == "interrupted"
    assert result.interrupted_by == "the run was interrupted"
    assert backend.cancelled == ["long"]
    assert {s.status for s in result.steps.values()} == {"cancelled"}
    assert result.steps["long"].attempts == 1 and result.steps["next"].attempts == 0
    assert events.of("on_run_finished")[0]["status"] == "interrupted"


def test_steps_are_announced_finished_only_after_the_turns_flush(runner):
    scheduler, _, events, _ = _scheduler(runner, _chain(3), {})
    store = scheduler.store
    real_take, real_flush = store.take_durable, store.flush
    durable: list[str] = []                 # what the store has reported on disk, in order
    durable_at_announce: dict[str, list[str]] = {}

    def record(ids: list[str]) -> list[str]:
        durable.extend(ids)
        return ids

    store.take_durable = lambda: record(real_take())
    store.flush = lambda: record(real_flush())
    scheduler.events.observers.append(type("Spy", (), {
        "on_step_finished": lambda self, *, step, **_: durable_at_announce.setdefault(
            step.id, list(durable))})())
    scheduler.run()
    finished = [p["step"].id for p in events.of("on_step_finished")]
    assert finished == ["s0", "s1", "s2"]
    # no step is announced finished before the store said its commit is on disk
    assert all(sid in durable_at_announce[sid] for sid in finished)


def test_halve_batch_uses_the_item_count_the_kind_reported(runner):
    front = {"policy": {"backoff": {"initial": 0}},
             "pipeline": [{"id": "s", "block": "s", "params": {"batch_size": 100_000}}]}
    scheduler, backend, _, _ = _scheduler(runner, front, {"s": ["oom", "oom"]})
    backend.totals["s"] = 100
    assert scheduler.run().status == "succeeded"
    assert [p["batch_size"] for _, _, p, _ in backend.submitted] == [100_000, 64, 32]
