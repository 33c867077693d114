"""The worker process: runs attempts for the executor, one at a time, until told to stop.

Started with the `spawn` method by maml.runtime.workers; everything it needs is imported
once at start-up, so an attempt costs a pipe round trip, not a Python start. The protocol
on its one duplex pipe (tuples, first item the message type):

    executor -> worker   ("attempt", AttemptRequest) | ("release",) | ("stop",)
    worker -> executor   ("ready", pid)
                         ("started", attempt)              the attempt began
                         ("hb",)                           heartbeat (thread and ctx.heartbeat)
                         ("log", text) | ("progress", done, total, unit)
                         ("checkpoint", digest, size)
                         ("result", json_text, seconds, refs)  the output as JSON whose
                                                           arrays are `$artifact` references
                                                           (maml.runtime.artifacts)
                         ("error", ErrorInfo, seconds)     classified here, in the worker
                         ("released",)

A heartbeat thread beats while an attempt runs; the `hang` fault stops it and ctx.heartbeat
alike, so the executor's watchdog sees exactly what a wedged worker looks like. After a
`cuda_error` the worker's context is poisoned, as a real sticky CUDA fault leaves it: every
later attempt here fails the same way until the executor replaces the process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from maml.runtime.artifacts import OutputError, as_tensor, decode_inputs, encode_output
from maml.runtime.checkpoint import load_step_state, save_step_state
from maml.runtime.classify import describe
from maml.runtime.events import DeviceRef
from maml.runtime.inject import raise_fault
from maml.runtime.kinds.base import Kind, StepSpec, get_kind


@dataclass
class AttemptRequest:
    step: StepSpec
    attempt: int
    device: DeviceRef
    fault: str | None = None              # the injected failure this attempt suffers
    timeout: float | None = None
    heartbeat_interval: float = 1.0
    state_path: str = ""
    run_dir: str = "."
    input_data: Any = None


class Channel:
    """The worker's end of the pipe; sends from the heartbeat thread and the attempt."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.conn.send(message)


@dataclass
class WorkerContext:
    """What a running attempt sees (implements maml.runtime.kinds.base.StepContext)."""

    channel: Channel
    step_id: str
    attempt: int
    device: str
    params: dict[str, Any]
    run_dir: str
    cache: dict[str, Any]
    input: Any = None
    state_path: str = ""
    heartbeats_stopped: threading.Event = field(default_factory=threading.Event)
    _last_beat: float = 0.0

    def heartbeat(self) -> None:
        now = time.monotonic()
        if self.heartbeats_stopped.is_set() or now - self._last_beat < 0.02:
            return
        self._last_beat = now
        self.channel.send(("hb",))

    def progress(self, done: int, total: int | None = None, unit: str = "") -> None:
        self.heartbeat()
        self.channel.send(("progress", done, total, unit))

    def log(self, message: str) -> None:
        self.channel.send(("log", str(message)))

    def checkpoint(self, state: Any) -> None:
        digest, size = save_step_state(self.state_path, state)
        self.channel.send(("checkpoint", digest, size))

    def restore(self) -> Any | None:
        return load_step_state(self.state_path) if self.state_path else None

    def as_tensor(self, array: Any) -> Any:
        """A torch tensor of an input array, on this attempt's device (artifacts.as_tensor)."""
        return as_tensor(array, self.device)


class Worker:
    def __init__(self, conn: Any, worker_id: str) -> None:
        self.channel = Channel(conn)
        self.conn = conn
        self.worker_id = worker_id
        self.kinds: dict[str, Kind] = {}
        self.cache: dict[str, Any] = {}
        self.poisoned_by_injection: bool | None = None   # None: the context is healthy

    def serve(self) -> None:
        self.channel.send(("ready", os.getpid()))
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return            # the executor is gone: so is our reason to live
            if message[0] == "stop":
                return
            if message[0] == "release":
                self.release()
            elif message[0] == "attempt":
                self.run_attempt(message[1])

    def release(self) -> None:
        for kind in self.kinds.values():
            kind.release(self._context_for_release())
        self.cache.clear()
        self.channel.send(("released",))

    def _context_for_release(self) -> WorkerContext:
        return WorkerContext(self.channel, "", 0, "cpu", {}, ".", self.cache)

    def run_attempt(self, request: AttemptRequest) -> None:
        ctx = WorkerContext(self.channel, request.step.id, request.attempt, request.device.id,
                            dict(request.step.params), request.run_dir, self.cache,
                            input=request.input_data, state_path=request.state_path)
        beating = threading.Event()
        beating.set()
        threading.Thread(target=self._beat, args=(ctx, beating, request.heartbeat_interval),
                         daemon=True).start()
        self.channel.send(("started", request.attempt))
        started = time.perf_counter()
        try:
            self._suffer_faults(request, ctx)
            request.step.inputs = decode_inputs(request.step.inputs, request.run_dir)
            output = self._kind(request.step.kind).run(ctx, request.step)
            text, refs = encode_output(output, request.run_dir, request.step.id)
        except BaseException as exc:  # noqa: BLE001 - everything the step does is reported
            if request.fault == "cuda_error":
                self.poisoned_by_injection = True
            self._send_error(exc, request, time.perf_counter() - started)
        else:
            self.channel.send(("result", text, time.perf_counter() - started, refs))
        finally:
            beating.clear()

    def _suffer_faults(self, request: AttemptRequest, ctx: WorkerContext) -> None:
        """Raise the poisoned context's fault, or the fault injected into this attempt."""
        if self.poisoned_by_injection is not None:
            raise_fault("cuda_error", timeout=None, stop_heartbeats=ctx.heartbeats_stopped)
        if request.fault:
            raise_fault(request.fault, timeout=request.timeout,
                        stop_heartbeats=ctx.heartbeats_stopped)

    def _send_error(self, exc: BaseException, request: AttemptRequest, seconds: float) -> None:
        injected = bool(request.fault) or self.poisoned_by_injection is True
        info = describe(exc, injected=injected, worker_id=self.worker_id,
                        device=request.device, context={"pid": os.getpid()})
        if isinstance(exc, OutputError):
            info = dataclasses.replace(info, error_class="user_error")
        self.channel.send(("error", info, seconds))

    def _kind(self, name: str) -> Kind:
        if name not in self.kinds:
            self.kinds[name] = get_kind(name)()
        return self.kinds[name]

    def _beat(self, ctx: WorkerContext, beating: threading.Event, interval: float) -> None:
        while beating.is_set() and not ctx.heartbeats_stopped.is_set():
            try:
                self.channel.send(("hb",))
            except (OSError, ValueError):
                return
            time.sleep(interval)


def worker_main(conn: Any, worker_id: str, preload: tuple[str, ...] = ()) -> None:
    """Entry point of the spawned process."""
    _die_with_parent()
    for kind in preload:
        try:
            get_kind(kind)
        except Exception:  # noqa: BLE001 - a broken kind fails its own steps, not the worker
            pass
    Worker(conn, worker_id).serve()


def _die_with_parent() -> None:
    """If the executor is killed (SIGKILL leaves it no time to stop us), die too: a step must
    not go on running, and writing, behind the back of the run that will resume it."""
    if sys.platform != "linux":
        return
    import ctypes

    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:     # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
