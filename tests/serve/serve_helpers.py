"""Helpers of the serve tests: a real `maml serve` on a loopback port, and documents.

(A module of its own rather than conftest.py: the test tree has several conftest modules,
and `from conftest import` would find whichever was imported first.)

`serve_process(tmp)` starts `python -m maml serve` in its own process (state dir, config dir
and FakeNVML file under `tmp`), waits until /api/v1/health answers, and returns a `Server`
with its URL, token and an httpx client. FakeNVML gives
the GPU panel two GPUs (the second runs hot) on a machine without any.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need the serve extra")
pytest.importorskip("fastapi", reason="the serve tests need the serve extra")
pytest.importorskip("uvicorn", reason="the serve tests need the serve extra")

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 20

FAKE_GPUS = {"gpus": [
    {"name": "NVIDIA H100 80GB HBM3", "script": [{"temperature": 52, "utilization": 35,
                                                  "memory_used": 20 * 2**30, "power_w": 310.0}]},
    {"name": "NVIDIA H100 80GB HBM3", "script": [{"temperature": 91, "utilization": 97,
                                                  "memory_used": 70 * 2**30, "power_w": 655.0}]},
]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def doc(steps: str, blocks: dict[str, str], policy: str = "") -> str:
    """A small document: `steps` is the YAML pipeline list, `blocks` id -> python body."""
    fences = "\n".join(f"```python {{id={bid}}}\n{textwrap.dedent(body).strip()}\n```\n"
                       for bid, body in blocks.items())
    return (f"---\nmaml_version: \"1.0\"\nid: urn:maml:test:serve\npermissions: {{execute: true}}\n"
            f"{policy}pipeline:\n{textwrap.indent(textwrap.dedent(steps).strip(), '  ')}\n---\n"
            f"# Test\n\n## Code_Blocks\n\n{fences}")


class Server:
    def __init__(self, tmp: Path, port: int, process: subprocess.Popen, env: dict[str, str]) -> None:
        self.tmp, self.port, self.process, self.env = tmp, port, process, env
        self.url = f"http://127.0.0.1:{port}"
        self.token = TOKEN
        self.client = httpx.Client(base_url=self.url, timeout=30,
                                   headers={"Authorization": f"Bearer {TOKEN}"})

    def submit(self, document: str, **fields: Any) -> str:
        answer = self.client.post("/api/v1/runs", json={"document": document, **fields})
        assert answer.status_code == 202, answer.text
        return answer.json()["run_id"]

    def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.client.get(f"/api/v1/runs/{run_id}").json()
            if run["status"] not in ("queued", "running"):
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} did not end in {timeout} s: {run}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def serve_process(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    fake = tmp / "fake_nvml.json"
    fake.write_text(json.dumps(FAKE_GPUS))
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MAML_CONFIG_DIR": str(tmp / "config"),
                   "MAML_SERVE_TOKEN": TOKEN, "MAML_FAKE_NVML": str(fake),
                   "MAML_GRAPH": str(tmp / "graph"), **(env or {})}
    log = open(tmp / f"server-{port}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "maml", "serve", "--port", str(port), "--state-dir",
         str(tmp / "state"), "--root", str(tmp), "--root", str(ROOT / "documents"), *args],
        cwd=tmp, env=environment, stdout=log, stderr=subprocess.STDOUT)
    server = Server(tmp, port, process, environment)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"maml serve exited {process.returncode}: "
                                 + (tmp / f"server-{port}.log").read_text())
        try:
            if server.client.get("/api/v1/health").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise AssertionError("maml serve did not answer in 60 s")
