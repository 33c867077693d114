"""RayBackend against the executor interface, on a real Ray cluster of three nodes.

One `ray.cluster_utils.Cluster` for the module: a head (1 CPU) and two worker nodes (1 CPU
and one `GPU_like` custom resource each), so GPU placement is exercised without a GPU. Ray
runs only inside the loopback-only namespace (tests run under `unshare -n`), with its temp
dir under the test's and no dashboard. The node-removal test runs last (it shrinks the
cluster).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray_helpers import ray_temp_dir, require_loopback_only  # noqa: E402

require_loopback_only()

from maml.runtime.backend import Failed, Lost, Started, Succeeded  # noqa: E402
from maml.runtime.events import DeviceRef  # noqa: E402
from maml.runtime.kinds.base import StepSpec  # noqa: E402
from maml.runtime.worker_main import AttemptRequest  # noqa: E402

GPU = "GPU_like"
WHO = ("import os, time\n"
       "def run(inputs, params, ctx):\n"
       "    time.sleep(params.get('sleep', 0))\n"
       "    return {'pid': os.getpid(), 'device': ctx.device, 'x': params.get('x')}\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    root = Path(tmp_path_factory.mktemp("ray", numbered=True))
    here = os.getcwd()
    os.chdir(root)                        # Ray's processes start here, never in the checkout
    with ray_temp_dir() as temp:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "temp_dir": str(temp / "ray")})
        nodes = [cluster.add_node(num_cpus=1, resources={GPU: 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        cluster.run_dir = root
        cluster.gpu_nodes = nodes
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()
            os.chdir(here)


@pytest.fixture(scope="module")
def backend(cluster):
    """One backend for the module, as a `maml.Session` keeps one: its actors stay warm."""
    from maml.runtime.executors.ray import RayBackend

    backend = RayBackend(gpu_resource=GPU, placement_timeout=20.0)
    yield backend
    backend.close()


def request(cluster, step="s", device="cpu", attempt=1, fault=None, **params):
    kind = device.split(":")[0]
    spec = StepSpec(id=step, kind="python", params=params, block_lang="python", block_body=WHO,
                    block_line=1, doc_path="doc.maml.md", doc_dir=str(cluster.run_dir))
    return AttemptRequest(step=spec, attempt=attempt, device=DeviceRef(id=device, kind=kind),
                          fault=fault, timeout=30.0, heartbeat_interval=0.2,
                          state_path=str(cluster.run_dir / f"{step}.state"),
                          run_dir=str(cluster.run_dir))


def until_done(backend, handles, limit=90.0):
    """Poll until every handle has its terminal event; all events, in order."""
    events, open_ = [], {h.id for h in handles}
    deadline = time.monotonic() + limit
    while open_ and time.monotonic() < deadline:
        for event in backend.poll(0.5):
            events.append(event)
            if isinstance(event, (Succeeded, Failed, Lost)):
                open_.discard(event.handle.id)
    assert not open_, f"no terminal event for {open_}: {events}"
    return events


def of(events, cls, handle=None):
    return [e for e in events if isinstance(e, cls) and (handle is None or e.handle == handle)]


def test_the_inventory_numbers_gpu_slots_round_robin_over_nodes(backend, cluster):
    gpus = backend.inventory.gpus()
    assert [g.id for g in gpus] == ["cuda:0", "cuda:1"]
    homes = {backend._homes[g.id] for g in gpus}
    assert homes == {n.node_id for n in cluster.gpu_nodes}
    # what next_device reads to leave a node (maml.runtime.policies.actions.NextDevice)
    from maml.runtime.devices.book import DeviceBook

    assert DeviceBook(backend.inventory).nodes == {g.id: g.node for g in gpus}
    assert {g.node for g in gpus} == homes
    assert backend.capacity("cuda:0") == 1 and backend.capacity("cpu") == 3
    assert backend.capacity("cuda:7") == 0


def test_gpu_steps_spread_over_nodes_and_the_record_names_where(backend, cluster):
    handles = [backend.submit(request(cluster, f"g{k}", f"cuda:{k}", x=k)) for k in range(2)]
    events = until_done(backend, handles)
    started = {e.handle.step_id: e for e in of(events, Started)}
    assert {started[f"g{k}"].node["node_id"] for k in range(2)} == {
        n.node_id for n in cluster.gpu_nodes}
    assert all(e.node["node_ip"] and e.pid for e in started.values())
    results = {e.handle.step_id: e.output for e in of(events, Succeeded)}
    assert [results[f"g{k}"]["x"] for k in range(2)] == [0, 1]
    # inside its worker a GPU step sees its one GPU as cuda:0 (the record keeps cuda:1)
    assert results["g1"]["device"] == "cuda:0"
    assert started["g1"].device.id == "cuda:1"


def test_an_actor_stays_warm_across_attempts_until_replaced(backend, cluster):
    first = backend.submit(request(cluster, "a", "cuda:0"))
    pid = of(until_done(backend, [first]), Succeeded)[0].output["pid"]
    second = backend.submit(request(cluster, "b", "cuda:0", fault="transient"))
    assert of(until_done(backend, [second]), Failed)[0].error.context["pid"] == pid
    backend.replace_worker(second)        # what the scheduler does after a poisoning failure
    third = backend.submit(request(cluster, "c", "cuda:0"))
    assert of(until_done(backend, [third]), Succeeded)[0].output["pid"] != pid


def test_an_injected_fault_is_raised_inside_the_ray_worker(backend, cluster):
    handle = backend.submit(request(cluster, "t", "cpu", fault="transient"))
    events = until_done(backend, [handle])
    failed = of(events, Failed)[0]
    assert failed.error.error_class == "transient" and failed.error.injected
    assert failed.error.context["node_id"] in {n["NodeID"] for n in ray.nodes()}
    assert failed.error.context["pid"] != os.getpid()


def test_a_killed_ray_worker_is_lost_and_its_slot_takes_the_warm_spare(backend, cluster):
    for slot, actor in list(backend._actors.items()):      # no warm CPU actor to fall back on
        if slot[0] == "cpu":
            backend._kill(slot, actor)
    handle = backend.submit(request(cluster, "k", "cpu", fault="worker_lost"))
    spare_pid = ray.get(backend._spare.where.remote())["pid"]    # started ahead, no CPU asked
    lost = of(until_done(backend, [handle]), Lost)
    assert lost and "died" in lost[0].message
    again = backend.submit(request(cluster, "k", "cpu", attempt=2))
    assert of(until_done(backend, [again]), Succeeded)[0].output["pid"] == spare_pid
    assert backend._spare is not None                  # and the next spare is on its way


def test_a_hang_is_cancelled_by_killing_the_actor(backend, cluster):
    handle = backend.submit(request(cluster, "h", "cpu", fault="hang"))
    deadline = time.monotonic() + 60
    seen: list = []
    while not of(seen, Started) and time.monotonic() < deadline:
        seen += backend.poll(0.5)
    assert of(seen, Started), seen
    backend.cancel(handle, "no heartbeat")
    assert not backend._running
    retry = backend.submit(request(cluster, "h", "cpu", attempt=2))
    assert of(until_done(backend, [retry]), Succeeded)


# -- whole runs: the scheduler on Ray (every document: test_ray_documents.py) ---------


@pytest.fixture
def idle_cluster(backend):
    """The shared backend's actors hold every CPU and GPU_like: stop them so that a run
    with its own backend (and its own driver) can place actors."""
    backend.close()
    yield


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


SPREAD = """---
maml_version: "1.0"
id: urn:maml:test:spread
permissions: {execute: true}
executor: {kind: ray, gpu_resource: GPU_like}
pipeline:
  - {id: a, block: who, device: cuda, params: {sleep: 1}}
  - {id: b, block: who, device: cuda, params: {sleep: 1}}
  - {id: c, block: who, device: cpu, needs: [a, b]}
