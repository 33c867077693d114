"""The worker process: runs attempts for the executor, one at a time, until told to stop.

Started with the `spawn` method by maml.runtime.workers; everything it needs is imported
once at start-up, so an attempt costs a pipe round trip, not a Python start. The protocol
on its one duplex pipe (tuples, first item the message type):

    executor -> worker   ("attempt", AttemptRequest) | ("release",) | ("stop",)
    worker -> executor   ("ready", pid)
                         ("started", attempt)              the attempt began (first beat)
                         ("hb",)                           heartbeat, one per interval
                         ("log", text) | ("progress", done, total, unit)
                         ("checkpoint", digest, size)
                         ("result", json_text, seconds, refs)  the output as JSON whose
                                                           arrays are `$artifact` references
                                                           (maml.runtime.artifacts)
                         ("error", ErrorInfo, seconds)     classified here, in the worker
                         ("released",)

An attempt costs two messages (started, result/error) plus one heartbeat per interval from
the worker's one heartbeat thread. The worker runs in its own session, as a child
subreaper: whatever an attempt started is killed when it ends (maml.runtime.proctree).
After a failure the worker returns the attempt's memory (maml.runtime.hygiene); when it
cannot, the error's context says `restart_worker` and why, and the worker exits after
sending it, so the retry runs in a fresh process. The `hang` fault silences the heartbeat,
so the executor's watchdog sees exactly what a wedged worker looks like. After a
`cuda_error` the worker's context is poisoned, as a real sticky CUDA fault leaves it: every
later attempt here fails the same way until the executor replaces the process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from maml.runtime import hygiene, proctree
from maml.runtime.artifacts import OutputError, decode_inputs, encode_output
from maml.runtime.classify import describe, locate
from maml.runtime.events import DeviceRef, ErrorInfo
from maml.runtime.inject import raise_fault
from maml.runtime.kinds.base import Kind, StepSpec, get_kind
from maml.runtime.worker_context import AttemptLog, Channel, Heartbeat, WorkerContext, log_path


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
    memory_slack: int = hygiene.DEFAULT_MEMORY_SLACK   # bytes above baseline after cleanup
    #: sha256 -> an input artifact's array already in memory (Ray's object store); the rest
    #: are mapped from the run dir's files
    arrays: dict[str, Any] | None = None


class Worker:
    def __init__(self, conn: Any, worker_id: str) -> None:
        self.channel = Channel(conn)
        self.conn = conn
        self.worker_id = worker_id
        self.kinds: dict[str, Kind] = {}
        self.cache: dict[str, Any] = {}
        self.poisoned_by_injection: bool | None = None   # None: the context is healthy
        self.inherited_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.log = AttemptLog()
        self.heartbeat = Heartbeat(self.channel)
        self.replace_because: str | None = None
        self.baseline: hygiene.MemoryReading | None = None
        self.last_succeeded = True
        #: where output arrays go: None writes files under the run dir; Ray's actors on
        #: another node than the driver keep them for the object store (files.hash_array)
        self.store_array: Any = None

    def serve(self) -> None:
        self.channel.send(("ready", os.getpid()))
        while self.replace_because is None:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break             # the executor is gone: so is our reason to live
            if message[0] == "stop":
                break
            if message[0] == "release":
                self.release()
            elif message[0] == "attempt":
                self.run_attempt(message[1])
        proctree.kill_tree(os.getpid(), include_root=False)

    def release(self) -> None:
        """clear_cache: every kind drops its cached state, then memory is returned."""
        ctx = WorkerContext(self.channel, "", 0, "cpu", {}, ".", self.cache)
        for kind in self.kinds.values():
            kind.release(ctx)
        self.cache.clear()
        hygiene.release_memory()
        self.channel.send(("released",))

    def run_attempt(self, request: AttemptRequest) -> None:
        started = time.perf_counter()
        self.heartbeat.attempt_started(request.heartbeat_interval)
        self.channel.send(("started", request.attempt))
        if self.baseline is None or self.last_succeeded:
            self.baseline = hygiene.read_memory()   # failures in a row are held to one base
        try:
            self.log.open(log_path(request.run_dir, request.step.id, request.attempt))
            ctx = self._context(request)
            kind = self._kind(request.step.kind)
            if not getattr(kind, "strikes_injected_faults", False):
                ctx.strike_injected_fault()
            request.step.inputs = decode_inputs(request.step.inputs, request.run_dir,
                                                request.arrays)
            output = kind.run(ctx, request.step)
            ctx.strike_injected_fault()     # a kind that never reached its strike point
            text, refs = encode_output(output, request.run_dir, request.step.id,
                                       store=self.store_array)
        except BaseException as exc:  # noqa: BLE001 - everything the step does is reported
            if request.fault == "cuda_error":
                self.poisoned_by_injection = True
            failure = self._describe(exc, request)
            hygiene.drop_frames(exc)    # the formatted traceback is all we keep
        else:
            del output, ctx
            self.last_succeeded = True
            self._end_attempt()
            self.channel.send(("result", text, time.perf_counter() - started, refs))
            return
        self.last_succeeded = False
        failure = self._after_failure(failure, request.memory_slack)
        self._end_attempt()
        self.channel.send(("error", failure, time.perf_counter() - started))

    def _context(self, request: AttemptRequest) -> WorkerContext:
        device = hygiene.apply_pin(request.device, self.inherited_visible)
        ctx = WorkerContext(self.channel, request.step.id, request.attempt, device,
                            dict(request.step.params), request.run_dir, self.cache,
                            input=request.input_data, state_path=request.state_path,
                            host_device=request.device, heartbeats=self.heartbeat,
                            log_file=self.log)
        fault = "cuda_error" if self.poisoned_by_injection is not None else request.fault
        if fault:
            ctx.pending_fault = functools.partial(
                raise_fault, fault, timeout=request.timeout,
                stop_heartbeats=self.heartbeat.stopped)
        return ctx

    def _end_attempt(self) -> None:
        """Kill what the attempt left running (noted in its log), close the log."""
        self.heartbeat.attempt_ended()
        if proctree.has_children():
            killed = proctree.kill_tree(os.getpid(), include_root=False)
            if killed:
                self.log.write(f"maml: killed {len(killed)} process(es) the step left "
                               f"running: {', '.join(killed)}")
        self.log.close()

    def _after_failure(self, info: ErrorInfo, slack: int) -> ErrorInfo:
        """Return the failed attempt's memory; ask for a new worker when it did not come back."""
        after = hygiene.release_memory()
        before = self.baseline or after
        # CUDA initialised by this very attempt maps host memory that no cleanup returns
        if before.cuda_reserved is None and after.cuda_reserved is not None:
            self.baseline, reason = after, None
        else:
            reason = after.excess_over(before, slack)
        context = {**info.context, "memory_after_cleanup": after.to_dict()}
        if reason is not None:
            self.replace_because = reason
            context["restart_worker"] = reason
            self.log.write(f"maml: this worker will be replaced: {reason}")
        return dataclasses.replace(info, context=context)

    def _describe(self, exc: BaseException, request: AttemptRequest) -> ErrorInfo:
        injected = bool(request.fault) or self.poisoned_by_injection is True
        context: dict[str, Any] = {"pid": os.getpid()}
        where = locate(exc, request.step.doc_path or "<document>")
        if where is not None:
            context["location"] = where
        info = describe(exc, injected=injected, worker_id=self.worker_id,
                        device=request.device, context=context)
        if isinstance(exc, OutputError):
            info = dataclasses.replace(info, error_class="user_error")
        return info

    def _kind(self, name: str) -> Kind:
        if name not in self.kinds:
            self.kinds[name] = get_kind(name)()
        return self.kinds[name]


def worker_main(conn: Any, worker_id: str, preload: tuple[str, ...] = (),
                token: str | None = None) -> None:
    """Entry point of the spawned process: its own session, a subreaper, dies with its
    parent; `token` marks everything it starts (maml.runtime.proctree)."""
    os.setsid()                      # a terminal's Ctrl-C reaches the parent only
    # SIGINT sent to us anyway is the parent's to act on; a handler (not SIG_IGN) so the
    # programs a step execs get the default back
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    proctree.become_subreaper()
    proctree.die_with_parent()
    if token:
        os.environ[proctree.TOKEN_VARIABLE] = token
    for kind in preload:
        try:
            get_kind(kind)
        except Exception:  # noqa: BLE001 - a broken kind fails its own steps, not the worker
            pass
    Worker(conn, worker_id).serve()
