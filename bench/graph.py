"""Benchmark the signed error graph against the naive peer (one Ed25519 signature per node).

    .venv/bin/python bench/graph.py [--nodes 100000] [--big 1000000] [--repeat 3] [--dir DIR]

Prints one markdown table, medians of --repeat runs:
* durable signed nodes/s through the store (group commits of 10k nodes: one write, one fsync,
  one signature each) and through the Recorder's event hooks;
* the naive peer: sign every node with Ed25519 (and verify every node), nodes/s;
* open + full verification of 100k and 1M-node graphs, patterns() on the 1M graph,
  with each phase's peak RSS (measured in a fresh subprocess).
Targets (DESIGN §5 / issue 4): ≥100k nodes/s appended, 1M nodes open+verify < 15 s,
patterns() on 1M < 2 s, a few GB of memory at most.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUP = 10_000


def synthetic_run(recorder, n: int) -> None:
    """One run of five steps; every third step fails once and recovers (recorder events)."""
    from maml.runtime.events import DeviceRef, ErrorInfo, StepInfo

    gpu = DeviceRef("cuda:%d" % (n % 4), "cuda", n % 4, "NVIDIA H100", "GPU-%d" % (n % 4))
    steps = [StepInfo(f"s{i}", ("llm", "quantum", "video", "python", "shell")[i]) for i in range(5)]
    run_id = f"run-{n:07d}"
    recorder.on_run_started(run_id=run_id, document="bench.maml.md", steps=steps,
                            started_at=float(n))
    for i, step in enumerate(steps):
        recorder.on_step_started(run_id=run_id, step=step)
        recorder.on_attempt_started(run_id=run_id, step=step, attempt=1, device=gpu,
                                    worker_id=f"w{n % 8}", params={"batch_size": 64})
        attempts = 1
        if (n + i) % 3 == 0:
            error = ErrorInfo(("oom", "cuda_error", "timeout")[(n + i) % 9 // 3],
                              "torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate "
                              "2.00 GiB", injected=True, worker_id=f"w{n % 8}", device=gpu)
            recorder.on_attempt_failed(run_id=run_id, step=step, attempt=1, error=error,
                                       duration=0.5)
            action = ("halve_batch", "next_device", "restart_worker")[(n + i) % 9 // 3]
            recorder.on_recovery_applied(run_id=run_id, step=step, attempt=1, error=error,
                                         action=action, changes={"batch_size": 32},
                                         next_attempt=2, delay=0.0)
            recorder.on_attempt_started(run_id=run_id, step=step, attempt=2, device=gpu,
                                        worker_id=f"w{n % 8}", params={"batch_size": 32})
            attempts = 2
        recorder.on_attempt_succeeded(run_id=run_id, step=step, attempt=attempts, device=gpu,
                                      duration=0.25)
        recorder.on_step_finished(run_id=run_id, step=step, status="succeeded",
                                  attempts=attempts, output_digest="ab" * 32)
    recorder.on_run_finished(run_id=run_id, status="succeeded", errors=1, recoveries=1,
                             duration=2.0)


class _GroupCommits:
    """Stands in for the writer's commit() so commits land every GROUP nodes rather than at
    every (microsecond-long, synthetic) step boundary."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def commit(self) -> int:
        return self.writer.commit() if self.writer.pending >= GROUP else 0

    def close(self) -> None:
        self.writer.close()


def record(path: Path, nodes: int, key, *, group: bool = True) -> tuple[int, float]:
    """Record synthetic runs until `nodes` nodes are committed; (nodes, seconds)."""
    from maml.graph.record import Recorder

    recorder = Recorder(path, key=key, commit_every=GROUP)
    if group:
        recorder.writer = _GroupCommits(recorder.writer)
    start, n = time.perf_counter(), 0
    while recorder.writer.committed + recorder.writer.pending < nodes:
        synthetic_run(recorder, n)
        n += 1
    recorder.close()
    return recorder.writer.committed, time.perf_counter() - start


def store_append(path: Path, nodes: int, key, finite: bool = True) -> float:
    """Nodes/s straight into the store: canonical JSON + sha256 per node, 10k-node commits.
    `finite`: the orjson encoder (what the Recorder uses), else the stdlib one."""
    from maml.graph.store import LogWriter

    writer = LogWriter(path, key)
    start = time.perf_counter()
    for i in range(nodes):
        writer.add({"type": "error", "links": [["raised", "%064x" % i]], "run": "run-1",
                    "step": "train", "kind": "llm", "attempt": 1, "error_class": "oom",
                    "exception_type": "torch.OutOfMemoryError", "message": "CUDA out of memory",
                    "injected": False, "worker": "w1", "device_class": "cuda", "t": 1e9 + i},
                   finite=finite)
        if writer.pending >= GROUP:
            writer.commit()
    writer.close()
    return nodes / (time.perf_counter() - start)


