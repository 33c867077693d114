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

Recovery latency: a step's first attempt fails on purpose — an OOM raised in a live worker,
or the worker SIGKILLs itself 0.5 s into the attempt (a step that has been running), or at
once (maml's warm spare worker may still be booting then) — and the step writes
`time.monotonic()` (one clock for all processes on Linux) when it fails and when the next
attempt starts. Backoff is 0; maml runs these with workers=1, so a killed worker must be
replaced by a new process before the retry can start.

Ray and Prefect must only run in a network namespace with loopback alone (the command above).

`--scaling` instead measures the scheduler's growth against ProcessPoolExecutor (the floor)
at --sizes steps, chain and fan-out, with peak RSS of parent and workers; chain-50 in a warm
`maml.Session` against warm Ray; and a cold one-step `maml run` (bench/scaling.py).
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
#: OOM raised in a live worker; worker SIGKILLed 0.5 s into its attempt; and at its start
RECOVERY_CASES = ("oom", "worker_lost", "worker_lost_at_start")
WORK_BEFORE_KILL = 0.5
HERE = Path(__file__).resolve().parent


def stamp_and_maybe_fail(path: str, fault: str) -> int:
    """Shared by the peers' recovery step: stamp, and fail the first attempt."""
    import signal

    first = not os.path.exists(path)
    if first and fault == "worker_lost":
        time.sleep(WORK_BEFORE_KILL)       # a step that has been running a while
    with open(path, "a") as out:
        out.write(f"{time.monotonic()}\n")
    if first and fault == "oom":
        raise MemoryError("benchmark: injected OOM")
    if first and fault in ("worker_lost", "worker_lost_at_start"):
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
    "    first, fault = ctx.attempt == 1, params['fault']\n"
    "    if first and fault == 'worker_lost':\n"
    "        time.sleep(params['work'])\n"
    "    with open(params['stamps'], 'a') as out:\n"
    "        out.write(f'{time.monotonic()}\\n')\n"
    "    if first and fault == 'oom':\n"
    "        from maml.errors import OutOfMemory\n"
    "        raise OutOfMemory('benchmark: injected OOM')\n"
    "    if first and fault in ('worker_lost', 'worker_lost_at_start'):\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return ctx.attempt\n"
)


def maml_document(steps: list[dict[str, Any]], block: str, policy: dict[str, Any]) -> str:
    import yaml

    front = {"maml_version": "1.0", "id": "bench-overhead", "type": "pipeline",
             "permissions": {"execute": True}, "policy": policy, "pipeline": steps}
    return (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n## Intent\n\n"
            f"Overhead benchmark.\n\n## Code_Blocks\n\n```python {{id=step}}\n{block}```\n")


def maml_workload(shape: str, n: int) -> str:
    steps = [{"id": f"s{i}", "kind": "python", "block": "step", "device": ["cpu"],
              **({"needs": [f"s{i - 1}"]} if shape == "chain" and i else {})}
             for i in range(n)]
    return maml_document(steps, MAML_NOOP, {"retries": 0})


def maml_runner(workdir: Path) -> tuple[Callable[[str, int], None], Callable[[str], float]]:
    from maml.api import run as maml_run

    def run_doc(text: str, name: str, **options: Any) -> Any:
        path = workdir / f"{name}.maml.md"
        if not path.exists():
            path.write_text(text)
        result = maml_run(str(path), **options)
        if result.status != "succeeded":
            raise RuntimeError(f"maml run of {name} ended {result.status}: {result.problems}")
        return result

    def pipeline(shape: str, n: int) -> None:
        run_doc(maml_workload(shape, n), f"{shape}{n}")

    def recover(fault: str) -> float:
        # workers=1: the killed worker is the only one, so the next attempt needs a new
        # process (maml's pool hands over its warm spare and starts another spare)
        stamps = tempfile.mktemp(dir=workdir)
        doc = maml_document([{"id": "rec", "kind": "python", "block": "step", "device": ["cpu"],
                              "params": {"stamps": stamps, "fault": fault,
                                         "work": WORK_BEFORE_KILL}}], MAML_RECOVER,
                            {"retries": 1, "backoff": {"initial": 0, "jitter": 0}})
        result = run_doc(doc, f"recover-{fault}-{Path(stamps).name}", workers=1)
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
        if fault != "oom":   # tasks run in the flow's own process: a kill ends the flow
            raise NotImplementedError("no worker to replace")
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
            out["walls"][f"{shape}-{n}"] = _measured(
                lambda: _walls(pipeline, shape, n, repeats if n < 500 else repeats_500,
                               warm_up=(n, shape) != (50, "chain")))
    for fault in RECOVERY_CASES:
        out["recovery"][fault] = _measured(lambda: [recover(fault) for _ in range(repeats)])
    out["load"] = os.getloadavg()[0]   # 1-min load at the end; this process counts ~1
    return out


def _walls(pipeline: Callable[[str, int], None], shape: str, n: int, repeats: int,
           warm_up: bool) -> list[float]:
    if warm_up:
        pipeline(shape, n)                      # not timed
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipeline(shape, n)
        walls.append(time.perf_counter() - t0)
    return walls


def _measured(measure: Callable[[], list[float]]) -> list[float] | str:
    """The timings, or why there are none: one failing case must not lose the others."""
    try:
        return measure()
    except NotImplementedError as why:
        return str(why)
    except Exception as exc:  # noqa: BLE001 - a peer's server error is a result to report
        print(f"measurement failed: {exc!r}", file=sys.stderr)
        return f"failed: {type(exc).__name__}"


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
    rows = ["| system | workload | median wall (s) | best (s) | steps/s | wall / maml's |",
            "|---|---|---:|---:|---:|---:|"]
    maml_walls = results.get("maml", {}).get("walls", {})
    for n in SIZES:
        for shape in SHAPES:
            key = f"{shape}-{n}"
            base = (statistics.median(maml_walls[key])
                    if isinstance(maml_walls.get(key), list) else None)
            for system, result in results.items():
                walls = result.get("walls", {}).get(key)
                if not isinstance(walls, list):
                    rows.append(f"| {system} | {key} | {walls or 'failed'} | | | |")
                    continue
                wall = statistics.median(walls)
                ratio = f"{wall / base:.1f}x" if base else "n/a"
                rows.append(f"| {system} | {key} | {wall:.3f} | {min(walls):.3f} | "
                            f"{n / wall:,.0f} | {ratio} |")
    rows += ["", "| system | cold: import + start + 50-step chain (s) | recovery: OOM in a live "
             "worker (ms) | worker killed 0.5 s into the attempt, replaced (ms) | worker killed "
             "at attempt start (ms) | load avg |", "|---|---:|---:|---:|---:|---:|"]
    for system, result in results.items():
        if "error" in result:
            rows.append(f"| {system} | failed: {result['error'].splitlines()[-1][:120]} | | | | |")
            continue
        cells = [f"{result['cold_chain50_s']:.2f}"]
        for fault in RECOVERY_CASES:
            value = result["recovery"][fault]
            cells.append(f"{statistics.median(value) * 1000:.0f}" if isinstance(value, list)
                         else f"n/a ({value})")
        cells.append(f"{result['load']:.1f}")
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
    parser.add_argument("--scaling", action="store_true",
                        help="scaling rows against the process floor (bench/scaling.py)")
    parser.add_argument("--sizes", default="10,100,1000,10000",
                        help="--scaling: step counts, comma-separated")
    args = parser.parse_args()
    if args.scaling:
        from scaling import report

        print(report([int(n) for n in args.sizes.split(",")], args.repeats))
        return
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
