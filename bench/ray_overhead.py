"""maml on Ray against plain Ray tasks, and recovery of a killed Ray worker against local.

    unshare -n bash -c 'ip link set lo up && RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
        .venv/bin/python bench/ray_overhead.py [--repeats 3] [--cpus 2]'

One local Ray (`ray.init(num_cpus=--cpus)`) serves both sides, in this process, one after
the other:

- plain Ray: `@ray.remote` no-op tasks, chained through ObjectRefs (chain-50) or fanned out
  (fanout-500); Ray's workers are warm after the first round.
- maml on Ray: `maml.api.run(doc, backend=RayBackend())` on the same workloads as
  bench/overhead.py (python no-op steps), end to end: plan, scheduling, the run store's
  commits, the signed error graph; and again with `graph=False` (no signed record: what the
  graph's per-step commit costs). The backend is kept across runs (as a `maml.Session`
  keeps its workers), so its slot actors are warm like Ray's workers.

Recovery: a step's first attempt SIGKILLs its own worker 0.5 s in (bench/overhead.py's
MAML_RECOVER step); the time from the kill to the next attempt's start, on the Ray backend
(its warm spare actor, up before each repeat) and on the local backend (maml's warm spare
process). Medians of --repeats.
`--artifacts MB` instead measures a chain make -> scale -> total that passes two MB-sized
float64 arrays, on a two-node `ray.cluster_utils.Cluster` (the driver on a head without
CPUs, both slots on the other node), with arrays through Ray's object store (artifacts
"auto") against the run dir's files (artifacts "files": what a shared filesystem gives),
and on the local executor. Medians of --repeats whole runs after one warm-up.

Ray must only run in a network namespace with loopback alone (the command above).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overhead import (MAML_RECOVER, WORK_BEFORE_KILL, maml_document,  # noqa: E402
                      maml_workload, recovery_latency)

WORKLOADS = (("chain", 50), ("fanout", 500))
ARRAY_STEP = (
    "import numpy as np\n\n"
    "def run(inputs, params, ctx):\n"
    "    if params['role'] == 'make':\n"
    "        return {'x': np.full(params['mb'] * 131072, 1.0)}\n"
    "    x = next(iter(inputs.values()))['x']\n"
    "    if params['role'] == 'scale':\n"
    "        return {'x': x * 2.0}\n"
    "    return float(x.sum())\n")


def plain_ray(ray: Any) -> Callable[[str, int], None]:
    @ray.remote(max_retries=0)
    def noop(_: Any = None) -> int:
        return 1

    def pipeline(shape: str, n: int) -> None:
        if shape == "chain":
            ref = None
            for _ in range(n):
                ref = noop.remote(ref)
            ray.get(ref)
        else:
            ray.get([noop.remote(i) for i in range(n)])
    return pipeline


def maml_on(backend: Any, workdir: Path) -> Callable[..., Any]:
    import maml

    session = maml.Session(backend=backend) if backend is not None else None

    def run(text: str, name: str, **options: Any) -> Any:
        path = workdir / f"{name}.maml.md"
        path.write_text(text)
        if backend is not None:          # a Session over it: kept warm across runs
            options.update(session=session)
        result = maml.run(str(path), **options)
        if result.status != "succeeded":
            raise RuntimeError(f"{name}: {result.status}: {result.problems}")
        return result
    return run


def walls(run: Callable[[], Any], repeats: int) -> list[float]:
    run()                                        # warm-up, not timed
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        out.append(time.perf_counter() - started)
    return out


def recovery(run: Callable[..., Any], workdir: Path, repeats: int,
             settle: Callable[[], Any] = lambda: None, **options: Any) -> list[float]:
    latencies = []
    for k in range(repeats):
        settle()                      # Ray: the spare actor that replaced the last one is up
        stamps = str(workdir / f"stamps-{os.getpid()}-{k}-{time.monotonic_ns()}")
        doc = maml_document([{"id": "rec", "kind": "python", "block": "step", "device": ["cpu"],
                              "params": {"stamps": stamps, "fault": "worker_lost",
                                         "work": WORK_BEFORE_KILL}}], MAML_RECOVER,
                            {"retries": 1, "backoff": {"initial": 0, "jitter": 0}})
        result = run(doc, f"recover-{k}-{Path(stamps).name}", **options)
        assert result.steps["rec"].attempts == 2, result.steps["rec"]
        latencies.append(recovery_latency(stamps))
    return latencies


def array_chain(mb: int) -> str:
    steps = [{"id": role, "kind": "python", "block": "step", "device": ["cpu"],
              "params": {"role": role, "mb": mb}, **({"needs": [need]} if need else {})}
             for role, need in (("make", None), ("scale", "make"), ("total", "scale"))]
    return maml_document(steps, ARRAY_STEP, {"retries": 0})


def artifacts_bench(mb: int, repeats: int) -> list[str]:
    import ray
    from ray.cluster_utils import Cluster

    from maml.runtime.executors.ray import RayBackend

    workdir = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    os.chdir(workdir)
    os.environ.setdefault("MAML_GRAPH", str(workdir / "graph"))
    os.environ["RAY_TMPDIR"] = str(workdir)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "temp_dir": str(workdir / "ray"),
        "object_store_memory": 4 * mb * 2 ** 20 + 2 ** 28})
    cluster.add_node(num_cpus=2, object_store_memory=4 * mb * 2 ** 20 + 2 ** 28)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    text, rows = array_chain(mb), []
    for label, mode in (("Ray, object store (artifacts: auto)", "auto"),
                        ("Ray, run dir files (artifacts: files)", "files")):
        backend = RayBackend(artifacts=mode)
        run = maml_on(backend, workdir)
        seconds = statistics.median(walls(lambda: run(text, f"arrays-{mode}"), repeats))
        rows.append(f"| {label} | {seconds:.3f} |")
        backend.close()
    local = maml_on(None, workdir)
    seconds = statistics.median(walls(lambda: local(text, "arrays-local", workers=2), repeats))
    rows.append(f"| local executor (files) | {seconds:.3f} |")
    ray.shutdown()
    cluster.shutdown()
    return [f"| make -> scale -> total, two {mb} MiB arrays | s (median of {repeats}) |",
            "|---|---:|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--artifacts", type=int, metavar="MB", default=0)
    args = parser.parse_args()
    if args.artifacts:
        rows = artifacts_bench(args.artifacts, args.repeats)
        print("\n".join([*rows, "", f"load average at the end: {os.getloadavg()[0]:.1f} on "
                          f"{os.cpu_count()} cores"]))
        return
    import ray

    from maml.runtime.executors.ray import RayBackend

    workdir = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    os.chdir(workdir)
    os.environ.setdefault("MAML_GRAPH", str(workdir / "graph"))
    (workdir / "ray").mkdir()
    os.environ["RAY_TMPDIR"] = str(workdir)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(workdir / "ray"))
    backend = RayBackend(slots={"cpu": args.cpus})
    on_ray, local = maml_on(backend, workdir), maml_on(None, workdir)
    plain = plain_ray(ray)
    rows = ["| workload | plain Ray (s) | maml on Ray (s) | ratio | without the graph (s) "
            "| ratio |", "|---|---:|---:|---:|---:|---:|"]
    for shape, n in WORKLOADS:
        ray_s = statistics.median(walls(lambda: plain(shape, n), args.repeats))
        text = maml_workload(shape, n)
        maml_s = statistics.median(walls(lambda: on_ray(text, f"{shape}{n}"), args.repeats))
        bare_s = statistics.median(walls(lambda: on_ray(text, f"{shape}{n}", graph=False),
                                         args.repeats))
        rows.append(f"| {shape}-{n} | {ray_s:.3f} | {maml_s:.3f} | {maml_s / ray_s:.2f}x "
                    f"| {bare_s:.3f} | {bare_s / ray_s:.2f}x |")
    rec_ray = statistics.median(recovery(on_ray, workdir, args.repeats,
                                         settle=backend.wait_for_spare))
    rec_local = statistics.median(recovery(local, workdir, args.repeats, workers=1))
    rows += ["", "| recovery of a worker killed 0.5 s into its attempt | ms |", "|---|---:|",
             f"| maml on Ray (warm spare actor) | {rec_ray * 1000:.0f} |",
             f"| maml local (warm spare process) | {rec_local * 1000:.0f} |",
             "", f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"]
    backend.close()
    ray.shutdown()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
