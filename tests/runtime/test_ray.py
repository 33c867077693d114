"""RayBackend against the executor interface, on a real Ray cluster of three nodes.

One `ray.cluster_utils.Cluster` for the module: a head (1 CPU) and two worker nodes (1 CPU
and one `GPU_like` custom resource each), so GPU placement is exercised without a GPU. Ray
runs only inside the loopback-only namespace (tests run under `unshare -n`), with its temp
dir under the test's and no dashboard. The node-removal test runs last (it shrinks the
cluster) and adds a node back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
if set(os.listdir("/sys/class/net")) - {"lo"}:
    pytest.skip("Ray starts only in a loopback-only network namespace (unshare -n): it probes "
                "cloud metadata addresses at start", allow_module_level=True)

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
    temp = Path("/tmp") / f"mr{os.getpid()}"          # unix socket paths must stay short
    (temp / "ray").mkdir(parents=True, exist_ok=True)
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "temp_dir": str(temp / "ray")})
    nodes = [cluster.add_node(num_cpus=1, resources={GPU: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    cluster.run_dir = root
    cluster.gpu_nodes = nodes
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)


@pytest.fixture
def backend(cluster):
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
    # the custom resource is not a CUDA GPU: the step keeps the scheduler's device id
    assert results["g1"]["device"] == "cuda:1"


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


def test_a_killed_ray_worker_is_lost_and_the_slot_recovers(backend, cluster):
    handle = backend.submit(request(cluster, "k", "cpu", fault="worker_lost"))
    lost = of(until_done(backend, [handle]), Lost)
    assert lost and "died" in lost[0].message
    again = backend.submit(request(cluster, "k", "cpu", attempt=2))
    assert of(until_done(backend, [again]), Succeeded)


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
