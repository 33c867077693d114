"""Runtime overhead and recovery latency: maml against Ray and Prefect, side by side.

    unshare -n bash -c 'ip link set lo up && RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
        DO_NOT_TRACK=1 .venv/bin/python bench/overhead.py'

Workloads: 50 and 500 no-op Python steps, as a chain (each step needs the one before) and
as a wide fan-out (no edges). Each system runs in its own child process, one after another,
so they never compete for the CPU:

- maml: `maml.api.run()` on a generated `.maml.md` document; every run is end to end
  (plan, worker start, steps, the signed error graph), nothing is kept between runs.
- Ray: `ray.init(num_cpus=2, include_dashboard=False)` once, then `@ray.remote` no-op tasks
  chained through ObjectRefs / fanned out.
- Prefect 3: `@flow` with `@task` no-ops (direct calls for the chain, `.submit()` for the
  fan-out) against the ephemeral local server, telemetry off.

"warm" times exclude the peers' one-time start (ray.init, Prefect's server) — the view
most favourable to the peers; "cold" is one fresh process: import + start + one 50-step
chain, what `maml run doc.maml.md` costs a user. Medians of --repeats runs after one
warm-up run.

Recovery latency: a step's first attempt fails on purpose (an OOM raised in a live worker,
or the worker SIGKILLs itself); the step writes `time.monotonic()` (one clock for all
processes on Linux) when it raises and when the next attempt starts. Backoff is 0.

Ray and Prefect must only run in a network namespace with loopback alone (the command above).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SIZES = (50, 500)
SHAPES = ("chain", "fanout")
SYSTEMS = ("maml", "ray", "prefect")
HERE = Path(__file__).resolve().parent


def stamp_and_maybe_fail(path: str, fault: str) -> int:
    """Shared by every system's recovery step: stamp, and fail the first attempt."""
    import signal

    with open(path, "a") as out:
        first = out.tell() == 0
        out.write(f"{time.monotonic()}\n")
    if first and fault == "oom":
        raise MemoryError("benchmark: injected OOM")
    if first and fault == "worker_lost":
        os.kill(os.getpid(), signal.SIGKILL)
    return 1


def recovery_latency(path: str) -> float:
    stamps = [float(line) for line in Path(path).read_text().split()]
    if len(stamps) < 2:
        raise RuntimeError(f"no second attempt recorded in {path}")
    return stamps[1] - stamps[0]


# ---------------------------------------------------------------- maml

MAML_NOOP = "def run(inputs, params, ctx):\n    return 1\n"
MAML_RECOVER = (
    "import os, signal, time\n\n"
    "def run(inputs, params, ctx):\n"
    "    with open(params['stamps'], 'a') as out:\n"
    "        out.write(f'{time.monotonic()}\\n')\n"
    "    if ctx.attempt == 1 and params['fault'] == 'oom':\n"
    "        from maml.errors import OutOfMemory\n"
    "        raise OutOfMemory('benchmark: injected OOM')\n"
    "    if ctx.attempt == 1 and params['fault'] == 'worker_lost':\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return ctx.attempt\n"
)


def maml_document(steps: list[dict[str, Any]], block: str, policy: dict[str, Any]) -> str:
    import yaml

    front = {"maml_version": "1.0", "id": "bench-overhead", "type": "pipeline",
             "policy": policy, "pipeline": steps}
    return (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n## Intent\n\n"
            f"Overhead benchmark.\n\n## Code_Blocks\n\n```python {{id=step}}\n{block}```\n")


def maml_workload(shape: str, n: int) -> str:
    steps = [{"id": f"s{i}", "kind": "python", "block": "step", "device": ["cpu"],
              **({"needs": [f"s{i - 1}"]} if shape == "chain" and i else {})}
             for i in range(n)]
    return maml_document(steps, MAML_NOOP, {"retries": 0})


def maml_runner(workdir: Path) -> tuple[Callable[[str, int], None], Callable[[str], float]]:
    from maml.api import run as maml_run

    def run_doc(text: str, name: str) -> Any:
        path = workdir / f"{name}.maml.md"
        if not path.exists():
            path.write_text(text)
        result = maml_run(str(path))
        if result.status != "succeeded":
            raise RuntimeError(f"maml run of {name} ended {result.status}: {result.problems}")
        return result

    def pipeline(shape: str, n: int) -> None:
        run_doc(maml_workload(shape, n), f"{shape}{n}")

    def recover(fault: str) -> float:
        stamps = tempfile.mktemp(dir=workdir)
        doc = maml_document([{"id": "rec", "kind": "python", "block": "step", "device": ["cpu"],
                              "params": {"stamps": stamps, "fault": fault}}], MAML_RECOVER,
                            {"retries": 1, "backoff": {"initial": 0, "jitter": 0}})
        result = run_doc(doc, f"recover-{fault}-{Path(stamps).name}")
        assert result.steps["rec"].attempts == 2, result.steps["rec"]
        return recovery_latency(stamps)

    return pipeline, recover


# ---------------------------------------------------------------- Ray

