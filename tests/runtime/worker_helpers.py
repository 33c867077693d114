"""Talking to one real worker process directly, for the worker tests: build an attempt
request, read its messages until the outcome."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

from maml.runtime.events import DeviceRef
from maml.runtime.kinds.base import StepSpec
from maml.runtime.worker_main import AttemptRequest


def request(body: str, run_dir: Path, *, device: DeviceRef | None = None, attempt: int = 1,
            **fields: Any) -> AttemptRequest:
    """An attempt of python step "s" running `body` (dedented), logging under `run_dir`."""
    step = StepSpec(id="s", kind="python", params={}, block_body=textwrap.dedent(body),
                    block_line=1)
    fields.setdefault("heartbeat_interval", 0.05)
    return AttemptRequest(step=step, attempt=attempt, device=device or DeviceRef("cpu"),
                          run_dir=str(run_dir), **fields)


def outcome(worker: Any, timeout: float = 60.0) -> tuple[str, Any, list[str]]:
    """Messages until the attempt's result or error: (kind, payload, every message type)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.conn.poll(0.05):
            message = worker.conn.recv()
            seen.append(message[0])
            if message[0] in ("result", "error"):
                return message[0], message[1], seen
    raise AssertionError(f"no outcome within {timeout} s; saw {seen}")
