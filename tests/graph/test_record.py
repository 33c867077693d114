"""The Recorder turns runtime events into linked nodes, committing at step boundaries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import maml.graph
from maml.errors import GraphError
from maml.graph.record import Recorder
from maml.runtime.events import Broadcaster, ErrorInfo, StepInfo

from graph_helpers import CPU, GPU0, GPU1, play_run


def _edges(graph) -> set[tuple[str, str, str]]:
    g = graph.nx
    return {(g.nodes[a]["type"], g.nodes[b]["type"], label) for a, b, label in g.edges(keys=True)}


def test_nodes_and_edges_of_a_run_with_a_recovery(tmp_path, key):
    with Recorder(tmp_path, key=key) as recorder:
        play_run(recorder, "r1", {"train": [(GPU0, "oom", "next_device"), (GPU1, None)]})
    graph = maml.graph.open(tmp_path)
    assert _edges(graph) == {
        ("run", "step", "has_step"), ("step", "attempt", "has_attempt"),
        ("attempt", "device", "ran_on"), ("attempt", "error", "raised"),
        ("error", "recovery", "handled_by"), ("recovery", "attempt", "led_to"),
        ("recovery", "outcome", "resulted_in"), ("attempt", "outcome", "ended"),
        ("step", "outcome", "ended"), ("run", "outcome", "ended")}
    error, = graph.failures()
    assert (error["error_class"], error["device"]["uuid"], error["worker"], error["memory"]) == \
        ("oom", GPU0.uuid, "w-cuda:0", 123)
    types = [graph.nx.nodes[n]["type"] for n in graph.nx]
    assert types.count("device") == 2 and types.count("attempt") == 2


def test_node_ids_are_content_hashes_covering_their_links(tmp_path, key):
    with Recorder(tmp_path, key=key) as recorder:
        play_run(recorder, "r1", {"a": [(CPU, None)]})
    graph = maml.graph.open(tmp_path)
    from maml.graph.canonical import digest, dumps

    for node in graph.index.bodies(list(range(len(graph)))):
        node_id = node.pop("id")
        assert digest(dumps(node)) == node_id
        assert all(graph.index.position[target] < graph.index.position[node_id]
                   for _, target in node["links"])


def test_each_step_boundary_is_committed_in_the_background_before_the_run_ends(tmp_path, key):
    recorder = Recorder(tmp_path, key=key)
    step = StepInfo("a", "python")
    recorder.on_run_started(run_id="r", document=None, steps=[step], started_at=0.0)
    recorder.on_step_started(run_id="r", step=step)
    recorder.on_attempt_started(run_id="r", step=step, attempt=1, device=CPU, worker_id="w",
                                params={})
    assert len(maml.graph.open(tmp_path)) == 0           # buffered, not yet committed
    recorder.on_attempt_succeeded(run_id="r", step=step, attempt=1, device=CPU, duration=0.1)
    recorder.on_step_finished(run_id="r", step=step, status="succeeded", attempts=1,
                              output_digest="d")           # returns without waiting for the fsync
    deadline = time.monotonic() + 60
    while len(maml.graph.open(tmp_path)) < 6:             # run, step, device, attempt, 2 outcomes
        assert time.monotonic() < deadline, "the step boundary was never committed"
        time.sleep(0.01)
    assert len(maml.graph.open(tmp_path)) == 6
    recorder.close()


def test_a_run_that_never_finished_is_marked_interrupted_on_close(tmp_path, key):
    with Recorder(tmp_path, key=key) as recorder:
        step = StepInfo("a", "python")
        recorder.on_run_started(run_id="r", document=None, steps=[step], started_at=0.0)
        recorder.on_step_started(run_id="r", step=step)
    run, = maml.graph.open(tmp_path).runs()
    assert run["status"] == "interrupted"


def test_health_is_recorded_on_state_changes_only(tmp_path, key):
    with Recorder(tmp_path, key=key) as recorder:
        for temperature in range(60, 90):
            recorder.on_device_sample(sample={"device": "cuda:0", "temperature": temperature})
        recorder.on_device_state_changed(device=GPU0, old="healthy", new="warning",
                                         sample={"temperature": 84.0}, reasons=["temperature"])
    graph = maml.graph.open(tmp_path)
    health = [n for n, d in graph.nx.nodes(data=True) if d["type"] == "health"]
    assert len(health) == 1 and graph.nx.nodes[health[0]]["sample"] == {"temperature": 84.0}
    assert _edges(graph) == {("device", "health", "state_changed")}


def test_the_health_sample_travels_with_the_error(tmp_path, key):
    step = StepInfo("a", "llm")
    error = ErrorInfo("oom", "torch.OutOfMemoryError", "CUDA out of memory", device=GPU0,
                      health={"memory_used": 79 * 2**30, "temperature": 71.5})
    with Recorder(tmp_path, key=key) as recorder:
        recorder.on_run_started(run_id="r", document=None, steps=[step], started_at=0.0)
        recorder.on_attempt_started(run_id="r", step=step, attempt=1, device=GPU0,
                                    worker_id="w", params={})
        recorder.on_attempt_failed(run_id="r", step=step, attempt=1, error=error, duration=1.0)
    failure, = maml.graph.open(tmp_path).failures(device="cuda:0")
    assert failure["health"] == {"memory_used": 79 * 2**30, "temperature": 71.5}


def test_a_graph_that_cannot_be_written_is_refused_before_the_run(tmp_path, key):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(GraphError, match="cannot be written") as caught:
        Recorder(blocked / "graph", key=key)
    assert caught.value.path == str(blocked / "graph" / "log.jsonl")


def test_a_write_that_fails_mid_run_fails_the_run_naming_the_log(tmp_path, key):
    recorder = Recorder(tmp_path, key=key)
    broadcaster = Broadcaster([recorder])
    step = StepInfo("a", "python")
    broadcaster.emit("on_run_started", run_id="r", document=None, steps=[step], started_at=0.0)
    read_only = os.open(recorder.path, os.O_RDONLY)
    os.dup2(read_only, recorder.writer._fd)       # the next write() fails with EBADF
    broadcaster.emit("on_step_skipped", run_id="r", step=step, reason="upstream failed")
    with pytest.raises(GraphError, match="cannot write the error graph") as caught:
        # the step boundary's commit runs in the background; its failure reaches the run
        # at the next commit it waits for (here the run's end) and fails the run
        broadcaster.emit("on_run_finished", run_id="r", status="succeeded", errors=0,
                         recoveries=0, duration=1.0)
    assert caught.value.path == str(recorder.path)
    os.close(read_only)


def test_runs_from_several_recorders_share_device_nodes(tmp_path: Path, key):
    for n in range(3):
        with Recorder(tmp_path, key=key) as recorder:
            play_run(recorder, f"r{n}", {"a": [(GPU0, "cuda_error", "cpu"), (CPU, None)]})
    graph = maml.graph.open(tmp_path)
    assert len([1 for t in graph.index.types if t == "device"]) == 2
    assert graph.patterns(min_count=3)[0]["count"] == 3
