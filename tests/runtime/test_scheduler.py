"""The executor with real worker processes: recovery, watchdog, on_exhausted, budget, events."""

from __future__ import annotations

import json

from maml.runtime.clock import SystemClock


RETURN_PARAMS = """
def run(inputs, params, ctx):
    return {"params": dict(params), "attempt": ctx.attempt}
"""

ALWAYS_FAILS = """
def run(inputs, params, ctx):
    raise RuntimeError("broken on purpose")
"""


def test_oom_chain_halves_batch_until_the_third_attempt_succeeds(runner, events):
    doc = runner.write_doc({"policy": {"on": {"oom": ["halve_batch"]}, "retries": 3},
                            "pipeline": [{"id": "s", "block": "s",
                                          "params": {"batch_size": 64}}]},
                           {"s": RETURN_PARAMS})
    result = runner.run(doc, inject=["s:oom@1,2"], observers=[events])
    step = result.to_json()["steps"]["s"]
    assert result.status == "succeeded"
    assert step["attempts"] == 3
    assert step["params"] == {"batch_size": 16}
    assert step["output"] == {"params": {"batch_size": 16}, "attempt": 3}
    failures = [p["error"] for p in events.of("on_attempt_failed")]
    assert [e.error_class for e in failures] == ["oom", "oom"]
    assert all(e.injected for e in failures)
    assert failures[0].exception_type == "MemoryError"      # the step never imported torch
    assert [p["changes"] for p in events.of("on_recovery_applied")] == [
        {"batch_size": [64, 32]}, {"batch_size": [32, 16]}]
    assert len(runner.clock.idle) == 2 and runner.clock.idle[1] > runner.clock.idle[0] > 0
    assert (result.errors, result.recoveries) == (2, 2)
    json.dumps(result.to_json())


def test_injected_oom_retries_in_the_live_worker_after_only_its_backoff(runner, events):
    doc = runner.write_doc({"policy": {"on": {"oom": ["retry"]},
                                       "backoff": {"initial": "0.2s", "jitter": 0}},
                            "pipeline": [{"id": "s", "block": "s"}]},
                           {"s": "def run(i, p, ctx):\n    import os\n    return os.getpid()"})
    result = runner.run(doc, inject=["s:oom@1"], observers=[events])
    failed = events.of("on_attempt_failed")[0]
    assert result.steps["s"].attempts == 2
    assert failed["error"].context["pid"] == result.steps["s"].output   # same process
    # the one wait between the failure and the retry is what is left of the policy's 0.2 s
    # backoff, taken on the injected clock: the scheduler adds none of its own
    (wait,) = runner.clock.idle
    assert 0 < wait <= 0.2


def test_worker_lost_is_recovered_on_a_new_worker(runner, events):
    doc = runner.write_doc({"pipeline": [{"id": "s", "block": "s"}]},
                           {"s": "import os\nresult = {'pid': os.getpid()}"})
    result = runner.run(doc, inject=["s:worker_lost@1"], observers=[events])
    error = events.of("on_attempt_failed")[0]["error"]
    assert result.status == "succeeded" and result.steps["s"].attempts == 2
    assert error.error_class == "worker_lost" and error.injected
    assert error.context["signal"] == "SIGKILL" and error.context["exitcode"] == -9
    assert error.context["pid"] != result.steps["s"].output["pid"]
    # that the warm spare, already started, takes the retry is test_workers.py's
    # test_the_warm_spare_replaces_a_lost_worker_without_a_cold_start (no timing here)


def test_timeout_kills_the_worker_and_the_next_attempt_succeeds(runner, events):
    doc = runner.write_doc({"policy": {"timeout": "1s", "backoff": {"initial": 0}},
                            "pipeline": [{"id": "s", "block": "s"}]},
                           {"s": "import os\nresult = os.getpid()"})
    result = runner.run(doc, inject=["s:timeout@1"], observers=[events], clock=SystemClock())
    failed = events.of("on_attempt_failed")[0]
    assert failed["error"].error_class == "timeout" and failed["error"].injected
    # not before the 1 s timeout; the class says the watchdog, not the end of the injected
    # sleep (timeout + 5 s), ended it (no upper wall-clock bound: a loaded box is slow)
    assert failed["duration"] >= 1.0
    assert result.status == "succeeded" and result.steps["s"].attempts == 2
    assert failed["error"].context["pid"] != result.steps["s"].output
    starts = events.of("on_attempt_started")
    assert starts[0]["worker_id"] != starts[1]["worker_id"]


