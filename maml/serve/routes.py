"""The HTTP API under /api/v1: thin routes over `Service` (OpenAPI at /api/v1/openapi.json).

Every error is JSON, `{"error": {"code": "MAML-...", "message", ...}}`, with the code the
CLI would print; 4xx for the caller's mistakes (see app.STATUS). Run events stream as
Server-Sent Events: `id` is the event's seq (send it back as Last-Event-ID to resume),
`event` its type, `data` the event as JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from maml import __version__
from maml.serve.service import Service

KEEPALIVE = 15.0   # seconds between SSE comments on a quiet stream


class RunSubmission(BaseModel):
    document: str | None = Field(None, description="The document's text (.maml.md).")
    path: str | None = Field(None, description="A document file the server may read (--root).")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Param overrides, `K` or `STEP.K` -> value.")
    inject: list[str] = Field(default_factory=list, description="Faults: STEP:ERROR[@N,M].")
    input: Any = Field(None, description="Input data, checked against Input_Schema.")
    require_signed: bool = Field(False, description="Refuse an unsigned or altered document.")


class DocumentRef(BaseModel):
    document: str | None = None
    path: str | None = None


def router(service: Service) -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    @api.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "version": __version__, "queued": len(service.runner.queued())}

    @api.post("/runs", status_code=202)
    def submit(body: RunSubmission, request: Request,
               idempotency_key: str | None = Header(None, max_length=200)) -> dict[str, Any]:
        """Queue a run. Send an `Idempotency-Key` header to make a retried POST (after a
        lost answer) return the first submission's run instead of a second run."""
        run_id = service.submit(document=body.document, path=body.path, params=body.params,
                                inject=body.inject, input=body.input,
                                require_signed=body.require_signed,
                                principal=request.scope["state"].get("principal"),
                                idempotency_key=idempotency_key)
        return {"run_id": run_id, "status": "queued", "url": f"/api/v1/runs/{run_id}"}

    @api.get("/runs")
    def runs(status: str | None = None, limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
        return {"runs": service.runs(status=status, limit=limit)}

    @api.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        return service.run(run_id)

    @api.post("/runs/{run_id}/cancel")
    def cancel(run_id: str) -> dict[str, Any]:
        return service.cancel(run_id)

    @api.get("/runs/{run_id}/steps/{step}/logs")
    def logs(run_id: str, step: str, attempt: int | None = Query(None, ge=1)) -> dict[str, Any]:
        return {"run_id": run_id, "step": step,
                "attempts": service.logs(run_id, step, attempt)}

    @api.get("/runs/{run_id}/events")
    async def run_events(run_id: str, last_event_id: int = Header(0)) -> StreamingResponse:
        service.request(run_id)
        return _sse(_events(service, run_id, last_event_id))

    @api.get("/events")
    async def all_events(last_event_id: int = Header(0)) -> StreamingResponse:
        return _sse(_events(service, None, last_event_id))

    @api.post("/validate")
    def validate(body: DocumentRef) -> dict[str, Any]:
        return service.validate(document=body.document, path=body.path)

    @api.get("/devices")
    def devices() -> dict[str, Any]:
        return service.devices()

    @api.get("/graph/failures")
    def failures(error_class: str | None = None, step_kind: str | None = None,
                 device_class: str | None = None, device: str | None = None,
                 run: str | None = None, step: str | None = None,
                 injected: bool | None = None, since: str | None = None,
                 limit: int = Query(500, ge=1, le=100_000)) -> dict[str, Any]:
        found = service.graph().failures(error_class=error_class, step_kind=step_kind,
                                         device_class=device_class, device=device, run=run,
                                         step=step, injected=injected, since=since)
        return {"count": len(found), "failures": found[-limit:]}

    @api.get("/graph/patterns")
    def patterns(min_count: int = Query(3, ge=1)) -> dict[str, Any]:
        return {"patterns": service.graph().patterns(min_count=min_count)}

    @api.get("/graph/rates")
    def rates() -> dict[str, Any]:
        return {"rates": service.graph().recovery_success_rates()}

    @api.get("/graph/verify")
    def verify() -> dict[str, Any]:
        return service.verify_graph()

    return api


def _sse(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


def _frame(event: dict[str, Any]) -> str:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n"


async def _events(service: Service, run_id: str | None, after: int) -> AsyncIterator[str]:
    """Every event after `after`: first what is logged, then live ones. A run's stream ends
    with its run_finished event; the all-runs stream never ends."""
    queue = service.hub.subscribe(run_id)    # before reading the log: nothing falls between
    try:
        sent = after
        backlog = service.records.events(run_id) if run_id else []
        for event in backlog:
            if event["seq"] > sent:
                sent = event["seq"]
                yield _frame(event)
            if event["type"] == "run_finished":
                return
        yield ": stream open\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if event["seq"] <= sent:
                continue
            sent = event["seq"]
            yield _frame(event)
            if run_id is not None and event["type"] == "run_finished":
                return
    finally:
        service.hub.unsubscribe(queue)
