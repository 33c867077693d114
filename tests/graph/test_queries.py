"""Queries on a graph recorded from real runs (real workers, real injected faults)."""

from __future__ import annotations

import os

import pytest

import maml
import maml.graph
from maml.graph import keys

DOCUMENT = """---
maml_version: "1.0"
id: graph-queries
permissions: {execute: true}
policy:
  retries: 3
  timeout: 60s
  backoff: {initial: 0.01s, max: 0.02s, factor: 2, jitter: 0}
  on:
    oom: [halve_batch, halve_batch, retry]
    worker_lost: [restart_worker, retry]
    user_error: [retry]
pipeline:
  - id: load
    block: load
  - id: train
    block: train
    needs: [load]
    params: {batch_size: 64}
  - id: report
    block: report
    needs: [train]
---
## Code_Blocks
```python {id=load}
def run(inputs, params, ctx):
    return {"rows": 10}
```

```python {id=train}
def run(inputs, params, ctx):
    return {"batch": params["batch_size"], "rows": inputs["load"]["rows"]}
```

```python {id=report}
def run(inputs, params, ctx):
    return inputs["train"]
```
"""

#: run name -> faults; each run's expected record is derived from these below
RUNS = {
    "one_oom": ["train:oom@1"],
    "two_oom": ["train:oom@1,2"],
    "lost_then_oom": ["load:worker_lost@1", "train:oom@1"],
    "user_error": ["report:user_error@1"],
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Run the document once per entry of RUNS into one graph, with its own key."""
    base = tmp_path_factory.mktemp("real-runs")
    old = os.environ.get("MAML_CONFIG_DIR")
    os.environ["MAML_CONFIG_DIR"] = str(base / "config")
    try:
        key = keys.create_key()
        path = base / "document.maml.md"
        path.write_text(DOCUMENT, encoding="utf-8")
        results = {}
        for name, faults in RUNS.items():
            with maml.graph.Recorder(base / "graph", key=key) as recorder:
                results[name] = maml.run(maml.load(path), inject=faults, graph=False,
                                         observers=[recorder], state_dir=str(base / "state"))
    finally:
        if old is None:
            os.environ.pop("MAML_CONFIG_DIR", None)
        else:
            os.environ["MAML_CONFIG_DIR"] = old
    public = base / "config" / keys.PUBLIC_NAME
    return maml.graph.open(base / "graph", public_key=public), results, public


def test_every_run_succeeded_and_the_graph_verifies(recorded):
    graph, results, public = recorded
    assert {r.status for r in results.values()} == {"succeeded"}
    report = graph.verify(public)
    # each run's recorder wrote the CPU's device node again: one node, several records
    assert report.ok and report.nodes == len(graph) + len(RUNS) - 1


def test_failures_match_the_injected_faults(recorded):
    graph, results, _ = recorded
    injected_ooms = sum(len(spec.split("@")[1].split(","))
                        for faults in RUNS.values() for spec in faults if ":oom@" in spec)
    ooms = graph.failures(error="oom")
    assert len(ooms) == injected_ooms
    # the step imports no torch, so the injected OOM is the host's MemoryError
    assert all(f["injected"] and f["step"] == "train" and f["device_class"] == "cpu"
               and f["exception_type"].endswith(("OutOfMemory", "MemoryError")) for f in ooms)
    for result in results.values():
        assert len(graph.failures(run=result.run_id)) == result.errors
    lost = graph.failures(error_class="worker_lost")
    assert [f["run"] for f in lost] == [results["lost_then_oom"].run_id]
    assert lost[0]["worker"] and lost[0]["device"]["id"] == "cpu"
    assert graph.failures(step_kind="python", device_class="cuda") == []
    assert len(graph.failures(since=0)) == sum(r.errors for r in results.values())


def test_recovery_success_rates_follow_the_runs(recorded):
    graph, results, _ = recorded
    rates = {(r["error_class"], r["action"]): r for r in graph.recovery_success_rates()}
    halve = rates[("oom", "halve_batch")]
    # one_oom: halve -> ok; two_oom: halve -> oom again, halve -> ok; lost_then_oom: halve -> ok
    assert (halve["tried"], halve["worked"], halve["failed"]) == (4, 3, 1)
    assert rates[("worker_lost", "restart_worker")]["worked"] == 1
    assert rates[("user_error", "retry")]["rate"] == 1.0
    assert sum(r["tried"] for r in rates.values()) == sum(r.recoveries for r in results.values())


def test_patterns_group_recurring_failures_and_recommend_what_worked(recorded):
    graph, _, _ = recorded
    patterns = {(p["type"], p["key"]): p for p in graph.patterns(min_count=3)}
    oom = patterns[("error_class", "oom")]
    assert oom["count"] == len(graph.failures(error="oom")) and oom["runs"] == 3
    assert oom["recommended_action"] == "halve_batch" and "worked 3 of 4" in oom["basis"]
    assert oom["first_seen"] <= oom["last_seen"]
    assert patterns[("hardware_class", "cpu")]["count"] == len(graph.failures())
    assert ("error_class", "user_error") not in patterns          # it happened once
    assert graph.patterns(min_count=100) == []


def test_history_and_edges_describe_what_happened(recorded):
    graph, results, _ = recorded
    result = results["two_oom"]
    nodes = graph.history(result.run_id)
    attempts = [n for n in nodes if n["type"] == "attempt" and n["step"] == "train"]
    assert len(attempts) == result.steps["train"].attempts == 3
    assert [a["params"]["batch_size"] for a in attempts] == [64, 32, 16]   # two halvings
    assert graph.history(f"{result.run_id}/train")[0]["type"] == "step"
    assert len([n for n in graph.history("train") if n["type"] == "step"]) == len(RUNS)
    g = graph.nx
    for recovery in (n for n in nodes if n["type"] == "recovery"):
        labels = {k for _, _, k in g.out_edges(recovery["id"], keys=True)}
        assert labels == {"led_to", "resulted_in"}
        (error, _, label), = g.in_edges(recovery["id"], keys=True)
        assert label == "handled_by" and g.nodes[error]["type"] == "error"
    devices = [n for n, data in g.nodes(data=True) if data["type"] == "device"]
    assert len(devices) == 1        # content-addressed: every attempt ran on the one CPU node
    ran_on = [e for e in g.in_edges(devices[0], keys=True) if e[2] == "ran_on"]
    assert len(ran_on) == sum(r.steps[s].attempts for r in results.values() for s in r.steps)


RUN_SCRIPT = """
import sys
import maml
from maml.graph import Recorder
if __name__ == "__main__":
    document, graph, state, fault = sys.argv[1:5]
    with Recorder(graph) as recorder:
        result = maml.run(maml.load(document), inject=[fault], graph=False,
                          observers=[recorder], state_dir=state)
    print(result.run_id, result.errors, flush=True)
"""


def test_two_concurrent_runs_append_to_one_graph(tmp_path, key):
    import subprocess
    import sys

    document = tmp_path / "document.maml.md"
    document.write_text(DOCUMENT, encoding="utf-8")
    script = tmp_path / "run_one.py"
    script.write_text(RUN_SCRIPT, encoding="utf-8")
    graph_dir = tmp_path / "graph"
    procs = [subprocess.Popen([sys.executable, str(script), str(document), str(graph_dir),
                               str(tmp_path / f"state{n}"), fault], stdout=subprocess.PIPE,
                              text=True, env=os.environ.copy())
             for n, fault in enumerate(["train:oom@1", "load:user_error@1"])]
    outputs = [proc.communicate(timeout=240)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    graph = maml.graph.open(graph_dir)
    assert graph.report.ok
    assert {run["run"] for run in graph.runs()} == {run_id for run_id, _ in outputs}
    for run_id, errors in outputs:
        nodes = graph.history(run_id)
        assert len(graph.failures(run=run_id)) == int(errors) == 1
        assert [n["status"] for n in nodes if n["type"] == "outcome" and n["of"] == "run"] == \
            ["succeeded"]
        assert {n["step"] for n in nodes if n["type"] == "step"} == {"load", "train", "report"}