def test_hang_is_detected_within_the_heartbeat_window(runner, events):
    doc = runner.write_doc({"policy": {"timeout": "60s", "heartbeat_timeout": "0.5s",
                                       "backoff": {"initial": 0}},
                            "pipeline": [{"id": "s", "block": "s"}]},
                           {"s": "result = 'ok'"})
    result = runner.run(doc, inject=["s:hang@1"], observers=[events], clock=SystemClock())
    failed = events.of("on_attempt_failed")[0]
    assert failed["error"].error_class == "hang" and failed["error"].injected
    # the heartbeat rule caught it, not the 60 s timeout (no tighter wall-clock bound: the
    # fake-clock tests in test_scheduler_loop.py pin the watchdog's arithmetic)
    assert 0.5 <= failed["duration"] < 60
    assert result.steps["s"].status == "succeeded" and result.steps["s"].attempts == 2


def test_a_busy_step_that_calls_heartbeat_is_not_taken_for_hung(runner):
    body = """
import time
def run(inputs, params, ctx):
    end = time.time() + 1.0
    while time.time() < end:
        ctx.heartbeat()
        time.sleep(0.05)
    return "done"
"""
    doc = runner.write_doc({"policy": {"heartbeat_timeout": "0.4s"},
                            "pipeline": [{"id": "s", "block": "s"}]}, {"s": body})
    result = runner.run(doc, clock=SystemClock())
    assert result.steps["s"].attempts == 1 and result.steps["s"].output == "done"


def test_invalid_input_is_never_retried(runner, events):
    body = "from maml.errors import InvalidInput\nraise InvalidInput('field x is missing')"
    doc = runner.write_doc({"policy": {"retries": 5}, "pipeline": [{"id": "s", "block": "s"}]},
                           {"s": body})
    result = runner.run(doc, observers=[events])
    assert result.status == "failed"
    assert result.steps["s"].attempts == 1 and result.errors == 1 and result.recoveries == 0
    assert events.of("on_attempt_failed")[0]["error"].error_class == "invalid_input"
    assert "field x is missing" in result.problems[0] and "step 's'" in result.problems[0]


def test_on_exhausted_skip_skips_downstream_and_the_run_is_partial(runner):
    doc = runner.write_doc({"policy": {"on": {"user_error": ["retry"]}}, "pipeline": [
        {"id": "a", "block": "a", "policy": {"retries": 1, "on_exhausted": "skip"}},
        {"id": "b", "block": "b", "needs": ["a"]},
        {"id": "c", "block": "c", "needs": ["b"]},
        {"id": "d", "block": "d"}]},
        {"a": ALWAYS_FAILS, "b": RETURN_PARAMS, "c": RETURN_PARAMS, "d": "result = 4"})
    result = runner.run(doc)
    assert result.status == "partial"
    assert {k: v.status for k, v in result.steps.items()} == {
        "a": "failed", "b": "skipped", "c": "skipped", "d": "succeeded"}
    assert result.steps["a"].attempts == 2 and result.steps["b"].attempts == 0


def test_on_exhausted_continue_runs_downstream_without_that_input(runner):
    doc = runner.write_doc({"pipeline": [
        {"id": "a", "block": "a", "policy": {"retries": 0, "on_exhausted": "continue"}},
        {"id": "ok", "block": "ok"},
        {"id": "b", "block": "b", "needs": ["a", "ok"]}]},
        {"a": ALWAYS_FAILS, "ok": "result = 1",
         "b": "def run(inputs, params, ctx):\n    return sorted(inputs)"})
    result = runner.run(doc)
    assert result.status == "partial"
    assert result.steps["b"].output == ["a", "ok"]