---
# Spread

## Code_Blocks

```python {id=who}
import os, time
def run(inputs, params, ctx):
    time.sleep(params.get("sleep", 0))
    return {"device": ctx.device, "inputs": sorted(inputs)}
```
"""


def test_maml_run_executor_ray_spreads_gpu_steps_over_nodes(cluster, idle_cluster, isolated):
    import maml

    path = isolated / "spread.maml.md"
    path.write_text(SPREAD)
    result = maml.run(str(path), address=cluster.address,      # executor: from front matter
                      state_dir=str(isolated / ".maml"), graph=isolated / "g")
    assert result.status == "succeeded", result.problems
    assert {result.steps[s].device for s in "ab"} == {"cuda:0", "cuda:1"}
    assert result.output == {"device": "cpu", "inputs": ["a", "b"]}
    assert result.steps["a"].output["device"] == "cuda:0"     # what code in the worker uses
    graph = maml.graph.open(isolated / "g").nx
    placed = {d["step"]: d["node"] for _, d in graph.nodes(data=True) if d["type"] == "placement"}
    assert {placed["a"]["node_id"], placed["b"]["node_id"]} == {
        n.node_id for n in cluster.gpu_nodes}
    assert all(p["node_ip"] for p in placed.values())


ARRAYS = """---
maml_version: "1.0"
id: urn:maml:test:arrays
permissions: {execute: true}
executor: {kind: ray, gpu_resource: GPU_like}
pipeline:
  - {id: make, block: make, device: cuda:0}
  - {id: use, block: use, device: cuda:1, needs: [make]}
