"""The progress display: plain lines off a terminal, nothing when quiet, rich when live."""

from __future__ import annotations

import io

from maml.runtime.events import DeviceRef, ErrorInfo, StepInfo
from maml.runtime.progress import ProgressDisplay

STEP = StepInfo(id="train", kind="python")


def _play(display: ProgressDisplay) -> None:
    display.on_run_started(run_id="r1", document="d.maml.md", steps=[STEP], started_at=0.0)
    display.on_attempt_started(run_id="r1", step=STEP, attempt=1, device=DeviceRef("cpu"),
                               worker_id="w1", params={})
    error = ErrorInfo(error_class="oom", exception_type="MemoryError", message="", injected=True)
    display.on_recovery_applied(run_id="r1", step=STEP, attempt=1, error=error,
                                action="halve_batch", changes={"batch_size": [64, 32]},
                                next_attempt=2, delay=0.0)
    display.on_step_finished(run_id="r1", step=STEP, status="succeeded", attempts=2,
                             output_digest="x")
    display.on_step_skipped(run_id="r1", step=StepInfo(id="post", kind="python"),
                            reason="its input 'x' failed")
    display.on_run_finished(run_id="r1", status="partial", errors=1, recoveries=1, duration=1.5)


def test_off_a_terminal_one_line_per_step_end_and_recovery():
    stream = io.StringIO()
    _play(ProgressDisplay(stream))
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("maml: train: attempt 1 failed (oom, injected); halve_batch "
                        "(batch_size 64->32)")
    assert lines[1].startswith("maml: train: succeeded after 2 attempt(s)")
    assert lines[2] == "maml: post: skipped (its input 'x' failed)"
    assert len(lines) == 3            # the run's verdict is `maml run`'s last line, not ours


def test_a_step_cancelled_before_it_started_has_no_attempts_and_no_time():
    now = [100.0]
    stream = io.StringIO()
    display = ProgressDisplay(stream, clock=lambda: now[0])
    display.on_attempt_started(run_id="r1", step=STEP, attempt=1, device=DeviceRef("cpu"))
    now[0] += 2.5
    display.on_step_finished(run_id="r1", step=STEP, status="cancelled", attempts=1,
                             output_digest=None)
    display.on_step_finished(run_id="r1", step=StepInfo(id="later", kind="python"),
                             status="cancelled", attempts=0, output_digest=None)
    display.on_step_finished(run_id="r1", step=StepInfo(id="kept", kind="python"),
                             status="cached", attempts=0, output_digest="x")
    assert stream.getvalue().splitlines() == [
        "maml: train: cancelled after 1 attempt(s) in 2.50 s",
        "maml: later: cancelled before it started",
        "maml: kept: cached"]


def test_quiet_prints_nothing():
    stream = io.StringIO()
    _play(ProgressDisplay(stream, quiet=True))
    assert stream.getvalue() == ""


def test_live_display_renders_the_steps():
    stream = io.StringIO()
    _play(ProgressDisplay(stream, live=True))
    text = stream.getvalue()
    assert "train: succeeded after 2 attempt(s)" in text and "post: skipped" in text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_display_shows_the_last_log_line_and_a_progress_bar():
    stream = Terminal()
    display = ProgressDisplay(stream, live=True)
    display.on_run_started(run_id="r1", document="d.maml.md", steps=[STEP], started_at=0.0)
    display.on_attempt_started(run_id="r1", step=STEP, attempt=1, device=DeviceRef("cpu"))
    display.on_step_log(run_id="r1", step=STEP, attempt=1, message="loading [shard 3]\nepoch 2")
    display.on_step_progress(run_id="r1", step=STEP, done=30, total=120, unit="batches")
    display._progress.refresh()
    text = stream.getvalue()
    assert "epoch 2" in text and "30/120" in text and "batches" in text
    assert "loading" not in text            # only the last line
    display.on_run_finished(run_id="r1", status="succeeded", errors=0, recoveries=0,
                            duration=1.0)