def test_on_exhausted_fail_fails_the_run_and_skips_the_rest(runner):
    doc = runner.write_doc({"policy": {"retries": 1},
                            "pipeline": [{"id": "a", "block": "a"},
                                         {"id": "b", "block": "b", "needs": ["a"]}]},
                           {"a": ALWAYS_FAILS, "b": RETURN_PARAMS})
    result = runner.run(doc)
    assert result.status == "failed"
    assert result.steps["a"].status == "failed" and result.steps["b"].status == "skipped"


def test_max_errors_stops_the_run(runner):
    doc = runner.write_doc({"policy": {"retries": 10, "max_errors": 2,
                                       "on": {"user_error": ["retry"]}},
                            "pipeline": [{"id": "a", "block": "a"}]}, {"a": ALWAYS_FAILS})
    result = runner.run(doc)
    assert result.status == "failed"
    assert result.steps["a"].attempts == 3 and result.errors == 3
    assert any("max_errors 2" in p for p in result.problems)


def test_non_serialisable_output_is_a_user_error(runner, events):
    doc = runner.write_doc({"policy": {"retries": 0}, "pipeline": [{"id": "s", "block": "s"}]},
                           {"s": "result = object()"})
    result = runner.run(doc, observers=[events])
    error = events.of("on_attempt_failed")[0]["error"]
    assert error.error_class == "user_error"
    assert "not JSON-serialisable" in error.message and result.status == "failed"


def test_clear_cache_empties_the_workers_cache_and_retry_keeps_it(runner):
    body = """
def run(inputs, params, ctx):
    seen = "model" in ctx.cache
    ctx.cache["model"] = "loaded"
    if ctx.attempt == 1:
        raise MemoryError("out of host memory")
    return seen
"""
    outputs = {}
    for chain in ("clear_cache", "retry"):
        doc = runner.write_doc({"policy": {"on": {"oom": [chain]}},
                                "pipeline": [{"id": "s", "block": "s"}]}, {"s": body})
        outputs[chain] = runner.run(doc, workers=1).steps["s"].output
    assert outputs == {"clear_cache": False, "retry": True}


def test_two_independent_one_second_steps_run_side_by_side(runner):
    body = """
import time
def run(inputs, params, ctx):
    start = time.time()
    time.sleep(1.0)
    return [start, time.time()]
"""
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}, {"id": "b", "block": "b"}]},
                           {"a": body, "b": body})
    result = runner.run(doc, workers=2)
    (a0, a1), (b0, b1) = result.steps["a"].output, result.steps["b"].output
    # measured inside the workers, so worker start-up on a loaded machine does not count
    assert max(a1, b1) - min(a0, b0) < 1.6
    assert min(a1, b1) - max(a0, b0) > 0.4          # the two sleeps overlapped


def test_events_come_in_the_documented_order(runner, events):
    doc = runner.write_doc({"pipeline": [{"id": "s", "block": "s"}]}, {"s": "result = 1"})
    runner.run(doc, inject=["s:transient@1"], observers=[events])
    hooks = [h for h in events.hooks() if h not in ("on_step_log", "on_step_progress")]
    assert hooks == ["on_run_started", "on_step_started", "on_attempt_started",
                     "on_attempt_failed", "on_recovery_applied", "on_attempt_started",
                     "on_attempt_succeeded", "on_step_finished", "on_run_finished"]
    assert events.of("on_attempt_failed")[0]["error"].error_class == "transient"
    finished = events.of("on_step_finished")[0]
    assert finished["status"] == "succeeded" and len(finished["output_digest"]) == 64


def test_checkpoint_and_restore_carry_state_across_attempts(runner, events):
    body = """
def run(inputs, params, ctx):
    state = ctx.restore() or {"done": 0}
    if ctx.attempt == 1:
        ctx.checkpoint({"done": 5})
        raise ConnectionResetError("network blip")
    return state
"""
    doc = runner.write_doc({"pipeline": [{"id": "s", "block": "s"}]}, {"s": body})
    result = runner.run(doc, observers=[events])
    assert result.steps["s"].output == {"done": 5}
    assert events.of("on_checkpoint")[0]["size"] == len('{"done":5}')
