"""Many clients at once, and a server SIGKILLed under load: every accepted run completes
with the right output, none runs twice, and the error graph still verifies.

Each run's steps append one line per execution to a side-effect file named by the run's
key, so the counts say how often each step really ran. A step in flight when the server died
may run again after the restart (at most the attempts in flight are lost, DESIGN §4); a step
committed before the kill never runs again, and no submission becomes two runs: clients
retry with an Idempotency-Key after a lost answer.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from serve_helpers import TOKEN, doc, serve_process

STEP = """
import os, time
def run(inputs, params, ctx):
    with open(os.path.join(params["effects"], params["key"] + ".{name}"), "a") as f:
        f.write("ran\\n")
    time.sleep(0.05)
    return {result}
"""
EFFECTS_DOC = doc("""
- {id: first, block: first, params: {key: "", effects: ""}}
- {id: second, block: second, needs: [first], params: {key: "", effects: ""}}
""", {"first": STEP.format(name="first", result='{"key": params["key"]}'),
      "second": STEP.format(name="second", result='inputs["first"]["key"] + "!"')})


class Load:
    """`clients` threads submitting `runs` documents through whichever server is current."""

    def __init__(self, server, effects: Path, runs: int, clients: int) -> None:
        self.server, self.effects = server, effects
        self.keys = [f"k{n:04d}" for n in range(runs)]
        self.accepted: dict[str, str] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(self.keys[i::clients],))
                        for i in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(240)

    def _client(self, keys: list[str]) -> None:
        for key in keys:
            body = {"document": EFFECTS_DOC, "params": {"key": key, "effects": str(self.effects)}}
            while True:
                try:
                    answer = httpx.post(f"{self.server.url}/api/v1/runs", json=body, timeout=30,
                                        headers={"Authorization": f"Bearer {TOKEN}",
                                                 "Idempotency-Key": key})
                except httpx.TransportError:
                    time.sleep(0.1)          # the server is down: try again, same key
                    continue
                assert answer.status_code == 202, answer.text
                with self.lock:
                    self.accepted[key] = answer.json()["run_id"]
                break


def _finished(server) -> dict[str, dict]:
    runs = server.client.get("/api/v1/runs", params={"limit": 10_000}).json()["runs"]
    return {r["run_id"]: r for r in runs}


def _wait_all(server, run_ids: set[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _finished(server)
        if all(runs.get(r, {}).get("status") not in (None, "queued", "running") for r in run_ids):
            return runs
        time.sleep(0.2)
    raise AssertionError("runs did not end: " + str({r: runs.get(r) for r in run_ids}))


def _check(server, load: Load, concurrency: int) -> None:
    assert set(load.accepted) == set(load.keys)
    runs = _wait_all(server, set(load.accepted.values()), timeout=300)
    assert len(runs) == len(load.keys), "a submission became two runs"
    for key, run_id in load.accepted.items():
        run = server.client.get(f"/api/v1/runs/{run_id}").json()
        assert run["status"] == "succeeded", run
        assert run["steps"]["second"]["output"] == key + "!"
    counts = {path.name: len(path.read_text().splitlines()) for path in load.effects.iterdir()}
    assert set(counts) == {f"{k}.{s}" for k in load.keys for s in ("first", "second")}
    again = sorted(name for name, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values()), counts
    assert len(again) <= concurrency, f"more steps re-ran than were in flight: {again}"
    verify = server.client.get("/api/v1/graph/verify").json()
    assert verify["ok"] is True, verify


def _kill_mid_load(tmp_path: Path, runs: int, clients: int, concurrency: int) -> None:
    effects = tmp_path / "effects"
    effects.mkdir()
    args = ("--no-mcp", "--concurrency", str(concurrency), "--workers", "1")
    server = serve_process(tmp_path, *args)
    load = Load(server, effects, runs, clients)
    load.start()
    deadline = time.monotonic() + 120
    while not ({"succeeded"} <= {r["status"] for r in _finished(server).values()}
               and "running" in {r["status"] for r in _finished(server).values()}):
        assert time.monotonic() < deadline, "no run finished while others ran"
        time.sleep(0.05)
    server.stop(signal.SIGKILL)                          # no shutdown of any kind
    restarted = serve_process(tmp_path, *args)
    load.server = restarted
    load.join()
    try:
        _check(restarted, load, concurrency)
    finally:
        restarted.stop()


def test_sigkill_under_load_loses_no_run_and_runs_none_twice(tmp_path):
    _kill_mid_load(tmp_path, runs=10, clients=4, concurrency=2)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_200_runs_from_20_clients_through_a_sigkill(tmp_path):
    _kill_mid_load(tmp_path, runs=200, clients=20, concurrency=4)
