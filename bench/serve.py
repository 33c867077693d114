"""`maml serve` under load: submission latency, tiny-run throughput, a warm second llm run.

    unshare -n bash -c 'ip link set lo up && .venv/bin/python bench/serve.py'
    unshare -n bash -c 'ip link set lo up && .venv/bin/python bench/serve.py --runs 200 --clients 20'

Starts a real server (`python -m maml serve` on a loopback port, its own state dir) and
measures, with the clock of this machine (server events carry time.time()):

- latency: POST /api/v1/runs of a one-step document -> that run's first `attempt_started`
  event (the attempt handed to an already running worker), median and p90 over
  --latency-runs runs sent one at a time to an idle server; the POST itself includes
  parsing, validating and the fsync'd acceptance of the run;
- throughput: --runs one-step runs from --clients concurrent clients, wall time from the
  first POST to the last run ended, runs/s;
- llm: documents/llm/embed.maml.md run by the CLI (`maml run`, cold: a fresh process) and
  twice through a server with one lane and one worker (`--concurrency 1 --workers 1`), so
  the second run meets the worker that loaded the model in the first.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
TINY = """---
maml_version: "1.0"
id: urn:maml:bench:tiny
permissions: {execute: true}
pipeline:
  - {id: tiny, block: tiny}
---
## Code_Blocks
```python {id=tiny}
def run(inputs, params, ctx):
    return params.get("n", 0)
```
"""


def start_server(tmp: Path, *args: str) -> tuple[subprocess.Popen, httpx.Client]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAML_CONFIG_DIR": str(tmp / "cfg"),
           "MAML_SERVE_TOKEN": TOKEN, "MAML_GRAPH": str(tmp / "graph")}
    process = subprocess.Popen([sys.executable, "-m", "maml", "serve", "--port", str(port),
                                "--state-dir", str(tmp / "state"), "--root", str(ROOT), *args],
                               cwd=tmp, env=env, stderr=open(tmp / "server.log", "w"))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    for _ in range(600):
        try:
            if client.get("/api/v1/health").status_code == 200:
                return process, client
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start: " + (tmp / "server.log").read_text())


def wait(client: httpx.Client, run_id: str) -> dict:
    while (run := client.get(f"/api/v1/runs/{run_id}").json())["status"] in ("queued", "running"):
        time.sleep(0.02)
    return run


def first_attempt_at(client: httpx.Client, run_id: str) -> float:
    with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event["type"] == "attempt_started":
                    return event["t"]
    raise RuntimeError(f"run {run_id} never started an attempt")


def latency(client: httpx.Client, runs: int) -> dict:
    """Submission -> first attempt; and the POST's own round trip (parse, validate, plan,
    the synced acceptance), the part of it the caller waits for."""
    samples, posts = [], []
    for n in range(runs):
        sent = time.time()
        run_id = client.post("/api/v1/runs", json={"document": TINY, "params": {"n": n}}).json()["run_id"]
        posts.append((time.time() - sent) * 1000)
        samples.append((first_attempt_at(client, run_id) - sent) * 1000)
        wait(client, run_id)
    samples.sort()
    return {"runs": runs, "median_ms": round(statistics.median(samples), 1),
            "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 1),
            "post_median_ms": round(statistics.median(posts), 1)}


def throughput(client: httpx.Client, runs: int, clients: int) -> dict:
    ids: list[str] = []
    lock = threading.Lock()

    def submit(numbers: range) -> None:
        with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=120) as own:
            for n in numbers:
                run_id = own.post("/api/v1/runs", json={"document": TINY, "params": {"n": n}}).json()["run_id"]
                with lock:
                    ids.append(run_id)

    started = time.monotonic()
    threads = [threading.Thread(target=submit, args=(range(i, runs, clients),)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results = [wait(client, run_id) for run_id in ids]
    seconds = time.monotonic() - started
    wrong = [r["run_id"] for r in results if r["status"] != "succeeded"
             or r["steps"]["tiny"]["output"] is None]
    return {"runs": runs, "clients": clients, "seconds": round(seconds, 2),
            "runs_per_s": round(runs / seconds, 2), "not_succeeded": len(wrong)}


def llm(client: httpx.Client, tmp: Path) -> dict:
    doc = ROOT / "documents" / "llm" / "embed.maml.md"
    began = time.monotonic()
    cli = subprocess.run([sys.executable, "-m", "maml", "run", str(doc), "--quiet", "--no-graph",
                          "--state-dir", str(tmp / "cli-state")], cwd=tmp, capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    cold = time.monotonic() - began
    if cli.returncode != 0:
        return {"skipped": f"the CLI run failed: {cli.stderr.strip()[-300:]}"}
    served = []
    for _ in range(2):
        began = time.monotonic()
        run = wait(client, client.post("/api/v1/runs", json={"path": str(doc)}).json()["run_id"])
        served.append(round(time.monotonic() - began, 2))
        if run["status"] != "succeeded":
            return {"skipped": f"the served run ended {run['status']}: {run.get('problems')}"}
    return {"cli_cold_s": round(cold, 2), "server_first_s": served[0],
            "server_second_s": served[1], "saved_s": round(cold - served[1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--no-llm", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maml-bench-serve-") as name:
        tmp = Path(name)
        process, client = start_server(tmp, "--no-mcp", "--concurrency", str(args.concurrency))
        try:
            report = {"latency": latency(client, args.latency_runs),
                      "throughput": throughput(client, args.runs, args.clients)}
        finally:
            process.terminate()
            process.wait(30)
        if not args.no_llm:
            (tmp / "llm").mkdir()
            process, client = start_server(tmp / "llm", "--no-mcp", "--concurrency", "1",
                                           "--workers", "1")
            try:
                report["llm"] = llm(client, tmp / "llm")
            finally:
                process.terminate()
                process.wait(30)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
