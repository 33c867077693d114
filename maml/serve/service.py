"""Service: every operation the HTTP API, the dashboard and the MCP tools offer, once.

    service = Service(state_dir=".maml", concurrency=2); service.start()
    run_id = service.submit(document=text, params={...}, principal="alice")
    service.run(run_id)        # the `maml run --json` object; status queued|running until it ends
    service.close()

Errors are MamlError subclasses (UsageError for a caller's mistake, DocumentError with
diagnostics for a document that cannot run, NotFound for an unknown run or step); the
HTTP layer maps them to status codes and MCP to tool errors, both with maml's codes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from maml.errors import MamlError, UsageError
from maml.serve import intake, views
from maml.serve.hub import EventHub
from maml.serve.records import Records, RunRequest, next_seq
from maml.serve.lanes import Lanes, lane_session, uses_gpu
from maml.serve.runner import Acceptance, CancelToken, Gate, Runner

log = logging.getLogger(__name__)


class NotFound(UsageError):
    """An unknown run, step or log: the caller's mistake (HTTP 404)."""


class Service:
    def __init__(self, *, state_dir: str | os.PathLike[str] = ".maml", concurrency: int = 2,
                 graph: str | os.PathLike[str] | None = None,
                 roots: list[str | os.PathLike[str]] | None = None,
                 workers: int | None = None) -> None:
        self.records = Records(state_dir)
        self.state_dir = self.records.state_dir
        self.roots = [Path(r).resolve() for r in (roots or [os.getcwd()])]
        self.workers = workers
        #: who runs documents submitted without a token of their own (stdio MCP)
        self.principal: str | None = None
        self.hub = EventHub(persist=self.records.append_event)
        self.runner = Runner(self.execute, concurrency=concurrency,
                             needs_gpu=lambda request: request.run_id in self._gpu_runs)
        self._graph_path = graph
        self.recorder: Any = None
        self.inventory: Any = None
        self._requests: dict[str, RunRequest] = {}
        self._parsed: dict[str, Any] = {}          # run id -> its Document, until it starts
        self._gpu_runs: set[str] = set()           # runs a step of which may use a GPU
        self._acceptances: dict[str, Acceptance] = {}   # run id -> its request's sync
        self._by_key: dict[str, str] = {}          # idempotency key -> run id
        self._finals: dict[str, dict[str, Any]] = {}   # run id -> its final record
        self._lock = threading.Lock()
        self._seq = 0
        self._devices: Any = None
        self._graph_cache: tuple[Any, Any] | None = None
        self.lanes = Lanes(lambda gpu: lane_session(self.inventory, self.workers, gpu))

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Own the state dir's queue, then queue again every run that had not ended."""
        from maml.graph import Recorder
        from maml.runtime.devices import discover

        import maml.runtime.launch   # noqa: F401 - the runtime's imports, before any run waits

        self.records.lock()
        self.recorder = Recorder(self._graph_path)
        self.inventory = discover()
        self._seq = next_seq(self.records)
        for request in self.records.requests():
            self._requests[request.run_id] = request
            if request.idempotency_key is not None:
                self._by_key[request.idempotency_key] = request.run_id
            view = self.hub.restore(request.run_id, self.records.events(request.run_id))
            final = self.records.final(request.run_id)
            if final is None:
                self.records.recover(request)
                if self._may_use_gpu(request):
                    self._gpu_runs.add(request.run_id)
                self.hub.publish(request.run_id, "run_requeued")
                self.runner.put(request)
            else:
                self._finals[request.run_id] = final
                view.status = final["result"]["status"]
        self.runner.start()

    def close(self) -> None:
        self.runner.stop()
        self.lanes.close()
        if self.recorder is not None:
            self.recorder.close()
        if self._devices is not None:
            self._devices.close()
        self.records.unlock()

    # -- runs -----------------------------------------------------------------------------

    def submit(self, *, document: str | None = None, path: str | None = None,
               params: dict[str, Any] | None = None, inject: list[str] | None = None,
               input: Any = None, require_signed: bool = False,
               principal: str | None = None, idempotency_key: str | None = None) -> str:
        """Check the document and accept the run (durably); returns its run id. A repeated
        `idempotency_key` returns the run the first submission made (a client that lost
        the answer to a crash can send again without running the document twice)."""
        if idempotency_key is not None and idempotency_key in self._by_key:
            return self._by_key[idempotency_key]
        text, where = self._source(document, path)
        doc = intake.checked(text, where, list(inject or ()), require_signed)
        dag = intake.dag(doc, params or {}, self._device_classes())
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._by_key:
                return self._by_key[idempotency_key]
            self._seq += 1
            request = RunRequest(run_id="", seq=self._seq, document=text, path=doc.path,
                                 params=dict(params or {}), inject=list(inject or ()),
                                 input=input, require_signed=require_signed,
                                 principal=principal, submitted_at=time.time(),
                                 idempotency_key=idempotency_key)
            self.records.create(request)
            self._requests[request.run_id] = request
            self._parsed[request.run_id] = doc
            self._acceptances[request.run_id] = acceptance = Acceptance()
            if uses_gpu(dag):
                self._gpu_runs.add(request.run_id)
            if idempotency_key is not None:
                self._by_key[idempotency_key] = request.run_id
        self.hub.publish(request.run_id, "run_queued", document=doc.path, steps=dag)
        self.runner.put(request)        # prepares while the request syncs (runner.Gate)
        try:
            self.records.persist(request)
        except BaseException:
            acceptance.settle(False)
            self._withdraw(request)
            raise
        acceptance.settle(True)
        return request.run_id

    def _withdraw(self, request: RunRequest) -> None:
        """Forget a run whose request could not be written: its caller gets the error, no
        run id, and no attempt of it ever starts (its Gate stops it). Its files go now, or
        when its lane lets go of it."""
        where = self.runner.cancel(request.run_id, reason="withdrawn")
        with self._lock:
            self._requests.pop(request.run_id, None)
            self._parsed.pop(request.run_id, None)
            self._acceptances.pop(request.run_id, None)
            self._gpu_runs.discard(request.run_id)
            if request.idempotency_key is not None:
                self._by_key.pop(request.idempotency_key, None)
        self.hub.views.pop(request.run_id, None)
        if where != "running":
            self.records.withdraw(request.run_id)

    def _source(self, document: str | None, path: str | None) -> tuple[str, str]:
        return intake.source(document, path, self.roots, self.records.store_document)

    def _may_use_gpu(self, request: RunRequest) -> bool:
        """Whether a step of a requeued run may use a GPU of this server (then it goes to
        the GPU lane; a document that no longer plans goes there too, to fail there)."""
        if "cuda" not in self._device_classes():
            return False
        dag = intake.replanned(request.document, request.path, request.params,
                               self._device_classes())
        return dag is None or uses_gpu(dag)

    def _device_classes(self) -> set[str]:
        return {d.kind for d in self.inventory.devices} if self.inventory else {"cpu"}

    def execute(self, request: RunRequest, token: CancelToken) -> None:
        """Run one accepted request to its end and write its final record. The one place
        the service calls the runtime: resume=run_id makes a first run and a restart alike,
        and each runner thread keeps its own maml.Session (warm workers) across its runs.
        A run submitted to this process may start before its request is synced: its Gate
        holds the first attempt until it is (a run whose request could not be written is
        stopped there, recorded in the graph as interrupted with no attempt, and forgotten)."""
        import maml

        started = time.time()
        from maml.graph import settings

        acceptance = self._acceptances.pop(request.run_id, None)
        observers = [self.recorder, self.hub]
        if acceptance is not None:          # submitted to this process: maybe not synced yet
            observers.insert(0, Gate(acceptance, token))
        try:
            doc = self._parsed.pop(request.run_id, None)   # parsed when it was submitted
            if doc is None:                                # (or not: a restart requeued it)
                doc = maml.parse(request.document, path=request.path)
            with settings.overrides(require_signed=request.require_signed):
                result = maml.run(doc, graph=False, observers=observers,
                                  resume=request.run_id, state_dir=self.state_dir,
                                  params=request.params, inject=request.inject,
                                  input=request.input, principal=request.principal,
                                  session=self.lanes.current(gpu=token.lane == 0),
                                  stop=token.stop)
        except MamlError as exc:
            if acceptance is None or acceptance.wait():
                self._end_unrecorded(request, "failed", started, exc.format(), code=exc.code)
            else:
                self.records.withdraw(request.run_id)
        except Exception as exc:
            log.exception("run %s", request.run_id)
            self.lanes.drop()               # its workers may hold the broken run's attempts
            if acceptance is None or acceptance.wait():
                self._end_unrecorded(request, "failed", started, f"internal error: "
                                     f"{type(exc).__name__}: {exc}", code="MAML-E000")
            else:
                self.records.withdraw(request.run_id)
        else:
            if token.reason == "withdrawn":
                self.records.withdraw(request.run_id)
                return
            if token.reason == "shutdown":
                return                      # not ended: the next start resumes it
            payload = result.to_json()
            payload["graph"] = str(self.recorder.path)
            if token.reason == "cancelled":
                self.hub.publish(request.run_id, "run_cancelled")
                payload["status"] = "cancelled"
                result.problems.append("cancelled by request")
            self._finish(request.run_id, payload, started, result.problems, result.output)

    def _end_unrecorded(self, request: RunRequest, status: str, started: float, problem: str,
                        code: str | None = None) -> None:
        """A run that ended without the runtime's result: cancelled, refused, or our bug."""
        view = self.hub.views.get(request.run_id)
        if view is not None and view.started_at is not None:
            self.recorder.on_run_finished(run_id=request.run_id, status="interrupted",
                                          errors=view.errors, recoveries=view.recoveries,
                                          duration=time.time() - started)
        if status == "cancelled":
            self.hub.publish(request.run_id, "run_cancelled")
        result = self._live(request.run_id)
        result["status"] = status
        self._finish(request.run_id, result, started, [problem], None, code)

    def _finish(self, run_id: str, result: dict[str, Any], started: float,
                problems: list[str], output: Any, code: str | None = None) -> None:
        final = {"result": result, "problems": problems, "output": output, "code": code,
                 "started_at": started, "finished_at": time.time()}
        self.records.finish(run_id, final)
        self._finals[run_id] = final
        self._gpu_runs.discard(run_id)
        self.hub.publish(run_id, "run_finished", status=result["status"],
                         errors=result.get("errors", 0), recoveries=result.get("recoveries", 0),
                         problems=problems)
        self.records.close_events(run_id)     # its last event is written

    def request(self, run_id: str) -> RunRequest:
        try:
            return self._requests[run_id]
        except KeyError:
            raise NotFound(f"no run {run_id!r} on this server") from None

    def run(self, run_id: str) -> dict[str, Any]:
        """The run as `maml run --json` prints it (status queued|running until it ends),
        plus document, times, problems and each step's attempt history."""
        request = self.request(run_id)
        return views.run_object(request, self._finals.get(run_id), self.hub.views.get(run_id),
                                self._live(run_id), queued=run_id in self.runner.queued())

    def _live(self, run_id: str) -> dict[str, Any]:
        from maml.runtime.checkpoint import RunStore

        return views.live_result(run_id, self.hub.views.get(run_id),
                                 RunStore(self.state_dir, run_id),
                                 str(self.recorder.path) if self.recorder else None)

    def runs(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first: id, status, document, times, errors, recoveries, step counts."""
        rows = []
        for request in sorted(self._requests.values(), key=lambda r: r.seq, reverse=True):
            row = views.run_row(request, self._finals.get(request.run_id),
                                self.hub.views.get(request.run_id))
            if status is None or row["status"] == status:
                rows.append(row)
            if len(rows) >= limit:
                break
        return rows

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run; a run that has ended is left as it is."""
        request = self.request(run_id)
        status = self.run(run_id)["status"]
        if status in views.FINAL_STATUSES:   # ended, as GET reports it, though its runner
            # thread may not have let go of it yet: cancelling now would say "running"
            return {"run_id": run_id, "cancelled": False, "was": status}
        where = self.runner.cancel(run_id)
        if where == "queued":
            self._parsed.pop(run_id, None)
            self._acceptances.pop(run_id, None)
            self._end_unrecorded(request, "cancelled", request.submitted_at,
                                 "cancelled before it started")
        return {"run_id": run_id, "cancelled": where is not None,
                "was": where or self.run(run_id)["status"]}

    def logs(self, run_id: str, step: str, attempt: int | None = None) -> list[dict[str, Any]]:
        """A step's per-attempt logs (what the worker wrote: stdout, stderr, ctx.log):
        [{"attempt", "text"}], oldest first."""
        self.request(run_id)
        found = views.step_logs(self.state_dir / "runs" / run_id, step, attempt)
        view = self.hub.views.get(run_id)
        if not found and (view is None or step not in view.steps):
            raise NotFound(f"run {run_id} has no step {step!r}")
        return found

    # -- documents, devices, the graph ----------------------------------------------------

    def validate(self, *, document: str | None = None, path: str | None = None) -> dict[str, Any]:
        """`maml validate --json`'s object for one document."""
        text, where = self._source(document, path)
        return intake.validation(text, where if path is not None else "<document>")

    def devices(self) -> dict[str, Any]:
        """`maml devices --json`'s object, sampled now (GPU health from NVML or FakeNVML)."""
        from maml.serve.devices import DevicePanel

        with self._lock:
            if self._devices is None:
                self._devices = DevicePanel()
        return self._devices.snapshot()

    def graph(self) -> Any:
        """The verified error graph, reloaded only when its log has grown."""
        import maml.graph

        path = Path(self.recorder.path)
        stamp = path.stat().st_size if path.exists() else -1
        if stamp < 0:
            raise NotFound(f"no error graph at {path} yet: no run has been recorded")
        with self._lock:
            if self._graph_cache is None or self._graph_cache[0] != stamp:
                self._graph_cache = (stamp, maml.graph.open(path))
            return self._graph_cache[1]

    def verify_graph(self) -> dict[str, Any]:
        from maml.graph import verify_path

        return verify_path(self.recorder.path).to_dict()
