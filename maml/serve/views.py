"""What the API shows of a run: the `maml run --json` object (live or final) and list rows.

A run that has ended shows its final record; one that has not is built from its live view
(maml.serve.hub.RunView) and the outputs its store has committed so far. Statuses: a run is
queued or running until it ends as succeeded, failed, partial, interrupted or cancelled; a
step is pending, waiting (ready, no worker yet), running, failed (its last attempt failed)
or recovered (a recovery was applied, the next attempt is due) until it ends as in §9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maml.errors import DocumentError, MamlError
from maml.serve.hub import RunView
from maml.serve.records import RunRequest

FINAL_STATUSES = frozenset({"succeeded", "failed", "partial", "interrupted", "cancelled"})


def live_status(view: RunView | None) -> str:
    if view is None or view.status in ("queued", "requeued"):
        return "queued"
    return view.status if view.status in FINAL_STATUSES else "running"


def live_result(run_id: str, view: RunView | None, store: Any,
                graph: str | None) -> dict[str, Any]:
    """The §9 object of a run that has not ended, as far as its events tell."""
    steps = {}
    for step_id, step in (view.steps.items() if view else ()):
        output = None
        if step["status"] in ("succeeded", "cached"):
            committed = store.committed(step_id)
            output = committed["output"] if committed else None
        status = step["status"]
        steps[step_id] = {"status": status, "attempts": step["attempts"],
                          "device": step["device"], "params": step["params"],
                          "output": output, "error": step["error"]}
    return {"run_id": run_id, "status": live_status(view), "steps": steps,
            "errors": view.errors if view else 0,
            "recoveries": view.recoveries if view else 0, "graph": graph}


def run_object(request: RunRequest, final: dict[str, Any] | None, view: RunView | None,
               live: dict[str, Any], *, queued: bool) -> dict[str, Any]:
    """The §9 object (final, else live) plus document, principal, times, problems, the DAG,
    and each step's attempt history (error class, device, recovery per attempt)."""
    result = dict(final["result"]) if final else live
    for step_id, step in result.get("steps", {}).items():
        seen = view.steps.get(step_id, {}) if view else {}
        step.setdefault("error", seen.get("error"))
        step["history"] = seen.get("history", [])
    result.update(document=request.path, principal=request.principal,
                  submitted_at=request.submitted_at,
                  started_at=view.started_at if view else None,
                  finished_at=final["finished_at"] if final else None,
                  problems=final["problems"] if final else [],
                  dag=view.dag if view else [], queued=queued)
    return result


def run_row(request: RunRequest, final: dict[str, Any] | None,
            view: RunView | None) -> dict[str, Any]:
    """One line of the runs list."""
    steps = list(view.steps.values()) if view else []
    return {"run_id": request.run_id,
            "status": final["result"]["status"] if final else live_status(view),
            "document": request.path, "submitted_at": request.submitted_at,
            "started_at": view.started_at if view else None,
            "finished_at": final["finished_at"] if final else None,
            "errors": view.errors if view else 0,
            "recoveries": view.recoveries if view else 0, "steps": len(steps),
            "steps_done": sum(s["status"] in ("succeeded", "cached") for s in steps)}


def step_logs(run_dir: Path, step: str, attempt: int | None) -> list[dict[str, Any]]:
    """A step's per-attempt log files (all, or attempt N's) as [{"attempt", "text"}]."""
    from maml.commands.logs import attempt_logs   # the one reader of the logs dir

    return [{"attempt": entry.attempt,
             "text": entry.path.read_text(encoding="utf-8", errors="replace")}
            for entry in attempt_logs(run_dir, step)
            if attempt is None or entry.attempt == attempt]


def error_body(exc: MamlError) -> dict[str, Any]:
    """A maml error as the API and the MCP tools both show it: {"code", "message", and
    "path", "line", "step" where known, "diagnostics" for a document that cannot run}."""
    body: dict[str, Any] = {"code": exc.code, "message": exc.format()}
    body.update({k: v for k in ("path", "line", "step") if (v := getattr(exc, k, None))})
    if isinstance(exc, DocumentError):
        body["diagnostics"] = [d.to_dict() for d in exc.diagnostics]
    return body
