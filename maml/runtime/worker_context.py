"""Inside a worker: what a running attempt sees (`ctx`), its log, and the heartbeat.

Each attempt's output is captured at the file-descriptor level: while it runs, fds 1 and 2
of the worker point at `<run_dir>/logs/<step>.<attempt>.log`, so `print`, C libraries and
child processes all write there, and nothing a step prints reaches maml's own stdout.
Between attempts fd 1 points at the worker's stderr. `ctx.log` writes a timestamped line to
the same file and tells the parent (the progress display shows it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from maml.runtime.checkpoint import load_step_state, save_step_state
from maml.runtime.events import DeviceRef


class Channel:
    """The worker's end of the pipe; sends from the heartbeat thread and the attempt."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.conn.send(message)


def log_path(run_dir: str, step_id: str, attempt: int) -> str:
    """`<run_dir>/logs/<step>.<attempt>.log`, the one place an attempt's output goes."""
    safe = step_id.replace(os.sep, "_").replace("\0", "_")
    return os.path.join(run_dir, "logs", f"{safe}.{attempt}.log")


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AttemptLog:
    """Points fds 1 and 2 at one attempt's log file while the attempt runs."""

    def __init__(self) -> None:
        _flush_std()
        os.dup2(2, 1)                       # idle output goes to stderr, never to stdout
        self._idle_out, self._idle_err = os.dup(1), os.dup(2)
        self.fd: int | None = None
        self._made: set[str] = set()

    def open(self, path: str) -> None:
        directory = os.path.dirname(path)
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        _flush_std()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)

    def write(self, text: str) -> None:
        """One timestamped line (ctx.log, maml's own notes) after what was printed so far."""
        if self.fd is None:
            return
        _flush_std()
        os.write(self.fd, f"[{timestamp()}] {text.rstrip()}\n".encode("utf-8", "replace"))

    def close(self) -> None:
        if self.fd is None:
            return
        _flush_std()
        os.dup2(self._idle_out, 1)
        os.dup2(self._idle_err, 2)
        os.close(self.fd)
        self.fd = None


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


class Heartbeat:
    """One long-lived thread per worker: beats while an attempt runs, quiet otherwise.

    The `started` message counts as the first beat; then one `("hb",)` per interval. The
    `hang` fault sets `stopped`, silencing it and ctx.heartbeat alike.
    """

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.interval = 1.0
        self.stopped = threading.Event()
        self._running = False
        self._wake = threading.Event()
        self._last = 0.0
        self._waiting = self.IDLE_WAIT
        threading.Thread(target=self._loop, name="maml-heartbeat", daemon=True).start()

    #: seconds between the idle thread's looks (it is not woken per attempt: that costs a
    #: thread switch; a beat is due only an interval after the start anyway)
    IDLE_WAIT = 1.0

    def attempt_started(self, interval: float) -> None:
        self.interval, self._last = max(interval, 0.01), time.monotonic()
        if self.stopped.is_set():            # a `hang` fault silenced the last attempt
            self.stopped = threading.Event()
        self._running = True
        if self.interval < self._waiting:
            self._wake.set()                 # it sleeps longer than this attempt may wait

    def attempt_ended(self) -> None:
        self._running = False

    def beat(self) -> None:
        """A beat from the attempt itself (ctx.heartbeat), at most one per 20 ms."""
        now = time.monotonic()
        if self._running and not self.stopped.is_set() and now - self._last >= 0.02:
            self._last = now
            self.channel.send(("hb",))

    def _loop(self) -> None:
        while True:
            wait = self.IDLE_WAIT
            if self._running and not self.stopped.is_set():
                now = time.monotonic()
                wait = self._last + self.interval - now
                if wait <= 0:
                    self._last, wait = now, self.interval
                    try:
                        self.channel.send(("hb",))
                    except (OSError, ValueError):
                        return
            self._waiting = wait
            self._wake.wait(wait)
            self._wake.clear()


@dataclass
class WorkerContext:
    """What a running attempt sees (implements maml.runtime.kinds.base.StepContext).

    `device` is what code in the worker uses ("cuda:0": the one GPU this worker sees, or
    "cpu"); `host_device` names the device at the host level (id "cuda:1", its UUID).
    """

    channel: Channel
    step_id: str
    attempt: int
    device: str
    params: dict[str, Any]
    run_dir: str
    cache: dict[str, Any]
    input: Any = None
    state_path: str = ""
    host_device: DeviceRef | None = None
    heartbeats: Heartbeat | None = None
    log_file: AttemptLog | None = None
    #: the injected fault still to strike (a kind may choose where; see strike_injected_fault)
    pending_fault: Any = field(default=None, repr=False)

    def heartbeat(self) -> None:
        if self.heartbeats is not None:
            self.heartbeats.beat()

    def progress(self, done: int, total: int | None = None, unit: str = "") -> None:
        self.heartbeat()
        self.channel.send(("progress", done, total, unit))

    def log(self, message: str) -> None:
        """A timestamped line in this attempt's log; the progress display shows the last."""
        text = str(message)
        if self.log_file is not None:
            self.log_file.write(text)
        self.channel.send(("log", text))

    def checkpoint(self, state: Any) -> None:
        digest, size = save_step_state(self.state_path, state)
        self.channel.send(("checkpoint", digest, size))

    def restore(self) -> Any | None:
        return load_step_state(self.state_path) if self.state_path else None

    def as_tensor(self, array: Any) -> Any:
        """A torch tensor of an input array on this attempt's device (zero-copy on the CPU
        for a whole artifact; maml.runtime.artifacts.as_tensor)."""
        from maml.runtime.artifacts import as_tensor

        return as_tensor(array, self.device)

    def strike_injected_fault(self) -> None:
        """Suffer the injected fault now, if one is pending (called once, by the kind or by
        the worker before the kind runs)."""
        pending, self.pending_fault = self.pending_fault, None
        if pending is not None:
            pending()
