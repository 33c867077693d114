"""ErrorGraph: the questions a user asks of the record, answered from compact columns.

`failures()`, `patterns()`, `recovery_success_rates()` and `runs()` filter and group the
per-error and per-recovery tuples of the index; only the nodes a query returns are read back
from the file. `.nx` builds the full networkx.MultiDiGraph on first use (a million nodes cost
a few GB there, so nothing else needs it).
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from maml.errors import UsageError
from maml.graph import patterns as _patterns
from maml.graph import schema
from maml.graph.index import ErrorRow, LogIndex
from maml.graph.load import VerifyReport

if TYPE_CHECKING:
    import networkx


def _since(value: Any) -> float:
    """A unix time from a number, a datetime, an ISO-8601 string or a duration ago ("24h")."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    from maml.vocabulary import parse_duration

    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        return _dt.datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        raise UsageError(f"since={value!r}: use a unix time, an ISO-8601 time or a duration "
                         "like '24h'") from None


class ErrorGraph:
    """A verified error graph. Build with `maml.graph.open()`."""

    def __init__(self, index: LogIndex, report: VerifyReport, trusted_keys: Any = None) -> None:
        self.index = index
        self.report = report
        self.path = index.path
        self._trusted_keys = trusted_keys
        self._nx: networkx.MultiDiGraph | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"<ErrorGraph {self.path}: {len(self)} nodes, {len(self.index.errors)} errors>"

    # -- networkx -------------------------------------------------------------------------

    @property
    def nx(self) -> networkx.MultiDiGraph:
        """Every node (attributes: its fields) and every edge (key: its label)."""
        if self._nx is None:
            import networkx

            graph = networkx.MultiDiGraph(path=str(self.path))
            for node in self.index.bodies(list(range(len(self.index)))):
                node_id = node.pop("id")
                links = node.pop("links", [])
                graph.add_node(node_id, **node)
                for label, target in links:
                    source, dest = schema.edge(label, target, node_id)
                    graph.add_edge(source, dest, key=label, label=label)
            self._nx = graph
        return self._nx

    # -- queries --------------------------------------------------------------------------

    def _error_rows(self, filters: dict[str, Any]) -> list[ErrorRow]:
        aliases = {"error": "error_class", "step_kind": "kind", "hardware_class": "device_class"}
        wanted: dict[str, Any] = {}
        since = None
        for name, value in filters.items():
            if value is None:
                continue
            field = aliases.get(name, name)
            if field == "since":
                since = _since(value)
            elif field in ErrorRow._fields and field not in ("node", "t"):
                wanted[field] = value
            else:
                raise UsageError(f"failures(): unknown filter {name!r}; use error_class, "
                                 "step_kind, device_class, device, worker, run, step, injected "
                                 "or since")
        if "run" in wanted:
            wanted["run"] = self._run_id(wanted["run"])
        rows = self.index.errors
        for field, value in wanted.items():
            at = ErrorRow._fields.index(field)
            rows = [row for row in rows if row[at] == value]
        if since is not None:
            rows = [row for row in rows if not math.isnan(row.t) and row.t >= since]
        return rows

    def failures(self, **filters: Any) -> list[dict[str, Any]]:
        """Error nodes, oldest first, filtered by error_class (or error), step_kind (or kind),
        device_class, device, worker, run, step, injected, since."""
        rows = self._error_rows(filters)
        return self.index.bodies([row.node for row in rows])

    def patterns(self, min_count: int = 3) -> list[dict[str, Any]]:
        """Recurring failures grouped by hardware class, error class, device, step kind and
        worker, each with counts, first/last seen, runs and a recommended action."""
        return _patterns.find_patterns(self.index, min_count)

    def recovery_success_rates(self) -> list[dict[str, Any]]:
        """Per error class × action: how often it was tried and how often the attempt it led
        to succeeded (`rate` counts only recoveries whose next attempt has ended)."""
        return _patterns.success_rates(self.index)

    def _run_id(self, name: str) -> str:
        if name in self.index.run_nodes:
            return name
        matches = [run for run in self.index.run_nodes if run and run.startswith(name)]
        if len(matches) == 1:
            return matches[0]
        return name

    def history(self, run_or_step: str) -> list[dict[str, Any]]:
        """Every node of a run (id or unique prefix), of `RUN/STEP`, or of a step id across
        runs, in the order they were recorded."""
        run, _, step = run_or_step.partition("/")
        run = self._run_id(run)
        if run in self.index.run_nodes:
            wanted = [i for i, r in enumerate(self.index.runs) if r == run]
            nodes = self.index.bodies(wanted)
            return [n for n in nodes if not step or n.get("step") == step]
        steps = {i for i, t in enumerate(self.index.types) if t == "step"}
        runs_with_step = {n["run"] for n in self.index.bodies(sorted(steps))
                          if n.get("step") == run_or_step}
        wanted = [i for i, r in enumerate(self.index.runs) if r in runs_with_step]
        return [n for n in self.index.bodies(wanted) if n.get("step") == run_or_step]

    def runs(self) -> list[dict[str, Any]]:
        """One summary per run: id, document, start, status, steps, errors, recoveries."""
        errors = Counter(row.run for row in self.index.errors)
        recoveries = Counter(row.run for row in self.index.recoveries)
        summaries = []
        for run, node_index in self.index.run_nodes.items():
            node = self.index.body(node_index)
            summaries.append({
                "run": run, "document": node.get("document"), "started_at": node.get("t"),
                "status": self.index.status.get(node_index, "running or lost"),
                "steps": len(node.get("steps", [])), "errors": errors[run],
                "recoveries": recoveries[run], "host": node.get("host"),
            })
        return summaries

    def verify(self, public_key: Any = None) -> VerifyReport:
        """Check every hash, chain link and signature again; never raises for a bad record."""
        from maml.graph.verify import verify_path

        return verify_path(self.path, public_key or self._trusted_keys)
