"""`maml graph attest RUN`: an in-toto Statement (v1) about a run, in a DSSE envelope signed by
the maml key, that anyone can check with securesystemslib or any in-toto verifier.

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "steps.log", "digest": {"sha256": "..."}}, ...],
     "predicateType": "https://maml.dev/attestation/run/v1",
     "predicate": {"run": ..., "status": ..., "document": {"uri", "digest": {"sha256"}},
                   "signer": KEY_ID | null, "steps": [...], "attempts": N,
                   "errors": [...], "recoveries": [...], "devices": [...],
                   "graph": {"log": GRAPH_ID, "head": HASH, "count": N}, "maml": VERSION}}

Subjects are every file the run left in its run directory (committed step outputs, artifacts,
sinks written there), named by their path relative to it, with the sha256 of their bytes:
`sha256sum` is enough to match them. Checkpoints, logs and temp files are not outputs.

Why a maml predicate and not SLSA Provenance v1: SLSA describes how a builder turned source
into an artifact (buildDefinition, builder id, resolved dependencies), and its consumers decide
by the builder's trust level. What is worth attesting about a maml run is what SLSA has no
field for: every attempt, the error class of each failure, the recovery applied and the device
it ran on. The document is recorded the way SLSA records a dependency (uri + digest), so a
policy that only wants "which document produced this" reads it the same way. The graph head
ties the attestation to the signed error graph it was read from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from maml.errors import GraphError
from maml.graph import dsse

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://maml.dev/attestation/run/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
NOT_OUTPUTS = ("state", "logs", "manifest.json", "lock")


def subjects(run_dir: Path) -> list[dict[str, Any]]:
    """name + sha256 of every output file under the run directory, sorted by name."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if (not path.is_file() or path.is_symlink() or relative.parts[0] in NOT_OUTPUTS
                or any(part.startswith(".") for part in relative.parts)):
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        found.append({"name": relative.as_posix(), "digest": {"sha256": digest.hexdigest()}})
    return found


def predicate(graph: Any, run_id: str) -> dict[str, Any]:
    """What the signed graph holds about one run, shaped for the attestation."""
    nodes = graph.history(run_id)
    run = next((n for n in nodes if n.get("type") == "run"), None)
    if run is None:
        raise GraphError(f"no run {run_id!r} in the error graph", path=str(graph.path))
    outcome = next((n for n in reversed(nodes) if n.get("type") == "outcome"
                    and n.get("of") == "run"), {})
    attempts = [n for n in nodes if n.get("type") == "attempt"]
    report = graph.report
    return {
        "run": run["run"], "status": outcome.get("status", "running or lost"),
        "document": {"uri": run.get("document"),
                     "digest": {"sha256": run.get("document_sha256")}},
        "signer": run.get("signer"), "host": run.get("host"), "started_at": run.get("t"),
        "steps": [{"id": n["step"], "status": n.get("status"), "attempts": n.get("attempts"),
                   "output_digest": n.get("output_digest")}
                  for n in nodes if n.get("type") == "outcome" and n.get("of") == "step"],
        "attempts": len(attempts),
        "errors": [{"step": n.get("step"), "attempt": n.get("attempt"),
                    "error_class": n.get("error_class"), "exception_type": n.get("exception_type"),
                    "injected": n.get("injected"), "device": n.get("device_class")}
                   for n in nodes if n.get("type") == "error"],
        "recoveries": [{"step": n.get("step"), "attempt": n.get("attempt"),
                        "action": n.get("action"), "error_class": n.get("error_class")}
                       for n in nodes if n.get("type") == "recovery"],
        "devices": sorted({(a.get("device"), a.get("device_class")) for a in attempts}),
        "graph": {"log": report.log, "head": report.head, "count": report.nodes},
    }


def statement(graph: Any, run_id: str, run_dir: Path) -> dict[str, Any]:
    from maml import __version__

    body = predicate(graph, run_id)
    body["devices"] = [{"id": d, "class": c} for d, c in body["devices"]]
    body["maml"] = __version__
    return {"_type": STATEMENT_TYPE, "subject": subjects(run_dir),
            "predicateType": PREDICATE_TYPE, "predicate": body}


def attest(graph: Any, run_id: str, state_dir: str | os.PathLike[str], key: Any) -> dict[str, Any]:
    """The signed DSSE envelope (a dict) of the run's Statement."""
    from maml.paths import check_run_id

    full = graph.history(run_id)
    run_id = next((n["run"] for n in full if n.get("type") == "run"), run_id)
    try:
        check_run_id(run_id)
    except ValueError as exc:
        raise GraphError(str(exc)) from None
    run_dir = Path(state_dir) / "runs" / run_id
    if not run_dir.is_dir():
        raise GraphError(f"run {run_id}: no run directory {run_dir} (pass --state-dir)")
    payload = json.dumps(statement(graph, run_id, run_dir), sort_keys=True).encode("utf-8")
    return dsse.sign(payload, PAYLOAD_TYPE, key)
