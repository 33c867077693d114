"""Scheduler scaling against the process floor, warm maml against warm Ray, cold `maml run`.

    unshare -n bash -c 'ip link set lo up && RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 \
        .venv/bin/python bench/overhead.py --scaling [--sizes 10,100,1000] [--repeats 3]'

Rows (issue 12), each measured in a fresh child process so that peak RSS is that row's:

- floor: `concurrent.futures.ProcessPoolExecutor(2)`, already started, running no-op tasks:
  a chain (submit, wait, submit the next) and a fan-out (submit all, wait all);
- maml: `maml.run()` of a generated document of no-op python steps (chain / fan-out) in a
  warm `maml.Session(workers=2)`, error graph off (the run store is on);
- peak RSS of the measuring process (ru_maxrss) and of its largest worker (VmHWM of each
  live child process, read before the pool or session closes: RUSAGE_CHILDREN would report
  the parent's size, because the kernel keeps a fork's pre-exec high-water mark);
- chain-50 warm: the second `maml.run` in one Session, against Ray's second chain-50 after
  `ray.init` (both in this one script, one after the other);
- cold: `python -m maml run one-step.maml.md --no-graph` as a user types it.

Medians of --repeats (after one untimed warm-up). The machine is shared: read ratios, and
run it when the load average is low.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overhead import maml_workload  # noqa: E402

ONE_STEP = ("---\nmaml_version: \"1.0\"\npermissions: {execute: true}\n---\n# One\n\n"
            "## Code_Blocks\n\n```python {id=one}\ndef run(inputs, params, ctx):\n"
            "    return 1\n```\n")


def _noop(value: Any = None) -> int:
    return 1


def _timed(work: Callable[[], Any], repeats: int) -> list[float]:
    work()                                   # warm-up, not timed
    walls = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        walls.append(time.perf_counter() - started)
    return walls


def _peaks() -> dict[str, float]:
    """Peak RSS in MiB of this process and of its largest live child (a worker), from each
    child's own VmHWM: call it while the workers are still running."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = [_high_water_mib(child.pid) for child in psutil.Process().children(recursive=True)]
    return {"parent_mib": round(own, 1), "worker_mib": round(max(workers, default=0.0), 1)}


def _high_water_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:             # it ended meanwhile
        pass
    return 0.0


def floor_row(shape: str, n: int, repeats: int) -> dict[str, Any]:
    with ProcessPoolExecutor(2) as pool:
        def work() -> None:
            if shape == "chain":
                value = None
                for _ in range(n):
                    value = pool.submit(_noop, value).result()
            else:
                [f.result() for f in [pool.submit(_noop, i) for i in range(n)]]
        walls = _timed(work, repeats)
        peaks = _peaks()
    return {"walls": walls, **peaks}


def maml_row(shape: str, n: int, repeats: int) -> dict[str, Any]:
    import maml

    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    path = workdir / f"{shape}{n}.maml.md"
    path.write_text(maml_workload(shape, n))
    doc = maml.load(path)
    with maml.Session(workers=2) as session:
        def work() -> None:
            result = session.run(doc, graph=False, state_dir=str(workdir / ".maml"))
            if result.status != "succeeded":
                raise RuntimeError(f"{shape}-{n}: {result.status}: {result.problems[:3]}")
        walls = _timed(work, repeats)
        peaks = _peaks()
    return {"walls": walls, **peaks}


def warm_chain50(repeats: int) -> dict[str, Any]:
    """The second chain-50 in one process: maml in a Session, Ray after ray.init."""
    out: dict[str, Any] = {"maml": maml_row("chain", 50, repeats)["walls"]}
    try:
        import ray
    except ImportError:
        out["ray"] = "ray not installed"
        return out
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    noop = ray.remote(_noop)

    def chain() -> None:
        ref = None
        for _ in range(50):
            ref = noop.remote(ref)
        ray.get(ref)
    out["ray"] = _timed(chain, repeats)
    ray.shutdown()
    return out


def cold_one_step(repeats: int) -> list[float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    path = workdir / "one.maml.md"
    path.write_text(ONE_STEP)
    command = [sys.executable, "-m", "maml", "run", str(path), "--no-graph", "--quiet"]

    def work() -> None:
        subprocess.run(command, cwd=workdir, check=True, capture_output=True)
    return _timed(work, repeats)


def child(kind: str, shape: str, n: int, repeats: int) -> dict[str, Any]:
    if kind == "floor":
        return floor_row(shape, n, repeats)
    if kind == "maml":
        return maml_row(shape, n, repeats)
    if kind == "warm":
        return warm_chain50(repeats)
    return {"walls": cold_one_step(repeats)}


def in_child(kind: str, shape: str, n: int, repeats: int) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, kind, shape, str(n), str(repeats)],
                          capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return json.loads(lines[-1])


def report(sizes: list[int], repeats: int) -> str:
    rows = ["| workload | floor median (s) | maml median (s) | maml / floor | maml ms/step | "
            "parent peak MiB (floor / maml) | worker peak MiB (floor / maml) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for shape in ("chain", "fanout"):
        for n in sizes:
            floor, ours = in_child("floor", shape, n, repeats), in_child("maml", shape, n, repeats)
            if "error" in floor or "error" in ours:
                rows.append(f"| {shape}-{n} | {floor.get('error', '')} | {ours.get('error', '')} "
                            "| | | | |")
                continue
            f, m = statistics.median(floor["walls"]), statistics.median(ours["walls"])
            rows.append(f"| {shape}-{n} | {f:.3f} | {m:.3f} | {m / f:.1f}x | {m / n * 1000:.2f} | "
                        f"{floor['parent_mib']:.0f} / {ours['parent_mib']:.0f} | "
                        f"{floor['worker_mib']:.0f} / {ours['worker_mib']:.0f} |")
    warm = in_child("warm", "chain", 50, repeats)
    cold = in_child("cold", "chain", 1, repeats)
    maml_warm = statistics.median(warm["maml"]) if isinstance(warm.get("maml"), list) else None
    ray_warm = statistics.median(warm["ray"]) if isinstance(warm.get("ray"), list) else None
    rows += ["", f"chain-50 warm: maml {maml_warm:.3f} s, Ray {ray_warm:.3f} s, maml / Ray "
             f"{maml_warm / ray_warm:.2f}" if maml_warm and ray_warm else f"chain-50 warm: {warm}",
             f"cold `maml run` of a one-step document: median {statistics.median(cold['walls']):.3f} s"
             if "walls" in cold else f"cold: {cold}",
             f"load average at the end: {os.getloadavg()[0]:.1f}"]
    return "\n".join(rows)


if __name__ == "__main__":
    kind, shape, n, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(child(kind, shape, n, repeats)))
