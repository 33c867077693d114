"""maml's MCP tools, built with the official `mcp` SDK over one `Service`.

The same server object answers over stdio (`maml mcp`) and streamable HTTP (`/mcp` of
`maml serve`). Tools: validate_document, run_document (returns a run id at once), get_run,
list_runs, get_step_logs, cancel_run, query_failures, failure_patterns,
recovery_success_rates, verify_graph, list_devices. Resources: every JSON Schema maml ships,
as `maml://schemas/<name>`. The SDK validates tool arguments against the schemas it derives
from the signatures below; a maml error becomes an MCP tool error result (`is_error`) whose
text starts with maml's code, e.g. `MAML-E100: doc.maml.md:7: ...`, and whose structured
content is the HTTP API's error body, `{"error": {"code", "message", ...}}`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from maml.errors import MamlError
from maml.serve.service import Service

INSTRUCTIONS = """maml runs Markdown pipeline documents (.maml.md) on GPUs and CPUs with
declared fault tolerance, and records every failure and recovery in a signed error graph.
Validate a document first, run it (you get a run id), then poll get_run until its status is
no longer queued or running."""


def _tool_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """maml errors -> MCP tool error results carrying maml's code; anything else is a crash
    (the SDK hides its text from the client and logs it).

    The result is built here, not raised as the SDK's ToolError: the SDK prefixes a raised
    ToolError's text with "Error executing tool NAME: ", while a returned
    `CallToolResult(is_error=True)` reaches the client as it is (the SDK's documented way
    for a tool to report its own failure). The text starts with maml's code; the structured
    content is `{"error": ...}`, the body the HTTP API answers with."""
    from mcp.types import CallToolResult, TextContent

    from maml.serve.views import error_body

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MamlError as exc:
            body = error_body(exc)
            # code first, as an agent reads it; format() ends with the same code
            text = f"{exc.code}: {body['message'].removesuffix(f' [{exc.code}]')}"
            if "diagnostics" in body:
                text += "\n" + json.dumps(body["diagnostics"])
            return CallToolResult(content=[TextContent(type="text", text=text)],
                                  structured_content={"error": body}, is_error=True)

    return wrapper


def build_server(service: Service) -> Any:
    from mcp.server.mcpserver import MCPServer

    from maml import __version__

    server = MCPServer("maml", instructions=INSTRUCTIONS, version=__version__)
    for fn in _tools(service):
        server.add_tool(_tool_errors(fn), structured_output=True)
    _schema_resources(server)
    return server


def _tools(service: Service) -> list[Callable[..., Any]]:
    def validate_document(document: str) -> dict[str, Any]:
        """Validate a document's text: `maml validate --json`'s object (diagnostics with
        code, severity, message, line, column)."""
        return service.validate(document=document)

    def run_document(document: str, params: dict[str, Any] | None = None,
                     inject: list[str] | None = None) -> dict[str, Any]:
        """Queue a run of a document's text; returns {"run_id"} at once (poll get_run).
        `params`: overrides, "K" or "STEP.K" -> value. `inject`: faults, "STEP:ERROR[@N,M]"."""
        run_id = service.submit(document=document, params=params or {}, inject=inject or [],
                                principal=service.principal)
        return {"run_id": run_id, "status": "queued"}

    def get_run(run_id: str) -> dict[str, Any]:
        """A run as `maml run --json` prints it; status is queued or running until it ends,
        then succeeded, failed, partial, interrupted or cancelled."""
        return service.run(run_id)

    def list_runs(status: str | None = None, limit: int = 50) -> dict[str, Any]:
        """Runs, newest first, optionally only those with `status`."""
        return {"runs": service.runs(status=status, limit=limit)}

    def get_step_logs(run_id: str, step: str, attempt: int | None = None) -> dict[str, Any]:
        """A step's stdout/stderr and ctx.log lines, per attempt."""
        return {"run_id": run_id, "step": step, "attempts": service.logs(run_id, step, attempt)}

    def cancel_run(run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run."""
        return service.cancel(run_id)

    def query_failures(error_class: str | None = None, step_kind: str | None = None,
                       device_class: str | None = None, device: str | None = None,
                       run: str | None = None, step: str | None = None,
                       injected: bool | None = None, since: str | None = None,
                       limit: int = 100) -> dict[str, Any]:
        """Error nodes of the signed error graph, oldest first, filtered; `since` is an
        ISO-8601 time or a duration like "24h"."""
        found = service.graph().failures(error_class=error_class, step_kind=step_kind,
                                         device_class=device_class, device=device, run=run,
                                         step=step, injected=injected, since=since)
        return {"count": len(found), "failures": found[-limit:]}

    def failure_patterns(min_count: int = 3) -> dict[str, Any]:
        """Recurring failures (by hardware class, error class, device, step kind, worker),
        each with a recommended action."""
        return {"patterns": service.graph().patterns(min_count=min_count)}

    def recovery_success_rates() -> dict[str, Any]:
        """Per error class and recovery action: tried, worked, failed, rate."""
        return {"rates": service.graph().recovery_success_rates()}

    def verify_graph() -> dict[str, Any]:
        """Check every hash, chain link and signature of the error graph."""
        return service.verify_graph()

    def list_devices() -> dict[str, Any]:
        """CPUs and GPUs with live health samples (temperature, memory, utilisation,
        power, healthy/warning/critical with reasons)."""
        return service.devices()

    return [validate_document, run_document, get_run, list_runs, get_step_logs, cancel_run,
            query_failures, failure_patterns, recovery_success_rates, verify_graph,
            list_devices]


def _schema_resources(server: Any) -> None:
    from maml.schemas import load_schema, schema_names

    for name in schema_names():
        def read(name: str = name) -> str:
            return json.dumps(load_schema(name), indent=1)

        server.resource(f"maml://schemas/{name}", name=f"schema {name}",
                        description=f"maml's JSON Schema `{name}` (Draft 2020-12)",
                        mime_type="application/schema+json")(_no_args(read))


def _no_args(fn: Callable[[], str]) -> Callable[[], str]:
    """The SDK refuses parameters on a static resource: hide the bound default."""
    def read() -> str:
        return fn()
    return read
