"""Crash consistency: SIGKILL `maml run` at random moments, resume, and check the record.

Each step appends its id to a side-effect log when it runs, so the test can count
executions: a step committed before the kill must never run again; a step in flight (or
not yet started) runs again after resume; the resumed result equals an uninterrupted run's;
every file under the run directory is readable whenever the kill lands (the commit log may
end in a torn line, which is ignored), and every artifact a commit references is on disk
whole. Each step returns an array too, so kills land inside artifact writes and fsyncs.
20 trials by default (MAML_CRASH_TRIALS overrides); the slow test runs 200.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import maml
from maml.runtime import artifacts
from maml.runtime.checkpoint import RunStore, latest_run
from maml.runtime.store import read_log

TRIALS = int(os.environ.get("MAML_CRASH_TRIALS", "20"))

STEP = """
import os, time
import numpy as np
def run(inputs, params, ctx):
    with open(os.environ["MAML_TEST_LOG"], "a") as log:
        log.write(ctx.step_id + "\\n")
    time.sleep(params["sleep"])
    value = sum(v["value"] for v in inputs.values()) + params["add"]
    assert all(float(v["vector"][0]) == v["value"] for v in inputs.values())
    return {"value": value, "vector": np.full(250_000, value, dtype=np.float32)}
"""

STEPS = {  # a diamond plus a tail: fan-out, fan-in, and a chain
    "a": ([], 1), "b": (["a"], 2), "c": (["a"], 3), "d": (["b", "c"], 4), "e": (["d"], 5),
}


def _write_document(tmp_path: Path) -> Path:
    import yaml

    front = {"maml_version": "1.0", "permissions": {"execute": True}, "policy": {"backoff": {"initial": "0.01s"}},
             "pipeline": [{"id": sid, "block": "step", "needs": needs,
                           "params": {"add": add, "sleep": 0.15}}
                          for sid, (needs, add) in STEPS.items()]}
    text = ("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n# Crash\n\n"
            "## Code_Blocks\n\n```python {id=step}\n" + STEP.strip() + "\n```\n")
    path = tmp_path / "crash.maml.md"
    path.write_text(text, encoding="utf-8")
    return path


def _executions(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().split() if log.exists() else []:
        counts[line] = counts.get(line, 0) + 1
    return counts


def _assert_readable(state_dir: Path) -> None:
    for path in state_dir.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))   # never torn
    for log in state_dir.rglob("steps.log"):
        lines = log.read_bytes().split(b"\n")
        for line in lines[:-1]:
            json.loads(line)                           # only the last line may be torn
        for record in read_log(log).values():
            for ref in artifacts.refs_in(record["output"]):
                artifacts.check(ref, log.parent, full=True, producer=record["step"])


def _committed(state_dir: Path, doc_path: Path) -> set[str]:
    run_id = latest_run(state_dir, str(doc_path))
    if run_id is None:
        return set()
    store = RunStore(state_dir, run_id)
    return {sid for sid in STEPS if store.committed(sid) is not None}


def _start_and_kill(doc_path: Path, state_dir: Path, env: dict[str, str],
                    delay: float | None) -> float:
    """Start `maml run`, SIGKILL it `delay` s after its first step began (None: let it
    finish); returns the seconds from that moment to the end."""
    process = subprocess.Popen(
        [sys.executable, "-m", "maml", "run", str(doc_path), "--quiet", "--no-graph",
         "--state-dir", str(state_dir), "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    first_line = process.stderr.readline()          # "maml: run <id>": the run has begun
    assert first_line.startswith("maml: run"), first_line
    log = Path(env["MAML_TEST_LOG"])
    while not log.exists() and process.poll() is None:   # the first step is running: the
        time.sleep(0.002)                                # window starts here, not at spawn
    started = time.monotonic()
    if delay is not None:
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    time.sleep(0.05)   # workers die with their parent (PDEATHSIG); let them go
    return time.monotonic() - started


def test_sigkill_at_random_moments_never_loses_or_repeats_committed_steps(tmp_path, monkeypatch):
    _kill_and_resume(tmp_path, monkeypatch, TRIALS)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.skipif(not os.environ.get("MAML_SOAK"), reason="the 200-kill soak takes 5-15 min "
                    "on 2 cores: set MAML_SOAK=1 (the suite runs the 20-kill test above)")
def test_two_hundred_random_sigkills(tmp_path, monkeypatch):
    """Issue 12.3's bar for commits off the critical path: 200 kills, none loses or repeats
    a committed step (about 15 minutes on a loaded 2-core box)."""
    _kill_and_resume(tmp_path, monkeypatch, max(TRIALS, 200))


def _kill_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trials: int) -> None:
    doc_path = _write_document(tmp_path)
    monkeypatch.setenv("MAML_TEST_LOG", str(tmp_path / "reference.log"))
    reference = maml.run(maml.load(doc_path), state_dir=str(tmp_path / "reference"),
                         workers=2).output
    assert reference["value"] == (1 + 2) + (1 + 3) + 4 + 5
    # how long a whole run takes here, now: kills are spread over that window
    calibration = tmp_path / "calibration.log"
    window = _start_and_kill(doc_path, tmp_path / "calibration",
                             {**os.environ, "MAML_TEST_LOG": str(calibration)}, None)
    assert sorted(_executions(calibration)) == sorted(STEPS)
    rng = random.Random(20240611)
    outcomes = {"none_committed": 0, "some_committed": 0, "all_committed": 0}
    for trial in range(trials):
        state_dir, log = tmp_path / f"state{trial}", tmp_path / f"log{trial}"
        env = {**os.environ, "MAML_TEST_LOG": str(log)}
        monkeypatch.setenv("MAML_TEST_LOG", str(log))
        _start_and_kill(doc_path, state_dir, env, rng.uniform(0.0, window))
        _assert_readable(state_dir)
        committed = _committed(state_dir, doc_path)
        before = _executions(log)
        outcomes[("none" if not committed else "all" if len(committed) == len(STEPS)
                  else "some") + "_committed"] += 1

        result = maml.run(maml.load(doc_path), resume=True, state_dir=str(state_dir), workers=2)
        after = _executions(log)
        assert result.status == "succeeded" and result.output == reference
        for sid in STEPS:
            if sid in committed:
                assert after.get(sid, 0) == before.get(sid, 0), f"trial {trial}: {sid} re-ran"
                assert result.steps[sid].status == "cached"
            else:
                # in flight at the kill (or not started yet): it runs (again) after resume
                assert after.get(sid, 0) == before.get(sid, 0) + 1, f"trial {trial}: {sid}"
                assert result.steps[sid].status == "succeeded"
        _assert_readable(state_dir)
    print("crash trials:", outcomes)
    # the kills did land mid-run (the exact spread depends on the machine's load)
    assert outcomes["some_committed"] >= 2, outcomes