def naive_sign_verify(nodes: int, key) -> tuple[float, float]:
    """The peer: one Ed25519 signature per node (and one verification per node)."""
    from maml.graph import canonical

    bodies = [canonical.dumps({"type": "error", "run": "run-1", "n": i}) for i in range(nodes)]
    start = time.perf_counter()
    signatures = [key.private.sign(body) for body in bodies]
    sign_rate = nodes / (time.perf_counter() - start)
    public = key.public
    start = time.perf_counter()
    for body, signature in zip(bodies, signatures):
        public.verify(signature, body)
    return sign_rate, nodes / (time.perf_counter() - start)


def phase_in_subprocess(phase: str, path: Path) -> dict:
    """Run one measured phase in a fresh interpreter so its peak RSS is its own."""
    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--dir", str(path)],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout)


def run_phase(phase: str, path: Path) -> None:
    import maml.graph

    start = time.perf_counter()
    graph = maml.graph.open(path)
    opened = time.perf_counter() - start
    result = {"open": opened, "nodes": len(graph), "heads": graph.report.heads}
    if phase == "patterns":
        start = time.perf_counter()
        found = graph.patterns(min_count=3)
        result["patterns"] = time.perf_counter() - start
        result["found"] = len(found)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--phase", choices=["open", "patterns"], default=None)
    args = parser.parse_args()
    if args.phase:
        return run_phase(args.phase, args.dir)
    work = Path(args.dir or tempfile.mkdtemp(prefix="maml-bench-graph-"))
    os.environ.setdefault("MAML_CONFIG_DIR", str(work / "config"))
    from maml.graph.keys import load_or_create_key

    key = load_or_create_key()
    rows = []
    store_rates = [store_append(work / f"store{i}", args.nodes, key) for i in range(args.repeat)]
    stdlib_rates = [store_append(work / f"stdlib{i}", args.nodes, key, finite=False)
                    for i in range(args.repeat)]
    recorded = [record(work / f"rec{i}", args.nodes, key) for i in range(args.repeat)]
    rec_rates = [n / s for n, s in recorded]
    steps = record(work / "steps", args.nodes // 20, key, group=False)
    naive = [naive_sign_verify(min(args.nodes, 20_000), key) for _ in range(args.repeat)]
    med = statistics.median
    rows += [
        ("append: store, 10k-node group commits (fsync + 1 signature each)",
         f"{med(store_rates):,.0f} nodes/s", "≥ 100,000 nodes/s"),
        ("append: same, stdlib json encoder (no orjson)", f"{med(stdlib_rates):,.0f} nodes/s",
         ""),
        ("append: Recorder events → nodes, 10k-node group commits",
         f"{med(rec_rates):,.0f} nodes/s", "≥ 100,000 nodes/s"),
        ("append: Recorder, one commit per step (synthetic µs-long steps)",
         f"{steps[0] / steps[1]:,.0f} nodes/s", "(fsync-bound; real steps take seconds)"),
        ("naive peer: Ed25519 sign every node", f"{med(n[0] for n in naive):,.0f} nodes/s", ""),
        ("naive peer: Ed25519 verify every node", f"{med(n[1] for n in naive):,.0f} nodes/s", ""),
    ]
    opens = [phase_in_subprocess("open", work / "rec0") for _ in range(args.repeat)]
    rows.append((f"open + verify {opens[0]['nodes']:,} nodes ({opens[0]['heads']} heads)",
                 f"{med(o['open'] for o in opens):.2f} s, peak {max(o['maxrss_mb'] for o in opens):,.0f} MB", ""))
    big_n, big_s = record(work / "big", args.big, key)
    bigs = [phase_in_subprocess("patterns", work / "big") for _ in range(max(1, args.repeat - 1))]
    rows += [
        (f"record {big_n:,} nodes (group commits)", f"{big_s:.1f} s ({big_n / big_s:,.0f} nodes/s)",
         ""),
        (f"open + verify {bigs[0]['nodes']:,} nodes ({bigs[0]['heads']} heads)",
         f"{med(b['open'] for b in bigs):.2f} s", "< 15 s"),
        (f"patterns() on {bigs[0]['nodes']:,} nodes ({bigs[0]['found']} patterns)",
         f"{med(b['patterns'] for b in bigs):.2f} s", "< 2 s"),
        ("peak RSS, open + patterns on 1M", f"{max(b['maxrss_mb'] for b in bigs):,.0f} MB",
         "a few GB"),
        ("log size, 1M nodes", f"{(work / 'big' / 'log.jsonl').stat().st_size / 1e6:,.0f} MB", ""),
    ]
    print(f"\nmaml error graph, {os.cpu_count()} cores, medians of {args.repeat}\n")
    print("| measurement | result | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