---
# Arrays between nodes

## Code_Blocks

```python {id=make}
import numpy as np
def run(inputs, params, ctx):
    return {"x": np.arange(300_000, dtype=np.float64), "n": 3}
```

```python {id=use}
def run(inputs, params, ctx):
    x = inputs["make"]["x"]
    return {"sum": float(x.sum()), "type": type(x).__name__, "writeable": x.flags.writeable}
```
"""


def test_arrays_between_nodes_travel_through_the_object_store_and_land_on_the_driver(
        cluster, idle_cluster, isolated):
    import maml
    from maml.runtime.artifacts import artifact_path, file_sha256

    path = isolated / "arrays.maml.md"
    path.write_text(ARRAYS)
    options = {"address": cluster.address, "state_dir": str(isolated / ".maml"),
               "graph": isolated / "g"}
    failed = maml.run(str(path), inject=["use:user_error@1"], **options)
    assert failed.steps["use"].status == "failed"
    # resumed: `make` is reused from the driver's run store (its actor and its object are
    # gone), so the driver puts the array from its own file for `use` on the other node
    result = maml.run(str(path), resume=failed.run_id, **options)
    assert result.status == "succeeded", result.problems
    assert result.steps["make"].status == "cached"
    # both GPU_like nodes are not the driver's (the head): the consumer got the array from
    # the object store (a plain read-only ndarray), not a memory-mapped file
    assert result.output == {"sum": float(sum(range(300_000))), "type": "ndarray",
                             "writeable": False}
    ref = result.steps["make"].output["x"]
    assert ref["shape"] == [300_000] and ref["dtype"] == "float64"
    file = artifact_path(isolated / ".maml" / "runs" / result.run_id, ref["$artifact"])
    assert file_sha256(file) == ref["$artifact"]            # the driver wrote the record
    again = maml.run(str(path), resume=result.run_id, **options)
    assert {s.status for s in again.steps.values()} == {"cached"}
    first = maml.run(str(path), **options)          # a fresh run: the object store's path
    assert first.status == "succeeded" and first.output == result.output


SLOW_SECOND = """---
maml_version: "1.0"
id: urn:maml:test:resume
permissions: {execute: true}
pipeline:
  - {id: first, block: stamp}
  - {id: second, block: stamp, needs: first, params: {sleep: 60}}
---
# Resume

## Code_Blocks

```python {id=stamp}
import os, time
def run(inputs, params, ctx):
    with open(f"{ctx.step_id}.ran", "a") as out:
        out.write("x")
    time.sleep(params.get("sleep", 0))
    return ctx.step_id
```
"""


def test_resume_after_the_driver_is_sigkilled(cluster, idle_cluster, isolated):
    import signal
    import subprocess
    import sys

    import maml

    path = isolated / "resume.maml.md"
    path.write_text(SLOW_SECOND)
    command = [sys.executable, "-m", "maml", "run", str(path), "--executor", "ray",
               "--address", cluster.address, "--quiet", "--no-graph"]
    log = (isolated / "driver.log").open("w")
    driver = subprocess.Popen(command, cwd=isolated, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while not (isolated / "second.ran").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    assert (isolated / "second.ran").exists(), (isolated / "driver.log").read_text()[-2000:]
    assert (isolated / "first.ran").read_text() == "x"
    (isolated / "resume.maml.md").write_text(SLOW_SECOND.replace("sleep: 60", "sleep: 0"))
    result = maml.run(str(path), resume=True, executor="ray", address=cluster.address,
                      state_dir=str(isolated / ".maml"), graph=False)
    assert result.status == "succeeded", result.problems
    assert result.steps["first"].status == "cached"
    assert result.output == "second"
    assert (isolated / "first.ran").read_text() == "x"      # not run again


def test_a_removed_node_loses_the_attempt_and_the_retry_runs_on_the_other_node(backend,
                                                                               cluster):
    handle = backend.submit(request(cluster, "n", "cuda:0", sleep=60))
    seen: list = []
    deadline = time.monotonic() + 60
    while not of(seen, Started) and time.monotonic() < deadline:
        seen += backend.poll(0.5)
    node_id = of(seen, Started)[0].node["node_id"]
    doomed = next(n for n in cluster.gpu_nodes if n.node_id == node_id)
    cluster.remove_node(doomed)
    lost = of(until_done(backend, [handle]), Lost)
    assert lost, "removing the node must end the attempt as lost"
    retry = backend.submit(request(cluster, "n", "cuda:0", attempt=2))
    events = until_done(backend, [retry])
    assert of(events, Succeeded)
    assert of(events, Started)[0].node["node_id"] != node_id