def ray_runner(workdir: Path) -> tuple[Callable[[str, int], None], Callable[[str], float]]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)

    @ray.remote
    def noop(_: Any = None) -> int:
        return 1

    flaky = ray.remote(max_retries=1, retry_exceptions=True)(stamp_and_maybe_fail)

    def pipeline(shape: str, n: int) -> None:
        if shape == "chain":
            ref = None
            for _ in range(n):
                ref = noop.remote(ref)
            ray.get(ref)
        else:
            ray.get([noop.remote(i) for i in range(n)])

    def recover(fault: str) -> float:
        stamps = tempfile.mktemp(dir=workdir)
        ray.get(flaky.remote(stamps, fault))
        return recovery_latency(stamps)

    return pipeline, recover


# ---------------------------------------------------------------- Prefect

def prefect_runner(workdir: Path) -> tuple[Callable[[str, int], None], Callable[[str], float]]:
    os.environ.update(PREFECT_HOME=str(workdir / "prefect"), PREFECT_LOGGING_LEVEL="ERROR",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false",
                      PREFECT_SERVER_EPHEMERAL_ENABLED="true",
                      PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300")
    os.environ.pop("PREFECT_API_URL", None)
    from prefect import flow, task
    from prefect.cache_policies import NONE

    @task(cache_policy=NONE)
    def noop(_: Any = None) -> int:
        return 1

    flaky = task(retries=1, retry_delay_seconds=0, cache_policy=NONE)(stamp_and_maybe_fail)

    @flow
    def chain(n: int) -> None:
        value = None
        for _ in range(n):
            value = noop(value)

    @flow
    def fanout(n: int) -> None:
        futures = [noop.submit(i) for i in range(n)]
        [future.result() for future in futures]

    @flow
    def recovering(stamps: str, fault: str) -> None:
        flaky(stamps, fault)

    def pipeline(shape: str, n: int) -> None:
        (chain if shape == "chain" else fanout)(n)

    def recover(fault: str) -> float:
        if fault == "worker_lost":   # tasks run in the flow's own process: a kill ends the flow
            raise NotImplementedError("Prefect has no worker to replace")
        stamps = tempfile.mktemp(dir=workdir)
        recovering(stamps, fault)
        return recovery_latency(stamps)

    return pipeline, recover


RUNNERS = {"maml": maml_runner, "ray": ray_runner, "prefect": prefect_runner}


def measure_system(system: str, repeats: int, repeats_500: int) -> dict[str, Any]:
    """Runs in the child process: every workload and recovery case of one system."""
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{system}-"))
    os.chdir(workdir)   # maml writes .maml/ here, not into the checkout
    os.environ.setdefault("MAML_GRAPH", str(workdir / "graph"))
    pipeline, recover = RUNNERS[system](workdir)
    pipeline("chain", 50)
    out: dict[str, Any] = {"cold_chain50_s": time.perf_counter() - started, "walls": {},
                           "recovery": {}}
    for n in SIZES:
        for shape in SHAPES:
            if n != 50 or shape != "chain":
                pipeline(shape, n)                      # warm-up, not timed
            walls = []
            for _ in range(repeats if n < 500 else repeats_500):
                t0 = time.perf_counter()
                pipeline(shape, n)
                walls.append(time.perf_counter() - t0)
            out["walls"][f"{shape}-{n}"] = walls
    for fault in ("oom", "worker_lost"):
        try:
            out["recovery"][fault] = [recover(fault) for _ in range(repeats)]
        except NotImplementedError as why:
            out["recovery"][fault] = str(why)
    return out


def run_child(system: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", system, "--repeats", str(args.repeats),
               "--repeats-500", str(args.repeats_500)]
    with tempfile.TemporaryFile("w+") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True,
                              timeout=args.child_timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            log.seek(0)
            tail = log.read()[-3000:]
            return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| system | workload | median wall (s) | steps/s | wall / maml's |",
            "|---|---|---:|---:|---:|"]
    maml_walls = results.get("maml", {}).get("walls", {})
    for n in SIZES:
        for shape in SHAPES:
            key = f"{shape}-{n}"
            base = statistics.median(maml_walls[key]) if key in maml_walls else None
            for system, result in results.items():
                walls = result.get("walls", {}).get(key)
                if not walls:
                    rows.append(f"| {system} | {key} | failed | | |")
                    continue
                wall = statistics.median(walls)
                ratio = f"{wall / base:.1f}x" if base else "n/a"
                rows.append(f"| {system} | {key} | {wall:.3f} | {n / wall:,.0f} | {ratio} |")
    rows += ["", "| system | cold: import + start + 50-step chain (s) | recovery, live worker "
             "(ms, median) | recovery, worker replaced (ms, median) |", "|---|---:|---:|---:|"]
    for system, result in results.items():
        if "error" in result:
            rows.append(f"| {system} | failed: {result['error'].splitlines()[-1][:120]} | | |")
            continue
        cells = [f"{result['cold_chain50_s']:.2f}"]
        for fault in ("oom", "worker_lost"):
            value = result["recovery"][fault]
            cells.append(f"{statistics.median(value) * 1000:.0f}" if isinstance(value, list)
                         else "n/a (" + value + ")")
        rows.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repeats-500", type=int, default=3)
    parser.add_argument("--child-timeout", type=int, default=1800)
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="also print the raw timings")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_system(args.child, args.repeats, args.repeats_500)))
        return
    results = {}
    for system in args.systems.split(","):
        print(f"running {system} ...", file=sys.stderr, flush=True)
        results[system] = run_child(system, args)
    print(table(results))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
